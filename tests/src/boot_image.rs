//! The host side of verified boot and the DICE key chain (see
//! `mvmm_core::dice`): the boot authority's development key, the signed
//! secure-os image, the device secret, the image store that carries them,
//! and the measurements and keys the host can compute from them.
//!
//! `cargo xtask build` calls [`sign_secure_os`] and [`provision`]; every
//! boot lays its images out with [`store_loads`].

use crate::Load;
use mvmm_core::config::BoardFile;
use mvmm_core::dice::{self, Inputs, Mode, SignatureBlock};
use mvmm_core::image_store::{Entry, MANIFEST_SIZE, Manifest};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The secure VM's flat image and its signature block, in an image
/// directory.
pub const SECURE_OS_IMAGE: &str = "secure-os.bin";
pub const SECURE_OS_SIGNATURE: &str = "secure-os.sig";
/// The boot authority's public key (SEC1 compressed, hex), in an image
/// directory: what mvmm was built with.
pub const AUTHORITY_PUBLIC: &str = "boot-authority.pub";
/// The provisioned device secret (the emulated fuse), in an image directory.
pub const DEVICE_SECRET: &str = "device-secret.bin";

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn random32() -> Result<[u8; 32], String> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The boot authority's development signing key, kept in `keys_dir`
/// (under `target/`, never committed); created on first use.
pub fn authority_key(keys_dir: &Path) -> Result<SigningKey, String> {
    let path = keys_dir.join("boot-authority.key");
    if !path.exists() {
        let key = loop {
            if let Ok(key) = SigningKey::from_slice(&random32()?) {
                break key;
            }
        };
        write(&path, hex(&key.to_bytes()).as_bytes())?;
        eprintln!("new development boot authority key: {}", path.display());
    }
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    unhex(&text)
        .and_then(|b| SigningKey::from_slice(&b).ok())
        .ok_or_else(|| format!("{}: not a P-256 private key in hex", path.display()))
}

/// The SEC1 compressed public key of `key`, in hex (what mvmm's build takes
/// in `MVMM_BOOT_AUTHORITY`).
pub fn public_hex(key: &SigningKey) -> String {
    hex(key.verifying_key().to_sec1_point(true).as_bytes())
}

/// The loadable bytes of an ELF64 little-endian image as they lie in
/// memory: (lowest physical address, bytes), gaps filled with zeros.
pub fn flatten_elf(elf: &[u8]) -> Result<(u64, Vec<u8>), String> {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not an ELF64 little-endian file".into());
    }
    let bad = || "truncated ELF header or program headers".to_string();
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(bad)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(bad)?);
    let mut segments = Vec::new();
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        if u32_at(at).ok_or_else(bad)? != 1 {
            continue; // not PT_LOAD
        }
        let offset = u64_at(at + 8).ok_or_else(bad)? as usize;
        let paddr = u64_at(at + 24).ok_or_else(bad)?;
        let filesz = u64_at(at + 32).ok_or_else(bad)? as usize;
        if filesz == 0 {
            continue;
        }
        let bytes = elf
            .get(offset..offset + filesz)
            .ok_or("a segment lies past the end of the file")?;
        segments.push((paddr, bytes));
    }
    let base = segments
        .iter()
        .map(|s| s.0)
        .min()
        .ok_or("no loadable segment")?;
    let end = segments
        .iter()
        .map(|(a, b)| a + b.len() as u64)
        .max()
        .unwrap_or(base);
    let mut image = vec![0u8; (end - base) as usize];
    for (paddr, bytes) in segments {
        let at = (paddr - base) as usize;
        image[at..at + bytes.len()].copy_from_slice(bytes);
    }
    Ok((base, image))
}

/// The value of symbol `name` in an ELF64 little-endian file's symbol
/// table.
pub fn elf_symbol(elf: &[u8], name: &str) -> Option<u64> {
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let shoff = u64_at(0x28)? as usize;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let section = |i: usize| shoff + i * shentsize;
    for i in 0..shnum {
        if u32_at(section(i) + 4)? != 2 {
            continue; // not SHT_SYMTAB
        }
        let (off, size) = (
            u64_at(section(i) + 0x18)? as usize,
            u64_at(section(i) + 0x20)? as usize,
        );
        let strtab = section(u32_at(section(i) + 0x28)? as usize);
        let stroff = u64_at(strtab + 0x18)? as usize;
        for sym in (off..off + size).step_by(24) {
            let name_at = stroff + u32_at(sym)? as usize;
            let end = elf.get(name_at..)?.iter().position(|&b| b == 0)?;
            if &elf[name_at..name_at + end] == name.as_bytes() {
                return u64_at(sym + 8);
            }
        }
    }
    None
}

