//! The boot image store: pristine copies of the VMs' boot images (a Linux
//! kernel, its initramfs, its device tree) in RAM that only mvmm owns,
//! described by a small manifest at the start of the store.
//!
//! The platform's loader (QEMU's `-device loader` in emulation, a bootloader
//! on a phone) fills the store before mvmm starts. mvmm copies each entry
//! into its VM's RAM before the VM first runs, and again when the VM asks
//! for a reset, so a VM that overwrote its own image (Linux frees and reuses
//! its init sections) still restarts from a clean one.
//!
//! # Manifest (little-endian)
//! ```text
//! 0   magic "MVMMIMG1"
//! 8   u32 entry count (at most MAX_ENTRIES)
//! 12  u32 reserved (0)
//! 16  entries, 32 bytes each:
//!     u32 vm index, u32 offset of the image's signature block in the
//!     store (0: unsigned; see `dice::SignatureBlock`), u64 source offset
//!     in the store, u64 destination guest-physical address, u64 size
//! ```
//! The manifest is input from outside mvmm: [`Manifest::parse`] checks every
//! entry against the store and the VM's RAM before anything is copied.

use crate::dice::{self, PUBLIC_KEY_LEN, SIGNATURE_BLOCK_LEN, SignatureBlock};
use crate::partition::{Board, MemRange, VmKind};
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"MVMMIMG1";
/// Most images the store describes.
pub const MAX_ENTRIES: usize = 8;
const HEADER: usize = 16;
const ENTRY: usize = 32;
/// Bytes of the manifest region (images start after it).
pub const MANIFEST_SIZE: u64 = 4096;

/// One image to copy into a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub vm: usize,
    /// Offset of the image in the store.
    pub source: u64,
    /// Where it goes in the VM (guest-physical).
    pub destination: u64,
    pub size: u64,
    /// Offset of the image's signature block in the store, if it is signed.
    pub signature: Option<u64>,
}

/// A checked manifest.
///
/// # Invariants
/// Every entry's source lies inside the store after the manifest, its
/// destination inside its VM's RAM, and `len <= MAX_ENTRIES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Manifest {
    entries: [Entry; MAX_ENTRIES],
    len: usize,
}

/// Why a manifest was refused; mvmm logs it and starts the VMs with what
/// their RAM already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// No magic: the store is empty (not an error for a board that loads
    /// images straight into VM RAM).
    Empty,
    TooShort,
    TooManyEntries(u32),
    /// Entry `index` names a VM the board does not have.
    UnknownVm {
        index: usize,
        vm: u32,
    },
    /// Entry `index` reads outside the store.
    SourceOutside {
        index: usize,
    },
    /// Entry `index` writes outside its VM's RAM.
    DestinationOutside {
        index: usize,
    },
    /// Entry `index`'s signature block lies outside the store.
    SignatureOutside {
        index: usize,
    },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Manifest {
    /// Parses and checks the manifest bytes at the start of a store of
    /// `store_size` bytes, for `board`.
    pub fn parse(
        bytes: &[u8],
        store_size: u64,
        board: &Board<'_>,
    ) -> Result<Manifest, ManifestError> {
        if bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(ManifestError::Empty);
        }
        let count = u32_at(bytes, 8).ok_or(ManifestError::TooShort)?;
        if count as usize > MAX_ENTRIES {
            return Err(ManifestError::TooManyEntries(count));
        }
        let mut m = Manifest {
            entries: [Entry {
                vm: 0,
                source: 0,
                destination: 0,
                size: 0,
                signature: None,
            }; MAX_ENTRIES],
            len: 0,
        };
        for index in 0..count as usize {
            let at = HEADER + index * ENTRY;
            let field = |o| u64_at(bytes, at + o).ok_or(ManifestError::TooShort);
            let vm_raw = u32_at(bytes, at).ok_or(ManifestError::TooShort)?;
            let (source, destination, size) = (field(8)?, field(16)?, field(24)?);
            let vm = board
                .vms
                .get(vm_raw as usize)
                .ok_or(ManifestError::UnknownVm { index, vm: vm_raw })?;
            let images = MemRange::new(MANIFEST_SIZE, store_size.saturating_sub(MANIFEST_SIZE));
            if size == 0 || !images.contains_range(source, size) {
                return Err(ManifestError::SourceOutside { index });
            }
            if !vm.ram.iter().any(|r| r.contains_range(destination, size)) {
                return Err(ManifestError::DestinationOutside { index });
            }
            let signature = match u32_at(bytes, at + 4).ok_or(ManifestError::TooShort)? {
                0 => None,
                offset => {
                    let offset = u64::from(offset);
                    let len = crate::dice::SIGNATURE_BLOCK_LEN as u64;
                    if !images.contains_range(offset, len) {
                        return Err(ManifestError::SignatureOutside { index });
                    }
                    Some(offset)
                }
            };
            m.entries[index] = Entry {
                vm: vm_raw as usize,
                source,
                destination,
                size,
                signature,
            };
            m.len += 1;
        }
        Ok(m)
    }

    /// The entries for VM `vm`.
    pub fn for_vm(&self, vm: usize) -> impl Iterator<Item = &Entry> {
        self.entries[..self.len].iter().filter(move |e| e.vm == vm)
    }

    /// Writes a manifest (for the host side that fills the store).
    pub fn encode(entries: &[Entry]) -> Option<[u8; MANIFEST_SIZE as usize]> {
        if entries.len() > MAX_ENTRIES {
            return None;
        }
        let mut out = [0u8; MANIFEST_SIZE as usize];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, e) in entries.iter().enumerate() {
            let at = HEADER + i * ENTRY;
            out[at..at + 4].copy_from_slice(&(e.vm as u32).to_le_bytes());
            let signature = u32::try_from(e.signature.unwrap_or(0)).ok()?;
            out[at + 4..at + 8].copy_from_slice(&signature.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&e.source.to_le_bytes());
            out[at + 16..at + 24].copy_from_slice(&e.destination.to_le_bytes());
            out[at + 24..at + 32].copy_from_slice(&e.size.to_le_bytes());
        }
        Some(out)
    }
}

