//! The A/B record store: two erase blocks, the newest valid generation wins.
//!
//! # Power-cut argument
//! Generation `g` is always written to slot `g % 2`, so a commit only ever
//! erases and programs the slot that does *not* hold the current record.
//! The current record is therefore intact whatever happens to the other
//! slot, and a half-written (or half-erased) slot fails its GCM tag, its
//! header checks, or reads as blank. A commit is the moment its record is
//! completely on flash: it was read back and compared before the call
//! returns, and only then does the in-memory state move on. At open the
//! newest valid generation wins, which is the new record if the commit got
//! that far and the previous one otherwise: never anything older.
//!
//! # Rollback
//! Each record seals a rollback value greater than the counter's value
//! when it was written; after the record is verified the counter is
//! advanced to it. At open the winning record's value must be at least the
//! counter's: a smaller one is an older copy of the flash put back
//! ([`StoreError::RolledBack`]). A larger one means power was lost between
//! the flash write and the counter update: the counter is advanced then.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::counter::{CounterError, RollbackCounter};
use crate::flash::{Flash, FlashError};
use crate::record::{
    HEADER_LEN, Header, MAX_PAYLOAD, ROLLBACK_LEN, RecordError, SealingKey, TAG_LEN,
};

/// The two slots: erase blocks 0 (A) and 1 (B) of the device.
pub const SLOTS: usize = 2;

/// Why the store could not be opened or a commit did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The flash is too small for two slots holding a record.
    Geometry { capacity: usize, erase_block: usize },
    /// The flash device failed.
    Flash(FlashError),
    /// The rollback counter failed.
    Counter(CounterError),
    /// Neither slot holds a valid record and neither is blank: tampering,
    /// or records sealed under another key (another secure-os image or
    /// device). Never the result of a power cut.
    Unreadable { a: RecordError, b: RecordError },
    /// The newest record is older than the rollback counter: an old copy
    /// of the flash was restored.
    RolledBack {
        generation: u64,
        rollback: u64,
        counter: u64,
    },
    /// The payload is larger than a record carries.
    PayloadTooLarge { len: usize },
    /// The record read back differs from what was programmed; the previous
    /// record is still the current one.
    VerifyFailed { slot: u8 },
    /// The generation or rollback value would overflow.
    Exhausted,
    /// The record is committed on flash but the counter was not advanced
    /// (it catches up at the next open).
    CounterBehind { rollback: u64, error: CounterError },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StoreError::Geometry {
                capacity,
                erase_block,
            } => write!(
                f,
                "flash of {capacity} bytes with {erase_block}-byte erase blocks cannot hold two slots"
            ),
            StoreError::Flash(e) => write!(f, "{e}"),
            StoreError::Counter(e) => write!(f, "{e}"),
            StoreError::Unreadable { a, b } => write!(
                f,
                "no valid record: slot A {a}, slot B {b} (tampered, or sealed by another secure-os or device)"
            ),
            StoreError::RolledBack {
                generation,
                rollback,
                counter,
            } => write!(
                f,
                "rollback detected: the newest record (generation {generation}) has rollback value {rollback} but the counter is at {counter}: an older copy of the storage was restored"
            ),
            StoreError::PayloadTooLarge { len } => {
                write!(f, "payload of {len} bytes exceeds {MAX_PAYLOAD}")
            }
            StoreError::VerifyFailed { slot } => write!(
                f,
                "slot {} read back differently from what was written; the previous record stays current",
                slot_name(slot)
            ),
            StoreError::Exhausted => write!(f, "the generation or rollback value would overflow"),
            StoreError::CounterBehind { rollback, error } => write!(
                f,
                "record committed but the rollback counter was not advanced to {rollback}: {error}"
            ),
        }
    }
}

impl From<FlashError> for StoreError {
    fn from(e: FlashError) -> Self {
        StoreError::Flash(e)
    }
}

impl From<CounterError> for StoreError {
    fn from(e: CounterError) -> Self {
        StoreError::Counter(e)
    }
}

/// "A" or "B".
pub fn slot_name(slot: u8) -> char {
    if slot == 0 { 'A' } else { 'B' }
}

