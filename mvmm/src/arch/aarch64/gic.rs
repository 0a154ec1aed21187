//! The physical GICv3 that mvmm owns, and the list registers through which
//! it hands virtual interrupts to the guest running on this CPU.

use crate::board::BOARD;
use aarch64_cpu::registers::{
    ICC_SRE_EL2, ICH_HCR_EL2, ICH_LR0_EL2, ICH_LR1_EL2, ICH_LR2_EL2, ICH_LR3_EL2, ICH_LR4_EL2,
    ICH_LR5_EL2, ICH_LR6_EL2, ICH_LR7_EL2, ICH_LR8_EL2, ICH_LR9_EL2, ICH_LR10_EL2, ICH_LR11_EL2,
    ICH_LR12_EL2, ICH_LR13_EL2, ICH_LR14_EL2, ICH_LR15_EL2, ICH_VTR_EL2, Readable, Writeable,
};
use core::arch::asm;
use core::ptr;
use mvmm_core::vgic::{FORWARDED_TIMERS, MAINTENANCE_INTID};

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
/// Set-pending and set-active registers, one bit per INTID (the same
/// offsets in the distributor and in a redistributor's SGI frame).
const GIC_ISPENDR: usize = 0x0200;
const GIC_ISACTIVER: usize = 0x0300;
const GICD_IGROUPR: usize = 0x0080;
const GICD_ISENABLER: usize = 0x0100;
const GICD_IPRIORITYR: usize = 0x0400;
const GICD_IROUTER: usize = 0x6000;

// The SGI mvmm sends to another CPU (its choice: `mvmm_core::irq`).
use mvmm_core::irq::KICK_INTID;
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

/// Sets `intid`'s byte in a priority register block at `block`.
fn set_priority(block: usize, intid: u32) {
    let word = block + (intid as usize & !3);
    let shift = (intid % 4) * 8;
    mmio_write(
        word,
        (mmio_read(word) & !(0xff << shift)) | u32::from(PRIORITY) << shift,
    );
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
    let private = [
        KICK_INTID,
        MAINTENANCE_INTID,
        FORWARDED_TIMERS[0],
        FORWARDED_TIMERS[1],
    ];
    for intid in private {
        set_priority(sgi + GICR_IPRIORITYR, intid);
    }
    mmio_write(
        sgi + GICR_ISENABLER0,
        private.iter().fold(0, |m, i| m | 1 << i),
    );

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
    // Virtual CPU interface on; EOI maintenance interrupts (LR.EOI) are
    // always reported.
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

/// What happened to a virtual interrupt handed to the list registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// Loaded into a free list register.
    Loaded,
    /// A list register already holds it pending: merged.
    Merged,
    /// A list register holds it active (the guest is handling it), or
    /// every list register is busy: try again after an EOI maintenance
    /// interrupt.
    Later,
}

fn lr_count() -> usize {
    (ICH_VTR_EL2.read(ICH_VTR_EL2::ListRegs) as usize + 1).min(16)
}

fn read_lr(n: usize) -> u64 {
    match n {
        0 => ICH_LR0_EL2.get(),
        1 => ICH_LR1_EL2.get(),
        2 => ICH_LR2_EL2.get(),
        3 => ICH_LR3_EL2.get(),
        4 => ICH_LR4_EL2.get(),
        5 => ICH_LR5_EL2.get(),
        6 => ICH_LR6_EL2.get(),
        7 => ICH_LR7_EL2.get(),
        8 => ICH_LR8_EL2.get(),
        9 => ICH_LR9_EL2.get(),
        10 => ICH_LR10_EL2.get(),
        11 => ICH_LR11_EL2.get(),
        12 => ICH_LR12_EL2.get(),
        13 => ICH_LR13_EL2.get(),
        14 => ICH_LR14_EL2.get(),
        _ => ICH_LR15_EL2.get(),
    }
}

fn write_lr(n: usize, value: u64) {
    match n {
        0 => ICH_LR0_EL2.set(value),
        1 => ICH_LR1_EL2.set(value),
        2 => ICH_LR2_EL2.set(value),
        3 => ICH_LR3_EL2.set(value),
        4 => ICH_LR4_EL2.set(value),
        5 => ICH_LR5_EL2.set(value),
        6 => ICH_LR6_EL2.set(value),
        7 => ICH_LR7_EL2.set(value),
        8 => ICH_LR8_EL2.set(value),
        9 => ICH_LR9_EL2.set(value),
        10 => ICH_LR10_EL2.set(value),
        11 => ICH_LR11_EL2.set(value),
        12 => ICH_LR12_EL2.set(value),
        13 => ICH_LR13_EL2.set(value),
        14 => ICH_LR14_EL2.set(value),
        _ => ICH_LR15_EL2.set(value),
    }
}