/// What verified boot found for one VM: the SHA-256 and security version
/// of its first signed image, when it has one.
pub type Verified = Option<([u8; 32], u32)>;

/// Checks VM `vm`'s boot images before any is copied, reading the store
/// through `read(offset, buffer)` (false: that part cannot be read).
///
/// Every signed image must verify against the boot `authority`, over its
/// SHA-256 and security version. A secure VM must have a signed image and
/// nothing unsigned; without a manifest a rich VM keeps what its RAM holds
/// (`Ok(None)`) and a secure VM is refused. The error says why, for the log.
pub fn verify_for_vm(
    manifest: Option<&Manifest>,
    vm: usize,
    kind: VmKind,
    authority: &[u8; PUBLIC_KEY_LEN],
    read: &mut impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<Verified, &'static str> {
    let secure = kind == VmKind::Secure;
    let Some(manifest) = manifest else {
        return if secure {
            Err("no signed boot image in the image store")
        } else {
            Ok(None)
        };
    };
    let mut verified = None;
    for entry in manifest.for_vm(vm) {
        let Some(offset) = entry.signature else {
            if secure {
                return Err("an unsigned boot image (a secure VM boots only signed ones)");
            }
            continue;
        };
        let mut raw = [0u8; SIGNATURE_BLOCK_LEN];
        if !read(offset, &mut raw) {
            return Err("its signature block cannot be read");
        }
        let block = SignatureBlock::parse(&raw).map_err(dice::BootError::describe)?;
        let hash = hash_of(entry.source, entry.size, read).ok_or("the image cannot be read")?;
        dice::verify_image(&hash, &block, authority).map_err(dice::BootError::describe)?;
        verified.get_or_insert((hash, block.security_version));
    }
    if secure && verified.is_none() {
        return Err("no signed boot image in the image store");
    }
    Ok(verified)
}

