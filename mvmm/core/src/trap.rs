//! Why a guest left to EL2, and how to hand an exception back to it.
//!
//! [`Exit::decode`] turns the syndrome register (ESR_EL2) into a typed exit;
//! [`inject`] computes the EL1 register values that deliver a synchronous
//! exception to the guest exactly as the hardware would have.

/// Exception classes (ESR_ELx.EC) mvmm handles.
mod ec {
    pub const UNKNOWN: u8 = 0x00;
    pub const WFX: u8 = 0x01;
    pub const HVC64: u8 = 0x16;
    pub const SMC64: u8 = 0x17;
    pub const SYSREG: u8 = 0x18;
    pub const IABT_LOWER: u8 = 0x20;
    pub const IABT_SAME: u8 = 0x21;
    pub const DABT_LOWER: u8 = 0x24;
    pub const DABT_SAME: u8 = 0x25;
}

/// A trapped system-register access (MSR/MRS), ESR EC 0x18.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRegAccess {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
    /// General-purpose register number (31 means XZR).
    pub rt: u8,
    /// True for MRS (a read into `rt`).
    pub read: bool,
}

impl SysRegAccess {
    /// Encoding as (op0, op1, CRn, CRm, op2), the way the Arm ARM names
    /// registers.
    pub const fn encoding(&self) -> (u8, u8, u8, u8, u8) {
        (self.op0, self.op1, self.crn, self.crm, self.op2)
    }
}

/// Well-known system register encodings.
pub mod sysreg {
    /// ACTLR_EL1: implementation defined auxiliary control.
    pub const ACTLR_EL1: (u8, u8, u8, u8, u8) = (3, 0, 1, 0, 1);

    /// Whether `(op0, op1, CRn, CRm, op2)` is a register of the debug,
    /// trace, performance-monitor or statistical-profiling extensions.
    ///
    /// mvmm gives these to no guest: MDCR_EL2 traps them (TDA, TDOSA, TDRA,
    /// TPM, TPMCR, TPMS), and a trapped access reads as zero and ignores
    /// writes. So a guest cannot make the cycle counter or an event counter
    /// count at EL2 (PMEVTYPER/PMCCFILTR's NSH bit), which would time mvmm's
    /// work for the other VM, nor arm a breakpoint or watchpoint that
    /// matches at EL2. Linux copes: it sees no PMU counters
    /// (PMCR_EL0.N reads 0) and its hardware breakpoints never fire.
    pub const fn is_debug_or_monitor(encoding: (u8, u8, u8, u8, u8)) -> bool {
        let (op0, op1, crn, crm, _op2) = encoding;
        match (op0, op1, crn) {
            // Every op0 = 2 register: debug (MDSCR_EL1, DBGB*/DBGW*, OSLAR,
            // OSDLR, MDRAR, DBGCLAIM*, MDCCSR, DBGDTR*) and trace.
            (2, _, _) => true,
            // PMINTENSET_EL1, PMINTENCLR_EL1, PMMIR_EL1 (CRm 14) and the
            // profiling buffer and sampling registers (CRm 9, 10).
            (3, 0, 9) => matches!(crm, 9 | 10 | 14),
            // PMCR_EL0 .. PMOVSSET_EL0 (CRm 12 to 14).
            (3, 3, 9) => matches!(crm, 12..=14),
            // PMEVCNTR<n>_EL0, PMEVTYPER<n>_EL0, PMCCFILTR_EL0 (CRm 8 to
            // 15); CRm 0 to 3 are the generic timer, not trapped here.
            (3, 3, 14) => crm >= 8,
            _ => false,
        }
    }
}

/// What mvmm does with a trapped system-register access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysRegAction {
    /// An SGI generation register: send the SGI to the VM's own vCPUs
    /// (`crate::vgic`).
    SendSgi,
    /// Reads as zero, writes ignored: ACTLR_EL1 (implementation defined)
    /// and the debug, trace and performance-monitor registers no guest has
    /// ([`sysreg::is_debug_or_monitor`]).
    ReadZero,
    /// Ignored: DC ISW/CSW/CISW (set/way maintenance, trapped by HCR.TSW).
    /// A guest must not clean or invalidate caches by set/way on a shared
    /// cache hierarchy; QEMU models no caches and stage-2 memory is
    /// write-back coherent.
    Ignore,
    /// Anything else: an undefined-instruction exception for the guest.
    Undefined,
}

