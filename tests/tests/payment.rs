//! QEMU tests of the mission end to end: a payment asked for in the rich VM
//! crosses the VMM channel, the user answers on the trusted path (console
//! focus switched to the secure VM by mvmm), and the signed authorization
//! comes back and verifies.
//!
//! Run by `cargo xtask test` (they need the images: `#[ignore]` otherwise).

use mvmm_tests::payment::{self, PROMPT};
use mvmm_tests::{ConsoleError, Machine};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);

#[track_caller]
fn ok(result: Result<String, ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the rich VM's command is done and the machine is off.
#[track_caller]
fn finish(m: &mut Machine) -> String {
    m.finish_rich_command(STEP)
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn an_approved_payment_returns_a_token_the_backend_accepts() {
    let mut m = Machine::boot_linux(Some(&payment::script("")), "approve");
    let prompt = ok(payment::answer(&mut m, "y\r", BOOT));
    // The prompt shows exactly what is signed, under the trusted prefix.
    for line in [
        "Pay",
        "12.50 EUR",
        "to Corner Cafe",
        "with Visa ending 4242",
    ] {
        assert!(
            prompt.contains(&format!("[TRUSTED secure] {line}\n")),
            "{line:?} missing from:\n{prompt}"
        );
    }
    assert!(
        prompt.contains("[mvmm] console input goes to vm 'secure' (trusted prompt)"),
        "{prompt}"
    );
    ok(m.expect("secure-os: payment approved", STEP));
    ok(m.expect("[mvmm] console input goes back to vm 'rich'", STEP));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let out = finish(&mut m);
    let json = payment::json_lines(&out);
    assert_eq!(json.len(), 2, "enroll and request lines: {out}");
    let verified = payment::verify(&json[0], &json[1]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(verified.counter, 1);
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_declined_payment_returns_no_token() {
    let mut m = Machine::boot_linux(Some(&payment::script("")), "decline");
    ok(payment::answer(&mut m, "n\r", BOOT));
    ok(m.expect("secure-os: payment declined", STEP));
    let line = ok(m.expect("[rich] mvmm-pay request exited with", STEP));
    assert!(!line.ends_with("exited with 0"), "{line}");
    let out = finish(&mut m);
    assert!(
        out.contains("declined by user") || out.contains("declined"),
        "{out}"
    );
    let json = payment::json_lines(&out);
    assert!(
        json.iter().all(|v| v.get("token").is_none()),
        "no token on decline: {out}"
    );
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn keys_typed_during_the_trusted_prompt_never_reach_the_rich_vm() {
    // After the payment the rich VM reads its console for 2 s: anything
    // typed during the prompt that leaked to it would show up here.
    let then = "read -t 2 leaked; echo \"rich read [$leaked]\"";
    let mut m = Machine::boot_linux(Some(&payment::script(then)), "leak");
    ok(payment::answer(&mut m, "zqx\ry\r", BOOT));
    ok(m.expect("secure-os: payment approved", STEP));
    let out = finish(&mut m);
    assert!(
        out.contains("[rich] rich read []"),
        "keys leaked to the rich VM:\n{out}"
    );
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_port_the_policy_forbids_is_refused_by_mvmm() {
    // Port 9999 of the secure VM is not in the board's vsock policy.
    let cmd = "mvmm-pay --transport vsock:4:9999 status; echo \"forbidden port exit $?\"; \
               mvmm-pay status > /dev/null; echo \"allowed port exit $?\"";
    let mut m = Machine::boot_linux(Some(cmd), "policy");
    let line = ok(m.expect("[rich] forbidden port exit", BOOT));
    assert!(!line.ends_with("exit 0"), "{line}");
    ok(m.expect("[rich] allowed port exit 0", STEP));
    let out = finish(&mut m);
    assert!(
        out.contains("[mvmm] vm 'rich': vsock: refused"),
        "mvmm logs the refusal:\n{out}"
    );
    assert!(!out.contains(PROMPT));
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_flood_of_malformed_records_does_not_stop_the_next_payment() {
    // 100 malformed frames and records on the payment port (random bytes,
    // oversized lengths, truncated frames, hang-ups), then a real payment.
    let flood = "chan-tool flood --port payment --count 100; echo \"flood exited with $?\"";
    let script = format!("{flood}; {}", payment::script(""));
    let mut m = Machine::boot_linux(Some(&script), "flood");
    ok(m.expect("[rich] chan-tool: flood_sent 100", BOOT));
    ok(m.expect("[rich] flood exited with 0", STEP));
    ok(payment::answer(&mut m, "y\r", STEP));
    ok(m.expect("secure-os: payment approved", STEP));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let out = finish(&mut m);
    let json = payment::json_lines(&out);
    let (enroll, request) = (
        json.iter().find(|v| v.get("label").is_some()),
        json.iter().find(|v| v.get("token").is_some()),
    );
    let (Some(enroll), Some(request)) = (enroll, request) else {
        panic!("no enrollment or token after the flood:\n{out}")
    };
    payment::verify(enroll, request).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_payment_works_when_the_rich_vm_boots_a_users_own_initramfs() {
    // A user's own images, kept outside the image directory (as with
    // `cargo xtask run --rich-kernel ... --rich-initrd ...`): the secure VM
    // must be provisioned all the same.
    let dir = mvmm_tests::Images::dir_from_env();
    let own = dir.join("work").join("users-own-images");
    std::fs::create_dir_all(&own).unwrap();
    let built = mvmm_tests::RichSource::built(&dir);
    let source = mvmm_tests::RichSource {
        kernel: own.join("my-Image"),
        initrd: own.join("my-ramdisk.img"),
        cmdline: format!("{} quiet", mvmm_tests::RICH_CMDLINE),
    };
    std::fs::copy(&built.kernel, &source.kernel).unwrap();
    std::fs::copy(&built.initrd, &source.initrd).unwrap();
    let mut m = Machine::boot_rich(&source, Some(&payment::script("")), "users-own-initramfs");
    ok(payment::answer(&mut m, "y\r", BOOT));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let out = finish(&mut m);
    assert!(
        !out.contains("no hand-over") && !out.contains("no device secret provisioned"),
        "the secure VM was not provisioned:\n{out}"
    );
    let json = payment::json_lines(&out);
    assert_eq!(json.len(), 2, "enroll and request lines: {out}");
    payment::verify(&json[0], &json[1]).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_backend_accepts_the_token_once_over_http_and_python_reads_it() {
    let backend = payment::Backend::start().unwrap();
    let nonce = backend.nonce().unwrap();
    let mut m = Machine::boot_linux(
        Some(&payment::script_with_nonce(Some(&nonce), "")),
        "backend",
    );
    ok(payment::answer(&mut m, "y\r", BOOT));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let out = finish(&mut m);
    let json = payment::json_lines(&out);
    assert_eq!(json.len(), 2, "enroll and request lines: {out}");
    // The backend (HTTP): the token is accepted once, its replay refused.
    let dir = mvmm_tests::Images::dir_from_env();
    let (board, _) = mvmm_tests::load_test_board().unwrap();
    let device = mvmm_tests::provision(&dir, &board).unwrap().device_key;
    let accepted = backend.accept_once(&device, &json[0], &json[1]).unwrap();
    assert_eq!(accepted["valid"], true, "{accepted}");
    assert_eq!(accepted["nonce"], nonce.as_str(), "{accepted}");
    // Another language's COSE library reads the same token.
    if !mvmm_verify::python_example::python3_available() {
        println!("python example skipped: python3 not found");
        return;
    }
    let work = dir.join("work").join("backend");
    let python = mvmm_verify::python_example::venv(&dir.join("../../tmp/pycose-venv")).unwrap();
    let key = work.join("card.hex");
    let token = work.join("token.b64");
    std::fs::write(&key, json[0]["public_key"].as_str().unwrap()).unwrap();
    std::fs::write(&token, json[1]["token"].as_str().unwrap()).unwrap();
    let (code, checked) = mvmm_verify::python_example::verify(&python, &key, &token).unwrap();
    assert_eq!(code, 0, "{checked}");
    assert_eq!(checked["verified"], true, "{checked}");
    assert_eq!(checked["claims"]["amount_minor"], 1250, "{checked}");
    assert_eq!(checked["claims"]["merchant"], "Corner Cafe", "{checked}");
}

/// The trusted path's input rules on the console (docs/trusted-path.md), in
/// one boot:
/// 1. type-ahead: "y" and Enter typed again and again while the request is
///    sent, up to the moment the prompt is on the console, never approve (the
///    ones the rich VM does not take land in the arming delay and are
///    discarded); a deliberate "n" and Enter then decline;
/// 2. a cancel from the rich side (it kills its request) while the user types
///    keeps the console with the secure VM until the typing stops: the digits
///    typed after the cancel never reach the rich VM, and the rich VM reads
///    normally once the path is released.
#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn type_ahead_never_approves_and_a_cancel_mid_input_leaks_no_keys() {
    use mvmm_tests::payment::{AMOUNT, CURRENCY, LABEL, MERCHANT, READ_TIME};
    use std::thread::sleep;
    let request = format!(
        "mvmm-pay request --amount {AMOUNT} --currency {CURRENCY} --merchant '{MERCHANT}' --json"
    );
    let cmd = format!(
        "mvmm-pay enroll --label '{LABEL}' --json; \
         {request}; echo \"first request exited with $?\"; \
         {request} & pid=$!; sleep 6; kill $pid; wait $pid; echo \"second request ended\"; \
         while read -r -t 60 line; do echo \"rich read [$line]\"; [ \"$line\" = ok ] && break; done"
    );
    let mut m = Machine::boot_linux(Some(&cmd), "steer");

    // 1. Type-ahead up to the prompt.
    ok(m.expect("\"public_key\"", BOOT));
    let deadline = std::time::Instant::now() + BOOT;
    let mut sprayed = 0;
    loop {
        m.send("y\r");
        sprayed += 1;
        match m.expect(PROMPT, Duration::from_millis(40)) {
            Ok(_) => break,
            Err(ConsoleError::Timeout { .. }) if std::time::Instant::now() < deadline => {}
            Err(e) => panic!("{e}"),
        }
    }
    sleep(Duration::from_millis(1500));
    let out = m.transcript();
    assert!(
        !out.contains("payment approved"),
        "type-ahead ({sprayed} times y, Enter) approved:\n{out}"
    );
    sleep(READ_TIME);
    m.send("n");
    sleep(Duration::from_millis(150));
    m.send("\r");
    ok(m.expect("secure-os: payment declined", STEP));
    let line = ok(m.expect("[rich] first request exited with", STEP));
    assert!(!line.ends_with("with 0"), "{line}");

    // 2. Cancel from the rich side while the user types.
    ok(m.expect(PROMPT, STEP));
    sleep(READ_TIME);
    let deadline = std::time::Instant::now() + STEP;
    loop {
        m.send("1");
        match m.expect(payment::CLOSING_NOTICE, Duration::from_millis(300)) {
            Ok(_) => break,
            Err(ConsoleError::Timeout { .. }) if std::time::Instant::now() < deadline => {}
            Err(e) => panic!("{e}"),
        }
    }
    // The user goes on typing (a PIN, say) after the cancel.
    for key in ["9", "8", "7", "6"] {
        sleep(Duration::from_millis(300));
        m.send(key);
    }
    // The rich VM's own output goes on meanwhile, so these come in any order.
    m.expect_all(
        &[
            "secure-os: input quiet, trusted path released",
            "[mvmm] console input goes back to vm 'rich'",
        ],
        STEP,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The rich side reports its cancel before or after the closing notice
    // (which the loop above waited for).
    m.seen_or_expect("[rich] second request ended", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    sleep(Duration::from_millis(500));
    m.send("ok\r");
    ok(m.expect("[rich] rich read [ok]", STEP));
    let out = finish(&mut m);
    for line in out.lines().filter(|l| l.contains("rich read [")) {
        assert!(
            !line.chars().any(|c| c.is_ascii_digit()),
            "a key typed on the trusted path reached the rich VM: {line}\n{out}"
        );
    }
}
