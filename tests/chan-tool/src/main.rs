//! `chan-tool`: tests and benchmarks the VMM channel (virtio-vsock between
//! the rich and the secure VM) from inside the rich VM, and measures the
//! AF_UNIX baseline the channel is compared with.
//!
//! Every result goes to stdout as one machine-readable line,
//! `chan-tool: <name> <value> <unit>` (`cargo xtask bench` and the QEMU tests
//! parse them); progress and errors go to stderr. Times come from
//! `std::time::Instant` (CLOCK_MONOTONIC): under QEMU's `-icount` that is
//! deterministic guest time. Every socket operation has a timeout, so the
//! tool never hangs on a silent peer.

mod attack;
mod flood;
mod stats;

use clap::{Parser, Subcommand, ValueEnum};
use mvmm_abi::vsock::{self as abi, ECHO_PORT, PAYMENT_PORT, SECURE_VM_CID};
use std::io::{self, ErrorKind, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The text after `--help`'s options (the addresses from mvmm's ABI).
fn after_help() -> String {
    format!(
        "\
Results are printed on stdout as `chan-tool: <name> <value> <unit>` lines.
The secure VM (CID {SECURE_VM_CID}) serves payments on port {PAYMENT_PORT} (`--port payment`)
and echoes on port {ECHO_PORT} (`--port echo`); mvmm's policy resets every other
rich->secure connection.

Exit status: 0 success (for `connect`, the outcome given by --expect),
1 failure, 2 bad command line."
    )
}

