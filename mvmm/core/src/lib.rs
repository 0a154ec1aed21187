//! The host-tested core of the mVMM microvisor.
//!
//! Everything that decides (which VM owns what, what a trap means, what a
//! power call does, how a virtual device answers) lives here, in safe code
//! that runs under `cargo test` on the host. The EL2 binary (`mvmm`) only
//! moves bits between the hardware and these types.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![forbid(unsafe_code)]

pub mod boot_options;
pub mod bus;
#[cfg(feature = "config")]
pub mod config;
pub mod console;
#[cfg(feature = "config")]
pub mod devicetree;
pub mod dice;
pub mod display;
#[cfg(feature = "config")]
pub mod el2_map;
pub mod exits;
pub mod hypercall;
pub mod image_store;
pub mod input;
pub mod irq;
pub mod partition;
pub mod pcie;
pub mod power;
pub mod psci;
pub mod rng_seed;
pub mod rpmb;
pub mod smmu;
pub mod stage2;
pub mod trap;
pub mod trng;
pub mod vgic;
pub mod virtio;
pub mod vmm;
pub mod vuart;
