//! libFuzzer entry of the `service` target: the check and the invariants it
//! asserts are in src/service.rs (mvmm_fuzz::service).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::service::check(data));
