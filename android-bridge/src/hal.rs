//! The payment HAL over Android's binder: [`PaymentHal`] serves
//! `dev.mvmm.IPayment` (crate `payment-aidl`) in front of one [`Bridge`]
//! session with the secure VM, and [`HalClient`] calls it.
//!
//! This is the shape of Android's KeyMint and ConfirmationUI HALs in front of
//! Trusty: apps talk AIDL to a system service, and only that service holds
//! the channel to the protected VM. Here the service is `mvmm-payment-hal`
//! and the app is `mvmm-pay --binder`.
//!
//! # Trust
//! The HAL treats every caller as untrusted: it serves only the uids it was
//! told to ([`HalConfig::allowed_uids`], from the kernel's binder
//! transaction, which a caller cannot forge), bounds every argument before
//! it reaches the bridge, answers a malformed one with
//! [`ErrorCode::INVALID_ARGUMENT`] and a message naming the value (cut to a
//! few dozen characters), and serves one call at a time: a second caller
//! while a payment waits for the user gets [`ErrorCode::BUSY`] at once.
//!
//! The client, in turn, checks what it can of the HAL's answers: lengths,
//! the enrollment record's device signature and the token's claims against
//! its own request (the token's signature is the backend's to verify).

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use payment_aidl::{self as aidl, ErrorCode, IPayment};
use protocol::{
    Attestation, CredentialId, CredentialInfo, DeviceStatus, EnrollmentRecord, FixedBytes, Label,
    Limit, MAX_ATTESTATION_LEN, MAX_LABEL_LEN, MAX_MERCHANT_LEN, MAX_TOKEN_LEN, NONCE_LEN, Nonce,
};
use rsbinder::{BinderResult, ExceptionCode, ProcessState, Status, StatusCode, Strong};

use crate::amount::currency;
use crate::bridge::{authorization_from_token, check_enrollment};
use crate::{Authorization, Bridge, BridgeError, DeviceKey, PaymentRequest, Timeouts, Transport};

/// The binder device of the rich VM (`binder_linux devices=binder`).
pub const DEFAULT_BINDER_DEVICE: &str = "/dev/binder";

/// How the HAL reaches the secure VM and whom it serves.
#[derive(Clone, Debug)]
pub struct HalConfig {
    /// The payment app's address (`vsock:4:7100` in the rich VM).
    pub transport: Transport,
    /// The pinned device key the secure VM must prove it holds.
    pub device_key: DeviceKey,
    /// Timeouts of the HAL's own calls to the secure VM.
    pub timeouts: Timeouts,
    /// Binder caller uids the HAL serves; any other gets `EX_SECURITY`.
    pub allowed_uids: Vec<u32>,
}

/// The `dev.mvmm.IPayment` service.
///
/// # Invariants
/// `session` holds at most one [`Bridge`]; it is dropped (and reopened by
/// the next call) once the bridge reports its connection closed, so a
/// failure never leaves a half-used session behind.
pub struct PaymentHal {
    config: HalConfig,
    session: Mutex<Option<Bridge>>,
}

impl PaymentHal {
    pub fn new(config: HalConfig) -> Self {
        PaymentHal {
            config,
            session: Mutex::new(None),
        }
    }

    /// Refuses a caller whose uid is not allowed.
    fn admit(&self, op: &str) -> BinderResult<()> {
        let uid = rsbinder::thread_state::get_calling_uid();
        if self.config.allowed_uids.contains(&uid) {
            return Ok(());
        }
        let pid = rsbinder::thread_state::get_calling_pid();
        let message = format!(
            "{op}: caller uid {uid} (pid {pid}) is not allowed (allowed uids: {:?})",
            self.config.allowed_uids
        );
        eprintln!("mvmm-payment-hal: {message}");
        Err(Status::from((ExceptionCode::Security, message.as_str())))
    }

