//! `cargo xtask fuzz`: installs what fuzzing needs (the nightly toolchain,
//! a pinned cargo-fuzz), builds the targets of fuzz/ and runs each for a
//! while, then reports executions, coverage and corpus size per target.
//! A crash fails the command with the path of the input that crashed.
//! See docs/fuzzing.md.
//!
//! It also holds the stable half: [`replay`] runs every saved input of
//! fuzz/corpus and fuzz/regressions through the targets' checks on the
//! project's own toolchain (part of `cargo xtask test`).

use mvmm_tests::repo_root;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The cargo-fuzz release `cargo xtask fuzz` installs and expects.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The toolchain cargo-fuzz needs (sanitizer flags are nightly-only).
const NIGHTLY: &str = "nightly";

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Minutes to fuzz each target.
    #[arg(long, default_value_t = 1.0, value_name = "N")]
    minutes: f64,
    /// Only this target (see fuzz/Cargo.toml; default: every target).
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
}

/// Why fuzzing did not run, or what it found.
#[derive(Debug)]
pub enum FuzzError {
    /// A command could not be started at all.
    Spawn {
        command: String,
        error: std::io::Error,
    },
    /// A setup or build command failed.
    Failed { command: String, status: ExitStatus },
    /// `--target` names no target of fuzz/.
    UnknownTarget { name: String, known: Vec<String> },
    /// `--minutes` is not a positive number.
    BadDuration(f64),
    /// A target crashed (or broke an invariant): the input is saved here.
    Crash { target: String, input: PathBuf },
    /// The fuzzer stopped with an error and saved no input.
    FuzzerFailed {
        target: String,
        status: ExitStatus,
        last: String,
    },
}

impl fmt::Display for FuzzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FuzzError::Spawn { command, error } => write!(f, "cannot run {command}: {error}"),
            FuzzError::Failed { command, status } => write!(f, "{command} failed ({status})"),
            FuzzError::UnknownTarget { name, known } => {
                write!(f, "no fuzz target '{name}' (targets: {})", known.join(", "))
            }
            FuzzError::BadDuration(m) => write!(f, "--minutes {m}: give a positive number"),
            FuzzError::Crash { target, input } => write!(
                f,
                "fuzz target '{target}' crashed; input saved at {} (replay: cd fuzz && cargo +nightly fuzz run {target} {}; then copy it to fuzz/regressions/{target}/)",
                input.display(),
                input.display()
            ),
            FuzzError::FuzzerFailed {
                target,
                status,
                last,
            } => write!(f, "fuzz target '{target}' stopped ({status}): {last}"),
        }
    }
}

impl std::error::Error for FuzzError {}

/// What one target's run did, from libFuzzer's status lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub execs: u64,
    pub exec_per_sec: u64,
    pub cov: u64,
    pub ft: u64,
    pub corpus: u64,
}

impl Stats {
    /// Updates from one line of libFuzzer's output (`#N ... cov: C ft: F
    /// corp: K/S ... exec/s: E` and the final `stat::` lines).
    fn update(&mut self, line: &str) {
        let field = |key: &str| -> Option<u64> {
            let rest = line.split(key).nth(1)?;
            let word = rest.split_whitespace().next()?;
            word.split('/').next()?.parse().ok()
        };
        if let Some(n) = line
            .strip_prefix('#')
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
        {
            self.execs = n;
        }
        if let Some(v) = field("cov: ") {
            self.cov = v;
        }
        if let Some(v) = field("ft: ") {
            self.ft = v;
        }
        if let Some(v) = field("corp: ") {
            self.corpus = v;
        }
        if let Some(v) = field("exec/s: ") {
            self.exec_per_sec = v;
        }
        if let Some(v) = field("stat::number_of_executed_units: ") {
            self.execs = v;
        }
        if let Some(v) = field("stat::average_exec_per_sec: ") {
            self.exec_per_sec = v;
        }
    }
}

fn fuzz_dir() -> PathBuf {
    repo_root().join("fuzz")
}

fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

