//! `mvmm-sim`: the secure VM's payment service on a Unix socket, for trying
//! the payment flow without QEMU. See docs/android-integration.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mvmm_sim::{Answer, Config, Input, start};
use payment_app::Policy;

/// Simulate the secure VM: payment app, trusted UI and session on a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// State directory: device key, app state, credential keys, screens.
    #[arg(long, default_value = "target/sim")]
    dir: PathBuf,
    /// Unix socket to listen on [default: <dir>/mvmm.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Answer every prompt: approve, decline or pin:DIGITS (sets the PIN if
    /// none is set, then types it). Without it, answer on this terminal.
    #[arg(long)]
    auto: Option<Answer>,
    /// The security word shown on the approval screen.
    #[arg(long, default_value = "LIGHTHOUSE")]
    security_word: String,
    /// Seconds the user has to answer.
    #[arg(long, default_value_t = 60)]
    approval_timeout: u64,
    /// Do not save the screens as PNG files.
    #[arg(long)]
    no_screens: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = Config::new(&args.dir);
    if let Some(socket) = args.socket {
        config.socket = socket;
    }
    config.pin_if_unset = match &args.auto {
        Some(Answer::Pin(pin)) => Some(pin.clone()),
        _ => None,
    };
    config.input = args.auto.map_or(Input::Terminal, Input::Auto);
    config.save_screens = !args.no_screens;
    config.security_word = args.security_word;
    config.policy = Policy {
        approval_timeout_ms: args.approval_timeout.saturating_mul(1000),
        ..Policy::default()
    };
    match start(config) {
        Ok(running) => {
            println!("listening on unix:{}", running.socket.display());
            println!("device key: {}", running.device_key_file.display());
            println!("screens: {}", args.dir.join("screens").display());
            running.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mvmm-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
