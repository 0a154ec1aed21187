//! SMCCC fast calls to the hypervisor through the HVC conduit: PSCI and
//! mvmm's own hypercalls go this way (with no hypervisor, QEMU's PSCI
//! answers HVC as well).

use core::arch::asm;

/// One SMCCC fast call through HVC: `function` in x0, `arguments` in
/// x1..x3; returns x0..x3 (SMCCC returns up to four results). x4-x17 are
/// treated as clobbered.
///
/// # Safety
/// The call must not make the hypervisor change memory of this VM other
/// than what the caller hands it through `arguments` (and owns for the
/// call's duration).
pub unsafe fn hvc(function: u64, arguments: [u64; 3]) -> [u64; 4] {
    let [a1, a2, a3] = arguments;
    let (x0, x1, x2, x3): (u64, u64, u64, u64);
    // SAFETY: the register use is SMCCC's; what the hypervisor does to this
    // VM's memory is the caller's contract (see `# Safety`).
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") function => x0,
            inout("x1") a1 => x1,
            inout("x2") a2 => x2,
            inout("x3") a3 => x3,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        );
    }
    [x0, x1, x2, x3]
}
