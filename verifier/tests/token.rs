//! A token made by the payment app, checked by the verifier library and CLI.

use std::path::PathBuf;
use std::process::Command;

use heapless::String;
use mvmm_verify::*;
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use payment_app::{MemoryStorage, PaymentApp, Policy};
use protocol::{Currency, EnrollmentRecord, PaymentRequest};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const NONCE: [u8; 32] = [0x3c; 32];

struct Issued {
    token: Vec<u8>,
    enrollment: EnrollmentRecord,
    device: p256::ecdsa::VerifyingKey,
    app: PaymentApp<MemoryStorage>,
}

fn issue() -> Issued {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let device_key = SigningKey::generate_from_rng(&mut rng);
    let device = *device_key.verifying_key();
    let mut app = PaymentApp::new(device_key, MemoryStorage::default(), Policy::default()).unwrap();
    let enrollment = app
        .enroll(&String::try_from("Visa 1234").unwrap(), &mut rng)
        .unwrap();
    let request = PaymentRequest {
        credential: enrollment.credential,
        amount_minor: 1250,
        currency: Currency::from_code("EUR").unwrap().into(),
        merchant: String::try_from("Coffee Corner").unwrap(),
        nonce: NONCE,
    };
    app.begin_payment(&request, 0).unwrap();
    let token = app.approve(None, 1).unwrap().to_vec();
    Issued {
        token,
        enrollment,
        device,
        app,
    }
}

fn expected() -> Expected<'static> {
    Expected {
        nonce: NONCE,
        amount_minor: 1250,
        currency: Currency::from_code("EUR").unwrap(),
        merchant: "Coffee Corner",
        last_counter: 0,
        credential: None,
    }
}

