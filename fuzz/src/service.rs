//! The secure VM's request path, as the vsock driver drives it: the
//! secure-os `Switchboard` (connections, stream framing, outboxes) around
//! the payment `Service` (sessions, records, approvals) and `PaymentApp`.
//!
//! The rich VM connects to any port, sends raw bytes and frames in any
//! pieces, opens genuine sessions and sends sealed requests (arbitrary
//! plaintext or well-formed enrolments and payments), reads its answers in
//! any amounts, closes; the user approves, declines or lets time pass.
//!
//! Invariants after every step:
//! - at most `MAX_CONNECTIONS` connections and `MAX_SESSIONS` sessions;
//! - what a payment connection gets back is a clean stream of frames, each
//!   a response that decodes, and every sealed response opens in the
//!   client's session (the service never answers in another session);
//! - an echo connection gets back exactly its bytes, in order;
//! - an approval in flight belongs to an open connection.

use arbitrary::{Arbitrary, Unstructured};
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate;
use payment_app::service::{FrameReader, MAX_SESSIONS, encode_frame_header};
use payment_app::{MemoryStorage, PaymentApp, Policy, Service};
use protocol::session::{ClientHandshake, MAX_RECORD_LEN, Session};
use protocol::{
    CredentialId, CurrencyCode, FixedBytes, Label, MAX_MESSAGE_LEN, MAX_PACKET_LEN, Merchant,
    PaymentRequest, RecordBytes, Reply, Request, decode_response, encode_request,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use secure_os::server::{ECHO_PORT, Endpoint, MAX_CONNECTIONS, PAYMENT_PORT, Switchboard};

const ENDPOINTS: [Endpoint; 5] = [
    ep(50001, PAYMENT_PORT),
    ep(50002, PAYMENT_PORT),
    ep(50003, PAYMENT_PORT),
    ep(50004, ECHO_PORT),
    ep(50005, 7200),
];

const fn ep(peer_port: u32, local_port: u32) -> Endpoint {
    Endpoint {
        peer_cid: 3,
        peer_port,
        local_port,
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Accept(u8),
    /// Raw bytes on the stream.
    Raw(u8, Vec<u8>),
    /// One frame around arbitrary bytes, cut in two pieces.
    Frame(u8, Vec<u8>, u8),
    /// A genuine handshake.
    Open(u8),
    /// Arbitrary plaintext sealed in the connection's session.
    Sealed(u8, Vec<u8>),
    Enroll(u8),
    Pay(u8, u16, bool),
    List(u8),
    /// The peer reads at most this many bytes of its answers.
    Read(u8, u16),
    Close(u8),
    TakeDoomed,
    Approve(bool),
    Decline,
    /// Time passes (seconds).
    Wait(u8),
}

/// The rich VM's side of one endpoint.
#[derive(Default)]
struct Peer {
    session: Option<Session>,
    /// A handshake whose answer has not come yet.
    pending: Option<ClientHandshake>,
    reader: FrameReader,
    /// Echo: bytes sent and not yet seen back.
    echo: Vec<u8>,
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = encode_frame_header(packet.len()).expect("fits").to_vec();
    out.extend_from_slice(packet);
    out
}

fn request(req: &Request) -> Vec<u8> {
    let mut buf = [0u8; MAX_PACKET_LEN];
    framed(encode_request(req, &mut buf).expect("a request fits"))
}

fn seal(session: &mut Session, plain: &[u8]) -> Option<Vec<u8>> {
    let mut record = [0u8; MAX_RECORD_LEN];
    let len = session.seal(plain, &mut record).ok()?;
    let bytes = RecordBytes::from_slice(&record[..len]).ok()?;
    Some(request(&Request::Sealed(bytes)))
}

struct Harness {
    sb: Switchboard<MemoryStorage>,
    rng: ChaCha20Rng,
    key: SigningKey,
    peers: Vec<Peer>,
    now: u64,
    credential: Option<CredentialId>,
}

impl Harness {
    fn send(&mut self, i: usize, bytes: &[u8]) {
        let ep = ENDPOINTS[i];
        let open = self.sb.endpoints().any(|e| e == ep);
        let _ = self.sb.receive(ep, bytes, &mut self.rng, self.now);
        if open && ep.local_port == ECHO_PORT {
            self.peers[i].echo.extend_from_slice(bytes);
        }
    }

    /// The peer reads up to `limit` bytes of its answers and checks them.
    fn read(&mut self, i: usize, limit: usize) {
        let ep = ENDPOINTS[i];
        let mut got = Vec::new();
        while got.len() < limit {
            let chunk = self.sb.outbox(ep);
            if chunk.is_empty() {
                break;
            }
            let take = chunk.len().min(limit - got.len());
            got.extend_from_slice(&chunk[..take]);
            self.sb.sent(ep, take);
        }
        let peer = &mut self.peers[i];
        if ep.local_port == ECHO_PORT {
            assert!(peer.echo.starts_with(&got), "echo sent back other bytes");
            peer.echo.drain(..got.len());
            return;
        }
        peer.reader.push(&got);
        while let Some(packet) = peer
            .reader
            .next_frame()
            .expect("the service frames cleanly")
        {
            let response = decode_response(&packet).expect("every answer decodes");
            match response {
                Ok(Reply::SessionOpened(server)) => {
                    // A hello the fuzzer forged gets an answer this peer cannot use.
                    peer.session = peer
                        .pending
                        .take()
                        .map(|hs| hs.finish(&server.0).expect("a genuine server hello"));
                }
                Ok(Reply::Sealed(record)) => {
                    let session = peer
                        .session
                        .as_mut()
                        .expect("sealed answer without session");
                    let mut plain = [0u8; MAX_MESSAGE_LEN];
                    let len = session
                        .open(&record, &mut plain)
                        .expect("the answer is sealed in the client's session");
                    let inner = decode_response(&plain[..len]).expect("the sealed answer decodes");
                    if let Ok(Reply::Enrolled(record)) = inner {
                        self.credential = Some(record.credential);
                    }
                }
                _ => {}
            }
        }
    }

    fn sealed(&mut self, i: usize, req: &Request) {
        let mut plain = [0u8; MAX_MESSAGE_LEN];
        let Ok(encoded) = encode_request(req, &mut plain) else {
            return;
        };
        let encoded = encoded.to_vec();
        if let Some(bytes) = self.peers[i]
            .session
            .as_mut()
            .and_then(|s| seal(s, &encoded))
        {
            self.send(i, &bytes);
        }
    }

    fn forget_closed(&mut self) {
        for (i, ep) in ENDPOINTS.iter().enumerate() {
            if !self.sb.endpoints().any(|e| e == *ep) {
                self.peers[i] = Peer::default();
            }
        }
    }
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let key = SigningKey::generate_from_rng(&mut rng);
    let app = PaymentApp::new(key.clone(), MemoryStorage::default(), Policy::default())
        .expect("empty storage");
    let mut h = Harness {
        sb: Switchboard::new(Service::new(app, key.clone())),
        rng,
        key,
        peers: ENDPOINTS.iter().map(|_| Peer::default()).collect(),
        now: 0,
        credential: None,
    };
    for op in crate::ops::<Op>(&mut u, 48) {
        let pick = |i: u8| usize::from(i) % ENDPOINTS.len();
        match op {
            Op::Accept(i) => {
                let i = pick(i);
                if h.sb.accept(ENDPOINTS[i], h.now).is_ok() {
                    h.peers[i] = Peer::default();
                }
            }
            Op::Raw(i, bytes) => h.send(pick(i), &bytes),
            Op::Frame(i, bytes, cut) => {
                let frame = framed(&bytes[..bytes.len().min(MAX_PACKET_LEN)]);
                let cut = usize::from(cut) % (frame.len() + 1);
                h.send(pick(i), &frame[..cut]);
                h.send(pick(i), &frame[cut..]);
            }
            Op::Open(i) => {
                let i = pick(i);
                // Answers to earlier (forged) hellos first.
                h.read(i, usize::MAX);
                let (hs, hello) = ClientHandshake::start(&mut h.rng, h.key.verifying_key());
                h.peers[i].pending = Some(hs);
                h.send(i, &request(&Request::OpenSession(FixedBytes(hello))));
                h.read(i, usize::MAX);
            }
            Op::Sealed(i, plain) => {
                let i = pick(i);
                if let Some(bytes) = h.peers[i].session.as_mut().and_then(|s| seal(s, &plain)) {
                    h.send(i, &bytes);
                }
            }
            Op::Enroll(i) => {
                let label = Label::try_from("Visa ending 4242").expect("fits");
                h.sealed(pick(i), &Request::Enroll { label });
            }
            Op::Pay(i, amount, bad_credential) => {
                let credential = match (h.credential, bad_credential) {
                    (Some(c), false) => c,
                    _ => [7; 16],
                };
                let payment = PaymentRequest {
                    credential,
                    amount_minor: u64::from(amount),
                    currency: CurrencyCode(*b"EUR"),
                    merchant: Merchant::try_from("Corner Cafe").expect("fits"),
                    nonce: [9; 32],
                };
                h.sealed(pick(i), &Request::RequestPayment(payment));
            }
            Op::List(i) => h.sealed(pick(i), &Request::ListCredentials),
            Op::Read(i, limit) => h.read(pick(i), usize::from(limit)),
            Op::Close(i) => {
                let i = pick(i);
                let _ = h.sb.closed(ENDPOINTS[i]);
            }
            Op::TakeDoomed => {
                for doomed in h.sb.take_doomed() {
                    assert!(
                        h.sb.outbox(doomed).is_empty(),
                        "a doomed connection lives on"
                    );
                }
            }
            Op::Approve(pin) => {
                let _ = h.sb.approve(pin.then_some("1234"), h.now);
            }
            Op::Decline => {
                let _ = h.sb.decline();
            }
            Op::Wait(s) => {
                h.now += u64::from(s) * 1000;
                let _ = h.sb.poll(h.now);
            }
        }
        h.forget_closed();
        assert!(h.sb.connections() <= MAX_CONNECTIONS);
        assert!(h.sb.service().sessions() <= MAX_SESSIONS);
        if h.sb.service().in_flight().is_some() {
            assert!(h.sb.connections() > 0, "an approval for no connection");
        }
    }
    // At the end every peer reads everything that is left.
    for i in 0..ENDPOINTS.len() {
        h.read(i, usize::MAX);
    }
}
