//! `cargo xtask`: build, boot and test mVMM with one command each.
//!
//! It installs what the project needs on a Debian machine (QEMU, the rustup
//! targets) and says what is missing elsewhere.

mod android_tools;
mod bench;
mod bench_micro;
mod bench_nic;
mod fuzz;
mod sim;

use clap::{Parser, Subcommand};
use mvmm_tests::{
    Console, IMAGE_DIR_VAR, Images, Machine, RICH_CMDLINE, RICH_INITRAMFS, RICH_KERNEL,
    RICH_TOOLS_DIR, RichSource, boot_image, load_board, prepare_rich_boot, provision, qemu_command,
    repo_root, rich,
};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;
use std::{env, fs};

/// Cross targets, as in rust-toolchain.toml.
const TARGET_EL2: &str = "aarch64-unknown-none-softfloat";
const TARGET_EL1: &str = "aarch64-unknown-none";
const TARGET_LINUX: &str = "aarch64-unknown-linux-musl";
/// Crates of the trusted base that must build for the secure VM.
const NO_STD_CRATES: &[&str] = &["protocol", "payment-app", "trusted-ui", "mvmm-core"];
/// Debian packages that provide the commands the project runs.
const APT_PACKAGES: &[(&str, &str)] = &[("qemu-system-aarch64", "qemu-system-arm")];

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, boot and test mVMM",
    long_about = "Build, boot and test mVMM.\n\nImages go to target/images/<board>/. On Debian as root, \
missing packages (qemu-system-arm) and rustup targets are installed automatically."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build mvmm and the guest images for a board.
    Build {
        /// Board directory under boards/.
        #[arg(long, default_value = mvmm_tests::DEFAULT_BOARD)]
        board: String,
    },
    /// Build, then boot the board in QEMU: Linux with a busybox shell in
    /// the rich VM, secure-os in the secure VM (quit with Ctrl-A then X).
    Run(RunArgs),
    /// The mission in one command: boot everything headless, enroll a
    /// credential and request a payment from the rich VM with mvmm-pay,
    /// answer the trusted prompt on the touch screen (QEMU's virtio tablet,
    /// driven over QMP: a 1 s press-and-hold on Approve, or a tap on
    /// Decline); the rich VM sends the token over its NIC to the payment
    /// backend (mvmm-verify serve, on the host's loopback), which accepts it
    /// once and refuses its replay; the token is also checked on the host
    /// with mvmm-verify. The screens are saved under target/demo/.
    Demo {
        /// The answer: y (hold Approve) or n (tap Decline).
        #[arg(long, default_value = "y", value_parser = ["y", "n"])]
        answer: String,
        /// Board directory under boards/.
        #[arg(long, default_value = mvmm_tests::DEFAULT_BOARD)]
        board: String,
    },
    /// Measure mvmm against baselines taken in the same run (Linux boot and a
    /// CPU-bound workload vs bare QEMU; VMM-channel round trip vs AF_UNIX,
    /// throughput, payment latency), in wall time and deterministic -icount
    /// guest time; writes target/bench/results.json.
    Bench {
        /// Board directory under boards/.
        #[arg(long, default_value = mvmm_tests::DEFAULT_BOARD)]
        board: String,
    },
    /// Run the secure side (payment app, trusted UI, session) in the host
    /// simulator and `mvmm-pay` against it: the payment flow in seconds,
    /// without QEMU. Trusted screens are saved as PNGs under target/sim/.
    Sim {
        /// Answer the trusted prompt automatically: approve | decline |
        /// pin:DIGITS (default: answer on this terminal).
        #[arg(long)]
        auto: Option<String>,
        /// mvmm-pay arguments, after `--` (e.g. -- request --amount 12.50
        /// --currency EUR --merchant "Corner Cafe" --json).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every test: rustfmt and clippy, host unit tests, the no_std
    /// cross-build check, the board-validation check, and the QEMU system
    /// tests (mvmm with its probe guest, Linux in the rich VM, payments end
    /// to end).
    Test(TestArgs),
    /// Fuzz the trust boundaries (installs nightly and cargo-fuzz when
    /// missing): each target of fuzz/ for N minutes, then execs, coverage
    /// and corpus size per target; fails with the input of any crash.
    Fuzz(fuzz::FuzzArgs),
}

