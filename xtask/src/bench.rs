//! `cargo xtask bench`: what mvmm costs, against a baseline measured in the
//! same run.
//!
//! The same Debian kernel and initramfs boot twice: on bare QEMU (Linux at
//! EL1, no hypervisor, the same vCPU count and RAM size as the rich VM) and
//! as the rich VM under mvmm. Each boot runs a CPU-bound workload
//! (`sha256sum` of 64 MiB from tmpfs). Every figure is taken two ways:
//! wall time on this machine, and deterministic guest time under
//! `-icount shift=0,sleep=off` (one virtual nanosecond per instruction, so
//! the figure is an instruction count that does not depend on host load).
//!
//! Then the VMM channel: one more boot under mvmm per mode runs `chan-tool`
//! in the rich VM (64-byte round trips through the secure VM's echo service
//! against an AF_UNIX ping-pong between two rich-VM processes, and 64 KiB
//! echo throughput); the wall-clock boot also times a payment approval from
//! `mvmm-pay request` to the token, with the trusted prompt answered by the
//! harness the moment it appears.
//!
//! Under -icount, mvmm's exit counts (`mvmm_core::exits`, logged when the
//! VM powers off) give exits per guest second of each workload: the boot
//! (from one more boot that runs nothing), `dd` and `sha256sum` (that
//! boot's counts subtracted), and the channel workload.
//!
//! Results are printed as a table and written to target/bench/results.json.
//! `MVMM_BENCH=boot`, `channel`, `micro` (the probe guest's
//! microbenchmarks, bench_micro.rs) or `nic` (the NIC's throughput,
//! bench_nic.rs) runs one part only.
//!
//! `MVMM_PROFILE=1` (opt-in, off by default) also profiles the boot
//! benchmark's `-icount` boots with the insn-profile QEMU plugin
//! (tests/insn-profile): guest instructions per translated block and vCPU,
//! cut at every `/dev/kmsg` marker, compared by function in
//! target/bench/profile-report.md (see docs/benchmarks.md).

