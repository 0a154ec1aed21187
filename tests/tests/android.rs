//! QEMU tests of Android in the rich VM:
//! - boot images: `mkbootimg` packs Debian's arm64 kernel and the project's
//!   ramdisk into a `boot.img` (header v2; and header v3 with a
//!   `vendor_boot.img`), mvmm boots what the `bootimg` crate takes out of it,
//!   and a payment goes through;
//! - binder: the payment HAL (`mvmm-payment-hal`, `dev.mvmm.IPayment`)
//!   serves on `/dev/binder` (`binder_linux`) and `mvmm-pay --binder` pays
//!   through it.
//!
//! Run by `cargo xtask test` (they need the images and mkbootimg:
//! `#[ignore]` otherwise).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mvmm_tests::android_boot::{mkbootimg, prepare_bootimg_boot};
use mvmm_tests::payment;
use mvmm_tests::rich::Cpio;
use mvmm_tests::{
    Console, ConsoleError, Images, Machine, RICH_CMDLINE, RICH_INITRAMFS, RICH_KERNEL,
    load_test_board, qemu_command, rich,
};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);

#[track_caller]
fn ok(result: Result<String, ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

fn work(dir: &Path, name: &str) -> PathBuf {
    let work = dir.join("work").join(format!("android-{name}"));
    std::fs::create_dir_all(&work).expect("work dir");
    work
}

/// Boots `boot` (and `vendor`) running `command`; approves the payment it
/// asks for and returns the console transcript after power-off.
fn boot_and_pay(
    dir: &Path,
    boot: &Path,
    vendor: Option<&Path>,
    command: &str,
    name: &str,
) -> String {
    let (board, qemu) = load_test_board().unwrap_or_else(|e| panic!("{e}"));
    let (rich, unpacked) =
        prepare_bootimg_boot(&board, &qemu, dir, (boot, vendor), Some(command), name)
            .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "boot image v{}: cmdline {:?}",
        unpacked.header_version, unpacked.cmdline
    );
    let images = Images::with_rich_linux(dir, &rich);
    let mut m = Machine::start(qemu_command(&board, &qemu, &images, Console::Piped));
    ok(payment::answer(&mut m, "y\r", BOOT));
    ok(m.expect("secure-os: payment approved", STEP));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    ok(m.expect("[rich] mvmm-rich: exit status", STEP));
    let status = m
        .wait_exit(STEP)
        .expect("QEMU did not exit after the rich VM's SYSTEM_OFF");
    assert!(status.success(), "QEMU exit status {status}");
    m.transcript()
}

fn verified(transcript: &str) {
    let json = payment::json_lines(transcript);
    let (Some(enroll), Some(request)) = (
        json.iter().find(|v| v.get("label").is_some()),
        json.iter().find(|v| v.get("token").is_some()),
    ) else {
        panic!("no enrollment or token:\n{transcript}")
    };
    let v = payment::verify(enroll, request).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.counter, 1);
}

#[test]
#[ignore = "needs the QEMU images and mkbootimg: run `cargo xtask test`"]
fn a_boot_image_v2_made_by_mkbootimg_boots_to_a_payment() {
    let dir = Images::dir_from_env();
    let work = work(&dir, "v2");
    let boot = work.join("boot.img");
    let cmdline = format!("{RICH_CMDLINE} androidboot.hardware=mvmm");
    let (kernel, ramdisk) = (dir.join(RICH_KERNEL), dir.join(RICH_INITRAMFS));
    let args: [&OsStr; 12] = [
        "--kernel".as_ref(),
        kernel.as_os_str(),
        "--ramdisk".as_ref(),
        ramdisk.as_os_str(),
        "--cmdline".as_ref(),
        cmdline.as_ref(),
        "--header_version".as_ref(),
        "2".as_ref(),
        "--dtb".as_ref(),
        ramdisk.as_os_str(), // any non-empty blob: mvmm writes the VM's device tree
        "-o".as_ref(),
        boot.as_os_str(),
    ];
    mkbootimg(&args).unwrap_or_else(|e| panic!("{e}"));
    let command = format!(
        "grep -o androidboot.hardware=mvmm /proc/cmdline; {}",
        payment::script("")
    );
    let out = boot_and_pay(&dir, &boot, None, &command, "v2");
    assert!(
        out.contains("[rich] androidboot.hardware=mvmm"),
        "the image's cmdline reached the kernel:\n{out}"
    );
    verified(&out);
}