impl SysRegAccess {
    /// What mvmm does with this access (then the guest goes on at the next
    /// instruction, except for [`SysRegAction::Undefined`]).
    pub fn action(&self) -> SysRegAction {
        let encoding = self.encoding();
        if matches!(
            encoding,
            crate::vgic::ICC_SGI1R_EL1 | crate::vgic::ICC_ASGI1R_EL1 | crate::vgic::ICC_SGI0R_EL1
        ) {
            SysRegAction::SendSgi
        } else if encoding == sysreg::ACTLR_EL1 || sysreg::is_debug_or_monitor(encoding) {
            SysRegAction::ReadZero
        } else if self.op0 == 1 {
            SysRegAction::Ignore
        } else {
            SysRegAction::Undefined
        }
    }
}

/// A data abort from the guest, with the fields mvmm needs to emulate the
/// access (valid only when `syndrome_valid`).
///
/// Aligned to 8 bytes: the exit path hands it on whole, and a byte-aligned
/// copy of its nine fields was put together byte by byte on every trapped
/// access (about 20 instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct DataAbort {
    /// ISV: the access can be emulated from the syndrome alone.
    pub syndrome_valid: bool,
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Sign-extend a narrow load.
    pub sign_extend: bool,
    /// Register transferred (31 means XZR).
    pub register: u8,
    /// The register is 64 bits wide (else 32).
    pub sixty_four: bool,
    pub write: bool,
    /// The fault happened during the guest's own stage-1 table walk.
    pub stage1_walk: bool,
    /// Data fault status code.
    pub status: u8,
}

/// Why the guest trapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Wfi,
    Wfe,
    Hvc {
        imm: u16,
    },
    Smc {
        imm: u16,
    },
    SysReg(SysRegAccess),
    DataAbort(DataAbort),
    InstructionAbort {
        status: u8,
    },
    /// Anything else: the class and syndrome, for the log.
    Other {
        class: u8,
        iss: u32,
    },
}

impl Exit {
    /// Decodes ESR_EL2. Never fails: unknown classes become [`Exit::Other`].
    pub fn decode(esr: u64) -> Exit {
        let class = ((esr >> 26) & 0x3f) as u8;
        let iss = (esr & 0x01ff_ffff) as u32;
        let bits = |shift: u32, width: u32| ((iss >> shift) & ((1 << width) - 1)) as u8;
        match class {
            ec::WFX if iss & 1 == 0 => Exit::Wfi,
            ec::WFX => Exit::Wfe,
            ec::HVC64 => Exit::Hvc { imm: iss as u16 },
            ec::SMC64 => Exit::Smc { imm: iss as u16 },
            ec::SYSREG => Exit::SysReg(SysRegAccess {
                op0: bits(20, 2),
                op2: bits(17, 3),
                op1: bits(14, 3),
                crn: bits(10, 4),
                rt: bits(5, 5),
                crm: bits(1, 4),
                read: iss & 1 == 1,
            }),
            ec::DABT_LOWER => Exit::DataAbort(DataAbort {
                syndrome_valid: iss >> 24 & 1 == 1,
                size: 1 << bits(22, 2),
                sign_extend: iss >> 21 & 1 == 1,
                register: bits(16, 5),
                sixty_four: iss >> 15 & 1 == 1,
                write: iss >> 6 & 1 == 1,
                stage1_walk: iss >> 7 & 1 == 1,
                status: bits(0, 6),
            }),
            ec::IABT_LOWER => Exit::InstructionAbort { status: bits(0, 6) },
            _ => Exit::Other { class, iss },
        }
    }
}

/// Guest PSTATE modes (SPSR.M[3:0]) for AArch64 EL0 and EL1.
const MODE_MASK: u64 = 0b1111;
const MODE_EL0T: u64 = 0b0000;
const MODE_EL1T: u64 = 0b0100;
const MODE_EL1H: u64 = 0b0101;
/// D, A, I and F masked.
const DAIF: u64 = 0b1111 << 6;
/// Instruction length bit: the trapped instruction was 32 bits.
const IL: u64 = 1 << 25;
/// Fault status: synchronous external abort, not on a table walk.
const FSC_EXTERNAL: u64 = 0x10;

/// What kind of synchronous exception to deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Undefined instruction (EC 0): for traps mvmm does not emulate.
    Undefined,
    /// Synchronous external data abort; `write` is copied into WnR.
    DataAbort { write: bool },
    /// Synchronous external instruction abort.
    InstructionAbort,
}

/// The guest state an injected exception starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPosition {
    /// ELR_EL2: the faulting instruction.
    pub pc: u64,
    /// SPSR_EL2: the guest's PSTATE when it trapped.
    pub pstate: u64,
    /// The guest's VBAR_EL1.
    pub vbar: u64,
}

/// Register values that deliver a fault to EL1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    pub esr_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    /// New ELR_EL2: the guest's vector for this exception.
    pub pc: u64,
    /// New SPSR_EL2: EL1h with all interrupts masked.
    pub pstate: u64,
}

