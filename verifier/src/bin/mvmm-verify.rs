//! `mvmm-verify`: checks one authorization token from the command line;
//! `mvmm-verify attest` checks attestation evidence against the expected
//! measurements; `mvmm-verify serve` runs the backend service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Parser, Subcommand};
use mvmm_verify::{
    AttestError, Expected, ExpectedMeasurements, VerifyError, parse_public_key, parse_token,
    server, verify_attestation, verify_token,
};
use protocol::Currency;
use protocol::eat::BootState;

const EXIT_CODES: &str = "\
Exit status:
  0  the token is valid and matches every expected field
  1  a field differs (nonce, amount, currency, merchant, credential)
  2  bad command line
  3  the signature does not verify with the key
  4  the counter is not higher than --last-counter (replay)
  5  the token is malformed
  6  a file cannot be read or the key file cannot be parsed

Key file: hex of the SEC1 P-256 point (04||x||y or compressed), or a PEM PUBLIC KEY.
Token file: raw tagged COSE_Sign1 CBOR or base64 of it.

Subcommands: `attest` (attestation evidence), `serve` (HTTP service); see
`mvmm-verify attest --help`, `mvmm-verify serve --help`.";

const ATTEST_EXIT_CODES: &str = "\
Exit status:
  0  the evidence is valid and every measurement is as expected
  1  a measurement differs (named in the message)
  2  bad command line
  3  the key certificate or the EAT signature does not verify
  4  the nonce differs (stale or replayed evidence)
  5  the evidence is malformed, or its ueid is not the device's
  6  a file cannot be read or parsed
  7  the device reports an unmeasured boot

Expected-measurements file (JSON): {\"board\", \"mvmm_sha256\", \"secure_os_sha256\",
\"min_security_version\", \"debug_allowed\"}; see docs/tokens.md.";

/// Verify an mVMM payment authorization token (CWT: tagged COSE_Sign1, ES256).
#[derive(Parser)]
#[command(
    version,
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    token: Option<Args>,
}

#[derive(Subcommand)]
enum Command {
    /// Verify attestation evidence (an EAT) against expected measurements.
    #[command(after_help = ATTEST_EXIT_CODES)]
    Attest(AttestArgs),
    /// Run the backend verifier as a JSON-over-HTTP service.
    Serve(ServeArgs),
}

#[derive(ClapArgs)]
struct AttestArgs {
    /// The enrolled device public key file (hex SEC1 or PEM).
    #[arg(long)]
    device_key: PathBuf,
    /// The evidence file (raw CBOR or base64).
    #[arg(long)]
    eat: PathBuf,
    /// The nonce the evidence must answer, 64 hex digits.
    #[arg(long, value_parser = parse_nonce)]
    nonce: [u8; 32],
    /// The expected-measurements file (JSON).
    #[arg(long)]
    expected: PathBuf,
}

#[derive(ClapArgs)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8470")]
    listen: String,
    /// The expected-measurements file attestations are checked against.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Seconds an issued nonce stays usable.
    #[arg(long, default_value_t = 300)]
    nonce_ttl: u64,
}

#[derive(ClapArgs)]
struct Args {
    /// Enrolled credential public key file.
    #[arg(long)]
    key: PathBuf,
    /// Token file (raw CBOR or base64).
    #[arg(long)]
    token: PathBuf,
    /// Expected relying-party nonce, 64 hex digits.
    #[arg(long, value_parser = parse_nonce)]
    nonce: [u8; 32],
    /// Expected amount in minor units (cents for EUR).
    #[arg(long)]
    amount: u64,
    /// Expected ISO 4217 currency code.
    #[arg(long, value_parser = parse_currency)]
    currency: Currency,
    /// Expected merchant name.
    #[arg(long)]
    merchant: String,
    /// Highest counter already seen for this credential.
    #[arg(long, default_value_t = 0)]
    last_counter: u64,
    /// Expected credential id, 32 hex digits (optional).
    #[arg(long, value_parser = parse_credential)]
    credential: Option<[u8; 16]>,
}

fn parse_nonce(s: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(s).map_err(|e| e.to_string())?;
    bytes.try_into().map_err(|_| "need exactly 32 bytes".into())
}

fn parse_credential(s: &str) -> Result<[u8; 16], String> {
    let bytes = hex::decode(s).map_err(|e| e.to_string())?;
    bytes.try_into().map_err(|_| "need exactly 16 bytes".into())
}

