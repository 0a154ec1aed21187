//! The token and attestation claims: deterministic CBOR checked against
//! independent encoders (ciborium, coset's CWT `ClaimsSet`), and every way a
//! payload can be wrong.

use ciborium::Value;
use coset::CborSerializable;
use coset::cwt::ClaimsSetBuilder;
use heapless::String;
use proptest::prelude::*;
use protocol::cbor::CborError;
use protocol::eat::{
    self, BootMeasurements, BootState, EvidenceClaims, KeyCertificateClaims, MAX_BOARD_LEN,
};
use protocol::signed::{AuthorizationClaims, ClaimsError, claim};
use protocol::{CurrencyCode, FixedBytes, MAX_MERCHANT_LEN};

fn claims() -> AuthorizationClaims {
    AuthorizationClaims {
        credential: [0x11; 16],
        amount_minor: 1250,
        currency: CurrencyCode(*b"EUR"),
        merchant: String::try_from("Coffee Corner").unwrap(),
        displayed_text_sha256: [0x22; 32],
        nonce: [0x33; 32],
        counter: 42,
    }
}

fn measured() -> EvidenceClaims {
    EvidenceClaims {
        nonce: [0x44; 32],
        ueid: eat::ueid(&FixedBytes([4; 65])),
        boot: BootState::Measured(BootMeasurements {
            mvmm: [0x55; 32],
            secure_os: [0x66; 32],
            security_version: 3,
            debug: false,
            board: String::try_from("qemu-virt").unwrap(),
        }),
    }
}

fn encode_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

/// Decodes with ciborium, checks the map keys are in RFC 8949 §4.2.1 order
/// (bytewise order of their encodings, no duplicates), and re-encodes the
/// same value with ciborium: the bytes must not change.
fn assert_deterministic(bytes: &[u8]) {
    let value: Value = ciborium::from_reader(bytes).unwrap();
    fn check(value: &Value) {
        match value {
            Value::Map(entries) => {
                let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| encode_value(k)).collect();
                assert!(
                    keys.windows(2).all(|w| w[0] < w[1]),
                    "keys out of order: {keys:02x?}"
                );
                for (_, v) in entries {
                    check(v);
                }
            }
            Value::Array(items) => items.iter().for_each(check),
            _ => {}
        }
    }
    check(&value);
    assert_eq!(
        encode_value(&value),
        bytes,
        "ciborium re-encodes differently"
    );
}

#[test]
fn token_claims_are_deterministic_cbor_readable_by_others() {
    let claims = claims();
    let bytes = claims.encode().unwrap();
    assert_deterministic(&bytes);

    // coset's CWT ClaimsSet, built independently, encodes the same bytes.
    let other = ClaimsSetBuilder::new()
        .cwt_id(42u64.to_be_bytes().to_vec())
        .private_claim(claim::CREDENTIAL, Value::Bytes(vec![0x11; 16]))
        .private_claim(claim::AMOUNT_MINOR, Value::from(1250))
        .private_claim(claim::CURRENCY, Value::Text("EUR".into()))
        .private_claim(claim::MERCHANT, Value::Text("Coffee Corner".into()))
        .private_claim(claim::DISPLAYED_TEXT_SHA256, Value::Bytes(vec![0x22; 32]))
        .private_claim(claim::NONCE, Value::Bytes(vec![0x33; 32]))
        .private_claim(claim::COUNTER, Value::from(42))
        .build()
        .to_vec()
        .unwrap();
    assert_eq!(bytes.as_slice(), other.as_slice());

    // And coset reads ours back.
    let parsed = coset::cwt::ClaimsSet::from_slice(&bytes).unwrap();
    assert_eq!(parsed.cwt_id, Some(42u64.to_be_bytes().to_vec()));
    assert_eq!(parsed.rest.len(), 7);
    assert_eq!(AuthorizationClaims::parse(&bytes), Ok(claims));
}

#[test]
fn largest_claims_fit_their_bound() {
    let mut claims = claims();
    claims.amount_minor = u64::MAX;
    claims.counter = u64::MAX;
    claims.merchant = String::try_from("M".repeat(MAX_MERCHANT_LEN).as_str()).unwrap();
    let bytes = claims.encode().unwrap();
    assert_eq!(bytes.len(), 187);
    assert_deterministic(&bytes);

    let mut evidence = measured();
    if let BootState::Measured(m) = &mut evidence.boot {
        m.security_version = u32::MAX;
        m.board = String::try_from("b".repeat(MAX_BOARD_LEN).as_str()).unwrap();
    }
    let bytes = evidence.encode().unwrap();
    assert_eq!(bytes.len(), 205);
    assert_deterministic(&bytes);
    assert_eq!(EvidenceClaims::parse(&bytes), Ok(evidence));
}

/// Re-encodes `entries` as a CBOR map, in the given order.
fn map(entries: Vec<(i64, Value)>) -> Vec<u8> {
    encode_value(&Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    ))
}

fn token_entries() -> Vec<(i64, Value)> {
    let value: Value = ciborium::from_reader(claims().encode().unwrap().as_slice()).unwrap();
    value
        .into_map()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (i64::try_from(k.into_integer().unwrap()).unwrap(), v))
        .collect()
}

