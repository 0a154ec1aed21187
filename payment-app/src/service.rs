//! The secure-side endpoint: sessions, records and requests in, sealed responses out.
//!
//! [`Service`] joins [`protocol::session`] to [`PaymentApp`]. It is sans-IO and
//! transport-agnostic: the transport (virtio-vsock in the secure OS, a Unix
//! socket in the host simulator) hands it one packet at a time together with
//! a [`ConnectionId`] it chose, and sends back what the service returns.
//!
//! # Sessions
//! - A connection opens a session with `Request::OpenSession` (in the clear);
//!   the service answers `Reply::SessionOpened`, signed by the device key.
//!   Opening again on the same connection replaces its session (unless an
//!   approval of that session is in flight: `Busy`).
//! - At most [`MAX_SESSIONS`] sessions live at once. When full, the least
//!   recently used session without an approval in flight is dropped; if all
//!   of them await an approval (only one can), the new one gets `Busy`.
//! - Every other request travels in a `Request::Sealed` record; its response
//!   goes back sealed in the same session. A record that does not open
//!   (tampered, replayed, out of order, truncated) is answered in the clear
//!   with `Err(BadRecord)` and changes nothing: the session, every other
//!   session and the app keep working.
//!
//! # Approvals
//! A valid payment request does not get an answer right away: the service
//! returns [`Output::Prompt`], the secure OS shows the trusted UI, and the
//! user's answer comes back through [`Service::approve`],
//! [`Service::decline`] or [`Service::poll`] (timeout). Each returns a
//! [`Completion`]: the sealed response and the connection it goes to. Only
//! one approval is in flight at a time (the app answers `Busy` to others).
//! Closing the connection ([`Service::close`]) cancels its approval.
//!
//! # Framing
//! On a byte stream (vsock `SOCK_STREAM`, Unix socket) each packet travels as
//! `u32 BE length || packet` (`protocol::framing`); [`FrameReader`]
//! reassembles packets from the pieces a stream delivers.

use alloc::vec::Vec;
use zeroize::Zeroize as _;

use p256::ecdsa::SigningKey;
use protocol::session::{self, Session};
use protocol::{
    ErrorCode, FixedBytes, MAX_MESSAGE_LEN, MAX_PACKET_LEN, PaymentRequest, RecordBytes, Reply,
    Request, Response, decode_request, encode_response,
};
use rand_core::CryptoRng;

use crate::app::{ApprovalPrompt, ApproveError, Handled, PaymentApp, SetupWords};
use crate::storage::Storage;

/// Most sessions the service keeps at once.
pub const MAX_SESSIONS: usize = 4;
pub use protocol::framing::{
    FRAME_HEADER_LEN, FrameTooLong, MAX_FRAME_LEN, decode_frame_header, encode_frame_header,
};

/// Names one connection of the transport (a vsock peer port, a socket).
/// The transport chooses it; the service only compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// What the service made of one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per packet, never stored"
)]
pub enum Output {
    /// Send this packet back on the same connection.
    Reply(Vec<u8>),
    /// Nothing to send yet: show this approval on the trusted UI, then call
    /// [`Service::approve`], [`Service::decline`] or [`Service::poll`].
    Prompt(UiPrompt),
    /// Nothing to send yet: show the setup (choose one of these words, then
    /// a PIN) on the trusted UI, then call [`Service::finish_setup`] or
    /// [`Service::decline`].
    Setup(SetupWords),
}

/// Everything the trusted UI needs to draw the approval screen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UiPrompt {
    /// The app's prompt: the exact text that gets signed, PIN, deadline.
    pub prompt: ApprovalPrompt,
    /// The request as the relying party sent it (validated).
    pub request: PaymentRequest,
    /// The label of the credential that pays.
    pub credential_label: protocol::Label,
}

/// The user's answer (or the timeout) turned into a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Where the response goes.
    pub connection: ConnectionId,
    /// The framed-ready packet (a sealed response).
    pub packet: Vec<u8>,
    /// What happened, for the trusted UI's result screen.
    pub outcome: Outcome,
}

