//! The secure VM's persistent store: sealed records on raw NOR flash that
//! survive power cuts and refuse rollback.
//!
//! - [`flash`]: the [`Flash`] trait the device driver implements, and
//!   [`SimFlash`], a simulated device that can lose power mid-write.
//! - [`record`]: the on-flash record format, sealed with AES-256-GCM under a
//!   key derived (HKDF-SHA256) from the storage root secret.
//! - [`store`]: A/B slots with a generation counter; the newest valid
//!   generation wins; a commit is verified before it counts.
//! - [`counter`]: the [`RollbackCounter`] kept outside the flash (by mVMM).
//! - [`Store`] is the payment app's `payment_app::Storage` (the whole
//!   `PersistentState` blob is one record).
//!
//! See docs/storage.md for the format, the key derivation, the power-cut
//! argument and the threat model.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod counter;
pub mod flash;
pub mod record;
pub mod store;

pub use counter::{CounterError, NoRollbackProtection, RollbackCounter, TestCounter};
pub use flash::{Flash, FlashError, SimFlash};
pub use record::{MAX_PAYLOAD, RecordError};
pub use store::{OpenReport, SlotState, Store, StoreError, slot_name};

use rand_core::CryptoRng;

impl<F: Flash, C: RollbackCounter, R: CryptoRng> payment_app::Storage for Store<F, C, R> {
    fn load(&mut self, buf: &mut [u8]) -> Result<Option<usize>, payment_app::StorageError> {
        match self.payload() {
            None => Ok(None),
            Some(payload) => {
                let out = buf
                    .get_mut(..payload.len())
                    .ok_or(payment_app::StorageError)?;
                out.copy_from_slice(payload);
                Ok(Some(payload.len()))
            }
        }
    }

    fn store(&mut self, blob: &[u8]) -> Result<(), payment_app::StorageError> {
        self.commit(blob).map_err(|_| payment_app::StorageError)
    }
}