fn parse_currency(s: &str) -> Result<Currency, String> {
    Currency::from_code(s).ok_or_else(|| format!("{s} is not an accepted ISO 4217 code"))
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("FAIL: {message}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.token) {
        (Some(Command::Attest(args)), _) => attest(&args),
        (Some(Command::Serve(args)), _) => serve(&args),
        (None, Some(args)) => token(&args),
        (None, None) => fail(
            2,
            "nothing to do: give the token flags, `attest` or `serve` (see --help)",
        ),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let expected = match &args.expected {
        Some(path) => match ExpectedMeasurements::load(path) {
            Ok(expected) => Some(expected),
            Err(e) => return fail(6, e),
        },
        None => None,
    };
    let config = server::Config {
        expected,
        nonce_ttl: std::time::Duration::from_secs(args.nonce_ttl),
    };
    match server::start(&args.listen, config) {
        Ok(running) => {
            println!("mvmm-verify: listening on http://{}", running.addr());
            running.wait();
            ExitCode::SUCCESS
        }
        Err(e) => fail(6, e),
    }
}

fn attest(args: &AttestArgs) -> ExitCode {
    let device = match std::fs::read_to_string(&args.device_key) {
        Ok(text) => match parse_public_key(&text) {
            Ok(key) => key,
            Err(e) => return fail(6, format_args!("{}: {e}", args.device_key.display())),
        },
        Err(e) => return fail(6, format_args!("{}: {e}", args.device_key.display())),
    };
    let eat = match std::fs::read(&args.eat) {
        Ok(bytes) => match parse_token(&bytes) {
            Ok(eat) => eat,
            Err(e) => return fail(5, e),
        },
        Err(e) => return fail(6, format_args!("{}: {e}", args.eat.display())),
    };
    let expected = match ExpectedMeasurements::load(&args.expected) {
        Ok(expected) => expected,
        Err(e) => return fail(6, e),
    };
    match verify_attestation(&device, &args.nonce, &eat, &expected) {
        Ok(claims) => {
            println!(
                "OK: device {} booted {}",
                hex::encode(claims.ueid),
                claims.boot
            );
            if let BootState::Measured(m) = &claims.boot {
                println!("  mvmm      sha256 {}", hex::encode(m.mvmm));
                println!("  secure-os sha256 {}", hex::encode(m.secure_os));
            }
            ExitCode::SUCCESS
        }
        Err(e @ AttestError::Measurements(_)) => fail(1, e),
        Err(e @ (AttestError::UntrustedKey | AttestError::BadSignature)) => fail(3, e),
        Err(e @ AttestError::NonceMismatch) => fail(4, e),
        Err(
            e @ (AttestError::Malformed(_) | AttestError::Claims(_) | AttestError::WrongDevice),
        ) => fail(5, e),
        Err(e @ AttestError::Unmeasured) => fail(7, e),
    }
}

fn token(args: &Args) -> ExitCode {
    let key = match std::fs::read_to_string(&args.key) {
        Ok(text) => match parse_public_key(&text) {
            Ok(key) => key,
            Err(e) => return fail(6, format_args!("{}: {e}", args.key.display())),
        },
        Err(e) => return fail(6, format_args!("{}: {e}", args.key.display())),
    };
    let token = match std::fs::read(&args.token) {
        Ok(bytes) => match parse_token(&bytes) {
            Ok(token) => token,
            Err(e) => return fail(5, e),
        },
        Err(e) => return fail(6, format_args!("{}: {e}", args.token.display())),
    };
    let expected = Expected {
        nonce: args.nonce,
        amount_minor: args.amount,
        currency: args.currency,
        merchant: &args.merchant,
        last_counter: args.last_counter,
        credential: args.credential,
    };
    match verify_token(&token, &key, &expected) {
        Ok(claims) => {
            println!(
                "OK: credential {} authorized {} minor units of {} to {:?}, counter {}",
                hex::encode(claims.credential),
                claims.amount_minor,
                args.currency.code(),
                claims.merchant.as_str(),
                claims.counter
            );
            ExitCode::SUCCESS
        }
        Err(e @ VerifyError::Mismatch(_)) => fail(1, e),
        Err(e @ VerifyError::BadSignature) => fail(3, e),
        Err(e @ VerifyError::StaleCounter { .. }) => fail(4, e),
        Err(e @ (VerifyError::Malformed(_) | VerifyError::Claims(_))) => fail(5, e),
    }
}
