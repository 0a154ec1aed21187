//! 32-bit memory accesses that survive an abort: the guest side of the
//! isolation tests.

use core::arch::asm;

/// An access that took a data abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort {
    /// ESR_EL1 of the abort.
    pub esr: u64,
    /// FAR_EL1: the faulting virtual address.
    pub far: u64,
}

unsafe extern "C" {
    static __guest_rt_probe_read32_access: u8;
    static __guest_rt_probe_write32_access: u8;
}

/// Whether `pc` is one of the access instructions of `probe.S`.
pub(super) fn is_access_instruction(pc: u64) -> bool {
    let read = &raw const __guest_rt_probe_read32_access as u64;
    let write = &raw const __guest_rt_probe_write32_access as u64;
    pc == read || pc == write
}

/// Reads 32 bits at `address` (identity-mapped, so also the IPA).
///
/// Any address may be given: inside the VM's RAM it reads memory (changing
/// nothing), in a device it is an MMIO read, outside the partition mvmm
/// injects an abort, which comes back as `Err`.
pub fn read32(address: u64) -> Result<u32, Abort> {
    let value: u64;
    let esr: u64;
    let far: u64;
    // SAFETY: the callee (probe.S) only loads from `address` and touches
    // x0-x2 and the link register; a data abort on its load is turned into
    // a return with x1 = ESR by the exception handler. A read has no effect
    // on Rust-visible memory that the compiler could rely on.
    unsafe {
        asm!(
            "bl __guest_rt_probe_read32",
            inout("x0") address => value,
            out("x1") esr,
            out("x2") far,
            out("x30") _,
            options(nostack),
        );
    }
    if esr == 0 {
        Ok(value as u32)
    } else {
        Err(Abort { esr, far })
    }
}

/// Why [`write32`] did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The write would land in this image (code, data, stacks) and is
    /// refused.
    OwnImage,
    /// The write took a data abort.
    Abort(Abort),
}

unsafe extern "C" {
    static _start: u8;
    static __image_end: u8;
}

/// Whether `address..address + 4` overlaps this image's memory.
pub fn overlaps_own_image(address: u64) -> bool {
    let start = &raw const _start as u64;
    let end = &raw const __image_end as u64;
    address < end && address.saturating_add(4) > start
}

/// Writes the 32-bit `value` at `address`, unless that is inside this image.
///
/// Outside its own image a guest has no Rust data (no heap), so the write
/// cannot break Rust's assumptions; it can still program a device, which is
/// the point of a probe. Aborts are recovered as for [`read32`].
pub fn write32(address: u64, value: u32) -> Result<(), WriteError> {
    if overlaps_own_image(address) {
        return Err(WriteError::OwnImage);
    }
    let esr: u64;
    let far: u64;
    // SAFETY: the callee (probe.S) stores `value` at `address` and touches
    // x0-x3 and the link register. `address` is outside this image, where no
    // Rust object lives. An abort returns with x1 = ESR.
    unsafe {
        asm!(
            "bl __guest_rt_probe_write32",
            inout("x0") address => _,
            inout("x1") u64::from(value) => esr,
            out("x2") far,
            out("x3") _,
            out("x30") _,
            options(nostack),
        );
    }
    if esr == 0 {
        Ok(())
    } else {
        Err(WriteError::Abort(Abort { esr, far }))
    }
}
