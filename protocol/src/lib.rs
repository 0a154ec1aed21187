//! The wire format shared by the Android bridge and the payment app.
//!
//! - [`message`]: versioned, size-bounded postcard requests and responses.
//! - [`session`]: the end-to-end authenticated, encrypted session.
//! - [`signed`]: the exact statements the device and credential keys sign,
//!   and the authorization token's CWT claims.
//! - [`eat`]: the attestation evidence (EAT) and attestation-key certificate claims.
//! - [`cbor`]: the deterministic CBOR those claims are written in.
//! - [`framing`]: how packets travel on a byte stream (length-prefixed).
//! - [`currency`]: the accepted ISO 4217 currencies.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod bytes;
pub mod cbor;
pub mod currency;
pub mod device_key;
pub mod eat;
pub mod framing;
pub mod message;
pub mod ports;
pub mod session;
pub mod signed;

pub use bytes::FixedBytes;
pub use currency::Currency;
pub use message::*;
pub use p256;
