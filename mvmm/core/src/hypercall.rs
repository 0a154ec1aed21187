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
}
