//! `cargo xtask bench` (`MVMM_BENCH=nic`): the rich VM's NIC throughput under
//! mvmm against bare QEMU with the same NIC, in the same run.
//!
//! A host HTTP server (a thread of this process on 127.0.0.1) serves a
//! [`BODY_MIB`] MiB body; the guest fetches it [`ROUNDS`] times with busybox
//! `wget -O /dev/null` from 10.0.2.2 (QEMU's user networking) and brackets
//! each fetch with kernel log lines whose timestamps give the guest's
//! duration. The NIC is the same on both sides (virtio-net-pci, modern only,
//! on QEMU `virt`'s PCIe bus with `highmem=off`, user networking); under mvmm
//! its DMA goes through the SMMU that mvmm programs (docs/dma.md), on bare
//! QEMU there is no SMMU. The figure is the median round's MiB/s on the
//! guest's clock, which runs at host speed without -icount.
//!
//! No -icount figure: under `-icount shift=0,sleep=off` the guest clock
//! jumps ahead whenever the guest idles waiting for a packet from the host
//! (the network runs on host time), so a transfer's guest duration says
//! nothing about either side's cost.

use crate::bench::{Entry, kernel_time};
use mvmm_tests::{
    Console, Images, Machine, RichSource, load_board, prepare_rich_boot, qemu_command, rich,
};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The body's size and how many times it is fetched per boot.
const BODY_MIB: usize = 32;
const ROUNDS: usize = 5;
const LIMIT: Duration = Duration::from_secs(300);
const START: &str = "mvmm-bench: nic start";
const END: &str = "mvmm-bench: nic end";
/// The guest's CPU counters (`/proc/stat`'s `cpu` line) around each round.
const CPU: &str = "mvmm-bench: nic cpu";
/// `/proc/stat` counts in USER_HZ ticks: 10 ms on arm64 Linux.
const TICK_MS: f64 = 10.0;

/// The guest's busy CPU time (all CPUs; everything but idle and iowait),
/// in ms, spent over all rounds, per MiB received.
fn cpu_ms_per_mib(console: &str) -> Result<f64, String> {
    let busy = |round: usize, when: &str| -> Result<f64, String> {
        let tag = format!("{CPU} {round} {when} cpu ");
        let line = console
            .lines()
            .find_map(|l| l.split_once(&tag).map(|(_, rest)| rest))
            .ok_or_else(|| format!("bench nic: no {tag:?} line"))?;
        let ticks: Vec<f64> = line
            .split_whitespace()
            .map(|t| t.parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bench nic: {line:?}: {e}"))?;
        if ticks.len() < 5 {
            return Err(format!("bench nic: {line:?} is not a /proc/stat cpu line"));
        }
        Ok(ticks.iter().sum::<f64>() - ticks[3] - ticks[4])
    };
    let mut total = 0.0;
    for round in 0..ROUNDS {
        total += busy(round, "after")? - busy(round, "before")?;
    }
    Ok(total * TICK_MS / (ROUNDS * BODY_MIB) as f64)
}

/// Serves `BODY_MIB` MiB (a byte pattern, not zeros) to every GET on
/// 127.0.0.1; returns the port. The thread lives as long as the process.
fn serve_body() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bench nic: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("bench nic: {e}"))?
        .port();
    let chunk: Vec<u8> = (0..1usize << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                BODY_MIB << 20
            );
            if stream.write_all(head.as_bytes()).is_err() {
                continue;
            }
            for _ in 0..BODY_MIB {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
            }
        }
    });
    Ok(port)
}

/// The guest's workload: `ROUNDS` fetches, each bracketed by kernel log
/// lines numbered by round; any failed fetch fails the boot.
fn workload(port: u16) -> String {
    let mut script = String::from("set -e; ");
    for round in 0..ROUNDS {
        script.push_str(&format!(
            "echo \"{CPU} {round} before $(head -1 /proc/stat)\"; \
             echo '{START} {round}' > /dev/kmsg; \
             wget -q -O /dev/null http://{}:{port}/body; \
             echo '{END} {round}' > /dev/kmsg; \
             echo \"{CPU} {round} after $(head -1 /proc/stat)\"; ",
            mvmm_tests::payment::HOST_FROM_GUEST
        ));
    }
    script.push_str("echo 'mvmm-bench: nic done'");
    script
}

