//! Replays every saved input (corpus/<target>/ and regressions/<target>/)
//! through the same checks the fuzz targets run, on stable Rust: what a
//! campaign found stays fixed without nightly or libFuzzer.
//! Run: cargo test --manifest-path fuzz/Cargo.toml --no-default-features

use std::path::Path;

fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut count = 0;
    let mut failures = Vec::new();
    for (target, check) in mvmm_fuzz::TARGETS {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for path in files.iter().filter(|p| p.is_file()) {
            let data = std::fs::read(path).expect("readable input");
            count += 1;
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inputs that fail their check:\n{}",
        failures.join("\n")
    );
    count
}

#[test]
fn corpora_pass_their_checks() {
    let n = replay("corpus");
    eprintln!("{n} corpus inputs replayed");
}

#[test]
fn regressions_pass_their_checks() {
    let n = replay("regressions");
    eprintln!("{n} regression inputs replayed");
}

#[test]
fn every_target_has_a_binary_and_a_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, _) in mvmm_fuzz::TARGETS {
        assert!(
            root.join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "{target}"
        );
        assert!(
            root.join("corpus").join(target).is_dir(),
            "no corpus/{target}"
        );
    }
}

/// Deterministic pseudo-random inputs: catches a check that rejects what
/// the code under test rightly does before any campaign runs.
#[test]
fn random_inputs_pass_their_checks() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (target, check) in mvmm_fuzz::TARGETS {
        for i in 0..40 {
            let len = (next() % 1500) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{target}: random input {i} fails: {data:?}");
            }
        }
    }
}
