//! The Kotlin wrapper compiled with kotlinc and run on the JVM through the
//! real libandroid_bridge.so against the simulator: the sample wallet
//! (`examples/wallet/Wallet.kt`) approving, declining and refusing a bad
//! amount, and every JNI entry point (`tests/kotlin/JniCheck.kt`).
//!
//! kotlinc comes from `MVMM_KOTLINC`, else from where `cargo xtask test`
//! installs it (`target/tools/kotlin/`). Without it the tests print SKIPPED
//! and pass, unless `MVMM_REQUIRE_ANDROID_TOOLS=1` (then they fail).
//! The three sources are compiled once per change (about 10 s), into one jar
//! with the Kotlin runtime, cached under the target dir.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::start;
use mvmm_sim::Answer;

/// Where `cargo xtask` puts kotlinc, relative to the target directory.
const KOTLINC_IN_TARGET: &str = "tools/kotlin/node_modules/kotlin-compiler/bin/kotlinc";

fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

fn kotlinc() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MVMM_KOTLINC") {
        return Some(PathBuf::from(path));
    }
    let installed = target_dir().join(KOTLINC_IN_TARGET);
    installed.is_file().then_some(installed)
}

fn sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        root.join("kotlin/dev/mvmm/bridge/ConfirmationPrompt.kt"),
        root.join("examples/wallet/Wallet.kt"),
        root.join("tests/kotlin/JniCheck.kt"),
    ]
}

/// FNV-1a over the compiler's path and the sources: the cache key.
fn fingerprint(kotlinc: &Path, sources: &[PathBuf]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(kotlinc.as_os_str().as_encoded_bytes());
    for source in sources {
        feed(&std::fs::read(source).unwrap_or_else(|e| panic!("{}: {e}", source.display())));
    }
    hash
}

/// The compiled jar, or `None` (skipped) when kotlinc is not installed.
fn jar() -> Option<&'static Path> {
    static JAR: OnceLock<Option<PathBuf>> = OnceLock::new();
    JAR.get_or_init(|| {
        let Some(kotlinc) = kotlinc() else {
            let hint = "run `cargo xtask test` (it installs kotlinc) or set MVMM_KOTLINC";
            assert!(
                std::env::var_os("MVMM_REQUIRE_ANDROID_TOOLS").is_none(),
                "MVMM_REQUIRE_ANDROID_TOOLS is set but kotlinc is not installed: {hint}"
            );
            eprintln!("SKIPPED: kotlinc not found - the Kotlin tests did not run; {hint}");
            return None;
        };
        let sources = sources();
        let dir = target_dir().join("kotlin-tests");
        std::fs::create_dir_all(&dir).expect("create kotlin-tests dir");
        let jar = dir.join("bridge-kotlin.jar");
        let stamp = dir.join("bridge-kotlin.stamp");
        let key = format!("{:016x}", fingerprint(&kotlinc, &sources));
        if jar.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == key) {
            return Some(jar);
        }
        let started = std::time::Instant::now();
        let out = Command::new(&kotlinc)
            .args(&sources)
            .args(["-include-runtime", "-Werror", "-d"])
            .arg(&jar)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", kotlinc.display()));
        assert!(
            out.status.success(),
            "kotlinc failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "kotlinc compiled {} files in {:.1} s",
            sources.len(),
            started.elapsed().as_secs_f64()
        );
        std::fs::write(&stamp, key).expect("write stamp");
        Some(jar)
    })
    .as_deref()
}

