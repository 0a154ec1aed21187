//! The microbenchmarks of `cargo xtask bench`: what one exit of each common
//! kind costs a guest under mvmm, against the same guest on bare QEMU.
//!
//! The probe guest (`tests/probe-guest`, its `bench` command) times on its
//! virtual counter, with interrupts masked: PSCI_VERSION by HVC, reads of
//! the GIC distributor's TYPER and the PL011's FR (trapped and emulated by
//! mvmm; emulated by QEMU's device models on bare QEMU), an SGI round trip
//! between its two vCPUs, and the virtual timer's latency from its deadline
//! to the acknowledge. The same ELF runs on bare QEMU (`-kernel`, EL1, the
//! board's GIC and UART at the same addresses, QEMU's own PSCI on HVC). Each
//! figure is taken on the wall clock and under `-icount` (guest
//! nanoseconds: instructions, mvmm's own included).

use super::bench::{Entry, ICOUNT};
use mvmm_tests::{Console, Images, Machine, load_board, qemu_command};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How long the probe may take to boot, or to run `bench`.
const LIMIT: Duration = Duration::from_secs(60);

/// The figures the probe prints, in its order.
pub const FIGURES: [&str; 5] = [
    "hvc",
    "mmio_read_gicd",
    "mmio_read_uart",
    "sgi_round_trip",
    "vtimer_latency",
];

/// Runs the probe's `bench` under mvmm and on bare QEMU, wall and -icount.
pub fn micro_benchmarks(board: &str, dir: &Path) -> Result<Vec<Entry>, String> {
    let (file, qemu) = load_board(board)?;
    let images = Images::probe(&file, dir)?;
    let mut results = Vec::new();
    for icount in [false, true] {
        let mut figures = Vec::new();
        for bare in [true, false] {
            let mut cmd = if bare {
                let mut cmd = mvmm_tests::qemu_system();
                cmd.args(["-M", "virt,gic-version=3,highmem=off", "-cpu", &qemu.cpu]);
                cmd.args(["-smp", "2", "-m", "1G", "-no-reboot"]);
                cmd.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
                cmd.arg("-kernel").arg(dir.join("probe-guest"));
                cmd
            } else {
                qemu_command(&file, &qemu, &images, Console::Piped)
            };
            if icount {
                cmd.args(ICOUNT);
            }
            let label = format!(
                "{}{}",
                if bare { "bare QEMU" } else { "under mvmm" },
                if icount { ", -icount" } else { "" }
            );
            eprintln!("bench: probe microbenchmarks {label} ...");
            figures.push(run_probe(cmd, &label)?);
        }
        let (bare, mvmm) = (&figures[0], &figures[1]);
        for name in FIGURES {
            let (Some(&value), Some(&baseline)) = (mvmm.get(name), bare.get(name)) else {
                return Err(format!(
                    "bench micro: no {name} figure (bare: {:?}, mvmm: {:?})",
                    bare.get(name),
                    mvmm.get(name)
                ));
            };
            results.push(Entry {
                name: format!("{name}_{}", if icount { "icount" } else { "wall" }),
                unit: if icount { "guest_ns" } else { "ns" },
                value,
                baseline: Some(baseline),
            });
        }
    }
    Ok(results)
}

/// Boots the probe, runs `bench`, powers off; its figures by name.
fn run_probe(cmd: std::process::Command, label: &str) -> Result<BTreeMap<String, f64>, String> {
    let mut machine = Machine::start_quiet(cmd);
    machine
        .expect("probe: ready", LIMIT)
        .map_err(|e| format!("bench micro ({label}): {e}"))?;
    machine.send("bench\r");
    let done = machine.expect("probe: bench done", LIMIT);
    machine.send("off\r");
    let exited = machine.wait_exit(Duration::from_secs(30));
    let transcript = machine.transcript();
    done.map_err(|e| format!("bench micro ({label}): {e}\n{transcript}"))?;
    if exited.is_none() {
        return Err(format!("bench micro ({label}): QEMU did not power off"));
    }
    Ok(probe_figures(&transcript))
}

/// The `probe: bench <name> <ns> ns/op` lines of a console.
pub fn probe_figures(console: &str) -> BTreeMap<String, f64> {
    console
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("probe: bench ")?;
            let mut words = rest.split_whitespace();
            let name = words.next()?;
            let value: f64 = words.next()?.parse().ok()?;
            (words.next()? == "ns/op").then(|| (name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_figures_are_read() {
        let console = "[rich] probe: bench hvc 812.5 ns/op\n\
            [rich] probe: bench sgi_round_trip failed (no answer from vcpu 1)\n\
            probe: bench vtimer_latency 1200.0 ns/op\nprobe: bench done\n";
        let f = probe_figures(console);
        assert_eq!(f.get("hvc"), Some(&812.5));
        assert_eq!(f.get("vtimer_latency"), Some(&1200.0));
        assert_eq!(f.len(), 2);
    }
}
