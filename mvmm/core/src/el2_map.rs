//! mvmm's own address space at EL2: which memory it maps, and how.
//!
//! mvmm reaches its own image, the boot image store (to read) and the RAM
//! of the VMs it runs (to copy images and virtio buffers); nothing else of
//! RAM. Its code is the only executable memory and it is read-only; its
//! read-only data and the page tables themselves are read-only too; every
//! writable page is never executable (SCTLR_EL2.WXN is set on top).
//!
//! The tables are built by the linker, before any code runs: mvmm's build
//! turns the board into [`linker_tables`]'s script, whose page entries for
//! mvmm's own image are expressions over the section symbols
//! (`__text_start`, `__text_end`, `__ro_end`) that `sections.ld` defines.
//! So there is no code that writes page tables at EL2, and they sit in the
//! measured, read-only part of the image.

use crate::partition::MemRange;
use core::fmt::Write as _;

extern crate alloc;
use alloc::string::String;
use alloc::vec::Vec;

/// What mvmm maps of RAM, from the board.
#[derive(Clone, Debug)]
pub struct El2Layout {
    /// mvmm's own reservation (its image, stacks, buffers; the DTB,
    /// boot-options and UDS pages below the image).
    pub mvmm: MemRange,
    /// The boot image store: read, never written, by mvmm.
    pub image_store: Option<MemRange>,
    /// The RAM of every VM: read and written by mvmm (images, virtio
    /// buffers, the provisioning and handover pages), never executed.
    pub vm_ram: Vec<MemRange>,
}

/// Where the tables' descriptors put an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Not mapped: an access faults at EL2.
    None,
    /// Device-nGnRE, never executable (the first GiB: UART, GIC, virtio).
    Device,
    /// Normal memory, read-only, never executable.
    ReadOnly,
    /// Normal memory, writable, never executable.
    ReadWrite,
    /// A page of mvmm's image whose permission depends on the section it
    /// holds (code: read-only executable; read-only data: read-only;
    /// anything else: writable, never executable).
    Image,
}

/// Why a layout cannot be mapped.
#[derive(Debug, PartialEq, Eq)]
pub enum MapError {
    /// A region is not aligned to the 2 MiB blocks the tables use.
    Unaligned { what: &'static str, range: MemRange },
    /// A region reaches beyond the 512 GiB the EL2 regime translates.
    OutOfReach { what: &'static str, range: MemRange },
    /// RAM in the first GiB, which is mapped as devices.
    RamInDeviceGib { what: &'static str, range: MemRange },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::Unaligned { what, range } => write!(
                f,
                "{what} {:#x}+{:#x} is not aligned to 2 MiB, the block size of mvmm's EL2 map",
                range.base, range.size
            ),
            MapError::OutOfReach { what, range } => write!(
                f,
                "{what} {:#x}+{:#x} is beyond the 512 GiB mvmm's EL2 map reaches",
                range.base, range.size
            ),
            MapError::RamInDeviceGib { what, range } => write!(
                f,
                "{what} {:#x}+{:#x} is in the first GiB, which mvmm maps as devices",
                range.base, range.size
            ),
        }
    }
}

const GIB: u64 = 1 << 30;
const BLOCK_2M: u64 = 2 << 20;
const PAGE: u64 = 4096;
/// The EL2 regime translates 39 bits (TCR_EL2.T0SZ = 25).
const REACH: u64 = 512 * GIB;

/// Descriptor bits (VMSAv8-64, EL2 stage 1, 4 KiB granule).
pub mod bits {
    /// A block (levels 1 and 2).
    pub const BLOCK: u64 = 0b01;
    /// A table (levels 1 and 2) or a page (level 3).
    pub const TABLE_OR_PAGE: u64 = 0b11;
    /// MAIR_EL2 attribute 1: Normal write-back (attribute 0 is Device).
    pub const NORMAL: u64 = 1 << 2;
    /// AP[1]: RES1 in the EL2 regime.
    pub const AP_RES1: u64 = 1 << 6;
    /// AP[2]: read-only.
    pub const READ_ONLY: u64 = 1 << 7;
    /// Inner shareable.
    pub const INNER_SHAREABLE: u64 = 3 << 8;
    /// Access flag (set: no access-flag faults).
    pub const AF: u64 = 1 << 10;
    /// XN: never executable at EL2.
    pub const XN: u64 = 1 << 54;
    /// The output address of a descriptor.
    pub const ADDRESS: u64 = 0x0000_ffff_ffff_f000;
}