    /// Runs `call` on the session, opening it first if needed; one call at
    /// a time. The caller was admitted before its arguments were looked at.
    fn with_bridge<T>(
        &self,
        op: &str,
        call: impl FnOnce(&mut Bridge) -> Result<T, BridgeError>,
    ) -> BinderResult<T> {
        let mut session: MutexGuard<'_, Option<Bridge>> = match self.session.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::WouldBlock) => {
                return Err(service_error(
                    ErrorCode::BUSY,
                    format!("{op}: the payment HAL is serving another call"),
                ));
            }
            // A panic in an earlier call: its bridge is in an unknown state.
            Err(TryLockError::Poisoned(poisoned)) => {
                let mut guard = poisoned.into_inner();
                *guard = None;
                self.session.clear_poison();
                guard
            }
        };
        if session.as_ref().is_none_or(|bridge| !bridge.is_open()) {
            *session = None;
            let channel = self.config.transport.open().map_err(|e| status_of(&e))?;
            let bridge =
                Bridge::connect_channel(channel, &self.config.device_key, self.config.timeouts)
                    .map_err(|e| status_of(&e))?;
            *session = Some(bridge);
        }
        let Some(bridge) = session.as_mut() else {
            return Err(service_error(
                ErrorCode::INTERNAL,
                format!("{op}: no session"),
            ));
        };
        let result = call(bridge);
        if !bridge.is_open() {
            *session = None;
        }
        result.map_err(|e| status_of(&e))
    }
}

impl rsbinder::Interface for PaymentHal {}

impl IPayment for PaymentHal {
    fn requestPayment(&self, request: &aidl::PaymentRequest) -> BinderResult<Vec<u8>> {
        self.admit("requestPayment")?;
        let request = payment_request_from_aidl(request)?;
        self.with_bridge("requestPayment", |bridge| {
            bridge.request_payment(&request).map(|a| a.token)
        })
    }

    fn enroll(&self, label: &str) -> BinderResult<aidl::Enrollment> {
        self.admit("enroll")?;
        check_text("label", label, MAX_LABEL_LEN)?;
        let record = self.with_bridge("enroll", |bridge| bridge.enroll(label))?;
        Ok(aidl::Enrollment {
            credential: record.credential.to_vec(),
            label: record.label.as_str().into(),
            publicKey: record.public_key.0.to_vec(),
            signature: record.signature.0.to_vec(),
        })
    }

    fn listCredentials(&self) -> BinderResult<Vec<aidl::Credential>> {
        self.admit("listCredentials")?;
        let list = self.with_bridge("listCredentials", Bridge::list_credentials)?;
        Ok(list
            .into_iter()
            .map(|c| aidl::Credential {
                credential: c.credential.to_vec(),
                label: c.label.as_str().into(),
                publicKey: c.public_key.0.to_vec(),
            })
            .collect())
    }

    fn deleteCredential(&self, credential: &[u8]) -> BinderResult<()> {
        self.admit("deleteCredential")?;
        let credential = credential_id(credential)?;
        self.with_bridge("deleteCredential", |bridge| {
            bridge.delete_credential(&credential)
        })
    }

    fn attest(&self, nonce: &[u8]) -> BinderResult<Vec<u8>> {
        self.admit("attest")?;
        let nonce = nonce_of(nonce)?;
        self.with_bridge("attest", |bridge| bridge.attest(&nonce))
            .map(|a| a.eat.to_vec())
    }

    fn status(&self) -> BinderResult<aidl::DeviceStatus> {
        self.admit("status")?;
        let status = self.with_bridge("status", Bridge::status)?;
        let counter = i64::try_from(status.transaction_counter).map_err(|_| {
            service_error(
                ErrorCode::INTERNAL,
                format!(
                    "transaction counter {} does not fit an AIDL long",
                    status.transaction_counter
                ),
            )
        })?;
        Ok(aidl::DeviceStatus {
            protocolVersion: status.protocol_version.into(),
            credentials: status.credentials.into(),
            pinSet: status.pin_set,
            locked: status.locked,
            busy: status.busy,
            transactionCounter: counter,
        })
    }
}

// ---------------------------------------------------------------------------
// Arguments from an untrusted caller

fn service_error(code: ErrorCode, message: String) -> Status {
    Status::service_specific(code, Some(&message))
}

fn invalid(message: String) -> Status {
    service_error(ErrorCode::INVALID_ARGUMENT, message)
}

/// `text` as an error message may show it: at most 40 characters, with the
/// length of the rest.
pub fn shown(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!(
            "{:?}... ({} bytes in all)",
            text.get(..cut).unwrap_or_default(),
            text.len()
        ),
    }
}

fn check_text(field: &str, text: &str, max: usize) -> BinderResult<()> {
    if text.len() > max {
        return Err(invalid(format!(
            "{field} is {} bytes, at most {max}: {}",
            text.len(),
            shown(text)
        )));
    }
    Ok(())
}

fn credential_id(bytes: &[u8]) -> BinderResult<CredentialId> {
    bytes.try_into().map_err(|_| {
        invalid(format!(
            "credential is {} bytes, need {}",
            bytes.len(),
            protocol::CREDENTIAL_ID_LEN
        ))
    })
}

