//! Round trips, negative vectors and properties of the message codec.

use heapless::{String, Vec};
use proptest::prelude::*;
use protocol::session::{CLIENT_HELLO_LEN, SERVER_HELLO_LEN};
use protocol::signed::AuthorizationClaims;
use protocol::*;

fn merchant(s: &str) -> Merchant {
    String::try_from(s).unwrap()
}

fn payment() -> PaymentRequest {
    PaymentRequest {
        credential: [7; CREDENTIAL_ID_LEN],
        amount_minor: 1999,
        currency: Currency::from_code("EUR").unwrap().into(),
        merchant: merchant("Coffee Corner"),
        nonce: [9; NONCE_LEN],
    }
}

fn every_request() -> std::vec::Vec<Request> {
    vec![
        Request::OpenSession(FixedBytes([4; CLIENT_HELLO_LEN])),
        Request::Sealed(Vec::from_slice(&[1, 2, 3]).unwrap()),
        Request::Enroll {
            label: String::try_from("Visa 1234").unwrap(),
        },
        Request::ListCredentials,
        Request::DeleteCredential {
            credential: [3; CREDENTIAL_ID_LEN],
        },
        Request::RequestPayment(payment()),
        Request::Attest {
            nonce: [5; NONCE_LEN],
        },
        Request::Status,
    ]
}

fn every_response() -> std::vec::Vec<Response> {
    let info = CredentialInfo {
        credential: [1; CREDENTIAL_ID_LEN],
        label: String::try_from("Card").unwrap(),
        public_key: FixedBytes([4; PUBLIC_KEY_LEN]),
    };
    let mut ok = vec![
        Reply::SessionOpened(FixedBytes([2; SERVER_HELLO_LEN])),
        Reply::Sealed(Vec::from_slice(&[0; 40]).unwrap()),
        Reply::Enrolled(EnrollmentRecord {
            credential: info.credential,
            label: info.label.clone(),
            public_key: info.public_key,
            signature: FixedBytes([8; SIGNATURE_LEN]),
        }),
        Reply::Credentials(Vec::from_iter(core::iter::repeat_n(info, MAX_CREDENTIALS))),
        Reply::Deleted,
        Reply::Authorized(Vec::from_slice(&[0xd2; MAX_TOKEN_LEN]).unwrap()),
        Reply::Attestation(Attestation {
            eat: Vec::from_slice(&[0xd2; MAX_ATTESTATION_LEN]).unwrap(),
        }),
        Reply::Status(DeviceStatus {
            protocol_version: PROTOCOL_VERSION,
            credentials: 2,
            pin_set: true,
            locked: false,
            busy: true,
            transaction_counter: u64::MAX,
        }),
    ]
    .into_iter()
    .map(Ok)
    .collect::<std::vec::Vec<Response>>();
    ok.extend(
        [
            ErrorCode::VersionMismatch { supported: 1 },
            ErrorCode::InvalidRequest {
                field: Field::Merchant,
            },
            ErrorCode::UnknownCredential,
            ErrorCode::Busy,
            ErrorCode::Declined,
            ErrorCode::TimedOut,
            ErrorCode::LimitExceeded {
                limit: Limit::Daily,
            },
            ErrorCode::Locked,
            ErrorCode::StorageFull,
            ErrorCode::StorageFailure,
            ErrorCode::SessionRequired,
            ErrorCode::BadRecord,
            ErrorCode::Internal,
        ]
        .map(Err),
    );
    ok
}

#[test]
fn every_request_round_trips() {
    let mut buf = [0u8; MAX_PACKET_LEN];
    for request in every_request() {
        let bytes = encode_request(&request, &mut buf).unwrap();
        assert_eq!(decode_request(bytes), Ok(request));
    }
}

#[test]
fn every_response_round_trips_and_fits_a_record() {
    let mut buf = [0u8; MAX_PACKET_LEN];
    for response in every_response() {
        let bytes = encode_response(&response, &mut buf).unwrap();
        if !matches!(response, Ok(Reply::Sealed(_))) {
            assert!(bytes.len() <= MAX_MESSAGE_LEN, "{response:?}");
        }
        assert_eq!(decode_response(bytes), Ok(response));
    }
}