#[test]
#[ignore = "needs the QEMU images and mkbootimg: run `cargo xtask test`"]
fn a_boot_image_v3_with_vendor_boot_boots_to_a_payment() {
    // GKI's split: the kernel (as Image.gz) and a generic ramdisk in
    // boot.img; the vendor ramdisk (here: the project's, with the modules)
    // and the vendor command line in vendor_boot.img.
    let dir = Images::dir_from_env();
    let work = work(&dir, "v3");
    let kernel_gz = work.join("Image.gz");
    let gz = std::process::Command::new("gzip")
        .arg("-c")
        .arg(dir.join(RICH_KERNEL))
        .output()
        .expect("gzip runs");
    assert!(gz.status.success());
    std::fs::write(&kernel_gz, gz.stdout).expect("write Image.gz");
    let mut generic = Cpio::new();
    generic.dir("etc");
    generic.file("etc/generic-ramdisk", 0o644, b"from boot.img\n");
    // Compressed, as GKI's generic ramdisk is: the vendor ramdisk before it
    // (gzip) may end at any offset, and Linux takes an archive that starts
    // unaligned only if it is compressed (an uncompressed cpio must start
    // 4-byte aligned: "invalid magic at start of compressed archive").
    let generic_cpio = work.join("generic-ramdisk.cpio");
    std::fs::write(&generic_cpio, generic.finish()).expect("write generic ramdisk");
    let gz = std::process::Command::new("gzip")
        .arg("-c")
        .arg(&generic_cpio)
        .output()
        .expect("gzip runs");
    assert!(gz.status.success());
    let generic_path = work.join("generic-ramdisk.cpio.gz");
    std::fs::write(&generic_path, gz.stdout).expect("write generic ramdisk");
    let dtb = work.join("dtb");
    std::fs::write(&dtb, b"not used: mvmm writes the VM's device tree").expect("write dtb");
    let (boot, vendor) = (work.join("boot.img"), work.join("vendor_boot.img"));
    let vendor_ramdisk = dir.join(RICH_INITRAMFS);
    let args: [&OsStr; 18] = [
        "--kernel".as_ref(),
        kernel_gz.as_os_str(),
        "--ramdisk".as_ref(),
        generic_path.as_os_str(),
        "--cmdline".as_ref(),
        RICH_CMDLINE.as_ref(),
        "--vendor_ramdisk".as_ref(),
        vendor_ramdisk.as_os_str(),
        "--vendor_cmdline".as_ref(),
        "androidboot.hardware=mvmm".as_ref(),
        "--dtb".as_ref(),
        dtb.as_os_str(),
        "--header_version".as_ref(),
        "3".as_ref(),
        "--vendor_boot".as_ref(),
        vendor.as_os_str(),
        "-o".as_ref(),
        boot.as_os_str(),
    ];
    mkbootimg(&args).unwrap_or_else(|e| panic!("{e}"));
    let command = format!(
        "cat /etc/generic-ramdisk; grep -o androidboot.hardware=mvmm /proc/cmdline; {}",
        payment::script("")
    );
    let out = boot_and_pay(&dir, &boot, Some(&vendor), &command, "v3");
    assert!(
        out.contains("[rich] from boot.img"),
        "the generic ramdisk was unpacked:\n{out}"
    );
    assert!(
        out.contains("[rich] androidboot.hardware=mvmm"),
        "the vendor cmdline reached the kernel:\n{out}"
    );
    verified(&out);
}

/// Waits until the rich VM's command is done and the machine is off.
#[track_caller]
fn finish(m: &mut Machine) -> String {
    m.finish_rich_command(STEP)
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_payment_through_the_binder_hal_returns_a_token_the_backend_accepts() {
    // busybox has no way to run a command as another uid, so the refusal is
    // checked the other way round: a first HAL serves only uid 1000 and the
    // shell's uid 0, as the kernel reports it, is refused. That HAL stops
    // (the driver frees the context manager once its process is gone), and
    // the HAL that serves root starts in the background as the context
    // manager of /dev/binder; mvmm-pay waits for it (like Android's
    // waitForService). MVMM_TRANSPORT points mvmm-pay at a port nobody
    // serves, so only the HAL can have reached the secure VM.
    let command = format!(
        "ls -l /dev/binder; grep -w binder /proc/misc; \
         mvmm-payment-hal --allow-uid 1000 & hal=$!; \
         mvmm-pay --binder status --json; echo \"refused caller exited with $?\"; \
         kill $hal; wait $hal; sleep 1; \
         mvmm-payment-hal & \
         export MVMM_BINDER=1 MVMM_TRANSPORT=vsock:4:1; {}",
        payment::script("mvmm-pay status --json")
    );
    let mut m = Machine::boot_linux(Some(&command), "binder-hal");
    ok(m.expect("[rich] mvmm-rich: module binder_linux loaded", BOOT));
    // Exit status 7: cannot reach the payment HAL (kind "binder").
    ok(m.expect("[rich] refused caller exited with 7", BOOT));
    // The start of the HAL's "serving dev.mvmm.IPayment at handle 0 of
    // /dev/binder" line: a line the rich VM writes in several UART bursts
    // can be split on the console by another writer's line (a heartbeat),
    // so only its first words are matched.
    ok(m.expect("[rich] mvmm-payment-hal: serving", STEP));
    let prompt = ok(payment::answer(&mut m, "y\r", BOOT));
    assert!(
        prompt.contains("[TRUSTED secure] 12.50 EUR\n"),
        "the trusted prompt shows the amount:\n{prompt}"
    );
    ok(m.expect("secure-os: payment approved", STEP));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let out = finish(&mut m);
    assert!(
        out.contains("[rich] crw-rw-rw-") && out.contains("/dev/binder"),
        "/dev/binder is a character device open to all:\n{out}"
    );
    assert_eq!(rich::parse_exit_status(&out), Some(0), "{out}");
    let json = payment::json_lines(&out);
    let (Some(refused), Some(enroll), Some(request), Some(status)) = (
        json.iter().find(|v| v.get("error").is_some()),
        json.iter().find(|v| v.get("label").is_some()),
        json.iter().find(|v| v.get("token").is_some()),
        json.iter().find(|v| v.get("transaction_counter").is_some()),
    ) else {
        panic!("no refusal, enrollment, token or status:\n{out}")
    };
    assert_eq!(refused["kind"], "binder", "{refused}");
    let why = refused["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("refused this caller") && why.contains("caller uid 0 "),
        "{why}"
    );
    let verified = payment::verify(enroll, request).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified.counter, 1);
    assert_eq!(status["transaction_counter"], 1, "{status}");
}
