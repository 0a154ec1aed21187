//! `cargo xtask sim`: the payment flow in seconds, without QEMU.
//!
//! Builds `mvmm-sim` (the secure VM's real payment service, app and trusted
//! UI on a Unix socket) and `mvmm-pay` (the rich VM's CLI), starts the
//! simulator on `target/sim/mvmm.sock`, runs `mvmm-pay <args>` against it
//! with the simulator's device key pinned, prints the CLI's output, and
//! stops the simulator. Before a `request` with no credential enrolled it
//! enrolls one. After a successful `request` it saves the token and prints
//! the `mvmm-verify` command a backend would run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::{env, fs, thread};

use mvmm_tests::repo_root;

/// Label of the credential enrolled automatically.
const AUTO_LABEL: &str = "Visa ending 4242";

/// Runs the simulator with `auto` (`approve`, `decline`, `pin:DIGITS`, or
/// `None` to answer on this terminal) and `mvmm-pay <pay_args>` against it.
/// Fails (after printing the CLI's message) when `mvmm-pay` fails.
pub fn sim(auto: Option<&str>, pay_args: &[String]) -> Result<(), String> {
    let root = repo_root();
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    eprintln!("\n==> building mvmm-sim and mvmm-pay");
    let status = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "-p",
            "mvmm-sim",
            "-p",
            "android-bridge",
            "--bins",
        ])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building mvmm-sim and mvmm-pay failed ({status})"));
    }
    let bin = target.join("debug");
    let dir = target.join("sim");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let socket = dir.join("mvmm.sock");

    let mut simulator = Simulator::start(&bin.join("mvmm-sim"), &dir, &socket, auto)?;
    let device_key = dir.join("device.pub");
    let pay = |args: &[String]| -> Command {
        let mut cmd = Command::new(bin.join("mvmm-pay"));
        cmd.arg("--transport")
            .arg(format!("unix:{}", socket.display()))
            .arg("--device-key")
            .arg(&device_key)
            .args(args)
            .stdin(Stdio::null());
        cmd
    };
    let result = (|| {
        if pay_args.first().is_some_and(|a| a == "request") {
            ensure_credential(&pay)?;
        }
        eprintln!("==> mvmm-pay {}", pay_args.join(" "));
        let out = pay(pay_args)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run mvmm-pay: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        if !out.status.success() {
            return Err(format!("mvmm-pay failed ({})", out.status));
        }
        if pay_args.first().is_some_and(|a| a == "request") {
            explain_verification(&dir, &stdout)?;
        }
        eprintln!("device key (pinned by mvmm-pay): {}", device_key.display());
        Ok(())
    })();
    // Let the simulator draw and save its result screen.
    thread::sleep(std::time::Duration::from_millis(300));
    simulator.stop();
    result
}

/// The simulator child process; stopped on drop.
struct Simulator(Child);

impl Simulator {
    fn start(exe: &Path, dir: &Path, socket: &Path, auto: Option<&str>) -> Result<Self, String> {
        let mut cmd = Command::new(exe);
        cmd.arg("--dir").arg(dir).arg("--socket").arg(socket);
        if let Some(answer) = auto {
            cmd.arg("--auto").arg(answer).stdin(Stdio::null());
        } else {
            eprintln!(
                "answer on this terminal: y approves, n declines, digits and Enter for a PIN"
            );
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout from mvmm-sim")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut sim = Simulator(child);
        // The simulator prints its socket when it listens.
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    eprintln!("[sim] {line}");
                    if line.starts_with("listening on") {
                        break;
                    }
                }
                _ => {
                    sim.stop();
                    return Err("mvmm-sim stopped before listening (see its message above)".into());
                }
            }
        }
        thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[sim] {line}");
            }
        });
        Ok(sim)
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ensure_credential(pay: &dyn Fn(&[String]) -> Command) -> Result<(), String> {
    let out = pay(&["list".into(), "--json".into()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run mvmm-pay: {e}"))?;
    if !out.status.success() {
        return Err(format!("mvmm-pay list failed ({})", out.status));
    }
    if !String::from_utf8_lossy(&out.stdout).contains("\"credentials\":[]") {
        return Ok(());
    }
    eprintln!("==> no credential enrolled: mvmm-pay enroll --label \"{AUTO_LABEL}\"");
    let out = pay(&["enroll".into(), "--label".into(), AUTO_LABEL.into()])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run mvmm-pay: {e}"))?;
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("mvmm-pay enroll failed ({})", out.status))
    }
}

/// Saves the token and prints the backend's verification command.
fn explain_verification(dir: &Path, output: &str) -> Result<(), String> {
    let (Some(token), Some(credential), Some(nonce), Some(amount), Some(currency), Some(merchant)) = (
        field(output, "token"),
        field(output, "credential"),
        field(output, "nonce"),
        field(output, "amount_minor"),
        field(output, "currency"),
        field(output, "merchant"),
    ) else {
        return Ok(());
    };
    let token_file = dir.join("token.b64");
    fs::write(&token_file, format!("{token}\n"))
        .map_err(|e| format!("{}: {e}", token_file.display()))?;
    let card_key = dir.join("credentials").join(format!("{credential}.pub"));
    eprintln!(
        "token saved:                        {}",
        token_file.display()
    );
    eprintln!(
        "credential public key (the issuer's): {}",
        card_key.display()
    );
    eprintln!(
        "verify as a backend would:\n  cargo run -q -p mvmm-verify -- --key {} --token {} --nonce {nonce} \
         --amount {amount} --currency {currency} --merchant {merchant:?} --credential {credential}",
        card_key.display(),
        token_file.display(),
    );
    Ok(())
}

/// The value of `name` in mvmm-pay's output: `"name":"v"` / `"name":1`
/// (--json) or `name: v` (text).
fn field(output: &str, name: &str) -> Option<String> {
    let quoted = format!("\"{name}\":");
    if let Some(at) = output.find(&quoted) {
        let rest = &output[at + quoted.len()..];
        return Some(match rest.strip_prefix('"') {
            Some(s) => s[..s.find('"')?].to_string(),
            None => rest[..rest.find([',', '}'])?].trim().to_string(),
        });
    }
    let prefix = format!("{name}: ");
    output
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(str::to_string)
}
