//! libFuzzer entry of the `switch` target: the check and the invariants it
//! asserts are in src/switch.rs (mvmm_fuzz::switch).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::switch::check(data));
