//! The COSE_Sign1 (RFC 9052) envelopes the app signs: authorization tokens
//! (CWT), attestation evidence (EAT) and the attestation key's certificate.
//!
//! Every envelope is tagged (CBOR tag 18), ES256, with an empty external
//! AAD; the payloads are the deterministic claims of [`protocol::signed`]
//! and [`protocol::eat`]. See docs/tokens.md.

use alloc::boxed::Box;
use alloc::vec::Vec;

use coset::cbor::value::Value;
use coset::{
    AsCborValue, CoseSign1, CoseSign1Builder, Header, HeaderBuilder, TaggedCborSerializable, iana,
};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use protocol::eat::{BootState, EvidenceClaims, KeyCertificateClaims, ueid};
use protocol::session::sec1;
use protocol::signed::AuthorizationClaims;
use protocol::{Attestation, FixedBytes, Nonce, Token};

/// COSE header parameter `kcwt` (RFC 9528): a CWT whose `cnf` claim holds
/// the key that signed this message.
pub const KCWT: i64 = 13;
/// CBOR tag of a COSE_Sign1.
pub const COSE_SIGN1_TAG: u64 = 18;

fn es256() -> HeaderBuilder {
    HeaderBuilder::new().algorithm(iana::Algorithm::ES256)
}

fn sign(key: &SigningKey, protected: Header, unprotected: Header, payload: Vec<u8>) -> CoseSign1 {
    CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .payload(payload)
        .create_signature(b"", |tbs| {
            let signature: Signature = key.sign(tbs);
            signature.to_bytes().to_vec()
        })
        .build()
}

/// The authorization token: a tagged COSE_Sign1 (ES256, `kid` = credential
/// id) over the CWT claims.
pub fn sign_token(key: &SigningKey, claims: &AuthorizationClaims) -> Option<Token> {
    let payload = claims.encode()?;
    let protected = es256().key_id(claims.credential.to_vec()).build();
    let bytes = sign(key, protected, Header::default(), payload.to_vec())
        .to_tagged_vec()
        .ok()?;
    Token::from_slice(&bytes).ok()
}

/// The per-boot attestation key and its certificate by the device key.
pub struct Attester {
    key: SigningKey,
    /// The certificate as a CBOR item (tagged COSE_Sign1), ready for `kcwt`.
    certificate: Value,
    ueid: protocol::eat::Ueid,
}

impl Attester {
    /// Certifies `key` (fresh for this boot) with `device_key`: the device
    /// key signs `{cnf: COSE_Key(key), ueid}`.
    pub fn new(device_key: &SigningKey, key: SigningKey) -> Option<Self> {
        let device_public = FixedBytes(sec1(&(*device_key.verifying_key()).into()));
        let ueid = ueid(&device_public);
        let claims = KeyCertificateClaims {
            attestation_key: FixedBytes(sec1(&(*key.verifying_key()).into())),
            ueid,
        };
        let payload = claims.encode()?;
        let certificate = sign(
            device_key,
            es256().build(),
            Header::default(),
            payload.to_vec(),
        )
        .to_cbor_value()
        .ok()?;
        Some(Attester {
            key,
            certificate: Value::Tag(COSE_SIGN1_TAG, Box::new(certificate)),
            ueid,
        })
    }

    /// The EAT for `nonce`: a tagged COSE_Sign1 by the attestation key, with
    /// the key's certificate in the unprotected header (`kcwt`).
    pub fn attest(&self, nonce: &Nonce, boot: &BootState) -> Option<Attestation> {
        let claims = EvidenceClaims {
            nonce: *nonce,
            ueid: self.ueid,
            boot: boot.clone(),
        };
        let payload = claims.encode()?;
        let unprotected = HeaderBuilder::new()
            .value(KCWT, self.certificate.clone())
            .build();
        let bytes = sign(&self.key, es256().build(), unprotected, payload.to_vec())
            .to_tagged_vec()
            .ok()?;
        Some(Attestation {
            eat: heapless::Vec::from_slice(&bytes).ok()?,
        })
    }
}
