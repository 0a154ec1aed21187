//! Verified boot of a VM's image and the DICE key chain mvmm hands the
//! secure VM.
//!
//! # Verified boot
//! A boot image in the image store may carry a signature block (see
//! [`SignatureBlock`]): an ES256 signature by the board's boot authority
//! (a P-256 key whose public half is built into mvmm) over
//! [`signed_message`] (the image's SHA-256 and its security version).
//! mvmm starts a secure VM only from an image whose signature verifies.
//!
//! # The key chain (after Open DICE)
//! The platform provisions a unique device secret (UDS) into a page only
//! mvmm maps; mvmm reads it, wipes the page, and derives two compound
//! device identifiers for the secure VM's image, as Open DICE does
//! (`DiceMainFlow`: an attestation CDI bound to the code, its
//! configuration, the authority and the mode; a sealing CDI bound to the
//! authority and the mode only, so that storage survives an update signed
//! by the same authority and not one signed by anyone else):
//! ```text
//! code      = SHA-256(image)
//! config    = SHA-256("mvmm dice config v1" || board name || security version (u32 LE))
//! authority = SHA-256(boot authority public key, SEC1 compressed)
//! mode      = 1 (normal) or 2 (debug)        (Open DICE's DiceMode)
//! CDI_Attest = HKDF-SHA256(ikm = UDS, salt = SHA-256(code || config || authority || mode), info = "CDI_Attest")
//! CDI_Seal   = HKDF-SHA256(ikm = UDS, salt = SHA-256(authority || mode),                 info = "CDI_Seal")
//! ```
//! (Open DICE uses the same KDF with the input hashes as salt; it also hashes
//! a "hidden" input, which mvmm does not use.) The secure VM gets only the
//! CDIs and the measurements ([`Handover`]), never the UDS: a different
//! image gets a different attestation CDI, one signed by another authority
//! a different sealing CDI as well.

use hkdf::Hkdf;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// Bytes of the unique device secret and of each CDI.
pub const SECRET_LEN: usize = 32;
/// The provisioning blob the loader puts in mvmm's UDS page: this magic,
/// then the 32-byte UDS.
pub const UDS_MAGIC: [u8; 8] = *b"MVMMDEV1";
/// Bytes of a SEC1 compressed P-256 public key.
pub const PUBLIC_KEY_LEN: usize = 33;

/// The address of the UDS page for an mvmm reservation starting at
/// `mvmm_base`: the page below the boot options word's page, in mvmm's own
/// RAM (no VM maps it).
pub const fn uds_address(mvmm_base: u64) -> u64 {
    crate::boot_options::address(mvmm_base) - 0x1000
}

/// Reads the UDS from the provisioning blob at the start of the UDS page.
pub fn parse_uds(page: &[u8]) -> Option<[u8; SECRET_LEN]> {
    if page.get(..8)? != UDS_MAGIC {
        return None;
    }
    page.get(8..8 + SECRET_LEN)?.try_into().ok()
}

/// The signature block of a signed boot image in the image store.
///
/// ```text
/// 0   magic "MVMMSIG1"
/// 8   u32 security version (little-endian)
/// 12  u32 reserved (0)
/// 16  ES256 signature r || s (64 bytes) over `signed_message`
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureBlock {
    pub security_version: u32,
    pub signature: [u8; 64],
}

/// Magic of a [`SignatureBlock`].
pub const SIGNATURE_MAGIC: [u8; 8] = *b"MVMMSIG1";
/// Bytes of an encoded [`SignatureBlock`].
pub const SIGNATURE_BLOCK_LEN: usize = 80;

impl SignatureBlock {
    pub fn parse(bytes: &[u8]) -> Result<SignatureBlock, BootError> {
        if bytes.len() < SIGNATURE_BLOCK_LEN || bytes[..8] != SIGNATURE_MAGIC {
            return Err(BootError::NoSignature);
        }
        if bytes[12..16] != [0; 4] {
            return Err(BootError::NoSignature);
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[16..80]);
        Ok(SignatureBlock {
            security_version: u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            signature,
        })
    }

