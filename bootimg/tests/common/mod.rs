//! Images built by hand, field by field, from AOSP's `bootimg.h` layout
//! (independent of the parser), for vectors mkbootimg cannot make (v4,
//! broken headers).

#![allow(dead_code, reason = "each test binary uses a part")]

pub struct Image {
    pub bytes: Vec<u8>,
    page: usize,
}

impl Image {
    fn new(page: usize) -> Self {
        Image {
            bytes: Vec::new(),
            page,
        }
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn text(&mut self, s: &str, len: usize) -> &mut Self {
        let mut field = s.as_bytes().to_vec();
        field.resize(len, 0);
        self.bytes.extend_from_slice(&field);
        self
    }

    fn section(&mut self, data: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        let len = self.bytes.len().div_ceil(self.page) * self.page;
        self.bytes.resize(len, 0);
    }
}

/// Offsets of fields inside a boot image header, for negative vectors.
pub mod at {
    pub const KERNEL_SIZE: usize = 8;
    pub const RAMDISK_SIZE_V0: usize = 16;
    pub const PAGE_SIZE_V0: usize = 36;
    pub const VERSION: usize = 40;
    pub const HEADER_SIZE_V1: usize = 1644;
    pub const HEADER_SIZE_V3: usize = 20;
    pub const VENDOR_PAGE_SIZE: usize = 12;
    pub const VENDOR_RAMDISK_SIZE: usize = 24;
}

pub struct Sections<'a> {
    pub kernel: &'a [u8],
    pub ramdisk: &'a [u8],
    pub second: &'a [u8],
    pub dtb: &'a [u8],
    pub cmdline: &'a str,
}

/// A boot image v0, v1 or v2.
pub fn boot_v0_to_v2(version: u32, page: u32, s: &Sections<'_>) -> Vec<u8> {
    let mut i = Image::new(page as usize);
    i.text("ANDROID!", 8);
    i.u32(s.kernel.len() as u32).u32(0x1000_8000);
    i.u32(s.ramdisk.len() as u32).u32(0x1100_0000);
    i.u32(s.second.len() as u32).u32(0x10f0_0000);
    i.u32(0x1000_0100).u32(page).u32(version).u32(0);
    i.text("mvmm", 16);
    let (first, rest) = s.cmdline.split_at(s.cmdline.len().min(512));
    i.text(first, 512);
    i.text("", 32);
    i.text(rest, 1024);
    if version >= 1 {
        i.u32(0).u64(0).u32(if version == 1 { 1648 } else { 1660 });
    }
    if version >= 2 {
        i.u32(s.dtb.len() as u32).u64(0x1f00_0000);
    }
    i.pad();
    i.section(s.kernel).section(s.ramdisk).section(s.second);
    if version >= 2 {
        i.section(s.dtb);
    }
    i.bytes
}

/// A boot image v3 or v4 (page size 4096).
pub fn boot_v3_v4(
    version: u32,
    kernel: &[u8],
    ramdisk: &[u8],
    signature: &[u8],
    cmdline: &str,
) -> Vec<u8> {
    let mut i = Image::new(4096);
    i.text("ANDROID!", 8);
    i.u32(kernel.len() as u32).u32(ramdisk.len() as u32).u32(0);
    i.u32(if version == 3 { 1580 } else { 1584 });
    i.u32(0).u32(0).u32(0).u32(0).u32(version);
    i.text(cmdline, 1536);
    if version >= 4 {
        i.u32(signature.len() as u32);
    }
    i.pad();
    i.section(kernel).section(ramdisk);
    if version >= 4 {
        i.section(signature);
    }
    i.bytes
}

/// A vendor ramdisk fragment for a v4 table: name, type, bytes.
pub type Fragment<'a> = (&'a str, u32, &'a [u8]);

/// A vendor_boot image v3 (`fragments` must hold one entry, whose type is
/// ignored) or v4.
pub fn vendor_boot(
    version: u32,
    page: u32,
    fragments: &[Fragment<'_>],
    dtb: &[u8],
    cmdline: &str,
    bootconfig: &[u8],
) -> Vec<u8> {
    let ramdisk: Vec<u8> = fragments.iter().flat_map(|f| f.2.iter().copied()).collect();
    let mut i = Image::new(page as usize);
    i.text("VNDRBOOT", 8);
    i.u32(version).u32(page).u32(0x1000_8000).u32(0x1100_0000);
    i.u32(ramdisk.len() as u32);
    i.text(cmdline, 2048);
    i.u32(0x1000_0100);
    i.text("mvmm", 16);
    i.u32(if version == 3 { 2112 } else { 2128 });
    i.u32(dtb.len() as u32).u64(0x1f00_0000);
    let mut table = Vec::new();
    if version >= 4 {
        let mut offset = 0u32;
        for (name, kind, bytes) in fragments {
            table.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            table.extend_from_slice(&offset.to_le_bytes());
            table.extend_from_slice(&kind.to_le_bytes());
            let mut field = name.as_bytes().to_vec();
            field.resize(32, 0);
            table.extend_from_slice(&field);
            table.extend_from_slice(&[0u8; 64]);
            offset += bytes.len() as u32;
        }
        i.u32(table.len() as u32)
            .u32(fragments.len() as u32)
            .u32(108);
        i.u32(bootconfig.len() as u32);
    }
    i.pad();
    i.section(&ramdisk).section(dtb);
    if version >= 4 {
        i.section(&table).section(bootconfig);
    }
    i.bytes
}

/// Deterministic filler bytes.
pub fn filler(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn put_u32(image: &mut [u8], at: usize, value: u32) {
    image[at..at + 4].copy_from_slice(&value.to_le_bytes());
}