/// The SHA-256 of `size` bytes of the store at `offset`.
fn hash_of(
    offset: u64,
    size: u64,
    read: &mut impl FnMut(u64, &mut [u8]) -> bool,
) -> Option<[u8; 32]> {
    let mut hash = Sha256::new();
    let mut chunk = [0u8; 4096];
    let mut done = 0;
    while done < size {
        let n = (size - done).min(chunk.len() as u64) as usize;
        if !read(offset.checked_add(done)?, &mut chunk[..n]) {
            return None;
        }
        hash.update(&chunk[..n]);
        done += n as u64;
    }
    Some(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::tests::BOARD;

    const STORE: u64 = 0x0d00_0000;

    fn entry(vm: usize, source: u64, destination: u64, size: u64) -> Entry {
        Entry {
            vm,
            source,
            destination,
            size,
            signature: None,
        }
    }

    #[test]
    fn a_written_manifest_reads_back() {
        let entries = [
            entry(0, 0x1000, 0x5000_0000, 0x200_0000),
            entry(0, 0x300_0000, 0x5800_0000, 0x1000),
        ];
        let bytes = Manifest::encode(&entries).unwrap();
        let m = Manifest::parse(&bytes, STORE, &BOARD).unwrap();
        assert_eq!(m.for_vm(0).copied().collect::<Vec<_>>(), entries);
        assert_eq!(m.for_vm(1).count(), 0);
    }

    #[test]
    fn bad_manifests_are_refused_before_anything_is_copied() {
        let parse =
            |entries: &[Entry]| Manifest::parse(&Manifest::encode(entries).unwrap(), STORE, &BOARD);
        assert_eq!(
            Manifest::parse(&[0; 64], STORE, &BOARD),
            Err(ManifestError::Empty)
        );
        assert_eq!(
            Manifest::parse(b"MVMMIMG1\x01", STORE, &BOARD),
            Err(ManifestError::TooShort)
        );
        // Into the other VM's RAM, past the end of its own, from the
        // manifest itself, past the store, empty, wrapping, unknown VM.
        assert_eq!(
            parse(&[entry(0, 0x1000, 0x4100_0000, 0x10)]),
            Err(ManifestError::DestinationOutside { index: 0 })
        );
        assert_eq!(
            parse(&[entry(0, 0x1000, 0x7fff_f000, 0x2000)]),
            Err(ManifestError::DestinationOutside { index: 0 })
        );
        assert_eq!(
            parse(&[entry(0, 0, 0x5000_0000, 0x10)]),
            Err(ManifestError::SourceOutside { index: 0 })
        );
        assert_eq!(
            parse(&[entry(0, STORE - 8, 0x5000_0000, 0x10)]),
            Err(ManifestError::SourceOutside { index: 0 })
        );
        assert_eq!(
            parse(&[entry(0, 0x1000, 0x5000_0000, 0)]),
            Err(ManifestError::SourceOutside { index: 0 })
        );
        assert_eq!(
            parse(&[entry(0, u64::MAX - 4, 0x5000_0000, 0x10)]),
            Err(ManifestError::SourceOutside { index: 0 })
        );
        assert_eq!(
            parse(&[entry(7, 0x1000, 0x5000_0000, 0x10)]),
            Err(ManifestError::UnknownVm { index: 0, vm: 7 })
        );
        let signed = |offset| Entry {
            signature: Some(offset),
            ..entry(0, 0x1000, 0x5000_0000, 0x10)
        };
        assert_eq!(
            parse(&[signed(STORE - 8)]),
            Err(ManifestError::SignatureOutside { index: 0 })
        );
        assert_eq!(
            parse(&[signed(0x10)]),
            Err(ManifestError::SignatureOutside { index: 0 })
        );
        assert_eq!(
            parse(&[signed(0x2000)]).map(|m| m.for_vm(0).next().copied()),
            Ok(Some(signed(0x2000)))
        );
        let mut many = Manifest::encode(&[]).unwrap();
        many[8] = 9;
        assert_eq!(
            Manifest::parse(&many, STORE, &BOARD),
            Err(ManifestError::TooManyEntries(9))
        );
    }

    mod verified_boot {
        use super::*;
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        use p256::ecdsa::{Signature, SigningKey};

        const RICH: usize = 0;
        const SECURE: usize = 1;

        /// A store of 1 MiB: the secure VM's image at 0x1000 (signed, its
        /// block at 0x8000), the rich VM's at 0x10000 (unsigned).
        struct Store {
            bytes: Vec<u8>,
            authority: [u8; PUBLIC_KEY_LEN],
        }

        impl Store {
            fn new() -> Store {
                let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
                let authority = key.verifying_key().to_sec1_point(true);
                let mut bytes = vec![0u8; 1 << 20];
                bytes[0x1000..0x3000].fill(0xa5);
                let hash: [u8; 32] = Sha256::digest(&bytes[0x1000..0x3000]).into();
                let signature: Signature =
                    key.sign_prehash(&dice::signed_message(&hash, 3)).unwrap();
                let block = SignatureBlock {
                    security_version: 3,
                    signature: signature.to_bytes().into(),
                };
                bytes[0x8000..0x8000 + SIGNATURE_BLOCK_LEN].copy_from_slice(&block.encode());
                Store {
                    bytes,
                    authority: authority.as_bytes().try_into().unwrap(),
                }
            }

            fn verify(&self, entries: &[Entry], vm: usize) -> Result<Verified, &'static str> {
                let manifest =
                    Manifest::parse(&Manifest::encode(entries).unwrap(), STORE, &BOARD).unwrap();
                let kind = BOARD.vms[vm].kind;
                verify_for_vm(
                    Some(&manifest),
                    vm,
                    kind,
                    &self.authority,
                    &mut |at, buf| {
                        let at = at as usize;
                        match self.bytes.get(at..at + buf.len()) {
                            Some(src) => {
                                buf.copy_from_slice(src);
                                true
                            }
                            None => false,
                        }
                    },
                )
            }
        }

        fn signed() -> Entry {
            Entry {
                signature: Some(0x8000),
                ..entry(SECURE, 0x1000, 0x4100_0000, 0x2000)
            }
        }

        #[test]
        fn the_secure_vm_boots_only_a_verified_signed_image() {
            let mut store = Store::new();
            let hash: [u8; 32] = Sha256::digest(&store.bytes[0x1000..0x3000]).into();
            assert_eq!(store.verify(&[signed()], SECURE), Ok(Some((hash, 3))));
            // Unsigned next to it, or alone: refused.
            let unsigned = entry(SECURE, 0x20000, 0x4180_0000, 0x100);
            assert!(store.verify(&[signed(), unsigned], SECURE).is_err());
            assert_eq!(
                store.verify(&[unsigned], SECURE),
                Err("an unsigned boot image (a secure VM boots only signed ones)")
            );
            // No manifest at all.
            assert_eq!(
                verify_for_vm(
                    None,
                    SECURE,
                    VmKind::Secure,
                    &store.authority,
                    &mut |_, _| true
                ),
                Err("no signed boot image in the image store")
            );
            // One byte of the image changed, or the block's security version.
            store.bytes[0x2fff] ^= 1;
            assert_eq!(
                store.verify(&[signed()], SECURE),
                Err(dice::BootError::BadSignature.describe())
            );
            store.bytes[0x2fff] ^= 1;
            store.bytes[0x8008] = 4;
            assert_eq!(
                store.verify(&[signed()], SECURE),
                Err(dice::BootError::BadSignature.describe())
            );
            // Another authority.
            store.bytes[0x8008] = 3;
            store.authority = Store::new().authority;
            store.authority[1] ^= 1;
            assert!(store.verify(&[signed()], SECURE).is_err());
        }

        #[test]
        fn the_rich_vm_may_boot_unsigned_images_but_a_signed_one_must_verify() {
            let mut store = Store::new();
            let unsigned = entry(RICH, 0x10000, 0x5000_0000, 0x1000);
            assert_eq!(store.verify(&[unsigned], RICH), Ok(None));
            assert_eq!(
                verify_for_vm(None, RICH, VmKind::Rich, &store.authority, &mut |_, _| true),
                Ok(None)
            );
            let signed_rich = Entry {
                vm: RICH,
                destination: 0x5000_0000,
                ..signed()
            };
            assert!(matches!(store.verify(&[signed_rich], RICH), Ok(Some(_))));
            store.bytes[0x1000] ^= 1;
            assert!(store.verify(&[signed_rich], RICH).is_err());
            // A store that cannot be read is refused, not trusted.
            let manifest =
                Manifest::parse(&Manifest::encode(&[signed()]).unwrap(), STORE, &BOARD).unwrap();
            assert_eq!(
                verify_for_vm(
                    Some(&manifest),
                    SECURE,
                    VmKind::Secure,
                    &store.authority,
                    &mut |_, _| false
                ),
                Err("its signature block cannot be read")
            );
        }
    }
}