    pub fn encode(&self) -> [u8; SIGNATURE_BLOCK_LEN] {
        let mut out = [0u8; SIGNATURE_BLOCK_LEN];
        out[..8].copy_from_slice(&SIGNATURE_MAGIC);
        out[8..12].copy_from_slice(&self.security_version.to_le_bytes());
        out[16..].copy_from_slice(&self.signature);
        out
    }
}

/// Why an image is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// The image has no (well-formed) signature block.
    NoSignature,
    /// mvmm was built without a valid boot authority key.
    NoAuthority,
    /// The signature does not verify for this image and security version.
    BadSignature,
}

impl BootError {
    pub fn describe(self) -> &'static str {
        match self {
            BootError::NoSignature => "the image carries no signature block",
            BootError::NoAuthority => "mvmm has no boot authority key built in",
            BootError::BadSignature => {
                "the signature does not verify for this image (modified, or signed by another key)"
            }
        }
    }
}

/// What a boot authority signs: a domain string, the image's SHA-256 and
/// its security version.
pub fn signed_message(image_hash: &[u8; 32], security_version: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mvmm boot image v1");
    h.update(image_hash);
    h.update(security_version.to_le_bytes());
    h.finalize().into()
}

/// Checks `block` over an image whose SHA-256 is `image_hash` against the
/// boot authority's SEC1 public key.
pub fn verify_image(
    image_hash: &[u8; 32],
    block: &SignatureBlock,
    authority: &[u8; PUBLIC_KEY_LEN],
) -> Result<(), BootError> {
    let key = VerifyingKey::from_sec1_bytes(authority).map_err(|_| BootError::NoAuthority)?;
    let signature = Signature::from_slice(&block.signature).map_err(|_| BootError::BadSignature)?;
    key.verify_prehash(
        &signed_message(image_hash, block.security_version),
        &signature,
    )
    .map_err(|_| BootError::BadSignature)
}

/// Open DICE's modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal = 1,
    Debug = 2,
}

/// The inputs of one image's CDIs.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub code_hash: [u8; 32],
    pub board: &'a str,
    pub security_version: u32,
    pub authority: &'a [u8; PUBLIC_KEY_LEN],
    pub mode: Mode,
}

/// The two CDIs of an image. Wiped when dropped.
#[derive(Clone)]
pub struct Cdis {
    pub attest: [u8; SECRET_LEN],
    pub seal: [u8; SECRET_LEN],
}

impl Drop for Cdis {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.attest);
        zeroize::Zeroize::zeroize(&mut self.seal);
    }
}

/// The configuration hash of [`Inputs`].
pub fn config_hash(board: &str, security_version: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mvmm dice config v1");
    h.update(board.as_bytes());
    h.update(security_version.to_le_bytes());
    h.finalize().into()
}

fn kdf(uds: &[u8; SECRET_LEN], salt: &[u8; 32], info: &[u8]) -> [u8; SECRET_LEN] {
    let mut out = [0u8; SECRET_LEN];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
    if Hkdf::<Sha256>::new(Some(salt), uds)
        .expand(info, &mut out)
        .is_err()
    {
        out = [0; SECRET_LEN];
    }
    out
}

/// Derives the CDIs of an image from the UDS.
pub fn derive(uds: &[u8; SECRET_LEN], inputs: &Inputs<'_>) -> Cdis {
    let authority: [u8; 32] = Sha256::digest(inputs.authority).into();
    let mode = [inputs.mode as u8];
    let attest_salt: [u8; 32] = Sha256::new()
        .chain_update(inputs.code_hash)
        .chain_update(config_hash(inputs.board, inputs.security_version))
        .chain_update(authority)
        .chain_update(mode)
        .finalize()
        .into();
    let seal_salt: [u8; 32] = Sha256::new()
        .chain_update(authority)
        .chain_update(mode)
        .finalize()
        .into();
    Cdis {
        attest: kdf(uds, &attest_salt, b"CDI_Attest"),
        seal: kdf(uds, &seal_salt, b"CDI_Seal"),
    }
}

/// Most bytes of a board name in a [`Handover`].
pub const BOARD_NAME_MAX: usize = 32;
/// Magic of the hand-over page.
pub const HANDOVER_MAGIC: [u8; 8] = *b"MVMMCDI1";
/// Bytes of an encoded [`Handover`].
pub const HANDOVER_LEN: usize = 8 + 32 * 4 + 4 + 1 + 1 + BOARD_NAME_MAX;

