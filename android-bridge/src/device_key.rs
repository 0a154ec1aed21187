//! The secure VM's device public key, as the client pins it.
//!
//! The file format is the one `mvmm-verify` reads: hex of the SEC1 point
//! (`04 || x || y`, or compressed), whitespace ignored. The simulator writes
//! `target/sim/device.pub`; on a handset the key is provisioned with the
//! image (see docs/android-integration.md, "Trusting the device key").

use std::path::Path;

use p256::ecdsa::VerifyingKey;
use protocol::session::sec1;

use crate::BridgeError;

/// A P-256 device public key the client trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceKey(pub VerifyingKey);

impl DeviceKey {
    /// Parses hex of a SEC1 point (whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, BridgeError> {
        let compact: String = text.split_whitespace().collect();
        let bytes = hex::decode(&compact).map_err(|e| {
            BridgeError::BadDeviceKey(format!("{compact:?} is not hex of a SEC1 point: {e}"))
        })?;
        Self::from_sec1(&bytes)
    }

    /// Parses SEC1 bytes.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, BridgeError> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map(DeviceKey)
            .map_err(|_| {
                BridgeError::BadDeviceKey(format!(
                    "{} is not a P-256 SEC1 public key ({} bytes)",
                    hex::encode(bytes),
                    bytes.len()
                ))
            })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, BridgeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BridgeError::BadDeviceKey(format!("{}: {e}", path.display())))?;
        Self::from_hex(&text)
            .map_err(|e| BridgeError::BadDeviceKey(format!("{}: {e}", path.display())))
    }

    /// The uncompressed SEC1 bytes (65).
    pub fn sec1(&self) -> [u8; protocol::PUBLIC_KEY_LEN] {
        sec1(&self.0.into())
    }

    /// Lower-case hex of [`Self::sec1`], the file format.
    pub fn to_hex(&self) -> String {
        hex::encode(self.sec1())
    }
}
