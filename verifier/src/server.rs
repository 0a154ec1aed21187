//! `mvmm-verify serve`: a payment backend's verifier as a JSON-over-HTTP
//! service (docs/verifier-service.md).
//!
//! [`Backend`] holds the state and decides (enrolled devices and
//! credentials, issued nonces, the last counter per credential); the HTTP
//! layer only maps JSON to its calls. Requests are served one at a time on
//! one thread, so every check-then-record (nonce use, counter) is atomic.
//!
//! # Replay
//! A token is accepted once: its nonce must be one this service issued,
//! unexpired and unused, and its counter must be above the credential's
//! last accepted counter. The same token again is refused as a `replay`,
//! and so is a new token that reuses a nonce. Attestation nonces are single
//! use the same way.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use p256::ecdsa::VerifyingKey;
use protocol::eat::{BootState, ueid};
use protocol::{Currency, EnrollmentRecord, FixedBytes, Label, Nonce};
use serde::Deserialize;
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::attestation::verify_attestation;
use crate::measurements::ExpectedMeasurements;
use crate::{
    AttestError, Expected, VerifyError, check_claims, parse_public_key, parse_token, token_key_id,
    verify_enrollment, verify_token_signature,
};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Most nonces outstanding at once.
pub const MAX_NONCES: usize = 10_000;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The reference measurements attestations are checked against; without
    /// them attestation checks are refused (`no_reference`).
    pub expected: Option<ExpectedMeasurements>,
    /// How long an issued nonce stays usable.
    pub nonce_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            expected: None,
            nonce_ttl: Duration::from_secs(300),
        }
    }
}

/// An error answer: HTTP status, stable code, message, optional details.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
        details: None,
    }
}

struct Credential {
    key: VerifyingKey,
    last_counter: u64,
}

struct IssuedNonce {
    expires: Instant,
    used: bool,
}

/// The verifier's state and decisions, without HTTP.
pub struct Backend {
    config: Config,
    devices: HashMap<String, VerifyingKey>,
    credentials: HashMap<[u8; 16], Credential>,
    nonces: HashMap<Nonce, IssuedNonce>,
}

/// A device key enrollment (`POST /v1/devices`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEnrollment {
    /// Hex SEC1 (compressed or not) or a PEM public key.
    pub public_key: String,
}

/// A credential enrollment (`POST /v1/credentials`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialEnrollment {
    /// 32 hex digits.
    pub credential: String,
    /// Hex of the uncompressed SEC1 point (130 digits).
    pub public_key: String,
    /// With `device_id`: the enrollment record's label and signature, checked
    /// against that enrolled device key.
    pub device_id: Option<String>,
    pub label: Option<String>,
    pub signature: Option<String>,
}

/// A token to check (`POST /v1/tokens/verify`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCheck {
    /// Base64 (standard or URL-safe) of the tagged COSE_Sign1.
    pub token: String,
    pub amount_minor: u64,
    pub currency: String,
    pub merchant: String,
    /// 32 hex digits; when set the token must come from this credential.
    pub credential: Option<String>,
}

/// Evidence to check (`POST /v1/attestations/verify`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationCheck {
    pub device_id: String,
    /// The nonce this service issued for it, 64 hex digits.
    pub nonce: String,
    /// Base64 of the tagged COSE_Sign1 EAT.
    pub eat: String,
}

fn hex_array<const N: usize>(field: &str, text: &str) -> Result<[u8; N], Refusal> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            refuse(
                400,
                "bad_request",
                format!("{field}: need {} hex digits", 2 * N),
            )
        })
}

fn base64(field: &str, text: &str) -> Result<Vec<u8>, Refusal> {
    parse_token(text.as_bytes()).map_err(|e| refuse(400, "bad_request", format!("{field}: {e}")))
}