/// How an approval ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Declined,
    TimedOut,
    /// Too many wrong PINs.
    Locked,
    /// Another error ended it (storage failure, limit reached meanwhile...).
    Failed(ErrorCode),
}

/// What [`Service::approve`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApproveStep {
    /// The approval is over; send the packet.
    Done(Completion),
    /// Wrong PIN: ask again; the approval is still pending.
    WrongPin { remaining: u8 },
}

/// No approval is in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NothingPending;

/// One live session.
struct Slot {
    connection: ConnectionId,
    session: Session,
    last_used: u64,
}

/// The secure side of the channel.
///
/// # Invariants
/// At most [`MAX_SESSIONS`] slots, at most one per connection; `in_flight`
/// names a connection that has a slot exactly while the app has a pending
/// approval started from it.
pub struct Service<S: Storage> {
    app: PaymentApp<S>,
    device_key: SigningKey,
    slots: Vec<Slot>,
    in_flight: Option<ConnectionId>,
    clock: u64,
}

impl<S: Storage> Service<S> {
    /// Serves `app`; `device_key` signs the handshakes (the app's own key).
    pub fn new(app: PaymentApp<S>, device_key: SigningKey) -> Self {
        Service {
            app,
            device_key,
            slots: Vec::new(),
            in_flight: None,
            clock: 0,
        }
    }

    /// The payment app (for the trusted UI: PIN setup, status).
    pub fn app(&self) -> &PaymentApp<S> {
        &self.app
    }

    /// Mutable access to the payment app (for `set_pin` from the trusted UI).
    pub fn app_mut(&mut self) -> &mut PaymentApp<S> {
        &mut self.app
    }

    /// Number of live sessions.
    pub fn sessions(&self) -> usize {
        self.slots.len()
    }

    /// The connection whose approval is in flight.
    pub fn in_flight(&self) -> Option<ConnectionId> {
        self.in_flight
    }

    /// Handles one packet from `connection`.
    pub fn handle<R: CryptoRng + ?Sized>(
        &mut self,
        connection: ConnectionId,
        packet: &[u8],
        rng: &mut R,
        now_ms: u64,
    ) -> Output {
        let request = match decode_request(packet) {
            Ok(request) => request,
            Err(error) => return Output::Reply(clear(&Err(error.into()))),
        };
        match request {
            Request::OpenSession(hello) => {
                Output::Reply(clear(&self.open(connection, &hello.0, rng)))
            }
            Request::Sealed(record) => self.sealed(connection, &record, rng, now_ms),
            _ => Output::Reply(clear(&Err(ErrorCode::SessionRequired))),
        }
    }

    /// The transport lost `connection`: drops its session and cancels its
    /// approval. Returns true when an approval was cancelled (the trusted
    /// UI must close its prompt).
    pub fn close(&mut self, connection: ConnectionId) -> bool {
        self.slots.retain(|s| s.connection != connection);
        if self.in_flight == Some(connection) {
            self.in_flight = None;
            let _ = self.app.decline();
            self.app.cancel_setup();
            return true;
        }
        false
    }

    /// The user chose word `choice` and a PIN in the setup in flight.
    pub fn finish_setup<R: CryptoRng + ?Sized>(
        &mut self,
        choice: usize,
        pin: &str,
        rng: &mut R,
    ) -> Result<Completion, NothingPending> {
        let connection = self.in_flight.ok_or(NothingPending)?;
        if !self.app.setup_pending() {
            return Err(NothingPending);
        }
        let (response, outcome) = match self.app.finish_setup(choice, pin, rng) {
            Ok(()) => (Ok(Reply::Status(self.app.status())), Outcome::Approved),
            Err(code) => (Err(code), Outcome::Failed(code)),
        };
        Ok(self.complete(connection, &response, outcome))
    }