impl El2Layout {
    /// How `addr` (any address below 512 GiB) is mapped.
    pub fn mapping(&self, addr: u64) -> Mapping {
        let inside = |r: &MemRange| addr >= r.base && addr - r.base < r.size;
        if inside(&self.mvmm) {
            Mapping::Image
        } else if self.image_store.as_ref().is_some_and(inside) {
            Mapping::ReadOnly
        } else if self.vm_ram.iter().any(inside) {
            Mapping::ReadWrite
        } else if addr < GIB {
            Mapping::Device
        } else {
            Mapping::None
        }
    }

    fn check(&self) -> Result<(), MapError> {
        let named = core::iter::once(("mvmm's reservation", &self.mvmm))
            .chain(self.image_store.iter().map(|r| ("the image store", r)))
            .chain(self.vm_ram.iter().map(|r| ("a VM's RAM", r)));
        for (what, range) in named {
            let range = *range;
            if range.base % BLOCK_2M != 0 || range.size % BLOCK_2M != 0 {
                return Err(MapError::Unaligned { what, range });
            }
            if range
                .base
                .checked_add(range.size)
                .is_none_or(|end| end > REACH)
            {
                return Err(MapError::OutOfReach { what, range });
            }
            if range.base < GIB {
                return Err(MapError::RamInDeviceGib { what, range });
            }
        }
        Ok(())
    }

