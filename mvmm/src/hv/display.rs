//! The display (see `mvmm_core::display`): at boot the scan-out shows the
//! rich VM's framebuffer; the secure VM's DISPLAY hypercall switches it to
//! the secure VM's private framebuffer and back. Releasing console focus
//! and a reset of the secure VM also bring the rich framebuffer back.

use super::*;
use mvmm_core::display::{Refused, Screen, ramfb_config};

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
            if show(scan_out, kind) {
                hypercall::SUCCESS
            } else if kind == VmKind::Secure {
                // Not on screen: the secure VM must not believe it is.
                scan_out.screen.secure_stopped();
                show(scan_out, VmKind::Rich);
                hypercall::NOT_SUPPORTED
            } else {
                hypercall::SUCCESS
            }
        }
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
