//! libFuzzer entry of the `bootimg` target: the check and the invariants it
//! asserts are in src/bootimg.rs (mvmm_fuzz::bootimg).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::bootimg::check(data));