/// mvmm's measurement as mvmm computes it at boot: the SHA-256 of its code
/// and read-only data (`__measured_start..__measured_end`).
pub fn mvmm_measurement(mvmm_elf: &Path) -> Result<[u8; 32], String> {
    let elf = read(mvmm_elf)?;
    let (base, image) = flatten_elf(&elf).map_err(|e| format!("{}: {e}", mvmm_elf.display()))?;
    let symbol = |name| {
        elf_symbol(&elf, name).ok_or_else(|| format!("{}: no symbol {name}", mvmm_elf.display()))
    };
    let (start, end) = (symbol("__measured_start")?, symbol("__measured_end")?);
    let range = start
        .checked_sub(base)
        .zip(end.checked_sub(base))
        .and_then(|(s, e)| image.get(s as usize..e as usize))
        .ok_or_else(|| format!("{}: measured range outside the image", mvmm_elf.display()))?;
    Ok(Sha256::digest(range).into())
}

/// Turns the secure-os ELF into the flat image mvmm copies into the secure
/// VM, signed by the boot authority with `security_version`; writes
/// [`SECURE_OS_IMAGE`], [`SECURE_OS_SIGNATURE`] and [`AUTHORITY_PUBLIC`]
/// into `dir`. The image must start at the secure VM's entry.
pub fn sign_secure_os(
    dir: &Path,
    elf: &Path,
    key: &SigningKey,
    entry: u64,
    security_version: u32,
) -> Result<(), String> {
    let (base, image) = flatten_elf(&read(elf)?).map_err(|e| format!("{}: {e}", elf.display()))?;
    if base != entry {
        return Err(format!(
            "{}: the image starts at {base:#x}, not at the secure VM's entry {entry:#x}",
            elf.display()
        ));
    }
    let block = sign(&image, key, security_version)?;
    write(&dir.join(SECURE_OS_IMAGE), &image)?;
    write(&dir.join(SECURE_OS_SIGNATURE), &block.encode())?;
    write(&dir.join(AUTHORITY_PUBLIC), public_hex(key).as_bytes())
}

/// Signs a boot image.
pub fn sign(
    image: &[u8],
    key: &SigningKey,
    security_version: u32,
) -> Result<SignatureBlock, String> {
    let hash: [u8; 32] = Sha256::digest(image).into();
    let signature: Signature = key
        .sign_prehash(&dice::signed_message(&hash, security_version))
        .map_err(|e| format!("signing the boot image: {e}"))?;
    Ok(SignatureBlock {
        security_version,
        signature: signature.to_bytes().into(),
    })
}

/// What the host knows of a build's secure VM: the device secret page and
/// what derives from it through the image's CDIs, computed exactly as mvmm
/// and secure-os do.
#[derive(Clone, Debug)]
pub struct Provisioning {
    /// The page QEMU loads at mvmm's UDS address.
    pub page: PathBuf,
    /// The device public key, compressed SEC1 hex (what mvmm-pay pins).
    pub device_key: String,
    pub security_word: String,
    /// The secure VM image's SHA-256 and security version.
    pub image_hash: [u8; 32],
    pub security_version: u32,
    /// CDI_Seal: the secret the secure VM seals its storage under (the
    /// storage tests read and write its records on the host).
    pub storage_root: [u8; 32],
}

/// Creates (once) the device secret under `dir` and derives the secure
/// VM's identity from it and the signed image in `dir`.
pub fn provision(dir: &Path, board: &BoardFile) -> Result<Provisioning, String> {
    use protocol::device_key;
    let page = dir.join(DEVICE_SECRET);
    if !page.exists() {
        let mut bytes = dice::UDS_MAGIC.to_vec();
        bytes.extend_from_slice(&random32()?);
        write(&page, &bytes)?;
    }
    let uds = dice::parse_uds(&read(&page)?)
        .ok_or_else(|| format!("{}: not a device secret page", page.display()))?;
    let image_hash: [u8; 32] = Sha256::digest(read(&dir.join(SECURE_OS_IMAGE))?).into();
    let block = SignatureBlock::parse(&read(&dir.join(SECURE_OS_SIGNATURE))?)
        .map_err(|e| format!("{SECURE_OS_SIGNATURE}: {}", e.describe()))?;
    let authority: [u8; dice::PUBLIC_KEY_LEN] = unhex(
        &fs::read_to_string(dir.join(AUTHORITY_PUBLIC))
            .map_err(|e| format!("{AUTHORITY_PUBLIC}: {e}"))?,
    )
    .and_then(|b| b.try_into().ok())
    .ok_or_else(|| format!("{AUTHORITY_PUBLIC}: not a SEC1 compressed key in hex"))?;
    let cdis = dice::derive(
        &uds,
        &Inputs {
            code_hash: image_hash,
            board: &board.board.name,
            security_version: block.security_version,
            authority: &authority,
            mode: Mode::Normal,
        },
    );
    let key =
        device_key::derive_device_key(&cdis.attest).map_err(|e| format!("device key: {e:?}"))?;
    Ok(Provisioning {
        page,
        device_key: device_key::compressed_hex(&key).to_string(),
        security_word: device_key::security_word(&cdis.seal).to_string(),
        image_hash,
        security_version: block.security_version,
        storage_root: cdis.seal,
    })
}

