//! One sealed record: its on-flash layout, sealing and opening.
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `mVMMsto1` |
//! | 8 | 2 | format version, 1 (LE) |
//! | 10 | 1 | slot the record was written for (0 = A, 1 = B) |
//! | 11 | 1 | reserved, 0 |
//! | 12 | 4 | sealed length `L` (LE): 8 + payload length |
//! | 16 | 8 | generation (LE), at least 1, `generation % 2 == slot` |
//! | 24 | 12 | AES-GCM nonce (random) |
//! | 36 | 4 | reserved, 0 |
//! | 40 | `L` | ciphertext of rollback value (u64 LE) then payload |
//! | 40 + `L` | 16 | GCM tag |
//!
//! The 40-byte header is the AAD, so the tag binds the slot, the generation
//! and the length as well as the contents. The record is padded with `0xff`
//! (unprogrammed) to the flash's write unit.

use aes_gcm::aead::{AeadInOut, KeyInit, Tag};
use aes_gcm::{Aes256Gcm, Nonce};
use alloc::vec::Vec;
use core::fmt;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// First bytes of every record.
pub const MAGIC: [u8; 8] = *b"mVMMsto1";
/// The only format version this code reads and writes.
pub const VERSION: u16 = 1;
/// Bytes of the header (the AAD).
pub const HEADER_LEN: usize = 40;
/// Bytes of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the sealed rollback value in front of the payload.
pub const ROLLBACK_LEN: usize = 8;
/// Largest payload a record carries.
pub const MAX_PAYLOAD: usize = 8 * 1024;
/// Largest sealed length (`L`).
pub const MAX_SEALED: usize = ROLLBACK_LEN + MAX_PAYLOAD;

/// HKDF-SHA256 salt and info of the sealing key (see docs/storage.md).
pub const KDF_SALT: &[u8] = b"mVMM secure-store salt v1";
pub const KDF_INFO: &[u8] = b"mVMM secure-store record sealing key v1";

/// Why a slot does not hold a usable record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// The header is all `0xff`: nothing was ever written here since the
    /// last erase.
    Blank,
    /// The first eight bytes are not [`MAGIC`].
    BadMagic,
    /// A format version this code does not know.
    UnsupportedVersion { version: u16 },
    /// Reserved header bytes are not zero.
    BadHeader,
    /// The record says it belongs to the other slot.
    WrongSlot { found: u8, slot: u8 },
    /// Generation 0, or a generation whose parity is not the slot's.
    WrongGeneration { generation: u64, slot: u8 },
    /// The sealed length is too short, too long, or runs past the slot.
    Truncated { sealed_len: usize },
    /// The tag does not verify: a torn write, tampering, or another key
    /// (another secure-os image or device).
    BadTag,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecordError::Blank => write!(f, "blank"),
            RecordError::BadMagic => write!(f, "bad magic"),
            RecordError::UnsupportedVersion { version } => {
                write!(f, "unsupported format version {version}")
            }
            RecordError::BadHeader => write!(f, "reserved header bytes are not zero"),
            RecordError::WrongSlot { found, slot } => {
                write!(f, "written for slot {found}, found in slot {slot}")
            }
            RecordError::WrongGeneration { generation, slot } => {
                write!(f, "generation {generation} does not belong in slot {slot}")
            }
            RecordError::Truncated { sealed_len } => {
                write!(
                    f,
                    "sealed length {sealed_len} is truncated or out of bounds"
                )
            }
            RecordError::BadTag => write!(f, "bad tag (torn write, tampering or another key)"),
        }
    }
}

/// The parsed 40-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub slot: u8,
    pub sealed_len: usize,
    pub generation: u64,
    pub nonce: [u8; 12],
}

impl Header {
    /// The header's bytes (also the record's AAD).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..10].copy_from_slice(&VERSION.to_le_bytes());
        h[10] = self.slot;
        // Lengths are bounded by MAX_SEALED, far below u32::MAX.
        h[12..16].copy_from_slice(&(self.sealed_len as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.generation.to_le_bytes());
        h[24..36].copy_from_slice(&self.nonce);
        h
    }

