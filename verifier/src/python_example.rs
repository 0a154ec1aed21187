//! Runs the Python backend example (`verifier/examples/python/
//! verify_token.py`): proof that a token is read by another language's own
//! COSE library (pycose) and CBOR decoder (cbor2). Used by the tests and
//! `cargo xtask demo`; needs python3 with venv and PyPI for the pinned
//! packages, which go into a venv the caller names (under `target/`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned: the versions the example was written against. cbor2 6 decodes
/// tagged arrays as tuples, which pycose 1.1.0 does not accept: stay on 5.
pub const PACKAGES: [&str; 2] = ["pycose==1.1.0", "cbor2==5.6.5"];
/// Checks a venv has exactly those versions.
const CHECK: &str = "import importlib.metadata as m, pycose, cbor2; \
    assert (m.version('pycose'), m.version('cbor2')) == ('1.1.0', '5.6.5')";

/// Whether `python3` runs here.
pub fn python3_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The python of the venv at `dir`, created with the pinned packages when
/// it does not have them yet.
pub fn venv(dir: &Path) -> Result<PathBuf, String> {
    let python = dir.join("bin").join("python3");
    let ready = || {
        Command::new(&python)
            .args(["-c", CHECK])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready() {
        return Ok(python);
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(dir)
        .status()
        .map_err(|e| format!("python3 -m venv: {e}"))?;
    if !status.success() {
        return Err(format!(
            "python3 -m venv {} failed ({status})",
            dir.display()
        ));
    }
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PACKAGES)
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip install {} failed:\n{}",
            PACKAGES.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if !ready() {
        return Err("pycose and cbor2 do not import after pip install".into());
    }
    Ok(python)
}

/// Runs the example on a credential key file (hex SEC1) and a token file
/// (base64 or raw); returns its exit code and the JSON it printed.
pub fn verify(python: &Path, key: &Path, token: &Path) -> Result<(i32, serde_json::Value), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/verify_token.py");
    let out = Command::new(python)
        .arg(&script)
        .arg("--key")
        .arg(key)
        .arg("--token")
        .arg(token)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))?;
    Ok((out.status.code().unwrap_or(-1), json))
}
