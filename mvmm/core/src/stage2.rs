//! Stage-2 translation: what each VM may reach, and the tables that say so.
//!
//! The planner lists the mappings of a VM (its RAM as normal memory, its
//! passed-through devices as device memory, identity mapped: IPA == PA).
//! The builder writes VMSAv8-64 stage-2 descriptors (4 KiB granule, 32-bit
//! IPA space, starting at level 1) into a caller-provided pool of tables,
//! so the arch layer only has to point VTTBR_EL2 at the first one. Anything
//! not mapped faults to EL2; that is the isolation.

use crate::partition::{Board, MemRange, PAGE_SIZE, Vm};

/// Guest-physical address bits (VTCR_EL2.T0SZ = 64 - IPA_BITS).
pub const IPA_BITS: u32 = 32;
/// Entries per translation table.
pub const ENTRIES: usize = 512;
/// One translation table.
pub type Table = [u64; ENTRIES];

const BLOCK_2M: u64 = 2 << 20;
const VALID: u64 = 1;
const TABLE_OR_PAGE: u64 = 1 << 1;
const AF: u64 = 1 << 10;
const S2AP_RW: u64 = 0b11 << 6;
const SH_INNER: u64 = 0b11 << 8;
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
const MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
const XN: u64 = 1 << 54;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attr {
    /// Guest RAM: normal write-back, read/write/execute.
    Normal,
    /// A passed-through device: Device-nGnRE, read/write, never executable.
    Device,
}

impl Attr {
    const fn bits(self) -> u64 {
        match self {
            Attr::Normal => AF | S2AP_RW | SH_INNER | MEMATTR_NORMAL_WB,
            Attr::Device => AF | S2AP_RW | MEMATTR_DEVICE_NGNRE | XN,
        }
    }

    fn from_bits(bits: u64) -> Attr {
        if bits & (0b1111 << 2) == MEMATTR_NORMAL_WB {
            Attr::Normal
        } else {
            Attr::Device
        }
    }
}

/// One contiguous region a VM can reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub ipa: MemRange,
    pub pa: u64,
    pub attr: Attr,
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage2Error {
    /// The pool has no table left.
    OutOfTables,
    /// An address or size is not page aligned.
    Unaligned { ipa: u64 },
    /// The IPA does not fit in [`IPA_BITS`].
    OutsideIpaSpace { ipa: u64 },
    /// Something is already mapped there.
    AlreadyMapped { ipa: u64 },
}

/// The mappings of `vm`: its RAM, then its devices. The vUART and the GIC
/// are left unmapped on purpose so that every access traps to mvmm.
pub fn plan<'a>(board: &'a Board<'a>, vm: &'a Vm<'a>) -> impl Iterator<Item = Mapping> + 'a {
    let ram = vm.ram.iter().map(|r| Mapping {
        ipa: *r,
        pa: r.base,
        attr: Attr::Normal,
    });
    let devices = vm
        .devices
        .iter()
        .filter_map(move |name| board.device(name))
        .map(|d| Mapping {
            ipa: d.mmio,
            pa: d.mmio.base,
            attr: Attr::Device,
        });
    ram.chain(devices)
}

/// Writes stage-2 tables into a pool.
///
/// # Invariants
/// `tables[0]` is the level-1 root; `tables[i]` lives at physical address
/// `pool_pa + i * 4096`; entries `0..used` of the pool are in use.
pub struct Stage2Builder<'t> {
    tables: &'t mut [Table],
    pool_pa: u64,
    used: usize,
}

impl<'t> Stage2Builder<'t> {
    /// Starts with an empty root. `pool_pa` is the physical address of
    /// `tables[0]` (page aligned).
    pub fn new(tables: &'t mut [Table], pool_pa: u64) -> Result<Self, Stage2Error> {
        let root = tables.first_mut().ok_or(Stage2Error::OutOfTables)?;
        *root = [0; ENTRIES];
        Ok(Stage2Builder {
            tables,
            pool_pa,
            used: 1,
        })
    }

    /// A builder over tables already written (`used` of them), to walk them.
    #[cfg(test)]
    pub(crate) fn resume(tables: &'t mut [Table], pool_pa: u64, used: usize) -> Self {
        Stage2Builder {
            tables,
            pool_pa,
            used,
        }
    }

    /// Physical address of the root table (for VTTBR_EL2).
    pub fn root_pa(&self) -> u64 {
        self.pool_pa
    }

