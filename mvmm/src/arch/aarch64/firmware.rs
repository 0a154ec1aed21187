//! Calls from mvmm to the machine's firmware (PSCI over SMC). On QEMU virt
//! with `virtualization=on` and no EL3 firmware, QEMU itself answers SMCs.

use core::arch::asm;
use mvmm_core::psci::fid;

/// One SMCCC call with three arguments.
fn smc(function: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: u64;
    // SAFETY: an SMC with a PSCI function id only asks the firmware to act
    // on CPU power; per SMCCC it may change x0..x17 and nothing else, and
    // those are declared clobbered. No memory of ours is handed over.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") u64::from(function) => ret,
            inout("x1") a1 => _,
            inout("x2") a2 => _,
            inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret as i64
}

unsafe extern "C" {
    fn secondary_entry();
}

/// Powers physical CPU `cpu` on at mvmm's secondary entry point. Returns
/// the PSCI status on failure.
pub fn cpu_start(cpu: usize) -> Result<(), i64> {
    let entry = secondary_entry as *const () as u64;
    // On QEMU virt the MPIDR of CPU n (n < 16) has Aff0 = n.
    match smc(fid::CPU_ON_64, cpu as u64, entry, cpu as u64) {
        0 => Ok(()),
        err => Err(err),
    }
}

/// Powers the whole machine off.
pub fn system_off() -> ! {
    smc(fid::SYSTEM_OFF, 0, 0, 0);
    loop {
        aarch64_cpu::asm::wfi();
    }
}
