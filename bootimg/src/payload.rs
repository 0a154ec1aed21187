//! What a bootloader hands the kernel, assembled from the images.

use crate::{BootImage, Error, RamdiskFragment, VendorBootImage};

/// The trailer magic Linux looks for at the end of the initrd
/// (`init/main.c`, `get_boot_config_from_initrd`).
pub const BOOTCONFIG_MAGIC: &[u8; 12] = b"#BOOTCONFIG\n";

/// Kernel, initrd and command line, ready to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPayload {
    pub kernel: Vec<u8>,
    /// The vendor ramdisk(s), then the generic ramdisk (cpio archives that
    /// Linux unpacks one after the other, so generic files win), then the
    /// bootconfig block when there is one.
    pub initrd: Vec<u8>,
    /// The boot image's command line, then the vendor_boot image's (and
    /// `bootconfig` when the vendor image carries bootconfig).
    pub cmdline: String,
}

impl BootPayload {
    /// Joins a boot image and (for header v3 and v4) its vendor_boot image
    /// the way a bootloader does. Recovery-only vendor ramdisks (v4) are
    /// left out: this is a normal boot.
    pub fn assemble(
        boot: &BootImage<'_>,
        vendor: Option<&VendorBootImage<'_>>,
    ) -> Result<BootPayload, Error> {
        let mut initrd = Vec::new();
        let mut cmdline = boot.cmdline.trim().to_string();
        if let Some(vendor) = vendor {
            if boot.header_version < 3 || vendor.header_version != boot.header_version {
                return Err(Error::VendorMismatch {
                    boot: boot.header_version,
                    vendor: vendor.header_version,
                });
            }
            if vendor.fragments.is_empty() {
                initrd.extend_from_slice(vendor.vendor_ramdisk);
            } else {
                let normal = vendor
                    .fragments
                    .iter()
                    .filter(|f| f.kind != RamdiskFragment::RECOVERY);
                for fragment in normal {
                    initrd.extend_from_slice(fragment.bytes);
                }
            }
            append_words(&mut cmdline, &vendor.cmdline);
        }
        initrd.extend_from_slice(boot.ramdisk);
        if let Some(vendor) = vendor
            && !vendor.bootconfig.is_empty()
        {
            append_bootconfig(&mut initrd, vendor.bootconfig);
            append_words(&mut cmdline, "bootconfig");
        }
        Ok(BootPayload {
            kernel: boot.kernel.to_vec(),
            initrd,
            cmdline,
        })
    }
}

fn append_words(cmdline: &mut String, more: &str) {
    let more = more.trim();
    if more.is_empty() {
        return;
    }
    if !cmdline.is_empty() {
        cmdline.push(' ');
    }
    cmdline.push_str(more);
}

/// Appends `params` in the layout Linux reads from the end of the initrd:
/// the text, its size and byte sum (little-endian u32 each), the magic.
fn append_bootconfig(initrd: &mut Vec<u8>, params: &[u8]) {
    let size = u32::try_from(params.len()).unwrap_or(u32::MAX);
    let sum = params
        .iter()
        .fold(0u32, |sum, b| sum.wrapping_add(u32::from(*b)));
    initrd.extend_from_slice(params);
    initrd.extend_from_slice(&size.to_le_bytes());
    initrd.extend_from_slice(&sum.to_le_bytes());
    initrd.extend_from_slice(BOOTCONFIG_MAGIC);
}