/// The median of `ROUNDS` transfers' MiB/s in a boot's console.
fn throughput(console: &str) -> Result<f64, String> {
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        let at = |what: &str| {
            kernel_time(console, &format!("{what} {round}"))
                .ok_or_else(|| format!("bench nic: no kernel-stamped {what:?} {round} line"))
        };
        let seconds = at(END)? - at(START)?;
        if seconds <= 0.0 {
            return Err(format!(
                "bench nic: round {round} took {seconds} s on the guest's clock"
            ));
        }
        rates.push(BODY_MIB as f64 / seconds);
    }
    let shown: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
    eprintln!("bench: NIC rounds: {} MiB/s", shown.join(", "));
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// NIC throughput, bare QEMU and under mvmm, wall clock; the guest CPU
/// time a MiB costs, under -icount.
pub fn nic_benchmarks(board: &str, dir: &Path) -> Result<Vec<Entry>, String> {
    let (file, qemu) = load_board(board)?;
    let port = serve_body()?;
    let rich = prepare_rich_boot(
        &file,
        &qemu,
        dir,
        &RichSource::built(dir),
        Some(&workload(port)),
        &dir.join("work").join("bench-nic"),
    )?;
    // Bare QEMU as the boot benchmark starts it: the same NIC on the same
    // PCIe bus.
    let bare = crate::bench::bare_linux(&file, &qemu, &rich)?;
    let under_mvmm = qemu_command(
        &file,
        &qemu,
        &Images::with_rich_linux(dir, &rich),
        Console::Piped,
    );
    let mut rates = Vec::new();
    let mut costs = Vec::new();
    for icount in [false, true] {
        for (label, cmd) in [("bare QEMU", &bare), ("under mvmm", &under_mvmm)] {
            let mut cmd = clone_command(cmd);
            let mode = if icount {
                cmd.args(crate::bench::ICOUNT);
                "-icount"
            } else {
                "wall clock"
            };
            eprintln!("bench: NIC, {label}, {mode}: {ROUNDS} x {BODY_MIB} MiB over HTTP ...");
            let console = boot(cmd)?;
            if icount {
                let cost = cpu_ms_per_mib(&console)?;
                eprintln!("bench: NIC, {label}, {mode}: {cost:.1} guest CPU ms per MiB");
                costs.push(cost);
            } else {
                let rate = throughput(&console)?;
                eprintln!("bench: NIC, {label}, {mode}: {rate:.1} MiB/s (median)");
                rates.push(rate);
            }
        }
    }
    Ok(vec![
        Entry {
            name: format!("nic_http_{BODY_MIB}mib_wall"),
            unit: "MiB/s",
            value: rates[1],
            baseline: Some(rates[0]),
        },
        Entry {
            name: "nic_http_cpu_per_mib_icount".into(),
            unit: "guest_ms",
            value: costs[1],
            baseline: Some(costs[0]),
        },
    ])
}

/// A copy of `cmd` (program, arguments; the harness sets the rest).
fn clone_command(cmd: &Command) -> Command {
    let mut copy = Command::new(cmd.get_program());
    copy.args(cmd.get_args());
    copy
}

/// Boots `cmd`, waits for the fetches and the power-off; the console.
fn boot(cmd: Command) -> Result<String, String> {
    let started = Instant::now();
    let mut machine = Machine::start_quiet(cmd);
    let done = machine.expect("mvmm-rich: exit status", LIMIT);
    let exited = machine.wait_exit(Duration::from_secs(60));
    let transcript = machine.transcript();
    let tail = || {
        let lines: Vec<&str> = transcript.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    done.map_err(|e| format!("bench nic: {e}\n{}", tail()))?;
    if exited.is_none() {
        return Err("bench nic: QEMU did not power off after the workload".into());
    }
    if rich::parse_exit_status(&transcript) != Some(0) {
        return Err(format!("bench nic: a fetch failed\n{}", tail()));
    }
    eprintln!(
        "bench: NIC boot took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(transcript)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_rate_is_read_from_the_kernel_stamps() {
        let mut console = String::new();
        for (round, (start, end)) in [
            (1.0, 2.0),
            (3.0, 3.5),
            (4.0, 8.0),
            (9.0, 9.25),
            (10.0, 11.0),
        ]
        .iter()
        .enumerate()
        {
            console.push_str(&format!("[rich] [ {start}] {START} {round}\n"));
            console.push_str(&format!("[rich] [ {end}] {END} {round}\n"));
        }
        // Rates 32, 64, 8, 128, 32 MiB/s: the median is 32.
        assert_eq!(throughput(&console), Ok(BODY_MIB as f64));
        let cut = console.replace(&format!("{END} 3"), "other");
        assert!(throughput(&cut).unwrap_err().contains("nic end\" 3"));
    }

    #[test]
    fn the_cpu_cost_is_read_from_proc_stat() {
        let mut console = String::new();
        for round in 0..ROUNDS {
            // 16 busy ticks (160 ms) per round; idle and iowait do not count.
            console.push_str(&format!(
                "[rich] {CPU} {round} before cpu  100 0 50 9000 7 0 3 0 0 0\n\
                 [rich] {CPU} {round} after cpu  110 0 55 9900 70 0 4 0 0 0\n"
            ));
        }
        let expected = 160.0 * ROUNDS as f64 / (ROUNDS * BODY_MIB) as f64;
        assert_eq!(cpu_ms_per_mib(&console), Ok(expected));
        let cut = console.replace(&format!("{CPU} 2 after"), "x");
        assert!(cpu_ms_per_mib(&cut).unwrap_err().contains("2 after"));
        assert!(cpu_ms_per_mib(&console.replace("cpu  100", "cpu  1x0")).is_err());
    }

    #[test]
    fn every_fetch_is_bracketed_and_checked() {
        let w = workload(8000);
        assert!(w.starts_with("set -e; "));
        assert_eq!(
            w.matches("wget -q -O /dev/null http://10.0.2.2:8000/body")
                .count(),
            ROUNDS
        );
        assert!(w.contains(&format!("{START} {}", ROUNDS - 1)));
    }
}
