//! Fuzzes the session record layer: arbitrary records are rejected without
//! panicking, a rejected record never changes the session, and a record
//! sealed by the peer and then mutated by the fuzzer opens only if unchanged.

use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use protocol::session::{ClientHandshake, MAX_PLAINTEXT_LEN, MAX_RECORD_LEN, Session, accept};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

fn pair() -> (Session, Session) {
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let device = SigningKey::generate_from_rng(&mut rng);
    let (client, hello) = ClientHandshake::start(&mut rng, device.verifying_key());
    let (server, server_hello) = accept(&mut rng, &device, &hello).expect("handshake");
    (client.finish(&server_hello).expect("handshake"), server)
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let (mut client, mut server) = pair();
    let mut plain = [0u8; MAX_PLAINTEXT_LEN];
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Raw bytes straight into the receiver.
        assert!(server.open(rest, &mut plain).is_err());
    } else if let Some((&flip, message)) = rest.split_first() {
        // A genuine record with one byte XORed by `flip`.
        let mut record = [0u8; MAX_RECORD_LEN];
        let Ok(len) = client.seal(message, &mut record) else {
            return;
        };
        let genuine = record;
        let at = usize::from(mode >> 1) % len;
        record[at] ^= flip;
        let opened = server.open(&record[..len], &mut plain);
        assert_eq!(opened.is_ok(), flip == 0);
        if flip != 0 {
            // The rejection left the session ready for the genuine record.
            assert_eq!(server.open(&genuine[..len], &mut plain), Ok(message.len()));
        }
    }
}
