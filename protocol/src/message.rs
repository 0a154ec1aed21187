//! The requests and responses exchanged by the Android bridge and the payment app.
//!
//! Every packet is `postcard(PROTOCOL_VERSION as u16) || postcard(message)`.
//! The version is read first, so a peer speaking another version gets a
//! [`DecodeError::VersionMismatch`] instead of a confusing parse failure.
//! Every variable-length field has a `MAX_*` bound enforced while decoding,
//! and decoding untrusted bytes never panics or allocates.
//!
//! Only [`Request::OpenSession`] and [`Request::Sealed`] may travel in the
//! clear; every other request travels inside a session record (see
//! [`crate::session`]) whose plaintext is again an encoded [`Request`].

use heapless::{String, Vec};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::FixedBytes;
use crate::currency::Currency;
use crate::session::{CLIENT_HELLO_LEN, MAX_RECORD_LEN, SERVER_HELLO_LEN};

/// Version written at the start of every packet.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes in a credential identifier.
pub const CREDENTIAL_ID_LEN: usize = 16;
/// Bytes in a relying-party or attestation nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes in an uncompressed SEC1 P-256 public key.
pub const PUBLIC_KEY_LEN: usize = 65;
/// Bytes in a raw `r || s` P-256 ECDSA signature.
pub const SIGNATURE_LEN: usize = 64;
/// Longest merchant name, in bytes of printable ASCII.
pub const MAX_MERCHANT_LEN: usize = 32;
/// Longest credential label, in bytes of printable ASCII.
pub const MAX_LABEL_LEN: usize = 24;
/// Most credentials the payment app holds (and lists in one reply).
pub const MAX_CREDENTIALS: usize = 8;
/// Largest authorization token (a tagged COSE_Sign1 structure).
pub const MAX_TOKEN_LEN: usize = 512;
/// Largest attestation (a tagged COSE_Sign1 EAT with its key certificate).
pub const MAX_ATTESTATION_LEN: usize = 640;
/// Largest amount in minor units that a request may carry.
pub const MAX_AMOUNT_MINOR: u64 = 1_000_000_000_000;
/// Largest encoded message that may travel inside a session record.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Largest packet on the channel: a sealed record plus its framing.
pub const MAX_PACKET_LEN: usize = MAX_RECORD_LEN + 16;

/// Identifies one enrolled credential; chosen at random by the payment app.
pub type CredentialId = [u8; CREDENTIAL_ID_LEN];
/// A nonce chosen by the relying party (or the attestation verifier).
pub type Nonce = [u8; NONCE_LEN];
/// An uncompressed SEC1 P-256 public key (`0x04 || x || y`).
pub type PublicKeyBytes = FixedBytes<PUBLIC_KEY_LEN>;
/// A raw `r || s` ECDSA P-256 signature.
pub type SignatureBytes = FixedBytes<SIGNATURE_LEN>;
/// A merchant name as the relying party sent it.
pub type Merchant = String<MAX_MERCHANT_LEN>;
/// A human-readable credential name chosen at enrollment.
pub type Label = String<MAX_LABEL_LEN>;
/// A COSE_Sign1 authorization token.
pub type Token = Vec<u8, MAX_TOKEN_LEN>;
/// A sealed session record (see [`crate::session`]).
pub type RecordBytes = Vec<u8, MAX_RECORD_LEN>;

/// An ISO 4217 code as it travels on the wire; checked by
/// [`PaymentRequest::validate`] against the accepted [`Currency`] table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyCode(pub [u8; 3]);

impl CurrencyCode {
    /// The accepted currency with this code, if any.
    pub fn currency(&self) -> Option<Currency> {
        core::str::from_utf8(&self.0)
            .ok()
            .and_then(Currency::from_code)
    }
}

impl From<Currency> for CurrencyCode {
    fn from(currency: Currency) -> Self {
        CurrencyCode(currency.code_bytes())
    }
}

