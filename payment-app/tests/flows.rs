//! Payment flows end to end on the host: approve, decline, timeout, limits,
//! PIN lockout, counter, busy, persistence.

use coset::{CoseSign1, TaggedCborSerializable};
use heapless::String;
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use payment_app::*;
use protocol::signed::AuthorizationClaims;
use protocol::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

struct Fixture {
    app: PaymentApp<MemoryStorage>,
    rng: ChaCha20Rng,
    credential: CredentialId,
}

fn fixture() -> Fixture {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let device = SigningKey::generate_from_rng(&mut rng);
    let mut app = PaymentApp::new(device, MemoryStorage::default(), Policy::default()).unwrap();
    let label = String::try_from("Visa 1234").unwrap();
    let credential = app.enroll(&label, &mut rng).unwrap().credential;
    Fixture {
        app,
        rng,
        credential,
    }
}

fn payment(credential: CredentialId, amount_minor: u64) -> PaymentRequest {
    PaymentRequest {
        credential,
        amount_minor,
        currency: Currency::from_code("EUR").unwrap().into(),
        merchant: String::try_from("Coffee Corner").unwrap(),
        nonce: [0x5a; NONCE_LEN],
    }
}

fn claims(token: &[u8]) -> AuthorizationClaims {
    let sign1 = CoseSign1::from_tagged_slice(token).unwrap();
    AuthorizationClaims::decode(&sign1.payload.unwrap()).unwrap()
}

#[test]
fn approve_signs_what_was_shown() {
    let mut f = fixture();
    let prompt = f
        .app
        .begin_payment(&payment(f.credential, 1250), 1_000)
        .unwrap();
    assert_eq!(
        prompt.text.as_str(),
        "Pay\n12.50 EUR\nto Coffee Corner\nwith Visa 1234"
    );
    assert!(!prompt.pin_required);
    assert_eq!(prompt.deadline_ms, 61_000);
    assert!(f.app.status().busy);
    let token = f.app.approve(None, 2_000).unwrap();
    let c = claims(&token);
    assert_eq!(c.amount_minor, 1250);
    assert_eq!(c.counter, 1);
    assert_eq!(c.credential, f.credential);
    assert_eq!(c.nonce, [0x5a; NONCE_LEN]);
    use sha2::Digest;
    assert_eq!(
        c.displayed_text_sha256,
        <[u8; 32]>::from(sha2::Sha256::digest(prompt.text.as_bytes()))
    );
    assert!(!f.app.status().busy);
    assert_eq!(
        f.app.approve(None, 2_000),
        Err(ApproveError::NothingPending)
    );
}

#[test]
fn decline_and_timeout_end_the_approval() {
    let mut f = fixture();
    f.app.begin_payment(&payment(f.credential, 100), 0).unwrap();
    assert_eq!(f.app.decline(), Ok(ErrorCode::Declined));
    assert_eq!(f.app.decline(), Err(ApproveError::NothingPending));

    f.app.begin_payment(&payment(f.credential, 100), 0).unwrap();
    assert_eq!(f.app.poll(60_000), None);
    assert_eq!(f.app.poll(60_001), Some(ErrorCode::TimedOut));
    assert_eq!(f.app.poll(60_002), None);

    f.app.begin_payment(&payment(f.credential, 100), 0).unwrap();
    assert_eq!(
        f.app.approve(None, 60_001),
        Err(ApproveError::Finished(ErrorCode::TimedOut))
    );
    assert_eq!(f.app.status().transaction_counter, 0);
}

#[test]
fn second_request_is_busy() {
    let mut f = fixture();
    f.app.begin_payment(&payment(f.credential, 100), 0).unwrap();
    assert_eq!(
        f.app.begin_payment(&payment(f.credential, 200), 1),
        Err(ErrorCode::Busy)
    );
    let handled = f.app.handle(
        &Request::RequestPayment(payment(f.credential, 1)),
        &mut f.rng,
        2,
    );
    assert_eq!(handled, Handled::Reply(Err(ErrorCode::Busy)));
    assert_eq!(f.app.delete(&f.credential), Err(ErrorCode::Busy));
    // The first one is still intact.
    assert_eq!(claims(&f.app.approve(None, 3).unwrap()).amount_minor, 100);
}

#[test]
fn limits_per_transaction_and_per_day() {
    let mut f = fixture();
    let per_tx = Policy::default().per_transaction_minor;
    assert_eq!(
        f.app.begin_payment(&payment(f.credential, per_tx + 1), 0),
        Err(ErrorCode::LimitExceeded {
            limit: Limit::PerTransaction
        })
    );
    // Two at the per-transaction limit fill the daily limit exactly.
    for t in 0..2 {
        f.app
            .begin_payment(&payment(f.credential, per_tx), t)
            .unwrap();
        f.app.approve(None, t).unwrap();
    }
    assert_eq!(
        f.app.begin_payment(&payment(f.credential, 1), 10),
        Err(ErrorCode::LimitExceeded {
            limit: Limit::Daily
        })
    );
    // Other currencies have their own total; a day later the total resets.
    let mut chf = payment(f.credential, 1);
    chf.currency = Currency::from_code("CHF").unwrap().into();
    assert!(f.app.begin_payment(&chf, 10).is_ok());
    assert_eq!(f.app.decline(), Ok(ErrorCode::Declined));
    f.app
        .begin_payment(&payment(f.credential, 1), DAY_MS)
        .unwrap();
    f.app.approve(None, DAY_MS).unwrap();
    // Declined and timed-out payments do not count.
    assert_eq!(f.app.status().transaction_counter, 3);
}

