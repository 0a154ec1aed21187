//! `cargo xtask run`: the board in QEMU, a window or this terminal, or one
//! command in the rich VM (`--rich-cmd`).

use super::*;

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    #[arg(long, default_value = mvmm_tests::DEFAULT_BOARD)]
    board: String,
    /// No window: the console is this terminal (the default when there is
    /// no display).
    #[arg(long)]
    headless: bool,
    /// Run CMD as root in the rich VM's shell, print its output, power off
    /// and exit with CMD's exit status.
    #[arg(long, value_name = "CMD")]
    rich_cmd: Option<String>,
    /// Seconds to wait for --rich-cmd before giving up.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    timeout: u64,
    /// Boot this arm64 kernel Image in the rich VM instead of Debian's.
    #[arg(long, value_name = "PATH")]
    rich_kernel: Option<PathBuf>,
    /// Boot this initramfs in the rich VM instead of the busybox one.
    #[arg(long, value_name = "PATH")]
    rich_initrd: Option<PathBuf>,
    /// The rich VM's kernel command line.
    #[arg(long, value_name = "STR", default_value = RICH_CMDLINE)]
    rich_cmdline: String,
    /// Show debug lines on the console too (the secure VM's heartbeat and
    /// channel statistics).
    #[arg(long, short)]
    verbose: bool,
    /// Boot this Android boot image (boot.img, header v0 to v4) in the rich
    /// VM: kernel, ramdisk and command line come from the image.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["rich_kernel", "rich_initrd", "rich_probe"])]
    rich_bootimg: Option<PathBuf>,
    /// The vendor_boot.img that goes with a header v3/v4 --rich-bootimg.
    #[arg(long, value_name = "PATH", requires = "rich_bootimg")]
    rich_vendor_boot: Option<PathBuf>,
    /// Boot the small probe test guest in the rich VM instead of Linux.
    #[arg(long, conflicts_with_all = ["rich_kernel", "rich_initrd", "rich_cmd"])]
    rich_probe: bool,
    /// Run the payment backend (mvmm-verify serve) on the host's loopback
    /// at PORT (a free one when no PORT is given) while the machine runs,
    /// with the device key pinned; the rich VM reaches it at
    /// http://10.0.2.2:PORT, and --rich-cmd gets MVMM_BACKEND set to that
    /// URL (so `mvmm-pay request` sends its token there).
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "0")]
    backend: Option<u16>,
}

/// `xtask run --backend`: the payment backend on the host's loopback at
/// `port` (0: any free one), the device key pinned, its URL printed.
pub(crate) fn run_backend(
    dir: &Path,
    file: &mvmm_core::config::BoardFile,
    port: u16,
) -> Result<mvmm_tests::payment::Backend> {
    let backend = mvmm_tests::payment::Backend::listen(&format!("127.0.0.1:{port}"))?;
    let device_id = backend.pin_device(&provision(dir, file)?.device_key)?;
    println!(
        "backend: mvmm-verify serve on {}, device key pinned (device id {device_id})\n\
         backend: from the rich VM: {} (e.g. wget -q -O- {}/health; mvmm-pay --backend {} ...)",
        backend.url(),
        backend.url_from_guest(),
        backend.url_from_guest(),
        backend.url_from_guest(),
    );
    Ok(backend)
}

pub(crate) fn run(args: &RunArgs) -> Result {
    ensure_packages()?;
    let probe_images = build(&args.board)?;
    let dir = probe_images.dir();
    let (file, qemu) = load_board(&args.board)?;
    // The backend serves for as long as this function runs.
    let backend = match args.backend {
        Some(port) => Some(run_backend(&dir, &file, port)?),
        None => None,
    };
    let rich_cmd = match (&backend, &args.rich_cmd) {
        (Some(backend), Some(cmd)) => Some(format!(
            "export MVMM_BACKEND={}; {cmd}",
            backend.url_from_guest()
        )),
        (_, cmd) => cmd.clone(),
    };
    let images = if args.rich_probe {
        probe_images
    } else if let Some(boot) = &args.rich_bootimg {
        let vendor = args.rich_vendor_boot.as_deref();
        let (rich, unpacked) = mvmm_tests::android_boot::prepare_bootimg_boot(
            &file,
            &qemu,
            &dir,
            (boot, vendor),
            rich_cmd.as_deref(),
            "run",
        )?;
        eprintln!(
            "{}: header v{}, cmdline {:?}",
            boot.display(),
            unpacked.header_version,
            unpacked.cmdline
        );
        Images::with_rich_linux(&dir, &rich)
    } else {
        let built = RichSource::built(&dir);
        let source = RichSource {
            kernel: args.rich_kernel.clone().unwrap_or(built.kernel),
            initrd: args.rich_initrd.clone().unwrap_or(built.initrd),
            cmdline: args.rich_cmdline.clone(),
        };
        let rich = prepare_rich_boot(
            &file,
            &qemu,
            &dir,
            &source,
            rich_cmd.as_deref(),
            &dir.join("work").join("run"),
        )?;
        Images::with_rich_linux(&dir, &rich)
    };
    let images = images.with_storage(persistent_storage(&dir));
    print_images(&images);
    if let Some(cmd) = &args.rich_cmd {
        let mut machine = Machine::start(qemu_command(&file, &qemu, &images, Console::Piped));
        eprintln!(
            "xtask: running {cmd:?} in the rich VM (timeout {} s)",
            args.timeout
        );
        let exited = machine.wait_exit(std::time::Duration::from_secs(args.timeout));
        let transcript = machine.transcript();
        return match (exited, rich::parse_exit_status(&transcript)) {
            (None, _) => Err(format!(
                "the rich VM did not finish {cmd:?} within {} s",
                args.timeout
            )
            .into()),
            (Some(_), Some(0)) => Ok(()),
            (Some(_), Some(status)) => Err(Error::RichCommand(u8::try_from(status).unwrap_or(1))),
            (Some(qemu_status), None) => Err(format!(
                "QEMU exited ({qemu_status}) before the rich VM reported the command's exit status"
            )
            .into()),
        };
    }
    let has_display = env::var_os("DISPLAY").is_some() || env::var_os("WAYLAND_DISPLAY").is_some();
    if !args.headless && !has_display {
        eprintln!("no display found: running headless");
    }
    // There is no graphical output yet: the console is the interface, so
    // both modes attach it to this terminal.
    let mut cmd = qemu_command(
        &file,
        &qemu,
        &images,
        Console::Terminal {
            verbose: args.verbose,
        },
    );
    println!(
        "console: this terminal. Lines start with [mvmm], [rich] or [secure]; typing goes to the rich VM."
    );
    println!("quit: press Ctrl-A, then X (or `poweroff -f` in the rich VM's shell).");
    println!("$ {cmd:?}");
    run_cmd(&mut cmd)
}
