//! The exact bytes the device key and the credential keys sign.
//!
//! Device-key statements are `context || for each part: u16 BE length || part`,
//! with a distinct context string per purpose, so a signature made for one
//! purpose can never be replayed as another.
//!
//! The authorization token's payload is a CWT claims set (RFC 8392), encoded
//! in CBOR's core deterministic form: [`AuthorizationClaims`], with the claim
//! keys in [`claim`]. Attestation evidence lives in [`crate::eat`].

pub mod approval;

pub use approval::{ApprovalText, ApprovalView, approval_text};

use core::fmt;

use heapless::Vec;

use crate::cbor::{CborError, Entries, Reader, Writer};
use crate::message::{
    CredentialId, CurrencyCode, MAX_MERCHANT_LEN, Merchant, Nonce, PublicKeyBytes,
};

/// Context of the session handshake signature.
pub const SESSION_CONTEXT: &[u8] = b"mvmm session v1";
/// Context of the enrollment record signature.
pub const ENROLLMENT_CONTEXT: &[u8] = b"mvmm enrollment v1";
/// Largest encoded [`AuthorizationClaims`] (the largest possible is 187 bytes).
pub const MAX_CLAIMS_LEN: usize = 192;

/// Largest statement any of the builders below produces.
pub const MAX_STATEMENT_LEN: usize = 256;

/// A statement ready to be signed.
pub type Statement = Vec<u8, MAX_STATEMENT_LEN>;

/// Joins `context` and length-prefixed `parts`; `None` when it would not fit.
pub fn statement(context: &[u8], parts: &[&[u8]]) -> Option<Statement> {
    let mut out = Statement::new();
    out.extend_from_slice(context).ok()?;
    for part in parts {
        let len = u16::try_from(part.len()).ok()?;
        out.extend_from_slice(&len.to_be_bytes()).ok()?;
        out.extend_from_slice(part).ok()?;
    }
    Some(out)
}

/// What the device key signs when it enrolls a credential.
pub fn enrollment_statement(
    credential: &CredentialId,
    label: &str,
    public_key: &PublicKeyBytes,
) -> Option<Statement> {
    statement(
        ENROLLMENT_CONTEXT,
        &[credential, label.as_bytes(), public_key.as_slice()],
    )
}

/// The claim keys of an authorization token (CWT claims set, RFC 8392).
///
/// `cti` is registered (RFC 8392 §3.1.7); the payment claims use keys of the
/// CWT private-use range (below -65536). A token carries exactly these eight
/// claims: a missing one and any other one are refused. There is no `iat`:
/// the secure VM has no wall clock it can vouch for (see docs/tokens.md).
pub mod claim {
    /// `cti` (7): the counter as 8 bytes, big-endian: unique per device.
    pub const CTI: i64 = 7;
    /// Credential id, bstr of 16 bytes (also the COSE `kid`).
    pub const CREDENTIAL: i64 = -65537;
    /// Amount in minor units of the currency, uint.
    pub const AMOUNT_MINOR: i64 = -65538;
    /// ISO 4217 alphabetic code, tstr of 3 upper-case letters.
    pub const CURRENCY: i64 = -65539;
    /// Merchant name as shown, tstr of at most 32 bytes.
    pub const MERCHANT: i64 = -65540;
    /// SHA-256 of the exact UTF-8 text the trusted display showed, bstr of 32 bytes.
    pub const DISPLAYED_TEXT_SHA256: i64 = -65541;
    /// The relying party's nonce from the request, bstr of 32 bytes.
    pub const NONCE: i64 = -65542;
    /// The device's transaction counter, uint, strictly increasing.
    pub const COUNTER: i64 = -65543;

    /// Every claim of a token, in canonical (encoding) order.
    pub const ALL: [i64; 8] = [
        CTI,
        CREDENTIAL,
        AMOUNT_MINOR,
        CURRENCY,
        MERCHANT,
        DISPLAYED_TEXT_SHA256,
        NONCE,
        COUNTER,
    ];

    /// A short name for messages.
    pub fn name(key: i64) -> &'static str {
        match key {
            CTI => "cti",
            CREDENTIAL => "credential",
            AMOUNT_MINOR => "amount",
            CURRENCY => "currency",
            MERCHANT => "merchant",
            DISPLAYED_TEXT_SHA256 => "displayed text hash",
            NONCE => "nonce",
            COUNTER => "counter",
            _ => "unknown",
        }
    }
}

/// Why a claims payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimsError {
    /// Longer than the largest payload that can be valid.
    TooLong,
    /// Not one deterministic CBOR map with integer keys (or bytes after it).
    Cbor(CborError),
    /// A claim that must be present is not.
    Missing(i64),
    /// A claim this format does not define.
    Unknown(i64),
    /// A claim's value has the wrong type, length or range.
    Invalid(i64),
}

impl From<CborError> for ClaimsError {
    fn from(error: CborError) -> Self {
        ClaimsError::Cbor(error)
    }
}

