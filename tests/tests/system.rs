//! QEMU system tests: mvmm boots the secure VM (secure-os) and the rich VM
//! (the probe guest) on the qemu-virt board and keeps them apart.
//!
//! They need the images, so they are `#[ignore]`d in a plain `cargo test`;
//! `cargo xtask test` builds the images and runs them with `--ignored`.
//! Each test boots its own machine, waits for console text under a
//! deadline, fails at once on a failure pattern (see `FAILURE_PATTERNS`),
//! and ends with the rich VM's PSCI SYSTEM_OFF, which must power the whole
//! machine off with exit status 0.

use mvmm_tests::Machine;
use mvmm_tests::facts::Facts;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);
/// secure-os prints a heartbeat every 5 s of guest time.
const HEARTBEAT: Duration = Duration::from_secs(60);

/// Boots and waits until both VMs are up.
fn booted() -> Machine {
    let mut m = Machine::boot();
    ok(m.expect("[mvmm] mVMM", BOOT));
    all(
        &mut m,
        &["[secure] secure-os: ready", "[rich] probe: ready"],
        BOOT,
    );
    m
}

#[track_caller]
fn all(m: &mut Machine, wanted: &[&str], timeout: Duration) {
    m.expect_all(wanted, timeout)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[track_caller]
fn ok(result: Result<String, mvmm_tests::ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Powers off through the rich VM and checks QEMU exits cleanly.
fn power_off(mut m: Machine) {
    m.send("off\n");
    ok(m.expect("[mvmm] vm 'rich': PSCI SYSTEM_OFF", STEP));
    ok(m.expect("[mvmm] powering off", STEP));
    let status = m
        .wait_exit(STEP)
        .expect("QEMU did not exit after SYSTEM_OFF");
    assert!(status.success(), "QEMU exit status {status}");
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn mvmm_boots_secure_os_to_its_banner_on_its_own_cpu() {
    let mut m = Machine::boot();
    let (board, _) = mvmm_tests::load_test_board().unwrap();
    ok(m.expect(
        &format!(
            "[mvmm] mVMM 0.1.0 on board '{}': {} CPUs",
            board.board.name, board.board.cpus
        ),
        BOOT,
    ));
    // The secure VM runs on its own CPU; its device is its flash (no
    // network device).
    let line = ok(m.expect(&format!("[mvmm] {}", Facts::load().vm_line("secure")), STEP));
    let secure_line = line.lines().last().unwrap_or_default();
    assert!(!secure_line.contains("net0"), "{secure_line}");
    all(
        &mut m,
        &["[secure] secure-os: ready", "[rich] probe: ready"],
        BOOT,
    );
    ok(m.expect("[secure] secure-os: heartbeat 1", HEARTBEAT));
    power_off(m);
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn rich_vm_reading_secure_ram_gets_an_abort_and_the_secure_vm_keeps_running() {
    let facts = Facts::load();
    let secure = facts.ram_base("secure");
    let mut m = booted();
    m.send(&format!("peek {secure:#x}\n"));
    ok(m.expect(
        &format!("[mvmm] vm 'rich': stage-2 fault: read at IPA {secure:#x} (VA {secure:#x}) outside its partition; injecting an abort"),
        STEP,
    ));
    // EC 0x25 (data abort, same EL), IL, DFSC 0x10 (external abort).
    ok(m.expect(
        &format!("[rich] probe: abort: ESR_EL1=0x96000010 FAR_EL1={secure:#x}"),
        STEP,
    ));
    ok(m.expect("[rich] probe: alive after abort", STEP));
    // The secure VM was not disturbed: its next heartbeat comes.
    let before = m
        .transcript()
        .matches("[secure] secure-os: heartbeat")
        .count();
    ok(m.expect(
        &format!("[secure] secure-os: heartbeat {}", before + 1),
        HEARTBEAT,
    ));
    // A write to mvmm's own memory is refused the same way.
    let image = facts.mvmm_image();
    m.send(&format!("poke {image:#x} 0xdead\n"));
    ok(m.expect(
        &format!("[mvmm] vm 'rich': stage-2 fault: write at IPA {image:#x}"),
        STEP,
    ));
    ok(m.expect("[rich] probe: alive after abort", STEP));
    power_off(m);
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_gic_and_uart_are_emulated_and_foreign_devices_unreachable() {
    let facts = Facts::load();
    let mut m = booted();
    let peek = |m: &mut Machine, at: u64| m.send(&format!("peek {at:#x}\n"));
    // The GIC belongs to mvmm: the guest sees an emulated distributor
    // (GICv3 in PIDR2), not the hardware.
    let pidr2 = facts.gicd() + 0xffe8;
    peek(&mut m, pidr2);
    ok(m.expect(&format!("[rich] probe: peek {pidr2:#x} = 0x30"), STEP));
    // fw_cfg is given to no VM.
    let fw_cfg = facts
        .file
        .board
        .display
        .as_ref()
        .map(|d| d.fw_cfg.base)
        .expect("the board has a display (fw_cfg)");
    peek(&mut m, fw_cfg);
    ok(m.expect(
        &format!("[mvmm] vm 'rich': stage-2 fault: read at IPA {fw_cfg:#x}"),
        STEP,
    ));
    ok(m.expect("[rich] probe: alive after abort", STEP));
    // The virtual PL011 answers its PrimeCell id like the real one.
    let uart_id = facts.uart() + 0xfe0;
    peek(&mut m, uart_id);
    ok(m.expect(&format!("[rich] probe: peek {uart_id:#x} = 0x11"), STEP));
    // The RTC is passed through to the rich VM: reading it works.
    let rtc_id = facts.device_of("rich", "rtc").base + 0xfe0;
    peek(&mut m, rtc_id);
    ok(m.expect(&format!("[rich] probe: peek {rtc_id:#x} = 0x31"), STEP));
    power_off(m);
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn psci_is_emulated_per_vm() {
    let entry = Facts::load().entry("rich");
    let mut m = booted();
    m.send("psci-version\n");
    ok(m.expect("[rich] probe: psci version 0x10001", STEP));
    // The performance monitors and debug registers are not the guest's
    // (MDCR_EL2 traps them): the cycle counter cannot be made to count
    // mvmm's work, and debug exceptions cannot be armed.
    // The EL1 physical timer works as on bare hardware: its interrupt is
    // delivered (a 10 ms timer, waited for up to a second).
    m.send("ptimer\n");
    ok(m.expect("[rich] probe: physical timer fired after", STEP));
    // The pending and active state of a forwarded interrupt read back
    // through the redistributor as on hardware.
    m.send("irqstate\n");
    ok(m.expect(
        "[rich] probe: irqstate ptimer before ack pending after ack active after eoi idle (iar 30)",
        STEP,
    ));
    m.send("monitors\n");
    ok(m.expect(
        "[rich] probe: monitors pmcr 0x0 cycles 0x0..0x0 mdscr 0x0",
        STEP,
    ));
    // mvmm's console-focus hypercall is for a secure VM only: DENIED (-3).
    m.send("focus\n");
    ok(m.expect("[mvmm] vm 'rich': asked for console focus; denied", STEP));
    ok(m.expect("[rich] probe: focus returned 0xfffffffffffffffd", STEP));
    // So is the display: the rich VM cannot put the secure framebuffer (or
    // anything) on screen.
    m.send("display\n");
    ok(m.expect("[mvmm] vm 'rich': asked for the display; denied", STEP));
    ok(m.expect("[rich] probe: display returned 0xfffffffffffffffd", STEP));
    // CPU_ON of a CPU that is not this VM's (the secure VM runs on
    // physical CPU 2; the rich VM has vCPUs 0 and 1): INVALID_PARAMETERS.
    m.send("cpu-on 0x2\n");
    ok(m.expect("[rich] probe: cpu-on mpidr 0x2 returned -2", STEP));
    m.send("cpu-on\n");
    ok(m.expect("[rich] probe: vcpu 1 up", STEP));
    // Both vCPUs call SYSTEM_RESET at once: the VM restarts exactly once.
    m.send("reset-both\n");
    ok(m.expect(
        &format!("[mvmm] vm 'rich': SYSTEM_RESET: restarting at {entry:#x}"),
        STEP,
    ));
    ok(m.expect("[rich] probe: ready", BOOT));
    ok(m.expect("[secure] secure-os: heartbeat", HEARTBEAT));
    let out = m.transcript();
    let since = out
        .rfind("probe: system reset from both vcpus")
        .unwrap_or(0);
    assert_eq!(
        out[since..].matches("SYSTEM_RESET: restarting").count(),
        1,
        "the VM restarted more or less than once:\n{}",
        &out[since..]
    );
    m.send("cpu-on\n");
    ok(m.expect("[rich] probe: vcpu 1 up", STEP));
    // vCPU 1 alone resets the VM: it restarts on vCPU 0, as it boots (so
    // vCPU 1 is off and starts again on request).
    m.send("reset-1\n");
    ok(m.expect(
        &format!("[mvmm] vm 'rich': SYSTEM_RESET: restarting at {entry:#x}"),
        STEP,
    ));
    ok(m.expect(
        &format!("[mvmm] vm 'rich': vcpu 0 starts at {entry:#x} on cpu 0"),
        STEP,
    ));
    ok(m.expect("[rich] probe: ready", BOOT));
    m.send("cpu-on\n");
    ok(m.expect("[rich] probe: vcpu 1 up", STEP));
    // Resetting the rich VM restarts it alone.
    m.send("reset\n");
    ok(m.expect(
        &format!("[mvmm] vm 'rich': SYSTEM_RESET: restarting at {entry:#x}"),
        STEP,
    ));
    ok(m.expect("[rich] probe: ready", BOOT));
    ok(m.expect("[secure] secure-os: heartbeat", HEARTBEAT));
    power_off(m);
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn qemu_creates_no_device_the_board_does_not_declare() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    // The machine exactly as the tests and `cargo xtask run` start it,
    // paused before the first instruction, with a QMP socket to ask QEMU
    // which PCI devices it created.
    let (board, qemu) = mvmm_tests::load_test_board().unwrap();
    let images = mvmm_tests::Images::from_env();
    let mut cmd = mvmm_tests::qemu_command(&board, &qemu, &images, mvmm_tests::Console::Piped);
    assert_eq!(mvmm_tests::undeclared_devices(&cmd), None);
    let socket = mvmm_tests::Images::dir_from_env()
        .join("work")
        .join("no-defaults.qmp");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&socket);
    cmd.arg("-S")
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()));
    let _m = Machine::start(cmd);
    let deadline = std::time::Instant::now() + BOOT;
    let stream = loop {
        match UnixStream::connect(&socket) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() > deadline => panic!("QMP socket: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut reply = |command: &str| -> serde_json::Value {
        writeln!(writer, "{{\"execute\":\"{command}\"}}").unwrap();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "QMP closed");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v.get("return").is_some() || v.get("error").is_some() {
                return v;
            }
        }
    };
    reply("qmp_capabilities");
    let pci = reply("query-pci");
    let devices: Vec<String> = pci["return"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|bus| bus["devices"].as_array().cloned().unwrap_or_default())
        .map(|d| d["qdev_id"].to_string() + " " + &d["class_info"]["desc"].to_string())
        .collect();
    // The root complex's host bridge and the PCI devices the board's
    // `[qemu]` section declares (the rich VM's NIC), nothing by default.
    let (_, qemu) = mvmm_tests::load_test_board().unwrap_or_else(|e| panic!("{e}"));
    let declared = qemu
        .extra_args
        .windows(2)
        .filter(|w| w[0] == "-device" && w[1].split(',').next().unwrap_or("").contains("-pci"))
        .count();
    assert_eq!(declared, 1, "the board declares the rich VM's NIC");
    assert_eq!(
        devices.len(),
        1 + declared,
        "PCI devices QEMU created: {devices:?}"
    );
    assert!(devices[0].contains("Host bridge"), "{devices:?}");
    assert!(devices[1].contains("Ethernet controller"), "{devices:?}");
    reply("quit");
}
