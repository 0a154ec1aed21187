//! Booting the rich VM from an Android boot image: the kernel, ramdisk and
//! command line are taken out of `boot.img` (and `vendor_boot.img` for
//! header v3 and later) by the `bootimg` crate, written next to the image
//! directory's `rich/`, and booted like any other kernel and initrd
//! ([`crate::prepare_rich_boot`]: the static tools and the pinned device key
//! are appended to the ramdisk, the device tree comes from the board).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bootimg::{BootPayload, parse_boot, parse_vendor_boot};
use mvmm_core::config::{BoardFile, QemuSection};

use crate::{RichBoot, RichSource, prepare_rich_boot};

/// The arm64 Image header's magic, at offset 56.
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";

/// What was taken out of a boot image, as files.
#[derive(Clone, Debug)]
pub struct Unpacked {
    pub header_version: u32,
    /// An uncompressed arm64 `Image` (gunzipped when the image held
    /// `Image.gz`).
    pub kernel: PathBuf,
    /// Vendor ramdisk(s), then the generic ramdisk.
    pub initrd: PathBuf,
    pub cmdline: String,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Takes kernel, ramdisk and command line out of `boot` (and `vendor`)
/// into `out` (`Image`, `initrd`).
pub fn unpack(boot: &Path, vendor: Option<&Path>, out: &Path) -> Result<Unpacked, String> {
    let boot_bytes = read(boot)?;
    let image = parse_boot(&boot_bytes).map_err(|e| format!("{}: {e}", boot.display()))?;
    let vendor_bytes = vendor.map(read).transpose()?;
    let vendor_image = match (vendor, &vendor_bytes) {
        (Some(path), Some(bytes)) => {
            Some(parse_vendor_boot(bytes).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        _ => None,
    };
    let payload = BootPayload::assemble(&image, vendor_image.as_ref())
        .map_err(|e| format!("{}: {e}", boot.display()))?;
    if payload.kernel.is_empty() {
        return Err(format!("{}: the boot image has no kernel", boot.display()));
    }
    if payload.initrd.is_empty() {
        return Err(format!(
            "{}: the boot image has no ramdisk (header v{}{})",
            boot.display(),
            image.header_version,
            if image.header_version >= 3 && vendor.is_none() {
                "; pass its vendor_boot.img too"
            } else {
                ""
            }
        ));
    }
    let kernel =
        arm64_image(payload.kernel).map_err(|e| format!("{}: the kernel {e}", boot.display()))?;
    fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (kernel_path, initrd_path) = (out.join("Image"), out.join("initrd"));
    fs::write(&kernel_path, kernel).map_err(|e| format!("{}: {e}", kernel_path.display()))?;
    fs::write(&initrd_path, &payload.initrd)
        .map_err(|e| format!("{}: {e}", initrd_path.display()))?;
    Ok(Unpacked {
        header_version: image.header_version,
        kernel: kernel_path,
        initrd: initrd_path,
        cmdline: payload.cmdline,
    })
}

/// The kernel as an uncompressed arm64 Image: as is, or gunzipped.
fn arm64_image(kernel: Vec<u8>) -> Result<Vec<u8>, String> {
    let kernel = if kernel.starts_with(&[0x1f, 0x8b]) {
        gunzip(&kernel)?
    } else {
        kernel
    };
    if kernel.get(56..60) == Some(ARM64_MAGIC) {
        return Ok(kernel);
    }
    let what = match kernel.get(..4) {
        Some([0x02, 0x21, 0x4c, 0x18] | [0x04, 0x22, 0x4d, 0x18]) => {
            "is lz4-compressed (Image.lz4): decompress it with `lz4 -d` and boot it with --rich-kernel"
        }
        _ => "is not an arm64 Linux Image (no ARM\\x64 magic at offset 56)",
    };
    Err(what.to_string())
}

fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run gzip -dc: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("gzip has no stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("gzip -dc: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "is gzip-compressed but does not decompress: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// Prepares a rich-VM boot from `boot` (and `vendor`): unpacks it into
/// `<image_dir>/bootimg-<name>/` and hands kernel, initrd and the image's
/// command line to [`prepare_rich_boot`] with the image directory's tools
/// and device key.
pub fn prepare_bootimg_boot(
    board: &BoardFile,
    qemu: &QemuSection,
    image_dir: &Path,
    boot: (&Path, Option<&Path>),
    command: Option<&str>,
    name: &str,
) -> Result<(RichBoot, Unpacked), String> {
    let unpacked = unpack(boot.0, boot.1, &image_dir.join(format!("bootimg-{name}")))?;
    let source = RichSource {
        kernel: unpacked.kernel.clone(),
        initrd: unpacked.initrd.clone(),
        cmdline: unpacked.cmdline.clone(),
    };
    let rich = prepare_rich_boot(
        board,
        qemu,
        image_dir,
        &source,
        command,
        &image_dir.join("work").join(format!("bootimg-{name}")),
    )?;
    Ok((rich, unpacked))
}

/// Runs AOSP's `mkbootimg` (Debian package `mkbootimg`) with `args`.
pub fn mkbootimg(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let out = Command::new("mkbootimg")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run mkbootimg (Debian package mkbootimg): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mkbootimg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_formats() {
        let mut image = vec![0u8; 64];
        image[56..60].copy_from_slice(ARM64_MAGIC);
        assert_eq!(arm64_image(image.clone()), Ok(image));
        let lz4 = vec![0x02, 0x21, 0x4c, 0x18, 0, 0];
        assert!(arm64_image(lz4).is_err_and(|e| e.contains("lz4")));
        assert!(arm64_image(vec![1, 2, 3]).is_err_and(|e| e.contains("no ARM\\x64 magic")));
        assert!(arm64_image(vec![0x1f, 0x8b, 0, 0]).is_err_and(|e| e.contains("gzip")));
    }
}
