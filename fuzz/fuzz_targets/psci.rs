//! libFuzzer entry of the `psci` target: the check and the invariants it
//! asserts are in src/psci.rs (mvmm_fuzz::psci).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::psci::check(data));
