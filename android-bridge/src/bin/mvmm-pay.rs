//! `mvmm-pay`: ask the secure VM for payment approvals from the rich VM's
//! shell (or a script: `--json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use android_bridge::amount::{currency, format_amount, parse_amount};
use android_bridge::backend::{Answer, Backend, BackendError, TokenCheck};
use android_bridge::{
    Attestation, Authorization, Bridge, BridgeError, CredentialId, CredentialInfo, DeviceKey,
    DeviceStatus, EnrollmentRecord, Nonce, PaymentRequest, Timeouts, Transport,
};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

const AFTER_HELP: &str = "\
Environment: MVMM_TRANSPORT (default: the secure VM's payment service), MVMM_DEVICE_KEY (default /etc/mvmm/device.pub),
MVMM_BINDER (1: the same as --binder), MVMM_BINDER_DEVICE (default /dev/binder),
MVMM_BACKEND (the same as --backend).

With --backend URL (the payment backend's HTTP API, `mvmm-verify serve`), `request` takes its
nonce from the backend (unless --nonce is given) and sends the token there, `enroll` enrolls the
new credential there, and `submit` sends a token; the backend's answer is printed under
\"backend\" ({\"status\": 200, \"body\": {...}}).

Exit status:
  0  success
  1  declined by user
  2  bad command line (including a bad amount)
  3  timed out (the user did not answer, or the secure VM did not)
  4  busy (another approval is in progress)
  5  refused by policy (limit exceeded, locked) or by the secure VM (unknown credential, invalid field, storage)
  6  authentication failed or protocol version mismatch
  7  cannot reach the secure VM (connect error, transport closed) or the payment HAL (binder)
  8  any other error
  9  the backend refused (its answer is printed: replay, mismatch, unknown credential, ...)
 10  cannot reach the backend, or it did not answer JSON over HTTP";

/// Ask the secure VM's payment app for approvals, credentials and attestations.
#[derive(Parser)]
#[command(version, after_help = AFTER_HELP)]
struct Args {
    /// vsock:CID:PORT (rich VM) or unix:PATH (simulator).
    #[arg(
        long,
        global = true,
        env = "MVMM_TRANSPORT",
        default_value_t = Transport::secure_vm()
    )]
    transport: Transport,
    /// Go through the payment HAL (dev.mvmm.IPayment, mvmm-payment-hal) over
    /// binder instead of opening a session over --transport.
    #[arg(long, global = true, env = "MVMM_BINDER", value_parser = clap::builder::BoolishValueParser::new())]
    binder: bool,
    /// The binder device the payment HAL serves on (with --binder).
    #[arg(
        long,
        global = true,
        env = "MVMM_BINDER_DEVICE",
        value_name = "DEVICE",
        default_value = "/dev/binder"
    )]
    binder_device: String,
    /// The pinned device public key (hex SEC1).
    #[arg(
        long,
        global = true,
        env = "MVMM_DEVICE_KEY",
        default_value = "/etc/mvmm/device.pub"
    )]
    device_key: PathBuf,
    /// Machine-readable output on stdout (errors too).
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the user to answer a payment.
    #[arg(long, global = true, default_value_t = 120)]
    approval_timeout: u64,
    /// Seconds to wait for any other answer (the backend's too).
    #[arg(long, global = true, default_value_t = 10)]
    timeout: u64,
    /// The payment backend, http://HOST:PORT[/PREFIX] (from the rich VM under
    /// QEMU's user networking the host is 10.0.2.2).
    #[arg(long, global = true, env = "MVMM_BACKEND", value_name = "URL")]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask the user to approve a payment on the trusted display.
    Request {
        /// Decimal amount in the currency's unit, e.g. 12.50 (no more decimals
        /// than the currency has).
        #[arg(long)]
        amount: String,
        /// ISO 4217 code, e.g. EUR.
        #[arg(long)]
        currency: String,
        /// Merchant name as the user will see it.
        #[arg(long)]
        merchant: String,
        /// Relying-party nonce, 64 hex digits [default: random].
        #[arg(long, value_parser = parse_nonce)]
        nonce: Option<[u8; 32]>,
        /// Credential id, 32 hex digits [default: the first enrolled].
        #[arg(long, value_parser = parse_credential)]
        credential: Option<[u8; 16]>,
    },
    /// Create a credential inside the secure VM.
    Enroll {
        /// The name the user sees, e.g. "Visa ending 4242".
        #[arg(long)]
        label: String,
    },
    /// List the enrolled credentials.
    List,
    /// Delete a credential and its private key.
    Delete {
        /// Credential id, 32 hex digits.
        #[arg(long, value_parser = parse_credential)]
        credential: [u8; 16],
    },
    /// Have the device key sign a nonce.
    Attest {
        /// 64 hex digits [default: random].
        #[arg(long, value_parser = parse_nonce)]
        nonce: Option<[u8; 32]>,
    },
    /// Show the payment app's state.
    Status,
    /// Set the trusted path up (once per device): on the trusted display
    /// the user chooses a security word and a PIN. Not over --binder.
    Setup,
    /// Send a token to the backend (--backend) for its verdict, checked
    /// against the payment given here.
    Submit {
        /// The token, base64, as `request` prints it.
        #[arg(long)]
        token: String,
        /// Decimal amount, e.g. 12.50.
        #[arg(long)]
        amount: String,
        /// ISO 4217 code, e.g. EUR.
        #[arg(long)]
        currency: String,
        /// Merchant name.
        #[arg(long)]
        merchant: String,
        /// Credential id, 32 hex digits [default: the token's].
        #[arg(long, value_parser = parse_credential)]
        credential: Option<[u8; 16]>,
    },
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let bytes = hex::decode(s).map_err(|e| format!("{s:?} is not hex: {e}"))?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        format!(
            "{s:?} has {len} bytes, need exactly {N} ({} hex digits)",
            2 * N
        )
    })
}

