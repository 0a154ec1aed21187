//! `vendor_boot.img`, header versions 3 and 4 (paired with boot header v3
//! and v4: the vendor ramdisk, the DTB and the vendor's command line).

use crate::fields::{Fields, Sections, align_up, check_page_size, text};
use crate::{Error, ImageKind};

/// The first 8 bytes of a vendor_boot image.
pub const VENDOR_BOOT_MAGIC: &[u8; 8] = b"VNDRBOOT";

const KIND: ImageKind = ImageKind::VendorBoot;
const HEADER_V3: u32 = 2112;
const HEADER_V4: u32 = 2128;
const CMDLINE_LEN: usize = 2048;
const BOARD_NAME_LEN: usize = 16;
/// `sizeof(vendor_ramdisk_table_entry_v4)`.
const TABLE_ENTRY_LEN: u32 = 108;
const FRAGMENT_NAME_LEN: usize = 32;

/// One vendor ramdisk of a v4 image (from its ramdisk table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamdiskFragment<'a> {
    pub name: String,
    /// `VENDOR_RAMDISK_TYPE_*`: 0 none, 1 platform, 2 recovery, 3 DLKM.
    pub kind: u32,
    pub bytes: &'a [u8],
}

impl RamdiskFragment<'_> {
    /// `VENDOR_RAMDISK_TYPE_RECOVERY`: loaded only to boot into recovery.
    pub const RECOVERY: u32 = 2;
}

/// A parsed vendor_boot image; the sections borrow from the file's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorBootImage<'a> {
    pub header_version: u32,
    pub page_size: u32,
    /// The vendor part of the kernel command line.
    pub cmdline: String,
    pub board_name: String,
    /// The whole vendor ramdisk section (every fragment, in order).
    pub vendor_ramdisk: &'a [u8],
    /// v4: the fragments of [`Self::vendor_ramdisk`]; empty for v3.
    pub fragments: Vec<RamdiskFragment<'a>>,
    pub dtb: &'a [u8],
    /// v4: bootconfig parameters (`androidboot.*`), text lines.
    pub bootconfig: &'a [u8],
}

/// Parses a `vendor_boot.img`.
pub fn parse_vendor_boot(file: &[u8]) -> Result<VendorBootImage<'_>, Error> {
    let have = file.len() as u64;
    let truncated = |need: u32| Error::Truncated {
        kind: KIND,
        need: u64::from(need),
        have,
    };
    let Some(magic) = file.get(..8) else {
        return Err(truncated(HEADER_V3));
    };
    if magic != VENDOR_BOOT_MAGIC {
        let mut found = [0u8; 8];
        found.copy_from_slice(magic);
        return Err(Error::BadMagic { kind: KIND, found });
    }
    let mut f = Fields::new(file);
    f.skip(8);
    let version = f.u32();
    let header_len = match version {
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
    let page_size = f.u32();
    let _kernel_addr = f.u32();
    let _ramdisk_addr = f.u32();
    let vendor_ramdisk_size = f.u32();
    let cmdline = text(KIND, "cmdline", f.take(CMDLINE_LEN))?;
    let _tags_addr = f.u32();
    let board_name = text(KIND, "board name", f.take(BOARD_NAME_LEN))?;
    let declared = f.u32();
    let dtb_size = f.u32();
    let _dtb_addr = f.u64();
    let (mut table_size, mut entry_count, mut entry_size, mut bootconfig_size) = (0, 0, 0, 0);
    if version >= 4 {
        table_size = f.u32();
        entry_count = f.u32();
        entry_size = f.u32();
        bootconfig_size = f.u32();
    }
    let page = check_page_size(KIND, page_size)?;
    let first = align_up(header_len.into(), page).ok_or(Error::Overflow {
        kind: KIND,
        section: "vendor ramdisk",
    })?;
    if u64::from(declared) > first {
        return Err(Error::BadHeaderSize {
            kind: KIND,
            version,
            declared,
            max: first,
        });
    }
    let mut sections = Sections::new(KIND, file, page, first);
    let vendor_ramdisk = sections.take("vendor ramdisk", vendor_ramdisk_size.into())?;
    let dtb = sections.take("DTB", dtb_size.into())?;
    let table = sections.take("vendor ramdisk table", table_size.into())?;
    let bootconfig = sections.take("bootconfig", bootconfig_size.into())?;
    let fragments = if version >= 4 {
        fragments(vendor_ramdisk, table, entry_count, entry_size)?
    } else {
        Vec::new()
    };
    Ok(VendorBootImage {
        header_version: version,
        page_size,
        cmdline,
        board_name,
        vendor_ramdisk,
        fragments,
        dtb,
        bootconfig,
    })
}

/// The v4 ramdisk table: `count` entries of `entry_size` bytes, each
/// naming a slice of the vendor ramdisk section.
fn fragments<'a>(
    ramdisks: &'a [u8],
    table: &[u8],
    count: u32,
    entry_size: u32,
) -> Result<Vec<RamdiskFragment<'a>>, Error> {
    let bad = |index: u32, why: String| Error::BadRamdiskTable { index, why };
    if count > 0 && entry_size < TABLE_ENTRY_LEN {
        return Err(bad(
            0,
            format!("entry size {entry_size} is smaller than an entry ({TABLE_ENTRY_LEN} bytes)"),
        ));
    }
    let needed = u64::from(count) * u64::from(entry_size);
    if needed > table.len() as u64 {
        return Err(bad(
            0,
            format!(
                "{count} entries of {entry_size} bytes do not fit the table's {} bytes",
                table.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for index in 0..count {
        // In range: index * entry_size + entry_size <= needed <= table.len().
        let start = (index as usize) * (entry_size as usize);
        let mut f = Fields::new(&table[start..start + entry_size as usize]);
        let size = f.u32();
        let offset = f.u32();
        let kind = f.u32();
        let name = text(KIND, "ramdisk table entry name", f.take(FRAGMENT_NAME_LEN))?;
        let end = u64::from(offset) + u64::from(size);
        if end > ramdisks.len() as u64 {
            return Err(bad(
                index,
                format!(
                    "ramdisk {name:?} ({size} bytes at offset {offset}) lies outside the vendor ramdisk section ({} bytes)",
                    ramdisks.len()
                ),
            ));
        }
        out.push(RamdiskFragment {
            name,
            kind,
            bytes: &ramdisks[offset as usize..end as usize],
        });
    }
    Ok(out)
}
