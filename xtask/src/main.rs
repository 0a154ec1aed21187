//! `cargo xtask`: build, boot and test mVMM with one command each.
//!
//! It installs what the project needs on a Debian machine (QEMU, the rustup
//! targets) and says what is missing elsewhere.

mod android_tools;
mod bench;
mod bench_micro;
mod bench_nic;
mod demo;
mod fuzz;
mod images;
mod run;
mod setup;
mod sim;
mod test;

use demo::*;
use images::*;
use run::*;
use setup::*;
use test::*;

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
        Cmd::Bench { board } => bench::command(&board),
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
