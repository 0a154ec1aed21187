//! The expected measurements a backend compares attestation evidence with,
//! and the JSON file that carries them (written at build time from the
//! images, see [`from_images`]).
//!
//! ```json
//! {
//!   "board": "qemu-virt",
//!   "mvmm_sha256": "<64 hex digits>",
//!   "secure_os_sha256": "<64 hex digits>",
//!   "min_security_version": 1,
//!   "debug_allowed": false
//! }
//! ```
//!
//! Every field is required and no other is accepted. The evidence matches
//! when both digests and the board are equal, its security version is at
//! least `min_security_version`, and debug is disabled unless
//! `debug_allowed`.

use std::fmt;
use std::path::Path;

use protocol::eat::BootMeasurements;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the backend accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedMeasurements {
    pub board: String,
    /// SHA-256 of the mVMM image.
    pub mvmm: [u8; 32],
    /// SHA-256 of the secure-os image.
    pub secure_os: [u8; 32],
    /// The lowest secure VM security version accepted.
    pub min_security_version: u32,
    /// Whether evidence with debug enabled is accepted.
    pub debug_allowed: bool,
}

/// The file's shape (hex strings for the digests).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    board: String,
    mvmm_sha256: String,
    secure_os_sha256: String,
    min_security_version: u32,
    debug_allowed: bool,
}

/// One measurement that differs from the expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasurementMismatch {
    /// `mvmm`, `secure-os`, `security version`, `debug` or `board`.
    pub measurement: &'static str,
    pub expected: String,
    pub got: String,
}

impl fmt::Display for MeasurementMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} measurement mismatch: expected {}, evidence has {}",
            self.measurement, self.expected, self.got
        )
    }
}

/// SHA-256 of a whole file.
pub fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    Ok(Sha256::digest(std::fs::read(path)?).into())
}

/// The expected measurements of the images at `mvmm` and `secure_os` (the
/// SHA-256 of each file's bytes: the loader must measure the same bytes),
/// for `board`, accepting `min_security_version` and up, debug disabled.
pub fn from_images(
    mvmm: &Path,
    secure_os: &Path,
    board: &str,
    min_security_version: u32,
) -> std::io::Result<ExpectedMeasurements> {
    let name = |path: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    Ok(ExpectedMeasurements {
        board: board.to_string(),
        mvmm: sha256_file(mvmm).map_err(|e| name(mvmm, e))?,
        secure_os: sha256_file(secure_os).map_err(|e| name(secure_os, e))?,
        min_security_version,
        debug_allowed: false,
    })
}

impl ExpectedMeasurements {
    /// The JSON file's text.
    pub fn to_json(&self) -> String {
        let file = File {
            board: self.board.clone(),
            mvmm_sha256: hex::encode(self.mvmm),
            secure_os_sha256: hex::encode(self.secure_os),
            min_security_version: self.min_security_version,
            debug_allowed: self.debug_allowed,
        };
        let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses the JSON file's text.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let file: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let digest = |field: &str, hex_text: &str| -> Result<[u8; 32], String> {
            hex::decode(hex_text)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("{field}: need 64 hex digits"))
        };
        Ok(ExpectedMeasurements {
            mvmm: digest("mvmm_sha256", &file.mvmm_sha256)?,
            secure_os: digest("secure_os_sha256", &file.secure_os_sha256)?,
            board: file.board,
            min_security_version: file.min_security_version,
            debug_allowed: file.debug_allowed,
        })
    }

    /// Reads the JSON file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Writes the JSON file.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json())
    }

    /// Every measurement of `measured` that differs from the expectation.
    pub fn compare(&self, measured: &BootMeasurements) -> Vec<MeasurementMismatch> {
        let mut out = Vec::new();
        let mut check = |measurement, ok: bool, expected: String, got: String| {
            if !ok {
                out.push(MeasurementMismatch {
                    measurement,
                    expected,
                    got,
                });
            }
        };
        check(
            "mvmm",
            measured.mvmm == self.mvmm,
            hex::encode(self.mvmm),
            hex::encode(measured.mvmm),
        );
        check(
            "secure-os",
            measured.secure_os == self.secure_os,
            hex::encode(self.secure_os),
            hex::encode(measured.secure_os),
        );
        check(
            "security version",
            measured.security_version >= self.min_security_version,
            format!("at least {}", self.min_security_version),
            measured.security_version.to_string(),
        );
        check(
            "debug",
            self.debug_allowed || !measured.debug,
            "disabled".into(),
            if measured.debug {
                "enabled"
            } else {
                "disabled"
            }
            .into(),
        );
        check(
            "board",
            measured.board.as_str() == self.board,
            format!("{:?}", self.board),
            format!("{:?}", measured.board.as_str()),
        );
        out
    }
}
