//! Images made by AOSP's `mkbootimg` (Debian package `mkbootimg`, which
//! writes boot header v0 to v3 and vendor_boot v3) parse back to exactly
//! what went in. Skipped with a message when mkbootimg is missing, unless
//! `MVMM_REQUIRE_ANDROID_TOOLS=1` (set by `cargo xtask test`, which
//! installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bootimg::{BootPayload, parse_boot, parse_vendor_boot};
use common::filler;

fn have_mkbootimg() -> bool {
    let found = Command::new("mkbootimg").arg("--help").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("MVMM_REQUIRE_ANDROID_TOOLS").is_none(),
            "MVMM_REQUIRE_ANDROID_TOOLS is set but mkbootimg is not installed"
        );
        eprintln!("SKIPPED: mkbootimg not found (Debian package mkbootimg) - the test did not run");
    }
    found
}

fn work(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bootimg-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create work dir");
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write input");
    path
}

fn mkbootimg(args: &[&std::ffi::OsStr]) {
    let out = Command::new("mkbootimg")
        .args(args)
        .output()
        .expect("mkbootimg runs");
    assert!(
        out.status.success(),
        "mkbootimg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_v0_to_v2_from_mkbootimg() {
    if !have_mkbootimg() {
        return;
    }
    let dir = work("v0-v2");
    let (kernel, ramdisk, dtb) = (filler(70_001, 1), filler(30_000, 2), filler(999, 3));
    let k = write(&dir, "kernel", &kernel);
    let r = write(&dir, "ramdisk", &ramdisk);
    let d = write(&dir, "dtb", &dtb);
    // Longer than the 512-byte cmdline field: the rest goes to extra_cmdline.
    let cmdline = format!("console=ttyAMA0 nokaslr {}", "androidboot.x=y ".repeat(40));
    for version in ["0", "1", "2"] {
        for page in ["2048", "4096", "16384"] {
            let out = dir.join(format!("boot-v{version}-{page}.img"));
            let mut args: Vec<&std::ffi::OsStr> = vec![
                "--kernel".as_ref(),
                k.as_os_str(),
                "--ramdisk".as_ref(),
                r.as_os_str(),
                "--cmdline".as_ref(),
                cmdline.as_ref(),
                "--board".as_ref(),
                "mvmm-qemu".as_ref(),
                "--pagesize".as_ref(),
                page.as_ref(),
                "--header_version".as_ref(),
                version.as_ref(),
                "-o".as_ref(),
                out.as_os_str(),
            ];
            if version == "2" {
                args.extend(["--dtb".as_ref(), d.as_os_str()]);
            }
            mkbootimg(&args);
            let file = std::fs::read(&out).expect("read image");
            let image = parse_boot(&file).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
            assert_eq!(image.header_version.to_string(), version);
            assert_eq!(image.page_size.to_string(), page);
            assert_eq!(image.kernel, kernel, "v{version} page {page}");
            assert_eq!(image.ramdisk, ramdisk);
            assert_eq!(image.cmdline, cmdline);
            assert_eq!(image.board_name, "mvmm-qemu");
            assert_eq!(image.dtb, if version == "2" { &dtb[..] } else { &[][..] });
        }
    }
}

#[test]
fn header_v3_with_vendor_boot_from_mkbootimg() {
    if !have_mkbootimg() {
        return;
    }
    let dir = work("v3");
    let (kernel, generic, vendor_ramdisk, dtb) = (
        filler(50_000, 4),
        filler(9000, 5),
        filler(7000, 6),
        filler(300, 7),
    );
    let k = write(&dir, "kernel", &kernel);
    let r = write(&dir, "ramdisk", &generic);
    let v = write(&dir, "vendor-ramdisk", &vendor_ramdisk);
    let d = write(&dir, "dtb", &dtb);
    let (boot_out, vendor_out) = (dir.join("boot.img"), dir.join("vendor_boot.img"));
    mkbootimg(&[
        "--kernel".as_ref(),
        k.as_os_str(),
        "--ramdisk".as_ref(),
        r.as_os_str(),
        "--cmdline".as_ref(),
        "console=ttyAMA0".as_ref(),
        "--vendor_cmdline".as_ref(),
        "androidboot.hardware=mvmm".as_ref(),
        "--vendor_ramdisk".as_ref(),
        v.as_os_str(),
        "--dtb".as_ref(),
        d.as_os_str(),
        "--header_version".as_ref(),
        "3".as_ref(),
        "--pagesize".as_ref(),
        "2048".as_ref(),
        "--vendor_boot".as_ref(),
        vendor_out.as_os_str(),
        "-o".as_ref(),
        boot_out.as_os_str(),
    ]);
    let boot_file = std::fs::read(&boot_out).expect("boot.img");
    let vendor_file = std::fs::read(&vendor_out).expect("vendor_boot.img");
    let boot = parse_boot(&boot_file).expect("boot parses");
    let vendor = parse_vendor_boot(&vendor_file).expect("vendor_boot parses");
    assert_eq!((boot.header_version, boot.page_size), (3, 4096));
    assert_eq!((vendor.header_version, vendor.page_size), (3, 2048));
    assert_eq!(vendor.dtb, &dtb[..]);
    let payload = BootPayload::assemble(&boot, Some(&vendor)).expect("assembles");
    assert_eq!(payload.kernel, kernel);
    assert_eq!(payload.initrd, [vendor_ramdisk, generic].concat());
    assert_eq!(payload.cmdline, "console=ttyAMA0 androidboot.hardware=mvmm");
}
