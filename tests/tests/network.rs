//! The payment goes to the backend over the rich VM's network (issue 19,
//! docs/verifier-service.md, "From the rich VM").
//!
//! The backend (`mvmm-verify serve`) runs on the host's loopback; the rich VM
//! reaches it at 10.0.2.2 through its virtio-net-pci NIC (QEMU's user
//! networking) behind mvmm's SMMU. The host only pins the device key, as an
//! operator would from the provisioning record; everything else comes from
//! the rich VM: `mvmm-pay --backend` enrolls the card (the backend checks the
//! record against the pinned key), takes the backend's nonce, has the user
//! approve on the trusted path, and posts the token, which the backend
//! verifies; `mvmm-pay submit` posts the same token again and the backend
//! refuses it as a replay. The secure VM, which signs, has no network.
//!
//! Run by `cargo xtask test` (it needs the images: `#[ignore]` otherwise).

use mvmm_tests::payment::{self, Backend};
use mvmm_tests::{ConsoleError, Machine};
use serde_json::Value;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(180);
const STEP: Duration = Duration::from_secs(90);

#[track_caller]
fn ok(result: Result<String, ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_rich_vm_sends_the_token_to_the_backend_which_accepts_it_once() {
    let backend = Backend::start().unwrap();
    let dir = mvmm_tests::Images::dir_from_env();
    let (board, _) = mvmm_tests::load_test_board().unwrap();
    let device_key = mvmm_tests::provision(&dir, &board).unwrap().device_key;
    backend.pin_device(&device_key).unwrap();
    let url = backend.url_from_guest();
    let command = format!(
        "wget -q -O- {url}/health; echo; {}",
        payment::network_script(&url, true, "")
    );
    let mut m = Machine::boot_linux(Some(&command), "network");
    ok(m.expect("[rich] mvmm-rich: network eth0 10.0.2.15", BOOT));
    ok(m.expect("[rich] {\"status\":\"ok\"}", BOOT));
    ok(payment::answer(&mut m, "y\r", BOOT));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    ok(m.expect("[rich] mvmm-pay submit exited with 9", STEP));
    let out = m.finish_rich_command(STEP);
    let json = payment::json_lines(&out);
    let find = |key: &str| -> &Value {
        json.iter()
            .find(|j| j.get(key).is_some())
            .unwrap_or_else(|| panic!("no JSON line with {key:?}:\n{out}"))
    };
    // The enrollment reached the backend, which checked it against the
    // pinned device key.
    let enrolled = find("signature");
    assert_eq!(enrolled["backend"]["status"], 201, "{enrolled}");
    assert_eq!(
        enrolled["backend"]["body"]["credential"], enrolled["credential"],
        "{enrolled}"
    );
    // The payment: the backend's nonce, its verdict as the rich VM got it.
    let paid = find("token");
    let verdict = &paid["backend"];
    assert_eq!(verdict["status"], 200, "{paid}");
    assert_eq!(verdict["body"]["valid"], true, "{paid}");
    assert_eq!(verdict["body"]["nonce"], paid["nonce"], "{paid}");
    assert_eq!(
        verdict["body"]["amount_minor"],
        payment::AMOUNT_MINOR,
        "{paid}"
    );
    assert_eq!(verdict["body"]["merchant"], payment::MERCHANT, "{paid}");
    assert_eq!(
        verdict["body"]["credential"], enrolled["credential"],
        "{paid}"
    );
    // The same token again, from the rich VM: refused as a replay.
    let replay = json
        .iter()
        .find(|j| {
            j.get("backend").is_some() && j.get("token").is_none() && j.get("signature").is_none()
        })
        .unwrap_or_else(|| panic!("no submit line:\n{out}"));
    assert_eq!(replay["backend"]["status"], 409, "{replay}");
    assert_eq!(replay["backend"]["body"]["error"], "replay", "{replay}");
    // The backend itself holds the record: from the host too, the token is
    // a replay.
    let check = serde_json::json!({
        "token": paid["token"],
        "amount_minor": payment::AMOUNT_MINOR,
        "currency": payment::CURRENCY,
        "merchant": payment::MERCHANT,
    });
    let (status, refusal) = backend.call("POST", "/v1/tokens/verify", &check).unwrap();
    assert_eq!(
        (status, refusal["error"].as_str()),
        (409, Some("replay")),
        "{refusal}"
    );
}
