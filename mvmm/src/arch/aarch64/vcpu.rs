//! Running a vCPU on this physical CPU: the EL2 controls for its VM, entry
//! to EL1, and the EL1 registers mvmm touches when it injects a fault.
//!
//! Each physical CPU runs exactly one vCPU for ever (static partitioning),
//! so the guest's EL1 system registers never need saving: they stay in the
//! hardware. Only the general registers cross EL2 (see `GuestRegs`).

use super::{GuestRegs, stack_top};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTHCTL_EL2, CNTP_CTL_EL0, CNTPCT_EL0, CNTV_CTL_EL0, CNTVOFF_EL2, CPTR_EL2,
    ELR_EL1, ESR_EL1, FAR_EL1, FAR_EL2, HCR_EL2, HPFAR_EL2, MDCR_EL2, MIDR_EL1, Readable,
    SCTLR_EL1, SPSR_EL1, TPIDR_EL2, VBAR_EL1, VMPIDR_EL2, VTCR_EL2, VTTBR_EL2, Writeable,
};
// VPIDR_EL2 is not in aarch64-cpu 11; arm-sysregs (under arm-gic) has it.
use arm_sysregs::el2::accessors::write_vpidr_el2;
use arm_sysregs::el2::registers::VpidrEl2;
use core::arch::asm;
use mvmm_core::stage2::IPA_BITS;

/// HCR_EL2 for every guest: stage 2 on; physical IRQ/FIQ/SError to EL2;
/// trap WFI, SMC, implementation-defined registers, ACTLR and set/way
/// cache maintenance; EL1 is AArch64; pointer-authentication keys are
/// the guest's own (no trap).
const HCR: u64 = 1 << 0 // VM
    | 1 << 1 // SWIO
    | 1 << 3 // FMO
    | 1 << 4 // IMO
    | 1 << 5 // AMO
    | 1 << 13 // TWI
    | 1 << 19 // TSC
    | 1 << 20 // TIDCP
    | 1 << 21 // TACR
    | 1 << 22 // TSW
    | 1 << 31 // RW
    | 1 << 40 // APK
    | 1 << 41; // API

/// MDCR_EL2 for every guest: its accesses to the debug registers (TDA),
/// the OS lock and power-down registers (TDOSA), the debug ROM address
/// (TDRA), the performance monitors (TPM, TPMCR) and statistical profiling
/// (TPMS) trap to mvmm, which reads them as zero
/// (`mvmm_core::trap::sysreg::is_debug_or_monitor`): no guest counts EL2
/// cycles or events, nor arms a breakpoint at EL2. TDE stays clear, so a
/// guest's own BRK and single-step still go to its EL1. HPMN (bits 4:0)
/// is moot with every PMU access trapped.
const MDCR: u64 = 1 << 5 // TPMCR
    | 1 << 6 // TPM
    | 1 << 9 // TDA
    | 1 << 10 // TDOSA
    | 1 << 11 // TDRA
    | 1 << 14; // TPMS

/// VTCR_EL2: 32-bit IPA, walk starts at level 1, write-back
/// inner-shareable walks, 4 KiB granule, 40-bit PA, RES1 bit 31.
const VTCR: u64 = (64 - IPA_BITS as u64) | 1 << 6 | 1 << 8 | 1 << 10 | 3 << 12 | 2 << 16 | 1 << 31;

/// SCTLR_EL1 at reset: MMU and caches off, RES1 bits only.
const SCTLR_EL1_RESET: u64 = 0x30d0_0800;

