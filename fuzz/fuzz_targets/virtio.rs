//! libFuzzer entry of the `virtio` target: the check and the invariants it
//! asserts are in src/virtio.rs (mvmm_fuzz::virtio).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mvmm_fuzz::virtio::check(data));
