//! libFuzzer entry of the `record` target: the check and the invariants it
//! asserts are in src/record.rs (mvmm_fuzz::record).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::record::check(data));