const LR_STATE_SHIFT: u32 = 62;
const LR_PENDING: u64 = 0b01;
const LR_HW: u64 = 1 << 61;
const LR_GROUP1: u64 = 1 << 60;
const LR_EOI: u64 = 1 << 41;

/// Hands `intid` to this CPU's guest through a list register. With
/// `hardware`, the guest's deactivation also deactivates the physical
/// interrupt of the same number; otherwise an EOI maintenance interrupt
/// tells mvmm when the guest is done, so that queued interrupts follow.
pub fn inject_virtual(intid: u32, hardware: bool, priority: u8) -> Injected {
    let elrsr: u64;
    // SAFETY: reading ICH_ELRSR_EL2 has no side effects.
    unsafe { asm!("mrs {}, ich_elrsr_el2", out(reg) elrsr, options(nostack)) };
    let count = lr_count();
    let mut free = None;
    for n in 0..count {
        if elrsr & (1 << n) != 0 {
            free.get_or_insert(n);
            continue;
        }
        let lr = read_lr(n);
        if lr & 0xffff_ffff == u64::from(intid) {
            let state = lr >> LR_STATE_SHIFT;
            return if state == LR_PENDING {
                Injected::Merged
            } else {
                Injected::Later
            };
        }
    }
    let Some(n) = free else {
        return Injected::Later;
    };
    let mut lr =
        LR_PENDING << LR_STATE_SHIFT | LR_GROUP1 | u64::from(priority) << 48 | u64::from(intid);
    lr |= if hardware {
        LR_HW | u64::from(intid) << 32
    } else {
        LR_EOI
    };
    write_lr(n, lr);
    true_barrier();
    Injected::Loaded
}

/// Empties the list registers whose interrupt the guest has finished
/// (which ends the EOI maintenance interrupt they raised).
pub fn reap_list_registers() {
    let eisr: u64;
    // SAFETY: reading ICH_EISR_EL2 has no side effects.
    unsafe { asm!("mrs {}, ich_eisr_el2", out(reg) eisr, options(nostack)) };
    for n in 0..lr_count() {
        if eisr & (1 << n) != 0 {
            write_lr(n, 0);
        }
    }
    true_barrier();
}

/// Empties every list register of this CPU (a vCPU being stopped or reset
/// keeps no virtual interrupt). A forwarded interrupt (HW bit) still there
/// is deactivated physically too: its guest will never end it, and an
/// interrupt left active is never taken again (the next kernel's timer or
/// NIC would stay silent).
pub fn clear_list_registers() {
    let elrsr: u64;
    // SAFETY: reading ICH_ELRSR_EL2 has no side effects.
    unsafe { asm!("mrs {}, ich_elrsr_el2", out(reg) elrsr, options(nostack)) };
    for n in 0..lr_count() {
        let lr = read_lr(n);
        if elrsr & (1 << n) == 0 && lr & LR_HW != 0 && lr >> LR_STATE_SHIFT != 0 {
            let physical = (lr >> 32) & 0x1fff;
            // SAFETY: ICC_DIR_EL1 deactivates the physical interrupt this
            // list register forwarded (EOImode 1: mvmm only dropped its
            // priority); no memory is touched.
            unsafe { asm!("msr icc_dir_el1, {}", in(reg) physical, options(nostack)) };
        }
        write_lr(n, 0);
    }
    true_barrier();
}

