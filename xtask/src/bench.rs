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
//! Results are printed as a table and written to target/bench/results.json.

use mvmm_tests::{
    Console, Images, Machine, RICH_CMDLINE, RICH_INITRAMFS, RICH_KERNEL, load_board,
    prepare_rich_boot, qemu_command, rich,
};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use std::{fs, io};

/// The workload: 64 MiB of zeros hashed from tmpfs, bracketed by kernel
/// log lines whose timestamps give its guest duration.
const WORKLOAD: &str = "dd if=/dev/zero of=/tmp/z bs=1048576 count=64 2>/dev/null; \
    echo 'mvmm-bench: sha256 start' > /dev/kmsg; sha256sum /tmp/z; \
    echo 'mvmm-bench: sha256 end' > /dev/kmsg";
const MARKER: &str = "mvmm-rich: initramfs up";
const MARKER_KERNEL: &str = "mvmm-rich: initramfs up (kernel clock)";
const LIMIT: Duration = Duration::from_secs(300);

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
}

#[derive(Clone, Copy, PartialEq)]
enum Host {
    Bare,
    Mvmm,
}

/// Runs the benchmarks for `board` with images in `dir`.
pub fn bench(board: &str, dir: &Path) -> Result<Vec<Entry>, String> {
    let (file, qemu) = load_board(board)?;
    let work = dir.join("work").join("bench");
    let rich = prepare_rich_boot(
        &file,
        &qemu,
        &dir.join(RICH_KERNEL),
        &dir.join(RICH_INITRAMFS),
        RICH_CMDLINE,
        Some(WORKLOAD),
        &work,
    )?;
    let vm = file
        .vms
        .iter()
        .find(|v| v.kind == "rich")
        .ok_or("the board has no rich VM")?;
    let rich_mib = vm.ram.iter().map(|r| r.size).sum::<u64>() >> 20;
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
                Host::Bare => {
                    let mut cmd = Command::new("qemu-system-aarch64");
                    cmd.args(["-M", "virt,gic-version=3", "-cpu", &qemu.cpu, "-smp"]);
                    cmd.arg(vm.cpus.len().to_string());
                    cmd.args(["-m", &format!("{rich_mib}M"), "-no-reboot"]);
                    cmd.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
                    cmd.arg("-kernel")
                        .arg(&rich.kernel)
                        .arg("-initrd")
                        .arg(&rich.initrd);
                    cmd.args(["-append", RICH_CMDLINE]);
                    cmd
                }
                Host::Mvmm => {
                    let images = Images::with_rich_linux(dir, &rich);
                    qemu_command(&file, &qemu, &images, Console::Piped)
                }
            };
            if icount {
                cmd.args([
                    "-icount",
                    "shift=0,sleep=off",
                    "-rtc",
                    "base=2020-01-01T00:00:00,clock=vm",
                ]);
            }
            boots.push(measure(cmd)?);
        }
        let (bare, mvmm) = (&boots[0], &boots[1]);
        if icount {
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
    })
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
