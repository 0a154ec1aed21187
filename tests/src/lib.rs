//! The QEMU side of mVMM's tests: where the images are, how QEMU is started
//! for a board, and a console harness that waits for text with a deadline.
//!
//! `cargo xtask run` uses [`qemu_command`] too, so a test boots exactly
//! what a developer boots.

use mvmm_core::config::{BoardFile, QemuSection};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use std::{fmt, fs, thread};

/// Environment variable naming the directory with the built images
/// (`cargo xtask test` sets it).
pub const IMAGE_DIR_VAR: &str = "MVMM_IMAGE_DIR";

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    here.canonicalize().unwrap_or(here)
}

/// Environment variable naming the board the QEMU tests run on (`cargo
/// xtask test --board B` sets it; [`DEFAULT_BOARD`] without it).
pub const BOARD_VAR: &str = "MVMM_BOARD";
/// The board of `cargo xtask` commands given no `--board` (the builds'
/// default too).
pub use mvmm_core::config::DEFAULT_BOARD;

/// The board the tests run on: `$MVMM_BOARD`, else [`DEFAULT_BOARD`].
pub fn board_name() -> String {
    std::env::var(BOARD_VAR)
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| DEFAULT_BOARD.to_string())
}

/// [`load_board`] of the board the tests run on ([`board_name`]).
pub fn load_test_board() -> Result<(BoardFile, QemuSection), String> {
    load_board(&board_name())
}

/// The board file of `board` (e.g. `qemu-virt`).
pub fn board_file(board: &str) -> PathBuf {
    repo_root().join("boards").join(board).join("board.toml")
}

/// Reads a board file and its `[qemu]` section.
pub fn load_board(board: &str) -> Result<(BoardFile, QemuSection), String> {
    let path = board_file(board);
    let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = BoardFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let qemu = file.qemu.clone().ok_or_else(|| {
        format!(
            "{}: no [qemu] section: this board does not run under QEMU",
            path.display()
        )
    })?;
    Ok((file, qemu))
}

pub mod android_boot;
pub mod boot_image;
pub mod facts;
pub mod payment;
pub mod qmp;
pub mod rich;
pub mod storage;

/// One file QEMU puts in guest memory before the machine starts.
#[derive(Clone, Debug)]
pub struct Load {
    pub file: PathBuf,
    /// Physical address for a raw file; `None` for an ELF, which is loaded
    /// at the addresses it was linked for.
    pub addr: Option<u64>,
}

impl Load {
    pub fn elf(file: PathBuf) -> Load {
        Load { file, addr: None }
    }
}

/// The images one boot needs: mvmm and what goes into the VMs, and the
/// disk image that holds mvmm's state across boots (the secure VM's
/// rollback counter).
#[derive(Clone, Debug)]
pub struct Images {
    pub mvmm: PathBuf,
    pub guests: Vec<Load>,
    /// The file behind the board's `[qemu] storage` drive (the secure VM's
    /// flash), if the board has one.
    pub storage: Option<StorageImage>,
}

/// The file QEMU backs the secure VM's flash with, and whether writes reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageImage {
    /// QEMU writes to this file: what the secure VM stores survives the run
    /// (`cargo xtask run` and `demo`, and the persistence tests' own copies).
    Persistent(PathBuf),
    /// QEMU reads this file and keeps writes in a temporary overlay
    /// (`snapshot=on`): every boot starts from the file, which never changes.
    Throwaway(PathBuf),
}

/// The developer's flash image in an image directory: created erased by
/// `cargo xtask build` once, never overwritten; `run` and `demo` use it.
pub const STORAGE_IMAGE: &str = "secure-storage.img";
/// An erased flash image that is never written (QEMU boots it with
/// `snapshot=on`): the default for test boots.
pub const ERASED_STORAGE_IMAGE: &str = "secure-storage-erased.img";

/// Size of the board's `[qemu] storage` device, if it has one.
pub fn storage_size(board: &BoardFile) -> Option<u64> {
    let storage = board.qemu.as_ref()?.storage.as_ref()?;
    board
        .devices
        .iter()
        .find(|d| d.name == storage.device)
        .map(|d| d.size)
}