/// Points this CPU at a VM: its stage-2 tables and VMID, the trap
/// configuration, and the identity its vCPU reports (MPIDR Aff0 = vCPU).
pub fn install_vm(vmid: u16, stage2_root: u64, vcpu: usize) {
    VTCR_EL2.set(VTCR);
    VTTBR_EL2.set(u64::from(vmid) << 48 | stage2_root);
    HCR_EL2.set(HCR);
    // Bit 31 of MPIDR is RES1; U (bit 30) clear: a multiprocessor system.
    VMPIDR_EL2.set(1 << 31 | vcpu as u64);
    // The MIDR value the guest reads: this CPU's own.
    write_vpidr_el2(VpidrEl2::from_bits_retain(MIDR_EL1.get()));
    // The guest may read the physical counter and use its physical timer
    // (EL1PCTEN, EL1PCEN). The event stream (EVNTEN, bit 2) wakes mvmm's
    // own WFE waits every 2^(EVNTI + 1) counter ticks (about 1 ms at
    // 62.5 MHz), so a wait that polls a clock (a reset waiting for a vCPU)
    // runs on hardware where WFE really sleeps; a guest's WFE may wake
    // early, which the architecture allows anyway. aarch64-cpu names no
    // EVNTEN/EVNTI fields, hence the raw value.
    const EVENT_STREAM: u64 = 1 << 2 | EVENT_STREAM_BIT << 4;
    const EVENT_STREAM_BIT: u64 = 15;
    CNTHCTL_EL2.set(0b11 | EVENT_STREAM);
    CNTVOFF_EL2.set(0);
    // No FP/SIMD trap (TFP clear); SVE (TZ) trapped; RES1 bits set.
    CPTR_EL2.set(0x33ff);
    MDCR_EL2.set(MDCR);
    barrier::isb(barrier::SY);
    // SAFETY: invalidates this VMID's stale stage-1+2 TLB entries on all
    // CPUs of the inner-shareable domain; no memory is touched.
    unsafe { asm!("tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
}

/// Puts the EL1 state mvmm relies on back to its reset value (MMU off).
pub fn reset_el1() {
    SCTLR_EL1.set(SCTLR_EL1_RESET);
    VBAR_EL1.set(0);
    // Both EL1 timers off: a restarted guest sets them up again.
    CNTV_CTL_EL0.set(0);
    CNTP_CTL_EL0.set(0);
    barrier::isb(barrier::SY);
}

/// Leaves EL2 for the guest with `regs`; never returns (the next exit
/// arrives through the vectors).
pub fn enter_guest(regs: &GuestRegs, cpu: usize) -> ! {
    unsafe extern "C" {
        fn mvmm_enter_guest(regs: *const GuestRegs, stack_top: u64) -> !;
    }
    // SAFETY: `regs` is a whole frame that the assembly copies before it
    // resets SP to the top of this CPU's own stack, which nothing else
    // uses; from then on only the vectors run on that stack.
    unsafe { mvmm_enter_guest(regs, stack_top(cpu)) }
}

/// (IPA, VA) of the guest access that caused the current stage-2 abort.
pub fn fault_address() -> (u64, u64) {
    let far = FAR_EL2.get();
    let ipa = (HPFAR_EL2.get() & 0x0fff_ffff_fff0) << 8 | (far & 0xfff);
    (ipa, far)
}

/// Whether the guest's stage-1 translation (its MMU) is on.
pub fn guest_mmu_on() -> bool {
    SCTLR_EL1.get() & 1 == 1
}

/// The guest's exception vector base.
pub fn guest_vbar() -> u64 {
    VBAR_EL1.get()
}

/// Loads the EL1 exception registers for an injected synchronous exception.
pub fn set_el1_exception(esr: u64, far: Option<u64>, elr: u64, spsr: u64) {
    ESR_EL1.set(esr);
    if let Some(far) = far {
        FAR_EL1.set(far);
    }
    ELR_EL1.set(elr);
    SPSR_EL1.set(spsr);
}

/// Sleeps until an interrupt is pending (EL2 keeps interrupts masked, so
/// it is taken when the guest resumes).
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
}

/// Sleeps until another CPU signals an event.
pub fn wait_for_event() {
    aarch64_cpu::asm::wfe();
}

/// Wakes every CPU waiting in `wait_for_event`, after making this CPU's
/// earlier writes visible.
pub fn send_event() {
    barrier::dsb(barrier::ISH);
    aarch64_cpu::asm::sev();
}

/// How a waiter for one of mvmm's locks waits: the `yield` hint. On
/// hardware it only tells the core that this is a spin. QEMU runs it as
/// "let another vCPU run" when the vCPUs share one host thread (`-icount`):
/// there the holder may be a vCPU that is not running, and a waiter that
/// spins with `core::hint::spin_loop` (an ISB on aarch64) spins until the
/// emulator's time slice ends, up to 100 ms of guest time.
pub struct Yield;

impl spin::relax::RelaxStrategy for Yield {
    fn relax() {
        // SAFETY: a hint instruction; no memory, register or flag changes.
        unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) };
    }
}

/// Index of the physical CPU running this code (set by the boot code).
pub fn this_cpu() -> usize {
    TPIDR_EL2.get() as usize
}

/// The physical counter (CNTPCT_EL0).
pub fn counter() -> u64 {
    CNTPCT_EL0.get()
}

/// Counter ticks per second (CNTFRQ_EL0).
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}