    /// The user approved (with `pin` when the prompt asked for one).
    pub fn approve(
        &mut self,
        pin: Option<&str>,
        now_ms: u64,
    ) -> Result<ApproveStep, NothingPending> {
        let connection = self.in_flight.ok_or(NothingPending)?;
        if self.app.setup_pending() {
            // A setup is answered with finish_setup, not approved.
            return Err(NothingPending);
        }
        let (response, outcome) = match self.app.approve(pin, now_ms) {
            Ok(token) => (Ok(Reply::Authorized(token)), Outcome::Approved),
            Err(ApproveError::WrongPin { remaining }) => {
                return Ok(ApproveStep::WrongPin { remaining });
            }
            Err(ApproveError::NothingPending) => {
                self.in_flight = None;
                return Err(NothingPending);
            }
            Err(ApproveError::Finished(code)) => (Err(code), outcome_of(code)),
        };
        Ok(ApproveStep::Done(
            self.complete(connection, &response, outcome),
        ))
    }

    /// The user declined.
    pub fn decline(&mut self) -> Result<Completion, NothingPending> {
        let connection = self.in_flight.ok_or(NothingPending)?;
        let code = if self.app.cancel_setup() {
            ErrorCode::Declined
        } else {
            self.app.decline().map_err(|_| NothingPending)?
        };
        Ok(self.complete(connection, &Err(code), Outcome::Declined))
    }

    /// Call periodically: ends an approval whose deadline passed.
    pub fn poll(&mut self, now_ms: u64) -> Option<Completion> {
        let connection = self.in_flight?;
        let code = self.app.poll(now_ms)?;
        Some(self.complete(connection, &Err(code), outcome_of(code)))
    }

    fn complete(
        &mut self,
        connection: ConnectionId,
        response: &Response,
        outcome: Outcome,
    ) -> Completion {
        self.in_flight = None;
        let packet = match self.slots.iter_mut().find(|s| s.connection == connection) {
            Some(slot) => seal(&mut slot.session, response),
            // Cannot happen (closing a connection cancels its approval);
            // answer in the clear rather than panic.
            None => clear(&Err(ErrorCode::SessionRequired)),
        };
        Completion {
            connection,
            packet,
            outcome,
        }
    }

    fn open<R: CryptoRng + ?Sized>(
        &mut self,
        connection: ConnectionId,
        hello: &[u8],
        rng: &mut R,
    ) -> Response {
        if self.in_flight == Some(connection) {
            return Err(ErrorCode::Busy);
        }
        let (session, server_hello) =
            session::accept(rng, &self.device_key, hello).map_err(|_| {
                ErrorCode::InvalidRequest {
                    field: protocol::Field::Handshake,
                }
            })?;
        self.slots.retain(|s| s.connection != connection);
        if self.slots.len() >= MAX_SESSIONS {
            let in_flight = self.in_flight;
            let victim = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| Some(s.connection) != in_flight)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(index, _)| index)
                .ok_or(ErrorCode::Busy)?;
            self.slots.swap_remove(victim);
        }
        self.clock += 1;
        self.slots.push(Slot {
            connection,
            session,
            last_used: self.clock,
        });
        Ok(Reply::SessionOpened(FixedBytes(server_hello)))
    }

    fn sealed<R: CryptoRng + ?Sized>(
        &mut self,
        connection: ConnectionId,
        record: &[u8],
        rng: &mut R,
        now_ms: u64,
    ) -> Output {
        self.clock += 1;
        let clock = self.clock;
        let Some(slot) = self.slots.iter_mut().find(|s| s.connection == connection) else {
            return Output::Reply(clear(&Err(ErrorCode::SessionRequired)));
        };
        let mut plain = [0u8; MAX_MESSAGE_LEN];
        let len = match slot.session.open(record, &mut plain) {
            Ok(len) => len,
            Err(_) => return Output::Reply(clear(&Err(ErrorCode::BadRecord))),
        };
        slot.last_used = clock;
        let inner = plain
            .get(..len)
            .ok_or(ErrorCode::Internal)
            .and_then(|bytes| decode_request(bytes).map_err(ErrorCode::from));
        plain.zeroize();
        let response = match inner {
            Err(code) => Err(code),
            Ok(request) if request.allowed_in_clear() => Err(ErrorCode::InvalidRequest {
                field: protocol::Field::Encoding,
            }),
            Ok(_) if self.in_flight == Some(connection) => Err(ErrorCode::Busy),
            Ok(request) => match self.app.handle(&request, rng, now_ms) {
                Handled::Reply(response) => response,
                Handled::Setup(words) => {
                    self.in_flight = Some(connection);
                    return Output::Setup(words);
                }
                Handled::Prompt(prompt) => {
                    let Request::RequestPayment(payment) = request else {
                        // The app prompts only for payments; refuse anything else.
                        let _ = self.app.decline();
                        return self.reply_sealed(connection, &Err(ErrorCode::Internal));
                    };
                    let credential_label = self
                        .app
                        .credentials()
                        .iter()
                        .find(|c| c.credential == payment.credential)
                        .map(|c| c.label.clone())
                        .unwrap_or_default();
                    self.in_flight = Some(connection);
                    return Output::Prompt(UiPrompt {
                        prompt,
                        request: payment,
                        credential_label,
                    });
                }
            },
        };
        self.reply_sealed(connection, &response)
    }

    fn reply_sealed(&mut self, connection: ConnectionId, response: &Response) -> Output {
        match self.slots.iter_mut().find(|s| s.connection == connection) {
            Some(slot) => Output::Reply(seal(&mut slot.session, response)),
            None => Output::Reply(clear(&Err(ErrorCode::SessionRequired))),
        }
    }
}