#[test]
fn wrong_pin_three_times_locks() {
    let mut f = fixture();
    f.app.set_pin("2468", &mut f.rng).unwrap();
    assert_eq!(
        f.app.set_pin("12a4", &mut f.rng),
        Err(ErrorCode::InvalidRequest {
            field: Field::Encoding
        })
    );
    let prompt = f.app.begin_payment(&payment(f.credential, 100), 0).unwrap();
    assert!(prompt.pin_required);
    assert_eq!(
        f.app.approve(Some("1111"), 1),
        Err(ApproveError::WrongPin { remaining: 2 })
    );
    // The right PIN resets the count.
    f.app.approve(Some("2468"), 2).unwrap();

    f.app.begin_payment(&payment(f.credential, 100), 3).unwrap();
    assert_eq!(
        f.app.approve(Some("1111"), 4),
        Err(ApproveError::WrongPin { remaining: 2 })
    );
    assert_eq!(
        f.app.approve(None, 5),
        Err(ApproveError::WrongPin { remaining: 1 })
    );
    assert_eq!(
        f.app.approve(Some("246"), 6),
        Err(ApproveError::Finished(ErrorCode::Locked))
    );
    assert!(f.app.status().locked);
    assert_eq!(
        f.app.begin_payment(&payment(f.credential, 100), 7),
        Err(ErrorCode::Locked)
    );
    assert_eq!(f.app.set_pin("2468", &mut f.rng), Err(ErrorCode::Locked));
    assert_eq!(f.app.status().transaction_counter, 1);
}

#[test]
fn counter_strictly_increases_and_survives_a_reboot() {
    let mut f = fixture();
    let mut last = 0;
    for t in 0..4 {
        f.app.begin_payment(&payment(f.credential, 10), t).unwrap();
        let counter = claims(&f.app.approve(None, t).unwrap()).counter;
        assert!(counter > last);
        last = counter;
    }
    f.app.set_pin("0000", &mut f.rng).unwrap();
    f.app.begin_payment(&payment(f.credential, 10), 9).unwrap();
    let _ = f.app.approve(Some("9999"), 9);

    // Reboot: same storage, same device key.
    let storage = f.app.storage().clone();
    let device = SigningKey::generate_from_rng(&mut ChaCha20Rng::seed_from_u64(42));
    let mut app = PaymentApp::new(device, storage, Policy::default()).unwrap();
    assert_eq!(app.credentials().len(), 1);
    assert_eq!(app.status().transaction_counter, 4);
    app.begin_payment(&payment(f.credential, 10), 10).unwrap();
    assert_eq!(
        app.approve(Some("9999"), 11),
        Err(ApproveError::WrongPin { remaining: 1 })
    );
    assert_eq!(claims(&app.approve(Some("0000"), 12).unwrap()).counter, 5);
}

#[test]
fn storage_failure_changes_nothing() {
    let mut f = fixture();
    f.app.storage_mut().fail_writes = true;
    f.app.begin_payment(&payment(f.credential, 10), 0).unwrap();
    assert_eq!(
        f.app.approve(None, 0),
        Err(ApproveError::Finished(ErrorCode::StorageFailure))
    );
    assert_eq!(f.app.status().transaction_counter, 0);
    let label = String::try_from("Other").unwrap();
    assert_eq!(
        f.app.enroll(&label, &mut f.rng),
        Err(ErrorCode::StorageFailure)
    );
    assert_eq!(f.app.credentials().len(), 1);
}

#[test]
fn invalid_requests_name_the_field_and_unknown_credentials_are_refused() {
    let mut f = fixture();
    let mut bad = payment(f.credential, 10);
    bad.currency = CurrencyCode(*b"XYZ");
    assert_eq!(
        f.app.begin_payment(&bad, 0),
        Err(ErrorCode::InvalidRequest {
            field: Field::Currency
        })
    );
    assert_eq!(
        f.app.begin_payment(&payment([0; 16], 10), 0),
        Err(ErrorCode::UnknownCredential)
    );
    assert!(!f.app.status().busy);
}

