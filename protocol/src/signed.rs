//! The exact bytes the device key and the credential keys sign.
//!
//! Device-key statements are `context || for each part: u16 BE length || part`,
//! with a distinct context string per purpose, so a signature made for one
//! purpose can never be replayed as another. The authorization token's payload
//! is the postcard encoding of [`AuthorizationClaims`] (postcard is
//! deterministic: one value, one byte string).

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::message::{CredentialId, CurrencyCode, Merchant, Nonce, PublicKeyBytes};

/// Context of the session handshake signature.
pub const SESSION_CONTEXT: &[u8] = b"mvmm session v1";
/// Context of the enrollment record signature.
pub const ENROLLMENT_CONTEXT: &[u8] = b"mvmm enrollment v1";
/// Context of the attestation signature.
pub const ATTESTATION_CONTEXT: &[u8] = b"mvmm attestation v1";
/// Version inside [`AuthorizationClaims`].
pub const CLAIMS_VERSION: u16 = 1;
/// Largest encoded [`AuthorizationClaims`].
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

/// What the device key signs to answer an attestation nonce.
pub fn attestation_statement(
    nonce: &Nonce,
    device_public_key: &PublicKeyBytes,
) -> Option<Statement> {
    statement(ATTESTATION_CONTEXT, &[nonce, device_public_key.as_slice()])
}

/// The payload of an authorization token: everything the user approved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationClaims {
    /// [`CLAIMS_VERSION`].
    pub version: u16,
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
    /// The canonical encoding that goes into the COSE_Sign1 payload.
    pub fn encode(&self) -> Option<Vec<u8, MAX_CLAIMS_LEN>> {
        let mut buf = [0u8; MAX_CLAIMS_LEN];
        let used = postcard::to_slice(self, &mut buf).ok()?;
        Vec::from_slice(used).ok()
    }

    /// Decodes untrusted payload bytes; trailing bytes are rejected.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((claims, [])) => Some(claims),
            _ => None,
        }
    }
}
