//! AArch64 at EL1: boot, MMU, vectors and the devices every guest of mVMM
//! uses (console, timer, GIC CPU interface, PSCI).
//!
//! # Boot flow (`boot.S`)
//! mvmm enters vCPU 0 at `_start` (the VM's entry) with the MMU off and
//! interrupts masked. The boot code enables FP/SIMD, turns the MMU on with
//! [`IDENTITY_MAP`] (a constant table, so no Rust runs with the MMU off),
//! installs the vectors, takes its stack from [`STACKS`], zeroes `.bss` and
//! calls [`primary_entry`]. A vCPU started with PSCI CPU_ON enters at
//! `__guest_rt_secondary_start` with x0 = the Rust function to run, takes
//! the same path (without zeroing `.bss`) and calls that function with its
//! vCPU number.

/// Board facts, generated from the board file by build.rs.
pub mod board {
    include!(concat!(env!("OUT_DIR"), "/board.rs"));
}
pub mod console;
mod exception;
pub mod gic;
pub mod heap;
mod mmu;
pub mod probe;
pub mod psci;
pub mod smccc;
pub mod timer;

pub use exception::TrapFrame;

use aarch64_cpu::registers::{CNTFRQ_EL0, CurrentEL, MPIDR_EL1, Readable};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::mem::offset_of;

/// Stack bytes per vCPU.
pub const STACK_SIZE: usize = 128 * 1024;
/// vCPUs that get a stack; a vCPU with a larger number parks at boot.
pub const MAX_CPUS: usize = 4;

/// The per-vCPU stacks, in the `.stacks` section (not zeroed, not loaded).
#[repr(C, align(4096))]
pub struct Stacks(UnsafeCell<[[u8; STACK_SIZE]; MAX_CPUS]>);

// SAFETY: Rust never touches the stacks' contents through this static; each
// vCPU's boot code takes its own slot as its stack pointer.
unsafe impl Sync for Stacks {}

#[unsafe(link_section = ".stacks")]
static STACKS: Stacks = Stacks(UnsafeCell::new([[0; STACK_SIZE]; MAX_CPUS]));

pub use mmu::IDENTITY_MAP;

global_asm!(
    include_str!("boot.S"),
    MAIR = const mmu::MAIR_VALUE,
    TCR = const mmu::TCR_VALUE,
    SCTLR = const mmu::SCTLR_VALUE,
    CPACR_FP_ON = const (0b11 << 20),
    STACK_SIZE = const STACK_SIZE,
    MAX_CPUS = const MAX_CPUS,
    stacks = sym STACKS,
    table = sym IDENTITY_MAP,
    primary = sym primary_entry,
);

global_asm!(
    include_str!("vectors.S"),
    FRAME_SIZE = const core::mem::size_of::<TrapFrame>(),
    OFF_ELR = const offset_of!(TrapFrame, elr),
    OFF_FPSR = const offset_of!(TrapFrame, fpsr),
    OFF_Q = const offset_of!(TrapFrame, q),
    handler = sym exception::handle_exception,
);

global_asm!(include_str!("probe.S"));

unsafe extern "Rust" {
    /// The image's `main`, declared with `guest_rt::entry!`.
    safe fn __guest_rt_image_main() -> !;
}

/// First Rust code on the boot vCPU: the MMU, vectors, stack and `.bss` are
/// ready, interrupts masked.
extern "C" fn primary_entry() -> ! {
    gic::init_cpu_interface();
    __guest_rt_image_main()
}

/// Parks this vCPU for good: interrupts masked, waiting forever.
pub fn halt() -> ! {
    mask_interrupts();
    loop {
        aarch64_cpu::asm::wfi();
    }
}

/// This vCPU's number (MPIDR_EL1.Aff0, which mvmm sets to the vCPU index).
pub fn cpu_index() -> u64 {
    MPIDR_EL1.get() & 0xff
}

/// The exception level this code runs at (1 for a guest of mVMM).
pub fn current_el() -> u64 {
    CurrentEL.read(CurrentEL::EL)
}

/// The system counter's frequency in Hz.
pub fn timer_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// Masks IRQs (PSTATE.I).
pub fn mask_interrupts() {
    // SAFETY: setting DAIF.I only masks IRQs; it touches no memory.
    unsafe { asm!("msr daifset, #2", options(nomem, nostack, preserves_flags)) };
}

/// Waits for an interrupt and lets it be taken, race-free: called with IRQs
/// masked, it returns with IRQs masked after at most one wake-up. An
/// interrupt that became pending before the call still wakes the `wfi`, so a
/// caller that checks its state and then waits never misses one.
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
    // SAFETY: opens a window for pending IRQs to be taken by the vectors,
    // which save and restore all state they use; then masks IRQs again.
    unsafe {
        asm!(
            "msr daifclr, #2",
            "isb",
            "msr daifset, #2",
            options(nostack, preserves_flags)
        )
    };
}