/// Runs `main_class` from the jar with the bridge library on the path.
fn java(jar: &Path, main_class: &str, args: &[&str]) -> (Output, String) {
    let out = Command::new("java")
        .arg(format!(
            "-Djava.library.path={}",
            common::cdylib_dir().display()
        ))
        .arg("-Xcheck:jni")
        .arg("-cp")
        .arg(jar)
        .arg(main_class)
        .args(args)
        .output()
        .expect("java runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

const WALLET: &str = "dev.mvmm.examples.wallet.WalletKt";

/// Runs the sample wallet against a fresh simulator that answers `answer`;
/// `None` when kotlinc is not installed. The simulator lives as long as
/// the returned value (its directory holds the credentials' public keys).
fn wallet(answer: Answer, amount: &str) -> Option<(common::Sim, String)> {
    let jar = jar()?;
    let sim = start("kotlin-wallet", answer);
    let transport = format!("unix:{}", sim.running.socket.display());
    let (out, stdout) = java(
        jar,
        WALLET,
        &[&transport, &sim.running.device_key_hex, amount],
    );
    assert!(
        out.status.success(),
        "wallet failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("enrolled "), "{stdout}");
    Some((sim, stdout))
}

#[test]
fn wallet_gets_a_token_when_the_user_approves() {
    let Some((sim, stdout)) = wallet(Answer::Approve, "12.50") else {
        return;
    };
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("confirmed "))
        .unwrap_or_else(|| panic!("no onConfirmed in:\n{stdout}"));
    let (token, thread) = line.split_once(' ').expect("token and thread");
    assert_eq!(thread, "(on wallet-main)", "callback on the app's executor");
    // The backend's check: the credential's key from its enrollment, the
    // nonce it issued, the payment it expects.
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} line in:\n{stdout}"))
            .to_string()
    };
    let (credential, nonce) = (field("enrolled "), field("nonce "));
    let key_file = sim
        .dir
        .join("credentials")
        .join(format!("{credential}.pub"));
    let key_hex = std::fs::read_to_string(&key_file)
        .unwrap_or_else(|e| panic!("{}: {e}", key_file.display()));
    let key = mvmm_verify::parse_public_key(key_hex.trim()).expect("credential key");
    let expected = mvmm_verify::Expected {
        nonce: hex::decode(&nonce)
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
        amount_minor: 1250,
        currency: protocol::Currency::from_code("EUR").expect("EUR"),
        merchant: "Corner Cafe",
        last_counter: 0,
        credential: None,
    };
    let token = hex::decode(token).expect("token hex");
    let claims =
        mvmm_verify::verify_token(&token, &key, &expected).expect("the backend accepts it");
    assert_eq!(claims.counter, 1);
}

#[test]
fn wallet_is_told_when_the_user_declines() {
    let Some((_sim, stdout)) = wallet(Answer::Decline, "12.50") else {
        return;
    };
    assert!(
        stdout.contains("dismissed (on wallet-main)"),
        "no onDismissed in:\n{stdout}"
    );
    assert!(!stdout.contains("confirmed"), "{stdout}");
}

#[test]
fn wallet_gets_an_error_naming_a_bad_amount() {
    let Some((_sim, stdout)) = wallet(Answer::Approve, "12.505") else {
        return;
    };
    assert!(
        stdout.contains(
            "error 8 amount \"12.505\" has more than 2 decimal place(s), the minor unit of EUR"
        ),
        "no onError(INVALID_ARGUMENT) in:\n{stdout}"
    );
}

#[test]
fn every_jni_entry_point_works_from_kotlin() {
    let Some(jar) = jar() else {
        return;
    };
    let sim = start("kotlin-jni", Answer::Approve);
    let other = p256::ecdsa::SigningKey::from_slice(&[5; 32]).expect("key");
    let forged = hex::encode(other.verifying_key().to_sec1_point(false).as_bytes());
    let transport = format!("unix:{}", sim.running.socket.display());
    let (out, stdout) = java(
        jar,
        "dev.mvmm.bridge.check.JniCheckKt",
        &[&transport, &sim.running.device_key_hex, &forged],
    );
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
        "nonce error 8 nonce must be 32 bytes, got 31",
        "after delete 0",
        "closed error 10 the bridge is closed",
        "forged error 12 authentication failed",
        "transport error 8 ",
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
