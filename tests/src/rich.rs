//! The rich VM's default image: Debian's arm64 kernel and a busybox initramfs.
//!
//! [`fetch_rich_image`] downloads Debian's `linux-image-*-arm64-unsigned` and
//! `busybox-static` (arm64) with `apt-get`, using a private apt state and cache
//! under `<target>/rich/apt` and the machine's configured sources, so the
//! machine's dpkg and apt configuration is never changed. It extracts them with
//! `dpkg-deb`, keeps only the kernel `Image`, busybox and the kernel modules the
//! rich VM needs, and packs `<target>/rich/initramfs.cpio.gz` with the `/init`
//! from `tests/rich/init`. A stamp file makes the second call instant.
//!
//! [`with_command`] appends `/mvmm/rich-cmd` to an initramfs (a second newc
//! archive; Linux unpacks concatenated archives), and the init then runs that
//! command, prints [`EXIT_STATUS_PREFIX`]`<N>` and powers off;
//! [`parse_exit_status`] finds that line in the console output.
//!
//! Console lines printed by the init (see `tests/rich/init`):
//! - `mvmm-rich: initramfs up` ([`MARKER_UP`], the benchmark marker)
//! - `mvmm-rich: module <name> loaded` or `mvmm-rich: module <name> FAILED: <why>`
//! - `mvmm-rich: ready (<n> cpus online)` ([`READY_PREFIX`])
//! - `mvmm-rich: exit status <N>` ([`EXIT_STATUS_PREFIX`]), then PSCI SYSTEM_OFF
//! - `mvmm-rich: interactive shell (exit to power off)` when there is no command.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// First line the init prints (the benchmark's "initramfs reached" marker).
pub const MARKER_UP: &str = "mvmm-rich: initramfs up";
/// Printed when the modules are loaded: `mvmm-rich: ready (<n> cpus online)`.
pub const READY_PREFIX: &str = "mvmm-rich: ready (";
/// Printed after the rich command: `mvmm-rich: exit status <N>`.
pub const EXIT_STATUS_PREFIX: &str = "mvmm-rich: exit status ";
/// Path (inside the initramfs) of the command the init runs instead of a shell.
pub const CMD_PATH: &str = "mvmm/rich-cmd";

/// Kernel modules loaded at boot (in this order), with their dependencies
/// taken from each module's `depends=` modinfo.
pub const MODULES: &[&str] = &[
    "virtio_mmio",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "virtio_input",
    "evdev",
    "virtio_blk",
    // The rich VM's NIC: a virtio-net-pci on the PCIe bus behind the SMMU.
    "virtio_pci",
    "virtio_net",
    // Android's IPC; its devices come from MODPROBE_CONF (/dev/binder).
    "binder_linux",
];

/// `/etc/modprobe.d/mvmm.conf`: module options busybox modprobe applies.
/// Debian's kernel has no binderfs, so `binder_linux` creates one misc
/// device per name in `devices=` (here `/dev/binder`, what Android used
/// before binderfs). Its built-in default is the same name; saying it here
/// keeps the device path independent of the kernel's config.
pub const MODPROBE_CONF: &str = "options binder_linux devices=binder\n";

/// Debian's kernel metapackage, whose dependency names the current kernel.
const KERNEL_META: &str = "linux-image-arm64";
const BUSYBOX_PKG: &str = "busybox-static";
const INIT: &str = include_str!("../rich/init");
const PROFILE: &str = include_str!("../rich/profile");
/// busybox udhcpc's hook: configures the address it leased.
const UDHCPC_SCRIPT: &str = include_str!("../rich/udhcpc.script");
/// Bump when the layout of `<target>/rich` or of the initramfs changes.
const LAYOUT: &str = "rich-layout-2";

/// The rich VM's default kernel and initramfs.
#[derive(Debug, Clone)]
pub struct RichImage {
    /// Uncompressed arm64 `Image` (`<target>/rich/Image`).
    pub kernel: PathBuf,
    /// gzip'd newc initramfs (`<target>/rich/initramfs.cpio.gz`).
    pub initramfs: PathBuf,
    /// The kernel release (`uname -r`), for example `6.1.0-56-arm64`.
    pub kernel_version: String,
}

type Result<T> = std::result::Result<T, String>;

fn progress(msg: &str) {
    eprintln!("xtask: rich image: {msg}");
}

