//! The stage-1 identity map, built at compile time.
//!
//! 4 KiB granule, 39-bit VA (T0SZ = 25), one level-1 table of 1 GiB blocks:
//! the board's RAM (rounded out to whole GiB) is normal write-back memory,
//! every other GiB of the first 512 GiB is device nGnRE and never executable.
//! Access outside the VM's partition is therefore left to stage 2, which is
//! what the isolation tests want to see.

use super::board::{RAM_BASE, RAM_SIZE};

const GIB: u64 = 1 << 30;
const ENTRIES: usize = 512;

/// MAIR_EL1 attribute indices.
const ATTR_DEVICE: u64 = 0;
const ATTR_NORMAL: u64 = 1;
/// MAIR_EL1: Attr0 = device nGnRE, Attr1 = normal inner/outer write-back
/// read/write-allocate.
pub const MAIR_VALUE: u64 = (0x04 << (8 * ATTR_DEVICE)) | (0xff << (8 * ATTR_NORMAL));

/// TCR_EL1: T0SZ = 25, TTBR0 walks write-back inner-shareable, 4 KiB
/// granule (TG0 = 0), TTBR1 walks disabled (EPD1), 40-bit intermediate physical
/// addresses.
pub const TCR_VALUE: u64 = 25 // T0SZ
    | (0b01 << 8)   // IRGN0: write-back, write-allocate
    | (0b01 << 10)  // ORGN0: write-back, write-allocate
    | (0b11 << 12)  // SH0: inner shareable
    | (1 << 23)     // EPD1
    | (0b010 << 32); // IPS: 40 bits

/// SCTLR_EL1: the ARMv8.0 RES1 bits, MMU (M), data (C) and instruction (I)
/// caches, stack alignment checks (SA, SA0); little-endian, no WXN, no
/// alignment faults on normal memory.
pub const SCTLR_VALUE: u64 = (1 << 29) | (1 << 28) | (1 << 23) | (1 << 22) | (1 << 20) | (1 << 11) // RES1
    | (1 << 12) // I
    | (1 << 4)  // SA0
    | (1 << 3)  // SA
    | (1 << 2)  // C
    | 1; // M

const BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

/// A level-1 translation table.
#[repr(C, align(4096))]
pub struct Table(pub [u64; ENTRIES]);

const fn block(index: usize) -> u64 {
    let base = index as u64 * GIB;
    let ram_first = RAM_BASE / GIB * GIB;
    let ram_end = RAM_BASE + RAM_SIZE;
    if base >= ram_first && base < ram_end {
        base | BLOCK | AF | SH_INNER | (ATTR_NORMAL << 2) | UXN
    } else {
        base | BLOCK | AF | (ATTR_DEVICE << 2) | PXN | UXN
    }
}

const fn identity_map() -> Table {
    let mut entries = [0u64; ENTRIES];
    let mut i = 0;
    while i < ENTRIES {
        entries[i] = block(i);
        i += 1;
    }
    Table(entries)
}

/// The table TTBR0_EL1 points to; read only by the MMU.
pub static IDENTITY_MAP: Table = identity_map();

const _: () = assert!(RAM_SIZE > 0 && RAM_BASE.checked_add(RAM_SIZE).is_some());
const _: () = assert!(
    RAM_BASE + RAM_SIZE <= ENTRIES as u64 * GIB,
    "board RAM beyond the 512 GiB identity map"
);