/// What mvmm writes into the secure VM's hand-over page (the last page of
/// its RAM) before it starts: the CDIs and what they were derived from.
///
/// ```text
/// 0    magic "MVMMCDI1"
/// 8    CDI_Attest (32)
/// 40   CDI_Seal (32)
/// 72   SHA-256 of mvmm's code and read-only data (32)
/// 104  SHA-256 of the secure VM's image (32)
/// 136  u32 security version (LE)
/// 140  u8 mode (1 normal, 2 debug)
/// 141  u8 board name length, then the name (at most 32 bytes)
/// ```
#[derive(Clone)]
pub struct Handover<'a> {
    pub cdis: Cdis,
    pub mvmm_hash: [u8; 32],
    pub image_hash: [u8; 32],
    pub security_version: u32,
    pub mode: Mode,
    pub board: &'a str,
}

impl Handover<'_> {
    pub fn encode(&self) -> [u8; HANDOVER_LEN] {
        let mut out = [0u8; HANDOVER_LEN];
        out[..8].copy_from_slice(&HANDOVER_MAGIC);
        out[8..40].copy_from_slice(&self.cdis.attest);
        out[40..72].copy_from_slice(&self.cdis.seal);
        out[72..104].copy_from_slice(&self.mvmm_hash);
        out[104..136].copy_from_slice(&self.image_hash);
        out[136..140].copy_from_slice(&self.security_version.to_le_bytes());
        out[140] = self.mode as u8;
        let name = &self.board.as_bytes()[..self.board.len().min(BOARD_NAME_MAX)];
        out[141] = name.len() as u8;
        out[142..142 + name.len()].copy_from_slice(name);
        out
    }

    /// Reads a hand-over page; `None` for anything malformed.
    pub fn decode(bytes: &[u8]) -> Option<Handover<'_>> {
        if bytes.len() < HANDOVER_LEN || bytes[..8] != HANDOVER_MAGIC {
            return None;
        }
        let take = |at: usize| -> [u8; 32] {
            let mut v = [0u8; 32];
            v.copy_from_slice(&bytes[at..at + 32]);
            v
        };
        let mode = match bytes[140] {
            1 => Mode::Normal,
            2 => Mode::Debug,
            _ => return None,
        };
        let len = usize::from(bytes[141]);
        if len > BOARD_NAME_MAX {
            return None;
        }
        let board = core::str::from_utf8(&bytes[142..142 + len]).ok()?;
        Some(Handover {
            cdis: Cdis {
                attest: take(8),
                seal: take(40),
            },
            mvmm_hash: take(72),
            image_hash: take(104),
            security_version: u32::from_le_bytes([bytes[136], bytes[137], bytes[138], bytes[139]]),
            mode,
            board,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::hazmat::PrehashSigner;

    fn authority() -> (SigningKey, [u8; PUBLIC_KEY_LEN]) {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let public = key.verifying_key().to_sec1_point(true);
        (key, public.as_bytes().try_into().unwrap())
    }

    fn sign(key: &SigningKey, image: &[u8], sv: u32) -> SignatureBlock {
        let hash: [u8; 32] = Sha256::digest(image).into();
        let signature: Signature = key.sign_prehash(&signed_message(&hash, sv)).unwrap();
        SignatureBlock {
            security_version: sv,
            signature: signature.to_bytes().into(),
        }
    }

    #[test]
    fn a_signed_image_verifies_and_any_change_is_refused() {
        let (key, public) = authority();
        let image = b"secure-os image bytes";
        let hash: [u8; 32] = Sha256::digest(image).into();
        let block = SignatureBlock::parse(&sign(&key, image, 3).encode()).unwrap();
        assert_eq!(verify_image(&hash, &block, &public), Ok(()));
        // A modified image, a changed security version, another authority.
        let other: [u8; 32] = Sha256::digest(b"secure-os image bytez").into();
        assert_eq!(
            verify_image(&other, &block, &public),
            Err(BootError::BadSignature)
        );
        let mut raised = block;
        raised.security_version = 4;
        assert_eq!(
            verify_image(&hash, &raised, &public),
            Err(BootError::BadSignature)
        );
        let (_, stranger) = {
            let k = SigningKey::from_slice(&[9u8; 32]).unwrap();
            let p: [u8; 33] = k
                .verifying_key()
                .to_sec1_point(true)
                .as_bytes()
                .try_into()
                .unwrap();
            (k, p)
        };
        assert_eq!(
            verify_image(&hash, &block, &stranger),
            Err(BootError::BadSignature)
        );
        assert_eq!(
            verify_image(&hash, &block, &[0; 33]),
            Err(BootError::NoAuthority)
        );
    }

    #[test]
    fn malformed_signature_blocks_are_refused() {
        assert_eq!(SignatureBlock::parse(&[0; 80]), Err(BootError::NoSignature));
        assert_eq!(
            SignatureBlock::parse(b"MVMMSIG1"),
            Err(BootError::NoSignature)
        );
        let mut block = SignatureBlock {
            security_version: 1,
            signature: [1; 64],
        }
        .encode();
        block[12] = 1;
        assert_eq!(SignatureBlock::parse(&block), Err(BootError::NoSignature));
    }

    #[test]
    fn cdis_follow_the_code_and_the_authority() {
        let (_, public) = authority();
        let uds = [0x11u8; 32];
        let base = Inputs {
            code_hash: [1; 32],
            board: "qemu-virt",
            security_version: 1,
            authority: &public,
            mode: Mode::Normal,
        };
        let a = derive(&uds, &base);
        // Deterministic.
        assert_eq!(derive(&uds, &base).attest, a.attest);
        // Other code: other attestation CDI, same sealing CDI (an update
        // signed by the same authority keeps its storage).
        let code = derive(
            &uds,
            &Inputs {
                code_hash: [2; 32],
                ..base
            },
        );
        assert_ne!(code.attest, a.attest);
        assert_eq!(code.seal, a.seal);
        // Another authority or mode: both differ.
        let other_key = [3u8; 33];
        let auth = derive(
            &uds,
            &Inputs {
                authority: &other_key,
                ..base
            },
        );
        assert_ne!(auth.attest, a.attest);
        assert_ne!(auth.seal, a.seal);
        let debug = derive(
            &uds,
            &Inputs {
                mode: Mode::Debug,
                ..base
            },
        );
        assert_ne!(debug.seal, a.seal);
        // Another device.
        assert_ne!(derive(&[0x12; 32], &base).seal, a.seal);
        assert_ne!(a.attest, a.seal);
    }

    #[test]
    fn the_handover_round_trips_and_malformed_pages_are_refused() {
        let h = Handover {
            cdis: Cdis {
                attest: [1; 32],
                seal: [2; 32],
            },
            mvmm_hash: [3; 32],
            image_hash: [4; 32],
            security_version: 5,
            mode: Mode::Normal,
            board: "qemu-virt",
        };
        let bytes = h.encode();
        let back = Handover::decode(&bytes).unwrap();
        assert_eq!(back.cdis.attest, [1; 32]);
        assert_eq!(back.cdis.seal, [2; 32]);
        assert_eq!(back.image_hash, [4; 32]);
        assert_eq!(back.security_version, 5);
        assert_eq!(back.board, "qemu-virt");
        let mut bad = bytes;
        bad[140] = 9;
        assert!(Handover::decode(&bad).is_none());
        let mut bad = bytes;
        bad[141] = 33;
        assert!(Handover::decode(&bad).is_none());
        assert!(Handover::decode(&bytes[..100]).is_none());
        assert!(Handover::decode(&[0; HANDOVER_LEN]).is_none());
    }

    #[test]
    fn the_uds_page_is_read_only_with_its_magic() {
        let mut page = [0u8; 64];
        assert_eq!(parse_uds(&page), None);
        page[..8].copy_from_slice(&UDS_MAGIC);
        page[8..40].copy_from_slice(&[5; 32]);
        assert_eq!(parse_uds(&page), Some([5; 32]));
        assert_eq!(parse_uds(&page[..20]), None);
        assert_eq!(uds_address(0x4000_0000), 0x401f_e000);
    }
}
