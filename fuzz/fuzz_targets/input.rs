//! libFuzzer entry of the `input` target: the check and the invariants it
//! asserts are in src/input.rs (mvmm_fuzz::input).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::input::check(data));