fn outcome_of(code: ErrorCode) -> Outcome {
    match code {
        ErrorCode::Declined => Outcome::Declined,
        ErrorCode::TimedOut => Outcome::TimedOut,
        ErrorCode::Locked => Outcome::Locked,
        other => Outcome::Failed(other),
    }
}

/// Encodes a response sent in the clear.
fn clear(response: &Response) -> Vec<u8> {
    let mut buf = [0u8; MAX_PACKET_LEN];
    match encode_response(response, &mut buf) {
        Ok(bytes) => bytes.to_vec(),
        // Every clear response is far below the bound; fall back to the
        // smallest error rather than panic.
        Err(_) => fallback(),
    }
}

fn fallback() -> Vec<u8> {
    let mut buf = [0u8; 16];
    encode_response(&Err(ErrorCode::Internal), &mut buf)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

/// Encodes `response`, seals it in `session` and wraps the record in a
/// `Reply::Sealed` packet.
fn seal(session: &mut Session, response: &Response) -> Vec<u8> {
    let mut plain = [0u8; MAX_MESSAGE_LEN];
    let Ok(encoded) = encode_response(response, &mut plain) else {
        return seal_internal(session);
    };
    let mut record = [0u8; protocol::session::MAX_RECORD_LEN];
    let sealed = session.seal(encoded, &mut record);
    plain.zeroize();
    let Ok(len) = sealed else {
        return clear(&Err(ErrorCode::Internal));
    };
    match record
        .get(..len)
        .and_then(|r| RecordBytes::from_slice(r).ok())
    {
        Some(bytes) => clear(&Ok(Reply::Sealed(bytes))),
        None => clear(&Err(ErrorCode::Internal)),
    }
}

fn seal_internal(session: &mut Session) -> Vec<u8> {
    let mut plain = [0u8; 16];
    let mut record = [0u8; 64];
    let Ok(encoded) = encode_response(&Err(ErrorCode::Internal), &mut plain) else {
        return fallback();
    };
    match session.seal(encoded, &mut record) {
        Ok(len) => match record
            .get(..len)
            .and_then(|r| RecordBytes::from_slice(r).ok())
        {
            Some(bytes) => clear(&Ok(Reply::Sealed(bytes))),
            None => fallback(),
        },
        Err(_) => fallback(),
    }
}

/// Reassembles frames from a byte stream that arrives in pieces.
#[derive(Default, Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        FrameReader::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete packet, if one is buffered. After an error the
    /// stream is out of step: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameTooLong> {
        let Some(header) = self.buf.first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = decode_frame_header(*header)?;
        if self.buf.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let packet = self.buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len].to_vec();
        self.buf.drain(..FRAME_HEADER_LEN + len);
        Ok(Some(packet))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::{MemoryStorage, Policy};
    use p256::elliptic_curve::Generate;
    use protocol::session::ClientHandshake;
    use protocol::{Label, decode_response, encode_request};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn service(rng: &mut ChaCha20Rng) -> Service<MemoryStorage> {
        let key = SigningKey::generate_from_rng(rng);
        let app = PaymentApp::new(key.clone(), MemoryStorage::default(), Policy::default())
            .expect("empty storage");
        Service::new(app, key)
    }

    fn packet(request: &Request) -> Vec<u8> {
        let mut buf = [0u8; MAX_PACKET_LEN];
        encode_request(request, &mut buf).expect("fits").to_vec()
    }

    fn reply(output: Output) -> Response {
        match output {
            Output::Reply(bytes) => decode_response(&bytes).expect("decodes"),
            Output::Prompt(p) => panic!("unexpected prompt {p:?}"),
            Output::Setup(w) => panic!("unexpected setup {w:?}"),
        }
    }

    fn connect(
        svc: &mut Service<MemoryStorage>,
        rng: &mut ChaCha20Rng,
        conn: ConnectionId,
    ) -> Session {
        let device = *svc.device_key.verifying_key();
        let (hs, hello) = ClientHandshake::start(rng, &device);
        let out = svc.handle(
            conn,
            &packet(&Request::OpenSession(FixedBytes(hello))),
            rng,
            0,
        );
        match reply(out) {
            Ok(Reply::SessionOpened(server)) => hs.finish(&server.0).expect("handshake"),
            other => panic!("{other:?}"),
        }
    }

    fn sealed_request(session: &mut Session, request: &Request) -> Vec<u8> {
        let mut plain = [0u8; MAX_MESSAGE_LEN];
        let encoded = encode_request(request, &mut plain).expect("fits");
        let mut record = [0u8; protocol::session::MAX_RECORD_LEN];
        let len = session.seal(encoded, &mut record).expect("seal");
        packet(&Request::Sealed(
            RecordBytes::from_slice(&record[..len]).expect("fits"),
        ))
    }

    fn open_reply(session: &mut Session, bytes: &[u8]) -> Response {
        match decode_response(bytes).expect("decodes") {
            Ok(Reply::Sealed(record)) => {
                let mut plain = [0u8; MAX_MESSAGE_LEN];
                let len = session.open(&record, &mut plain).expect("opens");
                decode_response(&plain[..len]).expect("inner decodes")
            }
            other => other,
        }
    }

    fn call(
        svc: &mut Service<MemoryStorage>,
        rng: &mut ChaCha20Rng,
        conn: ConnectionId,
        session: &mut Session,
        request: &Request,
    ) -> Response {
        let bytes = sealed_request(session, request);
        match svc.handle(conn, &bytes, rng, 0) {
            Output::Reply(out) => open_reply(session, &out),
            Output::Prompt(p) => panic!("unexpected prompt {p:?}"),
            Output::Setup(w) => panic!("unexpected setup {w:?}"),
        }
    }

    fn enroll(
        svc: &mut Service<MemoryStorage>,
        rng: &mut ChaCha20Rng,
        conn: ConnectionId,
        session: &mut Session,
    ) -> protocol::CredentialId {
        let label = Label::try_from("Visa ending 4242").expect("fits");
        match call(svc, rng, conn, session, &Request::Enroll { label }) {
            Ok(Reply::Enrolled(record)) => record.credential,
            other => panic!("{other:?}"),
        }
    }

    fn payment(credential: protocol::CredentialId) -> Request {
        Request::RequestPayment(PaymentRequest {
            credential,
            amount_minor: 1250,
            currency: protocol::CurrencyCode(*b"EUR"),
            merchant: protocol::Merchant::try_from("Corner Cafe").expect("fits"),
            nonce: [7; 32],
        })
    }

    #[test]
    fn requests_outside_a_session_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut svc = service(&mut rng);
        let out = svc.handle(ConnectionId(1), &packet(&Request::Status), &mut rng, 0);
        assert_eq!(reply(out), Err(ErrorCode::SessionRequired));
        let out = svc.handle(ConnectionId(1), &[0xff, 0xff, 0x03, 9], &mut rng, 0);
        assert!(matches!(
            reply(out),
            Err(ErrorCode::VersionMismatch { supported: 1 })
        ));
        let out = svc.handle(ConnectionId(1), &[1, 200], &mut rng, 0);
        assert!(matches!(reply(out), Err(ErrorCode::InvalidRequest { .. })));
    }

    #[test]
    fn bad_records_leave_every_session_working() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut svc = service(&mut rng);
        let (a, b) = (ConnectionId(1), ConnectionId(2));
        let mut sa = connect(&mut svc, &mut rng, a);
        let mut sb = connect(&mut svc, &mut rng, b);
        let first = sealed_request(&mut sa, &Request::Status);
        assert!(matches!(
            reply_sealed_ok(&mut svc, &mut rng, a, &mut sa, &first),
            Ok(Reply::Status(_))
        ));
        // Replay, tamper, garbage: refused in the clear.
        assert_eq!(
            reply(svc.handle(a, &first, &mut rng, 0)),
            Err(ErrorCode::BadRecord)
        );
        let mut tampered = sealed_request(&mut sa, &Request::Status);
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            reply(svc.handle(a, &tampered, &mut rng, 0)),
            Err(ErrorCode::BadRecord)
        );
        // The session still accepts the next record... after the sender's
        // seq moved on, the server still expects the tampered seq: resync by
        // opening a new session, while B is unaffected.
        assert!(matches!(
            call(&mut svc, &mut rng, b, &mut sb, &Request::Status),
            Ok(Reply::Status(_))
        ));
        let mut sa = connect(&mut svc, &mut rng, a);
        assert!(matches!(
            call(&mut svc, &mut rng, a, &mut sa, &Request::Status),
            Ok(Reply::Status(_))
        ));
        // A request nested in a record must not be OpenSession/Sealed.
        let nested = Request::Sealed(RecordBytes::new());
        assert!(matches!(
            call(&mut svc, &mut rng, a, &mut sa, &nested),
            Err(ErrorCode::InvalidRequest { .. })
        ));
    }

    fn reply_sealed_ok(
        svc: &mut Service<MemoryStorage>,
        rng: &mut ChaCha20Rng,
        conn: ConnectionId,
        session: &mut Session,
        bytes: &[u8],
    ) -> Response {
        match svc.handle(conn, bytes, rng, 0) {
            Output::Reply(out) => open_reply(session, &out),
            Output::Prompt(p) => panic!("{p:?}"),
            Output::Setup(w) => panic!("{w:?}"),
        }
    }

    #[test]
    fn sessions_are_bounded_and_least_recently_used_goes_first() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut svc = service(&mut rng);
        let mut sessions: Vec<Session> = (0..MAX_SESSIONS as u64)
            .map(|i| connect(&mut svc, &mut rng, ConnectionId(i)))
            .collect();
        // Touch session 0 so session 1 is the oldest.
        assert!(
            call(
                &mut svc,
                &mut rng,
                ConnectionId(0),
                &mut sessions[0],
                &Request::Status
            )
            .is_ok()
        );
        let _extra = connect(&mut svc, &mut rng, ConnectionId(99));
        assert_eq!(svc.sessions(), MAX_SESSIONS);
        let dropped = sealed_request(&mut sessions[1], &Request::Status);
        assert_eq!(
            reply(svc.handle(ConnectionId(1), &dropped, &mut rng, 0)),
            Err(ErrorCode::SessionRequired)
        );
        assert!(
            call(
                &mut svc,
                &mut rng,
                ConnectionId(0),
                &mut sessions[0],
                &Request::Status
            )
            .is_ok()
        );
    }

    #[test]
    fn one_approval_at_a_time_and_it_completes_later() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut svc = service(&mut rng);
        let (a, b) = (ConnectionId(1), ConnectionId(2));
        let mut sa = connect(&mut svc, &mut rng, a);
        let mut sb = connect(&mut svc, &mut rng, b);
        let credential = enroll(&mut svc, &mut rng, a, &mut sa);
        let bytes = sealed_request(&mut sa, &payment(credential));
        let Output::Prompt(prompt) = svc.handle(a, &bytes, &mut rng, 0) else {
            panic!("expected a prompt");
        };
        assert_eq!(prompt.credential_label.as_str(), "Visa ending 4242");
        assert!(prompt.prompt.text.contains("12.50 EUR"));
        // Others: Busy for a payment, answers for everything else.
        assert_eq!(
            call(&mut svc, &mut rng, b, &mut sb, &payment(credential)),
            Err(ErrorCode::Busy)
        );
        assert!(call(&mut svc, &mut rng, b, &mut sb, &Request::Status).is_ok());
        // The waiting session itself gets Busy if it sends meanwhile.
        assert_eq!(
            call(&mut svc, &mut rng, a, &mut sa, &Request::Status),
            Err(ErrorCode::Busy)
        );
        let Ok(ApproveStep::Done(done)) = svc.approve(None, 10) else {
            panic!("approve");
        };
        assert_eq!((done.connection, done.outcome), (a, Outcome::Approved));
        assert!(matches!(
            open_reply(&mut sa, &done.packet),
            Ok(Reply::Authorized(_))
        ));
        assert_eq!(svc.approve(None, 10), Err(NothingPending));

        // Decline and timeout.
        let bytes = sealed_request(&mut sb, &payment(credential));
        assert!(matches!(
            svc.handle(b, &bytes, &mut rng, 0),
            Output::Prompt(_)
        ));
        let done = svc.decline().expect("pending");
        assert_eq!(open_reply(&mut sb, &done.packet), Err(ErrorCode::Declined));
        let bytes = sealed_request(&mut sb, &payment(credential));
        assert!(matches!(
            svc.handle(b, &bytes, &mut rng, 0),
            Output::Prompt(_)
        ));
        assert_eq!(svc.poll(1), None);
        let done = svc
            .poll(Policy::default().approval_timeout_ms + 1)
            .expect("timed out");
        assert_eq!(done.outcome, Outcome::TimedOut);
        assert_eq!(open_reply(&mut sb, &done.packet), Err(ErrorCode::TimedOut));

        // Closing the connection cancels its approval.
        let bytes = sealed_request(&mut sb, &payment(credential));
        assert!(matches!(
            svc.handle(b, &bytes, &mut rng, 0),
            Output::Prompt(_)
        ));
        assert!(svc.close(b));
        assert_eq!(svc.in_flight(), None);
        assert!(
            matches!(call(&mut svc, &mut rng, a, &mut sa, &Request::Status), Ok(Reply::Status(s)) if !s.busy)
        );
    }

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut reader = FrameReader::new();
        let header = encode_frame_header(3).expect("small");
        reader.push(&header[..2]);
        assert_eq!(reader.next_frame(), Ok(None));
        reader.push(&header[2..]);
        reader.push(&[1, 2]);
        assert_eq!(reader.next_frame(), Ok(None));
        reader.push(&[3, 0]);
        assert_eq!(reader.next_frame(), Ok(Some(std::vec![1, 2, 3])));
        assert_eq!(encode_frame_header(MAX_FRAME_LEN + 1), None);
        let mut reader = FrameReader::new();
        reader.push(&u32::MAX.to_be_bytes());
        assert_eq!(reader.next_frame(), Err(FrameTooLong { len: u32::MAX }));
    }
}
