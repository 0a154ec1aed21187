//! secure-os: the secure VM's operating system, built on the `guest-rt` runtime.
//!
//! The runtime (boot, MMU, vectors, heap, console, timer, GIC CPU interface,
//! PSCI, memory probes, link scripts) is the `guest_rt` crate; this crate
//! holds the secure VM's own devices and its application logic.
//!
//! # Design notes
//! - The secure VM's devices (flash, framebuffer, entropy, provisioning
//!   page, mvmm's vendor hypercalls, virtio glue) live in `arch`; the rest
//!   (`event_loop`, `keys`, `prompt`, `rollback`, `screen`, `server`,
//!   `touch`) is plain logic tested on the host.
//! - `event_loop` makes every decision of the image's loop (connections,
//!   the trusted prompt, focus and display, the heartbeat); `main.rs` only
//!   reads the devices, feeds it events and carries out what it asks.
//! - On the host only the logic modules are built, so `cargo test --workspace`
//!   covers them.

#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

/// The device identity lives in `protocol` so the host computes the same key.
pub use protocol::device_key as keys;
pub mod event_loop;
pub mod prompt;
pub mod rollback;
pub mod screen;
pub mod server;
pub mod touch;

#[cfg(target_os = "none")]
pub mod arch;
