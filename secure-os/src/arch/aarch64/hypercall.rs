//! mvmm's own hypercalls (SMCCC, vendor-specific hypervisor range).

use core::arch::asm;

/// The call ids and results are mvmm's: one definition for both sides.
pub use mvmm_core::hypercall::{CONSOLE_FOCUS, NOT_SUPPORTED};

/// Asks mvmm for (`take`) or returns the console input focus. Returns x0:
/// 0 on success, [`NOT_SUPPORTED`] when this mvmm has no such call.
pub fn console_focus(take: bool) -> u64 {
    let ret: u64;
    // SAFETY: an SMCCC fast call through HVC: function in x0, argument in
    // x1, result in x0; x1-x17 are treated as clobbered. mvmm only switches
    // its console routing; it touches no memory of this VM.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") CONSOLE_FOCUS => ret,
            inout("x1") u64::from(take) => _,
            out("x2") _, out("x3") _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret
}
