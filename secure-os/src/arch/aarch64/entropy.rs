//! FEAT_RNG: the RNDR register, where the CPU has it.

use core::arch::asm;

/// Whether the CPU implements RNDR (ID_AA64ISAR0_EL1.RNDR != 0).
pub fn rndr_available() -> bool {
    let isar0: u64;
    // SAFETY: reading an ID register has no side effects and touches no memory.
    unsafe {
        asm!("mrs {}, id_aa64isar0_el1", out(reg) isar0, options(nomem, nostack, preserves_flags))
    };
    (isar0 >> 60) & 0xf != 0
}

/// One 64-bit random number from RNDR; `None` when the CPU has no RNDR or
/// the hardware could not deliver (the caller may retry).
pub fn rndr() -> Option<u64> {
    if !rndr_available() {
        return None;
    }
    let value: u64;
    let ok: u64;
    // SAFETY: RNDR (s3_3_c2_c4_0) exists (checked above); reading it returns
    // a random value and sets NZCV (Z on failure), which `cset` consumes. No
    // memory is touched.
    unsafe {
        asm!(
            "mrs {v}, s3_3_c2_c4_0",
            "cset {ok}, ne",
            v = out(reg) value,
            ok = out(reg) ok,
            options(nomem, nostack),
        )
    };
    (ok != 0).then_some(value)
}
