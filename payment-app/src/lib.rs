//! The payment trusted application of the secure VM.
//!
//! It holds the credential keys, validates payment requests, runs the
//! approval state machine with the trusted UI, enforces the policy (limits,
//! PIN) and issues authorization tokens (CWT: tagged COSE_Sign1 ES256 over
//! [`protocol::signed::AuthorizationClaims`]) and attestation evidence
//! (EAT, [`protocol::eat`]); see docs/tokens.md.
//! Time is always a parameter (monotonic milliseconds), randomness always a
//! caller-provided `CryptoRng`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod app;
pub mod cose;
pub mod service;
pub mod storage;

pub use app::{
    ApprovalPrompt, ApproveError, DAY_MS, Handled, MAX_PIN_FAILURES, PIN_DIGITS, PaymentApp,
    Policy, SETUP_WORDS, SetupWords,
};
pub use cose::Attester;
pub use protocol::eat::{BootMeasurements, BootState};
pub use service::{ConnectionId, Service};
pub use storage::{MemoryStorage, PersistentState, Storage, StorageError};
