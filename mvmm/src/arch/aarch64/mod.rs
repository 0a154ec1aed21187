//! AArch64 at EL2: boot, vectors, MMU, vCPU entry and the devices mvmm owns.

mod disk;
mod dma;
mod firmware;
mod fwcfg;
mod gic;
mod guestmem;
mod heap;
mod input;
mod pci;
mod pl011;
mod rng;
mod smmu;
mod vcpu;

pub use disk::{Disk, SECTOR};
pub use firmware::{cpu_start, system_off};
pub use fwcfg::FwCfg;
pub use gic::{
    Injected, ack_interrupt, clear_list_registers, end_of_interrupt, init_cpu_interface,
    init_distributor, inject_virtual, kick, list_register_state, physical_state,
    reap_list_registers, reroute_spi, route_spi, set_spi_edge, set_spi_enabled,
};
pub use guestmem::{VmRam, copy_image, measured_image, read_boot_options, read_store, take_uds};
pub use input::InputDevice;
pub use pci::quiesce_functions;
pub use pl011::{console_read_byte, console_write_byte, enable_rx_interrupt};
pub use rng::Entropy;
pub use smmu::Smmu;
pub use vcpu::{
    Yield, counter, counter_frequency, enter_guest, fault_address, guest_mmu_on, guest_vbar,
    install_vm, reset_el1, send_event, set_el1_exception, this_cpu, wait_for_event,
    wait_for_interrupt,
};

use core::arch::global_asm;
use core::mem::{offset_of, size_of};

/// A guest's general registers, PC and PSTATE as saved by the vectors.
///
/// The layout is shared with `vectors.S` through `FRAME_SIZE` and
/// `OFF_ELR`; x0..x30 come first, 16-byte pairs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    pub x: [u64; 31],
    /// ELR_EL2: where the guest resumes.
    pub elr: u64,
    /// SPSR_EL2: the guest's PSTATE.
    pub spsr: u64,
    _pad: u64,
}

const _: () = assert!(size_of::<GuestRegs>().is_multiple_of(16));
const _: () = assert!(offset_of!(GuestRegs, elr) == offset_of!(GuestRegs, spsr) - 8);

impl GuestRegs {
    /// State for a vCPU that starts at `entry` in EL1h with interrupts
    /// masked and `x0` = `arg`.
    pub fn at_entry(entry: u64, arg: u64) -> GuestRegs {
        let mut regs = GuestRegs {
            elr: entry,
            spsr: SPSR_EL1H_MASKED,
            ..GuestRegs::default()
        };
        regs.x[0] = arg;
        regs
    }

    /// Register `n` as an instruction operand sees it (31 is XZR).
    pub fn get(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes register `n`; writes to XZR (31) are discarded.
    pub fn set(&mut self, n: u8, value: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = value;
        }
    }
}

/// EL1h with D, A, I, F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// MAIR_EL2: attr 0 = Device-nGnRE, attr 1 = Normal write-back.
const MAIR: u64 = 0xff << 8 | 0x04;
/// TCR_EL2: 39-bit VA (T0SZ 25, walk starts at level 1), write-back
/// inner-shareable walks, 4 KiB granule, 40-bit PA, RES1 bits 23 and 31.
const TCR: u64 = 25 | 1 << 8 | 1 << 10 | 3 << 12 | 2 << 16 | 1 << 23 | 1 << 31;
/// SCTLR_EL2: MMU, data and instruction caches, stack alignment check,
/// WXN (no writable page is executable, whatever its descriptor says), plus
/// the RES1 bits. The tables themselves (`__el2_l1`, built by the linker
/// from the board: mvmm_core::el2_map) map mvmm's code read-only, its data
/// and all guest RAM never executable, and no RAM that mvmm does not use.
const SCTLR: u64 = 0x30c5_0830 | 1 << 0 | 1 << 2 | 1 << 3 | 1 << 12 | 1 << 19;

const STACK_SIZE: u64 = match u64::from_str_radix(env!("MVMM_STACK_SIZE"), 10) {
    Ok(v) => v,
    Err(_) => panic!("MVMM_STACK_SIZE must be a number"),
};

global_asm!(
    include_str!("boot.S"),
    STACK_SIZE = const STACK_SIZE,
    MAIR = const MAIR,
    TCR = const TCR,
    SCTLR = const SCTLR,
);
global_asm!(
    include_str!("vectors.S"),
    FRAME_SIZE = const size_of::<GuestRegs>(),
    OFF_ELR = const offset_of!(GuestRegs, elr),
);

unsafe extern "C" {
    static __stacks_start: u8;
}

/// Top of CPU `cpu`'s stack.
fn stack_top(cpu: usize) -> u64 {
    (&raw const __stacks_start) as u64 + (cpu as u64 + 1) * STACK_SIZE
}

#[unsafe(no_mangle)]
extern "C" fn mvmm_cpu_main(cpu: u64, dtb: u64) -> ! {
    crate::hv::cpu_main(cpu as usize, dtb)
}

#[unsafe(no_mangle)]
extern "C" fn mvmm_guest_sync(regs: &mut GuestRegs) {
    let esr = aarch64_cpu::registers::ESR_EL2.get();
    crate::hv::guest_sync(regs, esr);
}

#[unsafe(no_mangle)]
extern "C" fn mvmm_guest_irq(regs: &mut GuestRegs) {
    crate::hv::guest_irq(regs);
}

#[unsafe(no_mangle)]
extern "C" fn mvmm_guest_unexpected(regs: &mut GuestRegs, kind: u64) {
    crate::hv::guest_unexpected(regs, if kind == 0 { "FIQ" } else { "SError" });
}

#[unsafe(no_mangle)]
extern "C" fn mvmm_el2_fault(esr: u64, elr: u64, far: u64) -> ! {
    panic!("exception at EL2: ESR {esr:#x} ELR {elr:#x} FAR {far:#x}");
}

use aarch64_cpu::registers::Readable as _;