impl fmt::Display for ClaimsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimsError::TooLong => f.write_str("claims too long"),
            ClaimsError::Cbor(e) => write!(f, "claims are not deterministic CBOR ({e:?})"),
            ClaimsError::Missing(key) => write!(f, "claim {key} missing"),
            ClaimsError::Unknown(key) => write!(f, "unknown claim {key}"),
            ClaimsError::Invalid(key) => write!(f, "claim {key} has an invalid value"),
        }
    }
}

/// The payload of an authorization token: everything the user approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationClaims {
    pub credential: CredentialId,
    pub amount_minor: u64,
    pub currency: CurrencyCode,
    pub merchant: Merchant,
    /// SHA-256 of the exact UTF-8 text the trusted display showed.
    pub displayed_text_sha256: [u8; 32],
    /// The relying party's nonce from the request.
    pub nonce: Nonce,
    /// Strictly increasing per device; never reused, even across reboots.
    pub counter: u64,
}

impl AuthorizationClaims {
    /// The deterministic CBOR claims map that goes into the COSE_Sign1
    /// payload (keys in canonical order: `cti`, then -65537 down to -65543).
    pub fn encode(&self) -> Option<Vec<u8, MAX_CLAIMS_LEN>> {
        let mut buf = [0u8; MAX_CLAIMS_LEN];
        let mut w = Writer::new(&mut buf);
        self.write(&mut w).ok()?;
        Vec::from_slice(w.finish()).ok()
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), CborError> {
        let currency = core::str::from_utf8(&self.currency.0).map_err(|_| CborError::OutOfRange)?;
        w.map(claim::ALL.len())?;
        w.int(claim::CTI)?;
        w.bytes(&self.counter.to_be_bytes())?;
        w.int(claim::CREDENTIAL)?;
        w.bytes(&self.credential)?;
        w.int(claim::AMOUNT_MINOR)?;
        w.uint(self.amount_minor)?;
        w.int(claim::CURRENCY)?;
        w.text(currency)?;
        w.int(claim::MERCHANT)?;
        w.text(&self.merchant)?;
        w.int(claim::DISPLAYED_TEXT_SHA256)?;
        w.bytes(&self.displayed_text_sha256)?;
        w.int(claim::NONCE)?;
        w.bytes(&self.nonce)?;
        w.int(claim::COUNTER)?;
        w.uint(self.counter)
    }

    /// Decodes untrusted payload bytes; `None` for anything [`Self::parse`]
    /// refuses.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Self::parse(bytes).ok()
    }

    /// Decodes untrusted payload bytes, saying what is wrong. Accepts only
    /// the exact encoding [`Self::encode`] produces: deterministic CBOR, every
    /// claim of [`claim::ALL`] and no other, `cti` equal to the counter.
    pub fn parse(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > MAX_CLAIMS_LEN {
            return Err(ClaimsError::TooLong);
        }
        let mut reader = Reader::new(bytes);
        let entries = Entries::read(&mut reader)?;
        reader.end()?;
        if let Some(unknown) = entries.keys().find(|k| !claim::ALL.contains(k)) {
            return Err(ClaimsError::Unknown(unknown));
        }
        let claims = AuthorizationClaims {
            credential: value(&entries, claim::CREDENTIAL, Reader::bytes_exact)?,
            amount_minor: value(&entries, claim::AMOUNT_MINOR, Reader::uint)?,
            currency: value(&entries, claim::CURRENCY, |r| {
                let code: [u8; 3] = r
                    .text()?
                    .as_bytes()
                    .try_into()
                    .map_err(|_| CborError::OutOfRange)?;
                if code.iter().all(u8::is_ascii_uppercase) {
                    Ok(CurrencyCode(code))
                } else {
                    Err(CborError::OutOfRange)
                }
            })?,
            merchant: value(&entries, claim::MERCHANT, |r| {
                Merchant::try_from(r.text()?).map_err(|_| CborError::OutOfRange)
            })?,
            displayed_text_sha256: value(
                &entries,
                claim::DISPLAYED_TEXT_SHA256,
                Reader::bytes_exact,
            )?,
            nonce: value(&entries, claim::NONCE, Reader::bytes_exact)?,
            counter: value(&entries, claim::COUNTER, Reader::uint)?,
        };
        let cti: [u8; 8] = value(&entries, claim::CTI, Reader::bytes_exact)?;
        if u64::from_be_bytes(cti) != claims.counter {
            return Err(ClaimsError::Invalid(claim::CTI));
        }
        Ok(claims)
    }
}

const _: () = assert!(
    MAX_MERCHANT_LEN <= 32,
    "MAX_CLAIMS_LEN assumes merchants of at most 32 bytes"
);

/// Reads the value under `key` with `read`, which must consume all of it.
pub(crate) fn value<'a, T>(
    entries: &Entries<'a>,
    key: i64,
    read: impl FnOnce(&mut Reader<'a>) -> Result<T, CborError>,
) -> Result<T, ClaimsError> {
    let mut reader = entries.get(key).ok_or(ClaimsError::Missing(key))?;
    let out = read(&mut reader).map_err(|_| ClaimsError::Invalid(key))?;
    reader.end().map_err(|_| ClaimsError::Invalid(key))?;
    Ok(out)
}
