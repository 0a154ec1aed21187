//! The one architecture facade: everything that touches the CPU or a device.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(not(target_arch = "aarch64"))]
compile_error!("guest-rt runs only on aarch64");
