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

/// Distributor registers of the virtual GIC mvmm emulates for this VM.
const GICD_CTLR: usize = 0x0000;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ISENABLER: usize = 0x0100;
const GICD_IPRIORITYR: usize = 0x0400;
const GICD_IROUTER: usize = 0x6000;
/// CTLR: affinity routing and group 1 enabled.
const CTLR_ARE_GRP1: u32 = 1 << 4 | 1 << 1;

/// Enables shared peripheral interrupt `intid` at the (virtual) distributor
/// at `gicd_base`: group 1, middle priority, routed to vCPU 0. Used for the
/// vsock device, so an idle WFI wakes when a packet arrives.
pub fn enable_spi(gicd_base: usize, intid: u32) {
    let word = (intid as usize / 32) * 4;
    let bit = 1u32 << (intid % 32);
    // SAFETY: `gicd_base` is the distributor window of this VM's virtual
    // GIC (board data), mapped as device memory by the stage-1 tables; mvmm
    // traps and emulates every access. These writes configure only `intid`
    // (its group, priority, route, enable) and turn group 1 on.
    unsafe {
        let reg32 = |offset: usize| (gicd_base + offset) as *mut u32;
        core::ptr::write_volatile(reg32(GICD_CTLR), CTLR_ARE_GRP1);
        core::ptr::write_volatile(reg32(GICD_IGROUPR + word), bit);
        core::ptr::write_volatile(
            (gicd_base + GICD_IPRIORITYR + intid as usize) as *mut u8,
            0xa0,
        );
        core::ptr::write_volatile(
            (gicd_base + GICD_IROUTER + intid as usize * 8) as *mut u64,
            0,
        );
        core::ptr::write_volatile(reg32(GICD_ISENABLER + word), bit);
    }
}
