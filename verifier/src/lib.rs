//! Checks mVMM payment authorizations, enrollment records and attestations on a payment backend.
//!
//! A token is a COSE_Sign1 (untagged, RFC 9052) with protected header
//! `alg = ES256` and `kid = credential id`, an empty external AAD, and as
//! payload the postcard encoding of [`AuthorizationClaims`]. Any COSE library
//! can check the signature; this crate also checks the claims against what
//! the backend expects.

use std::fmt;

use coset::{CborSerializable, CoseSign1, iana};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use protocol::signed::{
    AuthorizationClaims, CLAIMS_VERSION, attestation_statement, enrollment_statement,
};
use protocol::{Attestation, CredentialId, Currency, EnrollmentRecord, Nonce};

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
    /// Not a COSE_Sign1 with ES256 and a claims payload; says what is wrong.
    Malformed(&'static str),
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

/// Verifies the signature of `token` with `key`, then every claim against
/// `expected`. Returns the claims on success.
pub fn verify_token(
    token: &[u8],
    key: &VerifyingKey,
    expected: &Expected<'_>,
) -> Result<AuthorizationClaims, VerifyError> {
    let sign1 =
        CoseSign1::from_slice(token).map_err(|_| VerifyError::Malformed("not a COSE_Sign1"))?;
    let es256 = coset::Algorithm::Assigned(iana::Algorithm::ES256);
    if sign1.protected.header.alg.as_ref() != Some(&es256) {
        return Err(VerifyError::Malformed("algorithm is not ES256"));
    }
    sign1.verify_signature(b"", |signature, data| {
        let signature = Signature::from_slice(signature).map_err(|_| VerifyError::BadSignature)?;
        key.verify(data, &signature)
            .map_err(|_| VerifyError::BadSignature)
    })?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or(VerifyError::Malformed("no payload"))?;
    let claims = AuthorizationClaims::decode(payload)
        .ok_or(VerifyError::Malformed("payload is not claims"))?;
    if claims.version != CLAIMS_VERSION {
        return Err(VerifyError::Malformed("unknown claims version"));
    }
    if sign1.protected.header.key_id != claims.credential {
        return Err(VerifyError::Malformed(
            "kid differs from the claimed credential",
        ));
    }

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

/// Checks an attestation of `nonce` against the device key the verifier trusts.
pub fn verify_attestation(
    device: &VerifyingKey,
    nonce: &Nonce,
    attestation: &Attestation,
) -> Result<(), VerifyError> {
    let statement = attestation_statement(nonce, &attestation.device_public_key)
        .ok_or(VerifyError::Malformed("attestation too large"))?;
    let claimed = VerifyingKey::from_sec1_bytes(attestation.device_public_key.as_slice())
        .map_err(|_| VerifyError::Malformed("device key is not a P-256 point"))?;
    if &claimed != device {
        return Err(VerifyError::BadSignature);
    }
    verify_raw(device, &statement, attestation.signature.as_slice())
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

/// Reads a token file: raw CBOR (first byte `0x84`, or `0xd2` when tagged) or
/// base64 (standard or URL-safe, padding optional, whitespace ignored).
pub fn parse_token(bytes: &[u8]) -> Result<Vec<u8>, &'static str> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    match bytes.first() {
        Some(0x84) => return Ok(bytes.to_vec()),
        Some(0xd2) => return Ok(bytes.get(1..).unwrap_or_default().to_vec()),
        _ => {}
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