fn nonce_of(bytes: &[u8]) -> BinderResult<Nonce> {
    bytes
        .try_into()
        .map_err(|_| invalid(format!("nonce is {} bytes, need {NONCE_LEN}", bytes.len())))
}

/// Checks a caller's payment request as the bridge would before sending it.
pub fn payment_request_from_aidl(request: &aidl::PaymentRequest) -> BinderResult<PaymentRequest> {
    let credential = credential_id(&request.credential)?;
    let nonce = nonce_of(&request.nonce)?;
    let amount = u64::try_from(request.amountMinor)
        .map_err(|_| invalid(format!("amountMinor {} is negative", request.amountMinor)))?;
    check_text("currency", &request.currency, 3)?;
    let currency = currency(&request.currency).map_err(|e| invalid(e.to_string()))?;
    check_text("merchant", &request.merchant, MAX_MERCHANT_LEN)?;
    PaymentRequest::from_minor(credential, amount, currency, &request.merchant, nonce)
        .map_err(|e| status_of(&e))
}

/// The binder status that carries a bridge error to the caller.
pub fn status_of(e: &BridgeError) -> Status {
    use BridgeError as B;
    let code = match e {
        B::DeclinedByUser => ErrorCode::DECLINED,
        B::ApprovalTimedOut => ErrorCode::APPROVAL_TIMED_OUT,
        B::Busy => ErrorCode::BUSY,
        B::LimitExceeded(Limit::PerTransaction) => ErrorCode::LIMIT_PER_TRANSACTION,
        B::LimitExceeded(Limit::Daily) => ErrorCode::LIMIT_DAILY,
        B::Locked => ErrorCode::LOCKED,
        B::UnknownCredential(_) => ErrorCode::UNKNOWN_CREDENTIAL,
        B::InvalidRequest(_) | B::InvalidField { .. } | B::Amount(_) => ErrorCode::INVALID_ARGUMENT,
        B::StorageFull => ErrorCode::STORAGE_FULL,
        B::StorageFailure => ErrorCode::STORAGE_FAILURE,
        B::Timeout { .. } => ErrorCode::TIMED_OUT,
        B::TransportClosed | B::Connect { .. } | B::Io(_) => ErrorCode::SECURE_VM_UNREACHABLE,
        B::AuthenticationFailed(_) | B::VersionMismatch { .. } | B::BadDeviceKey(_) => {
            ErrorCode::AUTHENTICATION_FAILED
        }
        _ => ErrorCode::INTERNAL,
    };
    service_error(code, e.to_string())
}

// ---------------------------------------------------------------------------
// The client

/// A connection to the payment HAL, with the same calls as [`Bridge`].
pub struct HalClient {
    service: Strong<dyn IPayment>,
    device: DeviceKey,
}

