//! What survives a reboot, and the trait it is persisted through.
//!
//! The whole [`PersistentState`] is written as one postcard blob after every
//! change and before any result that depends on it leaves the app, so a
//! crash can never reuse a transaction counter or forget a failed PIN.

use alloc::vec::Vec;

use protocol::{CREDENTIAL_ID_LEN, CredentialId, CurrencyCode, Label, MAX_CREDENTIALS};
use serde::{Deserialize, Serialize};

/// Largest encoded [`PersistentState`].
pub const MAX_STATE_LEN: usize = 1024;

/// Persistent storage failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageError;

/// Where the app keeps its state: secure storage on the device.
pub trait Storage {
    /// Reads the last stored blob into `buf`; `Ok(None)` when nothing was stored yet.
    fn load(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StorageError>;
    /// Replaces the stored blob atomically.
    fn store(&mut self, blob: &[u8]) -> Result<(), StorageError>;
}

/// Storage in RAM, for tests and the host simulator.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    blob: Option<Vec<u8>>,
    /// When set, every `store` fails (to test failure handling).
    pub fail_writes: bool,
}

impl Storage for MemoryStorage {
    fn load(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        match &self.blob {
            None => Ok(None),
            Some(blob) => {
                let out = buf.get_mut(..blob.len()).ok_or(StorageError)?;
                out.copy_from_slice(blob);
                Ok(Some(blob.len()))
            }
        }
    }

    fn store(&mut self, blob: &[u8]) -> Result<(), StorageError> {
        if self.fail_writes {
            return Err(StorageError);
        }
        self.blob = Some(blob.to_vec());
        Ok(())
    }
}

/// One enrolled credential, private key included; never leaves the secure VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    pub id: CredentialId,
    pub label: Label,
    pub secret: [u8; 32],
}

/// The salted digest of the user's PIN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    pub salt: [u8; 16],
    pub digest: [u8; 32],
}

/// Approved amounts per currency within the current 24-hour window.
///
/// # Invariants
/// At most one entry per currency; `totals` holds only approved amounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spending {
    pub window_start_ms: u64,
    pub totals: heapless::Vec<(CurrencyCode, u64), 8>,
}

/// Everything the app must not forget.
///
/// # Invariants
/// `counter` only grows; credential ids are unique; `pin_failures` never
/// exceeds [`crate::MAX_PIN_FAILURES`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentState {
    pub credentials: heapless::Vec<StoredCredential, MAX_CREDENTIALS>,
    pub counter: u64,
    pub pin: Option<PinRecord>,
    pub pin_failures: u8,
    pub spending: Spending,
    /// The security word the user chose when setting the trusted path up
    /// (`Request::Setup`); `None` before that.
    pub security_word: Option<protocol::device_key::SecurityWord>,
}

/// The state as stored before the security word was added (one release):
/// still read, so an older device's cards and PIN survive the update.
#[derive(Deserialize)]
struct PersistentStateV1 {
    credentials: heapless::Vec<StoredCredential, MAX_CREDENTIALS>,
    counter: u64,
    pin: Option<PinRecord>,
    pin_failures: u8,
    spending: Spending,
}

impl PersistentState {
    /// Reads a stored state (this layout or the one before it); `None`
    /// when `blob` is neither.
    pub fn decode(blob: &[u8]) -> Option<PersistentState> {
        if let Ok(state) = postcard::from_bytes::<PersistentState>(blob) {
            return Some(state);
        }
        let old: PersistentStateV1 = postcard::from_bytes(blob).ok()?;
        Some(PersistentState {
            credentials: old.credentials,
            counter: old.counter,
            pin: old.pin,
            pin_failures: old.pin_failures,
            spending: old.spending,
            security_word: None,
        })
    }

    pub(crate) fn credential(&self, id: &[u8; CREDENTIAL_ID_LEN]) -> Option<&StoredCredential> {
        self.credentials.iter().find(|c| &c.id == id)
    }
}
