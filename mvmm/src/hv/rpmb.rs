//! The secure VM's rollback counter (see `mvmm_core::rpmb`), kept on mvmm's
//! own disk; the secure VM exchanges frames with it through the RPMB
//! hypercall.

use super::*;
use mvmm_core::rpmb::{Counter, FRAME_LEN, Key, RECORD_LEN};
use mvmm_core::virtio::{GuestMemory, RamWindow};

struct Rpmb {
    disk: arch::Disk,
    frames: Key,
    record: Key,
    counter: Counter,
}

static RPMB: Mutex<Option<Rpmb>> = Mutex::new(None);

/// Opens mvmm's disk and reads the counter (at boot, while the device
/// secret is still known).
pub(super) fn start_rpmb(uds: &[u8; dice::SECRET_LEN], cdi_seal: &[u8; 32]) {
    let Some(window) = BOARD.rpmb else {
        return;
    };
    let Some(mut disk) = arch::Disk::open(window) else {
        log!("rpmb: no virtio-blk disk at {window}: the secure VM has no rollback counter");
        return;
    };
    let record = Key::for_record(uds);
    let mut sector = [0u8; arch::SECTOR];
    if !disk.read(0, &mut sector) {
        log!("rpmb: mvmm's disk cannot be read: the secure VM has no rollback counter");
        return;
    }
    let mut raw = [0u8; RECORD_LEN];
    raw.copy_from_slice(&sector[..RECORD_LEN]);
    let counter = match Counter::decode(&raw, &record) {
        Ok(Some(counter)) => counter,
        Ok(None) => Counter::default(),
        Err(e) => {
            // Fail closed: without a trusted counter, the secure VM's reads
            // fail and it refuses to trust its storage.
            log!(
                "rpmb: the record on mvmm's disk does not authenticate ({e:?}): no rollback counter"
            );
            return;
        }
    };
    log!(
        "rpmb: rollback counter {} ({} writes)",
        counter.value,
        counter.write_counter
    );
    *RPMB.lock() = Some(Rpmb {
        disk,
        frames: Key::for_frames(cdi_seal),
        record,
        counter,
    });
}

/// The RPMB hypercall of the secure VM: the frame at `frame` in its RAM is
/// replaced by mvmm's response.
pub(super) fn rpmb_call(vm: &Vm<'static>, frame: u64) -> u64 {
    let mut ram = arch::VmRam::new(RamWindow::new(vm.ram));
    let mut request = [0u8; FRAME_LEN];
    if ram.read(frame, &mut request).is_err() {
        return hypercall::INVALID_PARAMETERS;
    }
    let mut guard = RPMB.lock();
    let Some(rpmb) = guard.as_mut() else {
        return hypercall::NOT_SUPPORTED;
    };
    let Rpmb {
        disk,
        frames,
        record,
        counter,
    } = rpmb;
    let response = counter.handle(&request, frames, |next| {
        let mut sector = [0u8; arch::SECTOR];
        sector[..RECORD_LEN].copy_from_slice(&next.encode(record));
        disk.write(0, &sector)
    });
    drop(guard);
    if ram.write(frame, &response).is_err() {
        return hypercall::INVALID_PARAMETERS;
    }
    hypercall::SUCCESS
}
