//! The device identity: the provisioned secret page, the device signing key
//! derived from it, and the user's security word. Pure logic, host-tested.
//!
//! # Provisioning page
//! Before boot, the loader puts one page at the end of the secure VM's RAM
//! (the board's `provision` address): the 8-byte magic [`PROVISION_MAGIC`]
//! (`MVMMDEV1`), then the 32-byte device secret; the rest of the page is zero.
//! The runtime copies the secret out and zeroes the whole page.
//!
//! # Device key (the exact definition; the host computes the same key)
//! ```text
//! PRK = HKDF-Extract(salt = none (32 zero bytes), IKM = secret)   // HKDF-SHA256
//! for c in 0..=255:
//!     info = "mvmm device key v1"            if c == 0
//!            "mvmm device key v1" || [c]     otherwise (one byte)
//!     d    = HKDF-Expand(PRK, info, 32)      // big-endian P-256 scalar
//!     if 0 < d < n: the device key is d; stop
//! ```
//! (A retry has probability about 2^-32 per try.)
//!
//! # Security word
//! `HKDF-Expand(PRK, "mvmm security word v1", 2)` = `[a, b]`:
//! `SECURITY_WORDS[a % 64]`, `-`, then `b % 100` as two decimal digits,
//! e.g. `LIGHTHOUSE-07`. It never leaves the secure VM except on the trusted
//! prompt; whoever provisions the secret can tell the user the word.

use core::fmt::Write as _;

use hkdf::Hkdf;
use p256::ecdsa::SigningKey;
use sha2::Sha256;
use zeroize::Zeroize as _;

/// The first 8 bytes of the provisioning page.
pub const PROVISION_MAGIC: [u8; 8] = *b"MVMMDEV1";
/// Bytes of the device secret.
pub const SECRET_LEN: usize = 32;
/// HKDF info of the device key (see the module docs for the retry suffix).
pub const DEVICE_KEY_INFO: &[u8] = b"mvmm device key v1";
/// HKDF info of the security word.
pub const SECURITY_WORD_INFO: &[u8] = b"mvmm security word v1";

/// The 64 words a security word is made of (each at most 10 letters).
pub const SECURITY_WORDS: [&str; 64] = [
    "ANCHOR",
    "APRICOT",
    "BADGER",
    "BAMBOO",
    "BEACON",
    "BISON",
    "BRAMBLE",
    "CACTUS",
    "CANYON",
    "CASTLE",
    "CEDAR",
    "COMET",
    "CORAL",
    "CRICKET",
    "DAHLIA",
    "DOLPHIN",
    "EMBER",
    "FALCON",
    "FERN",
    "FJORD",
    "GALAXY",
    "GARNET",
    "GLACIER",
    "HARBOR",
    "HAZEL",
    "HERON",
    "IVORY",
    "JASMINE",
    "JUNIPER",
    "KESTREL",
    "LANTERN",
    "LAVENDER",
    "LIGHTHOUSE",
    "LOTUS",
    "MAGNOLIA",
    "MAPLE",
    "MEADOW",
    "MERLIN",
    "NEBULA",
    "OASIS",
    "OCELOT",
    "ORCHID",
    "OTTER",
    "PEBBLE",
    "PELICAN",
    "PRAIRIE",
    "QUARTZ",
    "RAVEN",
    "REEF",
    "SAFFRON",
    "SEQUOIA",
    "SPARROW",
    "SUMMIT",
    "TANGO",
    "THISTLE",
    "TULIP",
    "TUNDRA",
    "VELVET",
    "VIOLET",
    "WALNUT",
    "WILLOW",
    "WREN",
    "YARROW",
    "ZEPHYR",
];

/// Why the provisioning page gave no secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProvisionError {
    /// The page does not start with [`PROVISION_MAGIC`] (nothing provisioned,
    /// or already consumed).
    NoMagic,
    /// The secret is all zero.
    ZeroSecret,
    /// The page is shorter than magic + secret.
    Short,
}

impl core::fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ProvisionError::NoMagic => "no MVMMDEV1 magic (not provisioned)",
            ProvisionError::ZeroSecret => "the secret is all zero",
            ProvisionError::Short => "page too short",
        })
    }
}

/// Takes the secret out of a provisioning page (a copy of it).
pub fn parse_provisioned(page: &[u8]) -> Result<[u8; SECRET_LEN], ProvisionError> {
    let magic = page.get(..8).ok_or(ProvisionError::Short)?;
    if magic != PROVISION_MAGIC {
        return Err(ProvisionError::NoMagic);
    }
    let bytes = page.get(8..8 + SECRET_LEN).ok_or(ProvisionError::Short)?;
    let mut secret = [0u8; SECRET_LEN];
    secret.copy_from_slice(bytes);
    if secret.iter().all(|&b| b == 0) {
        return Err(ProvisionError::ZeroSecret);
    }
    Ok(secret)
}

