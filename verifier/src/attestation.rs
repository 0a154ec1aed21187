//! Checks attestation evidence: an EAT (RFC 9711) signed by a per-boot
//! attestation key, whose certificate (a CWT with a `cnf` key, signed by the
//! device key) travels in the EAT's unprotected header under `kcwt` (13).
//!
//! The chain ends at the device public key the backend enrolled: nothing in
//! the evidence is trusted before the certificate verifies with that key.
//! Then the measurements are compared with [`ExpectedMeasurements`].

use std::fmt;

use coset::cbor::value::Value;
use coset::{AsCborValue, CoseSign1, Label};
use p256::ecdsa::VerifyingKey;
use protocol::eat::{BootState, EvidenceClaims, KeyCertificateClaims, ueid};
use protocol::signed::ClaimsError;
use protocol::{FixedBytes, MAX_ATTESTATION_LEN, Nonce};

use crate::measurements::{ExpectedMeasurements, MeasurementMismatch};
use crate::{check_signature, claims_error, parse_sign1};

/// COSE header parameter `kcwt` (RFC 9528).
pub const KCWT: i64 = 13;
/// CBOR tag of a COSE_Sign1.
const COSE_SIGN1_TAG: u64 = 18;

/// Why attestation evidence was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttestError {
    /// Not a tagged COSE_Sign1 EAT with an ES256 key certificate.
    Malformed(&'static str),
    /// The EAT's or the certificate's claims are not what this format defines.
    Claims(ClaimsError),
    /// The key certificate is not signed by the enrolled device key.
    UntrustedKey,
    /// The EAT is not signed by the certified attestation key.
    BadSignature,
    /// The `ueid` is not the enrolled device's.
    WrongDevice,
    /// The `eat_nonce` is not the nonce the verifier issued: stale or replayed.
    NonceMismatch,
    /// The device reports that nobody measured its boot.
    Unmeasured,
    /// Measurements differ from the expected ones; each is named.
    Measurements(Vec<MeasurementMismatch>),
}

impl fmt::Display for AttestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttestError::Malformed(what) => write!(f, "malformed attestation: {what}"),
            AttestError::Claims(e) => write!(f, "malformed attestation claims: {}", claims_error(e)),
            AttestError::UntrustedKey => f.write_str(
                "the attestation key's certificate is not signed by the enrolled device key",
            ),
            AttestError::BadSignature => {
                f.write_str("the EAT's signature does not verify with the certified attestation key")
            }
            AttestError::WrongDevice => f.write_str("ueid is not the enrolled device's"),
            AttestError::NonceMismatch => {
                f.write_str("eat_nonce differs from the issued nonce (stale or replayed evidence)")
            }
            AttestError::Unmeasured => f.write_str(
                "the device reports an unmeasured boot: no measurement of mVMM or secure-os to check",
            ),
            AttestError::Measurements(list) => {
                for (i, m) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{m}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for AttestError {}

/// Verifies the EAT's chain to `device` and its nonce; returns its claims
/// (the measurements are not judged here: see [`verify_attestation`]).
pub fn verify_evidence(
    device: &VerifyingKey,
    nonce: &Nonce,
    eat: &[u8],
) -> Result<EvidenceClaims, AttestError> {
    let sign1 = parse_sign1(eat, MAX_ATTESTATION_LEN).map_err(AttestError::Malformed)?;
    let certificate = certificate(&sign1)?;
    check_signature(&certificate, device).map_err(|()| AttestError::UntrustedKey)?;
    let certified = KeyCertificateClaims::parse(certificate.payload.as_deref().unwrap_or_default())
        .map_err(AttestError::Claims)?;
    let device_point = FixedBytes(
        device
            .to_sec1_point(false)
            .as_bytes()
            .try_into()
            .map_err(|_| AttestError::Malformed("device key"))?,
    );
    let device_ueid = ueid(&device_point);
    if certified.ueid != device_ueid {
        return Err(AttestError::WrongDevice);
    }
    let attestation_key = VerifyingKey::from_sec1_bytes(certified.attestation_key.as_slice())
        .map_err(|_| AttestError::Malformed("certified key is not a P-256 point"))?;
    check_signature(&sign1, &attestation_key).map_err(|()| AttestError::BadSignature)?;
    let claims = EvidenceClaims::parse(sign1.payload.as_deref().unwrap_or_default())
        .map_err(AttestError::Claims)?;
    if claims.ueid != device_ueid {
        return Err(AttestError::WrongDevice);
    }
    if &claims.nonce != nonce {
        return Err(AttestError::NonceMismatch);
    }
    Ok(claims)
}

/// Verifies the EAT (chain to `device`, `nonce`) and its measurements
/// against `expected`. An unmeasured boot is always refused.
pub fn verify_attestation(
    device: &VerifyingKey,
    nonce: &Nonce,
    eat: &[u8],
    expected: &ExpectedMeasurements,
) -> Result<EvidenceClaims, AttestError> {
    let claims = verify_evidence(device, nonce, eat)?;
    match &claims.boot {
        BootState::Unmeasured => Err(AttestError::Unmeasured),
        BootState::Measured(measured) => {
            let mismatches = expected.compare(measured);
            if mismatches.is_empty() {
                Ok(claims)
            } else {
                Err(AttestError::Measurements(mismatches))
            }
        }
    }
}

/// The certificate in `kcwt`: exactly one, a tagged COSE_Sign1 ES256, and
/// nothing else in the unprotected header.
fn certificate(sign1: &CoseSign1) -> Result<CoseSign1, AttestError> {
    let header = &sign1.unprotected;
    let [(Label::Int(KCWT), Value::Tag(COSE_SIGN1_TAG, inner))] = header.rest.as_slice() else {
        return Err(AttestError::Malformed(
            "the unprotected header must hold only kcwt (13) with a tagged COSE_Sign1",
        ));
    };
    if header.key_id.len() + header.iv.len() + header.partial_iv.len() != 0
        || header.content_type.is_some()
        || !header.counter_signatures.is_empty()
    {
        return Err(AttestError::Malformed(
            "unexpected unprotected header parameters",
        ));
    }
    let certificate = CoseSign1::from_cbor_value((**inner).clone())
        .map_err(|_| AttestError::Malformed("kcwt is not a COSE_Sign1"))?;
    let es256 = coset::Algorithm::Assigned(coset::iana::Algorithm::ES256);
    if certificate.protected.header.alg.as_ref() != Some(&es256)
        || !certificate.protected.header.crit.is_empty()
        || certificate.unprotected.alg.is_some()
    {
        return Err(AttestError::Malformed("the key certificate is not ES256"));
    }
    Ok(certificate)
}
