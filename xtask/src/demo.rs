//! `cargo xtask demo`: the mission in one command (see `Cmd::Demo`).

use super::*;

pub(crate) fn demo(board: &str, answer: &str) -> Result {
    use mvmm_tests::payment;
    ensure_packages()?;
    let images = build(board)?;
    let dir = images.dir();
    let (file, qemu) = load_board(board)?;
    let out = target_dir().join("demo");
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    // The payment backend (mvmm-verify serve) runs here, on the host's
    // loopback; the rich VM reaches it over its NIC at 10.0.2.2 (QEMU's user
    // networking). The operator pins the device key from the provisioning
    // record; the rich VM enrolls the card, takes the backend's nonce and
    // sends it the token.
    let backend = payment::Backend::start()?;
    let device_id = backend.pin_device(&provision(&dir, &file)?.device_key)?;
    // A card the secure VM kept from an earlier demo: the backend (whose
    // state lives in memory) learns it again from the record saved then.
    let enrollment_file = out.join("enrollment.json");
    if let Ok(text) = fs::read_to_string(&enrollment_file) {
        let saved: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: {e}", enrollment_file.display()))?;
        if let Err(e) = backend.enroll(&device_id, &saved) {
            eprintln!(
                "xtask: demo: the card saved in {} is not enrolled again: {e}",
                enrollment_file.display()
            );
        }
    }
    let url = backend.url_from_guest();
    println!(
        "demo: the payment backend listens on {} (from the rich VM: {url})",
        backend.url()
    );
    let rich = prepare_rich_boot(
        &file,
        &qemu,
        &dir,
        &RichSource::built(&dir),
        Some(&demo_script(&url)),
        &dir.join("work").join("demo"),
    )?;
    step(
        "demo: booting mvmm, secure-os and Linux; mvmm-pay will enroll a card at the backend (unless the secure VM's storage already holds one), ask to pay 12.50 EUR to Corner Cafe and send the token to the backend over the rich VM's network",
    );
    let mut cmd = qemu_command(
        &file,
        &qemu,
        &Images::with_rich_linux(&dir, &rich).with_storage(persistent_storage(&dir)),
        Console::Piped,
    );
    // A QMP socket, to save the screens the demo goes through.
    let socket = mvmm_tests::qmp::socket_in(&dir.join("work").join("demo"));
    let _ = fs::remove_file(&socket);
    cmd.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()));
    let mut m = Machine::start(cmd);
    let limit = std::time::Duration::from_secs(300);
    let mut qmp = mvmm_tests::qmp::Qmp::connect(&socket, std::time::Duration::from_secs(30))?;
    let mut screens = Vec::new();
    let mut save = |qmp: &mut mvmm_tests::qmp::Qmp, name: &str| {
        let path = out.join(name);
        match qmp.screendump(&path) {
            Ok(_) => screens.push(path),
            Err(e) => eprintln!("xtask: demo: no screenshot {name}: {e}"),
        }
    };
    m.expect("[rich] mvmm-rich: ready", limit)
        .map_err(|e| format!("demo: {e}"))?;
    save(&mut qmp, "1-rich.png");
    m.expect("secure-os: approval screen on the display", limit)
        .map_err(|e| format!("demo: {e}"))?;
    save(&mut qmp, "2-approval.png");
    // The user reads the screen, then answers on the touch screen.
    std::thread::sleep(payment::READ_TIME);
    let size = file
        .board
        .display
        .map_or((800, 480), |d| (d.width, d.height));
    let button = if answer == "y" {
        trusted_ui::Button::Approve
    } else {
        trusted_ui::Button::Decline
    };
    let at = payment::button_centre(size, button);
    qmp.touch(at, size, true)?;
    if answer == "y" {
        std::thread::sleep(std::time::Duration::from_millis(
            trusted_ui::guard::HOLD_MS / 2,
        ));
        save(&mut qmp, "2b-holding-approve.png");
        std::thread::sleep(std::time::Duration::from_millis(
            trusted_ui::guard::HOLD_MS / 2 + 300,
        ));
    } else {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The lift (the approval already happened at the end of the hold).
    if let Err(e) = qmp.touch(at, size, false) {
        eprintln!("xtask: demo: lifting the finger: {e}");
    }
    eprintln!(
        "\nxtask: {} on the touch screen\n",
        if answer == "y" {
            "held Approve for a second"
        } else {
            "tapped Decline"
        }
    );
    m.expect(
        "[mvmm] display: scan-out shows the rich VM's framebuffer",
        limit,
    )
    .map_err(|e| format!("demo: {e}"))?;
    save(&mut qmp, "3-rich-again.png");
    m.expect("[rich] mvmm-rich: exit status", limit)
        .map_err(|e| format!("demo: {e}"))?;
    m.wait_exit(std::time::Duration::from_secs(60));
    let transcript = m.transcript();
    let json = payment::json_lines(&transcript);
    // The record of the card: from this run's enrollment, or the one an
    // earlier demo saved (the secure VM's storage kept the card).
    let enrolled = json.iter().find(|j| j.get("signature").is_some()).cloned();
    let enroll = match enrolled {
        Some(enroll) => {
            fs::write(&enrollment_file, enroll.to_string()).map_err(|e| e.to_string())?;
            enroll
        }
        None => {
            let text = fs::read_to_string(&enrollment_file).map_err(|e| {
                format!(
                    "demo: the secure VM kept a card but {} is missing ({e}): delete target/images/qemu-virt/secure-storage.* to start over",
                    enrollment_file.display()
                )
            })?;
            println!("demo: the card enrolled by an earlier run pays (no enrollment this time)");
            serde_json::from_str(&text)
                .map_err(|e| format!("{}: {e}", enrollment_file.display()))?
        }
    };
    let enroll = &enroll;
    let Some(request) = json.iter().find(|j| j.get("token").is_some()) else {
        return Err(format!("demo: mvmm-pay printed no authorization: {:?}", json.last()).into());
    };
    let token = request
        .get("token")
        .and_then(|t| t.as_str())
        .unwrap_or_default();
    if request.get("credential") != enroll.get("credential") {
        return Err(format!(
            "demo: the payment used credential {:?}, not the enrolled {:?}",
            request.get("credential"),
            enroll.get("credential")
        )
        .into());
    }
    for path in &screens {
        println!("screen saved: {}", path.display());
    }
    step("demo: the payment backend verifies the token (mvmm-verify)");
    let text = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (key_file, token_file) = (out.join("credential.pub"), out.join("token.b64"));
    fs::write(&key_file, text(enroll, "public_key")).map_err(|e| e.to_string())?;
    fs::write(&token_file, token).map_err(|e| e.to_string())?;
    println!("authorization (COSE_Sign1, base64): {token}");
    run_cmd(cargo().args(["build", "--quiet", "-p", "mvmm-verify"]))?;
    let verify = target_dir().join("debug").join("mvmm-verify");
    let mut cmd = Command::new(&verify);
    cmd.arg("--key")
        .arg(&key_file)
        .arg("--token")
        .arg(&token_file);
    cmd.args([
        "--nonce",
        &text(request, "nonce"),
        "--amount",
        &payment::AMOUNT_MINOR.to_string(),
    ]);
    cmd.args([
        "--currency",
        payment::CURRENCY,
        "--merchant",
        payment::MERCHANT,
    ]);
    cmd.args(["--credential", &text(request, "credential")]);
    println!(
        "$ mvmm-verify --key {} --token {} ...",
        key_file.display(),
        token_file.display()
    );
    run_cmd(&mut cmd).map_err(|e| format!("demo: mvmm-verify rejected the token: {e}"))?;
    step("demo: the backend's verdicts, as the rich VM received them over its NIC");
    let verdict = |line: &serde_json::Value| {
        format!("{} {}", line["backend"]["status"], line["backend"]["body"])
    };
    if let Some(enrolled) = json
        .iter()
        .find(|j| j.get("signature").is_some() && j.get("backend").is_some())
    {
        println!(
            "rich VM: POST {url}/v1/credentials -> {}",
            verdict(enrolled)
        );
    }
    println!(
        "rich VM: POST {url}/v1/tokens/verify -> {}",
        verdict(request)
    );
    let Some(replay) = json.iter().find(|j| {
        j.get("backend").is_some() && j.get("token").is_none() && j.get("signature").is_none()
    }) else {
        return Err("demo: the rich VM did not send the token again".into());
    };
    println!(
        "rich VM: POST {url}/v1/tokens/verify (the same token again) -> {}",
        verdict(replay)
    );
    if request["backend"]["status"] != 200 || request["backend"]["body"]["valid"] != true {
        return Err(format!("demo: the backend refused the token: {}", verdict(request)).into());
    }
    if replay["backend"]["body"]["error"] != "replay" {
        return Err(format!(
            "demo: the backend did not refuse the replay: {}",
            verdict(replay)
        )
        .into());
    }
    if mvmm_verify::python_example::python3_available() {
        step("demo: Python's pycose verifies the same token (verifier/examples/python)");
        let python =
            mvmm_verify::python_example::venv(&target_dir().join("tmp").join("pycose-venv"))?;
        let (code, checked) = mvmm_verify::python_example::verify(&python, &key_file, &token_file)?;
        println!("{checked}");
        if code != 0 {
            return Err(format!("demo: the Python example refused the token ({code})").into());
        }
    }
    println!("demo: verified");
    Ok(())
}

/// The developer's flash image of `dir`: what the secure VM stores in
/// `run` and `demo` is there at the next run.
pub(crate) fn persistent_storage(dir: &Path) -> mvmm_tests::StorageImage {
    mvmm_tests::StorageImage::Persistent(dir.join(mvmm_tests::STORAGE_IMAGE))
}

/// The demo's rich-VM command: enroll a card unless the secure VM already
/// holds one, then pay with the backend's nonce.
pub(crate) fn demo_script(url: &str) -> String {
    use mvmm_tests::payment::{LABEL, network_script};
    format!(
        "if mvmm-pay list --json | grep -q '\"public_key\"'; then \
             echo 'demo: the secure VM already holds a card'; \
         else mvmm-pay --backend {url} enroll --label '{LABEL}' --json; fi; {}",
        network_script(url, false, "sleep 2")
    )
}
