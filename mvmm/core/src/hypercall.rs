//! mvmm's own hypercalls (SMCCC vendor-specific hypervisor service range).
//!
//! A guest calls them with `hvc #0` (or `smc #0`) and x0 = function id. Only
//! the calls listed here exist; anything else in the range is answered
//! NOT_SUPPORTED like an unknown PSCI call.

// The ids and return values are part of the contract with the guests
// (`mvmm_abi::hypercall`); this module decodes them.
pub use mvmm_abi::hypercall::{
    CONSOLE_FOCUS, DENIED, DISPLAY, INVALID_PARAMETERS, NOT_SUPPORTED, RPMB, SUCCESS,
};

use crate::partition::VmKind;

/// A decoded mvmm hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// Take (`true`) or release (`false`) console input focus.
    ConsoleFocus(bool),
    /// A rollback-counter frame at this guest-physical address.
    Rpmb { frame: u64 },
    /// Take (`true`) or release (`false`) the display.
    Display(bool),
    /// CONSOLE_FOCUS or DISPLAY with an argument other than 0 or 1.
    Invalid,
}

/// Why mvmm refuses a hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a hypercall of this kind of VM: only a secure VM holds the
    /// trusted path (console focus, display) and the rollback counter.
    /// The value names what was asked, for the log.
    NotSecure(&'static str),
    /// CONSOLE_FOCUS or DISPLAY with an argument other than 0 or 1.
    Invalid,
}

impl Refusal {
    /// The SMCCC value the caller gets back.
    pub fn code(self) -> u64 {
        match self {
            Refusal::NotSecure(_) => DENIED,
            Refusal::Invalid => INVALID_PARAMETERS,
        }
    }
}

/// Whether a VM of kind `kind` may make `call`: every mvmm hypercall is
/// the secure VM's alone. A rich VM that asks is refused whatever the
/// argument, so it learns nothing from the answer.
pub fn admit(kind: VmKind, call: Hypercall) -> Result<Hypercall, Refusal> {
    let what = match call {
        Hypercall::ConsoleFocus(_) => "console focus",
        Hypercall::Display(_) => "the display",
        Hypercall::Rpmb { .. } => "the rollback counter",
        Hypercall::Invalid => "an mvmm hypercall",
    };
    match (kind, call) {
        (VmKind::Secure, Hypercall::Invalid) => Err(Refusal::Invalid),
        (VmKind::Secure, call) => Ok(call),
        (VmKind::Rich, _) => Err(Refusal::NotSecure(what)),
    }
}

/// Decodes x0..x1 if x0 names one of mvmm's hypercalls; `None` means "not
/// ours" (PSCI or unknown, answered elsewhere).
pub fn decode(x0: u64, x1: u64) -> Option<Hypercall> {
    match x0 {
        CONSOLE_FOCUS => Some(match x1 {
            0 => Hypercall::ConsoleFocus(false),
            1 => Hypercall::ConsoleFocus(true),
            _ => Hypercall::Invalid,
        }),
        RPMB => Some(Hypercall::Rpmb { frame: x1 }),
        DISPLAY => Some(match x1 {
            0 => Hypercall::Display(false),
            1 => Hypercall::Display(true),
            _ => Hypercall::Invalid,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn focus_calls_decode_and_everything_else_is_not_ours() {
        assert_eq!(decode(0xc600_0001, 1), Some(Hypercall::ConsoleFocus(true)));
        assert_eq!(decode(0xc600_0001, 0), Some(Hypercall::ConsoleFocus(false)));
        assert_eq!(decode(0xc600_0001, 2), Some(Hypercall::Invalid));
        assert_eq!(
            decode(0xc600_0002, 0x4200_0000),
            Some(Hypercall::Rpmb { frame: 0x4200_0000 })
        );
        assert_eq!(decode(0xc600_0003, 1), Some(Hypercall::Display(true)));
        assert_eq!(decode(0xc600_0003, 0), Some(Hypercall::Display(false)));
        assert_eq!(decode(0xc600_0003, 7), Some(Hypercall::Invalid));
        assert_eq!(decode(0xc600_0004, 1), None);
        assert_eq!(decode(0x8400_0000, 0), None);
        assert_eq!(NOT_SUPPORTED, u64::MAX);
    }

    #[test]
    fn only_the_secure_vm_is_admitted() {
        let calls = [
            Hypercall::ConsoleFocus(true),
            Hypercall::ConsoleFocus(false),
            Hypercall::Display(true),
            Hypercall::Display(false),
            Hypercall::Rpmb { frame: 0x4100_0000 },
        ];
        for call in calls {
            assert_eq!(admit(VmKind::Secure, call), Ok(call));
            let refused = admit(VmKind::Rich, call).unwrap_err();
            assert!(matches!(refused, Refusal::NotSecure(_)), "{call:?}");
            assert_eq!(refused.code(), DENIED);
        }
        // A bad argument from the rich VM is still just "denied": the
        // answer does not tell it which calls exist.
        assert_eq!(
            admit(VmKind::Rich, Hypercall::Invalid).unwrap_err().code(),
            DENIED
        );
        assert_eq!(
            admit(VmKind::Secure, Hypercall::Invalid),
            Err(Refusal::Invalid)
        );
        assert_eq!(Refusal::Invalid.code(), INVALID_PARAMETERS);
    }
}
