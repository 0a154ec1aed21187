//! libFuzzer entry of the `board` target: the check and the invariants it
//! asserts are in src/board.rs (mvmm_fuzz::board).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::board::check(data));
