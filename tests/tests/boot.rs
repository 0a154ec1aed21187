//! QEMU tests of verified boot and the DICE key chain: mvmm refuses a
//! secure-os image whose signature does not verify (and keeps the rich VM
//! running), and the secure VM's attestation states what mvmm measured, so
//! a backend accepts this build and refuses a modified secure-os by name.
//!
//! Run by `cargo xtask test` (they need the images: `#[ignore]` otherwise).

use mvmm_tests::boot_image::{
    self, AUTHORITY_PUBLIC, DEVICE_SECRET, SECURE_OS_IMAGE, SECURE_OS_SIGNATURE,
};
use mvmm_tests::{
    Console, ConsoleError, Images, Machine, RICH_INITRAMFS, RICH_KERNEL, RICH_TOOLS_DIR,
    RichSource, load_test_board, prepare_rich_boot, qemu_command,
};
use mvmm_verify::{
    AttestError, ExpectedMeasurements, parse_public_key, parse_token, verify_attestation,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);

#[track_caller]
fn ok(result: Result<String, ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// A copy of the image directory in `work/<name>`, with `change` applied
/// to its secure-os image (and the image re-signed when `resign`).
fn modified_images(name: &str, change: impl Fn(&mut Vec<u8>), resign: bool) -> PathBuf {
    let dir = Images::dir_from_env();
    let copy = dir.join("work").join(name);
    let _ = fs::remove_dir_all(&copy);
    fs::create_dir_all(copy.join("rich")).unwrap();
    for file in [
        "mvmm",
        "probe-guest",
        SECURE_OS_SIGNATURE,
        AUTHORITY_PUBLIC,
        DEVICE_SECRET,
        RICH_KERNEL,
        RICH_INITRAMFS,
    ] {
        fs::copy(dir.join(file), copy.join(file)).unwrap();
    }
    copy_dir(&dir.join(RICH_TOOLS_DIR), &copy.join(RICH_TOOLS_DIR));
    let (board, _) = load_test_board().unwrap();
    mvmm_tests::ensure_storage_images(&board, &copy).unwrap();
    let mut image = fs::read(dir.join(SECURE_OS_IMAGE)).unwrap();
    change(&mut image);
    fs::write(copy.join(SECURE_OS_IMAGE), &image).unwrap();
    if resign {
        // The development boot authority of this build (under target/).
        let keys = dir.join("../../keys");
        let key = boot_image::authority_key(&keys).unwrap();
        let block = boot_image::sign(&image, &key, 1).unwrap();
        fs::write(copy.join(SECURE_OS_SIGNATURE), block.encode()).unwrap();
    }
    copy
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn a_tampered_secure_os_image_is_refused_and_the_rich_vm_keeps_running() {
    // One byte of the image's code changed after signing.
    let dir = modified_images("tampered", |image| image[0x100] ^= 0x01, false);
    let (board, qemu) = load_test_board().unwrap();
    let images = Images::probe(&board, &dir).unwrap();
    let mut m = Machine::start(qemu_command(&board, &qemu, &images, Console::Piped));
    let refused = ok(m.expect("[mvmm] vm 'secure': boot image refused:", BOOT));
    ok(m.expect("the VM will not run", STEP));
    assert!(refused.contains("vm 'secure'"), "{refused}");
    // The rich VM runs on; the secure VM never started.
    ok(m.expect("[rich] probe: ready", BOOT));
    m.send("off\n");
    ok(m.expect("[mvmm] powering off", STEP));
    m.wait_exit(STEP);
    let out = m.transcript();
    assert!(
        out.contains("the signature does not verify"),
        "the reason is named: {out}"
    );
    assert!(!out.contains("[secure] secure-os: ready"), "{out}");
}

/// Boots Linux from image directory `dir` and asks the secure VM for an
/// attestation over `nonce`; returns the EAT and the pinned device key.
fn attest(dir: &Path, nonce: &[u8; 32], work: &str) -> (Vec<u8>, String) {
    let (board, qemu) = load_test_board().unwrap();
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let rich = prepare_rich_boot(
        &board,
        &qemu,
        dir,
        &RichSource::built(dir),
        Some(&format!("mvmm-pay attest --nonce {hex} --json")),
        &dir.join("work").join(work),
    )
    .unwrap();
    let mut m = Machine::start(qemu_command(
        &board,
        &qemu,
        &Images::with_rich_linux(dir, &rich),
        Console::Piped,
    ));
    ok(m.expect("[rich] mvmm-rich: exit status 0", BOOT));
    let out = m.transcript();
    let json = mvmm_tests::payment::json_lines(&out);
    let eat = json
        .first()
        .and_then(|j| j.get("eat"))
        .and_then(|e| e.as_str())
        .unwrap_or_else(|| panic!("no attestation in:\n{out}"));
    let device = mvmm_tests::provision(dir, &board).unwrap().device_key;
    (parse_token(eat.as_bytes()).unwrap(), device)
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_attestation_states_what_mvmm_measured_and_a_modified_secure_os_is_refused() {
    let dir = Images::dir_from_env();
    let expected = ExpectedMeasurements::load(&dir.join("expected-measurements.json")).unwrap();
    let nonce = [0x5a; 32];
    let (eat, device) = attest(&dir, &nonce, "attest");
    let key = parse_public_key(&device).unwrap();
    let claims = verify_attestation(&key, &nonce, &eat, &expected)
        .unwrap_or_else(|e| panic!("this build's attestation was refused: {e}"));
    let _ = claims;
    // A secure-os that differs by one byte, signed by the same authority:
    // it boots, but its attestation names the changed measurement.
    let modified = modified_images("modified", |image| image.push(0), true);
    let (eat, device) = attest(&modified, &nonce, "attest-modified");
    let key = parse_public_key(&device).unwrap();
    match verify_attestation(&key, &nonce, &eat, &expected) {
        Err(AttestError::Measurements(mismatches)) => {
            let text: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
            assert!(
                text.iter().any(|t| t.contains("secure-os")),
                "the mismatch names secure-os: {text:?}"
            );
            assert!(
                !text.iter().any(|t| t.contains("mvmm")),
                "mvmm itself did not change: {text:?}"
            );
        }
        other => panic!("a modified secure-os was not refused by its measurement: {other:?}"),
    }
}

/// One mapping of mvmm's EL2 tables: [start, end) with its permissions.
#[derive(Debug)]
struct El2Mapping {
    start: u64,
    end: u64,
    writable: bool,
    executable: bool,
}

/// Walks the EL2 page tables as the MMU would, from the built mvmm image
/// (`__el2_l1`, which TTBR0_EL2 points to; 4 KiB granule, 39-bit VA).
fn el2_mappings(elf: &[u8]) -> Vec<El2Mapping> {
    use mvmm_core::el2_map::bits;
    let (base, image) = boot_image::flatten_elf(elf).unwrap();
    let l1 = boot_image::elf_symbol(elf, "__el2_l1").expect("mvmm has EL2 tables");
    let entry = |table: u64, i: u64| {
        let at = (table - base + i * 8) as usize;
        u64::from_le_bytes(image[at..at + 8].try_into().unwrap())
    };
    let mut out = Vec::new();
    let mut walk = |table: u64, level: u32, va: u64, next: &mut dyn FnMut(u64, u32, u64)| {
        let span = 1u64 << (12 + 9 * (3 - level));
        for i in 0..512 {
            let d = entry(table, i);
            let va = va + i * span;
            if d & 1 == 0 {
                continue;
            }
            if level < 3 && d & 0b10 != 0 {
                next(d & bits::ADDRESS, level + 1, va);
                continue;
            }
            assert_eq!(
                d & bits::ADDRESS & !(span - 1),
                va,
                "EL2 map is not an identity map at {va:#x}"
            );
            out.push(El2Mapping {
                start: va,
                end: va + span,
                writable: d & bits::READ_ONLY == 0,
                executable: d & bits::XN == 0,
            });
        }
    };
    // Tables still to walk (levels 1 to 3).
    let mut stack = vec![(l1, 1u32, 0u64)];
    while let Some((table, level, va)) = stack.pop() {
        walk(table, level, va, &mut |t, l, v| stack.push((t, l, v)));
    }
    out.sort_by_key(|m| m.start);
    out
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn mvmm_maps_only_its_code_executable_and_no_ram_it_does_not_use() {
    let elf = fs::read(Images::dir_from_env().join("mvmm")).unwrap();
    let symbol = |name| boot_image::elf_symbol(&elf, name).unwrap_or_else(|| panic!("no {name}"));
    let (text, text_end, ro_end) = (
        symbol("__text_start"),
        symbol("__text_end"),
        symbol("__ro_end"),
    );
    let mappings = el2_mappings(&elf);
    let (board, _) = load_test_board().unwrap();
    let find = |addr: u64| mappings.iter().find(|m| m.start <= addr && addr < m.end);
    for m in &mappings {
        assert!(
            !(m.writable && m.executable),
            "writable and executable at EL2: {m:x?}"
        );
        if m.executable {
            assert!(
                m.start >= text && m.end <= text_end.next_multiple_of(4096),
                "executable outside mvmm's code: {m:x?}"
            );
        }
    }
    // Code, read-only data and the tables themselves are read-only.
    for page in (text..ro_end).step_by(4096) {
        let m = find(page).unwrap_or_else(|| panic!("{page:#x} of mvmm's image unmapped"));
        assert!(
            !m.writable,
            "mvmm's image page {page:#x} is writable: {m:x?}"
        );
    }
    assert!(
        find(text).unwrap().executable,
        "mvmm's code is not executable"
    );
    // Its data and stacks are writable.
    let bss = symbol("__bss_start");
    assert!(find(bss).unwrap().writable);
    // Guest RAM: reachable, never executable.
    for vm in &board.vms {
        for r in &vm.ram {
            for addr in [r.base, r.base + r.size - 1] {
                let m =
                    find(addr).unwrap_or_else(|| panic!("vm '{}' RAM {addr:#x} unmapped", vm.name));
                assert!(
                    m.writable && !m.executable,
                    "vm '{}' RAM {addr:#x}: {m:x?}",
                    vm.name
                );
            }
        }
    }
    // The image store: read-only.
    let store = board.board.image_store.as_ref().unwrap();
    assert!(
        !find(store.base).unwrap().writable,
        "the image store is writable at EL2"
    );
    // RAM past every owner is not mapped at all.
    let ram_end = board.board.ram.base + board.board.ram.size;
    assert!(find(ram_end).is_none(), "RAM beyond the board's is mapped");
    let total: u64 = mappings
        .iter()
        .filter(|m| m.executable)
        .map(|m| m.end - m.start)
        .sum();
    eprintln!(
        "EL2 map: {} mappings, {} KiB executable (code {} KiB)",
        mappings.len(),
        total / 1024,
        (text_end - text) / 1024
    );
}
