//! QEMU tests of the secure VM's sealed storage on its own flash: what the
//! payment app must not forget survives a restart of the machine and power
//! cuts during writes, and the rich VM cannot reach the flash.
//!
//! Each test gets its own flash image (an erased copy in its work
//! directory) and boots the machine on it more than once.
//!
//! Run by `cargo xtask test` (they need the images: `#[ignore]` otherwise).
//! `MVMM_POWER_CUTS=100` runs the power-cut test long (default 5 cuts).

use mvmm_tests::payment::{self, PROMPT};
use mvmm_tests::storage::{read_state, set_pin, storage_root_secret};
use mvmm_tests::{ConsoleError, Images, Machine, fresh_storage};
use secure_store::{RecordError, SlotState};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// The JSON lines of the rich VM, with rows the console wrapped at 80
/// columns joined again (on a base without the harness's soft-wrap join).
fn json_lines(transcript: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for row in transcript.lines().filter_map(|l| l.strip_prefix("[rich] ")) {
        if pending.is_empty() && !row.starts_with('{') {
            continue;
        }
        pending.push_str(row);
        if let Ok(v) = serde_json::from_str::<Value>(&pending) {
            out.push(v);
            pending.clear();
        } else if pending.len() > 4096 {
            pending.clear();
        }
    }
    out
}

/// The transcript with every console row wrap of mvmm's own lines undone.
fn unwrapped(transcript: &str) -> String {
    transcript
        .replace("\n[mvmm] ", "")
        .replace("\n[secure] ", "")
}

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

/// A fresh erased flash image for test `name`.
fn flash_for(name: &str) -> PathBuf {
    let dir = Images::dir_from_env().join("work").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    fresh_storage(&dir.join("secure-storage.img"))
}