fn parse_nonce(s: &str) -> Result<[u8; 32], String> {
    parse_hex(s)
}

fn parse_credential(s: &str) -> Result<[u8; 16], String> {
    parse_hex(s)
}

fn random_nonce() -> Result<[u8; 32], BridgeError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| BridgeError::Random(e.to_string()))?;
    Ok(nonce)
}

/// A failure and the exit status it maps to.
struct Failure {
    code: u8,
    kind: &'static str,
    message: String,
}

impl From<BridgeError> for Failure {
    fn from(e: BridgeError) -> Self {
        use BridgeError as B;
        let (code, kind) = match &e {
            B::DeclinedByUser => (1, "declined"),
            B::Amount(_) | B::InvalidField { .. } => (2, "usage"),
            B::ApprovalTimedOut | B::Timeout { .. } => (3, "timed_out"),
            B::Busy => (4, "busy"),
            B::LimitExceeded(_) => (5, "limit_exceeded"),
            B::Locked => (5, "locked"),
            B::UnknownCredential(_) => (5, "unknown_credential"),
            B::InvalidRequest(_) | B::StorageFull | B::StorageFailure => (5, "refused"),
            B::AuthenticationFailed(_) => (6, "authentication_failed"),
            B::VersionMismatch { .. } => (6, "version_mismatch"),
            B::TransportClosed => (7, "transport_closed"),
            B::Connect { .. } => (7, "connect"),
            B::BadDeviceKey(_) => (2, "device_key"),
            B::Hal { code, .. } => hal_failure(*code),
            B::Binder(_) => (7, "binder"),
            _ => (8, "error"),
        };
        Failure {
            code,
            kind,
            message: e.to_string(),
        }
    }
}

/// Exit status and kind of a payment HAL error code that has no bridge
/// error of its own (see `ErrorCode.aidl`).
#[cfg(target_os = "linux")]
fn hal_failure(code: i32) -> (u8, &'static str) {
    use payment_aidl::ErrorCode as E;
    use rsbinder::ServiceSpecificError as _;
    match E::from_code(code) {
        Some(E::INVALID_ARGUMENT) => (2, "usage"),
        Some(E::TIMED_OUT) => (3, "timed_out"),
        Some(E::SECURE_VM_UNREACHABLE) => (7, "connect"),
        Some(E::AUTHENTICATION_FAILED) => (6, "authentication_failed"),
        _ => (8, "error"),
    }
}

#[cfg(not(target_os = "linux"))]
fn hal_failure(_code: i32) -> (u8, &'static str) {
    (8, "error")
}

/// What `mvmm-pay` asks of the secure VM, whichever the path: a session of
/// its own ([`Bridge`]) or the payment HAL over binder.
trait Payments {
    fn enroll(&mut self, label: &str) -> Result<EnrollmentRecord, BridgeError>;
    fn list_credentials(&mut self) -> Result<Vec<CredentialInfo>, BridgeError>;
    fn delete_credential(&mut self, credential: &CredentialId) -> Result<(), BridgeError>;
    fn request_payment(&mut self, request: &PaymentRequest) -> Result<Authorization, BridgeError>;
    fn attest(&mut self, nonce: &Nonce) -> Result<Attestation, BridgeError>;
    fn status(&mut self) -> Result<DeviceStatus, BridgeError>;
    /// The trusted path's setup (see `Bridge::setup`).
    fn setup(&mut self) -> Result<DeviceStatus, BridgeError> {
        Err(BridgeError::Protocol(
            "setup is offered over the VMM channel only, not through the payment HAL (drop --binder)"
                .into(),
        ))
    }
}

