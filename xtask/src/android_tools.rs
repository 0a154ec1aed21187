//! The Android-side tools the tests use: a pinned Kotlin compiler from the
//! npm registry under `target/tools/kotlin/` and a JDK (the bridge's JVM
//! tests), and AOSP's `mkbootimg` (the boot image tests).
//!
//! Debian's own `kotlin` package (1.3) is too old for the wrapper, so the
//! compiler comes from npm's `kotlin-compiler` package (the JVM compiler,
//! `bin/kotlinc`; its npm `bin` entry only exposes `kotlinc-js`, so the path
//! is used directly). It runs on any JDK 17 or later; Debian's
//! `openjdk-17-jdk-headless` is installed when `javac` is missing.
//! `android-bridge/tests/kotlin.rs` finds the compiler at [`KOTLINC`];
//! `mkbootimg` is Debian's package of AOSP's tool (boot header v0 to v3).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Result, have, run_cmd, step};

/// The pinned compiler version (npm `kotlin-compiler`).
pub const KOTLIN_VERSION: &str = "2.4.20";
/// kotlinc, relative to the target directory (the tests look here).
pub const KOTLINC: &str = "tools/kotlin/node_modules/kotlin-compiler/bin/kotlinc";
/// Debian packages: the command that must exist, and the package giving it.
const JDK: (&str, &str) = ("javac", "openjdk-17-jdk-headless");
const NPM: (&str, &str) = ("npm", "npm");
const MKBOOTIMG: (&str, &str) = ("mkbootimg", "mkbootimg");
/// Set for `cargo test`: the tests fail instead of skipping when a tool is
/// missing.
pub const REQUIRE_VAR: &str = "MVMM_REQUIRE_ANDROID_TOOLS";

/// Makes sure kotlinc [`KOTLIN_VERSION`], a JDK and mkbootimg are
/// installed; returns kotlinc's path.
pub fn ensure(target_dir: &Path) -> Result<PathBuf> {
    for (command, package) in [JDK, NPM, MKBOOTIMG] {
        if !have(command) {
            apt_install(command, package)?;
        }
    }
    let prefix = target_dir.join("tools").join("kotlin");
    let kotlinc = target_dir.join(KOTLINC);
    let manifest = prefix.join("node_modules/kotlin-compiler/package.json");
    let installed = fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("version")?.as_str().map(str::to_string));
    if installed.as_deref() == Some(KOTLIN_VERSION) && kotlinc.is_file() {
        return Ok(kotlinc);
    }
    step(&format!(
        "installing kotlin-compiler {KOTLIN_VERSION} from npm into {} (was: {})",
        prefix.display(),
        installed.as_deref().unwrap_or("none")
    ));
    fs::create_dir_all(&prefix).map_err(|e| format!("{}: {e}", prefix.display()))?;
    run_cmd(
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--save-exact",
                "--prefix",
            ])
            .arg(&prefix)
            .arg(format!("kotlin-compiler@{KOTLIN_VERSION}")),
    )?;
    if !kotlinc.is_file() {
        return Err(format!(
            "npm installed kotlin-compiler@{KOTLIN_VERSION} but {} is missing",
            kotlinc.display()
        )
        .into());
    }
    Ok(kotlinc)
}

/// `apt-get install --no-install-recommends PACKAGE` on Debian as root;
/// elsewhere an error naming what to install.
fn apt_install(command: &str, package: &str) -> Result {
    if !crate::can_apt_install() {
        return Err(format!(
            "`{command}` is missing: install {package} (on Debian: `sudo apt-get install --no-install-recommends {package}`) and retry"
        ).into());
    }
    step(&format!(
        "installing {package} with apt-get (for `{command}`)"
    ));
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(Command::new("apt-get").args([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        package,
    ]))
}
