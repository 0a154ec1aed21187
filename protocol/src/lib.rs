//! The wire format shared by the Android bridge and the payment app.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod currency;

pub use currency::Currency;
