//! A replay-protected monotonic counter that mvmm keeps for the secure VM,
//! shaped after eMMC's RPMB (replay-protected memory block): every frame is
//! authenticated with HMAC-SHA256 under a key both ends hold, reads carry
//! the reader's nonce, and writes carry the write counter, so a frame can
//! neither be forged nor replayed.
//!
//! The secure VM keeps its storage's *rollback value* here: its sealed
//! record stores the value it committed, and a record older than the value
//! mvmm holds is a restored copy. mvmm persists the counter on a device of
//! its own (a virtio-blk disk no VM can reach), not on the secure VM's
//! flash, so restoring the secure VM's storage does not restore it.
//!
//! # Keys
//! `key = HKDF-SHA256(ikm = CDI_Seal, salt = none, info = "mvmm rpmb key v1")`:
//! the secure VM derives it from the CDI it is handed, mvmm from the CDI it
//! derived; an image signed by another authority has another key and its
//! frames are refused. mvmm's own record on disk is authenticated with
//! `HKDF-SHA256(ikm = UDS, info = "mvmm rpmb store v1")`.
//!
//! # Frame (128 bytes, little-endian)
//! ```text
//! 0   u16 kind: 1 read, 2 advance; a response has 0x100 added
//! 2   u16 result (responses): see `Outcome`
//! 4   u32 reserved (0)
//! 8   u64 write counter (advance: the one the writer last read)
//! 16  u64 value (advance: the new value, never lower)
//! 24  16-byte nonce (read: chosen by the reader, echoed)
//! 40  24 bytes reserved (0)
//! 64  HMAC-SHA256(key, bytes 0..64)
//! 96  32 bytes reserved (0)
//! ```

use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Bytes of a frame.
pub const FRAME_LEN: usize = 128;
/// Bytes of mvmm's record on its disk.
pub const RECORD_LEN: usize = 64;
const RECORD_MAGIC: [u8; 8] = *b"MVMMRPB1";
const READ: u16 = 1;
const ADVANCE: u16 = 2;
const RESPONSE: u16 = 0x100;

/// A frame's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Outcome {
    Ok = 0,
    /// The request's MAC does not verify.
    BadMac = 1,
    /// An advance named another write counter (a replayed or stale write).
    StaleWriteCounter = 2,
    /// An advance to a lower value.
    NotMonotonic = 3,
    /// mvmm could not persist the counter.
    StorageFailure = 4,
    /// Not a frame.
    Malformed = 5,
}

/// An HMAC key of the protocol (wiped when dropped).
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Drop for Key {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl Key {
    fn derive(ikm: &[u8; 32], info: &[u8]) -> Key {
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit.
        let _ = Hkdf::<Sha256>::new(None, ikm).expand(info, &mut key);
        Key(key)
    }

    /// The frames' key, from the secure VM's sealing CDI.
    pub fn for_frames(cdi_seal: &[u8; 32]) -> Key {
        Key::derive(cdi_seal, b"mvmm rpmb key v1")
    }

    /// mvmm's key for its record on disk, from the device secret.
    pub fn for_record(uds: &[u8; 32]) -> Key {
        Key::derive(uds, b"mvmm rpmb store v1")
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        // HMAC takes keys of any length: this never fails. An all-zero tag
        // would only make the frame fail its check.
        let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(&self.0) else {
            return [0; 32];
        };
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn check(&self, data: &[u8], tag: &[u8]) -> bool {
        let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

/// A decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u16,
    pub result: u16,
    pub write_counter: u64,
    pub value: u64,
    pub nonce: [u8; 16],
}

impl Frame {
    /// A read request with the reader's nonce.
    pub fn read(nonce: [u8; 16]) -> Frame {
        Frame {
            kind: READ,
            result: 0,
            write_counter: 0,
            value: 0,
            nonce,
        }
    }

    /// An advance request: `write_counter` as last read, the new `value`.
    pub fn advance(write_counter: u64, value: u64) -> Frame {
        Frame {
            kind: ADVANCE,
            result: 0,
            write_counter,
            value,
            nonce: [0; 16],
        }
    }

    /// The frame, authenticated with `key`.
    pub fn seal(&self, key: &Key) -> [u8; FRAME_LEN] {
        let mut out = [0u8; FRAME_LEN];
        out[0..2].copy_from_slice(&self.kind.to_le_bytes());
        out[2..4].copy_from_slice(&self.result.to_le_bytes());
        out[8..16].copy_from_slice(&self.write_counter.to_le_bytes());
        out[16..24].copy_from_slice(&self.value.to_le_bytes());
        out[24..40].copy_from_slice(&self.nonce);
        let mac = key.mac(&out[..64]);
        out[64..96].copy_from_slice(&mac);
        out
    }

    /// Reads a frame and checks its MAC; `Err` says why not.
    pub fn open(bytes: &[u8; FRAME_LEN], key: &Key) -> Result<Frame, Outcome> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if bytes[4..8] != [0; 4] || bytes[40..64] != [0; 24] || bytes[96..] != [0; 32] {
            return Err(Outcome::Malformed);
        }
        if !key.check(&bytes[..64], &bytes[64..96]) {
            return Err(Outcome::BadMac);
        }
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&bytes[24..40]);
        Ok(Frame {
            kind: u16::from_le_bytes([bytes[0], bytes[1]]),
            result: u16::from_le_bytes([bytes[2], bytes[3]]),
            write_counter: u64_at(8),
            value: u64_at(16),
            nonce,
        })
    }
}

/// What mvmm holds: the counter and how many writes it has taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub write_counter: u64,
    pub value: u64,
}