/// What the Android side asks of the payment app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "no_std without alloc: a message is one fixed-size value, never boxed"
)]
pub enum Request {
    /// Starts a secure session (in the clear): the client's handshake message.
    OpenSession(FixedBytes<CLIENT_HELLO_LEN>),
    /// A session record whose plaintext is another encoded [`Request`].
    Sealed(RecordBytes),
    /// Creates a new credential with this label.
    Enroll { label: Label },
    /// Lists the enrolled credentials.
    ListCredentials,
    /// Deletes one credential and its private key.
    DeleteCredential { credential: CredentialId },
    /// Asks the user to approve a payment on the trusted display.
    RequestPayment(PaymentRequest),
    /// Asks for attestation evidence (an EAT) bound to this fresh nonce.
    Attest { nonce: Nonce },
    /// Reports the app's state.
    Status,
    /// Sets the trusted path up, once per device: on the trusted display
    /// the user chooses their security word (shown on every approval, never
    /// sent to the rich VM) and a PIN. Answered with [`Reply::Status`] once
    /// done; [`ErrorCode::Declined`] when the user cancels;
    /// [`ErrorCode::AlreadySetUp`] when it was done before.
    Setup,
}

impl Request {
    /// Whether this request may be sent outside a session record.
    pub fn allowed_in_clear(&self) -> bool {
        matches!(self, Request::OpenSession(_) | Request::Sealed(_))
    }
}

/// A payment the relying party wants approved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// Credential that will sign the authorization.
    pub credential: CredentialId,
    /// Amount in minor units (cents for EUR), 1 to [`MAX_AMOUNT_MINOR`].
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: CurrencyCode,
    /// Merchant name, printable ASCII without surrounding spaces.
    pub merchant: Merchant,
    /// Relying-party nonce, echoed inside the signed authorization.
    pub nonce: Nonce,
}

impl PaymentRequest {
    /// Checks every field and returns the accepted currency, or the first
    /// offending field.
    pub fn validate(&self) -> Result<Currency, ErrorCode> {
        let invalid = |field| ErrorCode::InvalidRequest { field };
        if self.amount_minor == 0 || self.amount_minor > MAX_AMOUNT_MINOR {
            return Err(invalid(Field::Amount));
        }
        let currency = self.currency.currency().ok_or(invalid(Field::Currency))?;
        if !is_display_text(&self.merchant) {
            return Err(invalid(Field::Merchant));
        }
        if self.nonce == [0; NONCE_LEN] {
            return Err(invalid(Field::Nonce));
        }
        Ok(currency)
    }
}

/// Whether `text` is non-empty printable ASCII without leading or trailing
/// spaces: the rule for everything shown on the trusted display.
pub fn is_display_text(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| (b' '..=b'~').contains(&b))
        && !text.starts_with(' ')
        && !text.ends_with(' ')
}

/// What the payment app answers: a reply or a typed error.
pub type Response = Result<Reply, ErrorCode>;

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "no_std without alloc: a message is one fixed-size value, never boxed"
)]
pub enum Reply {
    /// The secure side's handshake message (in the clear).
    SessionOpened(FixedBytes<SERVER_HELLO_LEN>),
    /// A session record whose plaintext is an encoded [`Response`].
    Sealed(RecordBytes),
    /// A new credential, for the issuer.
    Enrolled(EnrollmentRecord),
    /// Every enrolled credential.
    Credentials(Vec<CredentialInfo, MAX_CREDENTIALS>),
    /// The credential is gone.
    Deleted,
    /// The user approved: a COSE_Sign1 ES256 authorization token.
    Authorized(Token),
    /// The attestation evidence for the nonce.
    Attestation(Attestation),
    /// The app's state.
    Status(DeviceStatus),
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The packet's protocol version is not ours; we speak `supported`.
    VersionMismatch { supported: u16 },
    /// A field (or the encoding itself) is not acceptable.
    InvalidRequest { field: Field },
    /// No credential has this identifier.
    UnknownCredential,
    /// Another approval is in flight.
    Busy,
    /// The user declined.
    Declined,
    /// The user did not answer in time.
    TimedOut,
    /// The policy forbids this amount.
    LimitExceeded { limit: Limit },
    /// Too many wrong PINs: payments are locked.
    Locked,
    /// No room for another credential.
    StorageFull,
    /// Persistent storage failed; nothing was changed.
    StorageFailure,
    /// This request must travel inside a session record.
    SessionRequired,
    /// The session record was rejected (see [`crate::session::RecordError`]).
    BadRecord,
    /// The secure side hit an internal limit; nothing was changed.
    Internal,
    /// The trusted path was set up before (security word and PIN chosen).
    AlreadySetUp,
}

