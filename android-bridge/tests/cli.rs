//! mvmm-pay end to end against an in-process simulator; the token goes to
//! the backend verifier (library and, when built, the mvmm-verify binary).

mod common;

use std::process::{Command, Output};

use base64::Engine as _;
use common::{Sim, start};
use mvmm_sim::Answer;
use protocol::Currency;
use serde_json::Value;

fn pay(sim: &Sim, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mvmm-pay"))
        .arg("--transport")
        .arg(format!("unix:{}", sim.running.socket.display()))
        .arg("--device-key")
        .arg(&sim.running.device_key_file)
        .args(args)
        .output()
        .expect("mvmm-pay runs")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

#[test]
fn approve_then_verify_the_token() {
    let sim = start("cli-approve", Answer::Approve);
    let out = pay(&sim, &["--json", "enroll", "--label", "Visa ending 4242"]);
    assert!(out.status.success(), "{out:?}");
    let card_key = json(&out)["public_key"].as_str().expect("key").to_string();

    let nonce = "11".repeat(32);
    let out = pay(
        &sim,
        &[
            "--json",
            "request",
            "--amount",
            "12.50",
            "--currency",
            "EUR",
            "--merchant",
            "Corner Cafe",
            "--nonce",
            &nonce,
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let answer = json(&out);
    assert_eq!(answer["amount_minor"], 1250);
    let token = base64::engine::general_purpose::STANDARD
        .decode(answer["token"].as_str().expect("token"))
        .expect("base64");
    let key = mvmm_verify::parse_public_key(&card_key).expect("key");
    let expected = mvmm_verify::Expected {
        nonce: [0x11; 32],
        amount_minor: 1250,
        currency: Currency::from_code("EUR").expect("EUR"),
        merchant: "Corner Cafe",
        last_counter: 0,
        credential: None,
    };
    mvmm_verify::verify_token(&token, &key, &expected).expect("the backend accepts it");

    // The same through the mvmm-verify binary, when it has been built.
    let verify = std::path::Path::new(env!("CARGO_BIN_EXE_mvmm-pay")).with_file_name("mvmm-verify");
    if verify.exists() {
        let token_file = sim.dir.join("token.b64");
        let key_file = sim.dir.join("card.pub");
        std::fs::write(&token_file, answer["token"].as_str().expect("token")).expect("write");
        std::fs::write(&key_file, &card_key).expect("write");
        let status = Command::new(verify)
            .args(["--key"])
            .arg(&key_file)
            .arg("--token")
            .arg(&token_file)
            .args(["--nonce", &nonce, "--amount", "1250", "--currency", "EUR"])
            .args(["--merchant", "Corner Cafe"])
            .output()
            .expect("mvmm-verify runs");
        assert!(status.status.success(), "{status:?}");
    }

    // Text output, the other commands.
    let out = pay(&sim, &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("transaction_counter: 1"),
        "{out:?}"
    );
    let out = pay(&sim, &["--json", "list"]);
    let id = json(&out)["credentials"][0]["credential"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(pay(&sim, &["--json", "attest"]).status.success());
    assert!(pay(&sim, &["delete", "--credential", &id]).status.success());
    let out = pay(&sim, &["delete", "--credential", &id]);
    assert_eq!(out.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&id),
        "{out:?}"
    );
}

#[test]
fn decline_and_bad_input_exit_non_zero_with_a_reason() {
    let sim = start("cli-decline", Answer::Decline);
    assert!(
        pay(&sim, &["enroll", "--label", "Visa ending 4242"])
            .status
            .success()
    );
    let request = [
        "request",
        "--amount",
        "12.50",
        "--currency",
        "EUR",
        "--merchant",
        "Corner Cafe",
    ];
    let out = pay(&sim, &request);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("declined by user"),
        "{out:?}"
    );

    let out = pay(
        &sim,
        &[
            "request",
            "--amount",
            "12.505",
            "--currency",
            "EUR",
            "--merchant",
            "X",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"12.505\"") && stderr.contains("EUR"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_mvmm-pay"))
        .args(["--transport", "unix:/nonexistent/mvmm.sock", "--device-key"])
        .arg(&sim.running.device_key_file)
        .arg("status")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(7));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/mvmm.sock"), "{stderr}");
}

/// The wallet's path to the backend (`--backend`): the nonce comes from the
/// backend, the new card is enrolled there, the token is sent there and
/// accepted once; sent again (`submit`) it is refused as a replay, and a
/// token checked against another amount is refused naming the field.
#[test]
fn the_backend_gives_the_nonce_enrolls_the_card_and_accepts_the_token_once() {
    let sim = start("cli-backend", Answer::Approve);
    let server = mvmm_verify::server::start("127.0.0.1:0", Default::default()).expect("backend");
    let url = format!("http://{}", server.addr());
    // The operator pins the device key (the rich VM cannot).
    let device_key = std::fs::read_to_string(&sim.running.device_key_file).expect("device key");
    let pin = serde_json::json!({ "public_key": device_key.trim() });
    let backend = android_bridge::backend::Backend::new(&url, std::time::Duration::from_secs(10))
        .expect("url");
    let pinned = backend
        .call("POST", "/v1/devices", Some(&pin))
        .expect("pin");
    assert_eq!(pinned.status, 201, "{pinned:?}");

    let out = pay(
        &sim,
        &[
            "--backend",
            &url,
            "--json",
            "enroll",
            "--label",
            "Visa ending 4242",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let enrolled = json(&out);
    assert_eq!(enrolled["backend"]["status"], 201, "{enrolled}");
    assert_eq!(
        enrolled["backend"]["body"]["credential"],
        enrolled["credential"]
    );

    let payment = [
        "--amount",
        "12.50",
        "--currency",
        "EUR",
        "--merchant",
        "Corner Cafe",
    ];
    let mut args = vec!["--backend", url.as_str(), "--json", "request"];
    args.extend(payment);
    let out = pay(&sim, &args);
    assert!(out.status.success(), "{out:?}");
    let paid = json(&out);
    let verdict = &paid["backend"];
    assert_eq!(verdict["status"], 200, "{paid}");
    assert_eq!(verdict["body"]["valid"], true, "{paid}");
    // The nonce is one the backend issued (it accepted it), and the token's.
    assert_eq!(verdict["body"]["nonce"], paid["nonce"], "{paid}");
    let token = paid["token"].as_str().expect("token").to_string();

    let mut args = vec![
        "--backend",
        url.as_str(),
        "--json",
        "submit",
        "--token",
        &token,
    ];
    args.extend(payment);
    let out = pay(&sim, &args);
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    let replay = json(&out);
    assert_eq!(replay["backend"]["status"], 409, "{replay}");
    assert_eq!(replay["backend"]["body"]["error"], "replay", "{replay}");

    let out = pay(
        &sim,
        &[
            "--backend",
            &url,
            "--json",
            "submit",
            "--token",
            &token,
            "--amount",
            "13.00",
            "--currency",
            "EUR",
            "--merchant",
            "Corner Cafe",
        ],
    );
    assert_eq!(out.status.code(), Some(9), "{out:?}");
    let mismatch = json(&out);
    assert_eq!(
        mismatch["backend"]["body"]["error"], "mismatch",
        "{mismatch}"
    );
}

#[test]
fn an_unreachable_or_malformed_backend_is_named() {
    let sim = start("cli-no-backend", Answer::Approve);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = pay(
        &sim,
        &[
            "--backend",
            &url,
            "submit",
            "--token",
            "AAAA",
            "--amount",
            "1.00",
            "--currency",
            "EUR",
            "--merchant",
            "m",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&url),
        "{out:?}"
    );
    let out = pay(
        &sim,
        &[
            "--backend",
            "10.0.2.2:8470",
            "submit",
            "--token",
            "AAAA",
            "--amount",
            "1.00",
            "--currency",
            "EUR",
            "--merchant",
            "m",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"10.0.2.2:8470\""),
        "{out:?}"
    );
    let out = pay(
        &sim,
        &[
            "submit",
            "--token",
            "AAAA",
            "--amount",
            "1.00",
            "--currency",
            "EUR",
            "--merchant",
            "m",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--backend"),
        "{out:?}"
    );
}
