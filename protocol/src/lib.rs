//! The wire format shared by the Android bridge and the payment app.
//!
//! - [`message`]: versioned, size-bounded postcard requests and responses.
//! - [`session`]: the end-to-end authenticated, encrypted session.
//! - [`signed`]: the exact statements the device and credential keys sign.
//! - [`currency`]: the accepted ISO 4217 currencies.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod bytes;
pub mod currency;
pub mod device_key;
pub mod message;
pub mod session;
pub mod signed;

pub use bytes::FixedBytes;
pub use currency::Currency;
pub use message::*;
pub use p256;
