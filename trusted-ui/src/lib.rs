//! The trusted display of the secure VM: the screens the user approves payments on, and
//! the input that answers them.
//!
//! Everything here is `no_std`, safe Rust and host-tested. The module split:
//! - [`text`]: the canonical transaction statement that is displayed and signed.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod text;

pub use text::{
    AMOUNT_TEXT_CAPACITY, APPROVAL_TEXT_CAPACITY, ApprovalText, ApprovalView,
    CREDENTIAL_LABEL_MAX_LEN, Field, MERCHANT_MAX_LEN, SECURITY_WORD_MAX_LEN, TextError,
    approval_text, check_field, format_amount,
};
