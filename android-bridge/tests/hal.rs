//! The payment HAL (`dev.mvmm.IPayment`) against the simulator's real secure
//! side, in one process: the service object is called through its binder
//! interface (a local binder: rsbinder calls the object directly, so these
//! tests check the HAL's logic, not the kernel's transport; the QEMU test
//! `tests/tests/android.rs` crosses the real driver).

#![cfg(target_os = "linux")]

mod common;

use std::thread;
use std::time::Duration;

use android_bridge::hal::{HalClient, HalConfig, PaymentHal};
use android_bridge::{BridgeError, PaymentRequest, Timeouts};
use common::{Sim, start, start_with};
use mvmm_sim::{Answer, Input};
use payment_aidl::{self as aidl, BnPayment, ErrorCode, IPayment};
use payment_app::Policy;
use rsbinder::{ExceptionCode, Status, Strong};

const NONCE: [u8; 32] = [0x5a; 32];

fn hal(sim: &Sim, allowed_uids: Vec<u32>) -> Strong<dyn IPayment> {
    BnPayment::new_binder(PaymentHal::new(HalConfig {
        transport: sim.transport(),
        device_key: sim.device_key(),
        timeouts: Timeouts::default(),
        allowed_uids,
    }))
}

/// Outside a binder transaction the calling uid is the process's own.
fn own_uid() -> u32 {
    rsbinder::thread_state::get_calling_uid()
}

fn client(sim: &Sim) -> HalClient {
    HalClient::from_service(hal(sim, vec![own_uid()]), &sim.device_key())
}

fn payment(credential: [u8; 16], amount: &str) -> PaymentRequest {
    PaymentRequest::new(credential, amount, "EUR", "Corner Cafe", NONCE).expect("valid request")
}

fn wire(credential: Vec<u8>) -> aidl::PaymentRequest {
    aidl::PaymentRequest {
        credential,
        amountMinor: 1250,
        currency: "EUR".into(),
        merchant: "Corner Cafe".into(),
        nonce: NONCE.to_vec(),
    }
}

#[track_caller]
fn service_error(status: Status) -> (ErrorCode, String) {
    assert_eq!(
        status.exception_code(),
        ExceptionCode::ServiceSpecific,
        "{status:?}"
    );
    let code = status.service_error::<ErrorCode>().expect("a known code");
    (code, status.message().unwrap_or_default().to_string())
}

#[test]
fn an_approved_payment_through_the_hal_verifies() {
    let sim = start("hal-approve", Answer::Approve);
    let client = client(&sim);
    let record = client.enroll("Visa ending 4242").expect("enroll");
    let card_key = mvmm_verify::verify_enrollment(&sim.device_key().0, &record).expect("signed");
    let list = client.list_credentials().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].credential, record.credential);

    let authorization = client
        .request_payment(&payment(record.credential, "12.50"))
        .expect("approved");
    let expected = mvmm_verify::Expected {
        nonce: NONCE,
        amount_minor: 1250,
        currency: protocol::Currency::from_code("EUR").expect("EUR"),
        merchant: "Corner Cafe",
        last_counter: 0,
        credential: Some(record.credential),
    };
    let token = mvmm_verify::parse_token(&authorization.token).expect("a token");
    let claims = mvmm_verify::verify_token(&token, &card_key, &expected).expect("verifies");
    assert_eq!(claims.counter, 1);

    let status = client.status().expect("status");
    assert_eq!((status.credentials, status.transaction_counter), (1, 1));
    let attestation = client.attest(&NONCE).expect("attest");
    mvmm_verify::attestation::verify_evidence(&sim.device_key().0, &NONCE, &attestation.eat)
        .expect("attestation verifies");
    client
        .delete_credential(&record.credential)
        .expect("delete");
    let err = client
        .delete_credential(&record.credential)
        .expect_err("gone");
    assert!(
        matches!(&err, BridgeError::UnknownCredential(id) if *id == hex::encode(record.credential)),
        "{err:?}"
    );
}

#[test]
fn a_declined_payment_is_the_same_error_as_over_vsock() {
    let sim = start("hal-decline", Answer::Decline);
    let client = client(&sim);
    let credential = client
        .enroll("Visa ending 4242")
        .expect("enroll")
        .credential;
    let err = client
        .request_payment(&payment(credential, "12.50"))
        .expect_err("declined");
    assert!(matches!(err, BridgeError::DeclinedByUser), "{err:?}");
    assert_eq!(err.to_string(), "declined by user");
}