/// Computes how to deliver `fault` to a guest at `at`, following the
/// architecture's rules for the vector offset (current EL with SP_EL0,
/// current EL with SP_ELx, or lower EL) and the syndrome.
pub fn inject(fault: Fault, at: GuestPosition) -> Injection {
    let mode = at.pstate & MODE_MASK;
    let from_el0 = mode == MODE_EL0T;
    let vector_offset = match mode {
        MODE_EL1T => 0x000,
        MODE_EL1H => 0x200,
        _ => 0x400,
    };
    let class = |lower: u8, same: u8| u64::from(if from_el0 { lower } else { same }) << 26;
    let esr_el1 = match fault {
        Fault::Undefined => u64::from(ec::UNKNOWN) << 26 | IL,
        Fault::DataAbort { write } => {
            class(ec::DABT_LOWER, ec::DABT_SAME) | IL | u64::from(write) << 6 | FSC_EXTERNAL
        }
        Fault::InstructionAbort => class(ec::IABT_LOWER, ec::IABT_SAME) | IL | FSC_EXTERNAL,
    };
    Injection {
        esr_el1,
        elr_el1: at.pc,
        spsr_el1: at.pstate,
        pc: at.vbar.wrapping_add(vector_offset),
        pstate: DAIF | MODE_EL1H,
    }
}

