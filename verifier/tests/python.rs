//! Proof that the token is standard: Python's own COSE library (pycose)
//! verifies a token the payment app made and cbor2 reads its claims
//! (verifier/examples/python/verify_token.py).
//!
//! Needs python3 (with venv) and PyPI: the pinned packages go into a venv
//! under target/. Without python3 the test prints
//! "skipped: python3 not found" and passes.

use std::path::Path;

use mvmm_verify::python_example;

use base64::Engine as _;
use heapless::String;
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use payment_app::{MemoryStorage, PaymentApp, Policy};
use protocol::{Currency, PaymentRequest};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::Value;
use sha2::{Digest, Sha256};

#[test]
fn pycose_verifies_the_token_and_cbor2_reads_its_claims() {
    if !python_example::python3_available() {
        println!("skipped: python3 not found");
        return;
    }
    let python = python_example::venv(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("pycose-venv"))
        .unwrap_or_else(|e| panic!("{e}"));

    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let device = SigningKey::generate_from_rng(&mut rng);
    let mut app = PaymentApp::new(device, MemoryStorage::default(), Policy::default()).unwrap();
    let record = app
        .enroll(&String::try_from("Visa 1234").unwrap(), &mut rng)
        .unwrap();
    let request = PaymentRequest {
        credential: record.credential,
        amount_minor: 1250,
        currency: Currency::from_code("EUR").unwrap().into(),
        merchant: String::try_from("Coffee Corner").unwrap(),
        nonce: [0x42; 32],
    };
    let prompt = app.begin_payment(&request, 0).unwrap();
    let token = app.approve(None, 1).unwrap();

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pycose-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("card.hex");
    std::fs::write(&key, format!("{}\n", hex::encode(record.public_key.0))).unwrap();
    let token_file = dir.join("token.b64");
    std::fs::write(
        &token_file,
        base64::engine::general_purpose::STANDARD.encode(&token),
    )
    .unwrap();

    let (code, out) =
        python_example::verify(&python, &key, &token_file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["verified"], Value::Bool(true), "{out}");
    assert_eq!(out["canonical_cbor"], Value::Bool(true), "{out}");
    assert_eq!(out["kid"], hex::encode(record.credential));
    let claims = &out["claims"];
    assert_eq!(claims["credential"], hex::encode(record.credential));
    assert_eq!(claims["amount_minor"], 1250);
    assert_eq!(claims["currency"], "EUR");
    assert_eq!(claims["merchant"], "Coffee Corner");
    assert_eq!(claims["nonce"], hex::encode([0x42; 32]));
    assert_eq!(claims["counter"], 1);
    assert_eq!(claims["cti"], hex::encode(1u64.to_be_bytes()));
    assert_eq!(
        claims["displayed_text_sha256"],
        hex::encode(Sha256::digest(prompt.text.as_bytes()))
    );

    // The raw CBOR file works too, and a changed byte fails the signature.
    let mut tampered = token.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let raw = dir.join("tampered.cbor");
    std::fs::write(&raw, &tampered).unwrap();
    let (code, out) = python_example::verify(&python, &key, &raw).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((code, &out["verified"]), (1, &Value::Bool(false)), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
