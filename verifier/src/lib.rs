//! Checks mVMM payment authorizations, enrollment records and attestations on a payment backend.
//!
//! A token is a CWT (RFC 8392): a tagged COSE_Sign1 (tag 18, RFC 9052) with
//! protected header `alg = ES256` and `kid = credential id`, an empty
//! external AAD, and as payload the deterministic CBOR claims map of
//! [`AuthorizationClaims`] (claim keys in [`protocol::signed::claim`]). Any
//! COSE library can check the signature and any CBOR library can read the
//! claims; this crate also checks them against what the backend expects.
//!
//! - [`attestation`]: the EAT and its key certificate.
//! - [`measurements`]: the expected-measurements file.
//! - [`server`]: the JSON-over-HTTP backend service (`mvmm-verify serve`).
//!
//! The formats are described in docs/tokens.md, the service in
//! docs/verifier-service.md.

pub mod attestation;
pub mod measurements;
pub mod python_example;
pub mod server;

use std::fmt;

use coset::{CoseSign1, TaggedCborSerializable, iana};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use protocol::signed::{AuthorizationClaims, ClaimsError, claim, enrollment_statement};
use protocol::{CredentialId, Currency, EnrollmentRecord, MAX_TOKEN_LEN, Nonce};

pub use attestation::{AttestError, verify_attestation};
pub use measurements::ExpectedMeasurements;

/// What the backend expects a token to say.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub nonce: Nonce,
    pub amount_minor: u64,
    pub currency: Currency,
    pub merchant: &'a str,
    /// The highest counter already seen for this credential (0 if none).
    pub last_counter: u64,
    /// When set, the token must come from this credential.
    pub credential: Option<CredentialId>,
}

/// Why a token (or record) was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Not a tagged COSE_Sign1 with ES256; says what is wrong.
    Malformed(&'static str),
    /// The signature verified but the payload is not the claims map (a
    /// missing or unknown claim, a wrong type, non-deterministic CBOR).
    Claims(ClaimsError),
    /// The signature does not verify against the enrolled key.
    BadSignature,
    /// Claims differ from what was expected.
    Mismatch(Vec<Mismatch>),
    /// The counter is not higher than the last one seen: a replay.
    StaleCounter { last: u64, got: u64 },
}

/// One claim that differs from the expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub got: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Malformed(what) => write!(f, "malformed token: {what}"),
            VerifyError::Claims(e) => write!(f, "malformed token claims: {}", claims_error(e)),
            VerifyError::BadSignature => {
                f.write_str("signature does not verify with the enrolled key")
            }
            VerifyError::Mismatch(list) => {
                for (i, m) in list.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(
                        f,
                        "{sep}{} mismatch: expected {}, token has {}",
                        m.field, m.expected, m.got
                    )?;
                }
                Ok(())
            }
            VerifyError::StaleCounter { last, got } => {
                write!(
                    f,
                    "counter {got} is not higher than the last seen {last} (replay?)"
                )
            }
        }
    }
}

impl std::error::Error for VerifyError {}

/// A claims error with the claim's name.
pub(crate) fn claims_error(error: &ClaimsError) -> String {
    let name = |key: &i64| {
        let token = claim::name(*key);
        if token == "unknown" {
            protocol::eat::claim::name(*key)
        } else {
            token
        }
    };
    match error {
        ClaimsError::Missing(key) => format!("claim {key} ({}) missing", name(key)),
        ClaimsError::Unknown(key) => format!("unknown claim {key} (unknown claims are refused)"),
        ClaimsError::Invalid(key) => format!("claim {key} ({}) has an invalid value", name(key)),
        other => other.to_string(),
    }
}

/// Parses a tagged COSE_Sign1 (tag 18) and checks its header: ES256 in the
/// protected bucket, no critical parameters, no algorithm elsewhere.
pub(crate) fn parse_sign1(bytes: &[u8], max_len: usize) -> Result<CoseSign1, &'static str> {
    if bytes.len() > max_len {
        return Err("too long");
    }
    match bytes {
        [0xd2, ..] => {}
        [0x84, ..] => return Err("untagged: a COSE_Sign1 must carry CBOR tag 18"),
        [0xc0..=0xdb, ..] => return Err("tagged, but not with tag 18 (COSE_Sign1)"),
        [] => return Err("empty"),
        _ => return Err("not a COSE_Sign1"),
    }
    let sign1 = CoseSign1::from_tagged_slice(bytes).map_err(|_| "not a COSE_Sign1")?;
    let es256 = coset::Algorithm::Assigned(iana::Algorithm::ES256);
    if sign1.protected.header.alg.as_ref() != Some(&es256) {
        return Err("algorithm is not ES256");
    }
    if sign1.unprotected.alg.is_some() {
        return Err("algorithm in the unprotected header");
    }
    if !sign1.protected.header.crit.is_empty() {
        return Err("critical header parameters are not supported");
    }
    Ok(sign1)
}

