//! Handshake and record-layer tests: success, and every rejection leaving the
//! session untouched.

use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use proptest::prelude::*;
use protocol::session::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn pair(seed: u64) -> (Session, Session) {
    let mut rng = rng(seed);
    let device = SigningKey::generate_from_rng(&mut rng);
    let (client, hello) = ClientHandshake::start(&mut rng, device.verifying_key());
    let (server, server_hello) = accept(&mut rng, &device, &hello).unwrap();
    (client.finish(&server_hello).unwrap(), server)
}

fn seal(session: &mut Session, msg: &[u8]) -> Vec<u8> {
    let mut out = [0u8; MAX_RECORD_LEN];
    let n = session.seal(msg, &mut out).unwrap();
    out[..n].to_vec()
}

fn open(session: &mut Session, record: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut out = [0u8; MAX_PLAINTEXT_LEN];
    session.open(record, &mut out).map(|n| out[..n].to_vec())
}

#[test]
fn both_directions_carry_messages() {
    let (mut client, mut server) = pair(1);
    for i in 0..5u8 {
        let r = seal(&mut client, &[i; 10]);
        assert_eq!(open(&mut server, &r).unwrap(), [i; 10]);
        let r = seal(&mut server, &[i; 3]);
        assert_eq!(open(&mut client, &r).unwrap(), [i; 3]);
    }
    let r = seal(&mut client, &[]);
    assert_eq!(open(&mut server, &r).unwrap(), Vec::<u8>::new());
    let big = [0xaa; MAX_PLAINTEXT_LEN];
    let r = seal(&mut client, &big);
    assert_eq!(r.len(), MAX_RECORD_LEN);
    assert_eq!(open(&mut server, &r).unwrap(), big);
}

#[test]
fn a_record_does_not_open_in_the_other_direction_or_session() {
    let (mut client, _server) = pair(2);
    let r = seal(&mut client, b"hello");
    assert_eq!(open(&mut client, &r), Err(RecordError::Tampered));
    let (_c2, mut other_server) = pair(3);
    assert_eq!(open(&mut other_server, &r), Err(RecordError::Tampered));
}

#[test]
fn every_rejection_is_distinct_and_leaves_the_session_usable() {
    let (mut client, mut server) = pair(4);
    let first = seal(&mut client, b"one");
    let second = seal(&mut client, b"two");
    let third = seal(&mut client, b"three");

    assert_eq!(open(&mut server, &second), Err(RecordError::OutOfOrder));
    assert_eq!(
        open(&mut server, &first[..MIN_RECORD_LEN - 1]),
        Err(RecordError::Truncated)
    );
    assert_eq!(
        open(&mut server, &[0; MAX_RECORD_LEN + 1]),
        Err(RecordError::Oversized)
    );
    let mut tampered = first.clone();
    tampered[RECORD_HEADER_LEN] ^= 1;
    assert_eq!(open(&mut server, &tampered), Err(RecordError::Tampered));
    // Cut off the last byte: still long enough, so authentication catches it.
    assert_eq!(
        open(&mut server, &first[..first.len() - 1]),
        Err(RecordError::Tampered)
    );
    assert_eq!(open(&mut server, &first), Ok(b"one".to_vec()));
    assert_eq!(open(&mut server, &first), Err(RecordError::Replayed));
    let mut small = [0u8; 2];
    assert_eq!(
        server.open(&second, &mut small),
        Err(RecordError::BufferTooSmall)
    );
    assert_eq!(open(&mut server, &second), Ok(b"two".to_vec()));
    assert_eq!(open(&mut server, &third), Ok(b"three".to_vec()));

    let mut out = [0u8; MAX_RECORD_LEN + 1];
    assert_eq!(
        client.seal(&[0; MAX_PLAINTEXT_LEN + 1], &mut out),
        Err(RecordError::Oversized)
    );
    assert_eq!(
        client.seal(b"x", &mut [0; MIN_RECORD_LEN]),
        Err(RecordError::BufferTooSmall)
    );
    // Failed seals consumed no sequence number.
    let r = seal(&mut client, b"four");
    assert_eq!(open(&mut server, &r), Ok(b"four".to_vec()));
}

#[test]
fn handshake_rejects_the_wrong_device_and_bad_messages() {
    let mut rng = rng(5);
    let device = SigningKey::generate_from_rng(&mut rng);
    let impostor = SigningKey::generate_from_rng(&mut rng);

    let (client, hello) = ClientHandshake::start(&mut rng, device.verifying_key());
    let (_, forged) = accept(&mut rng, &impostor, &hello).unwrap();
    assert!(matches!(
        client.finish(&forged),
        Err(HandshakeError::BadSignature)
    ));

    let (client, hello) = ClientHandshake::start(&mut rng, device.verifying_key());
    let (_, good) = accept(&mut rng, &device, &hello).unwrap();
    for at in [0, 1, protocol::PUBLIC_KEY_LEN, SERVER_HELLO_LEN - 1] {
        let (c, _) = ClientHandshake::start(&mut rng, device.verifying_key());
        let mut bad = good;
        bad[at] ^= 0x40;
        assert!(c.finish(&bad).is_err(), "flip at {at}");
    }
    assert!(matches!(
        client.finish(&good[1..]),
        Err(HandshakeError::WrongLength)
    ));

    assert!(matches!(
        accept(&mut rng, &device, &hello[1..]),
        Err(HandshakeError::WrongLength)
    ));
    let mut not_a_point = hello;
    not_a_point[10] ^= 1;
    assert!(matches!(
        accept(&mut rng, &device, &not_a_point),
        Err(HandshakeError::InvalidPublicKey)
    ));
    assert!(matches!(
        accept(&mut rng, &device, &[0; CLIENT_HELLO_LEN]),
        Err(HandshakeError::InvalidPublicKey)
    ));
    // The secure side keeps serving new sessions after all of the above.
    let (client, hello) = ClientHandshake::start(&mut rng, device.verifying_key());
    let (_, server_hello) = accept(&mut rng, &device, &hello).unwrap();
    assert!(client.finish(&server_hello).is_ok());
}

#[test]
#[ignore = "timing report; run with --release -- --ignored --nocapture"]
fn handshake_timing() {
    let mut rng = rng(6);
    let device = SigningKey::generate_from_rng(&mut rng);
    let rounds = 50;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        let (client, hello) = ClientHandshake::start(&mut rng, device.verifying_key());
        let (_, server_hello) = accept(&mut rng, &device, &hello).unwrap();
        client.finish(&server_hello).unwrap();
    }
    println!("full session handshake: {:?}", start.elapsed() / rounds);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_flipped_bit_is_rejected(
        msg in proptest::collection::vec(any::<u8>(), 0..200),
        bit in any::<usize>(),
    ) {
        let (mut client, mut server) = pair(7);
        let record = seal(&mut client, &msg);
        let mut bad = record.clone();
        let bit = bit % (bad.len() * 8);
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(open(&mut server, &bad).is_err());
        // And the untouched record still opens afterwards.
        prop_assert_eq!(open(&mut server, &record), Ok(msg));
    }

    #[test]
    fn arbitrary_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1100)) {
        let (_, mut server) = pair(8);
        prop_assert!(open(&mut server, &bytes).is_err());
    }
}
