//! The GICv3 CPU interface, through its system registers (mvmm virtualises
//! them; a guest has no distributor or redistributor access).

use core::arch::asm;

/// Enables the system-register interface, opens the priority mask and
/// enables group 1 interrupts on this vCPU.
pub fn init_cpu_interface() {
    // SAFETY: ICC_SRE_EL1 = SRE|DFB|DIB selects the system-register
    // interface; PMR = 0xff lets every priority through; IGRPEN1 = 1 enables
    // group 1. IRQs stay masked in PSTATE, so nothing is taken yet. No
    // memory is touched.
    unsafe {
        asm!(
            "msr icc_sre_el1, {sre}",
            "isb",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_igrpen1_el1, {on}",
            "isb",
            sre = in(reg) 0b111_u64,
            pmr = in(reg) 0xff_u64,
            on = in(reg) 1_u64,
            options(nomem, nostack, preserves_flags)
        );
    }
}

/// Acknowledges the highest-priority pending group 1 interrupt and returns
/// its INTID (1020..=1023 when none).
pub fn acknowledge() -> u32 {
    let intid: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt; the caller
    // ends it with `end_of_interrupt`. No memory is touched.
    unsafe {
        asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nomem, nostack, preserves_flags))
    };
    (intid & 0xff_ffff) as u32
}

/// Whether an acknowledged INTID means "no interrupt".
pub fn is_spurious(intid: u32) -> bool {
    (1020..=1023).contains(&intid)
}

/// Ends (drops the priority of and deactivates) an acknowledged interrupt.
pub fn end_of_interrupt(intid: u32) {
    // SAFETY: writing ICC_EOIR1_EL1 with an INTID returned by `acknowledge`
    // completes that interrupt. No memory is touched.
    unsafe {
        asm!("msr icc_eoir1_el1, {}", "isb", in(reg) u64::from(intid), options(nomem, nostack, preserves_flags))
    };
}