#[test]
fn malformed_arguments_are_refused_naming_the_value() {
    let sim = start("hal-malformed", Answer::Approve);
    let service = hal(&sim, vec![own_uid()]);
    let long = "M".repeat(100_000);
    let cases: Vec<(aidl::PaymentRequest, &str)> = vec![
        (wire(vec![1; 15]), "credential is 15 bytes, need 16"),
        (wire(Vec::new()), "credential is 0 bytes, need 16"),
        (
            aidl::PaymentRequest {
                amountMinor: -5,
                ..wire(vec![1; 16])
            },
            "amountMinor -5 is negative",
        ),
        (
            aidl::PaymentRequest {
                currency: "EURO".into(),
                ..wire(vec![1; 16])
            },
            "currency is 4 bytes, at most 3: \"EURO\"",
        ),
        (
            aidl::PaymentRequest {
                currency: "XYZ".into(),
                ..wire(vec![1; 16])
            },
            "XYZ",
        ),
        (
            aidl::PaymentRequest {
                merchant: long.clone(),
                ..wire(vec![1; 16])
            },
            "merchant is 100000 bytes, at most 32",
        ),
        (
            aidl::PaymentRequest {
                merchant: " Corner".into(),
                ..wire(vec![1; 16])
            },
            "\" Corner\"",
        ),
        (
            aidl::PaymentRequest {
                nonce: vec![0; 32],
                ..wire(vec![1; 16])
            },
            "must not be all zero",
        ),
        (
            aidl::PaymentRequest {
                nonce: vec![7; 33],
                ..wire(vec![1; 16])
            },
            "nonce is 33 bytes, need 32",
        ),
    ];
    for (request, names) in cases {
        let (code, message) = service_error(service.requestPayment(&request).expect_err("refused"));
        assert_eq!(code, ErrorCode::INVALID_ARGUMENT, "{message}");
        assert!(message.contains(names), "{message:?} should name {names:?}");
        assert!(
            message.len() < 200,
            "bounded message: {} bytes",
            message.len()
        );
    }
    let (code, message) = service_error(service.enroll(&long).expect_err("refused"));
    assert_eq!(code, ErrorCode::INVALID_ARGUMENT);
    assert!(
        message.starts_with("label is 100000 bytes, at most 24"),
        "{message}"
    );
    let (code, message) = service_error(service.enroll("tab\there").expect_err("refused"));
    assert_eq!(code, ErrorCode::INVALID_ARGUMENT);
    assert!(message.contains("tab\\there"), "{message}");
    let (_, message) = service_error(service.deleteCredential(&[1, 2, 3]).expect_err("refused"));
    assert_eq!(message, "credential is 3 bytes, need 16");
    let (_, message) = service_error(service.attest(&[9; 31]).expect_err("refused"));
    assert_eq!(message, "nonce is 31 bytes, need 32");
    // A well-formed request for a credential that does not exist reaches the
    // secure VM, which refuses it.
    let (code, _) = service_error(
        service
            .requestPayment(&wire(vec![1; 16]))
            .expect_err("unknown"),
    );
    assert_eq!(code, ErrorCode::UNKNOWN_CREDENTIAL);
}

#[test]
fn a_caller_outside_the_allowed_uids_is_refused_before_anything_else() {
    let sim = start("hal-uid", Answer::Approve);
    let stranger = own_uid().wrapping_add(1);
    let service = hal(&sim, vec![stranger]);
    // Refused even with malformed arguments: nothing is looked at first.
    let status = service
        .requestPayment(&wire(vec![1; 3]))
        .expect_err("refused");
    assert_eq!(status.exception_code(), ExceptionCode::Security);
    let message = status.message().unwrap_or_default();
    assert!(
        message.contains(&format!("caller uid {} ", own_uid())),
        "{message}"
    );
    let client = HalClient::from_service(service, &sim.device_key());
    let err = client.status().expect_err("refused");
    assert!(matches!(err, BridgeError::Binder(_)), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("binder: the payment HAL refused this caller: status: caller uid"),
        "{err}"
    );
}

#[test]
fn a_second_caller_while_a_payment_waits_is_busy() {
    let policy = Policy {
        approval_timeout_ms: 600,
        ..Policy::default()
    };
    let sim = start_with("hal-busy", Input::Silent, policy, None);
    let service = hal(&sim, vec![own_uid()]);
    let key = sim.device_key();
    let first = HalClient::from_service(service.clone(), &key);
    let credential = first.enroll("Visa ending 4242").expect("enroll").credential;
    let waiting = thread::spawn(move || first.request_payment(&payment(credential, "3.00")));
    thread::sleep(Duration::from_millis(200));
    let second = HalClient::from_service(service.clone(), &key);
    let err = second.status().expect_err("busy");
    assert!(matches!(err, BridgeError::Busy), "{err:?}");
    let err = waiting
        .join()
        .expect("thread")
        .expect_err("nobody answered");
    assert!(matches!(err, BridgeError::ApprovalTimedOut), "{err:?}");
    // The HAL's session survives the user's timeout and serves the next call.
    assert_eq!(second.status().expect("status").credentials, 1);
}

#[test]
fn an_unreachable_secure_vm_is_named_in_the_error() {
    let sim = start("hal-unreachable", Answer::Approve);
    let service = BnPayment::new_binder(PaymentHal::new(HalConfig {
        transport: "unix:/nonexistent/mvmm-payment.sock"
            .parse()
            .expect("transport"),
        device_key: sim.device_key(),
        timeouts: Timeouts::default(),
        allowed_uids: vec![own_uid()],
    }));
    let client = HalClient::from_service(service, &sim.device_key());
    let err = client.status().expect_err("unreachable");
    assert!(
        matches!(&err, BridgeError::Hal { code, message }
            if *code == ErrorCode::SECURE_VM_UNREACHABLE.0
                && message.contains("/nonexistent/mvmm-payment.sock")),
        "{err:?}"
    );
}