/// Checks `sign1`'s ES256 signature (empty external AAD) with `key`.
pub(crate) fn check_signature(sign1: &CoseSign1, key: &VerifyingKey) -> Result<(), ()> {
    sign1.verify_signature(b"", |signature, data| {
        let signature = Signature::from_slice(signature).map_err(|_| ())?;
        key.verify(data, &signature).map_err(|_| ())
    })
}

/// Verifies the signature of `token` with `key`, then every claim against
/// `expected`. Returns the claims on success.
pub fn verify_token(
    token: &[u8],
    key: &VerifyingKey,
    expected: &Expected<'_>,
) -> Result<AuthorizationClaims, VerifyError> {
    let claims = verify_token_signature(token, key)?;
    check_claims(claims, expected)
}

/// The credential id a token names in its `kid`, before anything is
/// verified (to find the key to verify it with).
pub fn token_key_id(token: &[u8]) -> Result<CredentialId, VerifyError> {
    let sign1 = parse_sign1(token, MAX_TOKEN_LEN).map_err(VerifyError::Malformed)?;
    sign1
        .protected
        .header
        .key_id
        .as_slice()
        .try_into()
        .map_err(|_| VerifyError::Malformed("kid is not a 16-byte credential id"))
}

/// Verifies the envelope and signature of `token` with `key` and decodes
/// its claims, without judging them.
pub fn verify_token_signature(
    token: &[u8],
    key: &VerifyingKey,
) -> Result<AuthorizationClaims, VerifyError> {
    let sign1 = parse_sign1(token, MAX_TOKEN_LEN).map_err(VerifyError::Malformed)?;
    check_signature(&sign1, key).map_err(|()| VerifyError::BadSignature)?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or(VerifyError::Malformed("no payload"))?;
    let claims = AuthorizationClaims::parse(payload).map_err(VerifyError::Claims)?;
    if sign1.protected.header.key_id != claims.credential {
        return Err(VerifyError::Malformed(
            "kid differs from the claimed credential",
        ));
    }
    Ok(claims)
}

/// Compares verified claims with `expected`: every mismatched field, then
/// the counter.
pub fn check_claims(
    claims: AuthorizationClaims,
    expected: &Expected<'_>,
) -> Result<AuthorizationClaims, VerifyError> {
    let mut mismatches = Vec::new();
    let mut check = |field, expected: String, got: String| {
        if expected != got {
            mismatches.push(Mismatch {
                field,
                expected,
                got,
            });
        }
    };
    if let Some(credential) = expected.credential {
        check(
            "credential",
            hex::encode(credential),
            hex::encode(claims.credential),
        );
    }
    check(
        "nonce",
        hex::encode(expected.nonce),
        hex::encode(claims.nonce),
    );
    check(
        "amount",
        expected.amount_minor.to_string(),
        claims.amount_minor.to_string(),
    );
    check(
        "currency",
        expected.currency.code().to_string(),
        String::from_utf8_lossy(&claims.currency.0).into_owned(),
    );
    check(
        "merchant",
        format!("{:?}", expected.merchant),
        format!("{:?}", claims.merchant.as_str()),
    );
    if !mismatches.is_empty() {
        return Err(VerifyError::Mismatch(mismatches));
    }
    if claims.counter <= expected.last_counter {
        return Err(VerifyError::StaleCounter {
            last: expected.last_counter,
            got: claims.counter,
        });
    }
    Ok(claims)
}

/// Checks an enrollment record against the device key the issuer trusts and
/// returns the credential's public key.
pub fn verify_enrollment(
    device: &VerifyingKey,
    record: &EnrollmentRecord,
) -> Result<VerifyingKey, VerifyError> {
    let statement = enrollment_statement(&record.credential, &record.label, &record.public_key)
        .ok_or(VerifyError::Malformed("enrollment record too large"))?;
    verify_raw(device, &statement, record.signature.as_slice())?;
    VerifyingKey::from_sec1_bytes(record.public_key.as_slice())
        .map_err(|_| VerifyError::Malformed("credential public key is not a P-256 point"))
}

fn verify_raw(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
    let signature = Signature::from_slice(signature).map_err(|_| VerifyError::BadSignature)?;
    key.verify(message, &signature)
        .map_err(|_| VerifyError::BadSignature)
}

/// Reads a P-256 public key from a key file: either hex of the SEC1 point
/// (uncompressed `04…` or compressed `02…`/`03…`, whitespace ignored) or a
/// PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, &'static str> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return VerifyingKey::from_public_key_pem(text).map_err(|_| "not a P-256 PEM public key");
    }
    let hex_text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = hex::decode(hex_text).map_err(|_| "neither PEM nor hex")?;
    VerifyingKey::from_sec1_bytes(&bytes).map_err(|_| "hex is not a SEC1 P-256 point")
}

/// Reads a token or attestation file: raw CBOR (first byte `0xd2`, tag 18;
/// an untagged `0x84` is read too, and refused by the verification) or
/// base64 (standard or URL-safe, padding optional, whitespace ignored).
pub fn parse_token(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    if matches!(bytes.first(), Some(0x84 | 0xd2)) {
        return Ok(bytes.to_vec());
    }
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    STANDARD_NO_PAD
        .decode(&text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(&text))
        .map_err(|_| "token is neither CBOR nor base64")
}
