//! Attestation evidence from the payment app, checked by the library and by
//! `mvmm-verify attest` against an expected-measurements file.

use std::path::{Path, PathBuf};
use std::process::Command;

use heapless::String;
use mvmm_verify::attestation::verify_evidence;
use mvmm_verify::measurements::{self, ExpectedMeasurements};
use mvmm_verify::*;
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use payment_app::{Attester, BootMeasurements, BootState, MemoryStorage, PaymentApp, Policy};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const NONCE: [u8; 32] = [0x5e; 32];

fn measurements() -> BootMeasurements {
    BootMeasurements {
        mvmm: [0xa1; 32],
        secure_os: [0xb2; 32],
        security_version: 2,
        debug: false,
        board: String::try_from("qemu-virt").unwrap(),
    }
}

fn expected() -> ExpectedMeasurements {
    ExpectedMeasurements {
        board: "qemu-virt".into(),
        mvmm: [0xa1; 32],
        secure_os: [0xb2; 32],
        min_security_version: 2,
        debug_allowed: false,
    }
}

struct Device {
    app: PaymentApp<MemoryStorage>,
    key: p256::ecdsa::VerifyingKey,
    rng: ChaCha20Rng,
}

fn device(boot: BootState) -> Device {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let device_key = SigningKey::generate_from_rng(&mut rng);
    let key = *device_key.verifying_key();
    let mut app = PaymentApp::new(device_key, MemoryStorage::default(), Policy::default()).unwrap();
    app.set_boot_state(boot);
    Device { app, key, rng }
}

fn evidence(device: &mut Device, nonce: &[u8; 32]) -> Vec<u8> {
    device
        .app
        .attest(nonce, &mut device.rng)
        .unwrap()
        .eat
        .to_vec()
}

#[test]
fn measured_evidence_verifies_and_names_each_mismatch() {
    let mut d = device(BootState::Measured(measurements()));
    let eat = evidence(&mut d, &NONCE);
    let claims = verify_attestation(&d.key, &NONCE, &eat, &expected()).unwrap();
    assert_eq!(claims.boot, BootState::Measured(measurements()));
    // The same attestation key signs every EAT of this boot.
    let again = evidence(&mut d, &[1; 32]);
    verify_attestation(&d.key, &[1; 32], &again, &expected()).unwrap();

    let named = |expected: ExpectedMeasurements| match verify_attestation(
        &d.key, &NONCE, &eat, &expected,
    ) {
        Err(AttestError::Measurements(list)) => {
            list.iter().map(|m| m.measurement).collect::<Vec<_>>()
        }
        other => panic!("{other:?}"),
    };
    let mut e = expected();
    e.secure_os[0] ^= 1;
    assert_eq!(named(e), ["secure-os"]);
    let mut e = expected();
    e.mvmm[31] ^= 1;
    assert_eq!(named(e), ["mvmm"]);
    let mut e = expected();
    e.min_security_version = 3;
    assert_eq!(named(e), ["security version"]);
    let mut e = expected();
    e.board = "pixel".into();
    assert_eq!(named(e), ["board"]);

    let mut debug = measurements();
    debug.debug = true;
    let mut d2 = device(BootState::Measured(debug));
    let eat = evidence(&mut d2, &NONCE);
    let err = verify_attestation(&d2.key, &NONCE, &eat, &expected()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "debug measurement mismatch: expected disabled, evidence has enabled"
    );
    let mut allowed = expected();
    allowed.debug_allowed = true;
    verify_attestation(&d2.key, &NONCE, &eat, &allowed).unwrap();
}

