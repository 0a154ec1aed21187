//! libFuzzer entry of the `trap` target: the check and the invariants it
//! asserts are in src/trap.rs (mvmm_fuzz::trap).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::trap::check(data));