#[derive(clap::Args)]
struct TestArgs {
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

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, default_value = mvmm_tests::DEFAULT_BOARD)]
    board: String,
    /// No window: the console is this terminal (the default when there is
    /// no display).
    #[arg(long)]
    headless: bool,
    /// Run CMD as root in the rich VM's shell, print its output, power off
    /// and exit with CMD's exit status.
    #[arg(long, value_name = "CMD")]
    rich_cmd: Option<String>,
    /// Seconds to wait for --rich-cmd before giving up.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
    /// Boot this arm64 kernel Image in the rich VM instead of Debian's.
    #[arg(long, value_name = "PATH")]
    rich_kernel: Option<PathBuf>,
    /// Boot this initramfs in the rich VM instead of the busybox one.
    #[arg(long, value_name = "PATH")]
    rich_initrd: Option<PathBuf>,
    /// The rich VM's kernel command line.
    #[arg(long, value_name = "STR", default_value = RICH_CMDLINE)]
    rich_cmdline: String,
    /// Show debug lines on the console too (the secure VM's heartbeat and
    /// channel statistics).
    #[arg(long, short)]
    verbose: bool,
    /// Boot this Android boot image (boot.img, header v0 to v4) in the rich
    /// VM: kernel, ramdisk and command line come from the image.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["rich_kernel", "rich_initrd", "rich_probe"])]
    rich_bootimg: Option<PathBuf>,
    /// The vendor_boot.img that goes with a header v3/v4 --rich-bootimg.
    #[arg(long, value_name = "PATH", requires = "rich_bootimg")]
    rich_vendor_boot: Option<PathBuf>,
    /// Boot the small probe test guest in the rich VM instead of Linux.
    #[arg(long, conflicts_with_all = ["rich_kernel", "rich_initrd", "rich_cmd"])]
    rich_probe: bool,
    /// Run the payment backend (mvmm-verify serve) on the host's loopback
    /// at PORT (a free one when no PORT is given) while the machine runs,
    /// with the device key pinned; the rich VM reaches it at
    /// http://10.0.2.2:PORT, and --rich-cmd gets MVMM_BACKEND set to that
    /// URL (so `mvmm-pay request` sends its token there).
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "0")]
    backend: Option<u16>,
}

/// Why an xtask command did not succeed.
#[derive(Debug)]
enum Error {
    /// A step failed: the message says which and why.
    Failed(String),
    /// `run --rich-cmd`: the command ran in the rich VM and exited with this
    /// status, which xtask exits with (not a failure of xtask itself).
    RichCommand(u8),
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::Failed(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::Failed(message.to_string())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Failed(message) => f.write_str(message),
            Error::RichCommand(status) => {
                write!(f, "the rich VM's command exited with status {status}")
            }
        }
    }
}

type Result<T = ()> = std::result::Result<T, Error>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build { board } => build(&board).map(|images| print_images(&images)),
        Cmd::Run(args) => run(&args),
        Cmd::Test(args) => test(&args),
        Cmd::Sim { auto, args } => sim::sim(auto.as_deref(), &args).map_err(Error::from),
        Cmd::Bench { board } => run_bench(&board),
        Cmd::Demo { answer, board } => demo(&board, &answer),
        Cmd::Fuzz(args) => fuzz::fuzz(&args).map_err(|e| Error::Failed(e.to_string())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::RichCommand(status)) => {
            eprintln!("xtask: {e}");
            ExitCode::from(status)
        }
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

/// Runs a command, failing with its name and status.
fn run_cmd(cmd: &mut Command) -> Result {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})").into())
    }
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo_root());
    cmd
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from)
}

/// Makes sure the cross targets are installed (rustup does not add the
/// targets of rust-toolchain.toml by itself when auto-install is off).
fn ensure_targets() -> Result {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("rustup is needed to add the cross targets: {e}"))?;
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = [TARGET_EL2, TARGET_EL1, TARGET_LINUX]
        .into_iter()
        .filter(|t| !installed.lines().any(|l| l == *t))
        .collect();
    let components = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("rustup component list: {e}"))?;
    let components = String::from_utf8_lossy(&components.stdout);
    let lacking: Vec<&str> = ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| !components.lines().any(|l| l.starts_with(c)))
        .collect();
    if !lacking.is_empty() {
        step(&format!(
            "installing rustup components {}",
            lacking.join(" ")
        ));
        run_cmd(
            Command::new("rustup")
                .args(["component", "add"])
                .args(&lacking)
                .current_dir(repo_root()),
        )?;
    }
    if !missing.is_empty() {
        step(&format!("installing rustup targets {}", missing.join(" ")));
        run_cmd(
            Command::new("rustup")
                .args(["target", "add"])
                .args(&missing)
                .current_dir(repo_root()),
        )?;
    }
    Ok(())
}