impl Counter {
    /// mvmm's record on its disk.
    pub fn encode(&self, key: &Key) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[..8].copy_from_slice(&RECORD_MAGIC);
        out[8..16].copy_from_slice(&self.write_counter.to_le_bytes());
        out[16..24].copy_from_slice(&self.value.to_le_bytes());
        let mac = key.mac(&out[..32]);
        out[32..].copy_from_slice(&mac);
        out
    }

    /// Reads the record: `Ok(None)` for a blank disk (all zero), `Err` for
    /// a record that does not authenticate.
    pub fn decode(bytes: &[u8; RECORD_LEN], key: &Key) -> Result<Option<Counter>, Outcome> {
        if bytes.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        if bytes[..8] != RECORD_MAGIC || bytes[24..32] != [0; 8] {
            return Err(Outcome::Malformed);
        }
        if !key.check(&bytes[..32], &bytes[32..]) {
            return Err(Outcome::BadMac);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        Ok(Some(Counter {
            write_counter: u64_at(8),
            value: u64_at(16),
        }))
    }

    /// Answers a request frame. An accepted advance is handed to `persist`
    /// first and takes effect only when it returns true (otherwise the
    /// answer is [`Outcome::StorageFailure`] and nothing changes).
    pub fn handle(
        &mut self,
        request: &[u8; FRAME_LEN],
        key: &Key,
        persist: impl FnOnce(&Counter) -> bool,
    ) -> [u8; FRAME_LEN] {
        let respond = |kind: u16, outcome: Outcome, counter: &Counter, nonce: [u8; 16]| {
            Frame {
                kind: kind | RESPONSE,
                result: outcome as u16,
                write_counter: counter.write_counter,
                value: counter.value,
                nonce,
            }
            .seal(key)
        };
        let frame = match Frame::open(request, key) {
            Ok(frame) => frame,
            Err(outcome) => {
                // Answered as the request claims to be, so the caller sees
                // why (the response itself is authentic).
                let kind = u16::from_le_bytes([request[0], request[1]]) & 0xff;
                let mut nonce = [0u8; 16];
                nonce.copy_from_slice(&request[24..40]);
                return respond(kind, outcome, self, nonce);
            }
        };
        match frame.kind {
            READ => respond(READ, Outcome::Ok, self, frame.nonce),
            ADVANCE if frame.write_counter != self.write_counter => {
                respond(ADVANCE, Outcome::StaleWriteCounter, self, frame.nonce)
            }
            ADVANCE if frame.value < self.value => {
                respond(ADVANCE, Outcome::NotMonotonic, self, frame.nonce)
            }
            ADVANCE => {
                let next = Counter {
                    write_counter: self.write_counter.saturating_add(1),
                    value: frame.value,
                };
                if !persist(&next) {
                    return respond(ADVANCE, Outcome::StorageFailure, self, frame.nonce);
                }
                *self = next;
                respond(ADVANCE, Outcome::Ok, self, frame.nonce)
            }
            _ => respond(0, Outcome::Malformed, self, frame.nonce),
        }
    }
}

/// What the secure VM concludes from a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    /// The response does not authenticate (not from mvmm, or tampered).
    Forged,
    /// A read's nonce was not echoed (a replayed response).
    Replayed,
    /// mvmm refused the request.
    Refused(u16),
}

