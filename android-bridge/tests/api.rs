//! Every Bridge call and error path through the real session against the
//! simulator's real secure side (payment service, app, trusted UI).

mod common;

use std::thread;
use std::time::Duration;

use android_bridge::transport::{Channel, ChannelError};
use android_bridge::{Bridge, BridgeError, DeviceKey, Limit, PaymentRequest, Timeouts, Transport};
use common::{Sim, start, start_with};
use mvmm_sim::{Answer, Input};
use p256::ecdsa::SigningKey;
use payment_app::Policy;
use protocol::Currency;

const NONCE: [u8; 32] = [0x5a; 32];

fn eur() -> Currency {
    Currency::from_code("EUR").expect("EUR")
}

fn enroll(sim: &Sim) -> [u8; 16] {
    let mut bridge = sim.connect();
    bridge
        .enroll("Visa ending 4242")
        .expect("enroll")
        .credential
}

fn payment(credential: [u8; 16], amount: &str) -> PaymentRequest {
    PaymentRequest::new(credential, amount, "EUR", "Corner Cafe", NONCE).expect("valid request")
}

#[test]
fn credentials_status_and_attestation() {
    let sim = start("credentials", Answer::Approve);
    let mut bridge = sim.connect();
    let status = bridge.status().expect("status");
    assert_eq!((status.credentials, status.protocol_version), (0, 1));

    let record = bridge.enroll("Visa ending 4242").expect("enroll");
    // The issuer's check of the enrollment record.
    let card_key = mvmm_verify::verify_enrollment(&sim.device_key().0, &record).expect("signed");
    let list = bridge.list_credentials().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].credential, record.credential);
    assert_eq!(list[0].label.as_str(), "Visa ending 4242");
    assert_eq!(list[0].public_key, record.public_key);
    assert_eq!(
        card_key.to_sec1_point(false).as_bytes(),
        record.public_key.as_slice()
    );

    let attestation = bridge.attest(&NONCE).expect("attest");
    let evidence =
        mvmm_verify::attestation::verify_evidence(&sim.device_key().0, &NONCE, &attestation.eat)
            .expect("attestation verifies");
    // The simulator is handed no measurements: it says so.
    assert_eq!(evidence.boot, protocol::eat::BootState::Unmeasured);

    bridge
        .delete_credential(&record.credential)
        .expect("delete");
    match bridge.delete_credential(&record.credential) {
        Err(BridgeError::UnknownCredential(id)) => assert_eq!(id, hex::encode(record.credential)),
        other => panic!("{other:?}"),
    }
    assert!(bridge.list_credentials().expect("list").is_empty());
    // Refused before sending, with the offending value.
    let err = bridge.enroll(" padded").expect_err("bad label");
    assert!(err.to_string().contains("\" padded\""), "{err}");
    assert!(bridge.is_open());
}

#[test]
fn approved_payment_verifies_at_the_backend() {
    let sim = start("approve", Answer::Approve);
    let credential = enroll(&sim);
    let mut bridge = sim.connect();
    let card_key = bridge.list_credentials().expect("list")[0].public_key;
    let authorization = bridge
        .request_payment(&payment(credential, "12.50"))
        .expect("approved");
    assert_eq!(authorization.claims.amount_minor, 1250);
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(card_key.as_slice()).expect("key");
    let expected = mvmm_verify::Expected {
        nonce: NONCE,
        amount_minor: 1250,
        currency: eur(),
        merchant: "Corner Cafe",
        last_counter: 0,
        credential: Some(credential),
    };
    let claims = mvmm_verify::verify_token(&authorization.token, &key, &expected).expect("valid");
    assert_eq!(claims.counter, 1);
    // The next one has a higher counter: the session keeps working.
    let second = bridge
        .request_payment(&payment(credential, "1.00"))
        .expect("approved");
    assert_eq!(second.claims.counter, 2);
}

#[test]
fn declined_payment() {
    let sim = start("decline", Answer::Decline);
    let credential = enroll(&sim);
    let mut bridge = sim.connect();
    let err = bridge
        .request_payment(&payment(credential, "12.50"))
        .expect_err("declined");
    assert!(matches!(err, BridgeError::DeclinedByUser), "{err:?}");
    assert_eq!(err.to_string(), "declined by user");
    assert!(bridge.status().is_ok(), "the session survives a decline");
}

#[test]
fn limits_and_unknown_credentials() {
    let sim = start("limits", Answer::Approve);
    let credential = enroll(&sim);
    let mut bridge = sim.connect();
    let err = bridge
        .request_payment(&payment(credential, "500.01"))
        .expect_err("over the limit");
    assert!(
        matches!(err, BridgeError::LimitExceeded(Limit::PerTransaction)),
        "{err:?}"
    );
    let err = bridge
        .request_payment(&payment([9; 16], "1.00"))
        .expect_err("unknown");
    assert!(matches!(err, BridgeError::UnknownCredential(_)), "{err:?}");
    // Bad amounts never leave the client.
    let err =
        PaymentRequest::new(credential, "12.505", "EUR", "Corner Cafe", NONCE).expect_err("amount");
    assert!(err.to_string().contains("12.505"), "{err}");
    let err =
        PaymentRequest::new(credential, "1", "EUR", "Corner Cafe", [0; 32]).expect_err("nonce");
    assert!(matches!(err, BridgeError::InvalidField { .. }), "{err:?}");
}