/// Lays out the image store of one boot: the secure VM's signed image from
/// `dir`, then `rich` (files and their guest-physical destinations in the
/// rich VM), each on a 2 MiB boundary; writes the manifest into `work`.
/// Returns what QEMU's loader puts where: the device secret page at mvmm's
/// UDS address, the manifest, the images and the signature block.
pub fn store_loads(
    board: &BoardFile,
    dir: &Path,
    rich: &[(&Path, u64)],
    work: &Path,
) -> Result<Vec<Load>, String> {
    let store = board
        .board
        .image_store
        .as_ref()
        .ok_or("the board has no image store: the secure VM's signed image is carried there")?;
    let index = |kind: &str| {
        board
            .vms
            .iter()
            .position(|v| v.kind == kind)
            .ok_or_else(|| format!("the board has no {kind} VM"))
    };
    let secure = index("secure")?;
    let secure_entry = board.vms[secure].entry;
    let mut files: Vec<(PathBuf, usize, u64)> =
        vec![(dir.join(SECURE_OS_IMAGE), secure, secure_entry)];
    if !rich.is_empty() {
        let rich_vm = index("rich")?;
        files.extend(rich.iter().map(|(f, at)| (f.to_path_buf(), rich_vm, *at)));
    }
    let mut offset = MANIFEST_SIZE;
    let mut entries = Vec::new();
    let mut loads = Vec::new();
    let align = |o: u64| o.div_ceil(0x20_0000) * 0x20_0000;
    for (file, vm, destination) in &files {
        let size = fs::metadata(file)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .len();
        entries.push(Entry {
            vm: *vm,
            source: offset,
            destination: *destination,
            size,
            signature: None,
        });
        loads.push(Load {
            file: file.clone(),
            addr: Some(store.base + offset),
        });
        offset = align(offset + size);
    }
    // The secure image's signature block after the images.
    entries[0].signature = Some(offset);
    loads.push(Load {
        file: dir.join(SECURE_OS_SIGNATURE),
        addr: Some(store.base + offset),
    });
    offset += dice::SIGNATURE_BLOCK_LEN as u64;
    if offset > store.size {
        return Err(format!(
            "the boot images ({offset} bytes) do not fit the board's image store ({} bytes)",
            store.size
        ));
    }
    let manifest = Manifest::encode(&entries).ok_or("too many boot images")?;
    let path = work.join("image-store-manifest.bin");
    write(&path, &manifest)?;
    loads.insert(
        0,
        Load {
            file: path,
            addr: Some(store.base),
        },
    );
    loads.push(Load {
        file: dir.join(DEVICE_SECRET),
        addr: Some(dice::uds_address(board.board.mvmm.base)),
    });
    Ok(loads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_elf_files_are_refused_with_a_reason() {
        assert!(flatten_elf(b"not an elf").unwrap_err().contains("ELF64"));
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(flatten_elf(&elf).unwrap_err().contains("no loadable"));
        elf[0x20] = 200; // program headers past the end
        elf[0x38] = 1;
        elf[0x36] = 56;
        assert!(flatten_elf(&elf).unwrap_err().contains("truncated"));
        assert_eq!(elf_symbol(&elf, "x"), None);
    }

    #[test]
    fn a_signed_image_verifies_with_the_public_key() {
        let key = SigningKey::from_slice(&[3u8; 32]).unwrap();
        let image = b"flat image";
        let block = sign(image, &key, 2).unwrap();
        let public: [u8; 33] = unhex(&public_hex(&key)).unwrap().try_into().unwrap();
        let hash: [u8; 32] = Sha256::digest(image).into();
        assert_eq!(dice::verify_image(&hash, &block, &public), Ok(()));
    }
}
