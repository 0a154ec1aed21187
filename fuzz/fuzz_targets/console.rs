//! libFuzzer entry of the `console` target: the check and the invariants it
//! asserts are in src/console.rs (mvmm_fuzz::console).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::console::check(data));
