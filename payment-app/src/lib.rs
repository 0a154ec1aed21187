//! The payment trusted application of the secure VM.
//!
//! It holds the credential keys, validates payment requests, runs the
//! approval state machine with the trusted UI, enforces the policy (limits,
//! PIN) and issues COSE_Sign1 ES256 authorization tokens whose payload is
//! the postcard encoding of [`protocol::signed::AuthorizationClaims`].
//! Time is always a parameter (monotonic milliseconds), randomness always a
//! caller-provided `CryptoRng`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod app;
pub mod service;
pub mod storage;

pub use app::{
    ApprovalPrompt, ApproveError, DAY_MS, Handled, MAX_PIN_FAILURES, PIN_DIGITS, PaymentApp, Policy,
};
pub use service::{ConnectionId, Service};
pub use storage::{MemoryStorage, PersistentState, Storage, StorageError};