/// No scalar in range after 256 tries (never happens in practice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoValidScalar;

/// Derives the device signing key from the provisioned secret (see the
/// module docs for the exact definition).
pub fn derive_device_key(secret: &[u8; SECRET_LEN]) -> Result<SigningKey, NoValidScalar> {
    let hkdf = Hkdf::<Sha256>::new(None, secret);
    let mut info = [0u8; DEVICE_KEY_INFO.len() + 1];
    info[..DEVICE_KEY_INFO.len()].copy_from_slice(DEVICE_KEY_INFO);
    for counter in 0..=u8::MAX {
        let info = if counter == 0 {
            &info[..DEVICE_KEY_INFO.len()]
        } else {
            info[DEVICE_KEY_INFO.len()] = counter;
            &info[..]
        };
        let mut scalar = [0u8; 32];
        if hkdf.expand(info, &mut scalar).is_err() {
            return Err(NoValidScalar);
        }
        let key = SigningKey::from_slice(&scalar);
        scalar.zeroize();
        if let Ok(key) = key {
            return Ok(key);
        }
    }
    Err(NoValidScalar)
}

/// A security word such as `LIGHTHOUSE-07` (at most 13 characters).
pub type SecurityWord = heapless::String<16>;

/// The user's security word for this device (see the module docs).
pub fn security_word(secret: &[u8; SECRET_LEN]) -> SecurityWord {
    let hkdf = Hkdf::<Sha256>::new(None, secret);
    let mut pick = [0u8; 2];
    // Two bytes are always a valid HKDF output length.
    let _ = hkdf.expand(SECURITY_WORD_INFO, &mut pick);
    let word = SECURITY_WORDS[usize::from(pick[0]) % SECURITY_WORDS.len()];
    let mut out = SecurityWord::new();
    let _ = write!(out, "{word}-{:02}", pick[1] % 100);
    out
}

/// Hex of a 33-byte compressed SEC1 point.
pub type KeyHex = heapless::String<66>;

/// The device public key as hex compressed SEC1 (`02`/`03` || x).
pub fn compressed_hex(key: &SigningKey) -> KeyHex {
    let point = key.verifying_key().to_sec1_point(true);
    let mut out = KeyHex::new();
    for byte in point.as_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_secret() -> [u8; 32] {
        core::array::from_fn(|i| i as u8)
    }

    #[test]
    fn page_parsing() {
        let mut page = [0u8; 4096];
        assert_eq!(parse_provisioned(&page), Err(ProvisionError::NoMagic));
        page[..8].copy_from_slice(b"MVMMDEV1");
        assert_eq!(parse_provisioned(&page), Err(ProvisionError::ZeroSecret));
        page[8..40].copy_from_slice(&test_secret());
        assert_eq!(parse_provisioned(&page), Ok(test_secret()));
        assert_eq!(parse_provisioned(&page[..20]), Err(ProvisionError::Short));
    }

    /// Fixed vector: secret = 00 01 02 .. 1f. The expected values were
    /// computed independently (Python: hmac/hashlib HKDF and the
    /// `cryptography` package's P-256), see docs/secure-os.md.
    #[test]
    fn device_key_test_vector() {
        let key = derive_device_key(&test_secret()).expect("in range");
        assert_eq!(hex(&key.to_bytes()), TEST_SCALAR_HEX);
        assert_eq!(compressed_hex(&key).as_str(), TEST_PUBLIC_HEX);
        assert_eq!(security_word(&test_secret()).as_str(), TEST_WORD);
    }

    #[test]
    fn different_secrets_give_different_keys() {
        let mut other = test_secret();
        other[0] ^= 1;
        let a = derive_device_key(&test_secret()).expect("in range");
        let b = derive_device_key(&other).expect("in range");
        assert_ne!(a.to_bytes(), b.to_bytes());
    }

    #[test]
    fn security_words_are_displayable() {
        for word in SECURITY_WORDS {
            assert!(word.len() <= 10 && word.bytes().all(|b| b.is_ascii_uppercase()));
        }
        let word = security_word(&test_secret());
        // The trusted UI shows exactly what `is_display_text` accepts.
        assert!(crate::message::is_display_text(&word), "{word}");
    }

    fn hex(bytes: &[u8]) -> std::string::String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const TEST_SCALAR_HEX: &str =
        "602aad782a7ed83b102edf51d3fb091de3f1c27e8f464f3d9e4f22041fd7acd5";
    const TEST_PUBLIC_HEX: &str =
        "0259c74cb983df3356da955db8134a6d398c8bb5154582b37fdd3f45b448c7d863";
    const TEST_WORD: &str = "HERON-76";
}
