//! `chan-tool attack`: what a compromised rich VM's userspace can do to the
//! VMM channel, for the QEMU attack suite (issue 15). Each attack reports
//! `chan-tool: <name> <value> <unit>` lines; none waits for ever.

use super::{Peer, connect_outcome, open, result};
use clap::Subcommand;
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug, PartialEq)]
pub enum Attack {
    /// COUNT connection attempts, opened and dropped at once; one in five
    /// goes where mvmm's policy forbids (port 9999, the host CID 2, the
    /// unknown CID 99) and must be refused.
    ConnectStorm {
        #[command(flatten)]
        peer: Peer,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// Give up after this many seconds in all.
        #[arg(long, default_value_t = 300)]
        max_seconds: u64,
    },
    /// Opens COUNT connections and holds them, silent, for SECONDS (or
    /// until killed): dead connections that try to fill the service.
    Hold {
        #[command(flatten)]
        peer: Peer,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        count: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Opens COUNT connections to the echo service, writes up to BYTES on
    /// each and never reads an answer, then holds them for SECONDS: a peer
    /// that does not drain.
    NoRead {
        #[command(flatten)]
        peer: Peer,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        count: u32,
        #[arg(long, default_value_t = 1 << 20)]
        bytes: u64,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

pub fn run(attack: &Attack, timeout: Duration) -> Result<(), String> {
    match attack {
        Attack::ConnectStorm {
            peer,
            count,
            max_seconds,
        } => connect_storm(peer, *count, Duration::from_secs(*max_seconds), timeout),
        Attack::Hold {
            peer,
            count,
            seconds,
        } => hold(peer, *count, Duration::from_secs(*seconds), timeout),
        Attack::NoRead {
            peer,
            count,
            bytes,
            seconds,
        } => no_read(peer, *count, *bytes, Duration::from_secs(*seconds)),
    }
}

fn connect_storm(peer: &Peer, count: u64, max: Duration, timeout: Duration) -> Result<(), String> {
    let started = Instant::now();
    let forbidden = [
        Peer {
            cid: peer.cid,
            port: 9999,
        },
        Peer {
            cid: 2,
            port: peer.port,
        },
        Peer {
            cid: 99,
            port: peer.port,
        },
    ];
    let (mut connected, mut refused, mut failed, mut forbidden_refused, mut forbidden_connected) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut attempts = 0;
    while attempts < count && started.elapsed() < max {
        let bad = (attempts % 5 == 4).then(|| &forbidden[(attempts / 5 % 3) as usize]);
        attempts += 1;
        let outcome = open(bad.unwrap_or(peer), timeout);
        match (bad, outcome) {
            (None, Ok(_)) => connected += 1,
            (None, Err(e)) => {
                if connect_outcome(&e) == "refused" {
                    refused += 1;
                } else {
                    failed += 1;
                }
                if refused + failed <= 5 {
                    eprintln!("chan-tool: connect-storm: attempt {attempts}: {e}");
                }
            }
            (Some(_), Ok(_)) => forbidden_connected += 1,
            (Some(_), Err(_)) => forbidden_refused += 1,
        }
    }
    result("storm_attempts", attempts, "connects");
    result("storm_connected", connected, "connects");
    result("storm_refused", refused, "connects");
    result("storm_failed", failed, "connects");
    result("storm_forbidden_refused", forbidden_refused, "connects");
    result("storm_forbidden_connected", forbidden_connected, "connects");
    result(
        "storm_elapsed",
        format!("{:.3}", started.elapsed().as_secs_f64()),
        "s",
    );
    if forbidden_connected > 0 {
        return Err(format!(
            "{forbidden_connected} forbidden connects went through"
        ));
    }
    if attempts < count {
        return Err(format!(
            "{attempts} of {count} attempts in {} s",
            max.as_secs()
        ));
    }
    Ok(())
}

fn hold(peer: &Peer, count: u32, seconds: Duration, timeout: Duration) -> Result<(), String> {
    let mut held = Vec::new();
    for i in 0..count {
        match open(peer, timeout) {
            Ok(s) => held.push(s),
            Err(e) => eprintln!("chan-tool: hold: connection {i}: {e}"),
        }
    }
    result("hold_open", held.len(), "connections");
    std::thread::sleep(seconds);
    Ok(())
}

fn no_read(peer: &Peer, count: u32, bytes: u64, seconds: Duration) -> Result<(), String> {
    let chunk = vec![0x5au8; 16 * 1024];
    let mut streams = Vec::new();
    let mut written = 0u64;
    let mut reset = 0u64;
    for i in 0..count {
        // A short write timeout: the point is to stop reading, not to wait.
        let mut s = match open(peer, Duration::from_millis(500)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chan-tool: no-read: connection {i}: {e}");
                continue;
            }
        };
        let mut sent = 0u64;
        while sent < bytes {
            match s.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(_) => {
                    reset += 1;
                    break;
                }
            }
        }
        written += sent;
        streams.push(s);
    }
    result("no_read_written", written, "bytes");
    result("no_read_reset", reset, "connections");
    std::thread::sleep(seconds);
    Ok(())
}
