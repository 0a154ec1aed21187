//! Trap decoding: any ESR_EL2 value, any load, any guest position.
//!
//! Invariants:
//! - `Exit::decode` depends only on EC (bits 31:26) and ISS (bits 24:0):
//!   IL, ISS2 and RES0 bits change nothing;
//! - decoded fields are in range (access size 1, 2, 4 or 8; registers
//!   0..=31; 6-bit status codes), and a system-register access re-encodes
//!   to the ISS it came from;
//! - `load_value` leaves no bit above the access (or above 32 bits for a W
//!   register) unless it sign-extends, and sign-extends exactly when asked;
//! - `inject` enters EL1h with DAIF masked at one of the three vector
//!   offsets the architecture allows, with the faulting PC as ELR and a
//!   syndrome of the right class (lower EL only from EL0).

use arbitrary::{Arbitrary, Unstructured};
use mvmm_core::trap::{DataAbort, Exit, Fault, GuestPosition, inject, load_value};

#[derive(Arbitrary, Debug)]
struct Input {
    esr: u64,
    /// When set, the class is one of those mvmm handles.
    class: Option<u8>,
    raw: u64,
    fault: u8,
    pc: u64,
    pstate: u64,
    vbar: u64,
}

const CLASSES: &[u64] = &[0x00, 0x01, 0x16, 0x17, 0x18, 0x20, 0x21, 0x24, 0x25];

fn check_abort(a: &DataAbort, iss: u32, raw: u64) {
    assert!([1, 2, 4, 8].contains(&a.size), "size {}", a.size);
    assert!(a.register <= 31 && a.status < 64, "{a:?}");
    assert_eq!(u32::from(a.size), 1 << (iss >> 22 & 3));
    assert_eq!(a.write, iss >> 6 & 1 == 1);
    let v = load_value(a, raw);
    let bits = u32::from(a.size) * 8;
    let width = if a.sixty_four { 64 } else { 32 };
    if width < 64 {
        assert_eq!(v >> 32, 0, "W register load {v:#x}");
    }
    if bits < 64 {
        let low = raw & ((1u64 << bits) - 1);
        let mask = if width == 64 { u64::MAX } else { 0xffff_ffff };
        assert_eq!(v & ((1u64 << bits) - 1), low & mask, "{a:?} lost low bits");
        let negative = raw >> (bits - 1) & 1 == 1;
        let upper = v & mask & !((1u64 << bits) - 1);
        if a.sign_extend && negative {
            assert_eq!(
                upper,
                mask & !((1u64 << bits) - 1),
                "{a:?} not sign-extended"
            );
        } else {
            assert_eq!(upper, 0, "{a:?} extended {raw:#x} to {v:#x}");
        }
    } else if width == 64 {
        assert_eq!(v, raw);
    }
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut esr = input.esr;
    if let Some(c) = input.class {
        esr = (esr & !(0x3f << 26)) | CLASSES[usize::from(c) % CLASSES.len()] << 26;
    }
    let exit = Exit::decode(esr);
    // Bits other than EC and ISS (IL, ISS2, RES0) change nothing.
    let canonical = esr & (0x3f << 26 | 0x01ff_ffff);
    assert_eq!(exit, Exit::decode(canonical), "{esr:#x}");
    assert_eq!(exit, Exit::decode(canonical | 1 << 25 | !0u64 << 32));
    let iss = (esr & 0x01ff_ffff) as u32;
    match exit {
        Exit::DataAbort(a) => check_abort(&a, iss, input.raw),
        Exit::SysReg(s) => {
            assert!(s.op0 < 4 && s.op1 < 8 && s.op2 < 8 && s.crn < 16 && s.crm < 16 && s.rt < 32);
            let again = u32::from(s.op0) << 20
                | u32::from(s.op2) << 17
                | u32::from(s.op1) << 14
                | u32::from(s.crn) << 10
                | u32::from(s.rt) << 5
                | u32::from(s.crm) << 1
                | u32::from(s.read);
            assert_eq!(again, iss & 0x3f_ffff, "{s:?} from ISS {iss:#x}");
        }
        Exit::Hvc { imm } | Exit::Smc { imm } => assert_eq!(u32::from(imm), iss & 0xffff),
        Exit::InstructionAbort { status } => assert!(status < 64),
        Exit::Other { class, iss: i } => {
            assert!(class < 64 && i == iss);
            assert!(
                ![0x01, 0x16, 0x17, 0x18, 0x20, 0x24].contains(&class),
                "{class:#x}"
            );
        }
        Exit::Wfi | Exit::Wfe => assert_eq!(esr >> 26 & 0x3f, 0x01),
    }

    let fault = match input.fault % 3 {
        0 => Fault::Undefined,
        1 => Fault::DataAbort {
            write: input.fault & 4 != 0,
        },
        _ => Fault::InstructionAbort,
    };
    let at = GuestPosition {
        pc: input.pc,
        pstate: input.pstate,
        vbar: input.vbar,
    };
    let inj = inject(fault, at);
    assert_eq!(inj.elr_el1, input.pc);
    assert_eq!(inj.spsr_el1, input.pstate);
    assert_eq!(inj.pstate, 0b1111 << 6 | 0b0101, "EL1h, DAIF masked");
    let offset = inj.pc.wrapping_sub(input.vbar);
    let from_el0 = input.pstate & 0xf == 0;
    let expected = match input.pstate & 0xf {
        0b0100 => 0x000,
        0b0101 => 0x200,
        _ => 0x400,
    };
    assert_eq!(
        offset, expected,
        "vector offset for PSTATE {:#x}",
        input.pstate
    );
    let class = inj.esr_el1 >> 26 & 0x3f;
    let expected_class = match fault {
        Fault::Undefined => 0x00,
        Fault::DataAbort { .. } if from_el0 => 0x24,
        Fault::DataAbort { .. } => 0x25,
        Fault::InstructionAbort if from_el0 => 0x20,
        Fault::InstructionAbort => 0x21,
    };
    assert_eq!(class, expected_class, "{fault:?}");
    assert_eq!(inj.esr_el1 >> 25 & 1, 1, "IL");
    if let Fault::DataAbort { write } = fault {
        assert_eq!(inj.esr_el1 >> 6 & 1 == 1, write, "WnR");
    }
}