fn true_barrier() {
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Interrupts the guest on physical CPU `cpu` so that it comes to EL2 and
/// picks up newly queued virtual interrupts.
pub fn kick(cpu: usize) {
    // ICC_SGI1R_EL1: INTID in bits 27:24, target list (Aff0) in 15:0; on
    // QEMU virt the CPU's Aff0 is its index.
    let value = u64::from(KICK_INTID) << 24 | 1u64 << (cpu & 0xf);
    // SAFETY: sends mvmm's own kick SGI to one CPU, after this CPU's
    // earlier writes (the state the kicked CPU reads) are visible; no
    // memory is touched.
    unsafe { asm!("dsb ish", "msr icc_sgi1r_el1, {}", "isb", in(reg) value, options(nostack)) };
}

/// Routes a physical SPI to `cpu` as a group-1 interrupt and enables it
/// (or leaves it disabled, for [`set_spi_enabled`] to decide).
pub fn route_spi(intid: u32, cpu: usize, enable: bool) {
    let base = BOARD.gic.distributor.base as usize;
    let word = (intid / 32) as usize * 4;
    let bit = 1u32 << (intid % 32);
    mmio_write(
        base + GICD_IGROUPR + word,
        mmio_read(base + GICD_IGROUPR + word) | bit,
    );
    set_priority(base + GICD_IPRIORITYR, intid);
    // SAFETY: the IROUTER register of this SPI, inside the distributor.
    unsafe {
        ptr::write_volatile(
            (base + GICD_IROUTER + intid as usize * 8) as *mut u64,
            cpu as u64,
        )
    };
    if enable {
        mmio_write(base + GICD_ISENABLER + word, bit);
    }
}

const GICD_ICENABLER: usize = 0x0180;
const GICD_ICFGR: usize = 0x0c00;

/// Makes an SPI edge-triggered (for devices that pulse their line, such
/// as the SMMU's event queue interrupt).
pub fn set_spi_edge(intid: u32) {
    let base = BOARD.gic.distributor.base as usize;
    let word = base + GICD_ICFGR + (intid / 16) as usize * 4;
    let bit = 2u32 << ((intid % 16) * 2);
    mmio_write(word, mmio_read(word) | bit);
}

/// Moves an enabled SPI (routed by [`route_spi`]) to `cpu`, as Linux's GICv3
/// driver does: disable, wait for the distributor to finish (RWP), write
/// the route, enable again. An interrupt pending meanwhile stays pending and
/// is taken by the new CPU.
pub fn reroute_spi(intid: u32, cpu: usize) {
    let base = BOARD.gic.distributor.base as usize;
    let word = (intid / 32) as usize * 4;
    let bit = 1u32 << (intid % 32);
    mmio_write(base + GICD_ICENABLER + word, bit);
    while mmio_read(base + GICD_CTLR) & GICD_CTLR_RWP != 0 {
        core::hint::spin_loop();
    }
    // SAFETY: the IROUTER register of this SPI, inside the distributor.
    unsafe {
        ptr::write_volatile(
            (base + GICD_IROUTER + intid as usize * 8) as *mut u64,
            cpu as u64,
        )
    };
    mmio_write(base + GICD_ISENABLER + word, bit);
}

/// Enables or disables a physical SPI at the distributor.
pub fn set_spi_enabled(intid: u32, enabled: bool) {
    let base = BOARD.gic.distributor.base as usize;
    let word = (intid / 32) as usize * 4;
    let reg = if enabled {
        GICD_ISENABLER
    } else {
        GICD_ICENABLER
    };
    mmio_write(base + reg + word, 1u32 << (intid % 32));
}

/// (pending, active) of `intid` in this CPU's list registers: where a
/// virtual interrupt lives from its injection until the guest deactivates
/// it. (false, false) when no list register holds it.
pub fn list_register_state(intid: u32) -> (bool, bool) {
    let elrsr: u64;
    // SAFETY: reading ICH_ELRSR_EL2 (which list registers are empty) has no
    // side effects and touches no memory.
    unsafe { asm!("mrs {}, ich_elrsr_el2", out(reg) elrsr, options(nostack)) };
    for n in 0..lr_count() {
        if elrsr & (1 << n) != 0 {
            continue;
        }
        let lr = read_lr(n);
        if lr & 0xffff_ffff == u64::from(intid) {
            let state = lr >> LR_STATE_SHIFT;
            return (state & 0b01 != 0, state & 0b10 != 0);
        }
    }
    (false, false)
}

/// (pending, active) of physical interrupt `intid` as the GIC holds it: a
/// private one in physical CPU `cpu`'s redistributor, an SPI in the
/// distributor. For an interrupt forwarded with the HW bit this is the
/// guest's view too: it stays active until the guest deactivates it.
pub fn physical_state(intid: u32, cpu: usize) -> (bool, bool) {
    let block = if intid < 32 {
        (BOARD.gic.redistributors.base + BOARD.gic.redistributor_stride * cpu as u64) as usize
            + SGI_FRAME
    } else {
        BOARD.gic.distributor.base as usize
    };
    let word = (intid as usize / 32) * 4;
    let bit = 1u32 << (intid % 32);
    (
        mmio_read(block + GIC_ISPENDR + word) & bit != 0,
        mmio_read(block + GIC_ISACTIVER + word) & bit != 0,
    )
}