/// What one slot held at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    Valid { generation: u64, rollback: u64 },
    Invalid(RecordError),
}

/// What [`Store::open`] found, for the boot log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReport {
    pub slots: [SlotState; SLOTS],
    /// The current record's slot, generation and rollback value; `None`
    /// when nothing was committed yet.
    pub current: Option<(u8, u64, u64)>,
    /// Payload bytes of the current record.
    pub payload_len: usize,
    /// The counter's value when the store was opened (after catching up).
    pub counter: u64,
    /// The counter lagged the newest record (power lost between a commit
    /// and its counter update) and was advanced.
    pub counter_caught_up: bool,
    /// No record, yet the counter is above 0: the storage was erased.
    pub erased_after_use: bool,
    /// Whether the counter survives power loss outside the flash.
    pub rollback_protected: bool,
}

/// The committed state in RAM.
struct Current {
    slot: u8,
    generation: u64,
    rollback: u64,
    payload: Zeroizing<Vec<u8>>,
}

/// A sealed A/B record store on `F`, checked against counter `C`, drawing
/// nonces from `R`.
///
/// # Invariants
/// `current` is the newest valid record on flash (or `None` when no record
/// was ever committed); `floor` is at least the counter's value and the
/// current record's rollback value, so the next record's value exceeds both.
pub struct Store<F: Flash, C: RollbackCounter, R: CryptoRng> {
    flash: F,
    counter: C,
    rng: R,
    key: SealingKey,
    slot_size: usize,
    current: Option<Current>,
    floor: u64,
    report: OpenReport,
    last_error: Option<StoreError>,
}

impl<F: Flash, C: RollbackCounter, R: CryptoRng> Store<F, C, R> {
    /// Opens the store on the first two erase blocks of `flash`, sealing
    /// under a key derived from `storage_root_secret`. A flash with no
    /// record opens empty (the first commit creates it).
    pub fn open(
        mut flash: F,
        mut counter: C,
        rng: R,
        storage_root_secret: &[u8; 32],
    ) -> Result<Self, StoreError> {
        let slot_size = flash.erase_block_size();
        if slot_size < HEADER_LEN + ROLLBACK_LEN + TAG_LEN
            || flash.capacity() < SLOTS * slot_size
            || flash.write_unit() == 0
            || !slot_size.is_multiple_of(flash.write_unit())
        {
            return Err(StoreError::Geometry {
                capacity: flash.capacity(),
                erase_block: slot_size,
            });
        }
        let key = SealingKey::derive(storage_root_secret);
        let mut found: [Result<Current, RecordError>; SLOTS] =
            [Err(RecordError::Blank), Err(RecordError::Blank)];
        for (slot, result) in found.iter_mut().enumerate() {
            *result = read_slot(&mut flash, &key, slot as u8, slot_size)?;
        }
        let slots = [0, 1].map(|i| match &found[i] {
            Ok(c) => SlotState::Valid {
                generation: c.generation,
                rollback: c.rollback,
            },
            Err(e) => SlotState::Invalid(*e),
        });
        let [a, b] = found;
        let current = match (a, b) {
            (Ok(a), Ok(b)) => Some(if b.generation > a.generation { b } else { a }),
            (Ok(c), Err(_)) | (Err(_), Ok(c)) => Some(c),
            (Err(a), Err(b)) if a != RecordError::Blank && b != RecordError::Blank => {
                return Err(StoreError::Unreadable { a, b });
            }
            (Err(_), Err(_)) => None,
        };
        let mut value = counter.read()?;
        let mut caught_up = false;
        if let Some(c) = &current {
            if c.rollback < value {
                return Err(StoreError::RolledBack {
                    generation: c.generation,
                    rollback: c.rollback,
                    counter: value,
                });
            }
            if c.rollback > value {
                counter.advance_to(c.rollback)?;
                value = c.rollback;
                caught_up = true;
            }
        }
        let report = OpenReport {
            slots,
            current: current.as_ref().map(|c| (c.slot, c.generation, c.rollback)),
            payload_len: current.as_ref().map_or(0, |c| c.payload.len()),
            counter: value,
            counter_caught_up: caught_up,
            erased_after_use: current.is_none() && value > 0,
            rollback_protected: counter.protects_against_rollback(),
        };
        let floor = current.as_ref().map_or(value, |c| c.rollback.max(value));
        Ok(Store {
            flash,
            counter,
            rng,
            key,
            slot_size,
            current,
            floor,
            report,
            last_error: None,
        })
    }

