//! File-backed [`Storage`] and the device key file, so that enrollment
//! survives between simulator runs.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use p256::ecdsa::SigningKey;
use payment_app::{Storage, StorageError};
use protocol::session::sec1;

/// The app's state blob in one file, replaced atomically (write + rename).
#[derive(Debug)]
pub struct FileStorage {
    path: PathBuf,
}

impl FileStorage {
    pub fn new(path: PathBuf) -> Self {
        FileStorage { path }
    }
}

impl Storage for FileStorage {
    fn load(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
        match fs::read(&self.path) {
            Ok(blob) => {
                let out = buf.get_mut(..blob.len()).ok_or(StorageError)?;
                out.copy_from_slice(&blob);
                Ok(Some(blob.len()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(_) => Err(StorageError),
        }
    }

    fn store(&mut self, blob: &[u8]) -> Result<(), StorageError> {
        write_atomic(&self.path, blob).map_err(|_| StorageError)
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// Loads the simulated device key from `dir/device.key` (hex of the secret
/// scalar), creating it on first use, and (re)writes `dir/device.pub` (hex
/// of the SEC1 public key, the format `mvmm-pay --device-key` and
/// `mvmm-verify` read).
pub fn device_key(dir: &Path, seed: [u8; 32]) -> io::Result<SigningKey> {
    let secret_path = dir.join("device.key");
    let key = match fs::read_to_string(&secret_path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not hex: {e}", secret_path.display()),
                )
            })?;
            SigningKey::from_slice(&bytes).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not a P-256 secret key", secret_path.display()),
                )
            })?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = SigningKey::from_slice(&seed).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "random seed is not a valid scalar",
                )
            })?;
            write_atomic(&secret_path, hex::encode(key.to_bytes()).as_bytes())?;
            key
        }
        Err(e) => return Err(e),
    };
    let public = hex::encode(sec1(&(*key.verifying_key()).into()));
    write_atomic(&dir.join("device.pub"), format!("{public}\n").as_bytes())?;
    Ok(key)
}
