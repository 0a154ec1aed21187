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
    Console, Images, Machine, RICH_CMDLINE, RichSource, load_board, prepare_rich_boot,
    qemu_command, rich,
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
            "echo '{START} {round}' > /dev/kmsg; \
             wget -q -O /dev/null http://{}:{port}/body; \
             echo '{END} {round}' > /dev/kmsg; ",
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
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// NIC throughput, bare QEMU and under mvmm, wall clock.
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
    let vm = file
        .vms
        .iter()
        .find(|v| v.kind == "rich")
        .ok_or("the board has no rich VM")?;
    let rich_mib = vm.ram.iter().map(|r| r.size).sum::<u64>() >> 20;
    // Bare QEMU as the boot benchmark starts it (bench.rs): Linux at EL1, the
    // rich VM's vCPU count and RAM, the same NIC on the same PCIe bus.
    let mut bare = mvmm_tests::qemu_system();
    bare.args(["-M", "virt,gic-version=3,highmem=off", "-cpu", &qemu.cpu]);
    bare.args(["-netdev", "user,id=nic0", "-device"]);
    bare.arg("virtio-net-pci,netdev=nic0,romfile=,disable-legacy=on");
    bare.arg("-smp").arg(vm.cpus.len().to_string());
    bare.args(["-m", &format!("{rich_mib}M"), "-no-reboot"]);
    bare.args(["-display", "none", "-serial", "stdio", "-monitor", "none"]);
    bare.arg("-kernel").arg(&rich.kernel);
    bare.arg("-initrd").arg(&rich.initrd);
    bare.args(["-append", RICH_CMDLINE]);
    let under_mvmm = qemu_command(
        &file,
        &qemu,
        &Images::with_rich_linux(dir, &rich),
        Console::Piped,
    );
    let mut rates = Vec::new();
    for (label, cmd) in [("bare QEMU", bare), ("under mvmm", under_mvmm)] {
        eprintln!("bench: NIC throughput, {label}: {ROUNDS} x {BODY_MIB} MiB over HTTP ...");
        let rate = measure(cmd)?;
        eprintln!("bench: NIC throughput, {label}: {rate:.1} MiB/s (median)");
        rates.push(rate);
    }
    Ok(vec![Entry {
        name: format!("nic_http_{BODY_MIB}mib_wall"),
        unit: "MiB/s",
        value: rates[1],
        baseline: Some(rates[0]),
    }])
}

/// Boots `cmd`, waits for the fetches and the power-off, reads the rate.
fn measure(cmd: Command) -> Result<f64, String> {
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
    throughput(&transcript)
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