use mvmm_core::exits::{ExitCounts, ExitKind};
use mvmm_tests::{
    Console, Images, Machine, RICH_CMDLINE, RichSource, load_board, payment, prepare_rich_boot,
    qemu_command, rich,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use std::{fs, io};

/// The workload: 64 MiB of zeros hashed from tmpfs, bracketed by kernel
/// log lines whose timestamps give its guest duration.
const WORKLOAD: &str = "echo 'mvmm-bench: dd start' > /dev/kmsg; \
    dd if=/dev/zero of=/tmp/z bs=1048576 count=64 2>/dev/null; \
    echo 'mvmm-bench: sha256 start' > /dev/kmsg; sha256sum /tmp/z; \
    echo 'mvmm-bench: sha256 end' > /dev/kmsg";
const MARKER: &str = "mvmm-rich: initramfs up";
const MARKER_KERNEL: &str = "mvmm-rich: initramfs up (kernel clock)";
const LIMIT: Duration = Duration::from_secs(300);
/// QEMU's deterministic mode: one virtual nanosecond per instruction, the
/// RTC on the virtual clock.
pub const ICOUNT: [&str; 4] = [
    "-icount",
    "shift=0,sleep=off",
    "-rtc",
    "base=2020-01-01T00:00:00,clock=vm",
];

/// Round trips of each kind and 64 KiB messages per channel boot.
const RTT_ITERS: u32 = 1000;
const THROUGHPUT_COUNT: u32 = 64;
/// The channel workload: the echo service's round trips, the AF_UNIX
/// baseline in the same boot, echo throughput. Any failure fails the boot.
fn channel_workload() -> String {
    format!(
        "set -e; \
         chan-tool echo-rtt --port echo --size 64 --iters {RTT_ITERS}; \
         chan-tool unix-rtt --size 64 --iters {RTT_ITERS}; \
         chan-tool echo-throughput --port echo --size 65536 --count {THROUGHPUT_COUNT}"
    )
}
/// Around the channel workload under -icount (its exits per guest second).
const CHAN_START: &str = "mvmm-bench: chan start";
const CHAN_END: &str = "mvmm-bench: chan end";
/// Appended to the wall-clock boot: a payment approval bracketed by kernel
/// log lines (the guest's clock, microseconds), then the same over a
/// session that is already open: the payment HAL (`mvmm-payment-hal`, as a
/// wallet on Android reaches it over binder) opens its session for a
/// `status` first, so the second request pays for no handshake.
const PAY_START: &str = "mvmm-bench: pay start";
const PAY_END: &str = "mvmm-bench: pay end";
const WARM_START: &str = "mvmm-bench: warm pay start";
const WARM_END: &str = "mvmm-bench: warm pay end";
fn payment_workload() -> String {
    let request = format!(
        "mvmm-pay request --amount {} --currency {} --merchant '{}' --json",
        payment::AMOUNT,
        payment::CURRENCY,
        payment::MERCHANT
    );
    format!(
        "mvmm-pay enroll --label 'Bench card' --json; \
         echo '{PAY_START}' > /dev/kmsg; {request}; echo '{PAY_END}' > /dev/kmsg; \
         mvmm-payment-hal & hal=$!; \
         MVMM_BINDER=1 mvmm-pay status --json > /dev/null; \
         echo '{WARM_START}' > /dev/kmsg; MVMM_BINDER=1 {request}; echo '{WARM_END}' > /dev/kmsg; \
         kill $hal"
    )
}

/// One row of results.json.
pub struct Entry {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    pub baseline: Option<f64>,
}

/// What one boot measured.
struct Boot {
    /// Host seconds from QEMU's start to the marker on the console.
    wall_marker: f64,
    /// Kernel clock (s) at the marker and around the workload.
    kernel_marker: f64,
    kernel_workload: f64,
    /// Kernel clock (s) from `dd` to the end of `sha256sum`.
    kernel_dd_sha: f64,
    /// The rich VM's exits over the whole run (under mvmm).
    exits: Option<ExitCounts>,
    /// The whole console.
    transcript: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Host {
    Bare,
    Mvmm,
}

/// `cargo xtask bench`: builds the images, runs every benchmark and writes
/// `target/bench/results.json`.
pub(crate) fn command(board: &str) -> crate::Result {
    crate::ensure_packages()?;
    let images = crate::build(board)?;
    let dir = images.dir();
    crate::step(
        "benchmarks: Linux boot and a workload on bare QEMU and under mvmm, then the VMM channel; wall and -icount",
    );
    let entries = bench(board, &dir)?;
    report(
        &entries,
        &crate::target_dir().join("bench").join("results.json"),
    )
    .map_err(|e| e.to_string().into())
}

/// Runs the benchmarks for `board` with images in `dir`.
pub fn bench(board: &str, dir: &Path) -> Result<Vec<Entry>, String> {
    let only = std::env::var("MVMM_BENCH").unwrap_or_default();
    let mut results = Vec::new();
    if only.is_empty() || only == "boot" || only == "channel" {
        // The boot's own exits, subtracted from each workload's run.
        eprintln!(
            "bench: booting Linux under mvmm, -icount, to the initramfs only (exit counts) ..."
        );
        let boot_only = boot_only_exits(board, dir)?;
        results.extend(exit_rates("boot", &boot_only.0, boot_only.1));
        if only != "channel" {
            results.extend(boot_benchmarks(board, dir, &boot_only.0)?);
        }
        if only != "boot" {
            results.extend(channel_benchmarks(board, dir, &boot_only.0)?);
        }
    }
    if only.is_empty() || only == "micro" {
        results.extend(crate::bench_micro::micro_benchmarks(board, dir)?);
    }
    if only.is_empty() || only == "nic" {
        results.extend(crate::bench_nic::nic_benchmarks(board, dir)?);
    }
    Ok(results)
}

/// Linux boot and sha256: bare QEMU against mvmm, wall and -icount.
fn boot_benchmarks(board: &str, dir: &Path, boot_exits: &ExitCounts) -> Result<Vec<Entry>, String> {
    let (file, qemu) = load_board(board)?;
    let work = dir.join("work").join("bench");
    let rich = prepare_rich_boot(
        &file,
        &qemu,
        dir,
        &RichSource::built(dir),
        Some(WORKLOAD),
        &work,
    )?;
    let profile = match std::env::var(PROFILE_VAR).as_deref() {
        Ok("1") => Some(Profiling::prepare(&file, &qemu, dir)?),
        _ => None,
    };
    let mut results = Vec::new();
    for icount in [false, true] {
        let mut boots = Vec::new();
        for host in [Host::Bare, Host::Mvmm] {
            let label = match (host, icount) {
                (Host::Bare, false) => "bare QEMU",
                (Host::Mvmm, false) => "under mvmm",
                (Host::Bare, true) => "bare QEMU, -icount",
                (Host::Mvmm, true) => "under mvmm, -icount",
            };
            eprintln!("bench: booting Linux {label} ...");
            let mut cmd = match host {
                Host::Bare => bare_linux(&file, &qemu, &rich)?,
                Host::Mvmm => {
                    let images = Images::with_rich_linux(dir, &rich);
                    qemu_command(&file, &qemu, &images, Console::Piped)
                }
            };
            if icount {
                cmd.args(ICOUNT);
                if let Some(p) = &profile {
                    cmd.arg("-plugin").arg(p.plugin_arg(host));
                }
            }
            let boot = measure(cmd)?;
            if icount && let Some(p) = &profile {
                let console = p.profile(host).with_extension("console.txt");
                fs::write(&console, &boot.transcript)
                    .map_err(|e| format!("{}: {e}", console.display()))?;
            }
            boots.push(boot);
        }
        let (bare, mvmm) = (&boots[0], &boots[1]);
        if icount && let Some(p) = &profile {
            p.report(dir)?;
        }
        if icount {
            let full = mvmm
                .exits
                .ok_or("bench: mvmm logged no exit counts for vm 'rich'")?;
            results.extend(exit_rates(
                "dd_sha256",
                &full.minus(boot_exits),
                mvmm.kernel_dd_sha,
            ));
            results.push(Entry {
                name: "linux_boot_to_initramfs_icount".into(),
                unit: "guest_ms",
                value: mvmm.kernel_marker * 1e3,
                baseline: Some(bare.kernel_marker * 1e3),
            });
            results.push(Entry {
                name: "sha256_64mib_icount".into(),
                unit: "guest_ms",
                value: mvmm.kernel_workload * 1e3,
                baseline: Some(bare.kernel_workload * 1e3),
            });
        } else {
            results.push(Entry {
                name: "linux_boot_to_initramfs_wall".into(),
                unit: "s",
                value: mvmm.wall_marker,
                baseline: Some(bare.wall_marker),
            });
            results.push(Entry {
                name: "sha256_64mib_wall".into(),
                unit: "s",
                value: mvmm.kernel_workload,
                baseline: Some(bare.kernel_workload),
            });
        }
    }
    Ok(results)
}

/// Opt-in profiling of the boot benchmark's -icount boots: `MVMM_PROFILE=1`.
const PROFILE_VAR: &str = "MVMM_PROFILE";
/// The kernel function the profile is cut at: every `echo ... > /dev/kmsg`
/// (the workload's markers) calls it once.
const PROFILE_MARK: &str = "devkmsg_write";

/// The insn-profile plugin, built, and the kernel's symbols, read from a
/// bare boot (`nokaslr`: the same addresses in every boot of this kernel).
struct Profiling {
    plugin: std::path::PathBuf,
    report_tool: std::path::PathBuf,
    out: std::path::PathBuf,
    mark: u64,
}

impl Profiling {
    fn prepare(
        file: &mvmm_core::config::BoardFile,
        qemu: &mvmm_core::config::QemuSection,
        dir: &Path,
    ) -> Result<Profiling, String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("xtask has no parent directory")?;
        let build = crate::target_dir().join("insn-profile");
        eprintln!("bench: building the insn-profile plugin (tests/insn-profile) ...");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["build", "--release", "--manifest-path"])
            .arg(root.join("tests/insn-profile/Cargo.toml"))
            .arg("--target-dir")
            .arg(&build)
            .status()
            .map_err(|e| format!("cargo: {e}"))?;
        if !status.success() {
            return Err(format!("building tests/insn-profile failed ({status})"));
        }
        let out = crate::target_dir().join("bench");
        fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("bench: reading the kernel's symbols (bare QEMU, /proc/kallsyms) ...");
        let work = dir.join("work").join("bench-kallsyms");
        let command = "echo 'mvmm-bench: kallsyms start'; grep ' [tTwW] ' /proc/kallsyms; \
                       echo 'mvmm-bench: kallsyms end'";
        let rich = prepare_rich_boot(
            file,
            qemu,
            dir,
            &RichSource::built(dir),
            Some(command),
            &work,
        )?;
        let mut machine = Machine::start_quiet(bare_linux(file, qemu, &rich)?);
        machine
            .expect("mvmm-bench: kallsyms end", LIMIT)
            .map_err(|e| format!("bench kallsyms: {e}"))?;
        machine.wait_exit(Duration::from_secs(60));
        let transcript = machine.transcript().replace('\r', "");
        let symbols = transcript
            .split_once("mvmm-bench: kallsyms start\n")
            .and_then(|(_, rest)| rest.split_once("mvmm-bench: kallsyms end"))
            .map(|(syms, _)| syms)
            .ok_or("bench kallsyms: no symbol list on the console")?;
        fs::write(out.join("kallsyms.txt"), symbols).map_err(|e| format!("kallsyms.txt: {e}"))?;
        let mark = symbols
            .lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                let (addr, _, name) = (w.next()?, w.next()?, w.next()?);
                (name == PROFILE_MARK).then(|| u64::from_str_radix(addr, 16).ok())?
            })
            .ok_or(format!(
                "bench kallsyms: no {PROFILE_MARK} in /proc/kallsyms"
            ))?;
        Ok(Profiling {
            plugin: build.join("release").join("libinsn_profile.so"),
            report_tool: build.join("release").join("insn-report"),
            out,
            mark,
        })
    }

    fn profile(&self, host: Host) -> std::path::PathBuf {
        self.out.join(match host {
            Host::Bare => "profile-bare.txt",
            Host::Mvmm => "profile-mvmm.txt",
        })
    }

    /// QEMU's `-plugin` argument for a boot on `host`.
    fn plugin_arg(&self, host: Host) -> std::ffi::OsString {
        let mut arg = self.plugin.clone().into_os_string();
        arg.push(",out=");
        arg.push(self.profile(host));
        arg.push(format!(",mark={:#x}", self.mark));
        arg
    }

    /// Compares the two profiles' sha256 phases (the one before the last:
    /// from the `sha256 start` marker to `sha256 end`) by function into
    /// profile-report.md, with mvmm's and secure-os's symbols when
    /// `llvm-nm` can list them.
    fn report(&self, dir: &Path) -> Result<(), String> {
        let mut cmd = Command::new(&self.report_tool);
        cmd.arg("compare");
        cmd.arg("--syms").arg(self.out.join("kallsyms.txt"));
        for image in ["mvmm", "secure-os"] {
            let listed = Command::new("llvm-nm")
                .args(["-n", "--demangle"])
                .arg(dir.join(image))
                .output();
            if let Ok(o) = listed.as_ref()
                && o.status.success()
            {
                let path = self.out.join(format!("{image}.nm"));
                fs::write(&path, &o.stdout).map_err(|e| format!("{}: {e}", path.display()))?;
                cmd.arg("--syms").arg(format!("{image}={}", path.display()));
            } else {
                eprintln!("bench: no symbols for {image} (llvm-nm)");
            }
        }
        for host in [Host::Bare, Host::Mvmm] {
            let mut spec = self.profile(host).into_os_string();
            spec.push("@-2");
            cmd.arg(spec);
        }
        let output = cmd
            .output()
            .map_err(|e| format!("{}: {e}", self.report_tool.display()))?;
        if !output.status.success() {
            return Err(format!(
                "insn-report failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let path = self.out.join("profile-report.md");
        fs::write(&path, &output.stdout).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("bench: profile comparison in {}", path.display());
        Ok(())
    }
}

/// The baseline: the same kernel and initramfs on bare QEMU (Linux at EL1,
/// no hypervisor), with the rich VM's vCPU count and RAM size and its PCIe
/// bus and NIC (their probing is part of the boot), without the SMMU that
/// bare Linux would drive itself.
pub fn bare_linux(
    file: &mvmm_core::config::BoardFile,
    qemu: &mvmm_core::config::QemuSection,
    rich: &mvmm_tests::RichBoot,
) -> Result<Command, String> {
    let vm = file
        .vms
        .iter()
        .find(|v| v.kind == "rich")
        .ok_or("the board has no rich VM")?;
    let rich_mib = vm.ram.iter().map(|r| r.size).sum::<u64>() >> 20;
    let mut cmd = mvmm_tests::qemu_system();
    cmd.args(["-M", "virt,gic-version=3,highmem=off", "-cpu", &qemu.cpu]);
    cmd.args(["-netdev", "user,id=nic0", "-device"]);
    cmd.arg("virtio-net-pci,netdev=nic0,romfile=,disable-legacy=on");
    cmd.arg("-smp").arg(vm.cpus.len().to_string());
    cmd.args(["-m", &format!("{rich_mib}M"), "-no-reboot"]);
    cmd.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
    cmd.arg("-kernel").arg(&rich.kernel);
    cmd.arg("-initrd").arg(&rich.initrd);
    cmd.args(["-append", RICH_CMDLINE]);
    Ok(cmd)
}

/// Boots `cmd`, waits for the workload and the power-off, and reads the
/// marker's wall time and the kernel-clock figures.
fn measure(cmd: Command) -> Result<Boot, String> {
    let started = Instant::now();
    let mut machine = Machine::start_quiet(cmd);
    machine
        .expect(MARKER, LIMIT)
        .map_err(|e| format!("bench boot: {e}"))?;
    let wall_marker = started.elapsed().as_secs_f64();
    machine
        .expect("mvmm-bench: sha256 end", LIMIT)
        .map_err(|e| format!("bench workload: {e}"))?;
    if machine.wait_exit(Duration::from_secs(60)).is_none() {
        return Err("bench: QEMU did not power off after the workload".into());
    }
    let transcript = machine.transcript();
    let status = rich::parse_exit_status(&transcript);
    if status != Some(0) {
        return Err(format!("bench: the workload exited with {status:?}"));
    }
    let at = |what: &str| {
        kernel_time(&transcript, what).ok_or_else(|| {
            let near: Vec<&str> = transcript.lines().filter(|l| l.contains("mvmm-")).collect();
            format!(
                "bench: no kernel-stamped {what:?} line on the console; related lines:\n{}",
                near.join("\n")
            )
        })
    };
    let start = at("mvmm-bench: sha256 start")?;
    let end = at("mvmm-bench: sha256 end")?;
    Ok(Boot {
        wall_marker,
        kernel_marker: at(MARKER_KERNEL)?,
        kernel_workload: end - start,
        kernel_dd_sha: end - at("mvmm-bench: dd start")?,
        exits: rich_exits(&transcript),
        transcript,
    })
}

/// The rich VM's exit counts mvmm logged last (`vm 'rich' exits: ...`).
pub fn rich_exits(console: &str) -> Option<ExitCounts> {
    let (_, rest) = console.rsplit_once("vm 'rich' exits: ")?;
    ExitCounts::parse(rest.lines().next()?)
}

/// Boots the rich VM under mvmm with -icount to the initramfs and powers
/// off: its exit counts and the guest seconds to the marker.
fn boot_only_exits(board: &str, dir: &Path) -> Result<(ExitCounts, f64), String> {
    let (file, qemu) = load_board(board)?;
    let work = dir.join("work").join("bench-boot-only");
    let rich = prepare_rich_boot(
        &file,
        &qemu,
        dir,
        &RichSource::built(dir),
        Some("true"),
        &work,
    )?;
    let mut cmd = qemu_command(
        &file,
        &qemu,
        &Images::with_rich_linux(dir, &rich),
        Console::Piped,
    );
    cmd.args(ICOUNT);
    let mut machine = Machine::start_quiet(cmd);
    machine
        .expect(MARKER, LIMIT)
        .map_err(|e| format!("bench boot-only: {e}"))?;
    if machine.wait_exit(Duration::from_secs(60)).is_none() {
        return Err("bench boot-only: QEMU did not power off".into());
    }
    let transcript = machine.transcript();
    let exits = rich_exits(&transcript).ok_or_else(|| {
        format!(
            "bench boot-only: mvmm logged no exit counts for vm 'rich'\n{}",
            tail(&transcript)
        )
    })?;
    let marker = kernel_time(&transcript, MARKER_KERNEL)
        .ok_or("bench boot-only: no kernel-stamped initramfs marker")?;
    Ok((exits, marker))
}

/// Exits per guest second of `workload`: the total, and each kind that
/// makes at least 1% of it. Printed whole on stderr.
fn exit_rates(workload: &str, counts: &ExitCounts, seconds: f64) -> Vec<Entry> {
    eprintln!("bench: exits of {workload} ({seconds:.3} guest s): {counts}");
    if seconds <= 0.0 {
        return Vec::new();
    }
    let total = counts.total();
    let mut entries = vec![Entry {
        name: format!("exits_{workload}_icount"),
        unit: "exits/guest_s",
        value: total as f64 / seconds,
        baseline: None,
    }];
    for kind in ExitKind::ALL {
        let n = counts.exits(kind);
        if n > 0 && n * 100 >= total {
            entries.push(Entry {
                name: format!("exits_{workload}_{}", kind.name()),
                unit: "exits/guest_s",
                value: n as f64 / seconds,
                baseline: None,
            });
        }
    }
    entries
}

/// The VMM channel under mvmm: one boot per mode runs the channel workload
/// (and, on the wall clock, a payment approval).
fn channel_benchmarks(
    board: &str,
    dir: &Path,
    boot_exits: &ExitCounts,
) -> Result<Vec<Entry>, String> {
    let (file, qemu) = load_board(board)?;
    let mut results = Vec::new();
    for icount in [false, true] {
        // Both boots ask for a payment: the wall-clock one answers it and
        // times the approval; both read secure-os's prompt-to-pixels figure
        // (its own counter). Under -icount (sleep=off) guest time races
        // ahead while the guest idles, so the prompt times out before a key
        // from the host can count: that boot does not answer, and the
        // request's failure is expected.
        let command = if icount {
            // The prompt, unanswered, ends after 5 guest seconds (the
            // rich side cancels): its idle exits stay few next to the
            // channel's.
            format!(
                "echo '{CHAN_START}' > /dev/kmsg; ({}); echo '{CHAN_END}' > /dev/kmsg; \
                 mvmm-pay enroll --label 'Bench card' --json; \
                 timeout 5 mvmm-pay request --amount {} --currency {} --merchant '{}' --json || true",
                channel_workload(),
                payment::AMOUNT,
                payment::CURRENCY,
                payment::MERCHANT
            )
        } else {
            format!("{}; {}", channel_workload(), payment_workload())
        };
        let work = dir.join("work").join(if icount {
            "bench-chan-icount"
        } else {
            "bench-chan"
        });
        let rich = prepare_rich_boot(
            &file,
            &qemu,
            dir,
            &RichSource::built(dir),
            Some(&command),
            &work,
        )?;
        let mut cmd = qemu_command(
            &file,
            &qemu,
            &Images::with_rich_linux(dir, &rich),
            Console::Piped,
        );
        if icount {
            cmd.args(ICOUNT);
        }
        let label = if icount { "-icount" } else { "wall clock" };
        eprintln!("bench: the VMM channel under mvmm, {label} ...");
        let started = Instant::now();
        let mut machine = Machine::start_quiet(cmd);
        if !icount {
            // The user's answer, given as soon as the trusted path counts
            // keys (payment::READ_TIME after the prompt is complete: keys in
            // the arming delay are discarded, docs/trusted-path.md).
            machine
                .expect(payment::PROMPT, LIMIT)
                .map_err(|e| format!("bench payment: {e}\n{}", tail(&machine.transcript())))?;
            std::thread::sleep(payment::READ_TIME);
            machine.send("y");
            machine.send("\r");
            // The second payment, over the HAL's open session.
            machine
                .expect(payment::PROMPT, LIMIT)
                .map_err(|e| format!("bench warm payment: {e}\n{}", tail(&machine.transcript())))?;
            std::thread::sleep(payment::READ_TIME);
            machine.send("y");
            machine.send("\r");
        }
        let done = machine.expect("mvmm-rich: exit status", LIMIT);
        let exited = machine.wait_exit(Duration::from_secs(60));
        let transcript = machine.transcript();
        done.map_err(|e| format!("bench channel: {e}\n{}", tail(&transcript)))?;
        if exited.is_none() {
            return Err("bench channel: QEMU did not power off after the workload".into());
        }
        if rich::parse_exit_status(&transcript) != Some(0) {
            return Err(format!(
                "bench channel: the workload failed\n{}",
                tail(&transcript)
            ));
        }
        eprintln!(
            "bench: channel boot ({label}) took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let r = chan_results(&transcript);
        let get = |name: &str| {
            r.get(name).copied().ok_or_else(|| {
                format!(
                    "bench channel: chan-tool printed no {name:?}\n{}",
                    tail(&transcript)
                )
            })
        };
        let (vsock, unix) = (get("echo_rtt_median")?, get("unix_rtt_median")?);
        let mib = get("echo_throughput_mib")?;
        eprintln!(
            "bench: 64-byte round trip (median / mean): vsock {vsock:.1} / {:.1} us, AF_UNIX {unix:.1} / {:.1} us; 64 KiB echo {mib:.2} MiB/s",
            get("echo_rtt_mean")?,
            get("unix_rtt_mean")?
        );
        let pixels = prompt_to_pixels(&transcript).ok_or_else(|| {
            format!(
                "bench payment: secure-os printed no prompt-to-pixels figure\n{}",
                tail(&transcript)
            )
        })?;
        eprintln!("bench: prompt to pixels ({label}): {pixels:.0} us");
        results.push(Entry {
            name: if icount {
                "approval_prompt_to_pixels_icount".into()
            } else {
                "approval_prompt_to_pixels_wall".into()
            },
            unit: if icount { "guest_us" } else { "us" },
            value: pixels,
            baseline: None,
        });
        if icount {
            let at = |what: &str| {
                kernel_time(&transcript, what)
                    .ok_or_else(|| format!("bench channel: no kernel-stamped {what:?} line"))
            };
            let full = rich_exits(&transcript)
                .ok_or("bench channel: mvmm logged no exit counts for vm 'rich'")?;
            for line in transcript.lines().filter(|l| l.contains("' exits: ")) {
                eprintln!("bench: channel run (-icount): {line}");
            }
            // The unanswered payment after the channel workload counts too
            // (a few guest seconds, mostly idle).
            results.extend(exit_rates(
                "channel",
                &full.minus(boot_exits),
                at(CHAN_END)? - at(CHAN_START)?,
            ));
            results.push(Entry {
                name: "vsock_rtt_64b_icount".into(),
                unit: "guest_us",
                value: vsock,
                baseline: Some(unix),
            });
            results.push(Entry {
                name: "vsock_throughput_64k_icount".into(),
                unit: "guest_MiB/s",
                value: mib,
                baseline: None,
            });
        } else {
            results.push(Entry {
                name: "vsock_rtt_64b_wall".into(),
                unit: "us",
                value: vsock,
                baseline: Some(unix),
            });
            results.push(Entry {
                name: "vsock_throughput_64k_wall".into(),
                unit: "MiB/s",
                value: mib,
                baseline: None,
            });
            let tokens = payment::json_lines(&transcript)
                .iter()
                .filter(|v| v.get("token").and_then(|t| t.as_str()).is_some())
                .count();
            if tokens < 2 {
                return Err(format!(
                    "bench payment: mvmm-pay returned {tokens} token(s) for the two payments\n{}",
                    tail(&transcript)
                ));
            }
            let at = |what: &str| {
                kernel_time(&transcript, what)
                    .ok_or_else(|| format!("bench payment: no kernel-stamped {what:?} line"))
            };
            let total_ms = (at(PAY_END)? - at(PAY_START)?) * 1e3;
            results.push(Entry {
                name: "payment_approval_latency".into(),
                unit: "ms",
                value: total_ms,
                baseline: None,
            });
            // What the secure VM spends between the user's answer and the
            // response: signing the authorization and committing the
            // transaction counter to flash, then sending.
            let (stored_us, sent_us) = approval_answer(&transcript).ok_or_else(|| {
                format!(
                    "bench payment: secure-os printed no approval breakdown\n{}",
                    tail(&transcript)
                )
            })?;
            eprintln!(
                "bench: approval in the secure VM: signed and stored in {:.1} ms, response sent {:.1} ms after the answer",
                stored_us / 1e3,
                sent_us / 1e3
            );
            results.push(Entry {
                name: "approval_sign_and_store".into(),
                unit: "ms",
                value: stored_us / 1e3,
                baseline: None,
            });
            results.push(Entry {
                name: "approval_answer_to_response".into(),
                unit: "ms",
                value: sent_us / 1e3,
                baseline: None,
            });
            // The same without the user: the answer comes READ_TIME after
            // the prompt is complete (the arming rule); the rest is mvmm,
            // secure-os and the rich VM (and the harness noticing the
            // prompt).
            results.push(Entry {
                name: "payment_approval_without_user".into(),
                unit: "ms",
                value: total_ms - payment::READ_TIME.as_secs_f64() * 1e3,
                baseline: None,
            });
            let warm_ms = (at(WARM_END)? - at(WARM_START)?) * 1e3;
            results.push(Entry {
                name: "payment_approval_warm_session_without_user".into(),
                unit: "ms",
                value: warm_ms - payment::READ_TIME.as_secs_f64() * 1e3,
                baseline: None,
            });
        }
    }
    Ok(results)
}

/// secure-os's prompt-to-pixels figure (microseconds of its counter from
/// the request's bytes to the scan-out showing the approval screen), from
/// its `approval screen on the display (... prompt to pixels N us)` line.
pub fn prompt_to_pixels(console: &str) -> Option<f64> {
    let (_, rest) = console.rsplit_once("prompt to pixels ")?;
    rest.split(' ').next()?.parse().ok()
}

/// secure-os's `approval: signed and stored in N us, response sent M us
/// after the answer` line: (N, M).
pub fn approval_answer(console: &str) -> Option<(f64, f64)> {
    let (_, rest) = console.rsplit_once("approval: signed and stored in ")?;
    let (stored, rest) = rest.split_once(" us, response sent ")?;
    let (sent, _) = rest.split_once(" us after the answer")?;
    Some((stored.trim().parse().ok()?, sent.trim().parse().ok()?))
}

/// The `chan-tool: <name> <value> <unit>` results on a console, by name
/// (the last one wins); lines whose value is not a number are skipped.
pub fn chan_results(console: &str) -> BTreeMap<String, f64> {
    console
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("chan-tool: ")?;
            let mut words = rest.split_whitespace();
            let name = words.next()?;
            let value: f64 = words.next()?.parse().ok()?;
            words.next()?; // a unit
            value.is_finite().then(|| (name.to_string(), value))
        })
        .collect()
}

/// The last lines of a console, for error messages.
fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The kernel log timestamp (`[   1.234567] text`) of the line with `what`.
pub fn kernel_time(console: &str, what: &str) -> Option<f64> {
    console
        .lines()
        .filter_map(|l| l.strip_suffix(what))
        .find_map(|head| {
            // The stamp is the last bracket before the text ("[rich] [ 1.2] ").
            let close = head.rfind(']')?;
            let open = head[..close].rfind('[')?;
            head[open + 1..close].trim().parse().ok()
        })
}

/// Prints the table and writes `results.json` (a JSON array of objects with
/// name, unit, value, baseline and ratio).
pub fn report(entries: &[Entry], out: &Path) -> io::Result<()> {
    println!(
        "\n{:<34} {:>12} {:>12} {:>8}  unit",
        "benchmark", "mvmm", "baseline", "ratio"
    );
    let mut json = String::from("[\n");
    for (i, e) in entries.iter().enumerate() {
        let ratio = e.baseline.filter(|b| *b > 0.0).map(|b| e.value / b);
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{:<34} {:>12.3} {:>12} {:>8}  {}",
            e.name,
            e.value,
            show(e.baseline),
            show(ratio),
            e.unit
        );
        let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.6}"));
        let _ = writeln!(
            json,
            "  {{\"name\": \"{}\", \"unit\": \"{}\", \"value\": {:.6}, \"baseline\": {}, \"ratio\": {}}}{}",
            e.name,
            e.unit,
            e.value,
            num(e.baseline),
            num(ratio),
            if i + 1 < entries.len() { "," } else { "" }
        );
    }
    json.push_str("]\n");
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(out, json)?;
    println!("\nresults: {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_timestamps_are_read_from_prefixed_lines() {
        let console = "[rich] [    2.013377] mvmm-rich: initramfs up (kernel clock)\n\
                       [    0.5] other\n[rich] [   10.250000] mvmm-bench: sha256 end\n";
        assert_eq!(kernel_time(console, MARKER_KERNEL), Some(2.013377));
        assert_eq!(kernel_time(console, "mvmm-bench: sha256 end"), Some(10.25));
        assert_eq!(kernel_time(console, "mvmm-bench: sha256 start"), None);
        assert_eq!(kernel_time("[garbage mvmm-bench: x", "mvmm-bench: x"), None);
    }

    #[test]
    fn the_rich_vms_last_exit_counts_are_read() {
        let console = "[mvmm] vm 'rich' exits: total 9; wfi 9; irqs none\n\
            [mvmm] vm 'secure' exits: total 1; hvc 1; irqs none\n\
            [mvmm] vm 'rich' exits: total 3; irq 2, hvc 1; irqs timer 2\n[mvmm] powering off\n";
        let counts = rich_exits(console).expect("parsed");
        assert_eq!(counts.total(), 3);
        assert_eq!(counts.exits(ExitKind::Irq), 2);
        assert_eq!(
            rich_exits("[mvmm] vm 'rich' exits: total 4; wfi 3; irqs none"),
            None
        );
        let rates = exit_rates("x", &counts, 0.5);
        assert_eq!(rates[0].name, "exits_x_icount");
        assert_eq!(rates[0].value, 6.0);
        assert!(
            rates
                .iter()
                .any(|e| e.name == "exits_x_hvc" && e.value == 2.0)
        );
    }

    #[test]
    fn the_approval_breakdown_is_read_from_secure_os() {
        let console = "[secure] secure-os: approval: signed and stored in 18849 us, response sent 20061 us after the answer\n";
        assert_eq!(approval_answer(console), Some((18849.0, 20061.0)));
        assert_eq!(approval_answer("approval: signed and stored in x us"), None);
    }

    #[test]
    fn prompt_to_pixels_is_read_from_secure_os() {
        let console = "[TRUSTED secure] secure-os: approval screen on the display (drawn in 4425 us; prompt to pixels 8776 us)\n";
        assert_eq!(prompt_to_pixels(console), Some(8776.0));
        assert_eq!(prompt_to_pixels("nothing"), None);
    }

    #[test]
    fn chan_tool_results_are_parsed() {
        let console = "[rich] chan-tool: echo_rtt_iters 1000 round-trips\n\
                       [rich] chan-tool: echo_rtt_median 2752.632 us\n\
                       [secure] secure-os: heartbeat 3\n\
                       [rich] chan-tool: unix_rtt_median 245.016 us\n\
                       chan-tool: echo_throughput_mib 6.104 MiB/s\n\
                       [rich] chan-tool: connect connected cid 4 port 7101\n\
                       [rich] chan-tool: error: connect to cid 4 port 7101: reset\n\
                       [rich] chan-tool: echo_rtt_max NaN us\n\
                       [rich] chan-tool: truncated 12\n\
                       [rich] chan-tool: echo_rtt_median 2000 us\n";
        let r = chan_results(console);
        assert_eq!(r.get("echo_rtt_iters"), Some(&1000.0));
        // The last of repeated names wins.
        assert_eq!(r.get("echo_rtt_median"), Some(&2000.0));
        assert_eq!(r.get("unix_rtt_median"), Some(&245.016));
        assert_eq!(r.get("echo_throughput_mib"), Some(&6.104));
        for absent in ["connect", "error:", "echo_rtt_max", "truncated"] {
            assert_eq!(r.get(absent), None, "{absent}");
        }
        assert!(chan_results("").is_empty());
    }

    #[test]
    fn workloads_are_shell_lines() {
        let w = channel_workload();
        assert!(w.starts_with("set -e;"));
        assert!(w.contains("chan-tool echo-rtt --port echo --size 64"));
        assert!(w.contains("chan-tool unix-rtt --size 64"));
        assert!(!w.contains('\n') && !payment_workload().contains('\n'));
        assert!(payment_workload().contains("--merchant 'Corner Cafe' --json"));
        let console = "[rich] [   12.000100] mvmm-bench: pay start\n[rich] [   12.250100] mvmm-bench: pay end\n";
        let ms = (kernel_time(console, PAY_END).unwrap()
            - kernel_time(console, PAY_START).unwrap())
            * 1e3;
        assert!((ms - 250.0).abs() < 1e-6);
    }

    #[test]
    fn results_json_has_the_agreed_fields() {
        let dir = std::env::temp_dir().join(format!("mvmm-bench-test-{}", std::process::id()));
        let out = dir.join("results.json");
        let entries = [
            Entry {
                name: "a".into(),
                unit: "s",
                value: 2.0,
                baseline: Some(1.0),
            },
            Entry {
                name: "b".into(),
                unit: "us",
                value: 3.0,
                baseline: None,
            },
        ];
        report(&entries, &out).unwrap();
        let text = fs::read_to_string(&out).unwrap();
        assert!(text.contains("{\"name\": \"a\", \"unit\": \"s\", \"value\": 2.000000, \"baseline\": 1.000000, \"ratio\": 2.000000},"));
        assert!(text.contains("{\"name\": \"b\", \"unit\": \"us\", \"value\": 3.000000, \"baseline\": null, \"ratio\": null}\n]"));
        let _ = fs::remove_dir_all(dir);
    }
}
