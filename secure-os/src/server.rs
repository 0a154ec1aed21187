//! The secure VM's services over vsock, without the device: a switchboard
//! that owns the payment [`Service`], one entry per accepted connection, the
//! stream framing and every connection's pending output. Pure logic,
//! host-tested; the image moves bytes between it and the vsock driver.
//!
//! - Port [`PAYMENT_PORT`] (7100): `u32 BE length || packet` frames
//!   (`payment_app::service` framing) into [`Service::handle`]; replies and
//!   completions go back framed the same way.
//! - Port [`ECHO_PORT`] (7101): every byte is sent back (benchmarks).
//!
//! Bad input is a problem of its connection only: an undecodable packet is
//! answered with an error by the service; a frame header announcing more
//! than `MAX_FRAME_LEN` puts the stream out of step, so that connection is
//! closed ([`Switchboard::take_doomed`]). A peer that does not read its
//! answers is closed once [`MAX_OUTBOX`] bytes wait for it.
//!
//! Dead connections cannot fill the service: one that says nothing for
//! [`IDLE_TIMEOUT_MS`] (and has no approval in flight) is closed, and when
//! the table is full a new connection takes the place of the longest-idle
//! one of the peer with the most connections (at most [`MAX_PER_PEER`]
//! each), so a clean client can always connect. The connections of a rich
//! VM that resets are reset by mvmm's switch anyway.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use payment_app::service::{
    ApproveStep, Completion, FrameReader, NothingPending, Outcome, Output, UiPrompt,
    encode_frame_header,
};
use payment_app::{ConnectionId, Service, SetupWords, Storage};

/// What a request asks of the trusted UI.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per request, never stored"
)]
pub enum Ui {
    /// Show this payment for approval.
    Payment(UiPrompt),
    /// Set the trusted path up: the user chooses one of these words and a
    /// PIN (answer with [`Switchboard::finish_setup`] or
    /// [`Switchboard::decline`]).
    Setup(SetupWords),
    /// The connection whose approval (or setup) the user is being asked
    /// for broke the protocol and is being reset: the approval is over,
    /// close its prompt as when the peer closes.
    Cancelled,
}

impl Ui {
    /// The payment to approve, if this is one.
    pub fn payment(self) -> Option<UiPrompt> {
        match self {
            Ui::Payment(p) => Some(p),
            Ui::Setup(_) | Ui::Cancelled => None,
        }
    }
}
use rand_core::CryptoRng;

/// The services' vsock ports (`protocol::ports`, shared with the bridge).
pub use protocol::ports::{ECHO_PORT, PAYMENT_PORT};
/// Most connections open at once (both ports together).
pub const MAX_CONNECTIONS: usize = 16;
/// Most connections of one peer (CID) at once.
pub const MAX_PER_PEER: usize = 12;
/// A connection that sends nothing for this long, with no approval in
/// flight, is closed.
pub const IDLE_TIMEOUT_MS: u64 = 60_000;
/// Most bytes waiting to be sent to one peer before it is closed.
pub const MAX_OUTBOX: usize = 256 * 1024;
/// Above this much pending output, a connection's input is left unread
/// (the peer runs out of vsock credit and waits).
pub const INPUT_PAUSE: usize = 64 * 1024;

/// One vsock connection, as the device names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The peer's CID (stamped by mvmm).
    pub peer_cid: u64,
    /// The peer's port.
    pub peer_port: u32,
    /// Our port.
    pub local_port: u32,
}

/// Why a connection was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No service on that port.
    Port,
    /// [`MAX_CONNECTIONS`] are open and none can give way (each has an
    /// approval in flight).
    Full,
    /// The connection is already open.
    Exists,
}

#[derive(Debug)]
enum Kind {
    Payment {
        id: ConnectionId,
        reader: FrameReader,
    },
    Echo,
}

#[derive(Debug)]
struct Conn {
    endpoint: Endpoint,
    kind: Kind,
    outbox: VecDeque<u8>,
    doomed: bool,
    /// When the peer last sent bytes (or connected).
    last_active_ms: u64,
}

