//! A JVM loads libandroid_bridge.so and drives the JNI entry points
//! (java/JniSmoke.java) against the simulator. Skipped, with a message, when
//! `javac`/`java` are missing.

mod common;

use std::path::Path;
use std::process::Command;

use common::{fresh_dir, start};
use mvmm_sim::Answer;

#[test]
fn jvm_pays_through_jni() {
    if Command::new("javac").arg("-version").output().is_err() {
        eprintln!("SKIPPED: javac not found (install a JDK 17) - the JNI test did not run");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = common::cdylib_dir().join("libandroid_bridge.so");
    assert!(lib.exists(), "{} missing", lib.display());
    let classes = fresh_dir("jni");
    let java = root.join("java");
    let out = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(java.join("JniSmoke.java"))
        .arg(java.join("dev/mvmm/bridge/NativeBridge.java"))
        .arg(java.join("dev/mvmm/bridge/MvmmException.java"))
        .output()
        .expect("javac runs");
    assert!(
        out.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sim = start("jni", Answer::Approve);
    let other = p256::ecdsa::SigningKey::from_slice(&[5; 32]).expect("key");
    let forged = hex::encode(other.verifying_key().to_sec1_point(false).as_bytes());
    let out = Command::new("java")
        .arg(format!("-Dmvmm.bridge.lib={}", lib.display()))
        .arg("-Xcheck:jni")
        .arg("-cp")
        .arg(&classes)
        .arg("JniSmoke")
        .arg(format!("unix:{}", sim.running.socket.display()))
        .arg(&sim.running.device_key_hex)
        .arg(&forged)
        .output()
        .expect("java runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "status protocol=1 credentials=0",
        "credentials 1",
        "eat tag 210",
        "amount error 8 amount \"12.505\" has more than 2 decimal place(s)",
        "id error 8 credential must be 16 bytes, got 3",
        "forged error 12 authentication failed",
        "done",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token "))
        .expect("token line");
    assert!(hex::decode(token).is_ok_and(|t| t.len() > 100), "{token}");
}