fn token_refusal(error: VerifyError) -> Refusal {
    let message = error.to_string();
    match error {
        VerifyError::Malformed(_) | VerifyError::Claims(_) => refuse(422, "malformed", message),
        VerifyError::BadSignature => refuse(422, "bad_signature", message),
        VerifyError::StaleCounter { .. } => refuse(409, "replay", message),
        VerifyError::Mismatch(list) => Refusal {
            details: Some(json!(
                list.iter()
                    .map(|m| json!({"field": m.field, "expected": m.expected, "got": m.got}))
                    .collect::<Vec<_>>()
            )),
            ..refuse(422, "mismatch", message)
        },
    }
}

fn attest_refusal(error: AttestError) -> Refusal {
    let message = error.to_string();
    match error {
        AttestError::Malformed(_) | AttestError::Claims(_) => refuse(422, "malformed", message),
        AttestError::UntrustedKey => refuse(422, "untrusted_key", message),
        AttestError::BadSignature => refuse(422, "bad_signature", message),
        AttestError::WrongDevice => refuse(422, "wrong_device", message),
        AttestError::NonceMismatch => refuse(422, "nonce_mismatch", message),
        AttestError::Unmeasured => refuse(422, "unmeasured", message),
        AttestError::Measurements(list) => Refusal {
            details: Some(json!(
                list.iter()
                    .map(|m| json!({"measurement": m.measurement, "expected": m.expected, "got": m.got}))
                    .collect::<Vec<_>>()
            )),
            ..refuse(422, "measurement_mismatch", message)
        },
    }
}

impl Backend {
    /// An empty backend.
    pub fn new(config: Config) -> Self {
        Backend {
            config,
            devices: HashMap::new(),
            credentials: HashMap::new(),
            nonces: HashMap::new(),
        }
    }

    /// Enrolls (pins) a device key; returns its id (hex of its `ueid`).
    pub fn enroll_device(&mut self, request: &DeviceEnrollment) -> Result<Value, Refusal> {
        let key = parse_public_key(&request.public_key)
            .map_err(|e| refuse(400, "bad_request", format!("public_key: {e}")))?;
        let point = FixedBytes::from_slice(key.to_sec1_point(false).as_bytes())
            .ok_or_else(|| refuse(400, "bad_request", "public_key"))?;
        let id = hex::encode(ueid(&point));
        self.devices.insert(id.clone(), key);
        Ok(json!({ "device_id": id }))
    }

    /// Enrolls a credential key: checked against the device's enrollment
    /// signature when `device_id` is given, taken as given otherwise.
    pub fn enroll_credential(&mut self, request: &CredentialEnrollment) -> Result<Value, Refusal> {
        let credential = hex_array::<16>("credential", &request.credential)?;
        let point = hex_array::<65>("public_key", &request.public_key)?;
        let key = match &request.device_id {
            Some(device_id) => {
                let device = self.devices.get(device_id).ok_or_else(|| {
                    refuse(404, "unknown_device", "no device enrolled with this id")
                })?;
                let label = request.label.as_deref().unwrap_or_default();
                let record = EnrollmentRecord {
                    credential,
                    label: Label::try_from(label)
                        .map_err(|_| refuse(400, "bad_request", "label: at most 24 bytes"))?,
                    public_key: FixedBytes(point),
                    signature: FixedBytes(hex_array::<64>(
                        "signature",
                        request.signature.as_deref().unwrap_or_default(),
                    )?),
                };
                verify_enrollment(device, &record).map_err(|_| {
                    refuse(
                        422,
                        "bad_signature",
                        "the enrollment record is not signed by this device",
                    )
                })?
            }
            None => VerifyingKey::from_sec1_bytes(&point)
                .map_err(|_| refuse(400, "bad_request", "public_key: not a P-256 point"))?,
        };
        if let Some(existing) = self.credentials.get(&credential)
            && existing.key != key
        {
            return Err(refuse(
                409,
                "conflict",
                "this credential id is enrolled with another key",
            ));
        }
        self.credentials.entry(credential).or_insert(Credential {
            key,
            last_counter: 0,
        });
        Ok(json!({ "credential": hex::encode(credential) }))
    }

