//! `mvmm-verify serve` on 127.0.0.1 (ephemeral port), driven with plain
//! HTTP/1.1 over a TcpStream: enrollment, nonces, a payment accepted once
//! and refused when replayed, attestation.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine as _;
use heapless::String;
use mvmm_verify::ExpectedMeasurements;
use mvmm_verify::server::{self, Config};
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use payment_app::{BootMeasurements, BootState, MemoryStorage, PaymentApp, Policy};
use protocol::{Currency, EnrollmentRecord, PaymentRequest};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::{Value, json};

/// One request, `Connection: close`; returns (status, JSON body).
fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = std::string::String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn measurements() -> BootMeasurements {
    BootMeasurements {
        mvmm: [1; 32],
        secure_os: [2; 32],
        security_version: 1,
        debug: false,
        board: String::try_from("qemu-virt").unwrap(),
    }
}

struct Phone {
    app: PaymentApp<MemoryStorage>,
    rng: ChaCha20Rng,
    device_hex: std::string::String,
}

fn phone(seed: u64, boot: BootState) -> Phone {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let key = SigningKey::generate_from_rng(&mut rng);
    let device_hex = hex::encode(key.verifying_key().to_sec1_point(false).as_bytes());
    let mut app = PaymentApp::new(key, MemoryStorage::default(), Policy::default()).unwrap();
    app.set_boot_state(boot);
    Phone {
        app,
        rng,
        device_hex,
    }
}

impl Phone {
    fn enroll(&mut self) -> EnrollmentRecord {
        self.app
            .enroll(&String::try_from("Visa 1234").unwrap(), &mut self.rng)
            .unwrap()
    }

    fn pay(
        &mut self,
        record: &EnrollmentRecord,
        nonce: [u8; 32],
        amount_minor: u64,
    ) -> std::string::String {
        let request = PaymentRequest {
            credential: record.credential,
            amount_minor,
            currency: Currency::from_code("EUR").unwrap().into(),
            merchant: String::try_from("Coffee Corner").unwrap(),
            nonce,
        };
        self.app.begin_payment(&request, 0).unwrap();
        let token = self.app.approve(None, 1).unwrap();
        base64::engine::general_purpose::STANDARD.encode(&token)
    }
}

fn nonce(addr: SocketAddr) -> [u8; 32] {
    let (status, body) = http(addr, "POST", "/v1/nonces", None);
    assert_eq!(status, 201, "{body}");
    hex::decode(body["nonce"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn payment(token: &str, amount_minor: u64) -> Value {
    json!({"token": token, "amount_minor": amount_minor, "currency": "EUR", "merchant": "Coffee Corner"})
}

#[test]
fn payments_are_accepted_once_and_replays_refused() {
    let running = server::start("127.0.0.1:0", Config::default()).unwrap();
    let addr = running.addr();
    assert_eq!(
        http(addr, "GET", "/health", None),
        (200, json!({"status": "ok"}))
    );

    let mut phone = phone(1, BootState::Unmeasured);
    let (status, device) = http(
        addr,
        "POST",
        "/v1/devices",
        Some(&json!({"public_key": phone.device_hex})),
    );
    assert_eq!(status, 201, "{device}");
    let device_id = device["device_id"].as_str().unwrap().to_string();
    assert_eq!(device_id.len(), 66);
    assert!(device_id.starts_with("01"));

    let record = phone.enroll();
    let enrollment = json!({
        "device_id": device_id,
        "credential": hex::encode(record.credential),
        "label": record.label.as_str(),
        "public_key": hex::encode(record.public_key.0),
        "signature": hex::encode(record.signature.0),
    });
    let (status, body) = http(addr, "POST", "/v1/credentials", Some(&enrollment));
    assert_eq!(
        (status, &body["credential"]),
        (201, &json!(hex::encode(record.credential)))
    );
    let mut forged = enrollment.clone();
    forged["label"] = json!("Visa 9999");
    let (status, body) = http(addr, "POST", "/v1/credentials", Some(&forged));
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("bad_signature")),
        "{body}"
    );

    // The payment is accepted...
    let n = nonce(addr);
    let token = phone.pay(&record, n, 1250);
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tokens/verify",
        Some(&payment(&token, 1250)),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["valid"], json!(true));
    assert_eq!(body["counter"], json!(1));
    assert_eq!(body["nonce"], json!(hex::encode(n)));
    // ...and the same token replayed is refused.
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tokens/verify",
        Some(&payment(&token, 1250)),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("replay")),
        "{body}"
    );

    // A new token that reuses the nonce is refused too.
    let again = phone.pay(&record, n, 1250);
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tokens/verify",
        Some(&payment(&again, 1250)),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("replay")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("nonce"),
        "{body}"
    );

    // A nonce this service never issued.
    let stray = phone.pay(&record, [9; 32], 1250);
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tokens/verify",
        Some(&payment(&stray, 1250)),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("unknown_nonce")),
        "{body}"
    );

    // A different amount than the backend expects, named.
    let n = nonce(addr);
    let token = phone.pay(&record, n, 1300);
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tokens/verify",
        Some(&payment(&token, 1250)),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("mismatch")),
        "{body}"
    );
    assert_eq!(body["details"][0]["field"], json!("amount"));
    // The nonce was not spent by the refusal: the right check still passes.
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tokens/verify",
        Some(&payment(&token, 1300)),
    );
    assert_eq!(status, 200, "{body}");

    // Malformed input.
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tokens/verify",
        Some(&json!({"token": "!!"})),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = http(addr, "POST", "/v1/tokens/verify", Some(&payment("AAAA", 1)));
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("malformed")),
        "{body}"
    );
    assert_eq!(http(addr, "GET", "/v1/nonces", None).0, 405);
    assert_eq!(http(addr, "GET", "/nope", None).0, 404);
}

