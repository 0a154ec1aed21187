//! The architecture facade: everything mvmm needs from the CPU, the GIC, the
//! UART and the firmware, behind a few named functions. All assembly,
//! system-register and MMIO access lives below this module.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(not(target_arch = "aarch64"))]
compile_error!("mvmm supports only aarch64 (build it with `cargo xtask build`)");