#[test]
fn token_claims_negative_vectors() {
    let good = map(token_entries());
    assert_eq!(AuthorizationClaims::parse(&good), Ok(claims()));

    // Missing claim.
    for key in claim::ALL {
        let entries = token_entries()
            .into_iter()
            .filter(|(k, _)| *k != key)
            .collect();
        assert_eq!(
            AuthorizationClaims::parse(&map(entries)),
            Err(ClaimsError::Missing(key))
        );
    }
    // Unknown claim (policy: refused, wherever it is and whatever it holds).
    let mut extra = token_entries();
    extra.push((-65544, Value::from(0)));
    assert_eq!(
        AuthorizationClaims::parse(&map(extra)),
        Err(ClaimsError::Unknown(-65544))
    );
    let mut extra = token_entries();
    extra.insert(0, (6, Value::from(1_700_000_000)));
    assert_eq!(
        AuthorizationClaims::parse(&map(extra)),
        Err(ClaimsError::Unknown(6))
    );
    // Keys out of canonical order, or repeated.
    let mut swapped = token_entries();
    swapped.swap(1, 2);
    assert_eq!(
        AuthorizationClaims::parse(&map(swapped)),
        Err(ClaimsError::Cbor(CborError::KeyOrder))
    );
    let mut twice = token_entries();
    twice.insert(1, twice[1].clone());
    assert!(AuthorizationClaims::parse(&map(twice)).is_err());
    // Wrong types and lengths.
    let wrong: [(i64, Value); 8] = [
        (claim::CTI, Value::from(42)),
        (claim::CTI, Value::Bytes(43u64.to_be_bytes().to_vec())),
        (claim::CREDENTIAL, Value::Bytes(vec![0; 15])),
        (claim::AMOUNT_MINOR, Value::from(-1)),
        (claim::CURRENCY, Value::Text("eur".into())),
        (claim::MERCHANT, Value::Text("M".repeat(33))),
        (claim::NONCE, Value::Text("nonce".into())),
        (claim::COUNTER, Value::Bytes(vec![42])),
    ];
    for (key, value) in wrong {
        let entries = token_entries()
            .into_iter()
            .map(|(k, v)| if k == key { (k, value.clone()) } else { (k, v) })
            .collect();
        let error = AuthorizationClaims::parse(&map(entries)).unwrap_err();
        // Some wrong values also make the payload too long.
        assert!(
            error == ClaimsError::Invalid(key) || error == ClaimsError::TooLong,
            "{key}: {error:?}"
        );
    }
    // Not a map, truncated, trailing bytes, non-shortest head.
    assert_eq!(
        AuthorizationClaims::parse(&[0x80]),
        Err(ClaimsError::Cbor(CborError::WrongType))
    );
    for cut in 0..good.len() {
        assert!(
            AuthorizationClaims::parse(&good[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(AuthorizationClaims::parse(&trailing).is_err());
    let mut long_head = vec![0xb8, 8];
    long_head.extend_from_slice(&good[1..]);
    assert_eq!(
        AuthorizationClaims::parse(&long_head),
        Err(ClaimsError::Cbor(CborError::NotDeterministic))
    );
}

#[test]
fn evidence_and_certificate_claims() {
    let evidence = measured();
    let bytes = evidence.encode().unwrap();
    assert_deterministic(&bytes);
    assert_eq!(EvidenceClaims::parse(&bytes), Ok(evidence.clone()));

    let unmeasured = EvidenceClaims {
        boot: BootState::Unmeasured,
        ..evidence
    };
    let bytes = unmeasured.encode().unwrap();
    assert_deterministic(&bytes);
    assert_eq!(EvidenceClaims::parse(&bytes), Ok(unmeasured));

    // Some measurement claims but not all: refused, naming the missing one.
    let value: Value = ciborium::from_reader(measured().encode().unwrap().as_slice()).unwrap();
    let mut entries = value.into_map().unwrap();
    entries.retain(|(k, _)| *k != Value::from(eat::claim::BOARD));
    assert_eq!(
        EvidenceClaims::parse(&encode_value(&Value::Map(entries))),
        Err(ClaimsError::Missing(eat::claim::BOARD))
    );

    let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let point = key.verifying_key().to_sec1_point(false);
    let certificate = KeyCertificateClaims {
        attestation_key: FixedBytes::from_slice(point.as_bytes()).unwrap(),
        ueid: eat::ueid(&FixedBytes([4; 65])),
    };
    let bytes = certificate.encode().unwrap();
    assert_eq!(bytes.len(), 117);
    assert_deterministic(&bytes);
    assert_eq!(KeyCertificateClaims::parse(&bytes), Ok(certificate));
    // The cnf claim holds a COSE_Key that coset reads as an EC2 P-256 key.
    let value: Value = ciborium::from_reader(bytes.as_slice()).unwrap();
    let cnf = value
        .into_map()
        .unwrap()
        .remove(0)
        .1
        .into_map()
        .unwrap()
        .remove(0)
        .1;
    let cose_key = <coset::CoseKey as coset::AsCborValue>::from_cbor_value(cnf).unwrap();
    assert_eq!(
        cose_key.kty,
        coset::KeyType::Assigned(coset::iana::KeyType::EC2)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = AuthorizationClaims::parse(&bytes);
        let _ = EvidenceClaims::parse(&bytes);
        let _ = KeyCertificateClaims::parse(&bytes);
        let _ = protocol::cbor::Reader::new(&bytes).skip();
    }

    /// Whatever decodes re-encodes to the very same bytes: one value, one
    /// accepted encoding.
    #[test]
    fn mutated_payloads_are_refused_or_identical(at in any::<usize>(), byte in any::<u8>()) {
        let good = claims().encode().unwrap();
        let mut bytes = good.to_vec();
        let at = at % bytes.len();
        bytes[at] = byte;
        if let Ok(decoded) = AuthorizationClaims::parse(&bytes) {
            prop_assert_eq!(decoded.encode().unwrap().to_vec(), bytes.clone());
        }
        let good = measured().encode().unwrap();
        let mut bytes = good.to_vec();
        let at = at % bytes.len();
        bytes[at] = byte;
        if let Ok(decoded) = EvidenceClaims::parse(&bytes) {
            prop_assert_eq!(decoded.encode().unwrap().to_vec(), bytes.clone());
        }
    }
}