const REQUEST: &str = "mvmm-pay request --amount 12.50 --currency EUR --merchant 'Corner Cafe' --json; \
                       echo \"mvmm-pay request exited with $?\"";

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn an_enrolled_card_pays_again_after_a_restart_with_counter_two() {
    let flash = flash_for("persist");
    let started = Instant::now();
    let mut m = Machine::boot_linux_with_storage(Some(&payment::script("")), "persist-1", &flash);
    ok(m.expect("secure-os: storage: generation 0 (nothing", BOOT));
    ok(payment::answer(&mut m, "y\r", BOOT));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let first = finish(&mut m);
    let json = json_lines(&first);
    assert_eq!(json.len(), 2, "enroll and request lines: {first}");
    let enroll = json[0].clone();
    assert_eq!(payment::verify(&enroll, &json[1]).unwrap().counter, 1);
    drop(m);

    // The same flash, a new machine: no enrollment this time.
    let mut m = Machine::boot_linux_with_storage(Some(REQUEST), "persist-2", &flash);
    let line = ok(m.expect("secure-os: storage: generation", BOOT));
    assert!(!line.contains("generation 0"), "{line}");
    ok(m.expect("secure-os: storage: 1 credential(s), transaction", STEP));
    ok(payment::answer(&mut m, "y\r", BOOT));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    let second = finish(&mut m);
    let json = json_lines(&second);
    assert_eq!(json.len(), 1, "only the request line: {second}");
    let verified = payment::verify(&enroll, &json[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        verified.counter, 2,
        "the counter goes on across the restart"
    );
    assert_eq!(
        Some(verified.credential.as_str()),
        enroll.get("credential").and_then(Value::as_str)
    );
    eprintln!(
        "two boots on one flash: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_locked_pin_stays_locked_after_a_restart() {
    let flash = flash_for("pin");
    let root = storage_root_secret(&Images::dir_from_env()).unwrap();
    let enroll = format!("mvmm-pay enroll --label '{}' --json", payment::LABEL);
    let mut m = Machine::boot_linux_with_storage(Some(&enroll), "pin-1", &flash);
    finish(&mut m);
    drop(m);
    // Nothing in the product sets a PIN yet (the trusted UI has no screen
    // for it): the host puts one in the sealed store through the payment
    // app itself.
    set_pin(&flash, &root, "2468").unwrap();

    let mut m = Machine::boot_linux_with_storage(Some(REQUEST), "pin-2", &flash);
    ok(m.expect("PIN set", BOOT));
    ok(m.expect(PROMPT, BOOT));
    thread::sleep(payment::READ_TIME);
    m.send("y");
    thread::sleep(Duration::from_millis(150));
    m.send("\r");
    for remaining in [2, 1] {
        ok(m.expect("PIN: (digits", STEP));
        for key in ["1", "1", "1", "1", "\r"] {
            thread::sleep(Duration::from_millis(150));
            m.send(key);
        }
        ok(m.expect(&format!("Wrong PIN, {remaining} tries left"), STEP));
    }
    ok(m.expect("PIN: (digits", STEP));
    for key in ["9", "9", "9", "9", "\r"] {
        thread::sleep(Duration::from_millis(150));
        m.send(key);
    }
    ok(m.expect("secure-os: payment declined (PIN locked", STEP));
    ok(m.expect("[rich] mvmm-pay request exited with 5", STEP));
    finish(&mut m);
    drop(m);
    let (_, state) = read_state(&flash, &root).unwrap();
    assert_eq!(state.unwrap().pin_failures, 3);

    // Restarted: still locked, and a payment is refused before any prompt.
    let script = format!("mvmm-pay status --json; {REQUEST}");
    let mut m = Machine::boot_linux_with_storage(Some(&script), "pin-3", &flash);
    ok(m.expect("secure-os: storage: 1 credential(s), transaction", BOOT));
    ok(m.expect("[rich] mvmm-pay request exited with 5", BOOT));
    let out = finish(&mut m);
    let status = json_lines(&out)
        .into_iter()
        .find(|v| v.get("locked").is_some())
        .unwrap_or_else(|| panic!("no status line: {out}"));
    assert_eq!(status["locked"], Value::Bool(true), "{status}");
    assert!(!out.contains(PROMPT), "a locked app showed a prompt: {out}");
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_rich_vm_reading_the_secure_flash_gets_a_bus_error_and_both_vms_keep_running() {
    // The secure VM's flash bank: its first word, and the last word of its
    // first half (Linux's own /dev/mem refuses to map the bank's last page).
    let facts = mvmm_tests::facts::Facts::load();
    let flash = facts.device_of("secure", "secure-storage");
    let (first, last) = (flash.base, flash.base + flash.size / 2 - 4);
    let cmd = format!(
        "devmem {first:#x} 32; echo \"devmem exited with $?\"; \
         devmem {last:#x} 32; echo \"devmem exited with $?\"; \
         sleep 6; mvmm-pay status --json; echo 'rich kernel still alive'"
    );
    let mut m = Machine::boot_linux(Some(&cmd), "flash-devmem");
    ok(m.expect("secure-os: storage: generation", BOOT));
    let fault = |at: u64| format!("[mvmm] vm 'rich': stage-2 fault: read at IPA {at:#x}");
    ok(m.expect(&fault(first), BOOT));
    ok(m.expect("[rich] devmem exited with 135", STEP));
    ok(m.expect(&fault(last), STEP));
    ok(m.expect("[rich] devmem exited with 135", STEP));
    // The secure VM still answers (its payment service reads its state).
    ok(m.expect("[rich] {\"busy\":false", STEP));
    ok(m.expect("[rich] rich kernel still alive", STEP));
    let out = unwrapped(&finish(&mut m));
    let fault_at = out
        .find(&format!("stage-2 fault: read at IPA {first:#x}"))
        .unwrap();
    assert!(
        out[fault_at..].contains("secure-os: heartbeat"),
        "no secure heartbeat after the fault: {out}"
    );
    // mvmm's map: the flash is the secure VM's device, never the rich VM's.
    assert!(out.contains(&facts.vm_line("secure")), "{out}");
    assert!(out.contains(&facts.vm_line("rich")), "{out}");
    assert!(!facts.vm("rich").1.devices.contains(&flash.name));
}

/// One operation the rich VM saw acknowledged.
#[derive(Debug)]
enum Ack {
    Enrolled(String),
    Deleted(String),
}

fn acks(transcript: &str) -> (Option<BTreeSet<String>>, Vec<Ack>) {
    let mut listed = None;
    let mut ops = Vec::new();
    for v in json_lines(transcript) {
        if let Some(list) = v.get("credentials").and_then(Value::as_array) {
            if listed.is_none() {
                listed = Some(
                    list.iter()
                        .filter_map(|c| c.get("credential").and_then(Value::as_str))
                        .map(str::to_string)
                        .collect(),
                );
            }
        } else if let Some(id) = v.get("deleted").and_then(Value::as_str) {
            ops.push(Ack::Deleted(id.to_string()));
        } else if let Some(id) = v.get("credential").and_then(Value::as_str) {
            ops.push(Ack::Enrolled(id.to_string()));
        }
    }
    (listed, ops)
}

/// A small xorshift generator (the cut points need no more).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn power_cuts_during_writes_lose_no_committed_record() {
    let cuts: usize = std::env::var("MVMM_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed = std::env::var("MVMM_POWER_CUT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("power cuts: {cuts}, seed {seed} (MVMM_POWER_CUT_SEED to repeat)");
    let mut dice = Dice(seed);
    let flash = flash_for("power-cut");
    let root = storage_root_secret(&Images::dir_from_env()).unwrap();
    let started = Instant::now();
    // What the flash must hold: the credentials of the last acknowledged
    // operation, give or take the one operation in flight at the cut.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut ever_deleted: BTreeSet<String> = BTreeSet::new();
    let mut last_generation = 0;
    let mut torn = 0;
    let mut commits_seen = 0;
    for cycle in 0..=cuts {
        // List (checks the last cut), drop leftovers, then enroll and delete
        // in a loop until the plug is pulled.
        let script = format!(
            "mvmm-pay list --json; \
             for id in $(mvmm-pay list --json | grep -o '\"credential\":\"[0-9a-f]*\"' | cut -d'\"' -f4); do \
               mvmm-pay delete --credential $id --json; done; \
             i=0; while [ $i -lt 400 ]; do i=$((i+1)); \
               out=$(mvmm-pay enroll --label \"c{cycle}-$i\" --json) || break; echo \"$out\"; \
               id=$(echo \"$out\" | grep -o '\"credential\":\"[0-9a-f]*\"' | cut -d'\"' -f4); \
               mvmm-pay delete --credential $id --json || break; done"
        );
        let mut m = Machine::boot_linux_with_storage(Some(&script), "power-cut-boot", &flash);
        ok(m.expect("secure-os: storage: generation", BOOT));
        ok(m.expect("[rich] {\"credentials\"", BOOT));
        // The whole list (it may span several console rows).
        ok(m.expect("]}", STEP));
        let (listed, _) = acks(&m.transcript());
        let listed = listed.expect("the list line");
        let missing: Vec<_> = expected.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&expected).collect();
        assert!(
            missing.len() + extra.len() <= 1,
            "cycle {cycle}: more than the one operation in flight changed: missing {missing:?}, extra {extra:?}"
        );
        assert!(
            extra.iter().all(|id| !ever_deleted.contains(*id)),
            "cycle {cycle}: a deleted credential came back (an older state): {extra:?}"
        );
        if cycle == cuts {
            break;
        }
        // Cut during the k-th write after the list, a few ms after secure-os
        // says it starts writing.
        let k = 1 + dice.roll(8);
        for _ in 0..k {
            ok(m.expect("secure-os: storage: writing generation", STEP));
        }
        thread::sleep(Duration::from_micros(dice.roll(20_000)));
        m.power_cut();
        let transcript = m.transcript();
        commits_seen += transcript.matches(" committed in ").count();
        let (_, ops) = acks(&transcript);
        let mut state = listed.clone();
        for op in &ops {
            match op {
                Ack::Enrolled(id) => {
                    state.insert(id.clone());
                }
                Ack::Deleted(id) => {
                    state.remove(id);
                    ever_deleted.insert(id.clone());
                }
            }
        }
        expected = state;
        // The host opens the flash as secure-os will.
        let (report, stored) =
            read_state(&flash, &root).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let generation = report.current.map_or(0, |c| c.1);
        assert!(
            generation >= last_generation,
            "cycle {cycle}: generation went back from {last_generation} to {generation}"
        );
        last_generation = generation;
        if report
            .slots
            .iter()
            .any(|s| matches!(s, SlotState::Invalid(e) if *e != RecordError::Blank))
        {
            torn += 1;
        }
        let on_flash: BTreeSet<String> = stored
            .map(|s| {
                s.credentials
                    .iter()
                    .map(|c| c.id.iter().map(|b| format!("{b:02x}")).collect())
                    .collect()
            })
            .unwrap_or_default();
        let missing = expected.difference(&on_flash).count();
        let extra = on_flash.difference(&expected).count();
        assert!(
            missing + extra <= 1,
            "cycle {cycle}: the flash holds {on_flash:?}, expected {expected:?} give or take one"
        );
        eprintln!(
            "cut {}/{cuts}: after {} acknowledged operations, generation {generation}, slots {:?}",
            cycle + 1,
            ops.len(),
            report.slots
        );
    }
    eprintln!(
        "{cuts} power cuts in {:.0} s ({:.1} s per cut); {torn} left a torn slot; {commits_seen} commits seen",
        started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64() / cuts.max(1) as f64
    );
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn restoring_an_older_copy_of_the_storage_is_detected_by_mvmms_counter() {
    let flash = flash_for("rollback");
    // Boot 1: enroll and pay; then keep a copy of the flash as it is now.
    let mut m = Machine::boot_linux_with_storage(Some(&payment::script("")), "rollback-1", &flash);
    ok(payment::answer(&mut m, "y\r", BOOT));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    finish(&mut m);
    drop(m);
    let saved = flash.with_extension("saved");
    std::fs::copy(&flash, &saved).unwrap();
    // Boot 2: another payment moves the storage and mvmm's counter on.
    let mut m = Machine::boot_linux_with_storage(Some(REQUEST), "rollback-2", &flash);
    ok(payment::answer(&mut m, "y\r", BOOT));
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    finish(&mut m);
    drop(m);
    // The attacker puts the older flash back (mvmm's disk, a separate
    // device no VM reaches, keeps its counter): the secure VM refuses it.
    std::fs::copy(&saved, &flash).unwrap();
    let mut m = Machine::boot_linux_with_storage(Some(REQUEST), "rollback-3", &flash);
    ok(m.expect(
        "secure-os: storage: cannot open the store: rollback detected",
        BOOT,
    ));
    ok(m.expect("payment service disabled", STEP));
    ok(m.expect("[rich] mvmm-pay request exited with", BOOT));
    let out = finish(&mut m);
    assert!(
        !out.contains("[rich] mvmm-pay request exited with 0"),
        "a payment went through on restored storage: {out}"
    );
}