/// The request field an [`ErrorCode::InvalidRequest`] names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// The packet does not decode.
    Encoding,
    Amount,
    Currency,
    Merchant,
    Nonce,
    Label,
    Handshake,
}

/// Which policy limit was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    PerTransaction,
    Daily,
}

/// A new credential as the issuer receives it.
///
/// `signature` is the device key's ECDSA P-256/SHA-256 signature over
/// [`crate::signed::enrollment_statement`] of the other fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    pub credential: CredentialId,
    pub label: Label,
    pub public_key: PublicKeyBytes,
    pub signature: SignatureBytes,
}

/// One line of a credential listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    pub credential: CredentialId,
    pub label: Label,
    pub public_key: PublicKeyBytes,
}

/// The answer to an attestation nonce.
///
/// `eat` is a tagged COSE_Sign1 (ES256) Entity Attestation Token signed by
/// the attestation key, whose certificate by the device key travels in its
/// unprotected header; see [`crate::eat`] and docs/tokens.md.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    pub eat: Vec<u8, MAX_ATTESTATION_LEN>,
}

/// The app's state, safe to show to the rich VM (no PIN, no keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub protocol_version: u16,
    pub credentials: u8,
    pub pin_set: bool,
    pub locked: bool,
    pub busy: bool,
    pub transaction_counter: u64,
}

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Longer than [`MAX_PACKET_LEN`]; not parsed at all.
    TooLarge,
    /// The version prefix is missing or unreadable.
    MissingVersion,
    /// Another protocol version.
    VersionMismatch { got: u16 },
    /// The message body does not decode (bad tag, bound exceeded, bad UTF-8...).
    Malformed,
    /// Bytes left over after the message.
    TrailingBytes,
}

impl From<DecodeError> for ErrorCode {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::VersionMismatch { .. } => ErrorCode::VersionMismatch {
                supported: PROTOCOL_VERSION,
            },
            _ => ErrorCode::InvalidRequest {
                field: Field::Encoding,
            },
        }
    }
}

/// The output buffer is too small for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall;

/// Encodes a request into `buf`, returning the used prefix.
pub fn encode_request<'a>(
    request: &Request,
    buf: &'a mut [u8],
) -> Result<&'a mut [u8], BufferTooSmall> {
    encode(request, buf)
}

/// Decodes a request from untrusted bytes.
pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    decode(bytes)
}

/// Encodes a response into `buf`, returning the used prefix.
pub fn encode_response<'a>(
    response: &Response,
    buf: &'a mut [u8],
) -> Result<&'a mut [u8], BufferTooSmall> {
    encode(response, buf)
}

/// Decodes a response from untrusted bytes.
pub fn decode_response(bytes: &[u8]) -> Result<Response, DecodeError> {
    decode(bytes)
}

fn encode<'a, T: Serialize>(
    message: &T,
    buf: &'a mut [u8],
) -> Result<&'a mut [u8], BufferTooSmall> {
    let used = postcard::to_slice(&(PROTOCOL_VERSION, message), buf)
        .map_err(|_| BufferTooSmall)?
        .len();
    buf.get_mut(..used).ok_or(BufferTooSmall)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_PACKET_LEN {
        return Err(DecodeError::TooLarge);
    }
    let (version, rest) =
        postcard::take_from_bytes::<u16>(bytes).map_err(|_| DecodeError::MissingVersion)?;
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::VersionMismatch { got: version });
    }
    let (message, rest) =
        postcard::take_from_bytes::<T>(rest).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(message)
}
