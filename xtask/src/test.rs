//! `cargo xtask test`: format, lints, host tests, the no_std build, the
//! board checks, and the QEMU system tests.

use super::*;

/// Crates of the trusted base that must build for the secure VM.
pub(crate) const NO_STD_CRATES: &[&str] = &[
    "mvmm-abi",
    "protocol",
    "payment-app",
    "trusted-ui",
    "mvmm-core",
];

#[derive(clap::Args)]
pub(crate) struct TestArgs {
    /// Board directory under boards/: the images are built for it and the
    /// QEMU tests read it (MVMM_BOARD).
    #[arg(long, default_value = mvmm_tests::DEFAULT_BOARD)]
    board: String,
    /// Only the host tests and checks, no QEMU.
    #[arg(long, conflicts_with = "qemu_only")]
    host_only: bool,
    /// Only the QEMU tests (no format, lints or host tests).
    #[arg(long)]
    qemu_only: bool,
    /// Keep every host CPU busy (two shell busy loops) while the QEMU tests
    /// run: the suite must pass on a loaded machine, where an emulated CPU
    /// may not run for a long while.
    #[arg(long)]
    stress: bool,
    /// Run the QEMU tests this many times (each one must pass).
    #[arg(long, default_value_t = 1, value_name = "N")]
    repeat: u32,
    /// Only the QEMU tests whose names contain this text (cargo test's
    /// filter), e.g. `--filter reboot`.
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// The long variants: 100 power cuts during storage writes instead of 5
    /// (about 17 minutes on two cores).
    #[arg(long)]
    long: bool,
}