/// Creates `path` as an erased flash image (every byte 0xff) of `size`
/// bytes unless it exists; an existing file is never touched. Returns
/// whether it was created.
pub fn create_erased_image(path: &Path, size: u64) -> Result<bool, String> {
    if path.exists() {
        let len = fs::metadata(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        if len != size {
            return Err(format!(
                "{} is {len} bytes, but the board's flash is {size}: move it away to start over",
                path.display()
            ));
        }
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    // Written under another name and renamed, so a crash never leaves a
    // short image behind.
    let partial = path.with_extension("partial");
    let chunk = vec![0xffu8; 1 << 20];
    let mut file = fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        left -= n as u64;
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    fs::rename(&partial, path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(true)
}

/// The image directory's storage images for `board` (the developer's
/// persistent one and the erased one tests boot by default), created once.
pub fn ensure_storage_images(board: &BoardFile, dir: &Path) -> Result<(), String> {
    if let Some(size) = storage_size(board) {
        create_erased_image(&dir.join(STORAGE_IMAGE), size)?;
        create_erased_image(&dir.join(ERASED_STORAGE_IMAGE), size)?;
        for storage in [
            StorageImage::Persistent(dir.join(STORAGE_IMAGE)),
            StorageImage::Throwaway(dir.join(ERASED_STORAGE_IMAGE)),
        ] {
            create_rpmb_disk(&rpmb_disk(&storage).0)?;
        }
    }
    Ok(())
}

/// A new erased flash image at `path` for one test (replacing any earlier
/// one there), sized for the default board.
pub fn fresh_storage(path: &Path) -> PathBuf {
    let (board, _) = load_test_board().unwrap_or_else(|e| panic!("{e}"));
    let size = storage_size(&board).expect("the board has a [qemu] storage drive");
    let _ = fs::remove_file(path);
    create_erased_image(path, size).unwrap_or_else(|e| panic!("{e}"));
    // A fresh flash gets a fresh rollback counter.
    let (disk, _) = rpmb_disk(&StorageImage::Persistent(path.to_path_buf()));
    let _ = fs::remove_file(&disk);
    create_rpmb_disk(&disk).unwrap_or_else(|e| panic!("{e}"));
    path.to_path_buf()
}

/// mvmm's disk image (see `mvmm_core::rpmb`) that goes with a flash image:
/// the rollback counter and the storage it protects are kept, and thrown
/// away, together. A throwaway flash boots with a blank disk (also with
/// `snapshot=on`), a persistent one with `<flash>.rpmb` next to it.
pub fn rpmb_disk(storage: &StorageImage) -> (PathBuf, bool) {
    match storage {
        StorageImage::Persistent(flash) => (flash.with_extension("rpmb"), false),
        StorageImage::Throwaway(flash) => (flash.with_file_name(BLANK_RPMB_DISK), true),
    }
}

/// A blank disk for mvmm in an image directory (booted with `snapshot=on`).
pub const BLANK_RPMB_DISK: &str = "rpmb-blank.img";
/// Bytes of mvmm's disk image.
pub const RPMB_DISK_SIZE: u64 = 64 * 1024;

/// Creates mvmm's disk image at `path` unless it exists (a blank disk: the
/// counter starts at 0).
pub fn create_rpmb_disk(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    let file = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.set_len(RPMB_DISK_SIZE)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Where `cargo xtask` copies the rich VM's Linux kernel and base
/// initramfs inside an image directory.
pub const RICH_KERNEL: &str = "rich/Image";
pub const RICH_INITRAMFS: &str = "rich/initramfs.cpio.gz";
/// Static aarch64 tools (mvmm-pay, chan-tool) put in the rich VM's
/// /usr/bin: every file of this directory of the image directory.
pub const RICH_TOOLS_DIR: &str = "rich/bin";
pub use boot_image::{DEVICE_SECRET, Provisioning, provision};

impl Images {
    /// The images of `cargo xtask build` in `dir`: mvmm, the signed
    /// secure-os (through the image store) and the probe guest in the rich
    /// VM's slot.
    pub fn probe(board: &BoardFile, dir: &Path) -> Result<Images, String> {
        let mut guests = boot_image::store_loads(board, dir, &[], &dir.join("work").join("probe"))?;
        guests.push(Load::elf(dir.join("probe-guest")));
        Ok(Images {
            mvmm: dir.join("mvmm"),
            guests,
            storage: Some(StorageImage::Throwaway(dir.join(ERASED_STORAGE_IMAGE))),
        })
    }

    /// mvmm, the signed secure-os, and Linux in the rich VM, all through
    /// the image store.
    pub fn with_rich_linux(dir: &Path, rich: &RichBoot) -> Images {
        Images {
            mvmm: dir.join("mvmm"),
            guests: rich.loads.clone(),
            storage: Some(StorageImage::Throwaway(dir.join(ERASED_STORAGE_IMAGE))),
        }
    }

    /// The directory the images are in (the one mvmm's image is in).
    pub fn dir(&self) -> PathBuf {
        self.mvmm
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The image directory named by [`IMAGE_DIR_VAR`]; panics with a hint
    /// when it is not set (the QEMU tests are run by `cargo xtask test`).
    pub fn dir_from_env() -> PathBuf {
        std::env::var_os(IMAGE_DIR_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!("{IMAGE_DIR_VAR} is not set: run the QEMU tests with `cargo xtask test`")
            })
    }

    /// The probe images from [`Images::dir_from_env`] on the default board.
    pub fn from_env() -> Images {
        let (board, _) = load_test_board().unwrap_or_else(|e| panic!("{e}"));
        Images::probe(&board, &Images::dir_from_env()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same images with the secure VM's flash in `storage`.
    pub fn with_storage(self, storage: StorageImage) -> Images {
        Images {
            storage: Some(storage),
            ..self
        }
    }

    pub fn missing(&self) -> Vec<&Path> {
        let storage = self.storage.as_ref().map(|s| match s {
            StorageImage::Persistent(p) | StorageImage::Throwaway(p) => p,
        });
        std::iter::once(&self.mvmm)
            .chain(self.guests.iter().map(|g| &g.file))
            .chain(storage)
            .map(PathBuf::as_path)
            .filter(|p| !p.exists())
            .collect()
    }
}

/// A Linux boot of the rich VM, ready for QEMU's loader.
#[derive(Clone, Debug)]
pub struct RichBoot {
    pub kernel: PathBuf,
    pub kernel_addr: u64,
    pub initrd: PathBuf,
    pub initrd_addr: u64,
    pub dtb: PathBuf,
    pub dtb_addr: u64,
    /// What QEMU's loader puts where: the device secret, the image
    /// store's manifest, the signed secure-os and the three images above
    /// (mvmm copies them into the VMs, and again when a VM resets).
    pub loads: Vec<Load>,
}

/// The default kernel command line of the rich VM.
pub const RICH_CMDLINE: &str = "console=ttyAMA0 nokaslr";

/// What the rich VM boots: a kernel, an initramfs and a command line,
/// either the ones `cargo xtask build` put in an image directory or a
/// user's own.
#[derive(Clone, Debug)]
pub struct RichSource {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

impl RichSource {
    /// Debian's kernel and the busybox initramfs of image directory `dir`,
    /// with the default command line.
    pub fn built(dir: &Path) -> RichSource {
        RichSource {
            kernel: dir.join(RICH_KERNEL),
            initrd: dir.join(RICH_INITRAMFS),
            cmdline: RICH_CMDLINE.into(),
        }
    }
}

/// Prepares the rich VM's Linux boot of `source` in `work`: the initramfs
/// (with the tools and pinned device key of `image_dir`, and
/// `/mvmm/rich-cmd` when `command` is given) and a device tree written from
/// the board file for that initramfs and command line. The secure VM is
/// provisioned from `image_dir` whatever the rich VM boots.
pub fn prepare_rich_boot(
    board: &BoardFile,
    qemu: &QemuSection,
    image_dir: &Path,
    source: &RichSource,
    command: Option<&str>,
    work: &Path,
) -> Result<RichBoot, String> {
    let (kernel, initrd, cmdline) = (
        source.kernel.as_path(),
        source.initrd.as_path(),
        source.cmdline.as_str(),
    );
    let vm = board
        .vms
        .iter()
        .find(|v| v.kind == "rich")
        .ok_or("the board has no rich VM")?;
    let missing = |what: &str| {
        format!(
            "board vm '{}' has no {what} address: add `{what} = 0x...`",
            vm.name
        )
    };
    let dtb_addr = vm.dtb.ok_or_else(|| missing("dtb"))?;
    let initrd_addr = vm.initrd.ok_or_else(|| missing("initrd"))?;
    for (what, path) in [("kernel", kernel), ("initrd", initrd)] {
        if !path.is_file() {
            return Err(format!("rich VM {what} {} does not exist", path.display()));
        }
    }
    fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
    // The VMM channel's client: mvmm-pay and the device key it pins, from
    // the image directory, whatever kernel and initramfs the rich VM boots.
    let mut files: Vec<rich::ExtraFile> = Vec::new();
    let p = provision(image_dir, board)?;
    files.push((
        "etc/mvmm/device.pub".into(),
        format!("{}\n", p.device_key).into_bytes(),
        0o644,
    ));
    // Static tools for the rich VM (mvmm-pay, chan-tool) go to /usr/bin.
    if let Ok(entries) = fs::read_dir(image_dir.join(RICH_TOOLS_DIR)) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let binary =
                fs::read(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
            files.push((format!("usr/bin/{name}"), binary, 0o755));
        }
    }
    let initrd = if command.is_some() || !files.is_empty() {
        let extended = work.join("initramfs-cmd.cpio");
        rich::with_files(initrd, command, &files, &extended)?;
        extended
    } else {
        initrd.to_path_buf()
    };
    let initrd_size = fs::metadata(&initrd)
        .map_err(|e| format!("{}: {e}", initrd.display()))?
        .len();
    let kernel_size = fs::metadata(kernel)
        .map_err(|e| format!("{}: {e}", kernel.display()))?
        .len();
    if vm.entry + kernel_size > dtb_addr {
        return Err(format!(
            "rich kernel {} ({kernel_size} bytes) does not fit below the device tree at {dtb_addr:#x}",
            kernel.display()
        ));
    }
    let cpu_compatible = match qemu.cpu.split(',').next() {
        Some(model) if model.starts_with("cortex-") => format!("arm,{model}"),
        _ => "arm,armv8".to_string(),
    };
    let params = mvmm_core::devicetree::BootParams {
        cmdline,
        initrd_size: Some(initrd_size),
        cpu_compatible: &cpu_compatible,
    };
    let blob = mvmm_core::devicetree::vm_device_tree(board, &vm.name, &params)
        .map_err(|e| e.to_string())?;
    let dtb = work.join("rich.dtb");
    fs::write(&dtb, blob).map_err(|e| format!("{}: {e}", dtb.display()))?;
    let loads = boot_image::store_loads(
        board,
        image_dir,
        &[(kernel, vm.entry), (&initrd, initrd_addr), (&dtb, dtb_addr)],
        work,
    )?;
    Ok(RichBoot {
        kernel: kernel.to_path_buf(),
        kernel_addr: vm.entry,
        initrd,
        initrd_addr,
        dtb,
        dtb_addr,
        loads,
    })
}

/// How the console is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// Interactive: serial and QEMU monitor on the terminal (Ctrl-A X
    /// quits); debug lines (the secure VM's heartbeat) only if `verbose`.
    Terminal { verbose: bool },
    /// For tests: serial on stdio, no monitor, no escape character, every
    /// line shown.
    Piped,
}

impl Console {
    /// The console level mvmm is booted with.
    fn level(self) -> u8 {
        use mvmm_core::console::{DEFAULT_LEVEL, VERBOSE_LEVEL};
        match self {
            Console::Terminal { verbose: false } => DEFAULT_LEVEL,
            Console::Terminal { verbose: true } | Console::Piped => VERBOSE_LEVEL,
        }
    }
}

/// The QEMU command line that boots `images` on `board`.
pub fn qemu_command(
    board: &BoardFile,
    qemu: &QemuSection,
    images: &Images,
    console: Console,
) -> Command {
    let mut cmd = qemu_system();
    cmd.args(["-M", &qemu.machine, "-cpu", &qemu.cpu, "-m", &qemu.memory]);
    cmd.args(["-smp", &board.board.cpus.to_string()]);
    cmd.arg("-kernel").arg(&images.mvmm);
    for guest in &images.guests {
        let mut arg = std::ffi::OsString::from("loader,file=");
        arg.push(&guest.file);
        if let Some(addr) = guest.addr {
            arg.push(format!(",addr={addr:#x},force-raw=on"));
        }
        cmd.arg("-device").arg(arg);
    }
    // mvmm's boot options (mvmm_core::boot_options), written by QEMU's
    // loader below mvmm's image.
    let options = mvmm_core::boot_options::BootOptions {
        console_level: console.level(),
    };
    cmd.arg("-device").arg(format!(
        "loader,addr={:#x},data={:#x},data-len=8",
        mvmm_core::boot_options::address(board.board.mvmm.base),
        options.encode()
    ));
    // mvmm's disk, paired with the secure VM's flash (see `rpmb_disk`).
    if let (Some(bus), Some(storage)) = (&qemu.rpmb_bus, &images.storage) {
        let (disk, snapshot) = rpmb_disk(storage);
        let mut drive = std::ffi::OsString::from("if=none,id=rpmb,format=raw,file=");
        drive.push(&disk);
        if snapshot {
            drive.push(",snapshot=on");
        }
        cmd.arg("-drive").arg(drive);
        cmd.arg("-device")
            .arg(format!("virtio-blk-device,drive=rpmb,bus={bus}"));
    }
    // The scan-out mvmm drives (the board's display): QEMU's ramfb,
    // configured through fw_cfg by mvmm alone.
    if board.board.display.is_some() {
        if let Some(dir) = empty_vga_rom_dir(images) {
            cmd.arg("-L").arg(dir);
        }
        cmd.args(["-device", "ramfb"]);
    }
    // A reset request from the firmware ends the run instead of rebooting.
    cmd.arg("-no-reboot");
    cmd.args(["-display", "none"]);
    match console {
        // The serial console multiplexed with QEMU's monitor on this
        // terminal: Ctrl-A X quits, Ctrl-A C switches to the monitor.
        Console::Terminal { .. } => cmd.args(["-serial", "mon:stdio"]),
        Console::Piped => cmd.args(["-serial", "stdio", "-monitor", "none"]),
    };
    cmd.args(&qemu.extra_args);
    // The secure VM's flash: the board names the drive, the images the file.
    if let (Some(drive), Some(image)) = (&qemu.storage, &images.storage) {
        let mut arg = std::ffi::OsString::from(format!("{},file=", drive.drive));
        match image {
            StorageImage::Persistent(file) => arg.push(file),
            StorageImage::Throwaway(file) => {
                arg.push(file);
                arg.push(",snapshot=on");
            }
        }
        cmd.arg("-drive").arg(arg);
    }
    cmd
}

/// QEMU 7.2's ramfb always asks for the x86 option ROM
/// `vgabios-ramfb.bin` (which an arm machine never runs) and prints a line
/// on stderr when the machine lacks Debian's seabios package. An empty ROM
/// of that name in a directory given with `-L` (searched before QEMU's own)
/// answers the lookup; it is created next to the images. `None` when it
/// cannot be written (QEMU then prints its line, and works the same).
fn empty_vga_rom_dir(images: &Images) -> Option<PathBuf> {
    let dir = images.mvmm.parent()?.join("qemu-roms");
    let rom = dir.join("vgabios-ramfb.bin");
    if !rom.is_file() {
        fs::create_dir_all(&dir).ok()?;
        fs::write(&rom, b"").ok()?;
    }
    Some(dir)
}

/// QEMU for aarch64, started the only way the project starts it: with no
/// device that the command line does not name. Without
/// [`NO_DEFAULT_DEVICES`], `virt` adds a virtio-net-pci NIC (which wants
/// iPXE's option ROM, absent on a machine without QEMU's recommended
/// packages), a monitor and a serial setup of its own. Everything a
/// machine gets is then named by [`qemu_command`] or by the board's
/// `[qemu]` section; see [`undeclared_devices`].
pub fn qemu_system() -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.arg(NO_DEFAULT_DEVICES);
    cmd
}

/// The QEMU system emulator every machine runs in.
pub const QEMU: &str = "qemu-system-aarch64";

/// The QEMU option that creates no default device (NIC, monitor, serial,
/// display adapter, drives): [`qemu_command`] starts every machine with it.
pub const NO_DEFAULT_DEVICES: &str = "-nodefaults";

/// Why a QEMU command line would create a device that no board file
/// declares (QEMU's default devices are on: no [`NO_DEFAULT_DEVICES`]), or
/// `None`. [`Machine::start`] refuses a command line for which this says
/// something.
pub fn undeclared_devices(cmd: &Command) -> Option<String> {
    if cmd.get_args().any(|a| a == NO_DEFAULT_DEVICES) {
        return None;
    }
    Some(format!(
        "refusing to start {:?} without {NO_DEFAULT_DEVICES}: QEMU would add its default devices (a NIC that needs iPXE's option ROM among them), which no board file declares",
        cmd.get_program()
    ))
}

/// Text on the console that means a test has failed, whatever it expects.
pub const FAILURE_PATTERNS: &[&str] = &[
    "PANIC",
    "no exception vectors",
    "unexpected trap",
    "unexpected interrupt",
];

#[derive(Default)]
struct Output {
    text: String,
    /// The end of the last chunk when it may be the start of a soft wrap.
    carry: String,
    /// Output streams (stdout, stderr) that have ended.
    closed_streams: u8,
}

/// Why an expectation failed.
#[derive(Debug)]
pub enum ConsoleError {
    Timeout { wanted: String, waited: Duration },
    Failure { pattern: &'static str },
    Exited { wanted: String },
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleError::Timeout { wanted, waited } => {
                write!(f, "no {wanted:?} on the console after {waited:?}")
            }
            ConsoleError::Failure { pattern } => {
                write!(f, "failure pattern {pattern:?} on the console")
            }
            ConsoleError::Exited { wanted } => write!(f, "QEMU exited before {wanted:?} appeared"),
        }
    }
}

/// A running QEMU whose serial console the test reads and types into.
/// QEMU is killed when this is dropped.
pub struct Machine {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<(Mutex<Output>, Condvar)>,
    /// Bytes of output already matched by earlier expectations.
    cursor: usize,
}

/// Where a machine's console output goes besides the transcript.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Echo {
    Stdout,
    Silent,
}

impl Machine {
    /// Boots the default board with the images from the environment.
    pub fn boot() -> Machine {
        let (board, qemu) = load_test_board().unwrap_or_else(|e| panic!("{e}"));
        let images = Images::from_env();
        let missing = images.missing();
        assert!(
            missing.is_empty(),
            "images missing: {missing:?}; run `cargo xtask test`"
        );
        Machine::start(qemu_command(&board, &qemu, &images, Console::Piped))
    }

    /// Boots the default board with Linux in the rich VM running
    /// `command` (see `tests/rich/init`), from the images in the
    /// environment. `work` names a scratch directory for this boot.
    pub fn boot_linux(command: Option<&str>, work: &str) -> Machine {
        let dir = Images::dir_from_env();
        Machine::boot_rich(&RichSource::built(&dir), command, work)
    }

    /// Like [`Machine::boot_linux`], with the rich VM booting `source`
    /// (a user's own kernel, initramfs or command line).
    pub fn boot_rich(source: &RichSource, command: Option<&str>, work: &str) -> Machine {
        Machine::boot_rich_with(source, command, work, None)
    }

    /// Like [`Machine::boot_linux`], with the secure VM's flash in
    /// `storage` (QEMU writes to it, so its contents carry over to the next
    /// boot with the same file).
    pub fn boot_linux_with_storage(command: Option<&str>, work: &str, storage: &Path) -> Machine {
        let dir = Images::dir_from_env();
        Machine::boot_rich_with(
            &RichSource::built(&dir),
            command,
            work,
            Some(StorageImage::Persistent(storage.to_path_buf())),
        )
    }

    fn boot_rich_with(
        source: &RichSource,
        command: Option<&str>,
        work: &str,
        storage: Option<StorageImage>,
    ) -> Machine {
        let (board, qemu) = load_test_board().unwrap_or_else(|e| panic!("{e}"));
        let dir = Images::dir_from_env();
        let work = dir.join("work").join(work);
        let rich = prepare_rich_boot(&board, &qemu, &dir, source, command, &work)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut images = Images::with_rich_linux(&dir, &rich);
        if let Some(storage) = storage {
            images = images.with_storage(storage);
        }
        Machine::start(qemu_command(&board, &qemu, &images, Console::Piped))
    }

    /// Like [`Machine::boot_linux`], with a QMP socket (see [`qmp`]) to
    /// take screenshots and send input; returns the connection too.
    pub fn boot_linux_with_qmp(command: Option<&str>, work: &str) -> (Machine, qmp::Qmp) {
        Machine::boot_linux_with_qmp_args(command, work, &[])
    }

    /// Like [`Machine::boot_linux_with_qmp`], with `extra` QEMU arguments
    /// (e.g. a `filter-dump` of the rich VM's NIC).
    pub fn boot_linux_with_qmp_args(
        command: Option<&str>,
        work: &str,
        extra: &[String],
    ) -> (Machine, qmp::Qmp) {
        let (board, qemu) = load_test_board().unwrap_or_else(|e| panic!("{e}"));
        let dir = Images::dir_from_env();
        let work = dir.join("work").join(work);
        let rich = prepare_rich_boot(
            &board,
            &qemu,
            &dir,
            &RichSource::built(&dir),
            command,
            &work,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let images = Images::with_rich_linux(&dir, &rich);
        let mut cmd = qemu_command(&board, &qemu, &images, Console::Piped);
        let socket = qmp::socket_in(&work);
        let _ = fs::remove_file(&socket);
        cmd.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", socket.display()));
        cmd.args(extra);
        let machine = Machine::start(cmd);
        let qmp =
            qmp::Qmp::connect(&socket, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}"));
        (machine, qmp)
    }

    /// Starts `cmd` with piped stdio; its output is echoed to this process's
    /// stdout (captured by the test harness unless the test fails).
    pub fn start(cmd: Command) -> Machine {
        Machine::spawn(cmd, Echo::Stdout)
    }

    /// Like [`Machine::start`], without echoing the console.
    pub fn start_quiet(cmd: Command) -> Machine {
        Machine::spawn(cmd, Echo::Silent)
    }

    fn spawn(mut cmd: Command, echo: Echo) -> Machine {
        if cmd.get_program() == QEMU
            && let Some(why) = undeclared_devices(&cmd)
        {
            panic!("{why}");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = Arc::clone(&output);
            thread::spawn(move || pump(stream, &output, echo));
        }
        Machine {
            stdin: child.stdin.take(),
            child,
            output,
            cursor: 0,
        }
    }

    /// Waits until `wanted` appears after everything matched so far; fails
    /// at once on a failure pattern. Returns the output from the previous
    /// match to the end of the line holding `wanted`, as far as it has
    /// arrived (the rest of that line may still be on its way).
    pub fn expect(&mut self, wanted: &str, timeout: Duration) -> Result<String, ConsoleError> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.output;
        let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(pattern) = FAILURE_PATTERNS.iter().find(|p| out.text.contains(*p)) {
                return Err(ConsoleError::Failure { pattern });
            }
            if let Some(at) = out.text[self.cursor..].find(wanted) {
                let end = self.cursor + at + wanted.len();
                let line_end = out.text[end..]
                    .find('\n')
                    .map_or(out.text.len(), |i| end + i);
                let matched = out.text[self.cursor..line_end].to_string();
                self.cursor = end;
                return Ok(matched);
            }
            if out.closed_streams == 2 {
                return Err(ConsoleError::Exited {
                    wanted: wanted.into(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ConsoleError::Timeout {
                    wanted: wanted.into(),
                    waited: timeout,
                });
            }
            out = cond
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until every one of `wanted` has appeared after everything
    /// matched so far, in any order (events of different VMs race).
    pub fn expect_all(&mut self, wanted: &[&str], timeout: Duration) -> Result<(), ConsoleError> {
        let start = self.cursor;
        let mut end = start;
        for w in wanted {
            self.cursor = start;
            self.expect(w, timeout)?;
            end = end.max(self.cursor);
        }
        self.cursor = end;
        Ok(())
    }

    /// Waits for `wanted` unless it is already anywhere in the transcript,
    /// before the cursor too: for a line of another writer that may come
    /// before or after the lines the test follows (the cursor does not
    /// move when it is already there).
    pub fn seen_or_expect(&mut self, wanted: &str, timeout: Duration) -> Result<(), ConsoleError> {
        if !self.transcript().contains(wanted) {
            self.expect(wanted, timeout)?;
        }
        Ok(())
    }

    /// Everything the machine printed so far.
    pub fn transcript(&self) -> String {
        self.output
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .text
            .clone()
    }

    /// Types `text` on the serial console.
    pub fn send(&mut self, text: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush());
        }
    }

    /// Waits until the rich VM's command (`/mvmm/rich-cmd`) has reported
    /// its exit status and the machine has powered off cleanly; returns
    /// the transcript. Panics (a test helper) when either does not happen
    /// within `timeout`.
    #[track_caller]
    pub fn finish_rich_command(&mut self, timeout: Duration) -> String {
        if let Err(e) = self.expect("[rich] mvmm-rich: exit status", timeout) {
            panic!("{e}");
        }
        let status = self
            .wait_exit(timeout)
            .expect("QEMU did not exit after the rich VM's SYSTEM_OFF");
        assert!(status.success(), "QEMU exit status {status}");
        self.transcript()
    }

    /// Waits for QEMU to exit by itself; kills it after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

impl Machine {
    /// Pulls the plug: kills QEMU at once (SIGKILL) and waits for it. What
    /// QEMU already wrote to a storage image stays there, like data a flash
    /// chip had programmed when the power went.
    pub fn power_cut(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(mut stream: Box<dyn Read + Send>, output: &(Mutex<Output>, Condvar), echo: Echo) {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        let (lock, cond) = output;
        let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
        if n == 0 {
            out.closed_streams += 1;
            cond.notify_all();
            return;
        }
        let chunk = join_soft_wraps(&mut out.carry, &String::from_utf8_lossy(&buf[..n]));
        if echo == Echo::Stdout {
            print!("{chunk}");
        }
        out.text.push_str(&chunk);
        cond.notify_all();
    }
}

/// Console text as the tests read it: rows the console multiplexer wrapped
/// itself joined again (its soft wrap, LF CR and the writer's prefix, is
/// removed; see `mvmm_core::console::SOFT_WRAP`), carriage returns
/// dropped. `carry` holds the end of a chunk that may continue in the next.
pub fn join_soft_wraps(carry: &mut String, chunk: &str) -> String {
    let mut text = std::mem::take(carry) + chunk;
    let mut out = String::with_capacity(text.len());
    loop {
        let Some(at) = text.find("\n\r") else {
            // A trailing LF may be the start of a soft wrap (the
            // multiplexer's own newlines are CR LF).
            if text.ends_with('\n') && !text.ends_with("\r\n") {
                *carry = "\n".into();
                text.pop();
            }
            out.push_str(&text);
            break;
        };
        out.push_str(&text[..at]);
        let rest = &text[at + 2..];
        // The prefix of the continuation row: "[...] " on the same row.
        match rest.find("] ") {
            Some(end) if rest.starts_with('[') && !rest[..end].contains('\n') => {
                text = rest[end + 2..].to_string();
            }
            None if rest.len() < 24 && !rest.contains('\n') => {
                *carry = text[at..].to_string();
                break;
            }
            _ => {
                out.push('\n');
                text = rest.to_string();
            }
        }
    }
    out.replace('\r', "")
}

#[cfg(test)]
mod soft_wrap_tests {
    use super::join_soft_wraps;

    #[test]
    fn soft_wraps_are_joined_across_chunks() {
        let mut carry = String::new();
        let mut all = String::new();
        for chunk in [
            "[mvmm] vm 'secure': signature verif\n",
            "\r[mv",
            "mvmm] ied\r\n[rich] x\r\n",
        ] {
            all += &join_soft_wraps(&mut carry, chunk);
        }
        all += &join_soft_wraps(&mut carry, "");
        assert_eq!(all, "[mvmm] vm 'secure': signature verified\n[rich] x\n");
        let mut carry = String::new();
        assert_eq!(join_soft_wraps(&mut carry, "a\r\nb\n"), "a\nb");
        assert_eq!(join_soft_wraps(&mut carry, "c"), "\nc");
        // QEMU's pty adds CR before LF: a row ending in "\r\r\n" is no wrap.
        assert_eq!(join_soft_wraps(&mut carry, "d\r\r\n"), "d\n");
    }
}
