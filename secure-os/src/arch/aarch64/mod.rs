//! AArch64 at EL1: the secure VM's own devices. The runtime (boot, MMU,
//! vectors, console, timer, GIC, PSCI, heap, probes) is `guest_rt::arch`.

/// Board facts: the runtime's (`guest_rt::arch::board`) and the secure VM's
/// own devices, generated from the board file by build.rs.
pub mod board {
    pub use guest_rt::arch::board::*;
    include!(concat!(env!("OUT_DIR"), "/board.rs"));
}
pub mod entropy;
pub mod flash;
pub mod framebuffer;
pub mod hypercall;
pub mod provision;
pub mod virtio;