pub(crate) fn test(args: &TestArgs) -> Result {
    let started = Instant::now();
    ensure_targets()?;
    if !args.qemu_only {
        host_checks(args.host_only, started)?;
    }
    if args.host_only {
        return Ok(());
    }
    qemu_tests(args)?;
    eprintln!(
        "\nall tests passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Format, lints, host tests, the no_std build and the board checks.
pub(crate) fn host_checks(host_only: bool, started: Instant) -> Result {
    step("format and lints: cargo fmt --check, cargo clippy -D warnings (host and targets)");
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_cmd(cargo().args([
        "clippy",
        "--release",
        "-p",
        "mvmm",
        "--target",
        TARGET_EL2,
        "--",
        "-D",
        "warnings",
    ]))?;
    run_cmd(
        cargo()
            .args([
                "clippy",
                "--release",
                "-p",
                "guest-rt",
                "-p",
                "secure-os",
                "-p",
                "probe-guest",
                "--target",
                TARGET_EL1,
            ])
            .args(["--", "-D", "warnings"]),
    )?;
    let kotlinc = android_tools::ensure(&target_dir())?;
    step("host tests: cargo test --workspace");
    run_cmd(
        cargo()
            .args(["test", "--workspace"])
            .env("MVMM_KOTLINC", kotlinc)
            .env(android_tools::REQUIRE_VAR, "1"),
    )?;
    step("fuzz corpora and regressions replayed through the targets' checks (stable)");
    fuzz::replay().map_err(|e| e.to_string())?;
    step(&format!(
        "the trusted base builds for {TARGET_EL1}: {}",
        NO_STD_CRATES.join(", ")
    ));
    let mut cmd = cargo();
    cmd.args(["build", "--target", TARGET_EL1]);
    for krate in NO_STD_CRATES {
        cmd.args(["-p", krate]);
    }
    run_cmd(&mut cmd)?;
    check_bad_boards()?;
    if host_only {
        eprintln!(
            "\nhost tests passed in {:.0} s (QEMU tests skipped)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Busy loops that keep the host's CPUs loaded while they live.
pub(crate) struct Load(Vec<std::process::Child>);

impl Load {
    fn start() -> Result<Load> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let children = (0..cpus)
            .map(|_| {
                Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .map_err(|e| format!("cannot start a busy loop: {e}"))
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        eprintln!("stress: {cpus} busy loop(s) keep the host's CPUs loaded");
        Ok(Load(children))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The QEMU system tests, `args.repeat` times, under load with `--stress`.
pub(crate) fn qemu_tests(args: &TestArgs) -> Result {
    ensure_packages()?;
    let images = build(&args.board)?;
    let dir = images.dir();
    let _load = if args.stress {
        Some(Load::start()?)
    } else {
        None
    };
    for round in 1..=args.repeat {
        step(&format!(
            "QEMU system tests{}{}",
            if args.repeat > 1 {
                format!(", round {round} of {}", args.repeat)
            } else {
                String::new()
            },
            if args.stress { ", host loaded" } else { "" }
        ));
        let mut cmd = cargo();
        cmd.args(["test", "-p", "mvmm-tests"]);
        for suite in QEMU_SUITES {
            cmd.args(["--test", suite]);
        }
        cmd.args(["--", "--ignored", "--test-threads=1"]);
        if let Some(filter) = &args.filter {
            cmd.arg(filter);
        }
        if args.long {
            cmd.env("MVMM_POWER_CUTS", "100");
        }
        run_cmd(
            cmd.env(IMAGE_DIR_VAR, &dir)
                .env(mvmm_tests::BOARD_VAR, &args.board),
        )
        .map_err(|e| format!("QEMU tests, round {round}: {e}"))?;
    }
    Ok(())
}

/// The QEMU test files of tests/tests (each test boots its own machine).
pub(crate) const QEMU_SUITES: &[&str] = &[
    "system", "linux", "payment", "console", "android", "boot", "display", "storage", "dma",
    "network", "attack",
];

/// Each broken board file must stop mvmm's build with a message naming the
/// offending entry.
pub(crate) fn check_bad_boards() -> Result {
    step("bad board files fail the mvmm build with a message naming the entry");
    // The cases edit the reference board's text: they test the validator,
    // not a board.
    let good = fs::read_to_string(mvmm_tests::board_file(mvmm_tests::DEFAULT_BOARD))
        .map_err(|e| e.to_string())?;
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "overlapping RAM",
            "ram = [{ base = 0x4100_0000, size = 0x0200_0000 }]\nentry = 0x4100_0000",
            "ram = [{ base = 0x5000_0000, size = 0x0200_0000 }]\nentry = 0x5000_0000",
            "vm 'secure' ram[0] 0x50000000..0x52000000 overlaps vm 'rich' ram[0]",
        ),
        (
            "PCIe host bridge in the secure VM",
            "devices = [\"flash1\"]",
            "devices = [\"flash1\", \"pcie0\"]",
            "vm 'secure' is a secure VM and must not own PCIe host bridge 'pcie0'",
        ),
        (
            "a PCIe bus whose DMA no SMMU confines",
            ", smmu_streams = { first = 0, count = 0x100 }",
            "",
            "vm 'rich' must not own device 'pcie0': it does DMA that no IOMMU of the board confines",
        ),
        (
            "the SMMU in a page a VM owns",
            "smmu = { base = 0x0905_0000",
            "smmu = { base = 0x0901_0000",
            "board smmu 0x9010000..0x9030000 must be page aligned, outside RAM",
        ),
        (
            "a device given to two VMs",
            "devices = [\"flash1\"]",
            "devices = [\"flash1\", \"rtc\"]",
            "device 'rtc' is given to two VMs: 'rich' and 'secure'",
        ),
        (
            "secure storage given to the rich VM",
            "devices = [\"rtc\", \"pcie0\"]",
            "devices = [\"rtc\", \"pcie0\", \"flash1\"]",
            "vm 'rich' is not a secure VM and must not own secure-storage device 'flash1'",
        ),
        (
            "a CPU given twice",
            "cpus = [2]",
            "cpus = [1]",
            "cpu 1 is given twice: to vm 'rich' and to vm 'secure'",
        ),
        (
            "fw_cfg in a page a VM owns",
            "fw_cfg = { base = 0x0902_0000",
            "fw_cfg = { base = 0x0901_0000",
            "board display: fw_cfg must lie outside RAM and every device",
        ),
        (
            "the secure framebuffer in the rich VM",
            "secure_framebuffer = 0x42e0_0000",
            "secure_framebuffer = 0x7e00_0000",
            "board display: the secure framebuffer must lie in the secure VM's RAM",
        ),
    ];
    let dir = target_dir().join("board-check");
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for (name, from, to, expected) in cases {
        if !good.contains(from) {
            return Err(format!(
                "board-check case '{name}': the board file no longer contains {from:?}"
            )
            .into());
        }
        let path = dir.join(format!("{}.toml", name.replace(' ', "-")));
        fs::write(&path, good.replacen(from, to, 1)).map_err(|e| e.to_string())?;
        // A separate target dir keeps the real build's fingerprints intact;
        // the build script needs only the host, so no cross compile runs.
        let out = cargo()
            .args(["check", "-p", "mvmm", "--target-dir"])
            .arg(dir.join("target"))
            .env("MVMM_BOARD_FILE", &path)
            .output()
            .map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(expected) {
            return Err(format!(
                "board-check case '{name}': expected the build to fail with {expected:?}; got:\n{stderr}"
            ).into());
        }
        eprintln!("  {name}: refused: {expected}");
    }
    Ok(())
}
