//! The checks behind mVMM's fuzz targets, one module per target.
//!
//! Each module has `pub fn check(data: &[u8])`: it feeds `data` to the code
//! under test and panics when an invariant breaks (a panic of the code under
//! test is a failure too). The libFuzzer binaries in `fuzz_targets/` call
//! these; `tests/replay.rs` runs the saved corpora and regressions through
//! them on stable Rust. Structured inputs are decoded with `arbitrary`.
#![forbid(unsafe_code)]

pub mod board;
pub mod bootimg;
pub mod console;
pub mod decode;
pub mod input;
pub mod psci;
pub mod record;
pub mod service;
pub mod switch;
pub mod trap;
pub mod vgic;
pub mod virtio;

/// A target's check.
pub type Check = fn(&[u8]);

/// Every target: its name (the binary and the corpus directory) and check.
pub const TARGETS: &[(&str, Check)] = &[
    ("decode", decode::check),
    ("record", record::check),
    ("virtio", virtio::check),
    ("bootimg", bootimg::check),
    ("vgic", vgic::check),
    ("psci", psci::check),
    ("trap", trap::check),
    ("board", board::check),
    ("service", service::check),
    ("console", console::check),
    ("switch", switch::check),
    ("input", input::check),
];

/// Decodes up to `max` values of `T` from what is left of `u` (a sequence
/// of operations); stops at the first that does not decode.
pub fn ops<'a, T: arbitrary::Arbitrary<'a>>(
    u: &mut arbitrary::Unstructured<'a>,
    max: usize,
) -> Vec<T> {
    let mut out = Vec::new();
    while out.len() < max && !u.is_empty() {
        match u.arbitrary() {
            Ok(op) => out.push(op),
            Err(_) => break,
        }
    }
    out
}
