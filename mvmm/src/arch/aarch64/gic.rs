//! The physical GICv3 that mvmm owns, and the list registers through which
//! it hands virtual interrupts to the guest running on this CPU.
//!
//! # Crates, and what stays hand-written
//! - Distributor and redistributors: `arm-gic`'s `GicDistributor` and
//!   `GicRedistributor`, over `safe-mmio` pointers to its register structs
//!   (`Gicd`, `GicrSgi`). Reading an interrupt's pending and active bits has
//!   no driver method (`arm-gic` reads them only into a power-down context),
//!   so [`physical_state`] reads those fields of the same structs itself.
//! - The physical CPU interface: `arm-gic`'s `GicCpuInterface` (system
//!   register enable, priority mask, group enable, acknowledge, end of
//!   interrupt, SGIs). It has no deactivate (ICC_DIR_EL1) and no way to set
//!   EOImode (its `init_cpu` sets EOImode 0, which mvmm must not have: a
//!   forwarded interrupt stays active until the guest ends it), nor the
//!   binary point; those three come from `arm-sysregs`, the register crate
//!   `arm-gic` is built on.
//! - The virtual CPU interface (ICH_*_EL2): no crate drives it; `arm-gic`
//!   stops at the EL2 ICC_SRE bit. The list registers, ICH_HCR_EL2 and
//!   ICH_VTR_EL2 are typed registers of `aarch64-cpu`; which list register
//!   takes which interrupt (load, merge, reap, clear) is mvmm's code here.
//!   ICH_ELRSR_EL2 and ICH_EISR_EL2 are in no crate (`aarch64-cpu` 11 and
//!   `arm-sysregs` 0.5 both lack them): one `mrs` each, below.

use crate::board::BOARD;
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    ICH_HCR_EL2, ICH_LR0_EL2, ICH_LR1_EL2, ICH_LR2_EL2, ICH_LR3_EL2, ICH_LR4_EL2, ICH_LR5_EL2,
    ICH_LR6_EL2, ICH_LR7_EL2, ICH_LR8_EL2, ICH_LR9_EL2, ICH_LR10_EL2, ICH_LR11_EL2, ICH_LR12_EL2,
    ICH_LR13_EL2, ICH_LR14_EL2, ICH_LR15_EL2, ICH_VTR_EL2, Readable, Writeable,
};
use arm_gic::gicv3::registers::{Gicd, GicdCtlr, GicrSgi};
use arm_gic::gicv3::{
    GicCpuInterface, GicDistributor, GicRedistributor, Group, SgiTarget, SgiTargetGroup,
};
use arm_gic::{IntId, InterruptGroup, Trigger, UniqueMmioPointer};
use arm_sysregs::el1::accessors::{write_icc_bpr1_el1, write_icc_ctlr_el1, write_icc_dir_el1};
use arm_sysregs::el1::registers::{IccBpr1El1, IccCtlrEl1, IccDirEl1};
use core::arch::asm;
use core::ptr::NonNull;
use mvmm_core::irq::KICK_INTID;
use mvmm_core::vgic::{FORWARDED_TIMERS, MAINTENANCE_INTID};

/// Priority of every interrupt mvmm forwards.
const PRIORITY: u8 = 0xa0;

/// The SGI mvmm sends to another CPU (its choice: `mvmm_core::irq`); an
/// INTID that is no SGI fails the build here.
const KICK: IntId = IntId::sgi(KICK_INTID);

/// The private interrupts each CPU takes: the kick, the GIC maintenance
/// interrupt and the EL1 timers it forwards (a PPI number out of range
/// fails the build).
const PRIVATE: [IntId; 4] = [
    KICK,
    IntId::ppi(MAINTENANCE_INTID - 16),
    IntId::ppi(FORWARDED_TIMERS[0] - 16),
    IntId::ppi(FORWARDED_TIMERS[1] - 16),
];

/// Held across every access to the distributor or a redistributor.
/// `arm-gic`'s drivers take a `UniqueMmioPointer`, which promises that no
/// other pointer to those registers is in use meanwhile; all CPUs share the
/// distributor and [`physical_state`] reads other CPUs' redistributors, so
/// they take turns here. A leaf lock: nothing else is locked while it is
/// held, and EL2 takes no interrupts (vectors.S).
static REGISTERS: spin::mutex::Mutex<(), super::Yield> = spin::mutex::Mutex::new(());

