//! [`Bridge`]: one authenticated session with the payment app.

use std::time::Duration;

use coset::{CoseSign1, TaggedCborSerializable};
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier;
use protocol::session::{ClientHandshake, MAX_RECORD_LEN, Session};
use protocol::signed::{AuthorizationClaims, enrollment_statement};
use protocol::{
    Attestation, CredentialId, CredentialInfo, Currency, DecodeError, DeviceStatus,
    EnrollmentRecord, FixedBytes, Label, MAX_MERCHANT_LEN, MAX_MESSAGE_LEN, MAX_PACKET_LEN,
    Merchant, NONCE_LEN, Nonce, PROTOCOL_VERSION, RecordBytes, Reply, Request, Response,
    decode_response, encode_request, is_display_text,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::amount::{currency, parse_amount};
use crate::transport::{Channel, ChannelError, Transport};
use crate::{BridgeError, DeviceKey};

/// How long each call may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Handshake and every request that needs no user (enroll, list, ...).
    pub call: Duration,
    /// A payment request: the user reads, maybe types a PIN, and answers.
    /// Longer than the secure side's own approval timeout (60 s by default),
    /// so the user's timeout is normally reported as [`BridgeError::ApprovalTimedOut`].
    pub approval: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: Duration::from_secs(10),
            approval: Duration::from_secs(120),
        }
    }
}

/// A payment to approve, checked before it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRequest(pub protocol::PaymentRequest);

impl PaymentRequest {
    /// Builds a request from a decimal amount (`"12.50"`) and an ISO 4217 code.
    pub fn new(
        credential: CredentialId,
        amount: &str,
        currency_code: &str,
        merchant: &str,
        nonce: Nonce,
    ) -> Result<Self, BridgeError> {
        let currency = currency(currency_code)?;
        let minor = parse_amount(amount, currency)?;
        Self::from_minor(credential, minor, currency, merchant, nonce)
    }

    /// Builds a request from minor units (cents for EUR).
    pub fn from_minor(
        credential: CredentialId,
        amount_minor: u64,
        currency: Currency,
        merchant: &str,
        nonce: Nonce,
    ) -> Result<Self, BridgeError> {
        let invalid = |field, value: &str| BridgeError::InvalidField {
            field,
            value: value.into(),
        };
        if !is_display_text(merchant) || merchant.len() > MAX_MERCHANT_LEN {
            return Err(invalid(
                "merchant (1 to 32 printable ASCII characters, no surrounding spaces)",
                merchant,
            ));
        }
        if nonce == [0; NONCE_LEN] {
            return Err(invalid("nonce (must not be all zero)", &hex::encode(nonce)));
        }
        let request = protocol::PaymentRequest {
            credential,
            amount_minor,
            currency: currency.into(),
            merchant: Merchant::try_from(merchant).map_err(|_| invalid("merchant", merchant))?,
            nonce,
        };
        request
            .validate()
            .map_err(|code| BridgeError::from_code(code, None))?;
        Ok(PaymentRequest(request))
    }
}

/// A signed payment authorization, for the relying party's backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The COSE_Sign1 ES256 token (CBOR); verify it with `mvmm-verify`.
    pub token: Vec<u8>,
    /// Its payload, decoded (not yet verified: that is the backend's job).
    pub claims: AuthorizationClaims,
}

/// An authenticated, encrypted session with the secure VM's payment app.
///
/// # Invariants
/// `channel` is `None` after any transport, timeout or authentication
/// failure: the connection is closed and every later call fails with
/// [`BridgeError::TransportClosed`]. Reconnect to continue.
pub struct Bridge {
    channel: Option<Box<dyn Channel>>,
    session: Session,
    device: DeviceKey,
    timeouts: Timeouts,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("device", &self.device.to_hex())
            .field("open", &self.channel.is_some())
            .finish()
    }
}