/// One `impl Payments` forwarding every call to the type's own method.
macro_rules! forward_payments {
    ($ty:ty $(, $extra:ident)*) => {
        impl Payments for $ty {
            $(
                fn $extra(&mut self) -> Result<DeviceStatus, BridgeError> {
                    <$ty>::$extra(self)
                }
            )*
            fn enroll(&mut self, label: &str) -> Result<EnrollmentRecord, BridgeError> {
                <$ty>::enroll(self, label)
            }
            fn list_credentials(&mut self) -> Result<Vec<CredentialInfo>, BridgeError> {
                <$ty>::list_credentials(self)
            }
            fn delete_credential(&mut self, credential: &CredentialId) -> Result<(), BridgeError> {
                <$ty>::delete_credential(self, credential)
            }
            fn request_payment(
                &mut self,
                request: &PaymentRequest,
            ) -> Result<Authorization, BridgeError> {
                <$ty>::request_payment(self, request)
            }
            fn attest(&mut self, nonce: &Nonce) -> Result<Attestation, BridgeError> {
                <$ty>::attest(self, nonce)
            }
            fn status(&mut self) -> Result<DeviceStatus, BridgeError> {
                <$ty>::status(self)
            }
        }
    };
}

forward_payments!(Bridge, setup);
#[cfg(target_os = "linux")]
forward_payments!(android_bridge::hal::HalClient);

fn open(args: &Args, key: &DeviceKey) -> Result<Box<dyn Payments>, Failure> {
    let timeouts = Timeouts {
        call: Duration::from_secs(args.timeout),
        approval: Duration::from_secs(args.approval_timeout),
    };
    if args.binder {
        let device = &args.binder_device;
        #[cfg(target_os = "linux")]
        {
            // Wait for the HAL as long as for any other answer.
            let client = android_bridge::hal::HalClient::connect(device, key, timeouts.call)?;
            return Ok(Box::new(client));
        }
        #[cfg(not(target_os = "linux"))]
        return Err(BridgeError::Binder(format!("{device}: binder needs Linux or Android")).into());
    }
    let mut bridge = Bridge::connect(&args.transport, key)?;
    bridge.set_timeouts(timeouts);
    Ok(Box::new(bridge))
}

impl From<BackendError> for Failure {
    fn from(e: BackendError) -> Self {
        let code = match e {
            BackendError::BadUrl(_) => 2,
            _ => 10,
        };
        Failure {
            code,
            kind: "backend_unreachable",
            message: e.to_string(),
        }
    }
}

/// The exit status of a backend's answer: 0, or 9 when it refused.
fn verdict_code(answer: &Answer) -> u8 {
    if answer.accepted() { 0 } else { 9 }
}

