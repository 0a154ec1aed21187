//! The end-to-end secure session between the Android bridge and the payment app.
//!
//! Sans-IO: every function takes and returns byte buffers, so the same code
//! runs in the `no_std` secure OS and on the host.
//!
//! # Handshake
//! 1. Client: fresh P-256 key `c`; sends `ClientHello = SEC1(c·G)` (65 bytes).
//! 2. Server: fresh P-256 key `s`; computes
//!    `th = SHA-256(SESSION_CONTEXT || c·G || s·G || device public key)` and
//!    sends `ServerHello = SEC1(s·G) || ECDSA-P256-SHA256(device key,
//!    SESSION_CONTEXT || th)` (65 + 64 bytes).
//! 3. Client: checks the signature against the device key it trusts.
//! 4. Both: `HKDF-SHA256(salt = th, ikm = ECDH x-coordinate)`, expanded with
//!    info `"mvmm c2s key"` / `"mvmm c2s iv"` (and `s2c`) into a 32-byte
//!    AES-256-GCM key and a 12-byte IV per direction.
//!
//! # Records
//! `seq (u64 BE) || ciphertext || tag (16)`. The GCM nonce is the direction's
//! IV with `seq` XORed into its last 8 bytes, and the 8-byte header is the
//! associated data, so `seq` is bound twice. The receiver accepts only the
//! next expected `seq`; any rejection leaves the session unchanged.

use aes_gcm::aead::{AeadInOut, KeyInit, Tag};
use aes_gcm::{Aes256Gcm, Nonce as GcmNonce};
use hkdf::Hkdf;
use p256::PublicKey;
use p256::ecdh::EphemeralSecret;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate;
use p256::elliptic_curve::sec1::ToSec1Point;
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroize as _;

use crate::message::{MAX_MESSAGE_LEN, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::signed::SESSION_CONTEXT;

/// Bytes of the client's handshake message.
pub const CLIENT_HELLO_LEN: usize = PUBLIC_KEY_LEN;
/// Bytes of the server's handshake message.
pub const SERVER_HELLO_LEN: usize = PUBLIC_KEY_LEN + SIGNATURE_LEN;
/// Bytes of the record header (the sequence number).
pub const RECORD_HEADER_LEN: usize = 8;
/// Bytes of the AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Largest plaintext in one record.
pub const MAX_PLAINTEXT_LEN: usize = MAX_MESSAGE_LEN;
/// Largest record.
pub const MAX_RECORD_LEN: usize = RECORD_HEADER_LEN + MAX_PLAINTEXT_LEN + TAG_LEN;
/// Smallest record (empty plaintext).
pub const MIN_RECORD_LEN: usize = RECORD_HEADER_LEN + TAG_LEN;

/// Why a handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The message has the wrong length.
    WrongLength,
    /// The peer's ephemeral key is not a valid P-256 point.
    InvalidPublicKey,
    /// The signature does not verify against the trusted device key.
    BadSignature,
}

/// Why a record was rejected. The session is unchanged after any of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Shorter than a header and a tag.
    Truncated,
    /// Longer than [`MAX_RECORD_LEN`] (or the plaintext than [`MAX_PLAINTEXT_LEN`]).
    Oversized,
    /// A sequence number already accepted.
    Replayed,
    /// A sequence number from the future: a record was dropped or reordered.
    OutOfOrder,
    /// Authentication failed: the record was modified or forged.
    Tampered,
    /// The output buffer cannot hold the result.
    BufferTooSmall,
    /// 2^64 - 1 records were sent; open a new session.
    SequenceExhausted,
}

/// One direction's key, IV and next sequence number.
///
/// # Invariants
/// `next_seq` only grows, and only after a record was sealed or accepted.
struct Direction {
    cipher: Aes256Gcm,
    iv: [u8; 12],
    next_seq: u64,
}