/// What was fetched, as recorded in `<target>/rich/fetched.stamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fetched {
    kernel_package: String,
    kernel_package_version: String,
    kernel_version: String,
    busybox_version: String,
    /// Module load order (only those that are modules, not built in).
    modules: Vec<String>,
}

impl Fetched {
    fn to_stamp(&self) -> String {
        format!(
            "layout={LAYOUT}\nkernel-package={}\nkernel-package-version={}\nkernel-version={}\n\
             busybox-version={}\nwanted={}\nmodules={}\n",
            self.kernel_package,
            self.kernel_package_version,
            self.kernel_version,
            self.busybox_version,
            MODULES.join(","),
            self.modules.join(","),
        )
    }

    fn from_stamp(text: &str) -> Option<Self> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        if field("layout")? != LAYOUT || field("wanted")? != MODULES.join(",") {
            return None;
        }
        let modules = field("modules")?;
        Some(Fetched {
            kernel_package: field("kernel-package")?,
            kernel_package_version: field("kernel-package-version")?,
            kernel_version: field("kernel-version")?,
            busybox_version: field("busybox-version")?,
            modules: modules
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

/// Fetches (once) Debian's arm64 kernel and busybox into `target_dir/rich/`
/// and builds the initramfs. The second call only checks the stamps.
pub fn fetch_rich_image(target_dir: &Path) -> Result<RichImage> {
    let dir = target_dir.join("rich");
    if let Some(image) = cached(&dir) {
        return Ok(image);
    }
    // Serialise concurrent callers (parallel tests, two xtask runs): an
    // advisory lock, released by the kernel even if this process dies.
    mkdir(&dir)?;
    let lock_path = dir.join("lock");
    let lock = fs::File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        progress(&format!(
            "waiting for another xtask ({})",
            lock_path.display()
        ));
        lock.lock()
            .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    }
    if let Some(image) = cached(&dir) {
        return Ok(image);
    }
    let fetched = match cached_fetch(&dir) {
        Some(f) => f,
        None => {
            let f = fetch(&dir)?;
            write_atomic(&dir.join("fetched.stamp"), f.to_stamp().as_bytes())?;
            f
        }
    };
    let initramfs = dir.join("initramfs.cpio.gz");
    progress(&format!("packing {}", initramfs.display()));
    let cpio = base_initramfs(&dir, &fetched)?;
    gzip_to(&cpio, &initramfs)?;
    write_atomic(
        &dir.join("initramfs.stamp"),
        initramfs_stamp(&fetched).as_bytes(),
    )?;
    cached(&dir).ok_or_else(|| format!("{} is incomplete after building it", dir.display()))
}

/// The image when everything in `dir` is present and up to date.
fn cached(dir: &Path) -> Option<RichImage> {
    let fetched = cached_fetch(dir)?;
    let initramfs = dir.join("initramfs.cpio.gz");
    let stamp = fs::read_to_string(dir.join("initramfs.stamp")).ok()?;
    (stamp == initramfs_stamp(&fetched) && initramfs.is_file()).then(|| RichImage {
        kernel: dir.join("Image"),
        initramfs,
        kernel_version: fetched.kernel_version,
    })
}

/// What was fetched, when the fetched files are all there.
fn cached_fetch(dir: &Path) -> Option<Fetched> {
    let f = Fetched::from_stamp(&fs::read_to_string(dir.join("fetched.stamp")).ok()?)?;
    let modules_dep = dir
        .join("modules")
        .join(&f.kernel_version)
        .join("modules.dep");
    (dir.join("Image").is_file() && dir.join("busybox").is_file() && modules_dep.is_file())
        .then_some(f)
}

/// The initramfs stamp: what it was built from, including the init script.
fn initramfs_stamp(f: &Fetched) -> String {
    format!(
        "{}init-hash={:016x}\n",
        f.to_stamp(),
        fnv1a(&[
            INIT.as_bytes(),
            PROFILE.as_bytes(),
            MODPROBE_CONF.as_bytes()
        ])
    )
}

/// Writes `out`: the initramfs `base` plus `/mvmm/rich-cmd` holding `cmd`,
/// which the init runs with `sh -c` instead of starting a shell.
pub fn with_command(base: &Path, cmd: &str, out: &Path) -> Result<()> {
    with_files(base, Some(cmd), &[], out)
}

/// A file added to the initramfs: path inside it, contents, mode.
pub type ExtraFile = (String, Vec<u8>, u32);

/// Writes `base` plus `/mvmm/rich-cmd` (when `cmd` is given) and `files` as
/// a second archive (Linux unpacks concatenated archives; later entries
/// win). Parent directories are created.
pub fn with_files(base: &Path, cmd: Option<&str>, files: &[ExtraFile], out: &Path) -> Result<()> {
    let mut bytes =
        fs::read(base).map_err(|e| format!("cannot read initramfs {}: {e}", base.display()))?;
    // The kernel's unpacker skips zero bytes between archives but wants an
    // uncompressed archive to start at a 4-byte aligned offset.
    while !bytes.len().is_multiple_of(4) {
        bytes.push(0);
    }
    let mut extra = Cpio::new();
    let mut dirs = BTreeSet::new();
    let paths = cmd
        .iter()
        .map(|_| CMD_PATH)
        .chain(files.iter().map(|(p, _, _)| p.as_str()));
    for path in paths {
        let mut parent = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_string_lossy().into_owned());
            parent = p.parent();
        }
        for dir in chain.into_iter().rev() {
            if dirs.insert(dir.clone()) {
                extra.dir(&dir);
            }
        }
    }
    if let Some(cmd) = cmd {
        extra.file(CMD_PATH, 0o644, cmd.as_bytes());
    }
    for (path, data, mode) in files {
        extra.file(path, *mode, data);
    }
    bytes.extend_from_slice(&extra.finish());
    write_atomic(out, &bytes)
}

