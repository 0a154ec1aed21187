//! `cargo xtask build`: mvmm and every guest image for a board, signed
//! and measured, under `target/images/<board>/`.

use super::*;
use mvmm_core::config::{BoardFile, Image};

/// The test guest: it stands in for Linux (linked where the board's
/// `image = "linux"` VM runs) in the QEMU tests.
const TEST_GUEST: &str = "probe-guest";

/// Builds mvmm and the images the board names for its VMs (and the test
/// guest); returns the image set for QEMU.
pub(crate) fn build(board: &str) -> Result<Images> {
    ensure_targets()?;
    let started = Instant::now();
    // Which VM boots what is the board's to say (`image = "…"`).
    let path = mvmm_tests::board_file(board);
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let refused = |e: mvmm_core::config::ConfigError| format!("board file {}: {e}", path.display());
    let file = BoardFile::parse(&text).map_err(refused)?;
    file.with_board(|_| ()).map_err(refused)?;
    // The boot flow carries a signed secure-os and boots Linux beside it.
    let secure = file.vm_running(Image::SecureOs).map_err(refused)?;
    let linux = file.vm_running(Image::Linux).map_err(refused)?;
    let mut built: Vec<(&str, &str)> = Vec::new();
    for vm in &file.vms {
        if let Some(krate) = vm.image().map_err(refused)?.crate_name() {
            built.push((krate, &vm.name));
        }
    }
    let named: Vec<String> = built
        .iter()
        .map(|(krate, vm)| format!("{krate} for vm '{vm}'"))
        .chain([format!("{TEST_GUEST} in vm '{}'", linux.name)])
        .collect();
    step(&format!(
        "building the guests ({}) for {TARGET_EL1}",
        named.join(", ")
    ));
    let mut guests = cargo();
    guests.args(["build", "--release", "--target", TARGET_EL1]);
    for krate in built.iter().map(|(krate, _)| *krate).chain([TEST_GUEST]) {
        guests.args(["-p", krate]);
    }
    run_cmd(guests.env("MVMM_BOARD", board))?;
    step(&format!(
        "building the rich VM's static tools (mvmm-pay, mvmm-payment-hal, chan-tool, dma-attack) for {TARGET_LINUX}"
    ));
    run_cmd(
        cargo()
            .args(["build", "--release", "--target", TARGET_LINUX])
            .args([
                "-p",
                "android-bridge",
                "--bin",
                "mvmm-pay",
                "--bin",
                "mvmm-payment-hal",
                "-p",
                "chan-tool",
                "--bin",
                "chan-tool",
                "-p",
                "dma-attack",
                "--bin",
                "dma-attack",
            ]),
    )?;
    let authority = boot_image::authority_key(&target_dir().join("keys"))?;
    step(&format!(
        "building mvmm for {TARGET_EL2} (boot authority {})",
        boot_image::public_hex(&authority)
    ));
    run_cmd(
        cargo()
            .args(["build", "--release", "--target", TARGET_EL2, "-p", "mvmm"])
            .env("MVMM_BOARD", board)
            .env("MVMM_BOOT_AUTHORITY", boot_image::public_hex(&authority)),
    )?;
    let dir = target_dir().join("images").join(board);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = |target: &str, name: &str| -> Result {
        let from = target_dir().join(target).join("release").join(name);
        fs::copy(&from, dir.join(name))
            .map(|_| ())
            .map_err(|e| format!("{}: {e}", from.display()).into())
    };
    copy(TARGET_EL2, "mvmm")?;
    for krate in built.iter().map(|(krate, _)| *krate).chain([TEST_GUEST]) {
        copy(TARGET_EL1, krate)?;
    }
    step(&format!(
        "vm '{}' boots linux: Debian's arm64 kernel and a busybox initramfs",
        linux.name
    ));
    let image = rich::fetch_rich_image(&target_dir())?;
    fs::create_dir_all(dir.join("rich")).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (from, to) in [
        (&image.kernel, RICH_KERNEL),
        (&image.initramfs, RICH_INITRAMFS),
    ] {
        fs::copy(from, dir.join(to)).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    eprintln!("rich VM kernel {}", image.kernel_version);
    let tools = dir.join(RICH_TOOLS_DIR);
    fs::create_dir_all(&tools).map_err(|e| format!("{}: {e}", tools.display()))?;
    for tool in ["mvmm-pay", "mvmm-payment-hal", "chan-tool", "dma-attack"] {
        let from = target_dir().join(TARGET_LINUX).join("release").join(tool);
        fs::copy(&from, tools.join(tool)).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    let security_version = secure_os_security_version()?;
    step(&format!(
        "signing secure-os for vm '{}' (security version {security_version}) with the development boot authority",
        secure.name
    ));
    boot_image::sign_secure_os(
        &dir,
        &dir.join(Image::SecureOs.name()),
        &authority,
        secure.entry,
        security_version,
    )?;
    let device = provision(&dir, &file)?;
    eprintln!(
        "device key (pinned by mvmm-pay in the rich VM): {}",
        device.device_key
    );
    // What a backend expects an attestation of this build to state.
    let expected = mvmm_verify::measurements::ExpectedMeasurements {
        board: file.board.name.clone(),
        mvmm: boot_image::mvmm_measurement(&dir.join("mvmm"))?,
        secure_os: device.image_hash,
        min_security_version: security_version,
        debug_allowed: false,
    };
    let path = dir.join(EXPECTED_MEASUREMENTS);
    expected
        .write(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("expected measurements: {}", path.display());
    mvmm_tests::ensure_storage_images(&file, &dir)?;
    if mvmm_tests::storage_size(&file).is_some() {
        eprintln!(
            "secure VM flash (kept between runs): {}",
            dir.join(mvmm_tests::STORAGE_IMAGE).display()
        );
    }
    eprintln!("built in {:.1} s", started.elapsed().as_secs_f64());
    Ok(Images::probe(&file, &dir)?)
}

/// The expected-measurements file of an image directory (see
/// `mvmm_verify::measurements`).
pub(crate) const EXPECTED_MEASUREMENTS: &str = "expected-measurements.json";

/// secure-os's security version: `[package.metadata.mvmm] security-version`
/// in secure-os/Cargo.toml (raise it with a fix that older images must not
/// be allowed to roll back).
pub(crate) fn secure_os_security_version() -> Result<u32> {
    let path = repo_root().join("secure-os").join("Cargo.toml");
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: toml::Value =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    value
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("mvmm"))
        .and_then(|m| m.get("security-version"))
        .and_then(toml::Value::as_integer)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| {
            format!(
                "{}: no [package.metadata.mvmm] security-version = <u32>",
                path.display()
            )
        })
        .map_err(Error::from)
}

pub(crate) fn print_images(images: &Images) {
    println!("images:");
    println!("  mvmm (EL2):   {}", images.mvmm.display());
    for guest in &images.guests {
        match guest.addr {
            Some(addr) => println!("  at {addr:#x}: {}", guest.file.display()),
            None => println!("  guest ELF:    {}", guest.file.display()),
        }
    }
    match &images.storage {
        Some(mvmm_tests::StorageImage::Persistent(file)) => {
            println!("  secure flash: {}", file.display())
        }
        Some(mvmm_tests::StorageImage::Throwaway(file)) => {
            println!("  secure flash: {} (writes discarded)", file.display())
        }
        None => {}
    }
}