impl Direction {
    fn derive(kdf: &Hkdf<Sha256>, info: &[u8]) -> Direction {
        let mut key = [0u8; 32];
        let mut iv = [0u8; 12];
        // 44 bytes is far below HKDF-SHA256's 8160-byte output limit.
        let _ = kdf.expand_multi_info(&[info, b" key"], &mut key);
        let _ = kdf.expand_multi_info(&[info, b" iv"], &mut iv);
        let cipher = Aes256Gcm::new(&key.into());
        key.zeroize();
        Direction {
            cipher,
            iv,
            next_seq: 0,
        }
    }

    fn nonce(&self, seq: u64) -> GcmNonce<aes_gcm::aead::consts::U12> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        nonce.into()
    }
}

/// An established session: seals outgoing and opens incoming records.
pub struct Session {
    send: Direction,
    recv: Direction,
}

impl Session {
    fn new(shared: &[u8], transcript: &[u8; 32], client: bool) -> Session {
        let kdf = Hkdf::<Sha256>::new(Some(transcript), shared);
        let c2s = Direction::derive(&kdf, b"mvmm c2s");
        let s2c = Direction::derive(&kdf, b"mvmm s2c");
        if client {
            Session {
                send: c2s,
                recv: s2c,
            }
        } else {
            Session {
                send: s2c,
                recv: c2s,
            }
        }
    }

    /// Encrypts `plaintext` into `out`, returning the record length.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, RecordError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(RecordError::Oversized);
        }
        let seq = self.send.next_seq;
        if seq == u64::MAX {
            return Err(RecordError::SequenceExhausted);
        }
        let total = MIN_RECORD_LEN + plaintext.len();
        let record = out.get_mut(..total).ok_or(RecordError::BufferTooSmall)?;
        let (header, rest) = record.split_at_mut(RECORD_HEADER_LEN);
        let (body, tag_out) = rest.split_at_mut(plaintext.len());
        header.copy_from_slice(&seq.to_be_bytes());
        body.copy_from_slice(plaintext);
        let tag = self
            .send
            .cipher
            .encrypt_inout_detached(&self.send.nonce(seq), header, body.into())
            .map_err(|_| RecordError::Oversized)?;
        tag_out.copy_from_slice(&tag);
        self.send.next_seq = seq + 1;
        Ok(total)
    }

    /// Authenticates and decrypts `record` into `out`, returning the
    /// plaintext length.
    pub fn open(&mut self, record: &[u8], out: &mut [u8]) -> Result<usize, RecordError> {
        if record.len() > MAX_RECORD_LEN {
            return Err(RecordError::Oversized);
        }
        if record.len() < MIN_RECORD_LEN {
            return Err(RecordError::Truncated);
        }
        let (header, rest) = record.split_at(RECORD_HEADER_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut seq_bytes = [0u8; RECORD_HEADER_LEN];
        seq_bytes.copy_from_slice(header);
        let seq = u64::from_be_bytes(seq_bytes);
        if seq < self.recv.next_seq {
            return Err(RecordError::Replayed);
        }
        if seq > self.recv.next_seq {
            return Err(RecordError::OutOfOrder);
        }
        let plain = out
            .get_mut(..body.len())
            .ok_or(RecordError::BufferTooSmall)?;
        plain.copy_from_slice(body);
        let tag = Tag::<Aes256Gcm>::try_from(tag).map_err(|_| RecordError::Truncated)?;
        if self
            .recv
            .cipher
            .decrypt_inout_detached(&self.recv.nonce(seq), header, plain.into(), &tag)
            .is_err()
        {
            plain.zeroize();
            return Err(RecordError::Tampered);
        }
        self.recv.next_seq = seq.saturating_add(1);
        Ok(body.len())
    }
}

/// The client's half-finished handshake.
pub struct ClientHandshake {
    secret: EphemeralSecret,
    hello: [u8; CLIENT_HELLO_LEN],
    device: VerifyingKey,
}

