//! secure-os: the secure VM's operating system, built on the `guest-rt` runtime.
//!
//! The runtime (boot, MMU, vectors, heap, console, timer, GIC CPU interface,
//! PSCI, memory probes, link scripts) is the `guest_rt` crate; this crate
//! holds the secure VM's own devices and its application logic.
//!
//! # Design notes
//! - The secure VM's devices (flash, framebuffer, entropy, provisioning
//!   page, mvmm's vendor hypercalls, virtio glue) live in `arch`; the rest
//!   (`keys`, `prompt`, `rollback`, `screen`, `server`, `touch`) is plain
//!   logic tested on the host.
//! - On the host only the logic modules are built, so `cargo test --workspace`
//!   covers them.

#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

/// The device identity lives in `protocol` so the host computes the same key.
pub use protocol::device_key as keys;
pub mod prompt;
pub mod rollback;
pub mod screen;
pub mod server;
pub mod touch;

#[cfg(target_os = "none")]
pub mod arch;