    /// Tables used so far.
    pub fn tables_used(&self) -> usize {
        self.used
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)`, with 2 MiB blocks where
    /// both sides are aligned and 4 KiB pages elsewhere.
    pub fn map(&mut self, ipa: u64, pa: u64, size: u64, attr: Attr) -> Result<(), Stage2Error> {
        self.map_leaves(ipa, pa, size, attr.bits())
    }

    /// [`Self::map`] with the leaf attribute bits given raw. The table
    /// layout is the same for VMSAv8-64 stage 1 (4 KiB granule, 32-bit input
    /// range, walk from level 1), which the SMMU's stage-1 stand-in uses
    /// (see [`crate::smmu`]).
    pub fn map_leaves(
        &mut self,
        ipa: u64,
        pa: u64,
        size: u64,
        leaf_bits: u64,
    ) -> Result<(), Stage2Error> {
        if !ipa.is_multiple_of(PAGE_SIZE)
            || !pa.is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
        {
            return Err(Stage2Error::Unaligned { ipa });
        }
        let end = ipa
            .checked_add(size)
            .ok_or(Stage2Error::OutsideIpaSpace { ipa })?;
        if end > 1u64 << IPA_BITS {
            return Err(Stage2Error::OutsideIpaSpace { ipa });
        }
        let mut offset = 0;
        while offset < size {
            let (i, p) = (ipa + offset, pa + offset);
            let step = if i % BLOCK_2M == 0 && p % BLOCK_2M == 0 && size - offset >= BLOCK_2M {
                let l2 = self.next_table(0, level_index(i, 1))?;
                self.set(l2, level_index(i, 2), p | leaf_bits | VALID)?;
                BLOCK_2M
            } else {
                let l2 = self.next_table(0, level_index(i, 1))?;
                let l3 = self.next_table(l2, level_index(i, 2))?;
                self.set(l3, level_index(i, 3), p | leaf_bits | VALID | TABLE_OR_PAGE)?;
                PAGE_SIZE
            };
            offset += step;
        }
        Ok(())
    }

    /// Maps every region [`plan`] lists for `vm`.
    pub fn map_vm(&mut self, board: &Board<'_>, vm: &Vm<'_>) -> Result<(), Stage2Error> {
        for m in plan(board, vm) {
            self.map(m.ipa.base, m.pa, m.ipa.size, m.attr)?;
        }
        Ok(())
    }

    fn set(&mut self, table: usize, index: usize, desc: u64) -> Result<(), Stage2Error> {
        let entry = &mut self.tables[table][index];
        if *entry & VALID != 0 {
            return Err(Stage2Error::AlreadyMapped {
                ipa: desc & ADDR_MASK,
            });
        }
        *entry = desc;
        Ok(())
    }

    /// The table that entry `index` of `table` points to, allocated on
    /// first use.
    fn next_table(&mut self, table: usize, index: usize) -> Result<usize, Stage2Error> {
        let desc = self.tables[table][index];
        if desc & VALID != 0 {
            if desc & TABLE_OR_PAGE == 0 {
                return Err(Stage2Error::AlreadyMapped {
                    ipa: desc & ADDR_MASK,
                });
            }
            return Ok(self.table_index(desc));
        }
        let new = self.used;
        let fresh = self.tables.get_mut(new).ok_or(Stage2Error::OutOfTables)?;
        *fresh = [0; ENTRIES];
        self.used += 1;
        self.tables[table][index] =
            (self.pool_pa + (new as u64) * PAGE_SIZE) | TABLE_OR_PAGE | VALID;
        Ok(new)
    }

    fn table_index(&self, desc: u64) -> usize {
        ((desc & ADDR_MASK).wrapping_sub(self.pool_pa) / PAGE_SIZE) as usize
    }

    /// Walks the tables like the MMU would: the PA and attribute of `ipa`,
    /// or `None` when an access there faults.
    pub fn translate(&self, ipa: u64) -> Option<(u64, Attr)> {
        if ipa >> IPA_BITS != 0 {
            return None;
        }
        let mut table = 0;
        for level in 1..=3 {
            let desc = *self.tables.get(table)?.get(level_index(ipa, level))?;
            if desc & VALID == 0 {
                return None;
            }
            let is_leaf = level == 3 || desc & TABLE_OR_PAGE == 0;
            if is_leaf {
                let block = 1u64 << level_shift(level);
                return Some((
                    (desc & ADDR_MASK & !(block - 1)) | (ipa & (block - 1)),
                    Attr::from_bits(desc),
                ));
            }
            table = self.table_index(desc);
        }
        None
    }
}

const fn level_shift(level: u32) -> u32 {
    12 + 9 * (3 - level)
}

fn level_index(addr: u64, level: u32) -> usize {
    ((addr >> level_shift(level)) & (ENTRIES as u64 - 1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::tests::BOARD;
    use proptest::prelude::*;

    const POOL_PA: u64 = 0x4080_0000;

    fn build(vm: usize) -> (Vec<Table>, usize) {
        let mut pool = vec![[0u64; ENTRIES]; 16];
        let used = {
            let mut b = Stage2Builder::new(&mut pool, POOL_PA).unwrap();
            b.map_vm(&BOARD, &BOARD.vms[vm]).unwrap();
            b.tables_used()
        };
        (pool, used)
    }

    fn translate(pool: &mut [Table], ipa: u64) -> Option<(u64, Attr)> {
        let b = Stage2Builder {
            tables: pool,
            pool_pa: POOL_PA,
            used: 0,
        };
        b.translate(ipa)
    }

    #[test]
    fn rich_vm_reaches_its_ram_and_devices_only() {
        let (mut pool, used) = build(0);
        // Root, L2 for devices, L2 for RAM, one L3 per device 2 MiB window.
        assert_eq!(used, 5);
        assert_eq!(
            translate(&mut pool, 0x5000_0000),
            Some((0x5000_0000, Attr::Normal))
        );
        assert_eq!(
            translate(&mut pool, 0x7fff_fff8),
            Some((0x7fff_fff8, Attr::Normal))
        );
        assert_eq!(
            translate(&mut pool, 0x0901_0004),
            Some((0x0901_0004, Attr::Device))
        );
        // The secure VM's RAM, mvmm, the UART and the GIC are not reachable.
        for ipa in [
            0x4100_0000,
            0x4000_0000,
            0x0900_0000,
            0x0800_0000,
            0x8000_0000,
            0x4fff_ffff,
        ] {
            assert_eq!(translate(&mut pool, ipa), None, "{ipa:#x}");
        }
    }

    #[test]
    fn secure_vm_reaches_its_ram_only() {
        let (mut pool, _) = build(1);
        assert_eq!(
            translate(&mut pool, 0x4100_0000),
            Some((0x4100_0000, Attr::Normal))
        );
        assert_eq!(
            translate(&mut pool, 0x42ff_f000),
            Some((0x42ff_f000, Attr::Normal))
        );
        for ipa in [0x4300_0000, 0x5000_0000, 0x0901_0000, 0x0a00_3000] {
            assert_eq!(translate(&mut pool, ipa), None, "{ipa:#x}");
        }
    }

    #[test]
    fn device_pages_are_never_executable_and_ram_is_write_back() {
        assert_ne!(Attr::Device.bits() & XN, 0);
        assert_eq!(Attr::Normal.bits() & XN, 0);
        assert_eq!(Attr::Normal.bits() & (0b1111 << 2), 0b1111 << 2);
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut pool = vec![[0u64; ENTRIES]; 2];
        let mut b = Stage2Builder::new(&mut pool, POOL_PA).unwrap();
        assert_eq!(
            b.map(0x1001, 0x1000, 0x1000, Attr::Normal),
            Err(Stage2Error::Unaligned { ipa: 0x1001 })
        );
        assert_eq!(
            b.map(0xffff_f000, 0, 0x2000, Attr::Normal),
            Err(Stage2Error::OutsideIpaSpace { ipa: 0xffff_f000 })
        );
        b.map(0x4000_0000, 0x4000_0000, BLOCK_2M, Attr::Normal)
            .unwrap();
        assert!(matches!(
            b.map(0x4000_0000, 0, 0x1000, Attr::Normal),
            Err(Stage2Error::AlreadyMapped { .. })
        ));
        // Two tables: a page mapping somewhere else needs a second L2 and an L3.
        assert_eq!(
            b.map(0x1000, 0x1000, 0x1000, Attr::Device),
            Err(Stage2Error::OutOfTables)
        );
        assert_eq!(
            Stage2Builder::new(&mut [], 0).err(),
            Some(Stage2Error::OutOfTables)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_mapped_page_translates_and_nothing_else(
            start in 0u64..0x3ff0, pages in 1u64..1200, probe in 0u64..0x1_0000_0000u64
        ) {
            let ipa = 0x1000_0000 + start * PAGE_SIZE;
            let pa = 0x8000_0000 + start * PAGE_SIZE;
            let mut pool = vec![[0u64; ENTRIES]; 16];
            let mut b = Stage2Builder::new(&mut pool, POOL_PA).unwrap();
            b.map(ipa, pa, pages * PAGE_SIZE, Attr::Normal).unwrap();
            let inside = probe >= ipa && probe < ipa + pages * PAGE_SIZE;
            let got = b.translate(probe);
            if inside {
                prop_assert_eq!(got, Some((probe - ipa + pa, Attr::Normal)));
            } else {
                prop_assert_eq!(got, None);
            }
            prop_assert_eq!(b.translate(ipa + pages * PAGE_SIZE - 1), Some((pa + pages * PAGE_SIZE - 1, Attr::Normal)));
        }
    }
}
