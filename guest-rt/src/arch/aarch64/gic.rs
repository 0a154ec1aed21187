//! The GICv3 as a guest of mvmm sees it: the CPU interface through its
//! system registers (virtualised by mvmm's list registers, not trapped),
//! and the distributor that mvmm emulates by trapping every access.
//!
//! Both go through `arm-gic` (`GicCpuInterface`, and `GicDistributor` over
//! a `safe-mmio` pointer). `safe-mmio` accesses registers with plain
//! `ldr`/`str` instructions, whose trap syndrome names the register and
//! size, which is what mvmm's emulation decodes.

use aarch64_cpu::asm::barrier;
use arm_gic::gicv3::registers::{Gicd, GicdCtlr};
use arm_gic::gicv3::{GicCpuInterface, GicDistributor, Group};
use arm_gic::{IntId, InterruptGroup, UniqueMmioPointer};
use core::ptr::NonNull;

/// What [`acknowledge`] returns when no interrupt is pending.
const NONE: u32 = 1023;

/// Enables the system-register interface, opens the priority mask and
/// enables group 1 interrupts on this vCPU. IRQs stay masked in PSTATE, so
/// nothing is taken yet.
pub fn init_cpu_interface() {
    // ICC_SRE_EL1: SRE, and IRQ/FIQ bypass disabled (DFB, DIB).
    GicCpuInterface::enable_system_register_el1();
    GicCpuInterface::disable_legacy_interrupt_bypass_el1(true);
    barrier::isb(barrier::SY);
    GicCpuInterface::set_priority_mask(0xff);
    GicCpuInterface::enable_group1(true);
    barrier::isb(barrier::SY);
}

/// Acknowledges the highest-priority pending group 1 interrupt and returns
/// its INTID (1020..=1023 when none).
pub fn acknowledge() -> u32 {
    GicCpuInterface::get_and_acknowledge_interrupt(InterruptGroup::Group1).map_or(NONE, u32::from)
}

/// Whether an acknowledged INTID means "no interrupt".
pub fn is_spurious(intid: u32) -> bool {
    (1020..=1023).contains(&intid)
}

/// Ends (drops the priority of and deactivates) an acknowledged interrupt.
/// A number that is no INTID is ignored.
pub fn end_of_interrupt(intid: u32) {
    if let Ok(id) = IntId::try_from(intid) {
        GicCpuInterface::end_interrupt(id, InterruptGroup::Group1);
        barrier::isb(barrier::SY);
    }
}

/// Enables shared peripheral interrupt `intid` at the (virtual) distributor
/// at `gicd_base`: group 1, middle priority, routed to vCPU 0. Used for the
/// vsock device, so an idle WFI wakes when a packet arrives. Does nothing
/// for a number that is no SPI or a null base.
pub fn enable_spi(gicd_base: usize, intid: u32) {
    let Some(id) = IntId::try_from(intid).ok().filter(|id| id.is_spi()) else {
        return;
    };
    let Some(regs) = NonNull::new(gicd_base as *mut Gicd) else {
        return;
    };
    // SAFETY: `gicd_base` is the distributor window of this VM's virtual
    // GIC (board data), mapped as device memory by the stage-1 tables; mvmm
    // traps and emulates every access, so no access reaches memory. The
    // pointer lives only for this call, and the runtime's callers enable
    // interrupts from one vCPU, one at a time.
    let mut distributor = GicDistributor::new(unsafe { UniqueMmioPointer::new(regs) });
    // Affinity routing and group 1 on (the bits arm-gic names ARE_S and
    // EnableGrp1NS are ARE and EnableGrp1 of a GIC with one security state,
    // which is what mvmm emulates).
    distributor.modify_control(GicdCtlr::ARE_S | GicdCtlr::EnableGrp1NS, true);
    // An SPI: none of these calls can fail.
    let _ = distributor.set_group(id, Group::Group1NS);
    let _ = distributor.set_interrupt_priority(id, 0xa0);
    let _ = distributor.set_routing(id, Some(0));
    let _ = distributor.enable_interrupt(id, true);
}
