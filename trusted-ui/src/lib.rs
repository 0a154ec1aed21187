//! The trusted display of the secure VM: the screens the user approves payments on, and
//! the input that answers them.
//!
//! Everything here is `no_std`, safe Rust and tested on the host:
//! - [`text`]: the canonical transaction statement that is displayed and signed.
//! - [`layout`]: where everything goes, for any display size; touch hit-testing.
//! - [`input`]: key events, buttons and the masked PIN entry.
//! - [`evdev`]: virtio keyboard and tablet events into guard inputs.
//! - [`guard`]: the rules that keep input from being steered (arming, press-and-hold,
//!   quiet before release, prompt rate limit).
//! - [`screens`]: the approval, PIN, result, lockout and timeout screens.
//!
//! See `docs/trusted-ui.md` for the design.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod evdev;
pub mod guard;
pub mod input;
pub mod layout;
mod paint;
pub mod screens;
pub mod text;

pub use input::{Button, KeyEvent, PIN_MAX_LEN, Pin, PinEntry, PinStep};
pub use layout::{ButtonList, Layout, MAX_BUTTONS, Orientation, Screen};
pub use paint::{DrawError, SCREEN_TEXT_CAPACITY, ScreenText};
pub use screens::{
    HEADER_TEXT, HINTS, Outcome, draw_approval, draw_choose_word, draw_hold, draw_lockout,
    draw_notice, draw_pin_entry, draw_pin_setup, draw_result, draw_timeout,
};
pub use text::{
    AMOUNT_TEXT_CAPACITY, APPROVAL_TEXT_CAPACITY, ApprovalText, ApprovalView,
    CREDENTIAL_LABEL_MAX_LEN, Field, MERCHANT_MAX_LEN, SECURITY_WORD_MAX_LEN, TextError,
    approval_text, check_field, format_amount,
};
