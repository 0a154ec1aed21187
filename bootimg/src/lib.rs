//! Android boot images: the kernel, ramdisk and command line a bootloader
//! takes out of `boot.img` (and `vendor_boot.img`).
//!
//! Formats (AOSP `bootimg.h`, little-endian, sections padded to the page
//! size):
//!
//! | header | page size | sections after the header page(s) |
//! | --- | --- | --- |
//! | boot v0 | in the header | kernel, ramdisk, second |
//! | boot v1 | in the header | kernel, ramdisk, second, recovery DTBO |
//! | boot v2 | in the header | kernel, ramdisk, second, recovery DTBO, DTB |
//! | boot v3 | 4096 | kernel, ramdisk (the generic ramdisk; the rest is in vendor_boot) |
//! | boot v4 | 4096 | kernel, ramdisk, boot signature |
//! | vendor_boot v3 | in the header | vendor ramdisk, DTB |
//! | vendor_boot v4 | in the header | vendor ramdisks, DTB, vendor ramdisk table, bootconfig |
//!
//! [`parse_boot`] and [`parse_vendor_boot`] borrow the sections from the
//! file's bytes; [`BootPayload::assemble`] joins them the way a bootloader
//! does. Malformed input is an [`Error`] naming the offending value, never a
//! panic (fuzzed: `fuzz/fuzz_targets/bootimg.rs`).

#![forbid(unsafe_code)]

mod boot;
mod error;
mod fields;
mod payload;
mod vendor;

pub use boot::{BOOT_MAGIC, BootImage, parse_boot};
pub use error::{Error, ImageKind};
pub use payload::{BOOTCONFIG_MAGIC, BootPayload};
pub use vendor::{RamdiskFragment, VENDOR_BOOT_MAGIC, VendorBootImage, parse_vendor_boot};

/// The smallest page size accepted (mkbootimg offers 2048 to 16384).
pub const MIN_PAGE_SIZE: u32 = 2048;
/// The largest page size accepted.
pub const MAX_PAGE_SIZE: u32 = 65536;
/// The page size of boot header v3 and v4 (fixed by the format).
pub const GKI_PAGE_SIZE: u32 = 4096;