#[test]
fn credential_lifecycle_and_other_requests() {
    let mut f = fixture();
    for n in 1..MAX_CREDENTIALS {
        let label = String::try_from(format!("Card {n}").as_str()).unwrap();
        f.app.enroll(&label, &mut f.rng).unwrap();
    }
    let label = String::try_from("One too many").unwrap();
    assert_eq!(
        f.app.enroll(&label, &mut f.rng),
        Err(ErrorCode::StorageFull)
    );
    assert_eq!(
        f.app
            .enroll(&String::try_from(" padded").unwrap(), &mut f.rng),
        Err(ErrorCode::InvalidRequest {
            field: Field::Label
        })
    );
    let Handled::Reply(Ok(Reply::Credentials(list))) =
        f.app.handle(&Request::ListCredentials, &mut f.rng, 0)
    else {
        panic!("no listing")
    };
    assert_eq!(list.len(), MAX_CREDENTIALS);
    let delete = Request::DeleteCredential {
        credential: f.credential,
    };
    assert_eq!(
        f.app.handle(&delete, &mut f.rng, 0),
        Handled::Reply(Ok(Reply::Deleted))
    );
    assert_eq!(
        f.app.handle(&delete, &mut f.rng, 0),
        Handled::Reply(Err(ErrorCode::UnknownCredential))
    );
    assert_eq!(f.app.credentials().len(), MAX_CREDENTIALS - 1);
    assert!(matches!(
        f.app
            .handle(&Request::Attest { nonce: [1; 32] }, &mut f.rng, 0),
        Handled::Reply(Ok(Reply::Attestation(_)))
    ));
    assert!(matches!(
        f.app.handle(&Request::Status, &mut f.rng, 0),
        Handled::Reply(Ok(Reply::Status(DeviceStatus { credentials: 7, .. })))
    ));
    assert_eq!(
        f.app
            .handle(&Request::Sealed(Default::default()), &mut f.rng, 0),
        Handled::Reply(Err(ErrorCode::InvalidRequest {
            field: Field::Encoding
        }))
    );
}

#[test]
fn setup_offers_three_words_and_keeps_the_chosen_one_and_the_pin() {
    let mut f = fixture();
    let words = match f.app.handle(&Request::Setup, &mut f.rng, 0) {
        Handled::Setup(words) => words,
        other => panic!("{other:?}"),
    };
    assert!(words[0] != words[1] && words[1] != words[2] && words[0] != words[2]);
    // While it waits, no payment and no second setup.
    assert!(matches!(
        f.app.handle(&Request::Setup, &mut f.rng, 0),
        Handled::Reply(Err(ErrorCode::Busy))
    ));
    assert_eq!(
        f.app.begin_payment(&payment(f.credential, 100), 0),
        Err(ErrorCode::Busy)
    );
    // A bad choice or PIN ends the setup and stores nothing.
    assert!(f.app.finish_setup(3, "2468", &mut f.rng).is_err());
    assert_eq!(f.app.security_word(), None);
    let words = match f.app.handle(&Request::Setup, &mut f.rng, 0) {
        Handled::Setup(words) => words,
        other => panic!("{other:?}"),
    };
    f.app.finish_setup(1, "2468", &mut f.rng).unwrap();
    assert_eq!(f.app.security_word(), Some(words[1].as_str()));
    assert!(f.app.status().pin_set);
    // Once set up, a setup is refused; a payment asks for the PIN.
    assert!(matches!(
        f.app.handle(&Request::Setup, &mut f.rng, 0),
        Handled::Reply(Err(ErrorCode::AlreadySetUp))
    ));
    let prompt = f.app.begin_payment(&payment(f.credential, 100), 0).unwrap();
    assert!(prompt.pin_required);
    assert!(matches!(
        f.app.approve(Some("1111"), 0),
        Err(ApproveError::WrongPin { remaining: 2 })
    ));
    assert!(f.app.approve(Some("2468"), 0).is_ok());
}

#[test]
fn a_cancelled_setup_changes_nothing() {
    let mut f = fixture();
    assert!(matches!(
        f.app.handle(&Request::Setup, &mut f.rng, 0),
        Handled::Setup(_)
    ));
    assert!(f.app.cancel_setup());
    assert!(!f.app.cancel_setup());
    assert_eq!(f.app.security_word(), None);
    assert!(!f.app.status().pin_set);
}

#[test]
fn a_state_stored_before_the_security_word_existed_still_loads() {
    // The previous layout: the same fields without the word at the end.
    #[derive(serde::Serialize)]
    struct V1<'a> {
        credentials: &'a heapless::Vec<payment_app::storage::StoredCredential, MAX_CREDENTIALS>,
        counter: u64,
        pin: Option<payment_app::storage::PinRecord>,
        pin_failures: u8,
        spending: payment_app::storage::Spending,
    }
    let mut f = fixture();
    f.app.set_pin("2468", &mut f.rng).unwrap();
    let mut state = PersistentState::default();
    let label = String::try_from("Old card").unwrap();
    state
        .credentials
        .push(payment_app::storage::StoredCredential {
            id: [5; 16],
            label,
            secret: [7; 32],
        })
        .unwrap();
    state.counter = 9;
    let old = V1 {
        credentials: &state.credentials,
        counter: 9,
        pin: None,
        pin_failures: 1,
        spending: Default::default(),
    };
    let blob = postcard::to_allocvec(&old).unwrap();
    let loaded = PersistentState::decode(&blob).expect("the old layout loads");
    assert_eq!(loaded.counter, 9);
    assert_eq!(loaded.pin_failures, 1);
    assert_eq!(loaded.credentials.len(), 1);
    assert_eq!(loaded.security_word, None);
    assert!(PersistentState::decode(&blob[..blob.len() - 1]).is_none());
}