    /// What open found.
    pub fn report(&self) -> &OpenReport {
        &self.report
    }

    /// The committed payload; `None` when nothing was committed yet.
    pub fn payload(&self) -> Option<&[u8]> {
        self.current.as_ref().map(|c| c.payload.as_slice())
    }

    /// The current generation (0 when nothing was committed yet).
    pub fn generation(&self) -> u64 {
        self.current.as_ref().map_or(0, |c| c.generation)
    }

    /// The current record's rollback value (0 when nothing was committed).
    pub fn rollback(&self) -> u64 {
        self.current.as_ref().map_or(0, |c| c.rollback)
    }

    /// Why the last failed operation failed (for the log; the
    /// `payment_app::Storage` interface has no room for it).
    pub fn last_error(&self) -> Option<StoreError> {
        self.last_error
    }

    /// The flash (for tests that tamper with it).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Takes the store apart (tests reboot with the same flash).
    pub fn into_parts(self) -> (F, C) {
        (self.flash, self.counter)
    }

    /// Makes `payload` the committed state: seals it as the next generation
    /// into the other slot, reads it back, then advances the counter. On
    /// any error before the read-back matched, the previous state is still
    /// the committed one, in RAM and on flash.
    pub fn commit(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        let result = self.try_commit(payload);
        self.last_error = result.err();
        result
    }

    fn try_commit(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(StoreError::PayloadTooLarge { len: payload.len() });
        }
        let generation = self
            .generation()
            .checked_add(1)
            .ok_or(StoreError::Exhausted)?;
        let rollback = self.floor.checked_add(1).ok_or(StoreError::Exhausted)?;
        let slot = (generation % 2) as u8;
        let mut nonce = [0u8; 12];
        self.rng.fill_bytes(&mut nonce);
        let header = Header {
            slot,
            sealed_len: ROLLBACK_LEN + payload.len(),
            generation,
            nonce,
        };
        let unit = self.flash.write_unit();
        let record = self
            .key
            .seal(&header, rollback, payload, unit)
            .ok_or(StoreError::PayloadTooLarge { len: payload.len() })?;
        if record.len() > self.slot_size {
            return Err(StoreError::PayloadTooLarge { len: payload.len() });
        }
        let base = usize::from(slot) * self.slot_size;
        self.flash.erase_block(base)?;
        self.flash.program(base, &record)?;
        let mut back = Zeroizing::new(vec![0u8; record.len()]);
        self.flash.read(base, &mut back)?;
        if back.as_slice() != record.as_slice() {
            return Err(StoreError::VerifyFailed { slot });
        }
        // Committed: this is now the newest valid record on flash.
        self.current = Some(Current {
            slot,
            generation,
            rollback,
            payload: Zeroizing::new(payload.to_vec()),
        });
        self.floor = rollback;
        self.counter
            .advance_to(rollback)
            .map_err(|error| StoreError::CounterBehind { rollback, error })
    }
}

/// Reads and opens one slot; `Err(RecordError)` for a slot without a usable
/// record, `Err(StoreError)` (outer) only when the flash itself fails.
#[allow(clippy::type_complexity)]
fn read_slot<F: Flash>(
    flash: &mut F,
    key: &SealingKey,
    slot: u8,
    slot_size: usize,
) -> Result<Result<Current, RecordError>, StoreError> {
    let base = usize::from(slot) * slot_size;
    let mut head = [0u8; HEADER_LEN];
    flash.read(base, &mut head)?;
    let header = match Header::parse(&head, slot, slot_size) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let mut sealed = Zeroizing::new(vec![0u8; header.sealed_len + TAG_LEN]);
    flash.read(base + HEADER_LEN, &mut sealed)?;
    Ok(key.open(&header, &sealed).map(|opened| Current {
        slot,
        generation: opened.header.generation,
        rollback: opened.rollback,
        payload: opened.payload,
    }))
}