impl Bridge {
    /// Connects to `transport` and runs the handshake; fails with
    /// [`BridgeError::AuthenticationFailed`] unless the secure side proves it
    /// holds `device_key`.
    pub fn connect(transport: &Transport, device_key: &DeviceKey) -> Result<Self, BridgeError> {
        Self::connect_channel(transport.open()?, device_key, Timeouts::default())
    }

    /// Runs the handshake over an already open channel.
    pub fn connect_channel(
        mut channel: Box<dyn Channel>,
        device_key: &DeviceKey,
        timeouts: Timeouts,
    ) -> Result<Self, BridgeError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| BridgeError::Random(e.to_string()))?;
        let mut rng = ChaCha20Rng::from_seed(seed);
        seed.fill(0);
        let (handshake, hello) = ClientHandshake::start(&mut rng, &device_key.0);
        let packet = encode(&Request::OpenSession(FixedBytes(hello)))?;
        let op = "the session handshake";
        channel
            .send(&packet, timeouts.call)
            .map_err(|e| channel_error(e, op, timeouts.call))?;
        let answer = channel
            .recv(timeouts.call)
            .map_err(|e| channel_error(e, op, timeouts.call))?;
        let session = match decode(&answer)? {
            Ok(Reply::SessionOpened(server_hello)) => handshake.finish(&server_hello.0)?,
            Ok(other) => return Err(unexpected(op, &other)),
            Err(code) => return Err(BridgeError::from_code(code, None)),
        };
        Ok(Bridge {
            channel: Some(channel),
            session,
            device: *device_key,
            timeouts,
        })
    }

    /// Changes the timeouts of later calls.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// The device key this session was authenticated with.
    pub fn device_key(&self) -> &DeviceKey {
        &self.device
    }

    /// Whether the connection is still usable.
    pub fn is_open(&self) -> bool {
        self.channel.is_some()
    }

    /// Creates a credential labelled `label`. The returned record is signed
    /// by the device key (checked here); the issuer checks it again with
    /// `mvmm_verify::verify_enrollment` and keeps its public key.
    pub fn enroll(&mut self, label: &str) -> Result<EnrollmentRecord, BridgeError> {
        let invalid = || BridgeError::InvalidField {
            field: "label (1 to 24 printable ASCII characters, no surrounding spaces)",
            value: label.into(),
        };
        if !is_display_text(label) {
            return Err(invalid());
        }
        let label = Label::try_from(label).map_err(|_| invalid())?;
        match self.call(&Request::Enroll { label }, "enroll", None)? {
            Reply::Enrolled(record) => {
                check_enrollment(&self.device, &record)?;
                Ok(record)
            }
            other => Err(unexpected("enroll", &other)),
        }
    }

    /// Every enrolled credential.
    pub fn list_credentials(&mut self) -> Result<Vec<CredentialInfo>, BridgeError> {
        match self.call(&Request::ListCredentials, "list credentials", None)? {
            Reply::Credentials(list) => Ok(list.into_iter().collect()),
            other => Err(unexpected("list credentials", &other)),
        }
    }

    /// Deletes a credential and its private key.
    pub fn delete_credential(&mut self, credential: &CredentialId) -> Result<(), BridgeError> {
        let request = Request::DeleteCredential {
            credential: *credential,
        };
        match self.call(&request, "delete credential", Some(credential))? {
            Reply::Deleted => Ok(()),
            other => Err(unexpected("delete credential", &other)),
        }
    }

    /// Asks the user to approve `request` on the trusted display; returns the
    /// signed authorization, or why not ([`BridgeError::DeclinedByUser`],
    /// [`BridgeError::ApprovalTimedOut`], [`BridgeError::Busy`], ...).
    pub fn request_payment(
        &mut self,
        request: &PaymentRequest,
    ) -> Result<Authorization, BridgeError> {
        let payment = &request.0;
        let wire = Request::RequestPayment(payment.clone());
        let op = "request payment";
        let reply = self.call_with(&wire, op, Some(&payment.credential), self.timeouts.approval)?;
        let Reply::Authorized(token) = reply else {
            return Err(unexpected(op, &reply));
        };
        authorization_from_token(payment, &token)
    }

    /// Asks for attestation evidence (an EAT, tagged COSE_Sign1) bound to
    /// `nonce`, for the backend to check (`mvmm-verify attest`). It arrives
    /// through the session, which the pinned device key authenticated.
    pub fn attest(&mut self, nonce: &Nonce) -> Result<Attestation, BridgeError> {
        match self.call(&Request::Attest { nonce: *nonce }, "attest", None)? {
            Reply::Attestation(attestation) => Ok(attestation),
            other => Err(unexpected("attest", &other)),
        }
    }

    /// Sets the trusted path up (once per device): the user chooses their
    /// security word and a PIN on the trusted display. Waits as long as a
    /// payment approval; [`BridgeError::DeclinedByUser`] when the user
    /// cancels, [`BridgeError::SecureSide`]`(AlreadySetUp)` when it was done.
    pub fn setup(&mut self) -> Result<DeviceStatus, BridgeError> {
        match self.call_with(&Request::Setup, "setup", None, self.timeouts.approval)? {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected("setup", &other)),
        }
    }

    /// The payment app's state.
    pub fn status(&mut self) -> Result<DeviceStatus, BridgeError> {
        match self.call(&Request::Status, "status", None)? {
            Reply::Status(status) => Ok(status),
            other => Err(unexpected("status", &other)),
        }
    }

    fn call(
        &mut self,
        request: &Request,
        op: &'static str,
        credential: Option<&CredentialId>,
    ) -> Result<Reply, BridgeError> {
        self.call_with(request, op, credential, self.timeouts.call)
    }

    /// Seals `request`, sends it, waits for the sealed response and opens it.
    /// Any failure below the application layer closes the connection.
    fn call_with(
        &mut self,
        request: &Request,
        op: &'static str,
        credential: Option<&CredentialId>,
        timeout: Duration,
    ) -> Result<Reply, BridgeError> {
        let result = self.exchange(request, op, timeout);
        if matches!(
            result,
            Err(BridgeError::Timeout { .. }
                | BridgeError::TransportClosed
                | BridgeError::Io(_)
                | BridgeError::AuthenticationFailed(_)
                | BridgeError::Protocol(_)
                | BridgeError::VersionMismatch { .. })
        ) {
            self.channel = None;
        }
        match result? {
            Ok(reply) => Ok(reply),
            Err(code) => Err(BridgeError::from_code(
                code,
                credential.map(|c| c.as_slice()),
            )),
        }
    }

    fn exchange(
        &mut self,
        request: &Request,
        op: &'static str,
        timeout: Duration,
    ) -> Result<Response, BridgeError> {
        let channel = self.channel.as_mut().ok_or(BridgeError::TransportClosed)?;
        let mut plain = [0u8; MAX_MESSAGE_LEN];
        let encoded = encode_request(request, &mut plain)
            .map_err(|_| BridgeError::Protocol(format!("{op}: request too large")))?;
        let mut record = [0u8; MAX_RECORD_LEN];
        let len = self.session.seal(encoded, &mut record)?;
        plain.fill(0);
        let record = RecordBytes::from_slice(record.get(..len).unwrap_or_default())
            .map_err(|_| BridgeError::Protocol(format!("{op}: record too large")))?;
        let packet = encode(&Request::Sealed(record))?;
        channel
            .send(&packet, self.timeouts.call)
            .map_err(|e| channel_error(e, op, self.timeouts.call))?;
        let answer = channel
            .recv(timeout)
            .map_err(|e| channel_error(e, op, timeout))?;
        match decode(&answer)? {
            Ok(Reply::Sealed(record)) => {
                let mut plain = [0u8; MAX_MESSAGE_LEN];
                let len = self.session.open(&record, &mut plain)?;
                let inner = decode(plain.get(..len).unwrap_or_default());
                plain.fill(0);
                inner
            }
            // Errors about the record or the session itself come in the clear.
            Err(code) => Ok(Err(code)),
            Ok(other) => Err(unexpected(op, &other)),
        }
    }
}

