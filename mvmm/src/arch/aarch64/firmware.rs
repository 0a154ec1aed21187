//! Calls from mvmm to the machine's firmware: PSCI over SMC, through the
//! `smccc` crate. On QEMU virt with `virtualization=on` and no EL3
//! firmware, QEMU itself answers SMCs.

use smccc::{Smc, psci};

pub use smccc::psci::error::Error as PsciError;

unsafe extern "C" {
    fn secondary_entry();
}

/// Powers physical CPU `cpu` on at mvmm's secondary entry point, with the
/// CPU's index as its context.
pub fn cpu_start(cpu: usize) -> Result<(), PsciError> {
    let entry = secondary_entry as *const () as u64;
    // On QEMU virt the MPIDR of CPU n (n < 16) has Aff0 = n.
    psci::cpu_on::<Smc>(cpu as u64, entry, cpu as u64)
}

/// Powers the whole machine off.
pub fn system_off() -> ! {
    // Returns only if the firmware refuses; then this CPU stops here.
    let _ = psci::system_off::<Smc>();
    loop {
        aarch64_cpu::asm::wfi();
    }
}
