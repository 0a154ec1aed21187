//! QEMU attack suite on the VMM channel (issue 15): a compromised rich VM
//! attacks the vsock channel with `chan-tool attack` and the kernel's own
//! device reset; after each attack the secure VM's heartbeat goes on and
//! the payment service answers, and at the end a payment is approved and
//! its token verifies. One boot, several attacks.
//!
//! Run by `cargo xtask test` (they need the images: `#[ignore]` otherwise).

use mvmm_tests::payment;
use mvmm_tests::{ConsoleError, Machine};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(90);
/// The longest attack: 10,000 connection attempts under TCG.
const STORM: Duration = Duration::from_secs(420);
/// Without the console prefix: during the trusted prompt it is `[TRUSTED secure]`.
const HEARTBEAT: &str = "secure-os: heartbeat ";

#[track_caller]
fn ok(result: Result<String, ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Heartbeats the secure VM printed so far.
fn beats(m: &Machine) -> usize {
    m.transcript().matches(HEARTBEAT).count()
}

/// The attack's done line; then the payment service answers and the secure
/// VM's heartbeat goes on.
#[track_caller]
fn survived(m: &mut Machine, name: &str, timeout: Duration) {
    ok(m.expect(&format!("[rich] vsock-attack {name}: done"), timeout));
    ok(m.expect(
        &format!("[rich] vsock-attack {name}: payment service answers 0"),
        STEP,
    ));
    // The next heartbeat, looked for without moving the console cursor:
    // the following attack's lines may come before it.
    let next = format!("{HEARTBEAT}{}\n", beats(m) + 1);
    let deadline = Instant::now() + STEP;
    while !m.transcript().contains(&next) {
        assert!(
            Instant::now() < deadline,
            "no \"{}\" within {STEP:?} after vsock-attack {name}",
            next.trim_end()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rich VM's shell script: each attack, then `mvmm-pay status`.
fn script() -> String {
    let check = |name: &str| {
        format!(
            "echo \"vsock-attack {name}: done\"; mvmm-pay status > /dev/null; \
             echo \"vsock-attack {name}: payment service answers $?\"; "
        )
    };
    let mut s = String::from(
        "vdev=; for d in /sys/bus/virtio/devices/*; do \
           [ \"$(cat $d/device)\" = 0x0013 ] && vdev=$(basename $d); done; \
         drv=/sys/bus/virtio/drivers/vmw_vsock_virtio_transport; \
         echo \"vsock device: $vdev\"; ",
    );
    // Attempts, one in five to a forbidden port or CID.
    s += "chan-tool attack connect-storm --port payment --count 10000 --max-seconds 400; \
          echo \"connect-storm exited with $?\"; ";
    s += &check("connect-storm");
    // Two rounds of "open 16, reset the vsock device".
    for round in 1..=2 {
        s += &format!(
            "chan-tool attack hold --port payment --count 16 --seconds 120 & pid=$!; sleep 4; \
             echo $vdev > $drv/unbind; echo $vdev > $drv/bind; sleep 1; kill $pid; wait $pid; {}",
            check(&format!("reset-{round}"))
        );
    }
    // Sixteen silent connections held open: a clean client still gets in.
    s += "chan-tool attack hold --port payment --count 16 --seconds 120 & pid=$!; sleep 4; ";
    s += &check("hold-16");
    s += "kill $pid; wait $pid; ";
    // Echo answers never read.
    s += "chan-tool attack no-read --port echo --count 4 --bytes 1048576 --seconds 3; ";
    s += &check("no-read");
    // Both vCPUs push 64 KiB messages through the echo as fast as they can.
    s += "echo 'vsock-attack storm: start'; \
          chan-tool echo-throughput --port echo --size 65536 --count 150 > /tmp/a & a=$!; \
          chan-tool echo-throughput --port echo --size 65536 --count 150 > /tmp/b; \
          wait $a; cat /tmp/a /tmp/b; ";
    s += &check("storm");
    s + &payment::script("")
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_secure_vm_keeps_serving_through_rich_vm_attacks_on_the_channel() {
    let started = Instant::now();
    let mut m = Machine::boot_linux(Some(&script()), "vsock-attacks");
    ok(m.expect("[rich] mvmm-rich: ready (2 cpus online)", BOOT));
    let line = ok(m.expect("[rich] vsock device: virtio", STEP));
    assert!(!line.is_empty());

    let t = Instant::now();
    survived(&mut m, "connect-storm", STORM);
    let out = m.transcript();
    eprintln!("connect-storm: {:.1} s", t.elapsed().as_secs_f64());
    assert!(out.contains("[rich] connect-storm exited with 0"), "{out}");
    assert!(
        out.contains("[rich] chan-tool: storm_attempts 10000 connects"),
        "{out}"
    );
    assert!(out.contains("[rich] chan-tool: storm_forbidden_connected 0 connects"));

    for name in ["reset-1", "reset-2", "hold-16", "no-read"] {
        let t = Instant::now();
        survived(&mut m, name, STEP);
        eprintln!("{name}: {:.1} s", t.elapsed().as_secs_f64());
    }

    // The storm: heartbeats keep their pace while both vCPUs push data.
    let t = Instant::now();
    survived(&mut m, "storm", STORM);
    let out = m.transcript();
    let storm = out
        .split("[rich] vsock-attack storm: start")
        .nth(1)
        .and_then(|rest| rest.split("[rich] vsock-attack storm: done").next())
        .unwrap_or_else(|| panic!("storm markers missing:\n{out}"));
    eprintln!(
        "storm: {:.1} s, {} heartbeats during it (one per 5 s of secure guest time); {:?}",
        t.elapsed().as_secs_f64(),
        storm.matches(HEARTBEAT).count(),
        storm
            .lines()
            .filter(|l| l.contains("echo_throughput "))
            .collect::<Vec<_>>()
    );
    // The secure VM's next heartbeat came after the storm (`survived`); how
    // many fell inside it depends on how fast the host ran it.
    // Both streams move data; at least one finishes. (Known limit: the
    // switch queues at most 128 KiB for a VM whose RX ring is empty, less
    // than the credit two Linux streams may have in flight (2 x 256 KiB),
    // so under load one honest stream can be reset; see docs/security.md.)
    let finished = storm
        .matches("chan-tool: echo_throughput_bytes 9830400 bytes")
        .count();
    let cut = storm
        .matches("echo-throughput: end of stream after")
        .count();
    assert!(
        finished >= 1 && finished + cut == 2,
        "{finished} stream(s) finished, {cut} cut:\n{storm}"
    );

    // And at the end a payment is approved and its token verifies.
    ok(payment::answer(&mut m, "y\r", STEP));
    ok(m.expect("secure-os: payment approved", STEP));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let out = m.finish_rich_command(STEP);
    let json = payment::json_lines(&out);
    let (Some(enroll), Some(request)) = (
        json.iter().find(|v| v.get("label").is_some()),
        json.iter().find(|v| v.get("token").is_some()),
    ) else {
        panic!("no enrollment or token after the attacks:\n{out}")
    };
    payment::verify(enroll, request).unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.contains("panicked"), "{out}");
    eprintln!(
        "attack suite: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