/// The register value a guest reads, narrowed and extended the way a load
/// of `abort.size` bytes into its register would be.
pub fn load_value(abort: &DataAbort, raw: u64) -> u64 {
    let bits = u32::from(abort.size) * 8;
    let mut v = if bits >= 64 {
        raw
    } else {
        raw & ((1u64 << bits) - 1)
    };
    if abort.sign_extend && bits < 64 && (v >> (bits - 1)) & 1 == 1 {
        v |= !0u64 << bits;
    }
    if !abort.sixty_four {
        v &= 0xffff_ffff;
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_trapped_system_register_has_one_action() {
        use super::{SysRegAccess, SysRegAction};
        let access = |(op0, op1, crn, crm, op2): (u8, u8, u8, u8, u8), read| SysRegAccess {
            op0,
            op1,
            crn,
            crm,
            op2,
            rt: 0,
            read,
        };
        for sgi in [
            crate::vgic::ICC_SGI1R_EL1,
            crate::vgic::ICC_ASGI1R_EL1,
            crate::vgic::ICC_SGI0R_EL1,
        ] {
            assert_eq!(access(sgi, false).action(), SysRegAction::SendSgi);
        }
        // ACTLR_EL1, MDSCR_EL1 (op0 2), PMCR_EL0.
        for reg in [super::sysreg::ACTLR_EL1, (2, 0, 0, 2, 2), (3, 3, 9, 12, 0)] {
            assert_eq!(access(reg, true).action(), SysRegAction::ReadZero);
            assert_eq!(access(reg, false).action(), SysRegAction::ReadZero);
        }
        // DC CISW (op0 1, op1 0, CRn 7, CRm 14, op2 2).
        assert_eq!(
            access((1, 0, 7, 14, 2), false).action(),
            SysRegAction::Ignore
        );
        // An EL2 register from EL1 (HCR_EL2) or anything unknown.
        assert_eq!(
            access((3, 4, 1, 1, 0), true).action(),
            SysRegAction::Undefined
        );
        // The generic timer's registers are not the PMU's (CRm 0 to 3).
        assert_eq!(
            access((3, 3, 14, 3, 1), true).action(),
            SysRegAction::Undefined
        );
    }

    use super::*;

    #[test]
    fn decodes_the_classes_mvmm_handles() {
        assert_eq!(Exit::decode(0x0400_0000 | IL), Exit::Wfi);
        assert_eq!(Exit::decode(0x0600_0001), Exit::Wfe);
        assert_eq!(Exit::decode(0x5a00_0000 | 0x12), Exit::Hvc { imm: 0x12 });
        assert_eq!(Exit::decode(0x5e00_0000), Exit::Smc { imm: 0 });
        assert_eq!(
            Exit::decode(0x8200_000f),
            Exit::InstructionAbort { status: 0xf }
        );
        assert_eq!(
            Exit::decode(0xfc00_0000),
            Exit::Other {
                class: 0x3f,
                iss: 0
            }
        );
    }

    #[test]
    fn decodes_a_sysreg_read_of_actlr_el1() {
        // mrs x3, actlr_el1: op0=3 op1=0 CRn=1 CRm=0 op2=1, Rt=3, read.
        let iss = 3 << 20 | 1 << 17 | 1 << 10 | 3 << 5 | 1;
        let Exit::SysReg(access) = Exit::decode(0x18 << 26 | IL | iss) else {
            panic!()
        };
        assert_eq!(access.encoding(), sysreg::ACTLR_EL1);
        assert_eq!((access.rt, access.read), (3, true));
    }

    #[test]
    fn decodes_a_word_store_data_abort() {
        // str w1, [x0] to an unmapped IPA: ISV, SAS=2 (word), SRT=1, WnR,
        // DFSC = translation fault level 3 (0x07).
        let iss: u64 = 1 << 24 | 2 << 22 | 1 << 16 | 1 << 6 | 0x07;
        let Exit::DataAbort(a) = Exit::decode(0x24 << 26 | IL | iss) else {
            panic!()
        };
        assert!(a.syndrome_valid && a.write && !a.sign_extend && !a.sixty_four && !a.stage1_walk);
        assert_eq!((a.size, a.register, a.status), (4, 1, 0x07));
    }

    #[test]
    fn injection_uses_the_vector_the_guest_mode_selects() {
        let at = |pstate| GuestPosition {
            pc: 0x4100_1234,
            pstate,
            vbar: 0x4100_8000,
        };
        let el1h = inject(Fault::DataAbort { write: false }, at(0x3c5));
        assert_eq!(el1h.pc, 0x4100_8200);
        assert_eq!(el1h.esr_el1, 0x25 << 26 | IL | 0x10);
        assert_eq!(
            (el1h.elr_el1, el1h.spsr_el1, el1h.pstate),
            (0x4100_1234, 0x3c5, 0x3c5)
        );
        let el0 = inject(Fault::DataAbort { write: true }, at(0x0));
        assert_eq!(el0.pc, 0x4100_8400);
        assert_eq!(el0.esr_el1, 0x24 << 26 | IL | 1 << 6 | 0x10);
        assert_eq!(inject(Fault::Undefined, at(0x4)).pc, 0x4100_8000);
        assert_eq!(inject(Fault::Undefined, at(0x4)).esr_el1, IL);
        assert_eq!(
            inject(Fault::InstructionAbort, at(0x5)).esr_el1,
            0x21 << 26 | IL | 0x10
        );
    }

    #[test]
    fn loads_are_narrowed_and_sign_extended() {
        let a = |size, sign_extend, sixty_four| DataAbort {
            syndrome_valid: true,
            size,
            sign_extend,
            register: 0,
            sixty_four,
            write: false,
            stage1_walk: false,
            status: 0,
        };
        assert_eq!(load_value(&a(1, false, true), 0x1234_5680), 0x80);
        assert_eq!(load_value(&a(1, true, true), 0x80), 0xffff_ffff_ffff_ff80);
        assert_eq!(load_value(&a(1, true, false), 0x80), 0xffff_ff80);
        assert_eq!(load_value(&a(8, false, true), u64::MAX), u64::MAX);
    }

    #[test]
    fn debug_and_monitor_registers_are_recognised_and_timers_are_not() {
        use super::sysreg::is_debug_or_monitor as dm;
        // MDSCR_EL1, OSLAR_EL1, DBGBCR0_EL1, MDCCINT_EL1.
        assert!(dm((2, 0, 0, 2, 2)));
        assert!(dm((2, 0, 1, 0, 4)));
        assert!(dm((2, 0, 0, 0, 5)));
        assert!(dm((2, 0, 0, 2, 0)));
        // PMCR_EL0, PMCCNTR_EL0, PMUSERENR_EL0, PMCCFILTR_EL0, PMEVTYPER0_EL0.
        assert!(dm((3, 3, 9, 12, 0)));
        assert!(dm((3, 3, 9, 13, 0)));
        assert!(dm((3, 3, 9, 14, 0)));
        assert!(dm((3, 3, 14, 15, 7)));
        assert!(dm((3, 3, 14, 12, 0)));
        // PMINTENSET_EL1, PMSCR_EL1.
        assert!(dm((3, 0, 9, 14, 1)));
        assert!(dm((3, 0, 9, 9, 0)));
        // Not these: CNTP_CTL_EL0, CNTV_CVAL_EL0, CNTFRQ_EL0, ACTLR_EL1,
        // ICC_SGI1R_EL1, MAIR_EL1 (CRn 10).
        for enc in [
            (3, 3, 14, 2, 1),
            (3, 3, 14, 3, 2),
            (3, 3, 14, 0, 0),
            (3, 0, 1, 0, 1),
            (3, 0, 12, 11, 5),
            (3, 0, 10, 2, 0),
        ] {
            assert!(!dm(enc), "{enc:?}");
        }
    }
}