impl ClientHandshake {
    /// Starts a handshake with the secure VM whose device key is `device`;
    /// send the returned hello to it.
    pub fn start<R: CryptoRng + ?Sized>(
        rng: &mut R,
        device: &VerifyingKey,
    ) -> (ClientHandshake, [u8; CLIENT_HELLO_LEN]) {
        let secret = EphemeralSecret::generate_from_rng(rng);
        let hello = sec1(&secret.public_key());
        let handshake = ClientHandshake {
            secret,
            hello,
            device: *device,
        };
        (handshake, hello)
    }

    /// Checks the server's hello and derives the session keys.
    pub fn finish(self, server_hello: &[u8]) -> Result<Session, HandshakeError> {
        if server_hello.len() != SERVER_HELLO_LEN {
            return Err(HandshakeError::WrongLength);
        }
        let (server_point, signature) = server_hello.split_at(PUBLIC_KEY_LEN);
        let server_public = PublicKey::from_sec1_bytes(server_point)
            .map_err(|_| HandshakeError::InvalidPublicKey)?;
        let signature =
            Signature::from_slice(signature).map_err(|_| HandshakeError::BadSignature)?;
        let transcript = transcript(&self.hello, server_point, &self.device);
        self.device
            .verify(&signed_transcript(&transcript), &signature)
            .map_err(|_| HandshakeError::BadSignature)?;
        let shared = self.secret.diffie_hellman(&server_public);
        Ok(Session::new(shared.raw_secret_bytes(), &transcript, true))
    }
}

/// The secure side's handshake: answers `client_hello` with a hello signed by
/// `device_key` and returns the new session.
pub fn accept<R: CryptoRng + ?Sized>(
    rng: &mut R,
    device_key: &SigningKey,
    client_hello: &[u8],
) -> Result<(Session, [u8; SERVER_HELLO_LEN]), HandshakeError> {
    if client_hello.len() != CLIENT_HELLO_LEN {
        return Err(HandshakeError::WrongLength);
    }
    let client_public =
        PublicKey::from_sec1_bytes(client_hello).map_err(|_| HandshakeError::InvalidPublicKey)?;
    let secret = EphemeralSecret::generate_from_rng(rng);
    let server_point = sec1(&secret.public_key());
    let transcript = transcript(client_hello, &server_point, device_key.verifying_key());
    let signature: Signature = device_key.sign(&signed_transcript(&transcript));
    let mut hello = [0u8; SERVER_HELLO_LEN];
    let (point_out, signature_out) = hello.split_at_mut(PUBLIC_KEY_LEN);
    point_out.copy_from_slice(&server_point);
    signature_out.copy_from_slice(&signature.to_bytes());
    let shared = secret.diffie_hellman(&client_public);
    Ok((
        Session::new(shared.raw_secret_bytes(), &transcript, false),
        hello,
    ))
}

/// The uncompressed SEC1 encoding of a public key.
pub fn sec1(key: &PublicKey) -> [u8; PUBLIC_KEY_LEN] {
    let point = key.to_sec1_point(false);
    let mut out = [0u8; PUBLIC_KEY_LEN];
    out.copy_from_slice(point.as_bytes());
    out
}

fn transcript(client_point: &[u8], server_point: &[u8], device: &VerifyingKey) -> [u8; 32] {
    Sha256::new()
        .chain_update(SESSION_CONTEXT)
        .chain_update(client_point)
        .chain_update(server_point)
        .chain_update(device.to_sec1_point(false).as_bytes())
        .finalize()
        .into()
}

fn signed_transcript(transcript: &[u8; 32]) -> [u8; 47] {
    let mut out = [0u8; 47];
    let (context, hash) = out.split_at_mut(SESSION_CONTEXT.len());
    context.copy_from_slice(SESSION_CONTEXT);
    hash.copy_from_slice(transcript);
    out
}