impl HalClient {
    /// Opens `device` (a binder device such as `/dev/binder`) and finds
    /// `dev.mvmm.IPayment` at handle 0 (the HAL is the context manager),
    /// retrying for up to `wait` while nobody serves it yet, as Android's
    /// `waitForService` does.
    pub fn connect(
        device: &str,
        device_key: &DeviceKey,
        wait: Duration,
    ) -> Result<Self, BridgeError> {
        // One process-wide state: the first device opened wins.
        ProcessState::init(device, 0).map_err(|e| {
            BridgeError::Binder(format!(
                "cannot open the binder device {device}: {} (is binder_linux loaded?)",
                e.to_string().trim_end()
            ))
        })?;
        let deadline = Instant::now() + wait;
        loop {
            let found = ProcessState::as_self()
                .context_object()
                .and_then(rsbinder::FromIBinder::try_from);
            match found {
                Ok(service) => {
                    return Ok(HalClient {
                        service,
                        device: *device_key,
                    });
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(BridgeError::Binder(format!(
                        "no {} at handle 0 of {device} after {:.1} s ({e:?}): is mvmm-payment-hal running?",
                        payment_aidl::DESCRIPTOR,
                        wait.as_secs_f64()
                    )));
                }
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A client of an already obtained service (in-process tests).
    pub fn from_service(service: Strong<dyn IPayment>, device_key: &DeviceKey) -> Self {
        HalClient {
            service,
            device: *device_key,
        }
    }

    /// See [`Bridge::enroll`]; the record's device signature is checked here.
    pub fn enroll(&self, label: &str) -> Result<EnrollmentRecord, BridgeError> {
        let e = self.service.enroll(label).map_err(|s| error_of(&s, None))?;
        let record = EnrollmentRecord {
            credential: reply_bytes("enrollment credential", &e.credential)?,
            label: reply_label(&e.label)?,
            public_key: FixedBytes(reply_bytes("enrollment public key", &e.publicKey)?),
            signature: FixedBytes(reply_bytes("enrollment signature", &e.signature)?),
        };
        check_enrollment(&self.device, &record)?;
        Ok(record)
    }

    /// See [`Bridge::list_credentials`].
    pub fn list_credentials(&self) -> Result<Vec<CredentialInfo>, BridgeError> {
        let list = self
            .service
            .listCredentials()
            .map_err(|s| error_of(&s, None))?;
        if list.len() > protocol::MAX_CREDENTIALS {
            return Err(BridgeError::Protocol(format!(
                "the payment HAL listed {} credentials, at most {} exist",
                list.len(),
                protocol::MAX_CREDENTIALS
            )));
        }
        list.iter()
            .map(|c| {
                Ok(CredentialInfo {
                    credential: reply_bytes("credential", &c.credential)?,
                    label: reply_label(&c.label)?,
                    public_key: FixedBytes(reply_bytes("credential public key", &c.publicKey)?),
                })
            })
            .collect()
    }

    /// See [`Bridge::delete_credential`].
    pub fn delete_credential(&self, credential: &CredentialId) -> Result<(), BridgeError> {
        self.service
            .deleteCredential(credential)
            .map_err(|s| error_of(&s, Some(credential)))
    }

    /// See [`Bridge::request_payment`]; the token's claims are checked
    /// against `request` here.
    pub fn request_payment(&self, request: &PaymentRequest) -> Result<Authorization, BridgeError> {
        let payment = &request.0;
        let code = payment
            .currency
            .currency()
            .map(|c| c.code().to_string())
            .unwrap_or_default();
        let wire = aidl::PaymentRequest {
            credential: payment.credential.to_vec(),
            amountMinor: i64::try_from(payment.amount_minor).map_err(|_| {
                BridgeError::InvalidField {
                    field: "amount (too large for an AIDL long)",
                    value: payment.amount_minor.to_string(),
                }
            })?,
            currency: code,
            merchant: payment.merchant.as_str().into(),
            nonce: payment.nonce.to_vec(),
        };
        let token = self
            .service
            .requestPayment(&wire)
            .map_err(|s| error_of(&s, Some(&payment.credential)))?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(BridgeError::Protocol(format!(
                "the payment HAL sent a {}-byte token, at most {MAX_TOKEN_LEN}",
                token.len()
            )));
        }
        authorization_from_token(payment, &token)
    }

    /// See [`Bridge::attest`].
    pub fn attest(&self, nonce: &Nonce) -> Result<Attestation, BridgeError> {
        let eat = self.service.attest(nonce).map_err(|s| error_of(&s, None))?;
        let len = eat.len();
        let eat = heapless::Vec::from_slice(&eat).map_err(|_| {
            BridgeError::Protocol(format!(
                "the payment HAL sent a {len}-byte attestation, at most {MAX_ATTESTATION_LEN}"
            ))
        })?;
        Ok(Attestation { eat })
    }

    /// See [`Bridge::status`].
    pub fn status(&self) -> Result<DeviceStatus, BridgeError> {
        let s = self.service.status().map_err(|s| error_of(&s, None))?;
        let range = |what: &str, value: i64| {
            BridgeError::Protocol(format!("the payment HAL sent {what} {value}, out of range"))
        };
        Ok(DeviceStatus {
            protocol_version: u16::try_from(s.protocolVersion)
                .map_err(|_| range("protocol version", s.protocolVersion.into()))?,
            credentials: u8::try_from(s.credentials)
                .map_err(|_| range("credential count", s.credentials.into()))?,
            pin_set: s.pinSet,
            locked: s.locked,
            busy: s.busy,
            transaction_counter: u64::try_from(s.transactionCounter)
                .map_err(|_| range("transaction counter", s.transactionCounter))?,
        })
    }
}

fn reply_bytes<const N: usize>(what: &str, bytes: &[u8]) -> Result<[u8; N], BridgeError> {
    bytes.try_into().map_err(|_| {
        BridgeError::Protocol(format!(
            "the payment HAL sent a {}-byte {what}, expected {N}",
            bytes.len()
        ))
    })
}

fn reply_label(label: &str) -> Result<Label, BridgeError> {
    Label::try_from(label).map_err(|_| {
        BridgeError::Protocol(format!(
            "the payment HAL sent a {}-byte label, at most {MAX_LABEL_LEN}",
            label.len()
        ))
    })
}

/// The bridge error a binder status stands for. The HAL's service-specific
/// codes map back to the variants the vsock path gives, so a caller (and
/// `mvmm-pay`'s exit status) cannot tell the paths apart by their errors.
pub fn error_of(status: &Status, credential: Option<&CredentialId>) -> BridgeError {
    let message = status.message().unwrap_or_default().to_string();
    match status.exception_code() {
        ExceptionCode::ServiceSpecific => {}
        ExceptionCode::Security => {
            return BridgeError::Binder(format!("the payment HAL refused this caller: {message}"));
        }
        ExceptionCode::TransactionFailed => {
            let code: StatusCode = status.transaction_error();
            return BridgeError::Binder(format!("the binder call failed: {code:?} {message}"));
        }
        other => {
            return BridgeError::Binder(format!("the payment HAL threw {other:?}: {message}"));
        }
    }
    let code = status.service_specific_error();
    match status.service_error::<ErrorCode>() {
        Some(ErrorCode::DECLINED) => BridgeError::DeclinedByUser,
        Some(ErrorCode::APPROVAL_TIMED_OUT) => BridgeError::ApprovalTimedOut,
        Some(ErrorCode::BUSY) => BridgeError::Busy,
        Some(ErrorCode::LIMIT_PER_TRANSACTION) => BridgeError::LimitExceeded(Limit::PerTransaction),
        Some(ErrorCode::LIMIT_DAILY) => BridgeError::LimitExceeded(Limit::Daily),
        Some(ErrorCode::LOCKED) => BridgeError::Locked,
        Some(ErrorCode::UNKNOWN_CREDENTIAL) => {
            BridgeError::UnknownCredential(credential.map(hex::encode).unwrap_or_default())
        }
        Some(ErrorCode::STORAGE_FULL) => BridgeError::StorageFull,
        Some(ErrorCode::STORAGE_FAILURE) => BridgeError::StorageFailure,
        _ => BridgeError::Hal { code, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bridge error the HAL can meet comes back to the client as the
    /// same variant (or as `Hal` with the code the exit status maps).
    #[test]
    fn errors_cross_the_hal_as_the_same_kind() {
        let credential = [3u8; 16];
        let same = |e: BridgeError| {
            let back = error_of(&status_of(&e), Some(&credential));
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&e),
                "{e:?} came back as {back:?}"
            );
        };
        same(BridgeError::DeclinedByUser);
        same(BridgeError::ApprovalTimedOut);
        same(BridgeError::Busy);
        same(BridgeError::LimitExceeded(Limit::PerTransaction));
        same(BridgeError::LimitExceeded(Limit::Daily));
        same(BridgeError::Locked);
        same(BridgeError::UnknownCredential(hex::encode(credential)));
        same(BridgeError::StorageFull);
        same(BridgeError::StorageFailure);
        let coded = |e: BridgeError, code: ErrorCode| match error_of(&status_of(&e), None) {
            BridgeError::Hal { code: got, message } => {
                assert_eq!(got, code.0, "{e:?}");
                assert_eq!(message, e.to_string());
            }
            other => panic!("{e:?} came back as {other:?}"),
        };
        coded(
            BridgeError::Timeout {
                operation: "status",
                after: Duration::from_secs(10),
            },
            ErrorCode::TIMED_OUT,
        );
        coded(
            BridgeError::TransportClosed,
            ErrorCode::SECURE_VM_UNREACHABLE,
        );
        coded(
            BridgeError::AuthenticationFailed("forged".into()),
            ErrorCode::AUTHENTICATION_FAILED,
        );
        coded(
            BridgeError::InvalidField {
                field: "merchant",
                value: "x".into(),
            },
            ErrorCode::INVALID_ARGUMENT,
        );
        coded(BridgeError::Protocol("odd".into()), ErrorCode::INTERNAL);
        // A code this client does not know yet stays visible.
        let unknown = Status::new_service_specific_error(77, Some("newer HAL".into()));
        assert!(matches!(
            error_of(&unknown, None),
            BridgeError::Hal { code: 77, .. }
        ));
        let failed = Status::from(StatusCode::DeadObject);
        assert!(matches!(error_of(&failed, None), BridgeError::Binder(_)));
    }

    #[test]
    fn shown_cuts_long_text_on_a_character_boundary() {
        assert_eq!(shown("EUR"), "\"EUR\"");
        let long = "é".repeat(100);
        let s = shown(&long);
        assert!(s.starts_with(&format!("\"{}\"...", "é".repeat(40))), "{s}");
        assert!(s.ends_with("(200 bytes in all)"), "{s}");
    }
}