#[test]
fn unmeasured_wrong_nonce_wrong_device_and_foreign_certificates_are_refused() {
    let mut d = device(BootState::Unmeasured);
    let eat = evidence(&mut d, &NONCE);
    assert_eq!(
        verify_attestation(&d.key, &NONCE, &eat, &expected()),
        Err(AttestError::Unmeasured)
    );
    assert_eq!(
        verify_evidence(&d.key, &[0; 32], &eat),
        Err(AttestError::NonceMismatch)
    );
    let stranger = *SigningKey::from_slice(&[9; 32]).unwrap().verifying_key();
    assert_eq!(
        verify_evidence(&stranger, &NONCE, &eat),
        Err(AttestError::UntrustedKey)
    );

    // An attestation key certified by another device key.
    let other_device = SigningKey::from_slice(&[8; 32]).unwrap();
    let attester = Attester::new(&other_device, SigningKey::from_slice(&[7; 32]).unwrap()).unwrap();
    let forged = attester
        .attest(&NONCE, &BootState::Measured(measurements()))
        .unwrap();
    assert_eq!(
        verify_evidence(&d.key, &NONCE, &forged.eat),
        Err(AttestError::UntrustedKey)
    );

    // Any change to the evidence is refused.
    let mut d = device(BootState::Measured(measurements()));
    let eat = evidence(&mut d, &NONCE);
    for at in 0..eat.len() {
        let mut bad = eat.clone();
        bad[at] ^= 0x01;
        assert!(
            verify_attestation(&d.key, &NONCE, &bad, &expected()).is_err(),
            "byte {at}"
        );
    }
    for cut in 0..eat.len() {
        assert!(
            verify_evidence(&d.key, &NONCE, &eat[..cut]).is_err(),
            "cut {cut}"
        );
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mvmm-attest-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn expected_file_from_images_round_trips_and_is_strict() {
    let dir = temp_dir();
    let mvmm = dir.join("mvmm.bin");
    let secure_os = dir.join("secure-os.bin");
    std::fs::write(&mvmm, b"abc").unwrap();
    std::fs::write(&secure_os, b"").unwrap();
    let expected = measurements::from_images(&mvmm, &secure_os, "qemu-virt", 1).unwrap();
    // SHA-256("abc") and SHA-256("").
    assert_eq!(
        hex::encode(expected.mvmm),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex::encode(expected.secure_os),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let file = dir.join("expected.json");
    expected.write(&file).unwrap();
    assert_eq!(ExpectedMeasurements::load(&file), Ok(expected.clone()));
    let text = expected.to_json();
    assert!(text.contains("\"min_security_version\": 1"), "{text}");
    let extra = text.replacen('{', "{\"surprise\": 1,", 1);
    assert!(
        ExpectedMeasurements::from_json(&extra)
            .unwrap_err()
            .contains("surprise")
    );
    let short = text.replace(&hex::encode(expected.mvmm), "abcd");
    assert!(
        ExpectedMeasurements::from_json(&short)
            .unwrap_err()
            .contains("mvmm_sha256")
    );
    let missing =
        measurements::from_images(&dir.join("nope"), &secure_os, "qemu-virt", 1).unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
}

fn cli(
    device_key: &Path,
    eat: &Path,
    nonce: &[u8; 32],
    expected: &Path,
) -> (i32, std::string::String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mvmm-verify"))
        .arg("attest")
        .arg("--device-key")
        .arg(device_key)
        .arg("--eat")
        .arg(eat)
        .arg("--nonce")
        .arg(hex::encode(nonce))
        .arg("--expected")
        .arg(expected)
        .output()
        .unwrap();
    let text = std::string::String::from_utf8_lossy(&out.stdout).into_owned()
        + &std::string::String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap(), text)
}

#[test]
fn cli_attest_names_the_mismatching_measurement() {
    let dir = temp_dir();
    let mut d = device(BootState::Measured(measurements()));
    use base64::Engine as _;
    let eat = evidence(&mut d, &NONCE);
    let eat_file = dir.join("eat.b64");
    std::fs::write(
        &eat_file,
        base64::engine::general_purpose::STANDARD.encode(&eat),
    )
    .unwrap();
    let key_file = dir.join("device.pub");
    std::fs::write(
        &key_file,
        hex::encode(d.key.to_sec1_point(false).as_bytes()),
    )
    .unwrap();
    let good = dir.join("good.json");
    expected().write(&good).unwrap();

    let (code, out) = cli(&key_file, &eat_file, &NONCE, &good);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: device 01"), "{out}");

    // A modified secure-os: its measurement differs.
    let mut modified = expected();
    modified.secure_os = [0xee; 32];
    let modified_file = dir.join("modified.json");
    modified.write(&modified_file).unwrap();
    let (code, out) = cli(&key_file, &eat_file, &NONCE, &modified_file);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL: secure-os measurement mismatch: expected eeee"),
        "{out}"
    );

    assert_eq!(cli(&key_file, &eat_file, &[1; 32], &good).0, 4);
    let stranger = dir.join("stranger.pub");
    let other = SigningKey::from_slice(&[3; 32]).unwrap();
    std::fs::write(
        &stranger,
        hex::encode(other.verifying_key().to_sec1_point(false).as_bytes()),
    )
    .unwrap();
    assert_eq!(cli(&stranger, &eat_file, &NONCE, &good).0, 3);

    let mut unmeasured = device(BootState::Unmeasured);
    let raw = dir.join("unmeasured.cbor");
    std::fs::write(&raw, evidence(&mut unmeasured, &NONCE)).unwrap();
    let unmeasured_key = dir.join("unmeasured.pub");
    std::fs::write(
        &unmeasured_key,
        hex::encode(unmeasured.key.to_sec1_point(false).as_bytes()),
    )
    .unwrap();
    let (code, out) = cli(&unmeasured_key, &raw, &NONCE, &good);
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("unmeasured"), "{out}");
    assert_eq!(
        cli(&key_file, &eat_file, &NONCE, &dir.join("absent.json")).0,
        6
    );
}