#[test]
fn library_accepts_the_token_and_rejects_any_change() {
    let issued = issue();
    let key = verify_enrollment(&issued.device, &issued.enrollment).unwrap();
    let claims = verify_token(&issued.token, &key, &expected()).unwrap();
    assert_eq!(claims.counter, 1);

    for at in 0..issued.token.len() {
        let mut bad = issued.token.clone();
        bad[at] ^= 0x01;
        assert!(verify_token(&bad, &key, &expected()).is_err(), "byte {at}");
    }
    assert!(verify_token(&issued.token[..issued.token.len() - 1], &key, &expected()).is_err());

    let field = |e: Result<_, VerifyError>| match e {
        Err(VerifyError::Mismatch(list)) => list.iter().map(|m| m.field).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let mut e = expected();
    e.nonce[31] ^= 1;
    assert_eq!(field(verify_token(&issued.token, &key, &e)), ["nonce"]);
    let mut e = expected();
    e.amount_minor += 1;
    assert_eq!(field(verify_token(&issued.token, &key, &e)), ["amount"]);
    let mut e = expected();
    e.currency = Currency::from_code("USD").unwrap();
    assert_eq!(field(verify_token(&issued.token, &key, &e)), ["currency"]);
    let mut e = expected();
    e.merchant = "Coffee Cornet";
    assert_eq!(field(verify_token(&issued.token, &key, &e)), ["merchant"]);
    let mut e = expected();
    e.credential = Some([0; 16]);
    assert_eq!(field(verify_token(&issued.token, &key, &e)), ["credential"]);
    let mut e = expected();
    e.last_counter = 1;
    assert_eq!(
        verify_token(&issued.token, &key, &e),
        Err(VerifyError::StaleCounter { last: 1, got: 1 })
    );
    assert_eq!(
        verify_token(&issued.token, &issued.device, &expected()),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn enrollment_and_attestation_records_check_out() {
    let issued = issue();
    let mut bad = issued.enrollment.clone();
    bad.label = String::try_from("Visa 1235").unwrap();
    assert_eq!(
        verify_enrollment(&issued.device, &bad).err(),
        Some(VerifyError::BadSignature)
    );
    let nonce = [9; 32];
    let mut app = issued.app;
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let attestation = app.attest(&nonce, &mut rng).unwrap();
    let claims =
        mvmm_verify::attestation::verify_evidence(&issued.device, &nonce, &attestation.eat)
            .unwrap();
    assert_eq!(claims.boot, protocol::eat::BootState::Unmeasured);
    assert_eq!(
        mvmm_verify::attestation::verify_evidence(&issued.device, &[8; 32], &attestation.eat),
        Err(AttestError::NonceMismatch)
    );
}

#[test]
fn key_and_token_files_parse_in_every_documented_form() {
    let issued = issue();
    let key = VerifyingKey::from_sec1_bytes(issued.enrollment.public_key.as_slice()).unwrap();
    let hex_key = hex::encode(issued.enrollment.public_key.as_slice());
    assert_eq!(parse_public_key(&format!(" {hex_key}\n")), Ok(key));
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let pem = key.to_public_key_pem(LineEnding::LF).unwrap();
    assert_eq!(parse_public_key(&pem), Ok(key));
    assert!(parse_public_key("zz").is_err());

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&issued.token);
    assert_eq!(parse_token(b64.as_bytes()).unwrap(), issued.token);
    assert_eq!(parse_token(&issued.token).unwrap(), issued.token);
}

use p256::ecdsa::VerifyingKey;

fn temp(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mvmm-verify-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn cli(key: &PathBuf, token: &PathBuf, extra: &[(&str, &str)]) -> (i32, std::string::String) {
    let nonce = hex::encode(NONCE);
    let mut args = vec![
        ("--nonce", nonce.as_str()),
        ("--amount", "1250"),
        ("--currency", "EUR"),
        ("--merchant", "Coffee Corner"),
    ];
    for (flag, value) in extra {
        args.retain(|(f, _)| f != flag);
        args.push((flag, value));
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mvmm-verify"));
    cmd.arg("--key").arg(key).arg("--token").arg(token);
    for (flag, value) in args {
        cmd.arg(flag).arg(value);
    }
    let out = cmd.output().unwrap();
    let text = std::string::String::from_utf8_lossy(&out.stdout).into_owned()
        + &std::string::String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn cli_exit_codes() {
    let issued = issue();
    let key = temp(
        "key.hex",
        hex::encode(issued.enrollment.public_key.as_slice()).as_bytes(),
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&issued.token);
    let token = temp("token.b64", b64.as_bytes());

    let (code, out) = cli(&key, &token, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK:"), "{out}");

    let (code, out) = cli(&key, &token, &[("--amount", "1251")]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("amount mismatch: expected 1251, token has 1250"),
        "{out}"
    );
    let (code, out) = cli(&key, &token, &[("--merchant", "Coffee")]);
    assert_eq!(
        (code, out.contains("merchant mismatch")),
        (1, true),
        "{out}"
    );
    let (code, _) = cli(&key, &token, &[("--currency", "USD")]);
    assert_eq!(code, 1);
    let (code, _) = cli(&key, &token, &[("--nonce", &"00".repeat(32))]);
    assert_eq!(code, 1);

    let (code, out) = cli(&key, &token, &[("--last-counter", "1")]);
    assert_eq!(code, 4, "{out}");

    let mut tampered = issued.token.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x80;
    let raw = temp("tampered.cbor", &tampered);
    let (code, out) = cli(&key, &raw, &[]);
    assert_eq!(code, 3, "{out}");

    let garbage = temp("garbage", b"!!!");
    assert_eq!(cli(&key, &garbage, &[]).0, 5);
    assert_eq!(cli(&PathBuf::from("/nonexistent/key"), &token, &[]).0, 6);
    assert_eq!(cli(&key, &token, &[("--currency", "XXX")]).0, 2);

    let help = Command::new(env!("CARGO_BIN_EXE_mvmm-verify"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(std::string::String::from_utf8_lossy(&help.stdout).contains("4  the counter"));
}

#[test]
#[ignore = "timing report; run with --release -- --ignored --nocapture"]
fn sign_and_verify_timing() {
    let issued = issue();
    let key = verify_enrollment(&issued.device, &issued.enrollment).unwrap();
    let rounds = 200;
    println!("token size: {} bytes", issued.token.len());
    let start = std::time::Instant::now();
    let mut app = issued.app;
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    for _ in 0..rounds {
        app.begin_payment(
            &PaymentRequest {
                credential: issued.enrollment.credential,
                amount_minor: 1,
                currency: Currency::from_code("EUR").unwrap().into(),
                merchant: String::try_from("Coffee Corner").unwrap(),
                nonce: NONCE,
            },
            0,
        )
        .unwrap();
        app.approve(None, 1).unwrap();
    }
    println!(
        "token issue (claims + COSE_Sign1 + ES256 sign, app.approve): {:?}",
        start.elapsed() / rounds
    );
    let eat = app.attest(&NONCE, &mut rng).unwrap().eat;
    println!(
        "attestation (EAT + key certificate) size: {} bytes",
        eat.len()
    );
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        app.attest(&NONCE, &mut rng).unwrap();
    }
    println!("EAT sign: {:?}", start.elapsed() / rounds);
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        mvmm_verify::attestation::verify_evidence(&issued.device, &NONCE, &eat).unwrap();
    }
    println!(
        "EAT verify (certificate + EAT signatures + claims): {:?}",
        start.elapsed() / rounds
    );
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        verify_token(&issued.token, &key, &expected()).unwrap();
    }
    println!(
        "token verify (COSE parse + ES256 verify + claims): {:?}",
        start.elapsed() / rounds
    );
    use p256::ecdsa::signature::{Signer, Verifier};
    let sk = SigningKey::generate_from_rng(&mut ChaCha20Rng::seed_from_u64(1));
    let msg = [0u8; 200];
    let start = std::time::Instant::now();
    let mut sig: p256::ecdsa::Signature = sk.sign(&msg);
    for _ in 1..rounds {
        sig = sk.sign(&msg);
    }
    println!(
        "ES256 sign (200-byte message): {:?}",
        start.elapsed() / rounds
    );
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        sk.verifying_key().verify(&msg, &sig).unwrap();
    }
    println!(
        "ES256 verify (200-byte message): {:?}",
        start.elapsed() / rounds
    );
}
