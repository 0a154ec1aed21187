//! virtio devices mvmm emulates for its guests: the vsock channel between
//! the VMs, and each VM's input device ([`input`]).
//!
//! Layers, bottom up: [`mem`] (the checked window onto a VM's RAM),
//! [`queue`] (split virtqueues), [`mmio`] (the virtio-mmio register file),
//! [`vsock`] (packets in and out of one VM's device) and [`switch`] (which
//! VM's packet goes where, under the board's policy). See docs/vsock.md.

pub mod input;
pub mod mem;
pub mod mmio;
pub mod queue;
pub mod switch;
pub mod vsock;

#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod switch_attacks;
#[cfg(test)]
mod switch_tests;
#[cfg(test)]
mod testguest;
#[cfg(test)]
mod tests;

pub use mem::{GuestMemory, MemFault, RamWindow};
pub use mmio::{BadAccess, WriteEffect};
pub use queue::QueueError;
pub use switch::{PumpReport, Refusal, Rule, Switch};
pub use vsock::{Delivery, Header, Packet, VsockDevice};
