//! The DICE hand-over to the secure VM: its CDIs and measurements, written
//! into the last page of its RAM before it starts (and again at each of its
//! resets). See `mvmm_core::dice`.

use super::*;
use mvmm_core::dice::{HANDOVER_LEN, Handover, Inputs, Mode};
use mvmm_core::virtio::{GuestMemory, RamWindow};

/// The encoded hand-over of the secure VM, kept for its resets (the device
/// secret it came from is gone by then).
static HANDOVER: Mutex<Option<zeroize::Zeroizing<[u8; HANDOVER_LEN]>>> = Mutex::new(None);

/// Derives the secure VM's CDIs from the device secret and its verified
/// image, and keeps the hand-over.
pub(super) fn prepare_handover(
    uds: &[u8; dice::SECRET_LEN],
    mvmm_hash: [u8; 32],
    image_hash: [u8; 32],
    security_version: u32,
) {
    let mode = Mode::Normal;
    let cdis = dice::derive(
        uds,
        &Inputs {
            code_hash: image_hash,
            board: BOARD.name,
            security_version,
            authority: &crate::board::BOOT_AUTHORITY,
            mode,
        },
    );
    super::start_rpmb(uds, &cdis.seal);
    let handover = Handover {
        cdis,
        mvmm_hash,
        image_hash,
        security_version,
        mode,
        board: BOARD.name,
    };
    *HANDOVER.lock() = Some(zeroize::Zeroizing::new(handover.encode()));
}

/// Writes the kept hand-over into the last page of `vm`'s RAM, if there is
/// one.
pub(super) fn write_handover(vm: &Vm<'static>) {
    let guard = HANDOVER.lock();
    let Some(bytes) = guard.as_ref() else {
        return;
    };
    let Some(last) = vm.ram.iter().map(|r| r.base + r.size).max() else {
        return;
    };
    let page = last - 0x1000;
    let mut ram = arch::VmRam::new(RamWindow::new(vm.ram));
    if ram.write(page, &bytes[..]).is_err() {
        log!("vm '{}': hand-over page {page:#x} outside its RAM", vm.name);
    }
}
