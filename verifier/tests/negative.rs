//! Tokens and evidence that must be refused, each for its own reason, and
//! arbitrary bytes that must never panic the verifier.

use ciborium::Value;
use coset::{CborSerializable, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};
use heapless::String;
use mvmm_verify::attestation::verify_evidence;
use mvmm_verify::*;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use proptest::prelude::*;
use protocol::signed::{AuthorizationClaims, ClaimsError, claim};
use protocol::{Currency, CurrencyCode};

const NONCE: [u8; 32] = [0x3c; 32];
const CREDENTIAL: [u8; 16] = [0x77; 16];

fn key() -> SigningKey {
    SigningKey::from_slice(&[0x21; 32]).unwrap()
}

fn claims() -> AuthorizationClaims {
    AuthorizationClaims {
        credential: CREDENTIAL,
        amount_minor: 1250,
        currency: CurrencyCode(*b"EUR"),
        merchant: String::try_from("Coffee Corner").unwrap(),
        displayed_text_sha256: [1; 32],
        nonce: NONCE,
        counter: 5,
    }
}

fn expected() -> Expected<'static> {
    Expected {
        nonce: NONCE,
        amount_minor: 1250,
        currency: Currency::from_code("EUR").unwrap(),
        merchant: "Coffee Corner",
        last_counter: 0,
        credential: Some(CREDENTIAL),
    }
}

/// A COSE_Sign1 signed by `key` with `alg`, `kid` = the credential, over
/// `payload`; tagged or not.
fn sign1(alg: iana::Algorithm, payload: Vec<u8>, tagged: bool) -> Vec<u8> {
    let key = key();
    let sign1 = CoseSign1Builder::new()
        .protected(
            HeaderBuilder::new()
                .algorithm(alg)
                .key_id(CREDENTIAL.to_vec())
                .build(),
        )
        .payload(payload)
        .create_signature(b"", |tbs| {
            let signature: Signature = key.sign(tbs);
            signature.to_bytes().to_vec()
        })
        .build();
    if tagged {
        sign1.to_tagged_vec().unwrap()
    } else {
        sign1.to_vec().unwrap()
    }
}

fn good_token() -> Vec<u8> {
    sign1(
        iana::Algorithm::ES256,
        claims().encode().unwrap().to_vec(),
        true,
    )
}

fn verify(token: &[u8]) -> Result<AuthorizationClaims, VerifyError> {
    verify_token(token, key().verifying_key(), &expected())
}

/// The claims map with `edit` applied, encoded by ciborium in map order.
fn payload_with(edit: impl FnOnce(&mut Vec<(Value, Value)>)) -> Vec<u8> {
    let value: Value = ciborium::from_reader(claims().encode().unwrap().as_slice()).unwrap();
    let mut entries = value.into_map().unwrap();
    edit(&mut entries);
    let mut out = Vec::new();
    ciborium::into_writer(&Value::Map(entries), &mut out).unwrap();
    out
}

#[test]
fn the_reference_token_verifies() {
    assert_eq!(verify(&good_token()), Ok(claims()));
}

#[test]
fn wrong_tag_or_no_tag() {
    let untagged = sign1(
        iana::Algorithm::ES256,
        claims().encode().unwrap().to_vec(),
        false,
    );
    assert_eq!(
        verify(&untagged),
        Err(VerifyError::Malformed(
            "untagged: a COSE_Sign1 must carry CBOR tag 18"
        ))
    );
    // CWT tag 61 around the COSE_Sign1: this profile does not use it.
    let mut cwt = vec![0xd8, 0x3d];
    cwt.extend_from_slice(&good_token());
    assert_eq!(
        verify(&cwt),
        Err(VerifyError::Malformed(
            "tagged, but not with tag 18 (COSE_Sign1)"
        ))
    );
    // COSE_Mac0's tag (17) on a Sign1 body.
    let mut mac0 = good_token();
    mac0[0] = 0xd1;
    assert!(matches!(verify(&mac0), Err(VerifyError::Malformed(_))));
}

#[test]
fn wrong_algorithm() {
    for alg in [
        iana::Algorithm::ES384,
        iana::Algorithm::EdDSA,
        iana::Algorithm::HMAC_256_256,
    ] {
        let token = sign1(alg, claims().encode().unwrap().to_vec(), true);
        assert_eq!(
            verify(&token),
            Err(VerifyError::Malformed("algorithm is not ES256")),
            "{alg:?}"
        );
    }
}

#[test]
fn malformed_payloads_are_refused_after_the_signature() {
    for payload in [vec![], vec![0xff], vec![0xa1], b"not cbor at all".to_vec()] {
        let token = sign1(iana::Algorithm::ES256, payload.clone(), true);
        assert!(
            matches!(verify(&token), Err(VerifyError::Claims(_))),
            "{payload:02x?}: {:?}",
            verify(&token)
        );
    }
    // The old postcard payload is not a claims map.
    let token = sign1(iana::Algorithm::ES256, vec![1, 0x11, 0xe2, 0x09], true);
    assert!(matches!(verify(&token), Err(VerifyError::Claims(_))));
}

#[test]
fn missing_and_unknown_claims() {
    for key in claim::ALL {
        let payload = payload_with(|e| e.retain(|(k, _)| *k != Value::from(key)));
        let token = sign1(iana::Algorithm::ES256, payload, true);
        assert_eq!(
            verify(&token),
            Err(VerifyError::Claims(ClaimsError::Missing(key)))
        );
    }
    // Policy: an unknown claim is refused, never ignored: a backend that
    // skipped it could accept what the user did not approve.
    let payload = payload_with(|e| e.push((Value::from(-65600), Value::from(1))));
    let token = sign1(iana::Algorithm::ES256, payload, true);
    let error = verify(&token).unwrap_err();
    assert_eq!(error, VerifyError::Claims(ClaimsError::Unknown(-65600)));
    assert!(
        error.to_string().contains("unknown claim -65600"),
        "{error}"
    );
    // Even a registered CWT claim (`exp`) this profile does not define.
    let payload = payload_with(|e| e.insert(0, (Value::from(4), Value::from(1_900_000_000))));
    let token = sign1(iana::Algorithm::ES256, payload, true);
    assert_eq!(
        verify(&token),
        Err(VerifyError::Claims(ClaimsError::Unknown(4)))
    );
}

#[test]
fn truncated_tokens() {
    let token = good_token();
    for cut in 0..token.len() {
        assert!(verify(&token[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = token.clone();
    longer.push(0);
    assert!(verify(&longer).is_err());
}

#[test]
fn kid_must_name_the_claimed_credential() {
    let mut other = claims();
    other.credential = [0x78; 16];
    let token = sign1(
        iana::Algorithm::ES256,
        other.encode().unwrap().to_vec(),
        true,
    );
    assert_eq!(
        verify_token_signature(&token, key().verifying_key()),
        Err(VerifyError::Malformed(
            "kid differs from the claimed credential"
        ))
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let device = key();
        let _ = verify(&bytes);
        let _ = token_key_id(&bytes);
        let _ = verify_evidence(device.verifying_key(), &NONCE, &bytes);
        let _ = parse_token(&bytes);
    }

    #[test]
    fn mutated_tokens_never_panic_and_never_verify(at in any::<usize>(), byte in any::<u8>()) {
        let mut token = good_token();
        let at = at % token.len();
        prop_assume!(token[at] != byte);
        token[at] = byte;
        prop_assert!(verify(&token).is_err());
    }

    #[test]
    fn arbitrary_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
        let token = sign1(iana::Algorithm::ES256, payload, true);
        let _ = verify(&token);
    }
}
