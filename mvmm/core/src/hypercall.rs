//! mvmm's own hypercalls (SMCCC vendor-specific hypervisor service range).
//!
//! A guest calls them with `hvc #0` (or `smc #0`) and x0 = function id. Only
//! the calls listed here exist; anything else in the range is answered
//! NOT_SUPPORTED like an unknown PSCI call.

/// SMCCC: fast call, 64-bit, owner 6 (vendor-specific hypervisor service).
const VENDOR_HYP_BASE: u64 = 0xc600_0000;
/// Take (x1 = 1) or give back (x1 = 0) the console's input focus. Only a
/// secure VM may call it: while it holds focus, typed keys go to it alone
/// and its lines carry the trusted prefix.
pub const CONSOLE_FOCUS: u64 = VENDOR_HYP_BASE | 1;
/// Exchange one rollback-counter frame (see `crate::rpmb`): x1 = the
/// guest-physical address of a 128-byte frame in the caller's RAM, which
/// mvmm replaces with its response. Only a secure VM may call it.
pub const RPMB: u64 = VENDOR_HYP_BASE | 2;
/// Take (x1 = 1) or give back (x1 = 0) the display: while the secure VM
/// holds it, mvmm scans out the secure VM's private framebuffer instead of
/// the rich VM's (see `crate::display`). Only a secure VM may call it.
pub const DISPLAY: u64 = VENDOR_HYP_BASE | 3;

/// Return values (SMCCC conventions).
pub const SUCCESS: u64 = 0;
pub const NOT_SUPPORTED: u64 = -1i64 as u64;
pub const DENIED: u64 = -3i64 as u64;
pub const INVALID_PARAMETERS: u64 = -2i64 as u64;

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
