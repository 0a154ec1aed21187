//! What can go wrong, in words a wallet developer (and a user) understands.

use std::fmt;
use std::time::Duration;

use protocol::session::{HandshakeError, RecordError};
use protocol::{ErrorCode, Field, Limit};

use crate::amount::AmountError;

/// Why a bridge call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BridgeError {
    /// The user pressed Decline on the trusted display.
    DeclinedByUser,
    /// The user did not answer the trusted display in time.
    ApprovalTimedOut,
    /// The secure VM did not answer within the call's timeout. The
    /// connection is closed (which cancels a pending approval).
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// Another approval is in flight.
    Busy,
    /// The policy forbids this amount.
    LimitExceeded(Limit),
    /// Too many wrong PINs: payments are locked.
    Locked,
    /// No credential has this id.
    UnknownCredential(String),
    /// A request field was refused by the secure side.
    InvalidRequest(Field),
    /// The amount text could not be turned into minor units.
    Amount(AmountError),
    /// A request field was refused before sending (names field and value).
    InvalidField { field: &'static str, value: String },
    /// No room for another credential.
    StorageFull,
    /// The secure side's storage failed; nothing changed.
    StorageFailure,
    /// The connection closed (or was closed after an earlier failure).
    TransportClosed,
    /// The transport could not be opened.
    Connect {
        target: String,
        error: std::io::Error,
    },
    /// Reading or writing the transport failed.
    Io(std::io::Error),
    /// The secure side is not the one whose device key we trust, or a
    /// record from it failed authentication (forged, tampered, replayed).
    AuthenticationFailed(String),
    /// The peer speaks another protocol version.
    VersionMismatch { ours: u16, theirs: u16 },
    /// The device key file or text is unusable.
    BadDeviceKey(String),
    /// The peer sent something that does not fit the protocol.
    Protocol(String),
    /// The secure side reported another error.
    SecureSide(ErrorCode),
    /// The operating system's random generator failed.
    Random(String),
    /// The payment HAL (over binder) reported an error that has no variant
    /// of its own: `code` is its `dev.mvmm.ErrorCode`, `message` its words.
    Hal { code: i32, message: String },
    /// The binder call to the payment HAL failed (no binder device, no HAL,
    /// caller refused, transaction failed).
    Binder(String),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BridgeError::*;
        match self {
            DeclinedByUser => f.write_str("declined by user"),
            ApprovalTimedOut => f.write_str("the user did not answer in time (approval timed out)"),
            Timeout { operation, after } => write!(
                f,
                "timed out: no answer from the secure VM to {operation} within {:.1} s",
                after.as_secs_f64()
            ),
            Busy => f.write_str("busy: another approval is in progress"),
            LimitExceeded(Limit::PerTransaction) => {
                f.write_str("limit exceeded: the amount is above the per-transaction limit")
            }
            LimitExceeded(Limit::Daily) => {
                f.write_str("limit exceeded: the amount would pass the daily limit")
            }
            Locked => f.write_str("locked: too many wrong PINs, payments are disabled"),
            UnknownCredential(id) => write!(f, "unknown credential {id}"),
            InvalidRequest(field) => {
                write!(f, "the secure VM refused the request's {field:?} field")
            }
            Amount(e) => write!(f, "{e}"),
            InvalidField { field, value } => write!(f, "invalid {field}: {value:?}"),
            StorageFull => f.write_str("storage full: no room for another credential"),
            StorageFailure => f.write_str("the secure VM's storage failed; nothing was changed"),
            TransportClosed => f.write_str("transport closed"),
            Connect { target, error } => write!(f, "cannot connect to {target}: {error}"),
            Io(e) => write!(f, "transport error: {e}"),
            AuthenticationFailed(why) => write!(f, "authentication failed: {why}"),
            VersionMismatch { ours, theirs } => write!(
                f,
                "protocol version mismatch: we speak {ours}, the secure VM speaks {theirs}"
            ),
            BadDeviceKey(why) => write!(f, "bad device key: {why}"),
            Protocol(why) => write!(f, "protocol error: {why}"),
            SecureSide(code) => write!(f, "the secure VM answered {code:?}"),
            Random(why) => write!(f, "random generator failed: {why}"),
            Hal { code, message } => write!(f, "payment HAL error {code}: {message}"),
            Binder(why) => write!(f, "binder: {why}"),
        }
    }
}

impl std::error::Error for BridgeError {}

impl From<AmountError> for BridgeError {
    fn from(e: AmountError) -> Self {
        BridgeError::Amount(e)
    }
}

impl From<HandshakeError> for BridgeError {
    fn from(e: HandshakeError) -> Self {
        let why = match e {
            HandshakeError::WrongLength => "the server hello has the wrong length",
            HandshakeError::InvalidPublicKey => "the server's ephemeral key is not a P-256 point",
            HandshakeError::BadSignature => {
                "the server hello is not signed by the trusted device key"
            }
        };
        BridgeError::AuthenticationFailed(why.into())
    }
}

impl From<RecordError> for BridgeError {
    fn from(e: RecordError) -> Self {
        let why = match e {
            RecordError::Replayed => "the secure VM's record was replayed",
            RecordError::OutOfOrder => "a record from the secure VM was dropped or reordered",
            RecordError::Tampered => "a record from the secure VM was modified or forged",
            RecordError::Truncated => "a record from the secure VM is truncated",
            RecordError::Oversized => "a record from the secure VM is oversized",
            RecordError::BufferTooSmall => "a record does not fit the buffer",
            RecordError::SequenceExhausted => "the session's sequence numbers are exhausted",
        };
        BridgeError::AuthenticationFailed(why.into())
    }
}

impl BridgeError {
    /// Maps the secure side's error code.
    pub(crate) fn from_code(code: ErrorCode, credential: Option<&[u8]>) -> Self {
        use BridgeError as B;
        match code {
            ErrorCode::Declined => B::DeclinedByUser,
            ErrorCode::TimedOut => B::ApprovalTimedOut,
            ErrorCode::Busy => B::Busy,
            ErrorCode::LimitExceeded { limit } => B::LimitExceeded(limit),
            ErrorCode::Locked => B::Locked,
            ErrorCode::UnknownCredential => {
                B::UnknownCredential(credential.map(hex::encode).unwrap_or_default())
            }
            ErrorCode::InvalidRequest { field } => B::InvalidRequest(field),
            ErrorCode::StorageFull => B::StorageFull,
            ErrorCode::StorageFailure => B::StorageFailure,
            ErrorCode::VersionMismatch { supported } => B::VersionMismatch {
                ours: protocol::PROTOCOL_VERSION,
                theirs: supported,
            },
            ErrorCode::BadRecord => {
                B::AuthenticationFailed("the secure VM rejected our record".into())
            }
            other => B::SecureSide(other),
        }
    }
}
