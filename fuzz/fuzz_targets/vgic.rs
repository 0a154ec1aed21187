//! libFuzzer entry of the `vgic` target: the check and the invariants it
//! asserts are in src/vgic.rs (mvmm_fuzz::vgic).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::vgic::check(data));