/// Checks that an enrollment record is signed by the device key.
pub(crate) fn check_enrollment(
    device: &DeviceKey,
    record: &EnrollmentRecord,
) -> Result<(), BridgeError> {
    let statement = enrollment_statement(&record.credential, &record.label, &record.public_key)
        .ok_or_else(|| BridgeError::Protocol("enrollment record too long".into()))?;
    let what = "enrollment record";
    let signature = Signature::from_slice(&record.signature.0)
        .map_err(|_| BridgeError::AuthenticationFailed(format!("{what}: bad signature")))?;
    device.0.verify(&statement, &signature).map_err(|_| {
        BridgeError::AuthenticationFailed(format!("{what} is not signed by the device key"))
    })
}

/// Decodes the claims of an authorization token and checks that they are the
/// request's (the signature is the backend's to check).
pub(crate) fn authorization_from_token(
    payment: &protocol::PaymentRequest,
    token: &[u8],
) -> Result<Authorization, BridgeError> {
    let claims = CoseSign1::from_tagged_slice(token)
        .ok()
        .and_then(|sign1| sign1.payload)
        .and_then(|payload| AuthorizationClaims::decode(&payload))
        .ok_or_else(|| BridgeError::Protocol("the token is not a COSE_Sign1 with claims".into()))?;
    let mut differs = Vec::new();
    if claims.credential != payment.credential {
        differs.push("credential");
    }
    if claims.amount_minor != payment.amount_minor {
        differs.push("amount");
    }
    if claims.currency != payment.currency {
        differs.push("currency");
    }
    if claims.merchant != payment.merchant {
        differs.push("merchant");
    }
    if claims.nonce != payment.nonce {
        differs.push("nonce");
    }
    if !differs.is_empty() {
        return Err(BridgeError::Protocol(format!(
            "the token's claims differ from the request: {}",
            differs.join(", ")
        )));
    }
    Ok(Authorization {
        token: token.to_vec(),
        claims,
    })
}