    /// Parses and checks a header read from slot `slot` of a slot of
    /// `slot_size` bytes.
    pub fn parse(h: &[u8; HEADER_LEN], slot: u8, slot_size: usize) -> Result<Header, RecordError> {
        if h.iter().all(|&b| b == 0xff) {
            return Err(RecordError::Blank);
        }
        if h[0..8] != MAGIC {
            return Err(RecordError::BadMagic);
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != VERSION {
            return Err(RecordError::UnsupportedVersion { version });
        }
        if h[11] != 0 || h[36..40] != [0; 4] {
            return Err(RecordError::BadHeader);
        }
        if h[10] != slot {
            return Err(RecordError::WrongSlot { found: h[10], slot });
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&h[16..24]);
        let generation = u64::from_le_bytes(word);
        if generation == 0 || generation % 2 != u64::from(slot) {
            return Err(RecordError::WrongGeneration { generation, slot });
        }
        let sealed_len = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize;
        if !(ROLLBACK_LEN..=MAX_SEALED).contains(&sealed_len)
            || HEADER_LEN + sealed_len + TAG_LEN > slot_size
        {
            return Err(RecordError::Truncated { sealed_len });
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&h[24..36]);
        Ok(Header {
            slot,
            sealed_len,
            generation,
            nonce,
        })
    }

    /// Bytes of the whole record (header, sealed data, tag), unpadded.
    pub fn record_len(&self) -> usize {
        HEADER_LEN + self.sealed_len + TAG_LEN
    }
}

/// What an opened record holds.
pub struct Opened {
    pub header: Header,
    pub rollback: u64,
    /// The payload, wiped from RAM when dropped.
    pub payload: Zeroizing<Vec<u8>>,
}

/// The AES-256-GCM key every record is sealed under.
pub struct SealingKey {
    cipher: Aes256Gcm,
}

impl SealingKey {
    /// HKDF-SHA256 of the storage root secret (the secure VM's own secret;
    /// see docs/storage.md). The derived key bytes are wiped; the cipher's
    /// key schedule is wiped when this is dropped.
    pub fn derive(storage_root_secret: &[u8; 32]) -> SealingKey {
        let kdf = Hkdf::<Sha256>::new(Some(KDF_SALT), storage_root_secret);
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's output limit.
        let _ = kdf.expand(KDF_INFO, key.as_mut());
        let cipher = Aes256Gcm::new(&(*key).into());
        SealingKey { cipher }
    }

    /// The record for `payload`, padded with `0xff` to a multiple of `unit`.
    pub fn seal(
        &self,
        header: &Header,
        rollback: u64,
        payload: &[u8],
        unit: usize,
    ) -> Option<Zeroizing<Vec<u8>>> {
        if payload.len() > MAX_PAYLOAD || header.sealed_len != ROLLBACK_LEN + payload.len() {
            return None;
        }
        let aad = header.encode();
        let mut record = Zeroizing::new(Vec::with_capacity(header.record_len() + unit));
        record.extend_from_slice(&aad);
        record.extend_from_slice(&rollback.to_le_bytes());
        record.extend_from_slice(payload);
        let body = &mut record[HEADER_LEN..];
        let tag = self
            .cipher
            .encrypt_inout_detached(&Nonce::from(header.nonce), &aad, body.into())
            .ok()?;
        record.extend_from_slice(&tag);
        while !record.len().is_multiple_of(unit.max(1)) {
            record.push(0xff);
        }
        Some(record)
    }

    /// Authenticates and decrypts `sealed` (ciphertext and tag, exactly
    /// `header.sealed_len + TAG_LEN` bytes).
    pub fn open(&self, header: &Header, sealed: &[u8]) -> Result<Opened, RecordError> {
        if sealed.len() != header.sealed_len + TAG_LEN {
            return Err(RecordError::Truncated {
                sealed_len: header.sealed_len,
            });
        }
        let (body, tag) = sealed.split_at(header.sealed_len);
        let tag = Tag::<Aes256Gcm>::try_from(tag).map_err(|_| RecordError::Truncated {
            sealed_len: header.sealed_len,
        })?;
        let mut plain = Zeroizing::new(body.to_vec());
        if self
            .cipher
            .decrypt_inout_detached(
                &Nonce::from(header.nonce),
                &header.encode(),
                plain.as_mut_slice().into(),
                &tag,
            )
            .is_err()
        {
            plain.zeroize();
            return Err(RecordError::BadTag);
        }
        let mut word = [0u8; ROLLBACK_LEN];
        word.copy_from_slice(&plain[..ROLLBACK_LEN]);
        let payload = Zeroizing::new(plain[ROLLBACK_LEN..].to_vec());
        Ok(Opened {
            header: *header,
            rollback: u64::from_le_bytes(word),
            payload,
        })
    }
}
