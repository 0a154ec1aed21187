//! mvmm's own hypercalls (SMCCC, vendor-specific hypervisor range).

use core::arch::asm;

/// The call ids and results are mvmm's: one definition for both sides.
pub use mvmm_core::hypercall::{CONSOLE_FOCUS, DISPLAY, NOT_SUPPORTED};

/// One SMCCC fast call to mvmm through HVC: `function` in x0, `argument`
/// in x1, the result from x0; x1-x17 are treated as clobbered.
///
/// # Safety
/// The call must not make mvmm change memory of this VM other than what the
/// caller hands it through `argument` (and owns for the call's duration).
unsafe fn hvc(function: u64, argument: u64) -> u64 {
    let ret: u64;
    // SAFETY: the register use is SMCCC's; what mvmm does to this VM's
    // memory is the caller's contract (see `# Safety`).
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") function => ret,
            inout("x1") argument => _,
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

/// Asks mvmm for (`take`) or returns the console input focus. Returns x0:
/// 0 on success, [`NOT_SUPPORTED`] when this mvmm has no such call.
pub fn console_focus(take: bool) -> u64 {
    // SAFETY: mvmm only switches its console routing; it touches no memory
    // of this VM.
    unsafe { hvc(CONSOLE_FOCUS, u64::from(take)) }
}

/// Asks mvmm to scan out this VM's private framebuffer (`take`) or the
/// rich VM's again. Returns x0: 0 on success, [`NOT_SUPPORTED`] when there
/// is no display.
pub fn display(take: bool) -> u64 {
    // SAFETY: mvmm only reprograms its scan-out; it touches no memory of
    // this VM.
    unsafe { hvc(DISPLAY, u64::from(take)) }
}

/// Exchanges one rollback-counter frame with mvmm (see
/// `crate::rollback`): mvmm replaces `frame` with its response. Returns x0:
/// 0 on success.
pub fn rpmb(frame: &mut [u8; mvmm_core::rpmb::FRAME_LEN]) -> u64 {
    let address = frame.as_mut_ptr() as u64;
    // SAFETY: x1 is the frame's address (this VM's identity map: the virtual
    // address is the guest-physical one mvmm checks against this VM's RAM).
    // mvmm reads and writes exactly the 128 bytes of `frame`, which this
    // function borrows mutably, and nothing else of this VM; its writes are
    // visible here when the call returns (same cacheable attributes on both
    // sides).
    unsafe { hvc(mvmm_core::hypercall::RPMB, address) }
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