/// Checks a response to `request` (as sealed by the caller) and returns
/// the counter mvmm holds.
pub fn check_response(
    request: &Frame,
    response: &[u8; FRAME_LEN],
    key: &Key,
) -> Result<Counter, ResponseError> {
    let frame = Frame::open(response, key).map_err(|_| ResponseError::Forged)?;
    if frame.kind != request.kind | RESPONSE {
        return Err(ResponseError::Forged);
    }
    if frame.nonce != request.nonce {
        return Err(ResponseError::Replayed);
    }
    if frame.result != Outcome::Ok as u16 {
        return Err(ResponseError::Refused(frame.result));
    }
    Ok(Counter {
        write_counter: frame.write_counter,
        value: frame.value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> Key {
        Key::for_frames(&[9; 32])
    }

    #[test]
    fn a_read_returns_the_counter_with_the_readers_nonce() {
        let mut held = Counter {
            write_counter: 3,
            value: 41,
        };
        let before = held;
        let request = Frame::read([7; 16]);
        let response = held.handle(&request.seal(&key()), &key(), |_| panic!("a read writes"));
        assert_eq!(held, before);
        assert_eq!(check_response(&request, &response, &key()), Ok(held));
        // The same response does not answer a read with another nonce.
        let other = Frame::read([8; 16]);
        assert_eq!(
            check_response(&other, &response, &key()),
            Err(ResponseError::Replayed)
        );
    }

    #[test]
    fn an_advance_needs_the_current_write_counter_and_a_higher_value() {
        let mut held = Counter {
            write_counter: 3,
            value: 41,
        };
        let next = Counter {
            write_counter: 4,
            value: 42,
        };
        let advance = Frame::advance(3, 42);
        // A disk that fails: nothing changes, the writer is told.
        let response = held.handle(&advance.seal(&key()), &key(), |_| false);
        assert_eq!(held.value, 41);
        assert_eq!(
            check_response(&advance, &response, &key()),
            Err(ResponseError::Refused(Outcome::StorageFailure as u16))
        );
        let mut written = None;
        let response = held.handle(&advance.seal(&key()), &key(), |c| {
            written = Some(*c);
            true
        });
        assert_eq!(written, Some(next));
        assert_eq!(held, next);
        assert_eq!(check_response(&advance, &response, &key()), Ok(next));
        // Replaying the same advance: stale write counter.
        let response = held.handle(&advance.seal(&key()), &key(), |_| panic!("replay written"));
        assert_eq!(
            check_response(&advance, &response, &key()),
            Err(ResponseError::Refused(Outcome::StaleWriteCounter as u16))
        );
        // Going down.
        let down = Frame::advance(4, 1);
        let response = held.handle(&down.seal(&key()), &key(), |_| panic!("went down"));
        assert_eq!(held, next);
        assert_eq!(
            check_response(&down, &response, &key()),
            Err(ResponseError::Refused(Outcome::NotMonotonic as u16))
        );
    }

    #[test]
    fn frames_under_another_key_are_refused_both_ways() {
        let mut held = Counter::default();
        let stranger = Key::for_frames(&[1; 32]);
        let advance = Frame::advance(0, 5);
        let response = held.handle(&advance.seal(&stranger), &key(), |_| panic!("forged"));
        assert_eq!(held, Counter::default(), "a forged advance changes nothing");
        assert_eq!(
            check_response(&advance, &response, &key()),
            Err(ResponseError::Refused(Outcome::BadMac as u16))
        );
        // A response forged by someone without the key.
        let forged = Frame {
            kind: READ | RESPONSE,
            result: 0,
            write_counter: 0,
            value: 0,
            nonce: [7; 16],
        }
        .seal(&stranger);
        assert_eq!(
            check_response(&Frame::read([7; 16]), &forged, &key()),
            Err(ResponseError::Forged)
        );
    }

    #[test]
    fn the_record_round_trips_and_a_tampered_one_is_refused() {
        let k = Key::for_record(&[2; 32]);
        let c = Counter {
            write_counter: 9,
            value: 77,
        };
        let mut bytes = c.encode(&k);
        assert_eq!(Counter::decode(&bytes, &k), Ok(Some(c)));
        assert_eq!(Counter::decode(&[0; RECORD_LEN], &k), Ok(None));
        bytes[16] ^= 1;
        assert_eq!(Counter::decode(&bytes, &k), Err(Outcome::BadMac));
        bytes[0] = b'X';
        assert_eq!(Counter::decode(&bytes, &k), Err(Outcome::Malformed));
    }

    proptest! {
        #[test]
        fn arbitrary_frames_never_change_the_counter_without_the_key(
            bytes in proptest::collection::vec(any::<u8>(), FRAME_LEN),
        ) {
            let request: [u8; FRAME_LEN] = bytes.try_into().unwrap();
            let mut held = Counter::default();
            let mut written = false;
            let _ = held.handle(&request, &key(), |_| {
                written = true;
                true
            });
            prop_assert!(!written);
            prop_assert_eq!(held, Counter::default());
        }
    }
}
