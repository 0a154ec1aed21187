//! Attestation evidence: the claims of an Entity Attestation Token
//! (EAT, RFC 9711) and of the certificate of the key that signs it.
//!
//! # The chain a backend checks
//! 1. The backend pins the device public key it enrolled.
//! 2. The device key signs a CWT whose `cnf` claim (RFC 8747) holds the
//!    attestation public key as a COSE_Key: [`KeyCertificateClaims`].
//! 3. The attestation key signs the EAT: [`EvidenceClaims`] with the
//!    backend's nonce, the device's `ueid` and the boot measurements.
//!
//! Both signatures are COSE_Sign1 ES256; the certificate travels in the
//! EAT's unprotected header under `kcwt` (label 13, RFC 9528). The COSE layer
//! is built by the payment app and checked by `mvmm-verify`; this module
//! defines the claims and their deterministic CBOR (see [`crate::cbor`]).
//!
//! # Measurements
//! The secure OS is handed [`BootMeasurements`] at boot (the loader measured
//! mVMM and the secure OS). Until a loader does so, the secure OS runs
//! [`BootState::Unmeasured`]: its EAT then carries none of the measurement
//! claims, and a verifier must refuse it. No measurement is ever invented.

use core::fmt;

use heapless::{String, Vec};
use sha2::{Digest, Sha256};

use crate::cbor::{CborError, Entries, Reader, Writer};
use crate::message::{Nonce, PublicKeyBytes};
use crate::signed::{ClaimsError, value};

/// Bytes of a [`Ueid`].
pub const UEID_LEN: usize = 33;
/// `ueid` type byte for a random identifier (RFC 9711 §4.2.1.1, type 0x01).
pub const UEID_TYPE_RAND: u8 = 0x01;
/// Longest board name.
pub const MAX_BOARD_LEN: usize = 32;
/// Largest encoded [`EvidenceClaims`] (the largest possible is 205 bytes).
pub const MAX_EVIDENCE_CLAIMS_LEN: usize = 224;
/// Largest encoded [`KeyCertificateClaims`] (always 117 bytes).
pub const MAX_CERTIFICATE_CLAIMS_LEN: usize = 128;

/// The device's universal entity id: `0x01 || SHA-256(device public key,
/// uncompressed SEC1)`. Unique per device key, and unpredictable before
/// the key exists, so it is a type-0x01 (RAND) UEID.
pub type Ueid = [u8; UEID_LEN];
/// A board name such as `qemu-virt`.
pub type BoardName = String<MAX_BOARD_LEN>;

/// The UEID of the device whose public key is `device_public_key`.
pub fn ueid(device_public_key: &PublicKeyBytes) -> Ueid {
    let mut out = [0u8; UEID_LEN];
    out[0] = UEID_TYPE_RAND;
    out[1..].copy_from_slice(&Sha256::digest(device_public_key.as_slice()));
    out
}

/// The claim keys of the EAT and of the key certificate.
pub mod claim {
    /// `cnf` (RFC 8747): the confirmation key, `{1 (COSE_Key): key}`.
    pub const CNF: i64 = 8;
    /// `eat_nonce` (RFC 9711): the verifier's nonce, bstr of 32 bytes.
    pub const EAT_NONCE: i64 = 10;
    /// `ueid` (RFC 9711): bstr of 33 bytes, see [`super::ueid`].
    pub const UEID: i64 = 256;
    /// `dbgstat` (RFC 9711): 0 = debug enabled, 1 = disabled.
    pub const DBGSTAT: i64 = 263;
    /// SHA-256 of the mVMM image, bstr of 32 bytes (private use).
    pub const MVMM_SHA256: i64 = -65601;
    /// SHA-256 of the secure-os image, bstr of 32 bytes (private use).
    pub const SECURE_OS_SHA256: i64 = -65602;
    /// The secure VM's security version, uint (private use).
    pub const SECURITY_VERSION: i64 = -65603;
    /// The board name, tstr of at most 32 bytes (private use).
    pub const BOARD: i64 = -65604;

    /// Claims present only when the boot was measured, in canonical order.
    pub const MEASURED: [i64; 5] = [
        DBGSTAT,
        MVMM_SHA256,
        SECURE_OS_SHA256,
        SECURITY_VERSION,
        BOARD,
    ];

    /// A short name for messages.
    pub fn name(key: i64) -> &'static str {
        match key {
            CNF => "cnf",
            EAT_NONCE => "eat_nonce",
            UEID => "ueid",
            DBGSTAT => "dbgstat",
            MVMM_SHA256 => "mvmm measurement",
            SECURE_OS_SHA256 => "secure-os measurement",
            SECURITY_VERSION => "security version",
            BOARD => "board",
            _ => "unknown",
        }
    }
}

