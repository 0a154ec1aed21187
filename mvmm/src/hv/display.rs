//! The display (see `mvmm_core::display`): at boot the scan-out shows the
//! rich VM's framebuffer; the secure VM's DISPLAY hypercall switches it to
//! the secure VM's private framebuffer and back. Releasing console focus
//! and a reset of the secure VM also bring the rich framebuffer back.

use super::*;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering;
use mvmm_core::display::{HOLD_LIMIT_SECONDS, PathLease, Refused, Screen, ramfb_config};

struct ScanOut {
    fw_cfg: arch::FwCfg,
    screen: Screen,
}

/// The scan-out, once fw_cfg has been found.
static SCAN_OUT: Mutex<Option<ScanOut>> = Mutex::new(None);

/// Finds the scan-out and shows the rich VM's framebuffer (at boot).
pub(super) fn start_display() {
    let Some(display) = BOARD.display else {
        return;
    };
    let mut fw_cfg = match arch::FwCfg::open(display.fw_cfg) {
        Ok(fw_cfg) => fw_cfg,
        Err(why) => {
            log!("display: {why}; no scan-out");
            return;
        }
    };
    let rich = display.framebuffer(VmKind::Rich);
    if let Err(why) = fw_cfg.scan_out(&ramfb_config(&display, rich.base)) {
        log!("display: {why}; no scan-out");
        return;
    }
    log!(
        "display: {}x{} XR24 scan-out shows the rich VM's framebuffer at {rich}",
        display.width,
        display.height
    );
    *SCAN_OUT.lock() = Some(ScanOut {
        fw_cfg,
        screen: Screen::new(),
    });
}

/// The DISPLAY hypercall of VM `vm`: take (`true`) or release the display.
pub(super) fn display_call(vm: &Vm<'static>, take: bool) -> u64 {
    let mut guard = SCAN_OUT.lock();
    let Some(scan_out) = guard.as_mut() else {
        return hypercall::NOT_SUPPORTED;
    };
    match scan_out
        .screen
        .request(BOARD.display.as_ref(), vm.kind, take)
    {
        Err(Refused::NotSecure) => hypercall::DENIED,
        Err(Refused::NoDisplay) => hypercall::NOT_SUPPORTED,
        Ok(None) => hypercall::SUCCESS,
        Ok(Some(kind)) => {
            if kind == VmKind::Secure {
                lease_taken();
            }
            let status = if show(scan_out, kind) {
                hypercall::SUCCESS
            } else if kind == VmKind::Secure {
                // Not on screen: the secure VM must not believe it is.
                scan_out.screen.secure_stopped();
                show(scan_out, VmKind::Rich);
                hypercall::NOT_SUPPORTED
            } else {
                hypercall::SUCCESS
            };
            drop(guard);
            lease_check_free();
            status
        }
    }
}

/// The secure VM's hold on the trusted path (`mvmm_core::display::PathLease`
/// as a word): when it took the display or console focus.
static LEASE: AtomicU64 = AtomicU64::new(0);

/// The secure VM took the display or the console focus: the lease starts
/// unless it already runs.
pub(super) fn lease_taken() {
    let mut lease = PathLease::from_word(LEASE.load(Ordering::Relaxed));
    lease.take(arch::counter());
    LEASE.store(lease.to_word(), Ordering::Relaxed);
}

/// Something was given back: the lease ends once the rich VM has both the
/// display and the console focus again.
pub(super) fn lease_check_free() {
    let secure_focus = BOARD
        .vms
        .get(VMM.focus())
        .is_some_and(|vm| vm.kind == VmKind::Secure);
    let secure_screen = SCAN_OUT
        .lock()
        .as_ref()
        .is_some_and(|s| s.screen.on_screen() == VmKind::Secure);
    if !secure_focus && !secure_screen {
        LEASE.store(PathLease::none().to_word(), Ordering::Relaxed);
    }
}

/// On the rich VM's timer interrupts: a secure VM that has held the
/// trusted path longer than [`HOLD_LIMIT_SECONDS`] has stopped answering;
/// the path (display, console and input focus) goes back to the rich VM.
pub(super) fn lease_watchdog() {
    let word = LEASE.load(Ordering::Relaxed);
    if word == 0 || !PathLease::from_word(word).expired(arch::counter(), arch::counter_frequency())
    {
        return;
    }
    LEASE.store(PathLease::none().to_word(), Ordering::Relaxed);
    if let Some((index, vm)) = BOARD
        .vms
        .iter()
        .enumerate()
        .find(|(_, vm)| vm.kind == VmKind::Secure)
    {
        log!(
            "vm '{}' held the trusted path over {HOLD_LIMIT_SECONDS} s: it stopped answering; the display and input go back to the rich VM",
            vm.name
        );
        secure_path_ends(index, vm);
    }
}

/// The secure VM stopped holding the path (focus released, reset): the
/// rich VM's framebuffer comes back if it was not on screen.
pub(super) fn secure_display_ends() {
    let mut guard = SCAN_OUT.lock();
    if let Some(scan_out) = guard.as_mut()
        && scan_out.screen.secure_stopped().is_some()
    {
        show(scan_out, VmKind::Rich);
    }
    drop(guard);
    lease_check_free();
}

/// Points the scan-out at the framebuffer of `kind`; false (logged) when
/// fw_cfg refused.
fn show(scan_out: &mut ScanOut, kind: VmKind) -> bool {
    let Some(display) = BOARD.display else {
        return false;
    };
    let frame = display.framebuffer(kind);
    match scan_out
        .fw_cfg
        .scan_out(&ramfb_config(&display, frame.base))
    {
        Ok(()) => {
            log!(
                "display: scan-out shows the {} VM's framebuffer",
                match kind {
                    VmKind::Rich => "rich",
                    VmKind::Secure => "secure",
                }
            );
            true
        }
        Err(why) => {
            log!("display: {why}");
            false
        }
    }
}
