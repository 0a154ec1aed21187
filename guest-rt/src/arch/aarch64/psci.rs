//! PSCI power calls through SMCCC's HVC conduit (mvmm answers them; with
//! no hypervisor QEMU's own PSCI answers HVC as well).

use super::smccc;

/// PSCI function IDs.
pub mod function {
    pub const PSCI_VERSION: u64 = 0x8400_0000;
    pub const CPU_OFF: u64 = 0x8400_0002;
    pub const CPU_ON_64: u64 = 0xc400_0003;
    pub const SYSTEM_OFF: u64 = 0x8400_0008;
    pub const SYSTEM_RESET: u64 = 0x8400_0009;
}

fn call(function: u64, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    // SAFETY: the callee (mvmm or firmware) does not touch this VM's memory
    // for these PSCI calls.
    let [ret, ..] = unsafe { smccc::hvc(function, [arg1, arg2, arg3]) };
    ret as i64
}

/// PSCI_VERSION: major in bits 31..16, minor in 15..0.
pub fn version() -> u32 {
    call(function::PSCI_VERSION, 0, 0, 0) as u32
}

unsafe extern "C" {
    static __guest_rt_secondary_start: u8;
}

/// CPU_ON: starts vCPU `target` (its MPIDR), which boots through this
/// runtime on its own stack and then runs `entry(vcpu number)`. Returns the
/// PSCI status (0 = success).
pub fn cpu_on(target: u64, entry: extern "C" fn(u64) -> !) -> i64 {
    let start = &raw const __guest_rt_secondary_start as u64;
    call(function::CPU_ON_64, target, start, entry as usize as u64)
}

/// CPU_OFF: stops the calling vCPU. Returns only on failure, with the status.
pub fn cpu_off() -> i64 {
    call(function::CPU_OFF, 0, 0, 0)
}

/// SYSTEM_OFF (for the rich VM: the whole machine). Returns only on failure.
pub fn system_off() -> i64 {
    call(function::SYSTEM_OFF, 0, 0, 0)
}

/// SYSTEM_RESET. Returns only on failure.
pub fn system_reset() -> i64 {
    call(function::SYSTEM_RESET, 0, 0, 0)
}