    /// The linker script fragment (placed inside an output section) that
    /// holds the EL2 tables: level-3 tables for mvmm's reservation, then a
    /// level-2 table per GiB holding RAM mvmm maps, then the level-1 table
    /// `__el2_l1` (for TTBR0_EL2). Each table is defined before the one that
    /// points to it, so no expression refers forward.
    pub fn linker_tables(&self) -> Result<String, MapError> {
        use bits::*;
        self.check()?;
        let normal = AF | AP_RES1 | INNER_SHAREABLE | NORMAL;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "/* mvmm's EL2 page tables, generated from the board by mvmm-core's el2_map. */\n\
             . = ALIGN(4096);"
        );
        // Level 3: every page of mvmm's reservation.
        let _ = writeln!(s, "__el2_l3 = .;");
        let mut page = self.mvmm.base;
        while page < self.mvmm.base + self.mvmm.size {
            let _ = writeln!(
                s,
                "QUAD({page:#x} | {:#x} | (({page:#x} >= __text_start && {page:#x} < __text_end) ? 0 : {XN:#x}) | (({page:#x} >= __text_start && {page:#x} < __ro_end) ? {READ_ONLY:#x} : 0))",
                TABLE_OR_PAGE | normal
            );
            page += PAGE;
        }
        // Level 2: one table per GiB that holds mapped RAM.
        let gibs: Vec<u64> = (1..REACH / GIB)
            .filter(|&g| (0..512).any(|b| self.mapping(g * GIB + b * BLOCK_2M) != Mapping::None))
            .collect();
        for &g in &gibs {
            let _ = writeln!(s, "__el2_l2_{g} = .;");
            for b in 0..512u64 {
                let block = g * GIB + b * BLOCK_2M;
                let entry = match self.mapping(block) {
                    Mapping::Image => {
                        let l3 = (block - self.mvmm.base) / PAGE * 8;
                        alloc::format!("__el2_l3 + {l3:#x} + {TABLE_OR_PAGE:#x}")
                    }
                    Mapping::ReadOnly => {
                        alloc::format!("{:#x}", block | BLOCK | normal | READ_ONLY | XN)
                    }
                    Mapping::ReadWrite => alloc::format!("{:#x}", block | BLOCK | normal | XN),
                    Mapping::Device | Mapping::None => "0".into(),
                };
                let _ = writeln!(s, "QUAD({entry})");
            }
        }
        // Level 1: the first GiB is devices; RAM GiBs point to their tables.
        let _ = writeln!(s, "__el2_l1 = .;");
        for g in 0..512u64 {
            let entry = if g == 0 {
                alloc::format!("{:#x}", BLOCK | AF | AP_RES1 | XN)
            } else if gibs.contains(&g) {
                alloc::format!("__el2_l2_{g} + {TABLE_OR_PAGE:#x}")
            } else {
                "0".into()
            };
            let _ = writeln!(s, "QUAD({entry})");
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn qemu_virt() -> El2Layout {
        El2Layout {
            mvmm: MemRange::new(0x4000_0000, 0x0100_0000),
            image_store: Some(MemRange::new(0x4300_0000, 0x0d00_0000)),
            vm_ram: vec![
                MemRange::new(0x4100_0000, 0x0200_0000),
                MemRange::new(0x5000_0000, 0x3000_0000),
            ],
        }
    }

    #[test]
    fn maps_each_region_as_its_owner_needs() {
        let l = qemu_virt();
        assert_eq!(l.mapping(0x0900_0000), Mapping::Device);
        assert_eq!(l.mapping(0x4020_0000), Mapping::Image);
        assert_eq!(l.mapping(0x4100_0000), Mapping::ReadWrite);
        assert_eq!(l.mapping(0x4300_0000), Mapping::ReadOnly);
        assert_eq!(l.mapping(0x4fff_ffff), Mapping::ReadOnly);
        assert_eq!(l.mapping(0x7fff_ffff), Mapping::ReadWrite);
        assert_eq!(l.mapping(0x8000_0000), Mapping::None);
    }

    #[test]
    fn unassigned_ram_is_not_mapped() {
        let mut l = qemu_virt();
        l.vm_ram.pop();
        assert_eq!(l.mapping(0x5000_0000), Mapping::None);
        let script = l.linker_tables().unwrap();
        // Block 0x5000_0000 is entry 0x80 of the second GiB's table.
        let l2: Vec<&str> = script
            .lines()
            .skip_while(|line| *line != "__el2_l2_1 = .;")
            .skip(1)
            .take(512)
            .collect();
        assert_eq!(l2[0x80], "QUAD(0)");
        let store = u64::from_str_radix(
            l2[0x18].trim_start_matches("QUAD(0x").trim_end_matches(')'),
            16,
        )
        .unwrap();
        assert_eq!(store & bits::ADDRESS, 0x4300_0000);
        assert_ne!(store & bits::READ_ONLY, 0, "the image store is read-only");
    }

    #[test]
    fn the_script_has_one_entry_per_descriptor() {
        let script = qemu_virt().linker_tables().unwrap();
        let quads = script.lines().filter(|l| l.starts_with("QUAD(")).count();
        // 16 MiB of pages, one level-2 table, one level-1 table.
        assert_eq!(quads, 4096 + 512 + 512);
        assert!(script.contains("__el2_l1 = .;"));
        // Only pages of mvmm's own image can be executable: every other
        // descriptor is either invalid, a table, or carries XN.
        for line in script.lines().filter(|l| l.starts_with("QUAD(0x")) {
            let value = line.trim_start_matches("QUAD(").trim_end_matches(')');
            if let Ok(v) = u64::from_str_radix(value.trim_start_matches("0x"), 16) {
                assert_ne!(v & bits::XN, 0, "executable block: {line}");
            }
        }
    }

    #[test]
    fn refuses_regions_the_blocks_cannot_express() {
        let mut l = qemu_virt();
        l.vm_ram.push(MemRange::new(0x8010_0000, 0x10_0000));
        assert!(matches!(l.linker_tables(), Err(MapError::Unaligned { .. })));
        let mut l = qemu_virt();
        l.vm_ram.push(MemRange::new(0x0800_0000, 0x20_0000));
        let err = l.linker_tables().unwrap_err();
        assert!(err.to_string().contains("0x8000000"), "{err}");
        let mut l = qemu_virt();
        l.vm_ram.push(MemRange::new(REACH, 0x20_0000));
        assert!(matches!(
            l.linker_tables(),
            Err(MapError::OutOfReach { .. })
        ));
    }
}