#[test]
fn every_message_rejects_truncation_and_trailing_bytes() {
    let mut buf = [0u8; MAX_PACKET_LEN];
    for request in every_request() {
        let bytes = encode_request(&request, &mut buf).unwrap().to_vec();
        for cut in 0..bytes.len() {
            assert!(
                decode_request(&bytes[..cut]).is_err(),
                "{request:?} cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode_request(&longer), Err(DecodeError::TrailingBytes));
    }
    for response in every_response() {
        let bytes = encode_response(&response, &mut buf).unwrap().to_vec();
        for cut in 0..bytes.len() {
            assert!(
                decode_response(&bytes[..cut]).is_err(),
                "{response:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn negative_vectors() {
    // Empty packet, other versions, unknown variant, oversized packet.
    assert_eq!(decode_request(&[]), Err(DecodeError::MissingVersion));
    assert_eq!(
        decode_request(&[2, 7]),
        Err(DecodeError::VersionMismatch { got: 2 })
    );
    assert_eq!(
        ErrorCode::from(DecodeError::VersionMismatch { got: 2 }),
        ErrorCode::VersionMismatch {
            supported: PROTOCOL_VERSION
        }
    );
    assert_eq!(decode_request(&[1, 99]), Err(DecodeError::Malformed));
    assert_eq!(
        decode_request(&[0u8; MAX_PACKET_LEN + 1]),
        Err(DecodeError::TooLarge)
    );
    // Status is variant 7 and has no body.
    assert_eq!(decode_request(&[1, 7]), Ok(Request::Status));
    // Enroll (variant 2) with a label one byte too long, and with bad UTF-8.
    let mut long = vec![1, 2, (MAX_LABEL_LEN + 1) as u8];
    long.extend(std::iter::repeat_n(b'a', MAX_LABEL_LEN + 1));
    assert_eq!(decode_request(&long), Err(DecodeError::Malformed));
    assert_eq!(
        decode_request(&[1, 2, 2, 0xc3, 0x28]),
        Err(DecodeError::Malformed)
    );
    // A sealed record claiming a gigantic length.
    assert_eq!(
        decode_request(&[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        Err(DecodeError::Malformed)
    );
    // The smallest encoding of a payment request with a merchant 33 bytes long.
    let mut buf = [0u8; MAX_PACKET_LEN];
    let good = encode_request(&Request::RequestPayment(payment()), &mut buf)
        .unwrap()
        .to_vec();
    let merchant_at = 2 + CREDENTIAL_ID_LEN + 2 + 3;
    let mut long_merchant = good[..merchant_at].to_vec();
    long_merchant.push(33);
    long_merchant.extend([b'x'; 33]);
    long_merchant.extend([9; NONCE_LEN]);
    assert_eq!(decode_request(&long_merchant), Err(DecodeError::Malformed));
}

#[test]
fn payment_validation_names_the_bad_field() {
    let field = |f| Err(ErrorCode::InvalidRequest { field: f });
    assert_eq!(
        payment().validate(),
        Ok(Currency::from_code("EUR").unwrap())
    );
    let mut p = payment();
    p.amount_minor = 0;
    assert_eq!(p.validate(), field(Field::Amount));
    p.amount_minor = MAX_AMOUNT_MINOR + 1;
    assert_eq!(p.validate(), field(Field::Amount));
    let mut p = payment();
    p.currency = CurrencyCode(*b"XXX");
    assert_eq!(p.validate(), field(Field::Currency));
    p.currency = CurrencyCode([0xff, b'U', b'R']);
    assert_eq!(p.validate(), field(Field::Currency));
    for bad in ["", " Shop", "Shop ", "Sh\u{7f}op", "Caf\u{e9}", "a\nb"] {
        let mut p = payment();
        p.merchant = merchant(bad);
        assert_eq!(p.validate(), field(Field::Merchant), "{bad:?}");
    }
    let mut p = payment();
    p.nonce = [0; NONCE_LEN];
    assert_eq!(p.validate(), field(Field::Nonce));
    assert!(Request::Sealed(Vec::new()).allowed_in_clear());
    assert!(!Request::Status.allowed_in_clear());
}

#[test]
fn claims_round_trip_and_reject_trailing_bytes() {
    let claims = AuthorizationClaims {
        credential: [1; CREDENTIAL_ID_LEN],
        amount_minor: MAX_AMOUNT_MINOR,
        currency: CurrencyCode(*b"KWD"),
        merchant: merchant(&"M".repeat(MAX_MERCHANT_LEN)),
        displayed_text_sha256: [2; 32],
        nonce: [3; NONCE_LEN],
        counter: u64::MAX,
    };
    let bytes = claims.encode().unwrap();
    assert_eq!(AuthorizationClaims::decode(&bytes), Some(claims));
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(AuthorizationClaims::decode(&longer), None);
    assert_eq!(AuthorizationClaims::decode(&bytes[..bytes.len() - 1]), None);
}

fn printable(max: usize) -> impl Strategy<Value = std::string::String> {
    proptest::string::string_regex(&format!("[ -~]{{0,{max}}}")).unwrap()
}

prop_compose! {
    fn any_payment()(
        credential in any::<[u8; 16]>(),
        amount_minor in any::<u64>(),
        currency in any::<[u8; 3]>(),
        merchant in printable(MAX_MERCHANT_LEN),
        nonce in any::<[u8; 32]>(),
    ) -> PaymentRequest {
        PaymentRequest {
            credential, amount_minor, currency: CurrencyCode(currency),
            merchant: String::try_from(merchant.as_str()).unwrap(), nonce,
        }
    }
}

fn any_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|credential| Request::DeleteCredential { credential }),
        any::<[u8; 32]>().prop_map(|nonce| Request::Attest { nonce }),
        printable(MAX_LABEL_LEN).prop_map(|l| Request::Enroll {
            label: String::try_from(l.as_str()).unwrap()
        }),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|r| Request::Sealed(Vec::from_slice(&r).unwrap())),
        any_payment().prop_map(Request::RequestPayment),
        Just(Request::Status),
        Just(Request::ListCredentials),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_round_trip(request in any_request()) {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let bytes = encode_request(&request, &mut buf).unwrap();
        prop_assert_eq!(decode_request(bytes), Ok(request));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_request(&bytes);
        let _ = decode_response(&bytes);
        let _ = AuthorizationClaims::decode(&bytes);
    }

    #[test]
    fn mutated_requests_never_panic(request in any_request(), at in any::<usize>(), byte in any::<u8>()) {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let mut bytes = encode_request(&request, &mut buf).unwrap().to_vec();
        let at = at % bytes.len();
        bytes[at] = byte;
        let _ = decode_request(&bytes).map(|r| if let Request::RequestPayment(p) = r { let _ = p.validate(); });
    }
}
