//! The rich VM's network and what its NIC's DMA can reach (docs/dma.md).
//!
//! One boot: Debian's kernel in the rich VM finds the virtio-net-pci NIC on
//! the PCIe bus behind mvmm's SMMU, takes an address by DHCP and reaches a
//! service on the host; then, as a compromised kernel would, it takes the
//! NIC from its driver and points the NIC's DMA at the secure VM's RAM,
//! mvmm's image and the image store (`dma-attack`). The SMMU refuses every
//! one of those DMAs: nothing in those memories changes (QEMU's `pmemsave`
//! before and after), none of their bytes leaves on the wire (QEMU's
//! `filter-dump` of the NIC), mvmm logs each fault with the stream id and
//! address, the secure VM still answers, and the NIC works again once the
//! driver has it back.
//!
//! Run by `cargo xtask test` (it needs the images: `#[ignore]` otherwise).

use mvmm_tests::{ConsoleError, Machine};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(180);
const STEP: Duration = Duration::from_secs(120);

/// Memory the rich VM's NIC must never reach: the secure VM's RAM (its
/// code), mvmm's image, the image store (its manifest).
fn nic_targets() -> [(u64, &'static str); 3] {
    let facts = mvmm_tests::facts::Facts::load();
    [
        (facts.ram_base("secure"), "secure VM RAM"),
        (facts.mvmm_image(), "mvmm's image"),
        (
            facts.file.board.image_store.expect("an image store").base,
            "the image store",
        ),
    ]
}
const SNAPSHOT: u64 = 0x1000;
/// The NIC: slot 1 of bus 0, stream id 0x8 (its requester id).
const NIC: &str = "0000:00:01.0";
const NIC_STREAM: &str = "stream 0x8";

#[track_caller]
fn ok(result: Result<String, ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// A host service the rich VM reaches at 10.0.2.2 (QEMU user networking):
/// `/health` answers, `/go` answers only once the test says so (the rich
/// command waits on it before attacking).
fn serve(go: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port on the host");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..n]);
            let reply = if request.starts_with("GET /health ") {
                "HTTP/1.0 200 OK\r\n\r\nmvmm-host-service: healthy\n"
            } else if request.starts_with("GET /go ") && go.load(Ordering::SeqCst) {
                "HTTP/1.0 200 OK\r\n\r\ngo\n"
            } else {
                "HTTP/1.0 404 Not Found\r\n\r\n"
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    port
}

fn snapshot(qmp: &mut mvmm_tests::qmp::Qmp, dir: &std::path::Path, tag: &str) -> Vec<Vec<u8>> {
    nic_targets()
        .iter()
        .map(|&(addr, _)| {
            let file = dir.join(format!("mem-{addr:x}-{tag}.bin"));
            let _ = std::fs::remove_file(&file);
            qmp.execute(
                "pmemsave",
                json!({ "val": addr, "size": SNAPSHOT, "filename": file.to_string_lossy() }),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        })
        .collect()
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_rich_vms_nic_works_and_its_dma_reaches_only_its_ram() {
    let go = Arc::new(AtomicBool::new(false));
    let port = serve(go.clone());
    let targets: Vec<String> = nic_targets()
        .iter()
        .map(|(a, _)| format!("{a:x}"))
        .collect();
    let command = format!(
        "ip -4 addr show eth0; \
         wget -q -O- http://10.0.2.2:{port}/health || echo 'health FAILED'; \
         n=0; until wget -q -O- http://10.0.2.2:{port}/go >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 120 ] && break; sleep 1; done; \
         echo {NIC} > /sys/bus/pci/devices/{NIC}/driver/unbind; \
         dma-attack {NIC} {}; echo \"dma-attack exited with $?\"; \
         echo {NIC} > /sys/bus/pci/drivers/virtio-pci/bind; sleep 1; \
         ip link set eth0 up; udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 4 -T 1 >/dev/null 2>&1; \
         wget -q -O- http://10.0.2.2:{port}/health || echo 'health FAILED after the attack'; \
         chan-tool echo-rtt --port echo --size 64 --iters 5 >/dev/null && echo 'secure echo answers'",
        targets.join(" ")
    );
    let dir = mvmm_tests::Images::dir_from_env().join("work").join("dma");
    std::fs::create_dir_all(&dir).expect("work dir");
    let wire = dir.join("nic.pcap");
    let _ = std::fs::remove_file(&wire);
    let (mut m, mut qmp) = Machine::boot_linux_with_qmp_args(
        Some(&command),
        "dma",
        &[
            "-object".into(),
            format!("filter-dump,id=wire,netdev=nic0,file={}", wire.display()),
        ],
    );
    ok(m.expect(
        &{
            let smmu = mvmm_tests::facts::Facts::load()
                .file
                .board
                .smmu
                .expect("the board has an SMMU");
            format!(
                "[mvmm] smmu at {:#x}..{:#x}: on; DMA of vm 'rich' confined to its RAM",
                smmu.base,
                smmu.base + smmu.size
            )
        },
        BOOT,
    ));
    ok(m.expect("[rich] mvmm-rich: network eth0 10.0.2.15", BOOT));
    ok(m.expect("[rich] mvmm-rich: ready (2 cpus online)", BOOT));
    ok(m.expect("[rich] mvmm-host-service: healthy", STEP));

    let before = snapshot(&mut qmp, &dir, "before");
    go.store(true, Ordering::SeqCst);
    ok(m.expect("[rich] dma-attack exited with 0", STEP));
    let after = snapshot(&mut qmp, &dir, "after");
    ok(m.expect("[rich] mvmm-host-service: healthy", STEP));
    ok(m.expect("[rich] secure echo answers", STEP));
    ok(m.expect("[rich] mvmm-rich: exit status 0", STEP));
    m.wait_exit(STEP);
    let out = m.transcript();

    // The NIC's DMA cannot be taken past the SMMU by a driver that does not
    // accept VIRTIO_F_ACCESS_PLATFORM.
    assert!(
        out.contains("dma-attack: without ACCESS_PLATFORM: refused"),
        "{out}"
    );
    for (((addr, what), b), a) in nic_targets().iter().zip(&before).zip(&after) {
        assert_eq!(b, a, "{what} at {addr:#x} changed");
        // Both attacks ran (the device may complete a TX whose buffer it
        // could not read: QEMU then sends zeros, checked below).
        for kind in ["read", "write"] {
            let line = format!("dma-attack: {addr:#x} {kind}: used ");
            assert!(out.contains(&line), "{line} missing:\n{out}");
        }
        // mvmm logged the refused DMA with the stream id and the address.
        let read = format!("{NIC_STREAM}: translation fault, DMA read at {addr:#x}");
        let logged = out.replace("\n[mvmm] ", "");
        assert!(logged.contains(&read), "{read} not logged:\n{out}");
        // The used ring's first write: its index (+2) or first entry (+4),
        // or the whole ring when QEMU maps it (+0).
        assert!(
            (0..8).any(|off| logged.contains(&format!(
                "{NIC_STREAM}: translation fault, DMA write at {:#x}",
                addr + off
            ))),
            "no refused DMA write at {addr:#x} logged:\n{out}"
        );
    }
    assert!(out.contains("(vm 'rich', device 'pcie0'); nothing reached memory"));
    // Nothing of those memories on the wire (the capture works: it holds
    // the host service's answers).
    let pcap = std::fs::read(&wire).unwrap_or_else(|e| panic!("{}: {e}", wire.display()));
    for ((addr, what), b) in nic_targets().iter().zip(&before) {
        for chunk in b.chunks(64).filter(|c| c.iter().any(|&x| x != 0)).take(16) {
            assert!(
                !pcap.windows(chunk.len()).any(|w| w == chunk),
                "bytes of {what} ({addr:#x}) left on the wire"
            );
        }
    }
    assert!(
        pcap.windows(26).any(|w| w == b"mvmm-host-service: healthy"),
        "the capture holds the NIC's traffic"
    );
    // Both VMs kept running: no fault, no stop.
    assert!(
        !out.contains("vm 'secure': PSCI SYSTEM_OFF") && !out.contains("PANIC"),
        "{out}"
    );
}
