//! The physical GICv3 that mvmm owns, and the list registers through which
//! it hands virtual interrupts to the guest running on this CPU.

use crate::board::BOARD;
use aarch64_cpu::registers::{
    ICC_SRE_EL2, ICH_HCR_EL2, ICH_LR0_EL2, ICH_LR1_EL2, ICH_LR2_EL2, ICH_LR3_EL2, ICH_VTR_EL2,
    Readable, Writeable,
};
use core::arch::asm;
use core::ptr;

const GICD_CTLR: usize = 0x0000;
const GICD_CTLR_RWP: u32 = 1 << 31;
const GICR_WAKER: usize = 0x0014;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// The SGI/PPI frame follows the redistributor's control frame.
const SGI_FRAME: usize = 0x1_0000;
const GICR_IGROUPR0: usize = 0x0080;
const GICR_ISENABLER0: usize = 0x0100;
const GICR_IPRIORITYR: usize = 0x0400;

/// The virtual timer's PPI.
pub const VTIMER_INTID: u32 = 27;
/// Priority of every interrupt mvmm forwards.
const PRIORITY: u8 = 0xa0;

fn mmio_read(addr: usize) -> u32 {
    // SAFETY: callers pass addresses inside the GIC's distributor or this
    // CPU's redistributor frames, identity mapped as device memory at EL2
    // and absent from every stage-2 map.
    unsafe { ptr::read_volatile(addr as *const u32) }
}

fn mmio_write(addr: usize, value: u32) {
    // SAFETY: as in `mmio_read`.
    unsafe { ptr::write_volatile(addr as *mut u32, value) }
}

/// Turns on affinity routing and both interrupt groups (once, on the boot
/// CPU).
pub fn init_distributor() {
    let base = BOARD.gic.distributor.base as usize;
    // ARE (bit 4), EnableGrp1 (bit 1), EnableGrp0 (bit 0): QEMU's GIC has
    // no security extension, so this is the single-security-state layout.
    mmio_write(base + GICD_CTLR, 1 << 4 | 1 << 1 | 1);
    while mmio_read(base + GICD_CTLR) & GICD_CTLR_RWP != 0 {
        core::hint::spin_loop();
    }
}

/// Wakes this CPU's redistributor, enables the PPIs that are forwarded to
/// its guest, and sets up the CPU interface: EL2 takes every physical
/// interrupt with split priority-drop/deactivate so that a forwarded
/// interrupt stays active until the guest deactivates it.
pub fn init_cpu_interface(cpu: usize) {
    let rd = (BOARD.gic.redistributors.base + BOARD.gic.redistributor_stride * cpu as u64) as usize;
    let waker = mmio_read(rd + GICR_WAKER);
    mmio_write(rd + GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
    while mmio_read(rd + GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0 {
        core::hint::spin_loop();
    }
    let sgi = rd + SGI_FRAME;
    mmio_write(sgi + GICR_IGROUPR0, u32::MAX);
    let prio_word = sgi + GICR_IPRIORITYR + (VTIMER_INTID as usize & !3);
    let shift = (VTIMER_INTID % 4) * 8;
    let old = mmio_read(prio_word);
    mmio_write(
        prio_word,
        (old & !(0xff << shift)) | u32::from(PRIORITY) << shift,
    );
    mmio_write(sgi + GICR_ISENABLER0, 1 << VTIMER_INTID);

    ICC_SRE_EL2.write(ICC_SRE_EL2::SRE::SET + ICC_SRE_EL2::ENABLE::SET);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    // SAFETY: writes to this CPU's GIC CPU-interface registers: EOImode 1
    // (EOIR only drops priority, DIR deactivates), unmask all priorities,
    // one group-priority bit, enable group 1. They only affect how EL2
    // takes interrupts.
    unsafe {
        asm!(
            "msr icc_ctlr_el1, {eoimode}",
            "msr icc_pmr_el1, {pmr}",
            "msr icc_bpr1_el1, xzr",
            "msr icc_igrpen1_el1, {one}",
            "isb",
            pmr = in(reg) 0xffu64,
            one = in(reg) 1u64,
            eoimode = in(reg) 1u64 << 1,
            options(nostack),
        );
    }
    ICH_HCR_EL2.write(ICH_HCR_EL2::En::SET);
}

/// Acknowledges the highest-priority pending interrupt, if any.
pub fn ack_interrupt() -> Option<u32> {
    let iar: u64;
    // SAFETY: reading ICC_IAR1_EL1 acknowledges an interrupt at this CPU's
    // interface; the caller ends it with `end_of_interrupt`.
    unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nostack)) };
    let intid = (iar & 0xff_ffff) as u32;
    (intid < 1020).then_some(intid)
}

/// Drops the running priority of `intid`; with `deactivate` also ends it.
/// Forwarded hardware interrupts are deactivated by the guest instead.
pub fn end_of_interrupt(intid: u32, deactivate: bool) {
    // SAFETY: EOI/DIR writes for an interrupt this CPU acknowledged.
    unsafe {
        asm!("msr icc_eoir1_el1, {}", in(reg) u64::from(intid), options(nostack));
        if deactivate {
            asm!("msr icc_dir_el1, {}", in(reg) u64::from(intid), options(nostack));
        }
    }
}

/// Puts `intid` in a free list register as pending for this CPU's guest;
/// with `hardware`, the guest's deactivation also deactivates the physical
/// interrupt of the same number. False when every list register is busy.
pub fn inject_virtual(intid: u32, hardware: bool) -> bool {
    let elrsr: u64;
    // SAFETY: reading ICH_ELRSR_EL2 has no side effects.
    unsafe { asm!("mrs {}, ich_elrsr_el2", out(reg) elrsr, options(nostack)) };
    let count = (ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) + 1).min(4) as usize;
    let Some(free) = (0..count).find(|i| elrsr & (1 << i) != 0) else {
        return false;
    };
    let mut lr = 1u64 << 62 | 1 << 60 | u64::from(PRIORITY) << 48 | u64::from(intid);
    if hardware {
        lr |= 1 << 61 | u64::from(intid) << 32;
    }
    match free {
        0 => ICH_LR0_EL2.set(lr),
        1 => ICH_LR1_EL2.set(lr),
        2 => ICH_LR2_EL2.set(lr),
        _ => ICH_LR3_EL2.set(lr),
    }
    true
}