fn run(cmd: &mut Command) -> Result<(), FuzzError> {
    let command = describe(cmd);
    let status = cmd.status().map_err(|error| FuzzError::Spawn {
        command: command.clone(),
        error,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(FuzzError::Failed { command, status })
    }
}

fn output(cmd: &mut Command) -> Result<String, FuzzError> {
    let command = describe(cmd);
    let out = cmd.output().map_err(|error| FuzzError::Spawn {
        command: command.clone(),
        error,
    })?;
    if !out.status.success() {
        return Err(FuzzError::Failed {
            command,
            status: out.status,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo` through rustup's proxy, for `+nightly`: not the toolchain's own
/// cargo that `cargo xtask` runs under, and without the variables that pin
/// the project's toolchain.
fn rustup_cargo(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTFLAGS");
    cmd
}

/// Installs the nightly toolchain and cargo-fuzz when missing.
fn ensure_tools() -> Result<(), FuzzError> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if toolchains.lines().any(|l| l.starts_with(NIGHTLY)) {
        eprintln!("fuzz: the {NIGHTLY} toolchain is installed");
    } else {
        eprintln!("fuzz: installing the {NIGHTLY} toolchain (rustup, minimal profile)...");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
        ]))?;
    }
    let have = rustup_cargo(&repo_root())
        .args(["fuzz", "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match have {
        Some(v) if v.ends_with(CARGO_FUZZ_VERSION) => eprintln!("fuzz: {v} is installed"),
        other => {
            eprintln!(
                "fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (found {}); this compiles it, a few minutes...",
                other.as_deref().unwrap_or("none")
            );
            run(rustup_cargo(&std::env::temp_dir()).args([
                "install",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
                "cargo-fuzz",
            ]))?;
        }
    }
    Ok(())
}

/// The targets of fuzz/, as cargo-fuzz lists them.
fn targets() -> Result<Vec<String>, FuzzError> {
    let list = output(rustup_cargo(&fuzz_dir()).args([&format!("+{NIGHTLY}"), "fuzz", "list"]))?;
    Ok(list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Runs one target for `time`, printing its progress; returns its stats.
fn fuzz_one(target: &str, time: Duration) -> Result<Stats, FuzzError> {
    let corpus = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|error| FuzzError::Spawn {
        command: format!("mkdir {}", corpus.display()),
        error,
    })?;
    // The fuzzer itself runs at the lowest priority (nice 19), one process.
    let mut cmd = Command::new("nice");
    cmd.args([
        "-n",
        "19",
        "cargo",
        &format!("+{NIGHTLY}"),
        "fuzz",
        "run",
        target,
    ])
    .arg(&corpus)
    .args([
        "--",
        &format!("-max_total_time={}", time.as_secs().max(1)),
        "-print_final_stats=1",
        "-timeout=10",
    ])
    .current_dir(fuzz_dir())
    .env_remove("RUSTUP_TOOLCHAIN")
    .env_remove("CARGO")
    .env_remove("RUSTC")
    .env_remove("RUSTFLAGS")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let command = describe(&cmd);
    let mut child = cmd.spawn().map_err(|error| FuzzError::Spawn {
        command: command.clone(),
        error,
    })?;
    let mut stats = Stats::default();
    let mut crash: Option<PathBuf> = None;
    let mut last = String::new();
    let mut printed = Instant::now();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            stats.update(&line);
            if let Some(path) = line.split("Test unit written to ").nth(1) {
                crash = Some(fuzz_dir().join(path.trim()));
            }
            if line.contains("ERROR:") || line.contains("panicked at") {
                eprintln!("  {line}");
            }
            if printed.elapsed() >= Duration::from_secs(30) && line.starts_with('#') {
                eprintln!(
                    "  {target}: {} execs, cov {}, ft {}, corpus {}, {} exec/s",
                    stats.execs, stats.cov, stats.ft, stats.corpus, stats.exec_per_sec
                );
                printed = Instant::now();
            }
            if !line.trim().is_empty() {
                last = line;
            }
        }
    }
    let status = child
        .wait()
        .map_err(|error| FuzzError::Spawn { command, error })?;
    if let Some(input) = crash {
        return Err(FuzzError::Crash {
            target: target.to_owned(),
            input,
        });
    }
    if !status.success() {
        return Err(FuzzError::FuzzerFailed {
            target: target.to_owned(),
            status,
            last,
        });
    }
    // The corpus directory holds what this and earlier runs kept.
    stats.corpus = std::fs::read_dir(&corpus).map_or(stats.corpus, |d| d.count() as u64);
    Ok(stats)
}

/// `cargo xtask fuzz`.
pub fn fuzz(args: &FuzzArgs) -> Result<(), FuzzError> {
    if !(args.minutes > 0.0 && args.minutes.is_finite()) {
        return Err(FuzzError::BadDuration(args.minutes));
    }
    let time = Duration::from_secs_f64(args.minutes * 60.0);
    ensure_tools()?;
    let known = targets()?;
    let chosen = match &args.target {
        Some(name) if known.contains(name) => vec![name.clone()],
        Some(name) => {
            return Err(FuzzError::UnknownTarget {
                name: name.clone(),
                known,
            });
        }
        None => known,
    };
    eprintln!("fuzz: building the targets (sanitizer build; the first one takes minutes)...");
    run(rustup_cargo(&fuzz_dir()).args([&format!("+{NIGHTLY}"), "fuzz", "build"]))?;
    let mut results = Vec::new();
    for target in &chosen {
        eprintln!(
            "\nfuzz: {target} for {:.1} minute(s), corpus fuzz/corpus/{target}/",
            args.minutes
        );
        let stats = fuzz_one(target, time)?;
        eprintln!(
            "fuzz: {target}: {} execs ({} exec/s), cov {}, ft {}, corpus {} inputs, no crash",
            stats.execs, stats.exec_per_sec, stats.cov, stats.ft, stats.corpus
        );
        results.push((target, stats));
    }
    eprintln!(
        "\n{:<10} {:>12} {:>8} {:>6} {:>7} {:>7}  crashes",
        "target", "execs", "exec/s", "cov", "ft", "corpus"
    );
    for (target, s) in &results {
        eprintln!(
            "{:<10} {:>12} {:>8} {:>6} {:>7} {:>7}  0",
            target, s.execs, s.exec_per_sec, s.cov, s.ft, s.corpus
        );
    }
    Ok(())
}

/// Replays fuzz/corpus and fuzz/regressions through the checks on the
/// project's stable toolchain, and holds fuzz/ to the same format and lint
/// rules as the workspace (it is a workspace of its own).
pub fn replay() -> Result<(), FuzzError> {
    let manifest = fuzz_dir().join("Cargo.toml");
    let manifest = manifest.to_string_lossy();
    let cargo = || {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(repo_root());
        cmd
    };
    run(cargo().args(["fmt", "--manifest-path", &manifest, "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--manifest-path",
        &manifest,
        "--no-default-features",
        "--tests",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The vsock switch is a large value (its per-VM queues) that a debug
    // build moves through the stack: give the test threads room.
    run(cargo()
        .args([
            "test",
            "--manifest-path",
            &manifest,
            "--no-default-features",
        ])
        .env("RUST_MIN_STACK", "33554432"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_come_from_libfuzzer_lines() {
        let mut s = Stats::default();
        s.update("#14419806\tREDUCE cov: 1410 ft: 2644 corp: 837/45Kb lim: 4096 exec/s: 29609 rss: 539Mb L: 108/1066 MS: 3 EraseBytes-");
        assert_eq!(
            s,
            Stats {
                execs: 14_419_806,
                exec_per_sec: 29609,
                cov: 1410,
                ft: 2644,
                corpus: 837
            }
        );
        s.update("stat::number_of_executed_units: 17500000");
        s.update("stat::average_exec_per_sec:     29166");
        assert_eq!((s.execs, s.exec_per_sec), (17_500_000, 29166));
        // Lines without numbers change nothing.
        s.update("INFO: Seed: 12345");
        assert_eq!(s.cov, 1410);
    }
}
