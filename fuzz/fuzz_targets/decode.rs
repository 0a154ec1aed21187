//! libFuzzer entry of the `decode` target: the check and the invariants it
//! asserts are in src/decode.rs (mvmm_fuzz::decode).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::decode::check(data));