/// The exit status of the rich command, from the last
/// `mvmm-rich: exit status <N>` anywhere in a console line (lines may carry a
/// prefix such as `[rich] `). `None` when there is none.
pub fn parse_exit_status(console: &str) -> Option<i32> {
    console.lines().rev().find_map(|line| {
        let at = line.rfind(EXIT_STATUS_PREFIX)?;
        let rest = &line[at + EXIT_STATUS_PREFIX.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

// ---------------------------------------------------------------------------
// Fetching

fn fetch(dir: &Path) -> Result<Fetched> {
    for tool in ["apt-get", "apt-cache", "dpkg-deb", "gzip"] {
        if Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return Err(format!(
                "`{tool}` not found: the default rich VM image is built from Debian's arm64 \
                 packages with apt-get, dpkg-deb and gzip (a Debian host); elsewhere boot your \
                 own image with --rich-kernel PATH --rich-initrd PATH"
            ));
        }
    }
    let apt = dir.join("apt");
    for sub in ["state/lists/partial", "cache/archives/partial"] {
        mkdir(&apt.join(sub))?;
    }
    // An empty dpkg status: apt then sees no installed package, and never
    // looks at (let alone changes) the machine's dpkg database.
    write_atomic(&apt.join("status"), b"")?;

    let start = Instant::now();
    progress("apt-get update (arm64 index, private apt state under target/rich/apt)");
    apt_command(&apt, "apt-get", &["-q", "update"], None)?;

    let kernel_package = resolve_kernel_package(&apt)?;
    let kernel_package_version = candidate_version(&apt, &kernel_package)?;
    let busybox_version = candidate_version(&apt, BUSYBOX_PKG)?;
    progress(&format!(
        "downloading {kernel_package} {kernel_package_version} and {BUSYBOX_PKG} \
         {busybox_version} (arm64, about 60 MB)"
    ));
    let debs = dir.join("debs");
    remove_dir(&debs)?;
    mkdir(&debs)?;
    let kernel_arg = format!("{kernel_package}:arm64");
    let busybox_arg = format!("{BUSYBOX_PKG}:arm64");
    apt_command(
        &apt,
        "apt-get",
        &["-q", "download", &kernel_arg, &busybox_arg],
        Some(&debs),
    )?;

    let extract = dir.join("extract");
    remove_dir(&extract)?;
    mkdir(&extract)?;
    for pkg in [kernel_package.as_str(), BUSYBOX_PKG] {
        let deb = find_deb(&debs, pkg)?;
        progress(&format!("extracting {}", deb.display()));
        run(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&extract),
            "dpkg-deb -x",
        )?;
    }

    // The kernel: /boot/vmlinuz-<release>, an uncompressed Image on arm64.
    let (vmlinuz, kernel_version) = find_vmlinuz(&extract.join("boot"))?;
    let image = read_kernel_image(&vmlinuz)?;
    write_atomic(&dir.join("Image"), &image)?;

    let busybox = extract.join("bin/busybox");
    if !busybox.is_file() {
        return Err(format!(
            "{BUSYBOX_PKG} has no /bin/busybox ({} missing)",
            busybox.display()
        ));
    }
    let bb = fs::read(&busybox).map_err(|e| format!("cannot read {}: {e}", busybox.display()))?;
    write_atomic(&dir.join("busybox"), &bb)?;

    let src = extract.join("lib/modules").join(&kernel_version);
    let dst = dir.join("modules").join(&kernel_version);
    remove_dir(&dir.join("modules"))?;
    let modules = copy_modules(&src, &dst)?;

    remove_dir(&extract)?;
    remove_dir(&debs)?;
    progress(&format!(
        "kernel {kernel_version} ({kernel_package} {kernel_package_version}), busybox \
         {busybox_version}, modules {} ready in {:.1} s",
        modules.join(" "),
        start.elapsed().as_secs_f64()
    ));
    Ok(Fetched {
        kernel_package,
        kernel_package_version,
        kernel_version,
        busybox_version,
        modules,
    })
}

/// Runs apt-get or apt-cache with the private state, arm64 only, the
/// machine's configured sources.
fn apt_command(apt: &Path, tool: &str, args: &[&str], cwd: Option<&Path>) -> Result<String> {
    let opts = [
        format!("Dir::State={}", apt.join("state").display()),
        format!("Dir::Cache={}", apt.join("cache").display()),
        format!("Dir::State::status={}", apt.join("status").display()),
        "APT::Architecture=arm64".to_string(),
        "APT::Architectures=arm64".to_string(),
        // The private state needs no lock, and apt's `_apt` sandbox user may
        // not be able to write into target/.
        "Debug::NoLocking=1".to_string(),
        "APT::Sandbox::User=root".to_string(),
    ];
    let mut cmd = Command::new(tool);
    for o in &opts {
        cmd.arg("-o").arg(o);
    }
    cmd.args(args);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    run(&mut cmd, &format!("{tool} {}", args.join(" "))).map_err(|e| {
        format!(
            "{e}\n(the rich VM's kernel and busybox come from Debian's arm64 packages through \
             this machine's configured apt sources; without them use --rich-kernel and \
             --rich-initrd)"
        )
    })
}

/// The kernel package to download: `linux-image-arm64`'s dependency, as its
/// `-unsigned` variant, else the newest `linux-image-6.1.*-arm64-unsigned`.
fn resolve_kernel_package(apt: &Path) -> Result<String> {
    if let Ok(show) = apt_command(
        apt,
        "apt-cache",
        &["show", "--no-all-versions", KERNEL_META],
        None,
    ) && let Some(pkg) = kernel_from_metapackage(&show)
        && candidate_version(apt, &pkg).is_ok()
    {
        return Ok(pkg);
    }
    let names = apt_command(apt, "apt-cache", &["pkgnames", "linux-image-6.1."], None)?;
    newest_kernel_6_1(&names)
        .filter(|pkg| candidate_version(apt, pkg).is_ok())
        .ok_or_else(|| {
            format!(
                "no arm64 kernel package found: neither {KERNEL_META}'s dependency nor any \
                 linux-image-6.1.*-arm64-unsigned is in the configured apt sources"
            )
        })
}

fn candidate_version(apt: &Path, pkg: &str) -> Result<String> {
    let show = apt_command(apt, "apt-cache", &["show", "--no-all-versions", pkg], None)?;
    stanza_field(&show, "Version")
        .map(str::to_string)
        .ok_or_else(|| format!("package {pkg} has no Version in the arm64 index"))
}

/// A field of the first stanza of `apt-cache show` output.
fn stanza_field<'a>(show: &'a str, field: &str) -> Option<&'a str> {
    show.lines()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// From `apt-cache show linux-image-arm64`: the kernel image package it
/// depends on, as the `-unsigned` package (same files, no EFI signature
/// wrapper, no dependency on the signing template).
fn kernel_from_metapackage(show: &str) -> Option<String> {
    let depends = stanza_field(show, "Depends")?;
    depends
        .split([',', '|'])
        .map(|d| d.trim().split([' ', '(', ':']).next().unwrap_or(""))
        .find(|name| {
            name.starts_with("linux-image-")
                && (name.ends_with("-arm64") || name.ends_with("-arm64-unsigned"))
                && name != &KERNEL_META
        })
        .map(|name| {
            if name.ends_with("-unsigned") {
                name.to_string()
            } else {
                format!("{name}-unsigned")
            }
        })
}

/// The newest `linux-image-6.1.<a>-<abi>-arm64-unsigned` in a list of names
/// (one per line), compared numerically.
fn newest_kernel_6_1(names: &str) -> Option<String> {
    names
        .lines()
        .map(str::trim)
        .filter_map(|name| {
            let mid = name
                .strip_prefix("linux-image-6.1.")?
                .strip_suffix("-arm64-unsigned")?;
            let key: Vec<u64> = mid
                .split(['.', '-'])
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?;
            Some((key, name))
        })
        .max()
        .map(|(_, name)| name.to_string())
}

fn find_deb(debs: &Path, pkg: &str) -> Result<PathBuf> {
    let prefix = format!("{pkg}_");
    read_dir(debs)?
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .ok_or_else(|| format!("apt-get download left no {pkg}_*.deb in {}", debs.display()))
}

fn find_vmlinuz(boot: &Path) -> Result<(PathBuf, String)> {
    read_dir(boot)?
        .into_iter()
        .find_map(|p| {
            let release = p
                .file_name()?
                .to_str()?
                .strip_prefix("vmlinuz-")?
                .to_string();
            Some((p, release))
        })
        .ok_or_else(|| format!("the kernel package has no vmlinuz-* in {}", boot.display()))
}

/// The kernel as an uncompressed arm64 Image (gunzipped if needed).
fn read_kernel_image(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        bytes = run_bytes(Command::new("gzip").arg("-dc").arg(path), "gzip -dc")?;
    }
    if bytes.get(56..60) != Some(b"ARM\x64") {
        return Err(format!(
            "{} is not an arm64 Linux Image (no ARM\\x64 magic)",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Copies MODULES and their dependencies from `src` (an extracted
/// /lib/modules/<release>) to `dst`, decompressed, and writes a modules.dep
/// for busybox modprobe. Returns the names to modprobe at boot, in order
/// (requested modules that are built in are left out).
fn copy_modules(src: &Path, dst: &Path) -> Result<Vec<String>> {
    let mut index = BTreeMap::new();
    index_modules(src, &src.join("kernel"), &mut index)?;
    let builtin: BTreeSet<String> = fs::read_to_string(src.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(module_name)
        .collect();

    let mut order = Vec::new(); // dependencies first
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut to_load = Vec::new();
    for &m in MODULES {
        if index.contains_key(m) {
            to_load.push(m.to_string());
            visit(
                m,
                &index,
                src,
                &builtin,
                &mut deps,
                &mut contents,
                &mut order,
                &mut Vec::new(),
            )?;
        } else if builtin.contains(m) {
            progress(&format!("module {m} is built into this kernel"));
        } else {
            return Err(format!(
                "kernel module {m} is neither in {} nor built in (modules.builtin)",
                src.display()
            ));
        }
    }
    let mut dep_file = String::new();
    for name in &order {
        let rel = ko_path(&index[name]);
        let data = &contents[name];
        let out = dst.join(&rel);
        if let Some(parent) = out.parent() {
            mkdir(parent)?;
        }
        write_atomic(&out, data)?;
        // modules.dep lists every transitive dependency, dependents before
        // what they depend on (modprobe loads the list from the end).
        let mut closure = Vec::new();
        transitive(name, &deps, &mut closure);
        let list: Vec<String> = closure.iter().rev().map(|d| ko_path(&index[d])).collect();
        dep_file.push_str(&format!("{rel}: {}\n", list.join(" ")).replace(": \n", ":\n"));
    }
    write_atomic(&dst.join("modules.dep"), dep_file.as_bytes())?;
    Ok(to_load)
}

/// Depth-first over `depends=`: pushes `name` after its dependencies.
#[allow(clippy::too_many_arguments)]
fn visit(
    name: &str,
    index: &BTreeMap<String, String>,
    src: &Path,
    builtin: &BTreeSet<String>,
    deps: &mut BTreeMap<String, Vec<String>>,
    contents: &mut BTreeMap<String, Vec<u8>>,
    order: &mut Vec<String>,
    stack: &mut Vec<String>,
) -> Result<()> {
    if contents.contains_key(name) {
        return Ok(());
    }
    if stack.iter().any(|s| s == name) {
        return Err(format!(
            "kernel module dependency cycle through {name}: {stack:?}"
        ));
    }
    let rel = &index[name];
    let data = read_module(&src.join(rel))?;
    let mut direct = Vec::new();
    for d in modinfo_depends(&data) {
        if index.contains_key(&d) {
            direct.push(d);
        } else if !builtin.contains(&d) {
            return Err(format!(
                "kernel module {name} depends on {d}, which is not in {}",
                src.display()
            ));
        }
    }
    stack.push(name.to_string());
    for d in &direct {
        visit(d, index, src, builtin, deps, contents, order, stack)?;
    }
    stack.pop();
    deps.insert(name.to_string(), direct);
    contents.insert(name.to_string(), data);
    order.push(name.to_string());
    Ok(())
}

/// All dependencies of `name`, each after its own dependencies.
fn transitive(name: &str, deps: &BTreeMap<String, Vec<String>>, out: &mut Vec<String>) {
    for d in deps.get(name).into_iter().flatten() {
        if !out.contains(d) {
            transitive(d, deps, out);
            out.push(d.clone());
        }
    }
}

/// Module name -> path relative to /lib/modules/<release> (possibly compressed).
fn index_modules(root: &Path, dir: &Path, index: &mut BTreeMap<String, String>) -> Result<()> {
    for p in read_dir(dir)? {
        if p.is_dir() {
            index_modules(root, &p, index)?;
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str())
            && n.contains(".ko")
            && let Ok(rel) = p.strip_prefix(root)
        {
            index.insert(module_name(n), rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// `kernel/net/vmw_vsock/vsock.ko.xz` -> `vsock`; `-` and `_` are the same
/// in module names.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// The path a module gets in the initramfs: always an uncompressed `.ko`.
fn ko_path(rel: &str) -> String {
    match rel.find(".ko") {
        Some(i) => format!("{}.ko", &rel[..i]),
        None => rel.to_string(),
    }
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let s = path.to_string_lossy();
    let tool = if s.ends_with(".ko.xz") {
        "xz"
    } else if s.ends_with(".ko.zst") {
        "zstd"
    } else if s.ends_with(".ko.gz") {
        "gzip"
    } else {
        return fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    };
    run_bytes(
        Command::new(tool).arg("-dc").arg(path),
        &format!("{tool} -dc {}", path.display()),
    )
}

/// The `depends=` list of a module's `.modinfo` section (NUL-separated
/// `key=value` strings).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let value = &ko[at + KEY.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

// ---------------------------------------------------------------------------
// The initramfs

fn base_initramfs(dir: &Path, f: &Fetched) -> Result<Vec<u8>> {
    let mut c = Cpio::new();
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run",
    ] {
        c.dir(d);
    }
    c.dir_mode("root", 0o700);
    c.chardev("dev/console", 0o600, 5, 1);
    c.chardev("dev/null", 0o666, 1, 3);
    let busybox = dir.join("busybox");
    c.file(
        "bin/busybox",
        0o755,
        &fs::read(&busybox).map_err(|e| format!("cannot read {}: {e}", busybox.display()))?,
    );
    c.symlink("bin/sh", "busybox");
    c.file("init", 0o755, INIT.as_bytes());
    c.dir("etc");
    c.file("etc/profile", 0o644, PROFILE.as_bytes());
    c.file("etc/udhcpc.script", 0o755, UDHCPC_SCRIPT.as_bytes());
    c.dir("etc/modprobe.d");
    c.file("etc/modprobe.d/mvmm.conf", 0o644, MODPROBE_CONF.as_bytes());
    c.dir("etc/mvmm");
    c.file(
        "etc/mvmm/modules",
        0o644,
        format!("{}\n", f.modules.join("\n")).as_bytes(),
    );
    c.dir("lib");
    c.dir("lib/modules");
    let modules = dir.join("modules").join(&f.kernel_version);
    add_tree(
        &mut c,
        &modules,
        &format!("lib/modules/{}", f.kernel_version),
    )?;
    Ok(c.finish())
}

fn add_tree(c: &mut Cpio, src: &Path, name: &str) -> Result<()> {
    c.dir(name);
    for p in read_dir(src)? {
        let child = format!(
            "{name}/{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        );
        if p.is_dir() {
            add_tree(c, &p, &child)?;
        } else {
            let data = fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            c.file(&child, 0o644, &data);
        }
    }
    Ok(())
}

/// A writer for the newc ("070701") cpio format the kernel unpacks:
/// 110-byte ASCII-hex header, NUL-terminated name, data, each padded to 4.
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    pub fn new() -> Self {
        Cpio {
            buf: Vec::new(),
            ino: 1,
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.dir_mode(name, 0o755);
    }

    pub fn dir_mode(&mut self, name: &str, perm: u32) {
        self.entry(name, 0o040000 | perm, 2, (0, 0), b"");
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, 1, (0, 0), data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, 1, (0, 0), target.as_bytes());
    }

    pub fn chardev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, 1, (major, minor), b"");
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.ino += 1;
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Appends the `TRAILER!!!` entry and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, 1, (0, 0), b"");
        self.buf
    }
}

impl Default for Cpio {
    fn default() -> Self {
        Self::new()
    }
}

fn gzip_to(data: &[u8], out: &Path) -> Result<()> {
    let raw = out.with_extension("tmp-raw");
    write_atomic(&raw, data)?;
    let gz = run_bytes(Command::new("gzip").arg("-n").arg("-c").arg(&raw), "gzip")?;
    let _ = fs::remove_file(&raw);
    write_atomic(out, &gz)
}

// ---------------------------------------------------------------------------
// Helpers

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn run(cmd: &mut Command, what: &str) -> Result<String> {
    run_bytes(cmd, what).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn run_bytes(cmd: &mut Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{what}`: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "`{what}` failed ({}):\n{}",
            out.status,
            tail.join("\n")
        ));
    }
    Ok(out.stdout)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{seq}", std::process::id()));
    fs::write(&tmp, data).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path)
        .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), path.display()))
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn remove_dir(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Directory entries, sorted (reproducible archives).
fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read directory {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_found_in_noisy_console() {
        assert_eq!(parse_exit_status("mvmm-rich: exit status 0\n"), Some(0));
        assert_eq!(
            parse_exit_status("junk\n[rich] mvmm-rich: exit status 3\r\n[  1.0] reboot"),
            Some(3)
        );
        assert_eq!(
            parse_exit_status("\u{1b}[0mmvmm-rich: exit status 127[ 2.1] reboot: Power down"),
            Some(127)
        );
        // The init's line comes last: an earlier echo by the command loses.
        assert_eq!(
            parse_exit_status("mvmm-rich: exit status 9\nmvmm-rich: exit status 1\n"),
            Some(1)
        );
    }

    #[test]
    fn exit_status_absent_or_garbage() {
        assert_eq!(parse_exit_status(""), None);
        assert_eq!(
            parse_exit_status("mvmm-rich: ready (2 cpus online)\n\u{0}\u{ff}garbage"),
            None
        );
        assert_eq!(
            parse_exit_status("mvmm-rich: exit status \nmvmm-rich: exit status x1"),
            None
        );
        assert_eq!(
            parse_exit_status("mvmm-rich: exit status 99999999999999"),
            None
        );
        // A truncated last line does not hide an earlier complete one.
        assert_eq!(
            parse_exit_status("mvmm-rich: exit status 4\nmvmm-rich: exit sta"),
            Some(4)
        );
    }

    #[test]
    fn cpio_newc_layout() {
        let mut c = Cpio::new();
        c.file("init", 0o755, b"abcde");
        let a = c.finish();
        assert_eq!(&a[..6], b"070701");
        let field = |i: usize| {
            u32::from_str_radix(std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        assert_eq!(field(0), 1); // ino
        assert_eq!(field(1), 0o100755); // mode
        assert_eq!(field(6), 5); // filesize
        assert_eq!(field(11), 5); // namesize with NUL
        // 110 + "init\0" = 115, padded to 116; data 5 padded to 8.
        assert_eq!(&a[110..115], b"init\0");
        assert_eq!(a[115], 0);
        assert_eq!(&a[116..121], b"abcde");
        assert_eq!(&a[121..124], &[0, 0, 0]);
        assert_eq!(&a[124..130], b"070701");
        assert_eq!(&a[124 + 110..124 + 121], b"TRAILER!!!\0");
        assert_eq!(a.len() % 4, 0);
    }

    #[test]
    fn cpio_device_and_symlink() {
        let mut c = Cpio::new();
        c.chardev("dev/console", 0o600, 5, 1);
        c.symlink("bin/sh", "busybox");
        let a = c.finish();
        let hex = |off: usize, i: usize| {
            u32::from_str_radix(
                std::str::from_utf8(&a[off + 6 + 8 * i..off + 14 + 8 * i]).unwrap(),
                16,
            )
            .unwrap()
        };
        assert_eq!(hex(0, 1), 0o020600);
        assert_eq!((hex(0, 9), hex(0, 10)), (5, 1));
        // 110 + "dev/console\0" = 122, padded to 124; no data.
        assert_eq!(hex(124, 1), 0o120777);
        assert_eq!(hex(124, 6), 7);
    }

    #[test]
    fn kernel_package_from_metapackage() {
        let show = "Package: linux-image-arm64\nSource: linux-signed-arm64 (6.1.192+2)\n\
                    Version: 6.1.192-2\nDepends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)\n\
                    Description: Linux for 64-bit ARMv8 machines (meta-package)\n\n\
                    Package: linux-image-arm64\nVersion: 6.1.176-1\n\
                    Depends: linux-image-6.1.0-50-arm64 (= 6.1.176-1)\n";
        assert_eq!(
            kernel_from_metapackage(show).as_deref(),
            Some("linux-image-6.1.0-56-arm64-unsigned")
        );
        let unsigned = "Package: linux-image-arm64\nDepends: linux-image-6.12.38+deb13-arm64-unsigned (= 6.12.38-1) | foo\n";
        assert_eq!(
            kernel_from_metapackage(unsigned).as_deref(),
            Some("linux-image-6.12.38+deb13-arm64-unsigned")
        );
        assert_eq!(
            kernel_from_metapackage("Package: x\nDepends: libc6\n"),
            None
        );
        assert_eq!(kernel_from_metapackage("Package: x\n"), None);
    }

    #[test]
    fn newest_6_1_kernel_numerically() {
        let names = "linux-image-6.1.0-9-arm64-unsigned\nlinux-image-6.1.0-56-arm64\n\
                     linux-image-6.1.0-10-arm64-unsigned\nlinux-image-6.1.0-56-cloud-arm64-unsigned\n\
                     linux-image-6.1.0-47-rt-arm64-unsigned\nlinux-image-6.1.0-56-arm64-dbg\n\
                     linux-image-6.12.115+deb12-arm64-unsigned\n";
        assert_eq!(
            newest_kernel_6_1(names).as_deref(),
            Some("linux-image-6.1.0-10-arm64-unsigned")
        );
        assert_eq!(newest_kernel_6_1("linux-image-6.1.0-56-arm64\n"), None);
    }

    #[test]
    fn modinfo_and_module_names() {
        let ko = b"\x7fELF....\0license=GPL\0depends=vmw_vsock_virtio_transport_common,vsock\0intree=Y\0";
        assert_eq!(
            modinfo_depends(ko),
            ["vmw_vsock_virtio_transport_common", "vsock"]
        );
        assert!(modinfo_depends(b"\0depends=\0name=virtio_mmio\0").is_empty());
        assert!(modinfo_depends(b"no modinfo").is_empty());
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio-mmio.ko.xz"),
            "virtio_mmio"
        );
        assert_eq!(
            ko_path("kernel/net/vmw_vsock/vsock.ko.zst"),
            "kernel/net/vmw_vsock/vsock.ko"
        );
    }

    #[test]
    fn stamp_round_trip() {
        let f = Fetched {
            kernel_package: "linux-image-6.1.0-56-arm64-unsigned".into(),
            kernel_package_version: "6.1.192-2".into(),
            kernel_version: "6.1.0-56-arm64".into(),
            busybox_version: "1:1.35.0-4+deb12u1+b1".into(),
            modules: vec!["virtio_mmio".into(), "vsock".into()],
        };
        assert_eq!(Fetched::from_stamp(&f.to_stamp()), Some(f.clone()));
        assert_eq!(
            Fetched::from_stamp(&f.to_stamp().replace(LAYOUT, "old")),
            None
        );
    }
}
