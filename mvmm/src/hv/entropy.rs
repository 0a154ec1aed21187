//! The secure VM's entropy: mvmm drives the board's entropy device (a
//! DMA-capable virtio-rng no VM may own) and answers Arm's SMCCC TRNG calls
//! from its output (`mvmm_core::trng`).

use super::*;
use mvmm_core::rng_seed;
use mvmm_core::trng::{self, Call};
use mvmm_core::virtio::GuestMemory;

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

/// Writes fresh bytes from the entropy device into the `/chosen/rng-seed`
/// of `vm`'s device tree (at its boot argument), before any of its vCPUs
/// runs: a rich VM's kernel is seeded at once (`mvmm_core::rng_seed`),
/// while its TRNG calls stay refused. A tree without a seed (a user's own)
/// is left as it is.
pub(super) fn seed_device_tree(vm: &Vm<'static>) {
    if vm.kind != VmKind::Rich || vm.boot_arg == 0 {
        return;
    }
    let mut ram = arch::VmRam::new(RamWindow::new(vm.ram));
    let at = match rng_seed::find(&ram, vm.boot_arg) {
        Ok(at) => at,
        Err(e) => {
            log!(
                "vm '{}': no rng-seed in its device tree ({e:?}); its kernel seeds its random numbers slowly",
                vm.name
            );
            return;
        }
    };
    let mut seed = zeroize::Zeroizing::new([0u8; rng_seed::SEED_LEN]);
    let filled = ENTROPY
        .lock()
        .as_mut()
        .is_some_and(|device| device.fill(&mut seed[..]));
    let written = filled && ram.write(at, &seed[..]).is_ok();
    if !written {
        // Its zeros must not stand: Linux would credit them as a seed.
        let (start, nops) = rng_seed::removal(at);
        let removed = ram.write(start, &nops).is_ok();
        log!(
            "vm '{}': no entropy for its device tree's rng-seed ({}); its kernel seeds its random numbers slowly",
            vm.name,
            if removed {
                "property removed"
            } else {
                "property NOT removed"
            }
        );
    }
}
