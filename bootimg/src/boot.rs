//! `boot.img`, header versions 0 to 4.

use crate::fields::{Fields, Sections, check_page_size, text};
use crate::{Error, GKI_PAGE_SIZE, ImageKind};

/// The first 8 bytes of a boot image.
pub const BOOT_MAGIC: &[u8; 8] = b"ANDROID!";

const KIND: ImageKind = ImageKind::Boot;
/// The header_version field's offset: the same in every version.
const VERSION_OFFSET: usize = 40;
/// Header sizes by version (`sizeof(boot_img_hdr_vN)`).
const HEADER_V0: u32 = 1632;
const HEADER_V1: u32 = 1648;
const HEADER_V2: u32 = 1660;
const HEADER_V3: u32 = 1580;
const HEADER_V4: u32 = 1584;
const BOARD_NAME_LEN: usize = 16;
const CMDLINE_LEN: usize = 512;
const EXTRA_CMDLINE_LEN: usize = 1024;
const ID_LEN: usize = 32;
const GKI_CMDLINE_LEN: usize = 1536;

/// A parsed boot image; the sections borrow from the file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootImage<'a> {
    pub header_version: u32,
    /// The section alignment (4096 for v3 and v4).
    pub page_size: u32,
    /// OS version and patch level, packed as AOSP does (7 bits each of
    /// a.b.c, then 7 bits year since 2000 and 4 bits month).
    pub os_version: u32,
    /// The product name (v0 to v2; empty from v3 on).
    pub board_name: String,
    /// The kernel command line (v0 to v2: `cmdline` then `extra_cmdline`).
    pub cmdline: String,
    pub kernel: &'a [u8],
    pub ramdisk: &'a [u8],
    /// The second-stage bootloader (v0 to v2; usually empty).
    pub second: &'a [u8],
    /// The recovery DTBO (v1, v2; usually empty).
    pub recovery_dtbo: &'a [u8],
    /// The device tree blob (v2).
    pub dtb: &'a [u8],
    /// The boot signature (v4; usually empty).
    pub signature: &'a [u8],
}

/// Parses a `boot.img`.
pub fn parse_boot(file: &[u8]) -> Result<BootImage<'_>, Error> {
    let have = file.len() as u64;
    let truncated = |need: u32| Error::Truncated {
        kind: KIND,
        need: u64::from(need),
        have,
    };
    let magic: [u8; 8] = match file.get(..8) {
        Some(m) => m.try_into().map_err(|_| truncated(HEADER_V0))?,
        None => return Err(truncated(HEADER_V0)),
    };
    if &magic != BOOT_MAGIC {
        return Err(Error::BadMagic {
            kind: KIND,
            found: magic,
        });
    }
    let version_bytes = file
        .get(VERSION_OFFSET..VERSION_OFFSET + 4)
        .ok_or(truncated(HEADER_V0))?;
    let mut word = [0u8; 4];
    word.copy_from_slice(version_bytes);
    let version = u32::from_le_bytes(word);
    let header_len = match version {
        0 => HEADER_V0,
        1 => HEADER_V1,
        2 => HEADER_V2,
        3 => HEADER_V3,
        4 => HEADER_V4,
        _ => {
            return Err(Error::UnsupportedVersion {
                kind: KIND,
                version,
            });
        }
    };
    if have < u64::from(header_len) {
        return Err(truncated(header_len));
    }
    if version <= 2 {
        parse_v0_to_v2(file, version)
    } else {
        parse_v3_v4(file, version)
    }
}

/// The header of every version fits in its first page.
fn check_header_size(version: u32, declared: u32, page: u64) -> Result<(), Error> {
    if u64::from(declared) <= page {
        Ok(())
    } else {
        Err(Error::BadHeaderSize {
            kind: KIND,
            version,
            declared,
            max: page,
        })
    }
}

fn parse_v0_to_v2(file: &[u8], version: u32) -> Result<BootImage<'_>, Error> {
    let mut f = Fields::new(file);
    f.skip(8);
    let kernel_size = f.u32();
    let _kernel_addr = f.u32();
    let ramdisk_size = f.u32();
    let _ramdisk_addr = f.u32();
    let second_size = f.u32();
    let _second_addr = f.u32();
    let _tags_addr = f.u32();
    let page_size = f.u32();
    let _version = f.u32();
    let os_version = f.u32();
    let board_name = text(KIND, "board name", f.take(BOARD_NAME_LEN))?;
    let cmdline = text(KIND, "cmdline", f.take(CMDLINE_LEN))?;
    f.skip(ID_LEN);
    let extra_cmdline = text(KIND, "extra_cmdline", f.take(EXTRA_CMDLINE_LEN))?;
    let page = check_page_size(KIND, page_size)?;
    let (mut recovery_dtbo_size, mut dtb_size) = (0, 0);
    if version >= 1 {
        recovery_dtbo_size = f.u32();
        let _recovery_dtbo_offset = f.u64();
        check_header_size(version, f.u32(), page)?;
    }
    if version >= 2 {
        dtb_size = f.u32();
        let _dtb_addr = f.u64();
    }
    // The header fills the first page (every accepted page size is larger).
    let mut sections = Sections::new(KIND, file, page, page);
    let kernel = sections.take("kernel", kernel_size.into())?;
    let ramdisk = sections.take("ramdisk", ramdisk_size.into())?;
    let second = sections.take("second", second_size.into())?;
    let recovery_dtbo = sections.take("recovery DTBO", recovery_dtbo_size.into())?;
    let dtb = sections.take("DTB", dtb_size.into())?;
    Ok(BootImage {
        header_version: version,
        page_size,
        os_version,
        board_name,
        cmdline: cmdline + &extra_cmdline,
        kernel,
        ramdisk,
        second,
        recovery_dtbo,
        dtb,
        signature: &[],
    })
}

fn parse_v3_v4(file: &[u8], version: u32) -> Result<BootImage<'_>, Error> {
    let mut f = Fields::new(file);
    f.skip(8);
    let kernel_size = f.u32();
    let ramdisk_size = f.u32();
    let os_version = f.u32();
    let page = u64::from(GKI_PAGE_SIZE);
    check_header_size(version, f.u32(), page)?;
    f.skip(16 + 4);
    let cmdline = text(KIND, "cmdline", f.take(GKI_CMDLINE_LEN))?;
    let signature_size = if version >= 4 { f.u32() } else { 0 };
    let mut sections = Sections::new(KIND, file, page, page);
    let kernel = sections.take("kernel", kernel_size.into())?;
    let ramdisk = sections.take("ramdisk", ramdisk_size.into())?;
    let signature = sections.take("boot signature", signature_size.into())?;
    Ok(BootImage {
        header_version: version,
        page_size: GKI_PAGE_SIZE,
        os_version,
        board_name: String::new(),
        cmdline,
        kernel,
        ramdisk,
        second: &[],
        recovery_dtbo: &[],
        dtb: &[],
        signature,
    })
}
