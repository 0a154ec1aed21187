//! The payment app on the store: what it must not forget survives a
//! "reboot" (the store and the app rebuilt from the same flash).

use heapless::String;
use p256::ecdsa::SigningKey;
use payment_app::{ApproveError, PaymentApp, Policy};
use protocol::{CredentialId, Currency, ErrorCode, NONCE_LEN, PaymentRequest};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use secure_store::{SimFlash, Store, TestCounter};

type App<'a> = PaymentApp<Store<&'a mut SimFlash, &'a mut TestCounter, ChaCha20Rng>>;

fn boot<'a>(flash: &'a mut SimFlash, counter: &'a mut TestCounter) -> App<'a> {
    let store = Store::open(flash, counter, ChaCha20Rng::seed_from_u64(9), &[3; 32]).unwrap();
    let device = SigningKey::from_slice(&[0x11; 32]).unwrap();
    PaymentApp::new(device, store, Policy::default()).unwrap()
}

fn payment(credential: CredentialId) -> PaymentRequest {
    PaymentRequest {
        credential,
        amount_minor: 1250,
        currency: Currency::from_code("EUR").unwrap().into(),
        merchant: String::try_from("Corner Cafe").unwrap(),
        nonce: [0x5a; NONCE_LEN],
    }
}

#[test]
fn credentials_counter_and_pin_lockout_survive_a_reboot() {
    let mut flash = SimFlash::new(2, 256 * 1024, 4);
    let mut counter = TestCounter::default();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let credential = {
        let mut app = boot(&mut flash, &mut counter);
        assert_eq!(app.status().credentials, 0);
        let label = String::try_from("Visa ending 4242").unwrap();
        let credential = app.enroll(&label, &mut rng).unwrap().credential;
        app.begin_payment(&payment(credential), 0).unwrap();
        app.approve(None, 10).unwrap();
        credential
    };
    {
        let mut app = boot(&mut flash, &mut counter);
        let status = app.status();
        assert_eq!((status.credentials, status.transaction_counter), (1, 1));
        app.begin_payment(&payment(credential), 0).unwrap();
        app.approve(None, 10).unwrap();
        assert_eq!(app.status().transaction_counter, 2);
        app.set_pin("2468", &mut rng).unwrap();
        app.begin_payment(&payment(credential), 20).unwrap();
        assert_eq!(
            app.approve(Some("1111"), 30),
            Err(ApproveError::WrongPin { remaining: 2 })
        );
    }
    {
        // One wrong PIN is remembered: two more lock.
        let mut app = boot(&mut flash, &mut counter);
        assert!(app.status().pin_set);
        app.begin_payment(&payment(credential), 0).unwrap();
        assert_eq!(
            app.approve(Some("1111"), 1),
            Err(ApproveError::WrongPin { remaining: 1 })
        );
        assert_eq!(
            app.approve(Some("1111"), 2),
            Err(ApproveError::Finished(ErrorCode::Locked))
        );
        assert!(app.locked());
    }
    let mut app = boot(&mut flash, &mut counter);
    assert!(app.locked(), "a restart must not unlock the PIN");
    assert_eq!(
        app.begin_payment(&payment(credential), 0),
        Err(ErrorCode::Locked)
    );
    assert_eq!(app.status().transaction_counter, 2);
    let secret_on_flash = flash_contains_plain_label(&mut app);
    assert!(!secret_on_flash);
}

fn flash_contains_plain_label(app: &mut App<'_>) -> bool {
    let label = b"Visa ending 4242";
    app.storage_mut()
        .flash_mut()
        .bytes()
        .windows(label.len())
        .any(|w| w == label)
}
