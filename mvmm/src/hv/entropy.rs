//! The secure VM's entropy: mvmm drives the board's entropy device (a
//! DMA-capable virtio-rng no VM may own) and answers Arm's SMCCC TRNG calls
//! from its output (`mvmm_core::trng`).

use super::*;
use mvmm_core::trng::{self, Call};

static ENTROPY: Mutex<Option<arch::Entropy>> = Mutex::new(None);

/// Starts the entropy device, if the board has one.
pub(super) fn start_entropy() {
    let Some(window) = BOARD.entropy else {
        return;
    };
    match arch::Entropy::open(window) {
        Some(device) => {
            *ENTROPY.lock() = Some(device);
            log!("entropy: virtio-rng at {window} serves the secure VM's TRNG calls");
        }
        None => log!("entropy: no virtio-rng at {window}: the secure VM has no TRNG"),
    }
}

/// A TRNG call of the secure VM (`Vmm::on_call` admits no other): x0..x3
/// to return. Without an entropy device every TRNG function is
/// NOT_SUPPORTED, as on a machine without one.
pub(super) fn trng_call(call: Call) -> [u64; 4] {
    let mut guard = ENTROPY.lock();
    let Some(device) = guard.as_mut() else {
        return [trng::ret::NOT_SUPPORTED, 0, 0, 0];
    };
    let mut bytes = zeroize::Zeroizing::new([0u8; trng::MAX_BYTES]);
    let delivered = matches!(call, Call::Random { .. }) && device.fill(&mut bytes[..]);
    drop(guard);
    trng::answer(call, delivered.then_some(&*bytes))
}