/// `dbgstat` values (RFC 9711 §4.2.9) this profile uses.
const DBGSTAT_ENABLED: u64 = 0;
const DBGSTAT_DISABLED: u64 = 1;

/// COSE_Key labels and values (RFC 9052/9053) of a P-256 public key.
const COSE_KEY: i64 = 1;
const KTY: i64 = 1;
const KTY_EC2: u64 = 2;
const CRV: i64 = -1;
const CRV_P256: u64 = 1;
const X: i64 = -2;
const Y: i64 = -3;

/// What the loader measured before the secure OS ran. The secure OS is
/// handed this at boot; it never computes it about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootMeasurements {
    /// SHA-256 of the mVMM image.
    pub mvmm: [u8; 32],
    /// SHA-256 of the secure-os image.
    pub secure_os: [u8; 32],
    /// The secure VM's security (anti-rollback) version.
    pub security_version: u32,
    /// Whether a debugger can reach the secure VM.
    pub debug: bool,
    /// The board the images were built for.
    pub board: BoardName,
}

/// Whether the secure OS knows what booted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BootState {
    /// Nobody measured the boot (no loader hands measurements over yet).
    /// The EAT says so by carrying no measurement claim; verifiers refuse it.
    #[default]
    Unmeasured,
    /// The loader's measurements.
    Measured(BootMeasurements),
}

/// The claims of the attestation EAT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceClaims {
    /// The verifier's fresh nonce (`eat_nonce`).
    pub nonce: Nonce,
    /// The device (`ueid`).
    pub ueid: Ueid,
    /// The measurements, or that there are none.
    pub boot: BootState,
}

impl EvidenceClaims {
    /// Deterministic CBOR, keys in canonical order.
    pub fn encode(&self) -> Option<Vec<u8, MAX_EVIDENCE_CLAIMS_LEN>> {
        let mut buf = [0u8; MAX_EVIDENCE_CLAIMS_LEN];
        let mut w = Writer::new(&mut buf);
        self.write(&mut w).ok()?;
        Vec::from_slice(w.finish()).ok()
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), CborError> {
        let measured = match &self.boot {
            BootState::Unmeasured => None,
            BootState::Measured(m) => Some(m),
        };
        w.map(if measured.is_some() { 7 } else { 2 })?;
        w.int(claim::EAT_NONCE)?;
        w.bytes(&self.nonce)?;
        w.int(claim::UEID)?;
        w.bytes(&self.ueid)?;
        if let Some(m) = measured {
            w.int(claim::DBGSTAT)?;
            w.uint(if m.debug {
                DBGSTAT_ENABLED
            } else {
                DBGSTAT_DISABLED
            })?;
            w.int(claim::MVMM_SHA256)?;
            w.bytes(&m.mvmm)?;
            w.int(claim::SECURE_OS_SHA256)?;
            w.bytes(&m.secure_os)?;
            w.int(claim::SECURITY_VERSION)?;
            w.uint(u64::from(m.security_version))?;
            w.int(claim::BOARD)?;
            w.text(&m.board)?;
        }
        Ok(())
    }

    /// Decodes untrusted bytes: exactly what [`Self::encode`] produces. The
    /// measurement claims come all together or not at all (unmeasured).
    pub fn parse(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > MAX_EVIDENCE_CLAIMS_LEN {
            return Err(ClaimsError::TooLong);
        }
        let mut reader = Reader::new(bytes);
        let entries = Entries::read(&mut reader)?;
        reader.end()?;
        let known =
            |k: &i64| *k == claim::EAT_NONCE || *k == claim::UEID || claim::MEASURED.contains(k);
        if let Some(unknown) = entries.keys().find(|k| !known(k)) {
            return Err(ClaimsError::Unknown(unknown));
        }
        let nonce = value(&entries, claim::EAT_NONCE, Reader::bytes_exact)?;
        let ueid = value(&entries, claim::UEID, Reader::bytes_exact)?;
        let present = claim::MEASURED
            .iter()
            .filter(|k| entries.keys().any(|e| e == **k))
            .count();
        let boot = if present == 0 {
            BootState::Unmeasured
        } else {
            BootState::Measured(BootMeasurements {
                debug: value(&entries, claim::DBGSTAT, |r| match r.uint()? {
                    DBGSTAT_ENABLED => Ok(true),
                    DBGSTAT_DISABLED => Ok(false),
                    _ => Err(CborError::OutOfRange),
                })?,
                mvmm: value(&entries, claim::MVMM_SHA256, Reader::bytes_exact)?,
                secure_os: value(&entries, claim::SECURE_OS_SHA256, Reader::bytes_exact)?,
                security_version: value(&entries, claim::SECURITY_VERSION, |r| {
                    u32::try_from(r.uint()?).map_err(|_| CborError::OutOfRange)
                })?,
                board: value(&entries, claim::BOARD, |r| {
                    BoardName::try_from(r.text()?).map_err(|_| CborError::OutOfRange)
                })?,
            })
        };
        Ok(EvidenceClaims { nonce, ueid, boot })
    }
}

