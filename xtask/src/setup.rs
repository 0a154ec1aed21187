//! Installing what the project needs: the rustup targets and Debian's
//! packages (`--no-install-recommends`), each named when it cannot be.

use super::*;

/// Debian packages that provide the commands the project runs.
pub(crate) const APT_PACKAGES: &[(&str, &str)] = &[("qemu-system-aarch64", "qemu-system-arm")];

/// Makes sure the cross targets are installed (rustup does not add the
/// targets of rust-toolchain.toml by itself when auto-install is off).
pub(crate) fn ensure_targets() -> Result {
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

pub(crate) fn have(command: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|dir| dir.join(command).is_file()))
}

/// Installs missing Debian packages when this is Debian and we are root;
/// otherwise stops with a message naming them.
pub(crate) fn ensure_packages() -> Result {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(cmd, _)| !have(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !can_apt_install() {
        return Err(format!(
            "missing packages: {}. Install them (on Debian: `sudo apt-get install --no-install-recommends {}`) and retry.",
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

/// Whether xtask may install Debian packages itself: on Debian, as root.
pub(crate) fn can_apt_install() -> bool {
    let debian = Path::new("/etc/debian_version").exists();
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    debian && root
}