/// What the user's answer (or the timeout) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// The approval is over; its answer is queued for the peer (if still there).
    Done(Outcome),
    /// Wrong PIN: ask again.
    WrongPin {
        /// Tries left before the lockout.
        remaining: u8,
    },
    /// No approval was in flight.
    NothingPending,
}

/// Counters for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections refused (port, full).
    pub refused: u64,
    /// Payment frames handled.
    pub frames: u64,
    /// Connections closed for a protocol violation or a full outbox.
    pub violations: u64,
    /// Connections closed to make room for a new one.
    pub evicted: u64,
    /// Connections closed for saying nothing for [`IDLE_TIMEOUT_MS`].
    pub idle: u64,
}

/// The services and their connections.
///
/// # Invariants
/// At most [`MAX_CONNECTIONS`] entries, one per endpoint; payment
/// connection ids are never reused.
pub struct Switchboard<S: Storage> {
    service: Service<S>,
    conns: Vec<Conn>,
    next_id: u64,
    stats: Stats,
    /// Connections closed here that the device must still reset.
    closed_here: Vec<Endpoint>,
}

impl<S: Storage> Switchboard<S> {
    /// A switchboard around the payment service.
    pub fn new(service: Service<S>) -> Self {
        Switchboard {
            service,
            conns: Vec::new(),
            next_id: 1,
            stats: Stats::default(),
            closed_here: Vec::new(),
        }
    }

    /// The payment service.
    pub fn service(&self) -> &Service<S> {
        &self.service
    }

    /// The payment service, mutably (PIN setup).
    pub fn service_mut(&mut self) -> &mut Service<S> {
        &mut self.service
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Every open connection.
    pub fn endpoints(&self) -> impl Iterator<Item = Endpoint> + '_ {
        self.conns.iter().map(|c| c.endpoint)
    }

