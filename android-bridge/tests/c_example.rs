//! examples/pay.c, compiled with the system `cc` against the cdylib and the
//! committed header, does a real handshake and payment with the simulator.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fresh_dir, start};
use mvmm_sim::Answer;

fn compile() -> Option<PathBuf> {
    if Command::new("cc").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no C compiler `cc` on PATH");
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib_dir = common::cdylib_dir();
    assert!(
        lib_dir.join("libandroid_bridge.so").exists(),
        "{} has no libandroid_bridge.so",
        lib_dir.display()
    );
    let exe = fresh_dir("c").join("pay");
    let out = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(root.join("examples/pay.c"))
        .arg("-I")
        .arg(root.join("include"))
        .arg("-L")
        .arg(&lib_dir)
        .arg("-landroid_bridge")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .output()
        .expect("cc runs");
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(exe)
}

#[test]
fn c_example_pays_through_the_c_abi() {
    let Some(exe) = compile() else { return };
    let sim = start("c-approve", Answer::Approve);
    let out = Command::new(&exe)
        .arg(format!("unix:{}", sim.running.socket.display()))
        .arg(&sim.running.device_key_hex)
        .output()
        .expect("example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("enrolled Visa ending 4242"), "{stdout}");
    assert!(
        stdout.contains("\"12.505\" has more than 2 decimal place(s)"),
        "{stdout}"
    );
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token "))
        .expect("token line");
    assert!(hex::decode(token).is_ok_and(|t| t.len() > 100), "{token}");

    // Declined, and a forged device key: the error codes and messages.
    let sim = start("c-decline", Answer::Decline);
    let out = Command::new(&exe)
        .arg(format!("unix:{}", sim.running.socket.display()))
        .arg(&sim.running.device_key_hex)
        .output()
        .expect("example runs");
    assert_eq!(out.status.code(), Some(1), "MVMM_DECLINED_BY_USER");
    assert!(String::from_utf8_lossy(&out.stderr).contains("declined by user"));
    let forged = "04".to_string() + &sim.running.device_key_hex[2..66] + &"00".repeat(32);
    let other = p256::ecdsa::SigningKey::from_slice(&[3; 32]).expect("key");
    let other_hex = hex::encode(other.verifying_key().to_sec1_point(false).as_bytes());
    for (key, code) in [(other_hex.as_str(), 12), (forged.as_str(), 8)] {
        let out = Command::new(&exe)
            .arg(format!("unix:{}", sim.running.socket.display()))
            .arg(key)
            .output()
            .expect("example runs");
        assert_eq!(out.status.code(), Some(code), "{out:?}");
    }
}
