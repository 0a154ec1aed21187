//! PSCI power calls through SMCCC's HVC conduit (mvmm answers them; with
//! no hypervisor QEMU's own PSCI answers HVC as well).

use core::arch::asm;

/// PSCI function IDs.
pub mod function {
    pub const PSCI_VERSION: u64 = 0x8400_0000;
    pub const CPU_OFF: u64 = 0x8400_0002;
    pub const CPU_ON_64: u64 = 0xc400_0003;
    pub const SYSTEM_OFF: u64 = 0x8400_0008;
    pub const SYSTEM_RESET: u64 = 0x8400_0009;
}

fn call(function: u64, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    let ret: u64;
    // SAFETY: an SMCCC call: arguments in x0-x3, the result in x0; x1-x17
    // are treated as clobbered. The callee (mvmm or firmware) does not touch
    // this VM's memory for these PSCI calls.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") function => ret,
            inout("x1") arg1 => _,
            inout("x2") arg2 => _,
            inout("x3") arg3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    ret as i64
}

/// PSCI_VERSION: major in bits 31..16, minor in 15..0.
pub fn version() -> u32 {
    call(function::PSCI_VERSION, 0, 0, 0) as u32
}

unsafe extern "C" {
    static __secure_os_secondary_start: u8;
}

/// CPU_ON: starts vCPU `target` (its MPIDR), which boots through this
/// runtime on its own stack and then runs `entry(vcpu number)`. Returns the
/// PSCI status (0 = success).
pub fn cpu_on(target: u64, entry: extern "C" fn(u64) -> !) -> i64 {
    let start = &raw const __secure_os_secondary_start as u64;
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
