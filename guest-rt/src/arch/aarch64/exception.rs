//! What the vectors call: interrupts, recoverable probe aborts, and the stop
//! on anything unexpected.

use super::{console, gic, probe, timer};
use aarch64_cpu::registers::{ESR_EL1, FAR_EL1, Readable};
use core::mem::{offset_of, size_of};

/// The state `vectors.S` saves on exception entry and restores on return.
///
/// # Invariants
/// The layout is shared with `vectors.S` (through `FRAME_SIZE`, `OFF_ELR`,
/// `OFF_FPSR`, `OFF_Q`); x0..x30 sit at 8 * n, as the assembly stores them.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// General registers x0..x30.
    pub x: [u64; 31],
    /// ELR_EL1: where execution resumes.
    pub elr: u64,
    /// SPSR_EL1: the interrupted PSTATE.
    pub spsr: u64,
    /// FPSR of the interrupted code.
    pub fpsr: u64,
    /// FPCR of the interrupted code.
    pub fpcr: u64,
    _pad: u64,
    /// SIMD registers q0..q31.
    pub q: [u128; 32],
}

const _: () = assert!(offset_of!(TrapFrame, x) == 0);
const _: () = assert!(offset_of!(TrapFrame, spsr) == offset_of!(TrapFrame, elr) + 8);
const _: () = assert!(offset_of!(TrapFrame, fpcr) == offset_of!(TrapFrame, fpsr) + 8);
const _: () = assert!(offset_of!(TrapFrame, q).is_multiple_of(16));
const _: () = assert!(size_of::<TrapFrame>().is_multiple_of(16));
// `stp x, x, [sp, #off]` reaches 504 at most; `sub sp, sp, #imm` 4095.
const _: () = assert!(offset_of!(TrapFrame, fpsr) <= 504 && size_of::<TrapFrame>() <= 4095);

/// Exception class of a data abort taken without a change of level.
const EC_DATA_ABORT_SAME_EL: u64 = 0x25;

/// Vector offsets / 0x80: 4 = sync and 5 = IRQ from EL1 with SP_EL1, the
/// only two this runtime expects.
const VECTOR_SYNC_EL1H: u64 = 4;
const VECTOR_IRQ_EL1H: u64 = 5;

const VECTOR_NAMES: [&str; 16] = [
    "sync (EL1t)",
    "irq (EL1t)",
    "fiq (EL1t)",
    "serror (EL1t)",
    "sync (EL1h)",
    "irq (EL1h)",
    "fiq (EL1h)",
    "serror (EL1h)",
    "sync (EL0, AArch64)",
    "irq (EL0, AArch64)",
    "fiq (EL0, AArch64)",
    "serror (EL0, AArch64)",
    "sync (EL0, AArch32)",
    "irq (EL0, AArch32)",
    "fiq (EL0, AArch32)",
    "serror (EL0, AArch32)",
];

/// Called by `vectors.S` with the saved frame and the vector's index.
pub(super) extern "C" fn handle_exception(frame: &mut TrapFrame, vector: u64) {
    match vector {
        VECTOR_IRQ_EL1H => handle_irq(),
        VECTOR_SYNC_EL1H => {
            let esr = ESR_EL1.get();
            let far = FAR_EL1.get();
            let class = (esr >> 26) & 0x3f;
            if class == EC_DATA_ABORT_SAME_EL && probe::is_access_instruction(frame.elr) {
                frame.x[1] = esr;
                frame.x[2] = far;
                frame.elr += 4;
                return;
            }
            stop(frame, vector, esr, far)
        }
        _ => stop(frame, vector, ESR_EL1.get(), FAR_EL1.get()),
    }
}

fn handle_irq() {
    let intid = gic::acknowledge();
    if gic::is_spurious(intid) {
        return;
    }
    if intid == timer::VIRTUAL_TIMER_INTID {
        timer::on_interrupt();
    } else if intid == timer::PHYSICAL_TIMER_INTID {
        timer::on_physical_interrupt();
    }
    gic::end_of_interrupt(intid);
}

/// Reports an exception nobody expected and stops this vCPU (no retries,
/// no repeated output).
fn stop(frame: &TrapFrame, vector: u64, esr: u64, far: u64) -> ! {
    let name = usize::try_from(vector)
        .ok()
        .and_then(|v| VECTOR_NAMES.get(v))
        .copied()
        .unwrap_or("?");
    console::emergency_print(format_args!(
        "PANIC: unexpected exception {name} on vcpu {cpu}: ESR_EL1={esr:#x} ELR_EL1={elr:#x} FAR_EL1={far:#x} SPSR_EL1={spsr:#x}; vcpu stopped\n",
        cpu = super::cpu_index(),
        elr = frame.elr,
        spsr = frame.spsr,
    ));
    super::halt()
}