#[test]
fn wrong_pins_lock_payments() {
    let sim = start_with(
        "locked",
        Input::Auto(Answer::Pin("9999".into())),
        Policy::default(),
        Some("1234"),
    );
    let credential = enroll(&sim);
    let mut bridge = sim.connect();
    assert!(bridge.status().expect("status").pin_set);
    // The scripted user types a wrong PIN once per request, then gives up.
    for _ in 0..2 {
        let err = bridge
            .request_payment(&payment(credential, "1.00"))
            .expect_err("wrong PIN");
        assert!(matches!(err, BridgeError::DeclinedByUser), "{err:?}");
    }
    let err = bridge
        .request_payment(&payment(credential, "1.00"))
        .expect_err("third wrong PIN");
    assert!(matches!(err, BridgeError::Locked), "{err:?}");
    let err = bridge
        .request_payment(&payment(credential, "1.00"))
        .expect_err("locked");
    assert!(matches!(err, BridgeError::Locked), "{err:?}");
    assert!(bridge.status().expect("status").locked);
}

#[test]
fn right_pin_approves() {
    let sim = start_with(
        "pin",
        Input::Auto(Answer::Pin("1234".into())),
        Policy::default(),
        Some("1234"),
    );
    let credential = enroll(&sim);
    let mut bridge = sim.connect();
    bridge
        .request_payment(&payment(credential, "2.00"))
        .expect("approved with the PIN");
}

#[test]
fn busy_then_user_timeout_then_client_timeout() {
    let policy = Policy {
        approval_timeout_ms: 400,
        ..Policy::default()
    };
    let sim = start_with("timeouts", Input::Silent, policy, None);
    let credential = enroll(&sim);
    let transport = sim.transport();
    let key = sim.device_key();
    let waiting = thread::spawn(move || {
        let mut bridge = Bridge::connect(&transport, &key).expect("connect");
        bridge.request_payment(&payment(credential, "3.00"))
    });
    thread::sleep(Duration::from_millis(150));
    let mut other = sim.connect();
    let err = other
        .request_payment(&payment(credential, "4.00"))
        .expect_err("busy");
    assert!(matches!(err, BridgeError::Busy), "{err:?}");
    assert_eq!(err.to_string(), "busy: another approval is in progress");
    let err = waiting
        .join()
        .expect("thread")
        .expect_err("nobody answered");
    assert!(matches!(err, BridgeError::ApprovalTimedOut), "{err:?}");

    // The client's own timeout: the bridge closes, which cancels the approval.
    other.set_timeouts(Timeouts {
        call: Duration::from_secs(5),
        approval: Duration::from_millis(100),
    });
    let err = other
        .request_payment(&payment(credential, "5.00"))
        .expect_err("client timeout");
    assert!(matches!(err, BridgeError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().starts_with("timed out"), "{err}");
    assert!(matches!(other.status(), Err(BridgeError::TransportClosed)));
    thread::sleep(Duration::from_millis(100));
    assert!(
        !sim.connect().status().expect("status").busy,
        "approval cancelled"
    );
}

#[test]
fn forged_device_key_fails_authentication() {
    let sim = start("forged", Answer::Approve);
    let impostor = SigningKey::from_slice(&[7; 32]).expect("key");
    let pinned = DeviceKey(*impostor.verifying_key());
    let err = Bridge::connect(&sim.transport(), &pinned).expect_err("wrong key");
    assert!(
        matches!(err, BridgeError::AuthenticationFailed(_)),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("authentication failed"),
        "{err}"
    );
}

/// Passes the handshake and the first response through, then replays the
/// first response instead of the second.
struct Replaying {
    inner: Box<dyn Channel>,
    seen: Vec<Vec<u8>>,
}

impl Channel for Replaying {
    fn send(&mut self, packet: &[u8], timeout: Duration) -> Result<(), ChannelError> {
        self.inner.send(packet, timeout)
    }

    fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, ChannelError> {
        let packet = self.inner.recv(timeout)?;
        self.seen.push(packet.clone());
        match self.seen.len() {
            3 => Ok(self.seen[1].clone()),
            _ => Ok(packet),
        }
    }
}

#[test]
fn replayed_record_is_rejected() {
    let sim = start("replay", Answer::Approve);
    let channel = Box::new(Replaying {
        inner: sim.transport().open().expect("open"),
        seen: Vec::new(),
    });
    let mut bridge = Bridge::connect_channel(channel, &sim.device_key(), Timeouts::default())
        .expect("handshake");
    bridge.status().expect("first status");
    let err = bridge.status().expect_err("replayed");
    assert!(
        matches!(err, BridgeError::AuthenticationFailed(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("replayed"), "{err}");
    assert!(!bridge.is_open(), "the connection is dropped");
    assert!(matches!(bridge.status(), Err(BridgeError::TransportClosed)));
}

/// A peer that answers every packet with fixed bytes, or hangs up.
struct Fake(Option<Vec<u8>>);

impl Channel for Fake {
    fn send(&mut self, _: &[u8], _: Duration) -> Result<(), ChannelError> {
        Ok(())
    }

    fn recv(&mut self, _: Duration) -> Result<Vec<u8>, ChannelError> {
        self.0.clone().ok_or(ChannelError::Closed)
    }
}

#[test]
fn version_mismatch_closed_transport_and_garbage() {
    let sim = start("fake", Answer::Approve);
    let key = sim.device_key();
    let connect = |fake: Fake| Bridge::connect_channel(Box::new(fake), &key, Timeouts::default());
    // A version-2 peer: postcard(2u16) then anything.
    match connect(Fake(Some(vec![2, 0, 0]))) {
        Err(BridgeError::VersionMismatch { ours: 1, theirs: 2 }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        connect(Fake(None)),
        Err(BridgeError::TransportClosed)
    ));
    assert!(matches!(
        connect(Fake(Some(vec![1, 0xff]))),
        Err(BridgeError::Protocol(_))
    ));
    let missing = Transport::Unix(sim.dir.join("nothing.sock"));
    let err = Bridge::connect(&missing, &key).expect_err("no socket");
    assert!(matches!(err, BridgeError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing.sock"), "{err}");
}
