//! mvmm's own hypercalls (SMCCC, vendor-specific hypervisor range).

use core::arch::asm;

/// The call ids and results are mvmm's: one definition for both sides.
pub use mvmm_core::hypercall::{CONSOLE_FOCUS, DISPLAY, NOT_SUPPORTED};

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

/// Asks mvmm to scan out this VM's private framebuffer (`take`) or the
/// rich VM's again. Returns x0: 0 on success, [`NOT_SUPPORTED`] when there
/// is no display.
pub fn display(take: bool) -> u64 {
    let ret: u64;
    // SAFETY: an SMCCC fast call through HVC: function in x0, argument in
    // x1, result in x0; x1-x17 are treated as clobbered. mvmm only
    // reprograms its scan-out; it touches no memory of this VM.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") DISPLAY => ret,
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

/// Exchanges one rollback-counter frame with mvmm (see
/// `crate::rollback`): mvmm replaces `frame` with its response. Returns x0:
/// 0 on success.
pub fn rpmb(frame: &mut [u8; mvmm_core::rpmb::FRAME_LEN]) -> u64 {
    let ret: u64;
    let address = frame.as_mut_ptr() as u64;
    // SAFETY: an SMCCC fast call through HVC: function in x0, the frame's
    // address in x1 (this VM's identity map: the virtual address is the
    // guest-physical one mvmm checks against this VM's RAM), result in x0;
    // x1-x17 are treated as clobbered. mvmm reads and writes exactly the
    // 128 bytes of `frame`, which this function borrows mutably, and
    // nothing else of this VM; its writes are visible here when the call
    // returns (same cacheable attributes on both sides).
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") mvmm_core::hypercall::RPMB => ret,
            inout("x1") address => _,
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

/// The rollback counter's frames travel by the RPMB hypercall.
pub struct HypercallLink;

impl crate::rollback::FrameLink for HypercallLink {
    fn exchange(
        &mut self,
        frame: &mut [u8; mvmm_core::rpmb::FRAME_LEN],
    ) -> Result<(), &'static str> {
        match rpmb(frame) {
            0 => Ok(()),
            NOT_SUPPORTED => Err("mvmm keeps no counter for this VM"),
            _ => Err("mvmm refused the frame"),
        }
    }
}