/// Test and benchmark tool for the VMM channel (vsock) and its AF_UNIX baseline.
#[derive(Parser, Debug, PartialEq)]
#[command(version, after_help = after_help())]
struct Args {
    /// Timeout of every socket operation (connect, accept, read, write), in ms.
    #[arg(long, global = true, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug, PartialEq)]
enum Cmd {
    /// Open a vsock stream and report `connected` or why not.
    ///
    /// Prints `chan-tool: connect connected`, or
    /// `chan-tool: connect refused <error>` (reset or refused: what mvmm's
    /// policy answers), `chan-tool: connect timed-out <error>`,
    /// `chan-tool: connect failed <error>`.
    Connect {
        #[command(flatten)]
        peer: Peer,
        /// The outcome that makes the exit status 0.
        #[arg(long, value_enum, default_value_t = Expect::Connected)]
        expect: Expect,
    },
    /// Send COUNT malformed records (random packets, empty and oversized
    /// length prefixes, unframed bytes, truncated frames) over as many
    /// connections as it takes; report how many were sent and closed.
    Flood {
        #[command(flatten)]
        peer: Peer,
        /// Records to send.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: u64,
        /// Seed of the random bytes (the same seed sends the same bytes).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Give up after this many seconds in all.
        #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
        max_seconds: u64,
    },
    /// Round trips of SIZE-byte messages through the echo service.
    EchoRtt {
        #[command(flatten)]
        peer: Peer,
        #[command(flatten)]
        rtt: Rtt,
    },
    /// Round trips of SIZE-byte messages over an AF_UNIX stream to a child
    /// process (this tool re-executed as the echo): the baseline.
    UnixRtt {
        #[command(flatten)]
        rtt: Rtt,
    },
    /// Bytes per second through the echo service: COUNT messages of SIZE bytes.
    EchoThroughput {
        #[command(flatten)]
        peer: Peer,
        /// Message size in bytes.
        #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=16 << 20))]
        size: u32,
        /// Messages to send.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// `concurrent`: a thread sends while the main thread receives;
        /// `alternate`: send one message, receive it back, repeat.
        #[arg(long, value_enum, default_value_t = Mode::Concurrent)]
        mode: Mode,
    },
    /// Attacks of a compromised rich VM on the channel (the QEMU attack
    /// suite): the secure VM must keep serving through each.
    Attack {
        #[command(subcommand)]
        attack: attack::Attack,
    },
    /// (internal) The echo child of `unix-rtt`.
    #[command(hide = true)]
    UnixEchoChild {
        /// Abstract socket name to connect to.
        #[arg(long)]
        name: String,
    },
}

#[derive(clap::Args, Debug, PartialEq)]
struct Peer {
    /// vsock context id of the peer (default: the secure VM's).
    #[arg(long, default_value_t = SECURE_VM_CID, value_parser = clap::value_parser!(u32))]
    cid: u32,
    /// vsock port: a number, or a service of the secure VM (`payment`,
    /// `echo`).
    #[arg(long, value_parser = parse_port)]
    port: u32,
}

/// A port number, or the name of one of the secure VM's services.
fn parse_port(s: &str) -> Result<u32, String> {
    if let Some(port) = abi::service_port(s) {
        return Ok(port);
    }
    s.parse().map_err(|_| {
        let names: Vec<String> = abi::SERVICES
            .iter()
            .map(|(n, p)| format!("{n} ({p})"))
            .collect();
        format!(
            "{s:?} is neither a port number nor a service ({})",
            names.join(", ")
        )
    })
}

#[derive(clap::Args, Debug, PartialEq)]
struct Rtt {
    /// Message size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    size: u32,
    /// Timed round trips.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    iters: u32,
    /// Untimed round trips first.
    #[arg(long, default_value_t = 10)]
    warmup: u32,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Expect {
    Connected,
    Refused,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Mode {
    Concurrent,
    Alternate,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let timeout = Duration::from_millis(args.timeout_ms);
    let outcome = match args.command {
        Cmd::Connect { peer, expect } => connect(&peer, expect, timeout),
        Cmd::Flood {
            peer,
            count,
            seed,
            max_seconds,
        } => run_flood(
            &peer,
            count,
            seed,
            Duration::from_secs(max_seconds),
            timeout,
        ),
        Cmd::EchoRtt { peer, rtt } => echo_rtt(&peer, &rtt, timeout),
        Cmd::UnixRtt { rtt } => unix_rtt(&rtt, timeout),
        Cmd::EchoThroughput {
            peer,
            size,
            count,
            mode,
        } => echo_throughput(&peer, size, count, mode, timeout),
        Cmd::UnixEchoChild { name } => unix_echo_child(&name, timeout),
        Cmd::Attack { attack } => attack::run(&attack, timeout),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chan-tool: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints one result line.
fn result(name: &str, value: impl std::fmt::Display, unit: &str) {
    println!("chan-tool: {name} {value} {unit}");
}

/// A byte stream this tool measures (vsock or AF_UNIX).
trait Stream: Read + Write + Send + Sized + 'static {
    fn duplicate(&self) -> io::Result<Self>;
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
    fn close_write(&self) -> io::Result<()>;
}

#[cfg(target_os = "linux")]
impl Stream for vsock::VsockStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
    fn close_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

impl Stream for std::os::unix::net::UnixStream {
    fn duplicate(&self) -> io::Result<Self> {
        self.try_clone()
    }
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
    fn close_write(&self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// Opens a vsock stream with `timeout` on every later operation. The
/// connect itself is bounded by the kernel's vsock connect timeout (2 s).
#[cfg(target_os = "linux")]
fn open(peer: &Peer, timeout: Duration) -> io::Result<vsock::VsockStream> {
    let stream = vsock::VsockStream::connect_with_cid_port(peer.cid, peer.port)?;
    stream.set_timeouts(timeout)?;
    Ok(stream)
}

#[cfg(not(target_os = "linux"))]
fn open(_: &Peer, _: Duration) -> io::Result<std::os::unix::net::UnixStream> {
    Err(io::Error::new(
        ErrorKind::Unsupported,
        "AF_VSOCK needs Linux",
    ))
}

/// What a failed connect means for the policy tests.
fn connect_outcome(e: &io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionAborted => "refused",
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed-out",
        _ => "failed",
    }
}

fn connect(peer: &Peer, expect: Expect, timeout: Duration) -> Result<(), String> {
    let got = match open(peer, timeout) {
        Ok(_stream) => {
            result(
                "connect",
                "connected",
                &format!("cid {} port {}", peer.cid, peer.port),
            );
            Expect::Connected
        }
        Err(e) => {
            let outcome = connect_outcome(&e);
            result("connect", outcome, &e.to_string().to_lowercase());
            if outcome == "refused" {
                Expect::Refused
            } else {
                return Err(format!(
                    "connect to cid {} port {}: {e}",
                    peer.cid, peer.port
                ));
            }
        }
    };
    if got == expect {
        Ok(())
    } else {
        Err(format!(
            "connect to cid {} port {}: expected {expect:?}, got {got:?}",
            peer.cid, peer.port
        ))
    }
}

/// Counters of a flood.
#[derive(Default, Debug)]
struct FloodCount {
    sent: u64,
    connections: u64,
    /// Error replies (whole frames) the service sent back.
    replies: u64,
    /// Records the service did not answer within the timeout.
    unanswered: u64,
    closed_by_peer: u64,
    closed_by_us: u64,
    connect_failed: u64,
}

/// What became of a connection after a record.
enum After {
    /// It can carry the next record.
    Open,
    ClosedByPeer,
    ClosedByUs,
}

fn run_flood(
    peer: &Peer,
    count: u64,
    seed: u64,
    max: Duration,
    timeout: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let mut rng = flood::Rng::new(seed);
    let mut n = FloodCount::default();
    let mut conn = None;
    let mut failures_in_a_row = 0;
    let mut i = 0;
    let mut error = None;
    while i < count {
        if started.elapsed() > max {
            error = Some(format!("gave up after {} s", max.as_secs()));
            break;
        }
        let mut stream = match conn.take() {
            Some(s) => s,
            None => match open(peer, timeout) {
                Ok(s) => {
                    n.connections += 1;
                    failures_in_a_row = 0;
                    s
                }
                Err(e) => {
                    n.connect_failed += 1;
                    failures_in_a_row += 1;
                    eprintln!("chan-tool: flood: connect: {e}");
                    if failures_in_a_row >= 5 {
                        error = Some(format!(
                            "5 connects in a row to cid {} port {} failed, the last: {e}",
                            peer.cid, peer.port
                        ));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let (kind, bytes) = flood::record(i, &mut rng);
        if let Err(e) = stream.write_all(&bytes) {
            // The peer closed this connection; the record goes again on a
            // new one.
            eprintln!("chan-tool: flood: send {}: {e}", kind.name());
            n.closed_by_peer += 1;
            continue;
        }
        n.sent += 1;
        i += 1;
        let after = match kind {
            // The service answers a well-framed packet (an error reply)
            // and keeps the connection.
            flood::Kind::Garbage | flood::Kind::Empty => match read_frame(&mut stream) {
                Ok(Some(_)) => {
                    n.replies += 1;
                    After::Open
                }
                Ok(None) => After::ClosedByPeer,
                Err(e) if is_timeout(&e) => {
                    n.unanswered += 1;
                    After::Open
                }
                Err(_) => After::ClosedByPeer,
            },
            // Out of step: the service must reset the connection.
            flood::Kind::Oversized | flood::Kind::Unframed => {
                if wait_closed(&mut stream) {
                    After::ClosedByPeer
                } else {
                    n.unanswered += 1;
                    After::ClosedByUs
                }
            }
            // Half a frame, then we hang up.
            flood::Kind::Truncated => After::ClosedByUs,
        };
        match after {
            After::Open => conn = Some(stream),
            After::ClosedByPeer => n.closed_by_peer += 1,
            After::ClosedByUs => n.closed_by_us += 1,
        }
    }
    if conn.is_some() {
        n.closed_by_us += 1;
    }
    result("flood_sent", n.sent, "records");
    result("flood_connections", n.connections, "connections");
    result("flood_replies", n.replies, "frames");
    result("flood_unanswered", n.unanswered, "records");
    result("flood_closed_by_peer", n.closed_by_peer, "connections");
    result("flood_closed_by_us", n.closed_by_us, "connections");
    result("flood_connect_failed", n.connect_failed, "connects");
    result(
        "flood_elapsed",
        format!("{:.3}", started.elapsed().as_secs_f64()),
        "s",
    );
    match error {
        Some(e) => Err(format!("flood: sent {} of {count} records: {e}", n.sent)),
        None => Ok(()),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Reads one `u32 BE length || packet` frame: `Ok(None)` at end of stream.
fn read_frame(stream: &mut impl Read) -> io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(header);
    if len > flood::MAX_FRAME_LEN {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("reply frame of {len} bytes"),
        ));
    }
    let mut packet = vec![0u8; len as usize];
    stream.read_exact(&mut packet)?;
    Ok(Some(packet))
}

/// Reads until the peer closes or resets (true) or the read timeout
/// passes (false).
fn wait_closed(stream: &mut impl Read) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return !is_timeout(&e),
        }
    }
}

/// The byte at stream position `pos` of the test pattern.
fn pattern(pos: u64) -> u8 {
    (pos % 251) as u8
}

/// `iters` timed round trips of `size` bytes on `stream`, after `warmup`.
fn ping_pong<S: Stream>(mut stream: S, rtt: &Rtt) -> Result<Vec<Duration>, String> {
    let size = rtt.size as usize;
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(rtt.iters as usize);
    for i in 0..u64::from(rtt.warmup) + u64::from(rtt.iters) {
        for (k, b) in msg.iter_mut().enumerate() {
            *b = pattern(i + k as u64);
        }
        let t = Instant::now();
        stream
            .write_all(&msg)
            .map_err(|e| format!("round trip {i}: send: {e}"))?;
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("round trip {i}: receive: {e}"))?;
        let took = t.elapsed();
        if back != msg {
            return Err(format!(
                "round trip {i}: the echo differs from what was sent"
            ));
        }
        if i >= u64::from(rtt.warmup) {
            samples.push(took);
        }
    }
    let _ = stream.close_write();
    Ok(samples)
}

fn print_rtt(prefix: &str, samples: &[Duration]) -> Result<(), String> {
    let s = stats::summarize(samples).ok_or("no samples")?;
    result(&format!("{prefix}_iters"), s.count, "round-trips");
    for (name, v) in [
        ("mean", s.mean),
        ("median", s.median),
        ("min", s.min),
        ("p99", s.p99),
        ("max", s.max),
    ] {
        result(&format!("{prefix}_{name}"), format!("{v:.3}"), "us");
    }
    Ok(())
}

fn echo_rtt(peer: &Peer, rtt: &Rtt, timeout: Duration) -> Result<(), String> {
    let stream = open(peer, timeout)
        .map_err(|e| format!("connect to cid {} port {}: {e}", peer.cid, peer.port))?;
    let samples = ping_pong(stream, rtt).map_err(|e| format!("echo-rtt: {e}"))?;
    print_rtt("echo_rtt", &samples)
}

/// The abstract AF_UNIX address `name`.
fn unix_addr(name: &str) -> io::Result<std::os::unix::net::SocketAddr> {
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = name;
        Err(io::Error::new(
            ErrorKind::Unsupported,
            "abstract sockets need Linux",
        ))
    }
}

fn unix_rtt(rtt: &Rtt, timeout: Duration) -> Result<(), String> {
    use std::os::unix::net::UnixListener;
    let name = format!("chan-tool-unix-rtt-{}", std::process::id());
    let listener = unix_addr(&name)
        .and_then(|a| UnixListener::bind_addr(&a))
        .map_err(|e| format!("unix-rtt: bind @{name}: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("unix-rtt: own executable: {e}"))?;
    let mut child = std::process::Command::new(&exe)
        .arg("--timeout-ms")
        .arg(timeout.as_millis().to_string())
        .args(["unix-echo-child", "--name", &name])
        .spawn()
        .map_err(|e| format!("unix-rtt: cannot start {} as the echo: {e}", exe.display()))?;
    let outcome = accept(&listener, timeout)
        .map_err(|e| format!("unix-rtt: the echo child did not connect: {e}"))
        .and_then(|stream| {
            stream
                .set_timeouts(timeout)
                .map_err(|e| format!("unix-rtt: {e}"))?;
            ping_pong(stream, rtt).map_err(|e| format!("unix-rtt: {e}"))
        });
    // The child ends at end of stream; do not wait for a stuck one.
    let deadline = Instant::now() + timeout;
    while let Ok(None) = child.try_wait() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    print_rtt("unix_rtt", &outcome?)
}

/// Accepts one connection within `timeout`.
fn accept(
    listener: &std::os::unix::net::UnixListener,
    timeout: Duration,
) -> io::Result<std::os::unix::net::UnixStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(io::Error::new(ErrorKind::TimedOut, "accept timed out"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Echoes every byte until end of stream.
fn unix_echo_child(name: &str, timeout: Duration) -> Result<(), String> {
    let mut stream = unix_addr(name)
        .and_then(|a| std::os::unix::net::UnixStream::connect_addr(&a))
        .map_err(|e| format!("unix-echo-child: connect @{name}: {e}"))?;
    stream
        .set_timeouts(timeout)
        .map_err(|e| format!("unix-echo-child: {e}"))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => stream
                .write_all(&buf[..n])
                .map_err(|e| format!("unix-echo-child: send: {e}"))?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("unix-echo-child: receive: {e}")),
        }
    }
}

fn echo_throughput(
    peer: &Peer,
    size: u32,
    count: u32,
    mode: Mode,
    timeout: Duration,
) -> Result<(), String> {
    let stream = open(peer, timeout)
        .map_err(|e| format!("connect to cid {} port {}: {e}", peer.cid, peer.port))?;
    let (bytes, elapsed) = throughput(stream, size as usize, count, mode)
        .map_err(|e| format!("echo-throughput: {e}"))?;
    let rate = stats::rate(bytes, elapsed);
    result("echo_throughput_bytes", bytes, "bytes");
    result(
        "echo_throughput_elapsed",
        format!("{:.6}", elapsed.as_secs_f64()),
        "s",
    );
    result("echo_throughput", format!("{rate:.0}"), "B/s");
    result(
        "echo_throughput_mib",
        format!("{:.3}", rate / f64::from(1 << 20)),
        "MiB/s",
    );
    Ok(())
}

/// Sends `count` messages of `size` pattern bytes and receives them back;
/// returns the bytes echoed and the time from the first send to the last
/// byte received.
fn throughput<S: Stream>(
    mut stream: S,
    size: usize,
    count: u32,
    mode: Mode,
) -> Result<(u64, Duration), String> {
    let total = size as u64 * u64::from(count);
    let message = |m: u64| -> Vec<u8> {
        (0..size as u64)
            .map(|k| pattern(m * size as u64 + k))
            .collect()
    };
    let check = |buf: &[u8], at: u64| -> Result<(), String> {
        match buf
            .iter()
            .enumerate()
            .find(|(k, b)| **b != pattern(at + *k as u64))
        {
            Some((k, _)) => Err(format!("the echo differs at byte {}", at + k as u64)),
            None => Ok(()),
        }
    };
    let started = Instant::now();
    match mode {
        Mode::Alternate => {
            let mut back = vec![0u8; size];
            for m in 0..u64::from(count) {
                stream
                    .write_all(&message(m))
                    .map_err(|e| format!("message {m}: send: {e}"))?;
                stream
                    .read_exact(&mut back)
                    .map_err(|e| format!("message {m}: receive: {e}"))?;
                check(&back, m * size as u64)?;
            }
        }
        Mode::Concurrent => {
            let mut writer = stream.duplicate().map_err(|e| format!("clone: {e}"))?;
            // Messages are built up front: message m goes out as
            // message m % 251 (check_concurrent knows).
            let msgs: Vec<Vec<u8>> = (0..u64::from(count).min(251)).map(message).collect();
            let sender = std::thread::spawn(move || -> Result<(), String> {
                for m in 0..u64::from(count) {
                    writer
                        .write_all(&msgs[(m % msgs.len() as u64) as usize])
                        .map_err(|e| format!("message {m}: send: {e}"))?;
                }
                Ok(())
            });
            let mut buf = vec![0u8; 64 << 10];
            let mut got = 0u64;
            let mut failure = None;
            while got < total {
                let want = buf.len().min((total - got) as usize);
                match stream.read(&mut buf[..want]) {
                    Ok(0) => {
                        failure = Some(format!("end of stream after {got} of {total} bytes"));
                        break;
                    }
                    Ok(n) => {
                        if let Err(e) = check_concurrent(&buf[..n], got, size as u64, count) {
                            failure = Some(e);
                            break;
                        }
                        got += n as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        failure = Some(format!("receive after {got} of {total} bytes: {e}"));
                        break;
                    }
                }
            }
            if failure.is_some() {
                // Unblock a sender stuck on a full channel (its own write
                // timeout would end it too).
                let _ = stream.close_write();
            }
            let sent = sender
                .join()
                .map_err(|_| "the sender thread panicked".to_string())?;
            if let Some(f) = failure {
                return Err(f);
            }
            sent?;
        }
    }
    let elapsed = started.elapsed();
    let _ = stream.close_write();
    Ok((total, elapsed))
}

/// Checks received bytes at stream offset `at` in concurrent mode, where
/// message `m` is sent as message `m % min(count, 251)`.
fn check_concurrent(buf: &[u8], at: u64, size: u64, count: u32) -> Result<(), String> {
    let period = u64::from(count).min(251);
    for (k, b) in buf.iter().enumerate() {
        let pos = at + k as u64;
        let (m, off) = (pos / size, pos % size);
        let expect = pattern((m % period) * size + off);
        if *b != expect {
            return Err(format!("the echo differs at byte {pos}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("chan-tool").chain(args.iter().copied()))
    }

    #[test]
    fn subcommands_parse() {
        let a = parse(&[
            "connect", "--cid", "4", "--port", "7102", "--expect", "refused",
        ])
        .unwrap();
        assert_eq!(
            a.command,
            Cmd::Connect {
                peer: Peer { cid: 4, port: 7102 },
                expect: Expect::Refused
            }
        );
        assert_eq!(a.timeout_ms, 5000);
        let a = parse(&[
            "flood",
            "--cid",
            "4",
            "--port",
            "7100",
            "--count",
            "50",
            "--timeout-ms",
            "300",
        ])
        .unwrap();
        assert_eq!(a.timeout_ms, 300);
        assert_eq!(
            a.command,
            Cmd::Flood {
                peer: Peer { cid: 4, port: 7100 },
                count: 50,
                seed: 1,
                max_seconds: 120
            }
        );
        let a = parse(&[
            "echo-rtt", "--cid", "4", "--port", "7101", "--size", "64", "--iters", "200",
        ])
        .unwrap();
        assert_eq!(
            a.command,
            Cmd::EchoRtt {
                peer: Peer { cid: 4, port: 7101 },
                rtt: Rtt {
                    size: 64,
                    iters: 200,
                    warmup: 10
                }
            }
        );
        let a = parse(&["unix-rtt", "--iters", "5", "--warmup", "0"]).unwrap();
        assert_eq!(
            a.command,
            Cmd::UnixRtt {
                rtt: Rtt {
                    size: 64,
                    iters: 5,
                    warmup: 0
                }
            }
        );
        let a = parse(&[
            "echo-throughput",
            "--cid",
            "4",
            "--port",
            "7101",
            "--count",
            "8",
        ])
        .unwrap();
        assert_eq!(
            a.command,
            Cmd::EchoThroughput {
                peer: Peer { cid: 4, port: 7101 },
                size: 65536,
                count: 8,
                mode: Mode::Concurrent
            }
        );
        let a = parse(&["connect", "--cid", "4", "--port", "7100"]).unwrap();
        assert!(matches!(
            a.command,
            Cmd::Connect {
                expect: Expect::Connected,
                ..
            }
        ));
    }

    #[test]
    fn services_by_name_and_the_secure_vm_by_default() {
        let a = parse(&["connect", "--port", "echo"]).unwrap();
        assert_eq!(
            a.command,
            Cmd::Connect {
                peer: Peer {
                    cid: SECURE_VM_CID,
                    port: ECHO_PORT
                },
                expect: Expect::Connected
            }
        );
        let a = parse(&["connect", "--cid", "3", "--port", "payment"]).unwrap();
        let Cmd::Connect { peer, .. } = a.command else {
            panic!("not connect")
        };
        assert_eq!(
            peer,
            Peer {
                cid: 3,
                port: PAYMENT_PORT
            }
        );
        let e = parse(&["connect", "--port", "ssh"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"ssh\" is neither a port number nor a service"),
            "{e}"
        );
        assert!(e.contains("payment (7100)"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        for (args, offending) in [
            (&["connect", "--cid", "four", "--port", "1"][..], "four"),
            (&["connect", "--cid", "4", "--port", "-1"][..], "-1"),
            (
                &["connect", "--cid", "4", "--port", "1", "--expect", "maybe"][..],
                "maybe",
            ),
            (
                &[
                    "echo-rtt", "--cid", "4", "--port", "7101", "--size", "0", "--iters", "1",
                ][..],
                "0",
            ),
            (
                &["echo-rtt", "--cid", "4", "--port", "7101", "--iters", "0"][..],
                "0",
            ),
            (
                &["flood", "--cid", "4", "--port", "7100", "--count", "x"][..],
                "x",
            ),
            (&["unix-rtt", "--iters", "3", "--timeout-ms", "0"][..], "0"),
            (
                &[
                    "echo-throughput",
                    "--cid",
                    "4",
                    "--port",
                    "7101",
                    "--count",
                    "1",
                    "--mode",
                    "fast",
                ][..],
                "fast",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(
                e.to_string().contains(&format!("'{offending}'")),
                "{args:?}: {e}"
            );
        }
        // Missing required arguments and unknown subcommands are errors too.
        assert!(parse(&["echo-rtt", "--cid", "4", "--port", "7101"]).is_err());
        assert!(parse(&["flood", "--cid", "4", "--port", "7100"]).is_err());
        assert!(parse(&["ping"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn connect_errors_are_classified() {
        let e = |k| io::Error::from(k);
        assert_eq!(connect_outcome(&e(ErrorKind::ConnectionReset)), "refused");
        assert_eq!(connect_outcome(&e(ErrorKind::ConnectionRefused)), "refused");
        assert_eq!(connect_outcome(&e(ErrorKind::TimedOut)), "timed-out");
        assert_eq!(connect_outcome(&e(ErrorKind::PermissionDenied)), "failed");
    }

    #[test]
    fn reply_frames_are_read_whole() {
        let mut r = io::Cursor::new(vec![0, 0, 0, 2, 7, 8, 0, 0, 0, 0]);
        assert_eq!(read_frame(&mut r).unwrap(), Some(vec![7, 8]));
        assert_eq!(read_frame(&mut r).unwrap(), Some(vec![]));
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut r = io::Cursor::new(vec![0xff, 0, 0, 0]);
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            ErrorKind::InvalidData
        );
        let mut r = io::Cursor::new(vec![0, 0, 0, 9, 1]);
        assert_eq!(
            read_frame(&mut r).unwrap_err().kind(),
            ErrorKind::UnexpectedEof
        );
        assert!(wait_closed(&mut io::Cursor::new(vec![1u8; 10_000])));
    }

    #[test]
    fn concurrent_pattern_check() {
        let size = 10u64;
        let count = 300u32;
        // Message 260 is sent as message 260 % 251 = 9.
        let at = 260 * size;
        let buf: Vec<u8> = (0..size).map(|k| pattern(9 * size + k)).collect();
        assert!(check_concurrent(&buf, at, size, count).is_ok());
        let mut bad = buf.clone();
        bad[3] ^= 1;
        assert_eq!(
            check_concurrent(&bad, at, size, count),
            Err(format!("the echo differs at byte {}", at + 3))
        );
    }

    #[test]
    fn unix_round_trips_and_throughput_in_process() {
        // The measuring code against an in-process echo thread.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let echo = std::thread::spawn(move || {
            let mut b = b;
            let mut buf = [0u8; 8192];
            loop {
                match b.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => b.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        a.set_timeouts(Duration::from_secs(5)).unwrap();
        let samples = ping_pong(
            a.try_clone().unwrap(),
            &Rtt {
                size: 100,
                iters: 20,
                warmup: 2,
            },
        )
        .unwrap();
        assert_eq!(samples.len(), 20);
        echo.join().unwrap();

        for mode in [Mode::Concurrent, Mode::Alternate] {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let echo = std::thread::spawn(move || {
                let mut b = b;
                let mut buf = [0u8; 8192];
                loop {
                    match b.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => b.write_all(&buf[..n]).unwrap(),
                    }
                }
            });
            a.set_timeouts(Duration::from_secs(5)).unwrap();
            let (bytes, _) = throughput(a, 70_000, 5, mode).unwrap();
            assert_eq!(bytes, 350_000);
            echo.join().unwrap();
        }
    }
}
