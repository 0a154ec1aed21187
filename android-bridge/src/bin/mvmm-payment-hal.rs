//! `mvmm-payment-hal`: the payment HAL of the rich VM. Serves the AIDL
//! interface `dev.mvmm.IPayment` over Android's binder and reaches the
//! secure VM's payment app through one bridge session.
//!
//! There is no servicemanager in the rich VM, so the HAL makes itself the
//! binder context manager: clients find it at handle 0 of the binder device
//! (see docs/android.md, "Binder").

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    linux::main()
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("mvmm-payment-hal: binder needs Linux or Android");
    std::process::ExitCode::from(2)
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;

    use android_bridge::hal::{DEFAULT_BINDER_DEVICE, HalConfig, PaymentHal};
    use android_bridge::{DeviceKey, Timeouts, Transport};
    use clap::Parser;
    use payment_aidl::{BnPayment, DESCRIPTOR};
    use rsbinder::ProcessState;

    /// Serve dev.mvmm.IPayment over binder in front of the secure VM.
    #[derive(Parser)]
    #[command(version)]
    struct Args {
        /// The binder device to serve on.
        #[arg(long, default_value = DEFAULT_BINDER_DEVICE)]
        binder: String,
        /// vsock:CID:PORT (rich VM) or unix:PATH (simulator).
        #[arg(long, env = "MVMM_TRANSPORT", default_value_t = Transport::secure_vm())]
        transport: Transport,
        /// The pinned device public key (hex SEC1).
        #[arg(long, env = "MVMM_DEVICE_KEY", default_value = "/etc/mvmm/device.pub")]
        device_key: PathBuf,
        /// A binder caller uid to serve (repeat for more); others get
        /// EX_SECURITY. The rich VM runs everything as root.
        #[arg(long = "allow-uid", default_values_t = [0u32])]
        allowed_uids: Vec<u32>,
        /// Binder threads besides the main one (one serves a waiting payment,
        /// another answers BUSY meanwhile).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
        threads: u32,
        /// Seconds to wait for the user to answer a payment.
        #[arg(long, default_value_t = 120)]
        approval_timeout: u64,
        /// Seconds to wait for any other answer of the secure VM.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        match serve(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("mvmm-payment-hal: {message}");
                ExitCode::from(1)
            }
        }
    }

    fn serve(args: &Args) -> Result<(), String> {
        let device_key = DeviceKey::load(&args.device_key).map_err(|e| e.to_string())?;
        let config = HalConfig {
            transport: args.transport.clone(),
            device_key,
            timeouts: Timeouts {
                call: Duration::from_secs(args.timeout),
                approval: Duration::from_secs(args.approval_timeout),
            },
            allowed_uids: args.allowed_uids.clone(),
        };
        let state = ProcessState::init(&args.binder, args.threads).map_err(|e| {
            format!(
                "cannot open the binder device {}: {} (is binder_linux loaded?)",
                args.binder,
                e.to_string().trim_end()
            )
        })?;
        let service = BnPayment::new_binder(PaymentHal::new(config));
        state
            .become_context_manager(service.as_binder())
            .map_err(|e| {
                format!(
                    "cannot become the context manager of {}: {} (another process, such as a \
                     service manager or a second HAL, already is)",
                    args.binder,
                    e.to_string().trim_end()
                )
            })?;
        ProcessState::start_thread_pool();
        eprintln!(
            "mvmm-payment-hal: serving {DESCRIPTOR} at handle 0 of {} for uid {:?}, secure VM at {}",
            args.binder, args.allowed_uids, args.transport
        );
        ProcessState::join_thread_pool().map_err(|e| format!("binder thread pool: {e}"))
    }
}