/// The distributor's registers (board data; a null address fails the
/// build).
const DISTRIBUTOR: NonNull<Gicd> =
    match NonNull::new(BOARD.gic.distributor.base as usize as *mut Gicd) {
        Some(p) => p,
        None => panic!("the board's GIC distributor is at address 0"),
    };
const _: () = assert!(size_of::<Gicd>() as u64 <= BOARD.gic.distributor.size);
// Each CPU's redistributor (control and SGI frames) fits its stride, and
// every CPU of the board has one.
const _: () = assert!(size_of::<GicrSgi>() as u64 <= BOARD.gic.redistributor_stride);
const _: () = assert!(
    BOARD.gic.redistributor_stride * BOARD.cpu_count as u64 <= BOARD.gic.redistributors.size
);

/// Runs `f` on the distributor's registers, [`REGISTERS`] held.
fn with_distributor<R>(f: impl FnOnce(UniqueMmioPointer<'_, Gicd>) -> R) -> R {
    let _turn = REGISTERS.lock();
    // SAFETY: `DISTRIBUTOR` is the GIC distributor of the board, a
    // `Gicd`-sized block (asserted above) that EL2's identity map maps as
    // device memory and no stage-2 map contains (board validation). The
    // pointer lives only inside this call, while `REGISTERS` is held, so no
    // other pointer to these registers is in use.
    let regs = unsafe { UniqueMmioPointer::new(DISTRIBUTOR) };
    f(regs)
}

/// Runs `f` on physical CPU `cpu`'s redistributor, [`REGISTERS`] held;
/// `None` for a CPU the board does not have.
fn with_redistributor<R>(
    cpu: usize,
    f: impl FnOnce(UniqueMmioPointer<'_, GicrSgi>) -> R,
) -> Option<R> {
    if cpu >= BOARD.cpu_count {
        return None;
    }
    let address = BOARD.gic.redistributors.base + BOARD.gic.redistributor_stride * cpu as u64;
    let frames = NonNull::new(address as usize as *mut GicrSgi)?;
    let _turn = REGISTERS.lock();
    // SAFETY: `frames` is CPU `cpu`'s redistributor (`cpu` is below the
    // board's CPU count, and the asserts above keep its `GicrSgi` inside
    // the board's redistributor range), mapped as device memory at EL2 and
    // in no stage-2 map. As in `with_distributor`, `REGISTERS` makes this
    // the only pointer in use.
    let regs = unsafe { UniqueMmioPointer::new(frames) };
    Some(f(regs))
}

/// Turns on affinity routing and both interrupt groups (once, on the boot
/// CPU).
pub fn init_distributor() {
    // QEMU's GIC has no security extension (GICD_CTLR.DS = 1): there bit 4
    // is ARE and bit 1 EnableGrp1, which `arm-gic` names by the
    // two-security-state layout (ARE_S, EnableGrp1NS). `modify_control`
    // waits for RWP.
    with_distributor(|regs| {
        GicDistributor::new(regs).modify_control(
            GicdCtlr::ARE_S | GicdCtlr::EnableGrp1NS | GicdCtlr::EnableGrp0,
            true,
        );
    });
}

/// Wakes this CPU's redistributor, enables the PPIs that are forwarded to
/// its guest, and sets up the CPU interface: EL2 takes every physical
/// interrupt with split priority-drop/deactivate so that a forwarded
/// interrupt stays active until the guest deactivates it.
pub fn init_cpu_interface(cpu: usize) {
    with_redistributor(cpu, |regs| {
        let mut redistributor = GicRedistributor::new(regs);
        // Already awake (firmware woke it) is fine.
        let _ = redistributor.mark_core_awake();
        for intid in PRIVATE {
            // Private INTIDs: none of these calls can fail.
            let _ = redistributor.set_group(intid, Group::Group1NS);
            let _ = redistributor.set_interrupt_priority(intid, PRIORITY);
            let _ = redistributor.enable_interrupt(intid, true);
        }
    });

    // ICC_SRE_EL2: system registers at EL2, and EL1 may use them too.
    GicCpuInterface::enable_system_register_el2(true);
    barrier::isb(barrier::SY);
    // EOImode 1: EOIR only drops the priority, DIR deactivates.
    write_icc_ctlr_el1(IccCtlrEl1::EOIMODE);
    GicCpuInterface::set_priority_mask(0xff);
    // One group-priority bit: no preemption matters at EL2 (it takes no
    // interrupts while it runs).
    write_icc_bpr1_el1(IccBpr1El1::empty());
    GicCpuInterface::enable_group1(true);
    barrier::isb(barrier::SY);
    // Virtual CPU interface on; EOI maintenance interrupts (LR.EOI) are
    // always reported.
    ICH_HCR_EL2.write(ICH_HCR_EL2::En::SET);
}

/// Acknowledges the highest-priority pending interrupt, if any.
pub fn ack_interrupt() -> Option<u32> {
    GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1)
        .map(u32::from)
        .filter(|&intid| intid < 1020)
}

/// Drops the running priority of `intid`; with `deactivate` also ends it.
/// Forwarded hardware interrupts are deactivated by the guest instead.
pub fn end_of_interrupt(intid: u32, deactivate: bool) {
    // `intid` came from `ack_interrupt`, so it is a valid INTID.
    let Ok(id) = IntId::try_from(intid) else {
        return;
    };
    GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
    if deactivate {
        deactivate_physical(intid);
    }
}

/// ICC_DIR_EL1: ends physical interrupt `intid`, whose priority mvmm
/// already dropped (EOImode 1).
fn deactivate_physical(intid: u32) {
    write_icc_dir_el1(IccDirEl1::from_bits_retain(u64::from(intid & 0xff_ffff)));
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

/// ICH_ELRSR_EL2: bit n set when list register n holds no interrupt.
fn empty_list_registers() -> u64 {
    let elrsr: u64;
    // SAFETY: reading ICH_ELRSR_EL2 has no side effects and touches no
    // memory. (No register crate names it: see the module's notes.)
    unsafe {
        asm!("mrs {}, ich_elrsr_el2", out(reg) elrsr, options(nomem, nostack, preserves_flags))
    };
    elrsr
}

/// ICH_EISR_EL2: bit n set when list register n holds an interrupt the
/// guest has ended and that asked for an EOI maintenance interrupt.
fn ended_list_registers() -> u64 {
    let eisr: u64;
    // SAFETY: as in `empty_list_registers`, for ICH_EISR_EL2.
    unsafe {
        asm!("mrs {}, ich_eisr_el2", out(reg) eisr, options(nomem, nostack, preserves_flags))
    };
    eisr
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
    let elrsr = empty_list_registers();
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
    barrier::isb(barrier::SY);
    Injected::Loaded
}

/// Empties the list registers whose interrupt the guest has finished
/// (which ends the EOI maintenance interrupt they raised).
pub fn reap_list_registers() {
    let eisr = ended_list_registers();
    for n in 0..lr_count() {
        if eisr & (1 << n) != 0 {
            write_lr(n, 0);
        }
    }
    barrier::isb(barrier::SY);
}

/// Empties every list register of this CPU (a vCPU being stopped or reset
/// keeps no virtual interrupt). A forwarded interrupt (HW bit) still there
/// is deactivated physically too: its guest will never end it, and an
/// interrupt left active is never taken again (the next kernel's timer or
/// NIC would stay silent).
pub fn clear_list_registers() {
    let elrsr = empty_list_registers();
    for n in 0..lr_count() {
        let lr = read_lr(n);
        if elrsr & (1 << n) == 0 && lr & LR_HW != 0 && lr >> LR_STATE_SHIFT != 0 {
            // EOImode 1: mvmm only dropped its priority.
            deactivate_physical(((lr >> 32) & 0x1fff) as u32);
        }
        write_lr(n, 0);
    }
    barrier::isb(barrier::SY);
}

/// Interrupts the guest on physical CPU `cpu` so that it comes to EL2 and
/// picks up newly queued virtual interrupts.
pub fn kick(cpu: usize) {
    // This CPU's earlier writes (the state the kicked CPU reads) are
    // visible before the SGI is sent.
    barrier::dsb(barrier::ISH);
    // On QEMU virt a CPU's Aff0 is its index (Aff1..3 are 0).
    let target = SgiTarget::List {
        affinity3: 0,
        affinity2: 0,
        affinity1: 0,
        target_list: 1 << (cpu & 0xf),
    };
    // `KICK` is an SGI (checked at build time): this cannot fail.
    let _ = GicCpuInterface::send_sgi(KICK, target, SgiTargetGroup::CurrentGroup1);
    barrier::isb(barrier::SY);
}

/// `intid` as a shared peripheral interrupt, if it is one.
fn spi(intid: u32) -> Option<IntId> {
    IntId::try_from(intid).ok().filter(|id| id.is_spi())
}

/// Routes a physical SPI to `cpu` as a group-1 interrupt and enables it
/// (or leaves it disabled, for [`set_spi_enabled`] to decide).
pub fn route_spi(intid: u32, cpu: usize, enable: bool) {
    let Some(id) = spi(intid) else {
        return;
    };
    with_distributor(|regs| {
        let mut distributor = GicDistributor::new(regs);
        // An SPI: none of these calls can fail.
        let _ = distributor.set_group(id, Group::Group1NS);
        let _ = distributor.set_interrupt_priority(id, PRIORITY);
        let _ = distributor.set_routing(id, Some(cpu as u64));
        if enable {
            let _ = distributor.enable_interrupt(id, true);
        }
    });
}

/// Makes an SPI edge-triggered (for devices that pulse their line, such
/// as the SMMU's event queue interrupt).
pub fn set_spi_edge(intid: u32) {
    let Some(id) = spi(intid) else {
        return;
    };
    with_distributor(|regs| {
        let _ = GicDistributor::new(regs).set_trigger(id, Trigger::Edge);
    });
}

/// Moves an enabled SPI (routed by [`route_spi`]) to `cpu`, as Linux's GICv3
/// driver does: disable, wait for the distributor to finish (RWP), write
/// the route, enable again. An interrupt pending meanwhile stays pending and
/// is taken by the new CPU.
pub fn reroute_spi(intid: u32, cpu: usize) {
    let Some(id) = spi(intid) else {
        return;
    };
    with_distributor(|regs| {
        let mut distributor = GicDistributor::new(regs);
        let _ = distributor.enable_interrupt(id, false);
        distributor.wait_for_pending_write();
        let _ = distributor.set_routing(id, Some(cpu as u64));
        let _ = distributor.enable_interrupt(id, true);
    });
}

/// Enables or disables a physical SPI at the distributor.
pub fn set_spi_enabled(intid: u32, enabled: bool) {
    let Some(id) = spi(intid) else {
        return;
    };
    with_distributor(|regs| {
        let _ = GicDistributor::new(regs).enable_interrupt(id, enabled);
    });
}

/// (pending, active) of `intid` in this CPU's list registers: where a
/// virtual interrupt lives from its injection until the guest deactivates
/// it. (false, false) when no list register holds it.
pub fn list_register_state(intid: u32) -> (bool, bool) {
    let elrsr = empty_list_registers();
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
/// (false, false) for an INTID or CPU the GIC does not have.
pub fn physical_state(intid: u32, cpu: usize) -> (bool, bool) {
    let word = intid as usize / 32;
    let bit = 1u32 << (intid % 32);
    let bits = |pending: u32, active: u32| (pending & bit != 0, active & bit != 0);
    if intid < 32 {
        with_redistributor(cpu, |regs| {
            let sgi = safe_mmio::field_shared!(regs, sgi);
            let pending = safe_mmio::field_shared!(sgi, ispendr)
                .get(0)
                .map(|r| r.read());
            let active = safe_mmio::field_shared!(sgi, isactiver)
                .get(0)
                .map(|r| r.read());
            bits(pending.unwrap_or(0), active.unwrap_or(0))
        })
        .unwrap_or((false, false))
    } else {
        with_distributor(|regs| {
            let pending = safe_mmio::field_shared!(regs, ispendr)
                .get(word)
                .map(|r| r.read());
            let active = safe_mmio::field_shared!(regs, isactiver)
                .get(word)
                .map(|r| r.read());
            bits(pending.unwrap_or(0), active.unwrap_or(0))
        })
    }
}
