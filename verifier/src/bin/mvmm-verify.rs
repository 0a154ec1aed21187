//! `mvmm-verify`: checks one authorization token from the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mvmm_verify::{Expected, VerifyError, parse_public_key, parse_token, verify_token};
use protocol::Currency;

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
Token file: raw COSE_Sign1 CBOR or base64 of it.";

/// Verify an mVMM payment authorization token (COSE_Sign1, ES256).
#[derive(Parser)]
#[command(version, after_help = EXIT_CODES)]
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
    let args = Args::parse();
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
        Err(e @ VerifyError::Malformed(_)) => fail(5, e),
    }
}
