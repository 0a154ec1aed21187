//! A simulator per test, in a fresh directory.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use android_bridge::{Bridge, DeviceKey, Transport};
use mvmm_sim::{Answer, Config, Input, Running};
use payment_app::Policy;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh state directory under the target dir.
pub fn fresh_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!(
        "bridge-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

pub struct Sim {
    pub running: Running,
    pub dir: PathBuf,
}

impl Sim {
    pub fn transport(&self) -> Transport {
        Transport::Unix(self.running.socket.clone())
    }

    pub fn device_key(&self) -> DeviceKey {
        DeviceKey::load(&self.running.device_key_file).expect("device key file")
    }

    pub fn connect(&self) -> Bridge {
        Bridge::connect(&self.transport(), &self.device_key()).expect("connect")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.running.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn start_with(name: &str, input: Input, policy: Policy, pin: Option<&str>) -> Sim {
    let dir = fresh_dir(name);
    // Unix socket paths are limited to 108 bytes: keep the socket short.
    let mut config = Config::new(&dir);
    config.socket = std::env::temp_dir().join(format!(
        "mvmm-{}-{}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    config.input = input;
    config.policy = policy;
    config.pin_if_unset = pin.map(str::to_string);
    let running = mvmm_sim::start(config).expect("simulator starts");
    Sim { running, dir }
}

pub fn start(name: &str, answer: Answer) -> Sim {
    start_with(name, Input::Auto(answer), Policy::default(), None)
}

/// The directory holding libandroid_bridge.so: next to the binaries after
/// `cargo build`, or in `deps/` when only `cargo test` has built it (a fresh
/// clone).
#[allow(dead_code)]
pub fn cdylib_dir() -> std::path::PathBuf {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_mvmm-pay"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    [bin_dir.clone(), bin_dir.join("deps")]
        .into_iter()
        .find(|d| d.join("libandroid_bridge.so").exists())
        .unwrap_or(bin_dir)
}