    /// Issues a fresh single-use nonce.
    pub fn issue_nonce(&mut self, now: Instant) -> Result<Value, Refusal> {
        self.nonces.retain(|_, n| n.expires > now);
        if self.nonces.len() >= MAX_NONCES {
            return Err(refuse(503, "busy", "too many outstanding nonces"));
        }
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce)
            .map_err(|e| refuse(500, "internal", format!("random generator: {e}")))?;
        self.nonces.insert(
            nonce,
            IssuedNonce {
                expires: now + self.config.nonce_ttl,
                used: false,
            },
        );
        Ok(json!({
            "nonce": hex::encode(nonce),
            "expires_in_seconds": self.config.nonce_ttl.as_secs(),
        }))
    }

    /// Whether `nonce` may be used now (issued here, unexpired, unused).
    fn check_nonce(&self, nonce: &Nonce, now: Instant) -> Result<(), Refusal> {
        match self.nonces.get(nonce) {
            Some(n) if n.used => Err(refuse(409, "replay", "this nonce was already used")),
            Some(n) if n.expires > now => Ok(()),
            Some(_) => Err(refuse(422, "unknown_nonce", "this nonce expired")),
            None => Err(refuse(
                422,
                "unknown_nonce",
                "this service did not issue this nonce",
            )),
        }
    }

    fn use_nonce(&mut self, nonce: &Nonce) {
        if let Some(n) = self.nonces.get_mut(nonce) {
            n.used = true;
        }
    }

    /// Verifies a payment token; accepts each token once.
    pub fn verify_token(&mut self, request: &TokenCheck, now: Instant) -> Result<Value, Refusal> {
        let token = base64("token", &request.token)?;
        let kid = token_key_id(&token).map_err(token_refusal)?;
        if let Some(credential) = &request.credential
            && hex_array::<16>("credential", credential)? != kid
        {
            return Err(refuse(
                422,
                "mismatch",
                "the token is from another credential",
            ));
        }
        let currency = Currency::from_code(&request.currency).ok_or_else(|| {
            refuse(
                400,
                "bad_request",
                "currency: not an accepted ISO 4217 code",
            )
        })?;
        let credential = self.credentials.get(&kid).ok_or_else(|| {
            refuse(
                404,
                "unknown_credential",
                "no credential enrolled with the token's kid",
            )
        })?;
        let claims = verify_token_signature(&token, &credential.key).map_err(token_refusal)?;
        let expected = Expected {
            nonce: claims.nonce,
            amount_minor: request.amount_minor,
            currency,
            merchant: &request.merchant,
            last_counter: credential.last_counter,
            credential: Some(kid),
        };
        let claims = check_claims(claims, &expected).map_err(token_refusal)?;
        self.check_nonce(&claims.nonce, now)?;
        self.use_nonce(&claims.nonce);
        if let Some(credential) = self.credentials.get_mut(&kid) {
            credential.last_counter = claims.counter;
        }
        Ok(json!({
            "valid": true,
            "credential": hex::encode(claims.credential),
            "amount_minor": claims.amount_minor,
            "currency": String::from_utf8_lossy(&claims.currency.0),
            "merchant": claims.merchant.as_str(),
            "nonce": hex::encode(claims.nonce),
            "counter": claims.counter,
            "displayed_text_sha256": hex::encode(claims.displayed_text_sha256),
        }))
    }

    /// Verifies attestation evidence against the configured measurements.
    pub fn verify_attestation(
        &mut self,
        request: &AttestationCheck,
        now: Instant,
    ) -> Result<Value, Refusal> {
        let expected = self.config.expected.as_ref().ok_or_else(|| {
            refuse(
                503,
                "no_reference",
                "no expected measurements configured (serve --expected)",
            )
        })?;
        let device = self
            .devices
            .get(&request.device_id)
            .ok_or_else(|| refuse(404, "unknown_device", "no device enrolled with this id"))?;
        let nonce = hex_array::<32>("nonce", &request.nonce)?;
        let eat = base64("eat", &request.eat)?;
        self.check_nonce(&nonce, now)?;
        let claims = verify_attestation(device, &nonce, &eat, expected).map_err(attest_refusal)?;
        self.use_nonce(&nonce);
        let BootState::Measured(m) = &claims.boot else {
            return Err(refuse(422, "unmeasured", "unmeasured"));
        };
        Ok(json!({
            "valid": true,
            "ueid": hex::encode(claims.ueid),
            "board": m.board.as_str(),
            "mvmm_sha256": hex::encode(m.mvmm),
            "secure_os_sha256": hex::encode(m.secure_os),
            "security_version": m.security_version,
            "debug": m.debug,
        }))
    }

    /// Answers one request: (status, JSON body).
    pub fn handle(&mut self, method: &str, path: &str, body: &[u8], now: Instant) -> (u16, Value) {
        fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Refusal> {
            serde_json::from_slice(body).map_err(|e| refuse(400, "bad_request", e.to_string()))
        }
        let result = match (method, path) {
            ("GET", "/health") => Ok((200, json!({"status": "ok"}))),
            ("POST", "/v1/devices") => parse(body)
                .and_then(|r| self.enroll_device(&r))
                .map(|v| (201, v)),
            ("POST", "/v1/credentials") => parse(body)
                .and_then(|r| self.enroll_credential(&r))
                .map(|v| (201, v)),
            ("POST", "/v1/nonces") => self.issue_nonce(now).map(|v| (201, v)),
            ("POST", "/v1/tokens/verify") => parse(body)
                .and_then(|r| self.verify_token(&r, now))
                .map(|v| (200, v)),
            ("POST", "/v1/attestations/verify") => parse(body)
                .and_then(|r| self.verify_attestation(&r, now))
                .map(|v| (200, v)),
            (
                _,
                "/health"
                | "/v1/devices"
                | "/v1/credentials"
                | "/v1/nonces"
                | "/v1/tokens/verify"
                | "/v1/attestations/verify",
            ) => Err(refuse(
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err(refuse(404, "not_found", format!("no endpoint {path}"))),
        };
        match result {
            Ok(answer) => answer,
            Err(r) => {
                let mut body = json!({"error": r.code, "message": r.message});
                if let Some(details) = r.details {
                    body["details"] = details;
                }
                (r.status, body)
            }
        }
    }
}

/// A running service. Dropping it stops it.
pub struct Running {
    addr: SocketAddr,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// The address it listens on (with the real port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends.
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Stops serving.
    pub fn stop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Listens on `listen` (such as `127.0.0.1:8443`, port 0 for any) and
/// serves in a background thread.
pub fn start(listen: &str, config: Config) -> Result<Running, String> {
    let server = Server::http(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("{listen} is not an IP address"))?;
    let server = Arc::new(server);
    let serving = Arc::clone(&server);
    let thread = std::thread::spawn(move || {
        let mut backend = Backend::new(config);
        for request in serving.incoming_requests() {
            serve_one(&mut backend, request);
        }
    });
    Ok(Running {
        addr,
        server,
        thread: Some(thread),
    })
}

fn serve_one(backend: &mut Backend, mut request: Request) {
    let mut body = Vec::new();
    let too_long = request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_or(true, |n| n > MAX_BODY);
    let (status, value) = if too_long {
        (
            413,
            json!({"error": "payload_too_large", "message": format!("at most {MAX_BODY} bytes")}),
        )
    } else {
        let method = match request.method() {
            Method::Get => "GET",
            Method::Post => "POST",
            _ => "OTHER",
        };
        let path = request
            .url()
            .split('?')
            .next()
            .unwrap_or_default()
            .to_string();
        backend.handle(method, &path, &body, Instant::now())
    };
    let mut response = Response::from_string(value.to_string()).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", "application/json") {
        response = response.with_header(header);
    }
    let _ = request.respond(response);
}