#[test]
fn attestations_are_checked_against_the_configured_measurements() {
    let expected = ExpectedMeasurements {
        board: "qemu-virt".into(),
        mvmm: [1; 32],
        secure_os: [2; 32],
        min_security_version: 1,
        debug_allowed: false,
    };
    let config = Config {
        expected: Some(expected),
        ..Config::default()
    };
    let running = server::start("127.0.0.1:0", config).unwrap();
    let addr = running.addr();

    let check = |phone: &mut Phone, device_id: &str, n: [u8; 32]| {
        let eat = phone.app.attest(&n, &mut phone.rng).unwrap().eat;
        let body = json!({
            "device_id": device_id,
            "nonce": hex::encode(n),
            "eat": base64::engine::general_purpose::STANDARD.encode(&eat),
        });
        http(addr, "POST", "/v1/attestations/verify", Some(&body))
    };
    let enroll = |phone: &Phone| {
        let (_, body) = http(
            addr,
            "POST",
            "/v1/devices",
            Some(&json!({"public_key": phone.device_hex})),
        );
        body["device_id"].as_str().unwrap().to_string()
    };

    let mut good = phone(2, BootState::Measured(measurements()));
    let id = enroll(&good);
    let n = nonce(addr);
    let (status, body) = check(&mut good, &id, n);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["board"], json!("qemu-virt"));
    assert_eq!(body["secure_os_sha256"], json!(hex::encode([2; 32])));
    let (status, body) = check(&mut good, &id, n);
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("replay")),
        "{body}"
    );

    let mut modified_measurements = measurements();
    modified_measurements.secure_os = [3; 32];
    let mut modified = phone(3, BootState::Measured(modified_measurements));
    let id = enroll(&modified);
    let (status, body) = check(&mut modified, &id, nonce(addr));
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("measurement_mismatch")),
        "{body}"
    );
    assert_eq!(body["details"][0]["measurement"], json!("secure-os"));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("secure-os measurement mismatch")
    );

    let mut unmeasured = phone(4, BootState::Unmeasured);
    let id = enroll(&unmeasured);
    let (status, body) = check(&mut unmeasured, &id, nonce(addr));
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("unmeasured")),
        "{body}"
    );

    let (status, body) = check(&mut good, &"00".repeat(33), nonce(addr));
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_device")),
        "{body}"
    );
}