    /// A peer connected at `now_ms`; `Err` means: reset it. When the table
    /// (or the peer's share) is full, the longest-idle connection of the
    /// peer with the most connections gives way ([`Self::take_doomed`]
    /// names it for a reset).
    pub fn accept(&mut self, endpoint: Endpoint, now_ms: u64) -> Result<(), Refused> {
        let kind = match endpoint.local_port {
            PAYMENT_PORT => {
                let id = ConnectionId(self.next_id);
                Kind::Payment {
                    id,
                    reader: FrameReader::new(),
                }
            }
            ECHO_PORT => Kind::Echo,
            _ => {
                self.stats.refused += 1;
                return Err(Refused::Port);
            }
        };
        if self.conns.iter().any(|c| c.endpoint == endpoint) {
            return Err(Refused::Exists);
        }
        let of_peer =
            |conns: &[Conn], cid: u64| conns.iter().filter(|c| c.endpoint.peer_cid == cid).count();
        let mine = of_peer(&self.conns, endpoint.peer_cid);
        if mine >= MAX_PER_PEER || self.conns.len() >= MAX_CONNECTIONS {
            // The peer that crowds the table gives way: this one when at its
            // share, else the one with the most connections.
            let crowding = if mine >= MAX_PER_PEER {
                endpoint.peer_cid
            } else {
                self.conns
                    .iter()
                    .map(|c| c.endpoint.peer_cid)
                    .max_by_key(|&cid| of_peer(&self.conns, cid))
                    .unwrap_or(endpoint.peer_cid)
            };
            let in_flight = self.service.in_flight();
            let victim = self
                .conns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.endpoint.peer_cid == crowding)
                .filter(
                    |(_, c)| !matches!(c.kind, Kind::Payment { id, .. } if Some(id) == in_flight),
                )
                .min_by_key(|(_, c)| c.last_active_ms)
                .map(|(i, _)| i);
            let Some(victim) = victim else {
                self.stats.refused += 1;
                return Err(Refused::Full);
            };
            let gone = self.conns.swap_remove(victim);
            if let Kind::Payment { id, .. } = gone.kind {
                let _ = self.service.close(id);
            }
            self.stats.evicted += 1;
            self.closed_here.push(gone.endpoint);
        }
        if matches!(kind, Kind::Payment { .. }) {
            self.next_id += 1;
        }
        self.stats.accepted += 1;
        self.conns.push(Conn {
            endpoint,
            kind,
            outbox: VecDeque::new(),
            doomed: false,
            last_active_ms: now_ms,
        });
        Ok(())
    }

    /// Whether the connection's input should be read now (it is open, not
    /// doomed, and not too far behind on output).
    pub fn wants_input(&self, endpoint: Endpoint) -> bool {
        self.conns
            .iter()
            .find(|c| c.endpoint == endpoint)
            .is_some_and(|c| !c.doomed && c.outbox.len() < INPUT_PAUSE)
    }

    /// Bytes arrived on `endpoint`. Returns what to show when a request
    /// needs the user (a payment to approve, or the setup), or
    /// [`Ui::Cancelled`] when these bytes broke the protocol on the
    /// connection whose approval is on screen.
    pub fn receive<R: CryptoRng + ?Sized>(
        &mut self,
        endpoint: Endpoint,
        bytes: &[u8],
        rng: &mut R,
        now_ms: u64,
    ) -> Option<Ui> {
        let conn = self.conns.iter_mut().find(|c| c.endpoint == endpoint)?;
        if conn.doomed {
            return None;
        }
        conn.last_active_ms = conn.last_active_ms.max(now_ms);
        let mut prompt = None;
        match &mut conn.kind {
            Kind::Echo => conn.outbox.extend(bytes),
            Kind::Payment { id, reader } => {
                reader.push(bytes);
                loop {
                    match reader.next_frame() {
                        Ok(None) => break,
                        Ok(Some(packet)) => {
                            self.stats.frames += 1;
                            match self.service.handle(*id, &packet, rng, now_ms) {
                                Output::Reply(reply) => push_frame(&mut conn.outbox, &reply),
                                Output::Prompt(p) => prompt = Some(Ui::Payment(p)),
                                Output::Setup(words) => prompt = Some(Ui::Setup(words)),
                            }
                        }
                        Err(_) => {
                            conn.doomed = true;
                            break;
                        }
                    }
                }
            }
        }
        if conn.outbox.len() > MAX_OUTBOX {
            conn.doomed = true;
        }
        if conn.doomed {
            self.stats.violations += 1;
            // Its approval, if any, ends with the connection: one asked for
            // by these very bytes was never shown; an earlier one is on
            // screen and must close.
            if let Kind::Payment { id, .. } = conn.kind
                && self.service.close(id)
                && prompt.is_none()
            {
                return Some(Ui::Cancelled);
            }
            return None;
        }
        prompt
    }

    /// The connection is gone (peer reset/shutdown, or we closed it).
    /// Returns true when this cancelled the approval in flight.
    pub fn closed(&mut self, endpoint: Endpoint) -> bool {
        let Some(index) = self.conns.iter().position(|c| c.endpoint == endpoint) else {
            return false;
        };
        let conn = self.conns.swap_remove(index);
        match conn.kind {
            Kind::Payment { id, .. } => self.service.close(id),
            Kind::Echo => false,
        }
    }

    /// Closes the connections that said nothing for [`IDLE_TIMEOUT_MS`]
    /// (not the one whose approval is in flight); [`Self::take_doomed`]
    /// names them.
    pub fn expire_idle(&mut self, now_ms: u64) {
        let in_flight = self.service.in_flight();
        for conn in &mut self.conns {
            let busy = matches!(conn.kind, Kind::Payment { id, .. } if Some(id) == in_flight);
            if !busy
                && !conn.doomed
                && now_ms.saturating_sub(conn.last_active_ms) >= IDLE_TIMEOUT_MS
            {
                conn.doomed = true;
                self.stats.idle += 1;
            }
        }
    }

    /// Connections to reset now (protocol violation, full outbox, idle,
    /// evicted); they are forgotten here.
    pub fn take_doomed(&mut self) -> Vec<Endpoint> {
        let mut doomed: Vec<Endpoint> = core::mem::take(&mut self.closed_here);
        let violating: Vec<Endpoint> = self
            .conns
            .iter()
            .filter(|c| c.doomed)
            .map(|c| c.endpoint)
            .collect();
        for endpoint in &violating {
            self.closed(*endpoint);
        }
        doomed.extend(violating);
        doomed
    }

    /// The next bytes to send to `endpoint` (possibly empty).
    pub fn outbox(&self, endpoint: Endpoint) -> &[u8] {
        self.conns
            .iter()
            .find(|c| c.endpoint == endpoint)
            .map_or(&[], |c| c.outbox.as_slices().0)
    }

    /// `count` bytes of the outbox were sent.
    pub fn sent(&mut self, endpoint: Endpoint, count: usize) {
        if let Some(conn) = self.conns.iter_mut().find(|c| c.endpoint == endpoint) {
            let count = count.min(conn.outbox.len());
            conn.outbox.drain(..count);
        }
    }

    /// The user approved.
    pub fn approve(&mut self, pin: Option<&str>, now_ms: u64) -> Approval {
        match self.service.approve(pin, now_ms) {
            Ok(ApproveStep::Done(completion)) => Approval::Done(self.deliver(completion)),
            Ok(ApproveStep::WrongPin { remaining }) => Approval::WrongPin { remaining },
            Err(NothingPending) => Approval::NothingPending,
        }
    }

    /// The user chose word `choice` and a PIN in the setup in flight.
    pub fn finish_setup<R: CryptoRng + ?Sized>(
        &mut self,
        choice: usize,
        pin: &str,
        rng: &mut R,
    ) -> Approval {
        match self.service.finish_setup(choice, pin, rng) {
            Ok(completion) => Approval::Done(self.deliver(completion)),
            Err(NothingPending) => Approval::NothingPending,
        }
    }

    /// The user declined.
    pub fn decline(&mut self) -> Approval {
        match self.service.decline() {
            Ok(completion) => Approval::Done(self.deliver(completion)),
            Err(NothingPending) => Approval::NothingPending,
        }
    }

    /// Ends an approval whose deadline passed.
    pub fn poll(&mut self, now_ms: u64) -> Option<Outcome> {
        let completion = self.service.poll(now_ms)?;
        Some(self.deliver(completion))
    }

    fn deliver(&mut self, completion: Completion) -> Outcome {
        let target = self.conns.iter_mut().find(|c| match c.kind {
            Kind::Payment { id, .. } => id == completion.connection,
            Kind::Echo => false,
        });
        if let Some(conn) = target {
            push_frame(&mut conn.outbox, &completion.packet);
        }
        completion.outcome
    }
}