fn have(command: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

/// Installs missing Debian packages when this is Debian and we are root;
/// otherwise stops with a message naming them.
fn ensure_packages() -> Result {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let debian = Path::new("/etc/debian_version").exists();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !(debian && root) {
        return Err(format!(
            "missing packages: {}. Install them (on Debian: `sudo apt-get install {}`) and retry.",
            missing.join(", "),
            missing.join(" ")
        )
        .into());
    }
    step(&format!("installing {} with apt-get", missing.join(" ")));
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )
}

/// Builds mvmm and the guests; returns the image set for QEMU.
fn build(board: &str) -> Result<Images> {
    ensure_targets()?;
    let started = Instant::now();
    step(&format!(
        "building guests (secure-os, probe-guest) for {TARGET_EL1}"
    ));
    run_cmd(
        cargo()
            .args([
                "build",
                "--release",
                "--target",
                TARGET_EL1,
                "-p",
                "secure-os",
                "-p",
                "probe-guest",
            ])
            .env("MVMM_BOARD", board),
    )?;
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
    copy(TARGET_EL1, "secure-os")?;
    copy(TARGET_EL1, "probe-guest")?;
    step("rich VM image: Debian's arm64 kernel and a busybox initramfs");
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
    let (file, _) = load_board(board)?;
    let secure = file
        .vms
        .iter()
        .find(|v| v.kind == "secure")
        .ok_or("the board has no secure VM")?;
    let security_version = secure_os_security_version()?;
    step(&format!(
        "signing secure-os (security version {security_version}) with the development boot authority"
    ));
    boot_image::sign_secure_os(
        &dir,
        &dir.join("secure-os"),
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
const EXPECTED_MEASUREMENTS: &str = "expected-measurements.json";

/// secure-os's security version: `[package.metadata.mvmm] security-version`
/// in secure-os/Cargo.toml (raise it with a fix that older images must not
/// be allowed to roll back).
fn secure_os_security_version() -> Result<u32> {
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

fn print_images(images: &Images) {
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

fn demo(board: &str, answer: &str) -> Result {
    use mvmm_tests::payment;
    ensure_packages()?;
    let images = build(board)?;
    let dir = images
        .mvmm
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (file, qemu) = load_board(board)?;
    let out = target_dir().join("demo");
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    // The payment backend (mvmm-verify serve) runs here, on the host's
    // loopback; the rich VM reaches it over its NIC at 10.0.2.2 (QEMU's user
    // networking). The operator pins the device key from the provisioning
    // record; the rich VM enrolls the card, takes the backend's nonce and
    // sends it the token.
    let backend = payment::Backend::start()?;
    let device_id = backend.pin_device(&provision(&dir, &file)?.device_key)?;
    // A card the secure VM kept from an earlier demo: the backend (whose
    // state lives in memory) learns it again from the record saved then.
    let enrollment_file = out.join("enrollment.json");
    if let Ok(text) = fs::read_to_string(&enrollment_file) {
        let saved: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: {e}", enrollment_file.display()))?;
        if let Err(e) = backend.enroll(&device_id, &saved) {
            eprintln!(
                "xtask: demo: the card saved in {} is not enrolled again: {e}",
                enrollment_file.display()
            );
        }
    }
    let url = backend.url_from_guest();
    println!(
        "demo: the payment backend listens on {} (from the rich VM: {url})",
        backend.url()
    );
    let rich = prepare_rich_boot(
        &file,
        &qemu,
        &dir,
        &RichSource::built(&dir),
        Some(&demo_script(&url)),
        &dir.join("work").join("demo"),
    )?;
    step(
        "demo: booting mvmm, secure-os and Linux; mvmm-pay will enroll a card at the backend (unless the secure VM's storage already holds one), ask to pay 12.50 EUR to Corner Cafe and send the token to the backend over the rich VM's network",
    );
    let mut cmd = qemu_command(
        &file,
        &qemu,
        &Images::with_rich_linux(&dir, &rich).with_storage(persistent_storage(&dir)),
        Console::Piped,
    );
    // A QMP socket, to save the screens the demo goes through.
    let socket = mvmm_tests::qmp::socket_in(&dir.join("work").join("demo"));
    let _ = fs::remove_file(&socket);
    cmd.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()));
    let mut m = Machine::start(cmd);
    let limit = std::time::Duration::from_secs(300);
    let mut qmp = mvmm_tests::qmp::Qmp::connect(&socket, std::time::Duration::from_secs(30))?;
    let mut screens = Vec::new();
    let mut save = |qmp: &mut mvmm_tests::qmp::Qmp, name: &str| {
        let path = out.join(name);
        match qmp.screendump(&path) {
            Ok(_) => screens.push(path),
            Err(e) => eprintln!("xtask: demo: no screenshot {name}: {e}"),
        }
    };
    m.expect("[rich] mvmm-rich: ready", limit)
        .map_err(|e| format!("demo: {e}"))?;
    save(&mut qmp, "1-rich.png");
    m.expect("secure-os: approval screen on the display", limit)
        .map_err(|e| format!("demo: {e}"))?;
    save(&mut qmp, "2-approval.png");
    // The user reads the screen, then answers on the touch screen.
    std::thread::sleep(payment::READ_TIME);
    let size = file
        .board
        .display
        .map_or((800, 480), |d| (d.width, d.height));
    let button = if answer == "y" {
        trusted_ui::Button::Approve
    } else {
        trusted_ui::Button::Decline
    };
    let at = payment::button_centre(size, button);
    qmp.touch(at, size, true)?;
    if answer == "y" {
        std::thread::sleep(std::time::Duration::from_millis(
            trusted_ui::guard::HOLD_MS / 2,
        ));
        save(&mut qmp, "2b-holding-approve.png");
        std::thread::sleep(std::time::Duration::from_millis(
            trusted_ui::guard::HOLD_MS / 2 + 300,
        ));
    } else {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The lift (the approval already happened at the end of the hold).
    if let Err(e) = qmp.touch(at, size, false) {
        eprintln!("xtask: demo: lifting the finger: {e}");
    }
    eprintln!(
        "\nxtask: {} on the touch screen\n",
        if answer == "y" {
            "held Approve for a second"
        } else {
            "tapped Decline"
        }
    );
    m.expect(
        "[mvmm] display: scan-out shows the rich VM's framebuffer",
        limit,
    )
    .map_err(|e| format!("demo: {e}"))?;
    save(&mut qmp, "3-rich-again.png");
    m.expect("[rich] mvmm-rich: exit status", limit)
        .map_err(|e| format!("demo: {e}"))?;
    m.wait_exit(std::time::Duration::from_secs(60));
    let transcript = m.transcript();
    let json = payment::json_lines(&transcript);
    // The record of the card: from this run's enrollment, or the one an
    // earlier demo saved (the secure VM's storage kept the card).
    let enrolled = json.iter().find(|j| j.get("signature").is_some()).cloned();
    let enroll = match enrolled {
        Some(enroll) => {
            fs::write(&enrollment_file, enroll.to_string()).map_err(|e| e.to_string())?;
            enroll
        }
        None => {
            let text = fs::read_to_string(&enrollment_file).map_err(|e| {
                format!(
                    "demo: the secure VM kept a card but {} is missing ({e}): delete target/images/qemu-virt/secure-storage.* to start over",
                    enrollment_file.display()
                )
            })?;
            println!("demo: the card enrolled by an earlier run pays (no enrollment this time)");
            serde_json::from_str(&text)
                .map_err(|e| format!("{}: {e}", enrollment_file.display()))?
        }
    };
    let enroll = &enroll;
    let Some(request) = json.iter().find(|j| j.get("token").is_some()) else {
        return Err(format!("demo: mvmm-pay printed no authorization: {:?}", json.last()).into());
    };
    let token = request
        .get("token")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    if request.get("credential") != enroll.get("credential") {
        return Err(format!(
            "demo: the payment used credential {:?}, not the enrolled {:?}",
            request.get("credential"),
            enroll.get("credential")
        )
        .into());
    }
    for path in &screens {
        println!("screen saved: {}", path.display());
    }
    step("demo: the payment backend verifies the token (mvmm-verify)");
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (key_file, token_file) = (out.join("credential.pub"), out.join("token.b64"));
    fs::write(&key_file, text(enroll, "public_key")).map_err(|e| e.to_string())?;
    fs::write(&token_file, token).map_err(|e| e.to_string())?;
    println!("authorization (COSE_Sign1, base64): {token}");
    run_cmd(cargo().args(["build", "--quiet", "-p", "mvmm-verify"]))?;
    let verify = target_dir().join("debug").join("mvmm-verify");
    let mut cmd = Command::new(&verify);
    cmd.arg("--key")
        .arg(&key_file)
        .arg("--token")
        .arg(&token_file);
    cmd.args([
        "--nonce",
        &text(request, "nonce"),
        "--amount",
        &payment::AMOUNT_MINOR.to_string(),
    ]);
    cmd.args([
        "--currency",
        payment::CURRENCY,
        "--merchant",
        payment::MERCHANT,
    ]);
    cmd.args(["--credential", &text(request, "credential")]);
    println!(
        "$ mvmm-verify --key {} --token {} ...",
        key_file.display(),
        token_file.display()
    );
    run_cmd(&mut cmd).map_err(|e| format!("demo: mvmm-verify rejected the token: {e}"))?;
    step("demo: the backend's verdicts, as the rich VM received them over its NIC");
    let verdict = |line: &serde_json::Value| {
        format!("{} {}", line["backend"]["status"], line["backend"]["body"])
    };
    if let Some(enrolled) = json
        .iter()
        .find(|j| j.get("signature").is_some() && j.get("backend").is_some())
    {
        println!(
            "rich VM: POST {url}/v1/credentials -> {}",
            verdict(enrolled)
        );
    }
    println!(
        "rich VM: POST {url}/v1/tokens/verify -> {}",
        verdict(request)
    );
    let Some(replay) = json.iter().find(|j| {
        j.get("backend").is_some() && j.get("token").is_none() && j.get("signature").is_none()
    }) else {
        return Err("demo: the rich VM did not send the token again".into());
    };
    println!(
        "rich VM: POST {url}/v1/tokens/verify (the same token again) -> {}",
        verdict(replay)
    );
    if request["backend"]["status"] != 200 || request["backend"]["body"]["valid"] != true {
        return Err(format!("demo: the backend refused the token: {}", verdict(request)).into());
    }
    if replay["backend"]["body"]["error"] != "replay" {
        return Err(format!(
            "demo: the backend did not refuse the replay: {}",
            verdict(replay)
        )
        .into());
    }
    if mvmm_verify::python_example::python3_available() {
        step("demo: Python's pycose verifies the same token (verifier/examples/python)");
        let python =
            mvmm_verify::python_example::venv(&target_dir().join("tmp").join("pycose-venv"))?;
        let (code, checked) = mvmm_verify::python_example::verify(&python, &key_file, &token_file)?;
        println!("{checked}");
        if code != 0 {
            return Err(format!("demo: the Python example refused the token ({code})").into());
        }
    }
    println!("demo: verified");
    Ok(())
}

fn run_bench(board: &str) -> Result {
    ensure_packages()?;
    let images = build(board)?;
    let dir = images
        .mvmm
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    step(
        "benchmarks: Linux boot and a workload on bare QEMU and under mvmm, then the VMM channel; wall and -icount",
    );
    let entries = bench::bench(board, &dir)?;
    bench::report(&entries, &target_dir().join("bench").join("results.json"))
        .map_err(|e| e.to_string().into())
}

/// The developer's flash image of `dir`: what the secure VM stores in
/// `run` and `demo` is there at the next run.
fn persistent_storage(dir: &Path) -> mvmm_tests::StorageImage {
    mvmm_tests::StorageImage::Persistent(dir.join(mvmm_tests::STORAGE_IMAGE))
}

/// The demo's rich-VM command: enroll a card unless the secure VM already
/// holds one, then pay with the backend's nonce.
fn demo_script(url: &str) -> String {
    use mvmm_tests::payment::{LABEL, network_script};
    format!(
        "if mvmm-pay list --json | grep -q '\"public_key\"'; then \
             echo 'demo: the secure VM already holds a card'; \
         else mvmm-pay --backend {url} enroll --label '{LABEL}' --json; fi; {}",
        network_script(url, false, "sleep 2")
    )
}

/// `xtask run --backend`: the payment backend on the host's loopback at
/// `port` (0: any free one), the device key pinned, its URL printed.
fn run_backend(
    dir: &Path,
    file: &mvmm_core::config::BoardFile,
    port: u16,
) -> Result<mvmm_tests::payment::Backend> {
    let backend = mvmm_tests::payment::Backend::listen(&format!("127.0.0.1:{port}"))?;
    let device_id = backend.pin_device(&provision(dir, file)?.device_key)?;
    println!(
        "backend: mvmm-verify serve on {}, device key pinned (device id {device_id})\n\
         backend: from the rich VM: {} (e.g. wget -q -O- {}/health; mvmm-pay --backend {} ...)",
        backend.url(),
        backend.url_from_guest(),
        backend.url_from_guest(),
        backend.url_from_guest(),
    );
    Ok(backend)
}

fn run(args: &RunArgs) -> Result {
    ensure_packages()?;
    let probe_images = build(&args.board)?;
    let dir = probe_images
        .mvmm
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (file, qemu) = load_board(&args.board)?;
    // The backend serves for as long as this function runs.
    let backend = match args.backend {
        Some(port) => Some(run_backend(&dir, &file, port)?),
        None => None,
    };
    let rich_cmd = match (&backend, &args.rich_cmd) {
        (Some(backend), Some(cmd)) => Some(format!(
            "export MVMM_BACKEND={}; {cmd}",
            backend.url_from_guest()
        )),
        (_, cmd) => cmd.clone(),
    };
    let images = if args.rich_probe {
        probe_images
    } else if let Some(boot) = &args.rich_bootimg {
        let vendor = args.rich_vendor_boot.as_deref();
        let (rich, unpacked) = mvmm_tests::android_boot::prepare_bootimg_boot(
            &file,
            &qemu,
            &dir,
            (boot, vendor),
            rich_cmd.as_deref(),
            "run",
        )?;
        eprintln!(
            "{}: header v{}, cmdline {:?}",
            boot.display(),
            unpacked.header_version,
            unpacked.cmdline
        );
        Images::with_rich_linux(&dir, &rich)
    } else {
        let built = RichSource::built(&dir);
        let source = RichSource {
            kernel: args.rich_kernel.clone().unwrap_or(built.kernel),
            initrd: args.rich_initrd.clone().unwrap_or(built.initrd),
            cmdline: args.rich_cmdline.clone(),
        };
        let rich = prepare_rich_boot(
            &file,
            &qemu,
            &dir,
            &source,
            rich_cmd.as_deref(),
            &dir.join("work").join("run"),
        )?;
        Images::with_rich_linux(&dir, &rich)
    };
    let images = images.with_storage(persistent_storage(&dir));
    print_images(&images);
    if let Some(cmd) = &args.rich_cmd {
        let mut machine = Machine::start(qemu_command(&file, &qemu, &images, Console::Piped));
        eprintln!(
            "xtask: running {cmd:?} in the rich VM (timeout {} s)",
            args.timeout
        );
        let exited = machine.wait_exit(std::time::Duration::from_secs(args.timeout));
        let transcript = machine.transcript();
        return match (exited, rich::parse_exit_status(&transcript)) {
            (None, _) => Err(format!(
                "the rich VM did not finish {cmd:?} within {} s",
                args.timeout
            )
            .into()),
            (Some(_), Some(0)) => Ok(()),
            (Some(_), Some(status)) => Err(Error::RichCommand(u8::try_from(status).unwrap_or(1))),
            (Some(qemu_status), None) => Err(format!(
                "QEMU exited ({qemu_status}) before the rich VM reported the command's exit status"
            )
            .into()),
        };
    }
    let has_display = env::var_os("DISPLAY").is_some() || env::var_os("WAYLAND_DISPLAY").is_some();
    if !args.headless && !has_display {
        eprintln!("no display found: running headless");
    }
    // There is no graphical output yet: the console is the interface, so
    // both modes attach it to this terminal.
    let mut cmd = qemu_command(
        &file,
        &qemu,
        &images,
        Console::Terminal {
            verbose: args.verbose,
        },
    );
    println!(
        "console: this terminal. Lines start with [mvmm], [rich] or [secure]; typing goes to the rich VM."
    );
    println!("quit: press Ctrl-A, then X (or `poweroff -f` in the rich VM's shell).");
    println!("$ {cmd:?}");
    run_cmd(&mut cmd)
}

fn test(args: &TestArgs) -> Result {
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
fn host_checks(host_only: bool, started: Instant) -> Result {
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
struct Load(Vec<std::process::Child>);

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
fn qemu_tests(args: &TestArgs) -> Result {
    ensure_packages()?;
    let images = build(&args.board)?;
    let dir = images
        .mvmm
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
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
const QEMU_SUITES: &[&str] = &[
    "system", "linux", "payment", "console", "android", "boot", "display", "storage", "dma",
    "network", "attack",
];

/// Each broken board file must stop mvmm's build with a message naming the
/// offending entry.
fn check_bad_boards() -> Result {
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