/// The claims of the attestation key's certificate, signed by the device key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCertificateClaims {
    /// The attestation public key (uncompressed SEC1), carried in `cnf` as
    /// a COSE_Key `{1: 2 (EC2), -1: 1 (P-256), -2: x, -3: y}`.
    pub attestation_key: PublicKeyBytes,
    /// The device (`ueid`), the same as in the EAT.
    pub ueid: Ueid,
}

impl KeyCertificateClaims {
    /// Deterministic CBOR: `{8: {1: COSE_Key}, 256: ueid}`.
    pub fn encode(&self) -> Option<Vec<u8, MAX_CERTIFICATE_CLAIMS_LEN>> {
        let mut buf = [0u8; MAX_CERTIFICATE_CLAIMS_LEN];
        let mut w = Writer::new(&mut buf);
        self.write(&mut w).ok()?;
        Vec::from_slice(w.finish()).ok()
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), CborError> {
        let point = self.attestation_key.as_slice();
        let (prefix, xy) = point.split_first().ok_or(CborError::OutOfRange)?;
        if *prefix != 0x04 {
            return Err(CborError::OutOfRange);
        }
        let (x, y) = xy.split_at(32);
        w.map(2)?;
        w.int(claim::CNF)?;
        w.map(1)?;
        w.int(COSE_KEY)?;
        w.map(4)?;
        w.int(KTY)?;
        w.uint(KTY_EC2)?;
        w.int(CRV)?;
        w.uint(CRV_P256)?;
        w.int(X)?;
        w.bytes(x)?;
        w.int(Y)?;
        w.bytes(y)?;
        w.int(claim::UEID)?;
        w.bytes(&self.ueid)
    }

    /// Decodes untrusted bytes: exactly what [`Self::encode`] produces.
    pub fn parse(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > MAX_CERTIFICATE_CLAIMS_LEN {
            return Err(ClaimsError::TooLong);
        }
        let mut reader = Reader::new(bytes);
        let entries = Entries::read(&mut reader)?;
        reader.end()?;
        if let Some(unknown) = entries
            .keys()
            .find(|k| *k != claim::CNF && *k != claim::UEID)
        {
            return Err(ClaimsError::Unknown(unknown));
        }
        let attestation_key = value(&entries, claim::CNF, read_cnf)?;
        let ueid = value(&entries, claim::UEID, Reader::bytes_exact)?;
        Ok(KeyCertificateClaims {
            attestation_key,
            ueid,
        })
    }
}

/// `{1: {1: 2, -1: 1, -2: x, -3: y}}` to an uncompressed SEC1 point.
fn read_cnf(reader: &mut Reader<'_>) -> Result<PublicKeyBytes, CborError> {
    let cnf = Entries::read(reader)?;
    if cnf.keys().ne([COSE_KEY]) {
        return Err(CborError::OutOfRange);
    }
    let mut inner = cnf.get(COSE_KEY).ok_or(CborError::OutOfRange)?;
    let key = Entries::read(&mut inner)?;
    if key.keys().ne([KTY, CRV, X, Y]) {
        return Err(CborError::OutOfRange);
    }
    let scalar = |label, want| {
        let mut r = key.get(label).ok_or(CborError::OutOfRange)?;
        if r.uint()? == want {
            Ok(())
        } else {
            Err(CborError::OutOfRange)
        }
    };
    scalar(KTY, KTY_EC2)?;
    scalar(CRV, CRV_P256)?;
    let coordinate = |label| {
        key.get(label)
            .ok_or(CborError::OutOfRange)?
            .bytes_exact::<32>()
    };
    let mut point = [0u8; 65];
    point[0] = 0x04;
    point[1..33].copy_from_slice(&coordinate(X)?);
    point[33..].copy_from_slice(&coordinate(Y)?);
    Ok(crate::FixedBytes(point))
}

impl fmt::Display for BootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootState::Unmeasured => f.write_str("unmeasured"),
            BootState::Measured(m) => write!(
                f,
                "measured (board {}, security version {}, debug {})",
                m.board,
                m.security_version,
                if m.debug { "enabled" } else { "disabled" }
            ),
        }
    }
}
