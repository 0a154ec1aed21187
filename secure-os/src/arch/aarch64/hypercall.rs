//! mvmm's own hypercalls (SMCCC, vendor-specific hypervisor range).

use guest_rt::arch::smccc;

/// The call ids and results are mvmm's: one definition for both sides.
pub use mvmm_core::hypercall::{CONSOLE_FOCUS, DISPLAY, NOT_SUPPORTED};

/// One SMCCC fast call to mvmm with one argument, returning x0.
///
/// # Safety
/// As for `guest_rt::arch::smccc::hvc`: the call must not make mvmm change
/// memory of this VM other than what the caller hands it through `argument`
/// (and owns for the call's duration).
unsafe fn hvc(function: u64, argument: u64) -> u64 {
    // SAFETY: the caller's contract is `smccc::hvc`'s.
    unsafe { smccc::hvc(function, [argument, 0, 0])[0] }
}

/// The version of mvmm's TRNG (Arm's SMCCC TRNG interface, see
/// `mvmm_core::trng`), `None` when this VM has none.
pub fn trng_version() -> Option<u64> {
    use mvmm_core::trng::{VERSION_1_0, fid};
    // SAFETY: TRNG_VERSION touches no memory.
    let version = unsafe { hvc(fid::VERSION, 0) };
    (version as i64 >= VERSION_1_0 as i64).then_some(version)
}

/// 192 random bits from mvmm's TRNG, `None` when it has no entropy now.
pub fn trng_rnd64() -> Option<[u64; 3]> {
    use mvmm_core::trng::{MAX_BITS_64, fid, ret};
    // SAFETY: TRNG_RND64 returns its bits in x1..x3 and touches no memory.
    let [status, a, b, c] = unsafe { smccc::hvc(fid::RND64, [MAX_BITS_64, 0, 0]) };
    (status == ret::SUCCESS).then_some([a, b, c])
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