fn encode(request: &Request) -> Result<Vec<u8>, BridgeError> {
    let mut buf = [0u8; MAX_PACKET_LEN];
    encode_request(request, &mut buf)
        .map(|b| b.to_vec())
        .map_err(|_| BridgeError::Protocol("request does not fit a packet".into()))
}

fn decode(bytes: &[u8]) -> Result<Response, BridgeError> {
    decode_response(bytes).map_err(|e| match e {
        DecodeError::VersionMismatch { got } => BridgeError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: got,
        },
        other => BridgeError::Protocol(format!(
            "undecodable response ({other:?}): {}",
            hex::encode(&bytes[..bytes.len().min(32)])
        )),
    })
}

fn unexpected(op: &str, reply: &Reply) -> BridgeError {
    let name = match reply {
        Reply::SessionOpened(_) => "SessionOpened",
        Reply::Sealed(_) => "Sealed",
        Reply::Enrolled(_) => "Enrolled",
        Reply::Credentials(_) => "Credentials",
        Reply::Deleted => "Deleted",
        Reply::Authorized(_) => "Authorized",
        Reply::Attestation(_) => "Attestation",
        Reply::Status(_) => "Status",
    };
    BridgeError::Protocol(format!("unexpected {name} reply to {op}"))
}

fn channel_error(e: ChannelError, operation: &'static str, after: Duration) -> BridgeError {
    match e {
        ChannelError::Closed => BridgeError::TransportClosed,
        ChannelError::TimedOut => BridgeError::Timeout { operation, after },
        ChannelError::FrameTooLong(len) => BridgeError::Protocol(format!(
            "the secure VM announced a {len}-byte frame (max {})",
            protocol::framing::MAX_FRAME_LEN
        )),
        ChannelError::Io(e) => BridgeError::Io(e),
    }
}