fn push_frame(outbox: &mut VecDeque<u8>, packet: &[u8]) {
    // Every packet the service produces fits a frame; one that did not
    // would be dropped rather than sent out of step.
    if let Some(header) = encode_frame_header(packet.len()) {
        outbox.extend(header);
        outbox.extend(packet);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::elliptic_curve::Generate;
    use payment_app::service::MAX_FRAME_LEN;
    use payment_app::{MemoryStorage, PaymentApp, Policy};
    use protocol::session::{ClientHandshake, Session};
    use protocol::{
        ErrorCode, FixedBytes, Label, MAX_MESSAGE_LEN, MAX_PACKET_LEN, PaymentRequest, RecordBytes,
        Reply, Request, Response, decode_response, encode_request,
    };
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::vec;

    const A: Endpoint = Endpoint {
        peer_cid: 3,
        peer_port: 50001,
        local_port: PAYMENT_PORT,
    };
    const B: Endpoint = Endpoint {
        peer_cid: 3,
        peer_port: 50002,
        local_port: PAYMENT_PORT,
    };

    fn board(rng: &mut ChaCha20Rng) -> (Switchboard<MemoryStorage>, SigningKey) {
        let key = SigningKey::generate_from_rng(rng);
        let app = PaymentApp::new(key.clone(), MemoryStorage::default(), Policy::default())
            .expect("empty");
        (Switchboard::new(Service::new(app, key.clone())), key)
    }

    /// `packet` framed as on the payment stream (length, then the packet).
    pub(crate) fn frame(packet: &[u8]) -> Vec<u8> {
        let mut out = encode_frame_header(packet.len()).expect("fits").to_vec();
        out.extend_from_slice(packet);
        out
    }

    /// `request`, encoded and framed.
    pub(crate) fn request(request: &Request) -> Vec<u8> {
        let mut buf = [0u8; MAX_PACKET_LEN];
        frame(encode_request(request, &mut buf).expect("fits"))
    }

    /// Takes every complete frame out of the endpoint's outbox.
    fn replies(sb: &mut Switchboard<MemoryStorage>, ep: Endpoint) -> Vec<Vec<u8>> {
        let mut reader = FrameReader::new();
        loop {
            let bytes = sb.outbox(ep).to_vec();
            if bytes.is_empty() {
                break;
            }
            sb.sent(ep, bytes.len());
            reader.push(&bytes);
        }
        let mut out = Vec::new();
        while let Some(packet) = reader.next_frame().expect("well framed") {
            out.push(packet);
        }
        out
    }

    fn open(
        sb: &mut Switchboard<MemoryStorage>,
        rng: &mut ChaCha20Rng,
        key: &SigningKey,
        ep: Endpoint,
    ) -> Session {
        sb.accept(ep, 0).expect("accepted");
        let (hs, hello) = ClientHandshake::start(rng, key.verifying_key());
        let bytes = request(&Request::OpenSession(FixedBytes(hello)));
        // Split the frame in three pieces, header cut in the middle.
        assert!(sb.receive(ep, &bytes[..2], rng, 0).is_none());
        assert!(sb.receive(ep, &bytes[2..9], rng, 0).is_none());
        assert!(replies(sb, ep).is_empty());
        assert!(sb.receive(ep, &bytes[9..], rng, 0).is_none());
        let out = replies(sb, ep);
        assert_eq!(out.len(), 1);
        match decode_response(&out[0]).expect("decodes") {
            Ok(Reply::SessionOpened(server)) => hs.finish(&server.0).expect("handshake"),
            other => panic!("{other:?}"),
        }
    }

    fn sealed(session: &mut Session, req: &Request) -> Vec<u8> {
        let mut plain = [0u8; MAX_MESSAGE_LEN];
        let encoded = encode_request(req, &mut plain).expect("fits");
        let mut record = [0u8; protocol::session::MAX_RECORD_LEN];
        let len = session.seal(encoded, &mut record).expect("seal");
        request(&Request::Sealed(
            RecordBytes::from_slice(&record[..len]).expect("fits"),
        ))
    }

    fn unseal(session: &mut Session, packet: &[u8]) -> Response {
        match decode_response(packet).expect("decodes") {
            Ok(Reply::Sealed(record)) => {
                let mut plain = [0u8; MAX_MESSAGE_LEN];
                let len = session.open(&record, &mut plain).expect("opens");
                decode_response(&plain[..len]).expect("inner")
            }
            other => other,
        }
    }

    fn call(
        sb: &mut Switchboard<MemoryStorage>,
        rng: &mut ChaCha20Rng,
        ep: Endpoint,
        session: &mut Session,
        req: &Request,
    ) -> Response {
        assert!(sb.receive(ep, &sealed(session, req), rng, 0).is_none());
        let out = replies(sb, ep);
        assert_eq!(out.len(), 1);
        unseal(session, &out[0])
    }

    #[test]
    fn payment_end_to_end_with_busy_second_connection() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (mut sb, key) = board(&mut rng);
        let mut sa = open(&mut sb, &mut rng, &key, A);
        let mut sbb = open(&mut sb, &mut rng, &key, B);
        let label = Label::try_from("Visa ending 4242").expect("fits");
        let Ok(Reply::Enrolled(record)) =
            call(&mut sb, &mut rng, A, &mut sa, &Request::Enroll { label })
        else {
            panic!("enroll");
        };
        let payment = Request::RequestPayment(PaymentRequest {
            credential: record.credential,
            amount_minor: 1250,
            currency: protocol::CurrencyCode(*b"EUR"),
            merchant: protocol::Merchant::try_from("Corner Cafe").expect("fits"),
            nonce: [9; 32],
        });
        let prompt = sb
            .receive(A, &sealed(&mut sa, &payment), &mut rng, 0)
            .and_then(Ui::payment)
            .expect("prompt");
        assert_eq!(
            prompt.prompt.text.as_str(),
            "Pay\n12.50 EUR\nto Corner Cafe\nwith Visa ending 4242"
        );
        assert!(replies(&mut sb, A).is_empty());
        assert_eq!(
            call(&mut sb, &mut rng, B, &mut sbb, &payment),
            Err(ErrorCode::Busy)
        );
        assert_eq!(sb.approve(None, 5), Approval::Done(Outcome::Approved));
        let out = replies(&mut sb, A);
        assert!(matches!(unseal(&mut sa, &out[0]), Ok(Reply::Authorized(_))));
        assert_eq!(sb.decline(), Approval::NothingPending);

        // Closing the waiting connection cancels its approval.
        assert!(
            sb.receive(B, &sealed(&mut sbb, &payment), &mut rng, 10)
                .is_some()
        );
        assert!(sb.closed(B));
        assert_eq!(sb.service().in_flight(), None);
        assert_eq!(sb.connections(), 1);
    }

    #[test]
    fn garbage_floods_are_answered_and_do_not_hurt_others() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (mut sb, key) = board(&mut rng);
        let mut sa = open(&mut sb, &mut rng, &key, A);
        sb.accept(B, 0).expect("accepted");
        let mut flood = Vec::new();
        for i in 0..500u32 {
            let junk: Vec<u8> = (0..(i % 40)).map(|j| (i * 7 + j) as u8).collect();
            flood.extend(frame(&junk));
        }
        for chunk in flood.chunks(333) {
            assert!(sb.receive(B, chunk, &mut rng, 0).is_none());
            replies(&mut sb, B);
        }
        assert!(sb.take_doomed().is_empty());
        assert_eq!(sb.stats().frames, 501);
        assert!(matches!(
            call(&mut sb, &mut rng, A, &mut sa, &Request::Status),
            Ok(Reply::Status(_))
        ));
    }

    #[test]
    fn oversized_frames_close_only_that_connection() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (mut sb, key) = board(&mut rng);
        let mut sa = open(&mut sb, &mut rng, &key, A);
        sb.accept(B, 0).expect("accepted");
        let too_long = u32::try_from(MAX_FRAME_LEN + 1).expect("small");
        assert!(
            sb.receive(B, &too_long.to_be_bytes(), &mut rng, 0)
                .is_none()
        );
        assert!(!sb.wants_input(B));
        assert_eq!(sb.take_doomed(), vec![B]);
        assert_eq!(sb.connections(), 1);
        assert_eq!(sb.stats().violations, 1);
        assert!(matches!(
            call(&mut sb, &mut rng, A, &mut sa, &Request::Status),
            Ok(Reply::Status(_))
        ));
    }

    #[test]
    fn echo_and_limits() {
        let mut rng = ChaCha20Rng::seed_from_u64(10);
        let (mut sb, _) = board(&mut rng);
        let echo = Endpoint {
            local_port: ECHO_PORT,
            ..A
        };
        sb.accept(echo, 0).expect("accepted");
        assert_eq!(sb.accept(echo, 0), Err(Refused::Exists));
        sb.receive(echo, b"ping", &mut rng, 0);
        assert_eq!(sb.outbox(echo), b"ping");
        sb.sent(echo, 2);
        assert_eq!(sb.outbox(echo), b"ng");
        let big = vec![0x55u8; INPUT_PAUSE];
        sb.receive(echo, &big, &mut rng, 0);
        assert!(!sb.wants_input(echo));
        let other = Endpoint {
            local_port: 22,
            ..A
        };
        assert_eq!(sb.accept(other, 0), Err(Refused::Port));
        // A peer that never reads is closed.
        sb.receive(echo, &vec![0u8; MAX_OUTBOX], &mut rng, 0);
        assert_eq!(sb.take_doomed(), vec![echo]);
    }

    #[test]
    fn dead_connections_never_lock_out_a_clean_client() {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let (mut sb, key) = board(&mut rng);
        // Another VM's connection, opened first.
        let other = Endpoint { peer_cid: 5, ..A };
        sb.accept(other, 0).expect("accepted");
        // A payment waits for the user on one rich connection.
        let mut sa = open(&mut sb, &mut rng, &key, A);
        let label = Label::try_from("Visa ending 4242").expect("fits");
        let Ok(Reply::Enrolled(record)) =
            call(&mut sb, &mut rng, A, &mut sa, &Request::Enroll { label })
        else {
            panic!("enroll");
        };
        let payment = Request::RequestPayment(PaymentRequest {
            credential: record.credential,
            amount_minor: 100,
            currency: protocol::CurrencyCode(*b"EUR"),
            merchant: protocol::Merchant::try_from("Shop").expect("fits"),
            nonce: [1; 32],
        });
        assert!(
            sb.receive(A, &sealed(&mut sa, &payment), &mut rng, 1)
                .is_some()
        );
        // Rounds of "open 16 and leave them": every one is accepted; the
        // rich VM's oldest give way; the other VM and the approval stay.
        for round in 0..3u32 {
            for i in 0..MAX_CONNECTIONS as u32 {
                let ep = Endpoint {
                    peer_port: 10_000 + round * 100 + i,
                    ..A
                };
                sb.accept(ep, u64::from(10 + round * 100 + i))
                    .expect("room made");
                assert!(sb.connections() <= MAX_CONNECTIONS);
                assert!(sb.endpoints().filter(|e| e.peer_cid == 3).count() <= MAX_PER_PEER);
            }
            let doomed = sb.take_doomed();
            assert!(
                !doomed.contains(&A) && !doomed.contains(&other),
                "{doomed:?}"
            );
        }
        assert!(sb.endpoints().any(|e| e == A));
        assert!(sb.endpoints().any(|e| e == other));
        assert!(sb.stats().evicted >= 2 * MAX_CONNECTIONS as u64);
        assert!(sb.service().in_flight().is_some());
        // A clean client connects and is served.
        let clean = Endpoint { peer_port: 1, ..A };
        let mut sc = open(&mut sb, &mut rng, &key, clean);
        assert!(matches!(
            call(&mut sb, &mut rng, clean, &mut sc, &Request::Status),
            Ok(Reply::Status(_))
        ));
    }

    #[test]
    fn idle_connections_are_closed() {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (mut sb, _) = board(&mut rng);
        let echo = |port| Endpoint {
            peer_port: port,
            local_port: ECHO_PORT,
            ..A
        };
        sb.accept(echo(1), 0).expect("accepted");
        sb.accept(echo(2), 0).expect("accepted");
        sb.receive(echo(2), b"still here", &mut rng, IDLE_TIMEOUT_MS - 1);
        sb.expire_idle(IDLE_TIMEOUT_MS - 1);
        assert!(sb.take_doomed().is_empty());
        sb.expire_idle(IDLE_TIMEOUT_MS);
        assert_eq!(sb.take_doomed(), vec![echo(1)]);
        assert_eq!(sb.connections(), 1);
        sb.expire_idle(2 * IDLE_TIMEOUT_MS);
        assert_eq!(sb.take_doomed(), vec![echo(2)]);
        assert_eq!(sb.stats().idle, 2);
    }
}
