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

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn rich_linux_reading_secure_ram_gets_a_bus_error_and_both_vms_keep_running() {
    // The secure VM's RAM (boards/qemu-virt/board.toml: 0x4100_0000).
    let cmd = "devmem 0x41000000 32; echo \"devmem exited with $?\"; sleep 6; echo 'rich kernel still alive'";
    let mut m = Machine::boot_linux(Some(cmd), "devmem");
    ok(m.expect("[rich] mvmm-rich: ready (2 cpus online)", BOOT));
    ok(m.expect(
        "[mvmm] vm 'rich': stage-2 fault: read at IPA 0x41000000 (VA ",
        STEP,
    ));
    // The process dies of SIGBUS (128 + 7); the kernel survives.
    ok(m.expect("[rich] devmem exited with 135", STEP));
    ok(m.expect("[rich] rich kernel still alive", STEP));
    ok(m.expect("[rich] mvmm-rich: exit status 0", STEP));
    // The secure VM never noticed: its heartbeats went on through the fault
    // and the rich VM's 6 s sleep after it.
    let out = m.transcript();
    let fault_at = out
        .find("stage-2 fault: read at IPA 0x41000000")
        .unwrap_or(out.len());
    assert!(
        out[..fault_at].contains("[secure] secure-os: ready"),
        "{out}"
    );
    let beats_after = out[fault_at..]
        .matches("[secure] secure-os: heartbeat")
        .count();
    assert!(
        beats_after >= 1,
        "no secure heartbeat after the fault: {out}"
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
    ok(m.expect("[rich] rich boot done", BOOT));
    ok(m.expect(
        "[mvmm] vm 'rich': SYSTEM_RESET: restarting at 0x50000000 with fresh boot images",
        STEP,
    ));
    ok(m.expect("[mvmm] vm 'rich': vcpu 1 starts at", BOOT));
    ok(m.expect("[rich] rich boot done", BOOT));
    let out = m.transcript();
    // The secure VM was not restarted and kept running.
    assert_eq!(out.matches("[secure] secure-os: ready").count(), 1, "{out}");
    assert!(!out.contains("stage-2 fault"), "{out}");
}
