//! QEMU system tests with a real Linux in the rich VM: Debian's arm64
//! kernel and the busybox initramfs (`tests/rich/init`) boot under mvmm
//! beside secure-os, run one command as root, print its exit status and
//! power the machine off.
//!
//! Run by `cargo xtask test` (they need the images: `#[ignore]` otherwise).

use mvmm_tests::{ConsoleError, Machine};
use std::time::Duration;

/// Boot to the shell, with the time TCG needs on a loaded 2-core machine.
const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);

#[track_caller]
fn ok(result: Result<String, ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Boots Linux running `command`, waits for its exit status line, and
/// checks the machine then powers off cleanly. Returns the transcript.
fn run(command: &str, work: &str, expect_status: i32) -> (Machine, String) {
    let mut m = Machine::boot_linux(Some(command), work);
    ok(m.expect("[rich] mvmm-rich: initramfs up", BOOT));
    ok(m.expect("[rich] mvmm-rich: ready (2 cpus online)", BOOT));
    ok(m.expect(
        &format!("[rich] mvmm-rich: exit status {expect_status}"),
        BOOT,
    ));
    ok(m.expect("[mvmm] vm 'rich': PSCI SYSTEM_OFF", STEP));
    let status = m
        .wait_exit(STEP)
        .expect("QEMU did not exit after the rich VM's SYSTEM_OFF");
    assert!(status.success(), "QEMU exit status {status}");
    let transcript = m.transcript();
    (m, transcript)
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn rich_linux_boots_with_both_vcpus_online() {
    let (_, out) = run(
        "grep -c ^processor /proc/cpuinfo; cat /sys/devices/system/cpu/online",
        "cpus",
        0,
    );
    // vCPU 1 was started by Linux itself, through mvmm's PSCI CPU_ON.
    assert!(out.contains("[mvmm] vm 'rich': vcpu 1 starts at"), "{out}");
    assert!(out.contains("(PSCI CPU_ON)"));
    assert!(out.contains("[rich] 2\n"), "two processors: {out}");
    assert!(out.contains("[rich] 0-1\n"), "both online: {out}");
    assert!(!out.contains("stage-2 fault"), "no guest fault during boot");
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_timer_driven_sleep_takes_a_second() {
    let (_, out) = run(
        "a=$(cut -d' ' -f1 /proc/uptime); sleep 1; b=$(cut -d' ' -f1 /proc/uptime); echo \"slept from $a to $b\"",
        "sleep",
        0,
    );
    let line = out
        .lines()
        .find(|l| l.contains("slept from"))
        .expect("the sleep line");
    let mut words = line.split_whitespace().rev();
    let end: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("end uptime");
    let start: f64 = words
        .nth(1)
        .and_then(|w| w.parse().ok())
        .expect("start uptime");
    // At least a second: the timer waited. The upper bound only catches a
    // timer interrupt that never comes (the shell would hang): on a loaded
    // host a vCPU may not run for seconds, so it says nothing about speed.
    let slept = end - start;
    assert!(
        (1.0..30.0).contains(&slept),
        "sleep 1 took {slept} s of guest time"
    );
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn cpu_hotplug_goes_through_psci_cpu_off_and_cpu_on() {
    let cpu1 = "/sys/devices/system/cpu/cpu1/online";
    let cmd = format!(
        "echo 0 > {cpu1} && echo \"online: $(cat /sys/devices/system/cpu/online)\" && \
         echo 1 > {cpu1} && echo \"online: $(cat /sys/devices/system/cpu/online)\""
    );
    let (_, out) = run(&cmd, "hotplug", 0);
    assert!(out.contains("[rich] online: 0\n"), "{out}");
    assert!(out.contains("[rich] online: 0-1\n"), "{out}");
    // Started twice: at boot and after the hotplug.
    assert_eq!(
        out.matches("[mvmm] vm 'rich': vcpu 1 starts at").count(),
        2,
        "{out}"
    );
}

/// What a compromised rich kernel would read or write outside its
/// partition: (what, physical address). From the board file, plus QEMU
/// `virt` hardware the board gives no VM (hw/arm/virt.c's memory map).
fn outside_the_rich_partition() -> Vec<(String, u64)> {
    let (board, _) = mvmm_tests::load_test_board().unwrap();
    let b = &board.board;
    let secure = board.vms.iter().find(|vm| vm.kind == "secure").unwrap();
    let mut targets = vec![
        ("the secure VM's code".to_string(), secure.entry),
        (
            "mvmm's image".into(),
            b.mvmm.base + mvmm_core::boot_options::IMAGE_OFFSET,
        ),
        (
            "mvmm's device-secret page".into(),
            mvmm_core::dice::uds_address(b.mvmm.base),
        ),
        ("the QEMU DTB mvmm read".into(), b.mvmm.base),
    ];
    if let Some(page) = secure.provision {
        targets.push(("the secure VM's provisioning page".into(), page));
    }
    if let Some(store) = &b.image_store {
        targets.push(("the boot image store".into(), store.base));
    }
    if let Some(display) = &b.display {
        targets.push(("the secure framebuffer".into(), display.secure_framebuffer));
        targets.push(("fw_cfg (DMA to all memory)".into(), display.fw_cfg.base));
    }
    if let Some(smmu) = &b.smmu {
        targets.push(("the SMMU's registers".into(), smmu.base));
    }
    for (name, slot) in [
        ("mvmm's disk", &b.rpmb),
        ("mvmm's entropy device", &b.entropy),
    ] {
        if let Some(slot) = slot {
            targets.push((name.into(), slot.base));
        }
    }
    for name in &secure.devices {
        let device = board.devices.iter().find(|d| &d.name == name).unwrap();
        targets.push((format!("the secure VM's {name}"), device.base));
    }
    // QEMU virt hardware no VM owns: the GIC ITS. (mvmm logs 32 faults
    // per VM: these 15 targets, read and written, stay under it.)
    targets.push(("the GIC ITS".into(), 0x0808_0000));
    targets
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn rich_linux_can_reach_nothing_outside_its_partition_and_a_payment_still_works() {
    // The rich VM's root reads and writes each address with /dev/mem (its
    // kernel maps what is not its RAM for it), then pays.
    let targets = outside_the_rich_partition();
    // Its kernel refuses /dev/mem on pages its own drivers claim (the vsock
    // device shares a page with mvmm's disk): unbind them for the attack,
    // as a compromised kernel would not bother to ask, and bind them again
    // before paying (the vsock device is reset and probed anew).
    let drivers = "/sys/bus/platform/drivers/virtio-mmio";
    let mut attack = format!(
        "claimed=$(cd {drivers} && ls -d *.virtio_mmio); \
         for d in $claimed; do echo $d > {drivers}/unbind; done; "
    );
    for (_, address) in &targets {
        attack.push_str(&format!(
            "devmem {address:#x} 32 >/dev/null 2>&1; echo \"attack read {address:#x} rc=$?\"; \
             devmem {address:#x} 32 0x5a5a5a5a >/dev/null 2>&1; echo \"attack write {address:#x} rc=$?\"; "
        ));
    }
    attack.push_str(&format!(
        "for d in $claimed; do echo $d > {drivers}/bind; done; echo 'attacks done'; "
    ));
    // After the payment, 6 s for a heartbeat of the secure VM (every 5 s).
    let cmd = format!("{attack}{}", mvmm_tests::payment::script("sleep 6"));
    let mut m = Machine::boot_linux(Some(&cmd), "isolation");
    ok(m.expect("[rich] mvmm-rich: ready (2 cpus online)", BOOT));
    ok(m.expect("[rich] attacks done", STEP));
    let out = m.transcript();
    for (what, address) in &targets {
        for (op, access) in [("read", "read"), ("write", "write")] {
            // The process dies of SIGBUS (128 + 7): mvmm injected an abort.
            assert!(
                out.contains(&format!("[rich] attack {op} {address:#x} rc=135")),
                "{op} of {what} at {address:#x} did not end in a bus error:\n{out}"
            );
            assert!(
                out.contains(&format!("stage-2 fault: {access} at IPA {address:#x} (VA ")),
                "mvmm did not refuse the {op} of {what} at {address:#x}:\n{out}"
            );
        }
    }
    // Both VMs keep running: the secure VM approves a payment afterwards.
    ok(mvmm_tests::payment::answer(&mut m, "y\r", STEP));
    ok(m.expect("secure-os: payment approved", STEP));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let out = m.finish_rich_command(STEP);
    let json = mvmm_tests::payment::json_lines(&out);
    assert_eq!(json.len(), 2, "enroll and request lines: {out}");
    mvmm_tests::payment::verify(&json[0], &json[1]).unwrap_or_else(|e| panic!("{e}"));
    let done = out.find("[rich] attacks done").unwrap_or(0);
    assert!(
        out[done..].contains("[secure] secure-os: heartbeat"),
        "no secure heartbeat after the attacks: {out}"
    );
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn keys_typed_on_the_console_reach_the_rich_vm_shell() {
    let mut m = Machine::boot_linux(None, "shell");
    ok(m.expect("[rich] mvmm-rich: interactive shell", BOOT));
    // Input goes through the physical UART's interrupt, mvmm's receive
    // FIFO for the VM with focus, and the virtual UART interrupt.
    m.send("echo typed-$((6*7))\n");
    ok(m.expect("[rich] typed-42", STEP));
    m.send("poweroff -f\n");
    ok(m.expect("[mvmm] vm 'rich': PSCI SYSTEM_OFF", STEP));
    let status = m.wait_exit(STEP).expect("QEMU did not exit after poweroff");
    assert!(status.success(), "QEMU exit status {status}");
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_passed_through_device_interrupt_reaches_the_rich_vm() {
    // The PL031 RTC belongs to the rich VM (board file); its alarm raises
    // physical SPI 34, which mvmm forwards as virtual INTID 34.
    let cmd =
        "echo +2 > /sys/class/rtc/rtc0/wakealarm && sleep 4 && grep rtc-pl031 /proc/interrupts";
    let (_, out) = run(cmd, "rtc", 0);
    let line = out
        .lines()
        .find(|l| l.contains("rtc-pl031") && l.contains("GICv3"))
        .expect("the rtc line");
    let count: u64 = line
        .split_whitespace()
        .skip(2)
        .take(2)
        .filter_map(|w| w.parse::<u64>().ok())
        .sum();
    assert!(count >= 1, "the alarm interrupt never arrived: {line}");
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_rich_vm_reboot_restarts_only_the_rich_vm_from_fresh_images() {
    // `reboot -f` stops vCPU 1 (IPI) and calls PSCI SYSTEM_RESET on vCPU 0.
    // Linux has overwritten its own init sections by then: the restart
    // works only because mvmm copies the images again from its store.
    let mut m = Machine::boot_linux(Some("echo \"rich boot done\"; reboot -f"), "reboot");
    ok(m.expect(
        "[mvmm] vm 'rich': 3 boot image(s) copied from the image store",
        BOOT,
    ));
    ok(m.expect("[rich] mvmm-rich: network eth0 10.", BOOT));
    ok(m.expect("[rich] rich boot done", BOOT));
    // The NIC the old kernel left running stops its DMA before mvmm
    // rewrites the VM's RAM (it owns receive buffers there).
    ok(m.expect(
        "[mvmm] vm 'rich': SYSTEM_RESET: 2 PCIe function(s) quiesced (no DMA, no INTx) before the copy",
        STEP,
    ));
    ok(m.expect(
        &format!(
            "[mvmm] vm 'rich': SYSTEM_RESET: restarting at {:#x} with fresh boot images",
            mvmm_tests::facts::Facts::load().entry("rich")
        ),
        STEP,
    ));
    ok(m.expect("[mvmm] vm 'rich': vcpu 1 starts at", BOOT));
    // The new kernel's driver takes the NIC back.
    ok(m.expect("[rich] mvmm-rich: network eth0 10.", BOOT));
    ok(m.expect("[rich] rich boot done", BOOT));
    let out = m.transcript();
    // The secure VM was not restarted and kept running.
    assert_eq!(out.matches("[secure] secure-os: ready").count(), 1, "{out}");
    assert!(!out.contains("stage-2 fault"), "{out}");
    // Each boot's kernel found the seed mvmm wrote into its device tree
    // (mvmm_core::rng_seed) and was seeded before anything ran: without
    // it, this line never comes (the rich VM has no TRNG and no RNDR).
    assert_eq!(
        out.matches("[rich] [    0.000000] random: crng init done")
            .count(),
        2,
        "{out}"
    );
    assert!(
        !out.contains("no rng-seed") && !out.contains("no entropy for its device tree"),
        "{out}"
    );
}