fn usage(message: String) -> Failure {
    Failure {
        code: 2,
        kind: "usage",
        message,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok((output, code)) => {
            print(&args, &output);
            if code != 0 {
                let error = output["backend"]["body"]["error"]
                    .as_str()
                    .unwrap_or("error");
                eprintln!(
                    "mvmm-pay: the backend refused: {} {error}",
                    output["backend"]["status"]
                );
            }
            ExitCode::from(code)
        }
        Err(failure) => {
            if args.json {
                println!(
                    "{}",
                    json!({"error": failure.message, "kind": failure.kind, "exit": failure.code})
                );
            }
            eprintln!("mvmm-pay: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn print(args: &Args, output: &Value) {
    if args.json {
        println!("{output}");
        return;
    }
    if let Value::Object(map) = output {
        for (key, value) in map {
            match value {
                Value::String(s) => println!("{key}: {s}"),
                Value::Array(items) => {
                    println!("{key}:");
                    for item in items {
                        println!("  {item}");
                    }
                }
                other => println!("{key}: {other}"),
            }
        }
    }
}

/// What `run` prints and the exit status: 0, or 9 when the backend refused.
type Outcome = (Value, u8);

fn run(args: &Args) -> Result<Outcome, Failure> {
    // Check what can be checked before touching the transport.
    let backend = args
        .backend
        .as_deref()
        .map(|url| Backend::new(url, Duration::from_secs(args.timeout)))
        .transpose()?;
    if let Command::Submit {
        token,
        amount,
        currency: code,
        merchant,
        credential,
    } = &args.command
    {
        let backend = backend.ok_or_else(|| usage("submit needs --backend URL".into()))?;
        let currency = currency(code).map_err(|e| usage(e.to_string()))?;
        let amount_minor = parse_amount(amount, currency).map_err(|e| usage(e.to_string()))?;
        let credential = credential.map(hex::encode);
        let answer = backend.verify(&TokenCheck {
            token_base64: token,
            amount_minor,
            currency: currency.code(),
            merchant,
            credential: credential.as_deref(),
        })?;
        return Ok((
            json!({ "backend": answer.to_json() }),
            verdict_code(&answer),
        ));
    }
    let request_parts = match &args.command {
        Command::Request {
            amount,
            currency: code,
            ..
        } => {
            let currency = currency(code).map_err(|e| usage(e.to_string()))?;
            let minor = parse_amount(amount, currency).map_err(|e| usage(e.to_string()))?;
            Some((currency, minor))
        }
        _ => None,
    };
    let key = DeviceKey::load(&args.device_key)?;
    let mut bridge = open(args, &key)?;
    match &args.command {
        Command::Request {
            merchant,
            nonce,
            credential,
            ..
        } => {
            let Some((currency, minor)) = request_parts else {
                return Err(usage("internal: request without amount".into()));
            };
            let credential = match credential {
                Some(c) => *c,
                None => {
                    let list = bridge.list_credentials()?;
                    let first = list.first().ok_or_else(|| Failure {
                        code: 5,
                        kind: "unknown_credential",
                        message:
                            "no credential is enrolled: run `mvmm-pay enroll --label NAME` first"
                                .into(),
                    })?;
                    if list.len() > 1 {
                        eprintln!(
                            "mvmm-pay: using credential {} ({}); choose with --credential",
                            hex::encode(first.credential),
                            first.label
                        );
                    }
                    first.credential
                }
            };
            let nonce = match (nonce, &backend) {
                (Some(n), _) => *n,
                (None, Some(backend)) => backend.nonce()?,
                (None, None) => random_nonce()?,
            };
            let request = PaymentRequest::from_minor(credential, minor, currency, merchant, nonce)?;
            let authorization = bridge.request_payment(&request)?;
            let claims = &authorization.claims;
            let token = base64::engine::general_purpose::STANDARD.encode(&authorization.token);
            let mut output = json!({
                "token": token,
                "credential": hex::encode(claims.credential),
                "amount_minor": claims.amount_minor,
                "amount": format_amount(claims.amount_minor, currency),
                "currency": currency.code(),
                "merchant": claims.merchant.as_str(),
                "nonce": hex::encode(claims.nonce),
                "counter": claims.counter,
            });
            let Some(backend) = &backend else {
                return Ok((output, 0));
            };
            // Checked against what was asked, not what the token claims.
            let credential = hex::encode(credential);
            let answer = backend.verify(&TokenCheck {
                token_base64: &token,
                amount_minor: minor,
                currency: currency.code(),
                merchant,
                credential: Some(&credential),
            })?;
            output["backend"] = answer.to_json();
            Ok((output, verdict_code(&answer)))
        }
        Command::Enroll { label } => {
            let record = bridge.enroll(label)?;
            let mut output = json!({
                "credential": hex::encode(record.credential),
                "label": record.label.as_str(),
                "public_key": hex::encode(record.public_key.0),
                "signature": hex::encode(record.signature.0),
            });
            let Some(backend) = &backend else {
                return Ok((output, 0));
            };
            let answer = backend.enroll(&key, &record)?;
            output["backend"] = answer.to_json();
            Ok((output, verdict_code(&answer)))
        }
        Command::List => {
            let list = bridge.list_credentials()?;
            let items: Vec<Value> = list
                .iter()
                .map(|c| {
                    json!({
                        "credential": hex::encode(c.credential),
                        "label": c.label.as_str(),
                        "public_key": hex::encode(c.public_key.0),
                    })
                })
                .collect();
            Ok((json!({ "credentials": items }), 0))
        }
        Command::Delete { credential } => {
            bridge.delete_credential(credential)?;
            Ok((json!({ "deleted": hex::encode(credential) }), 0))
        }
        Command::Attest { nonce } => {
            let nonce = match nonce {
                Some(n) => *n,
                None => random_nonce()?,
            };
            let attestation = bridge.attest(&nonce)?;
            Ok((
                json!({
                    "nonce": hex::encode(nonce),
                    "eat": base64::engine::general_purpose::STANDARD.encode(&attestation.eat),
                }),
                0,
            ))
        }
        Command::Setup => {
            let status = bridge.setup()?;
            Ok((
                json!({
                    "set_up": true,
                    "pin_set": status.pin_set,
                    "device_public_key": key.to_hex(),
                }),
                0,
            ))
        }
        Command::Status => {
            let status = bridge.status()?;
            Ok((
                json!({
                    "protocol_version": status.protocol_version,
                    "credentials": status.credentials,
                    "pin_set": status.pin_set,
                    "locked": status.locked,
                    "busy": status.busy,
                    "transaction_counter": status.transaction_counter,
                    "device_public_key": key.to_hex(),
                }),
                0,
            ))
        }
        Command::Submit { .. } => Err(usage("internal: submit reached the bridge".into())),
    }
}
