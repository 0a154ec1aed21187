//! The contract between mvmm and the software on both sides of it: facts
//! that mvmm, secure-os, the wallet's bridge, `chan-tool`, xtask and the
//! tests must agree on, each defined here once.
//!
//! - [`vsock`]: the CIDs every board gives its VMs and the secure VM's
//!   service ports.
//! - [`hypercall`]: mvmm's own hypercalls and their return values.
//! - [`VIRTIO_MMIO_SLOT`]: the size of one virtio-mmio register window.
//!
//! Board facts (addresses, interrupts, sizes) are not here: they live in
//! `boards/<board>/board.toml` and reach each image through the generated
//! board constants.

#![no_std]
#![forbid(unsafe_code)]

/// One virtio-mmio register window (the devices mvmm emulates and the
/// ones it drives itself), in bytes.
pub const VIRTIO_MMIO_SLOT: u64 = 0x200;

/// The VMM channel's addresses.
pub mod vsock {
    /// The host's CID in the virtio-vsock address space (reserved by the
    /// virtio spec; mvmm has no host endpoint and refuses it).
    pub const HOST_CID: u32 = 2;
    /// The rich VM's CID on every board.
    pub const RICH_VM_CID: u32 = 3;
    /// The secure VM's CID on every board: where the wallet finds the
    /// payment service.
    pub const SECURE_VM_CID: u32 = 4;

    // 0, 1 and 2 are the hypervisor, local and host CIDs of the virtio
    // spec; a VM's CID is above them, and the two VMs differ.
    const _: () = assert!(RICH_VM_CID > HOST_CID && SECURE_VM_CID > HOST_CID);
    const _: () = assert!(RICH_VM_CID != SECURE_VM_CID);

    /// The payment service of the secure VM: `u32 BE length || packet`
    /// frames (`protocol::framing`) carrying `protocol::message` packets.
    pub const PAYMENT_PORT: u32 = 7100;
    /// The secure VM's echo service: every byte is sent back (benchmarks,
    /// `chan-tool`).
    pub const ECHO_PORT: u32 = 7101;

    /// The services a board's channel policy may name
    /// (`[[vsock_allow]] service = "payment"`), with their ports.
    pub const SERVICES: &[(&str, u32)] = &[("payment", PAYMENT_PORT), ("echo", ECHO_PORT)];

    /// The port of the service called `name`.
    pub fn service_port(name: &str) -> Option<u32> {
        SERVICES.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
    }

    /// The name of the service on `port`.
    pub fn service_name(port: u32) -> Option<&'static str> {
        SERVICES.iter().find(|&&(_, p)| p == port).map(|&(n, _)| n)
    }
}

/// mvmm's own hypercalls, in the SMCCC vendor-specific hypervisor service
/// range: a guest calls them with `hvc #0` (or `smc #0`) and x0 = the
/// function id. Only a secure VM may call them; mvmm answers the rich VM
/// [`hypercall::DENIED`].
pub mod hypercall {
    /// SMCCC: fast call, 64-bit, owner 6 (vendor-specific hypervisor
    /// service).
    pub const VENDOR_HYP_BASE: u64 = 0xc600_0000;
    /// Take (x1 = 1) or give back (x1 = 0) the console's input focus: while
    /// the secure VM holds it, typed keys go to it alone and its lines
    /// carry the trusted prefix.
    pub const CONSOLE_FOCUS: u64 = VENDOR_HYP_BASE | 1;
    /// Exchange one rollback-counter frame: x1 = the guest-physical address
    /// of a 128-byte frame in the caller's RAM, which mvmm replaces with its
    /// response.
    pub const RPMB: u64 = VENDOR_HYP_BASE | 2;
    /// Take (x1 = 1) or give back (x1 = 0) the display: while the secure VM
    /// holds it, mvmm scans out the secure VM's private framebuffer instead
    /// of the rich VM's.
    pub const DISPLAY: u64 = VENDOR_HYP_BASE | 3;

    /// Return values (SMCCC conventions).
    pub const SUCCESS: u64 = 0;
    pub const NOT_SUPPORTED: u64 = -1i64 as u64;
    pub const INVALID_PARAMETERS: u64 = -2i64 as u64;
    pub const DENIED: u64 = -3i64 as u64;
}

#[cfg(test)]
mod tests {
    use super::vsock::*;

    #[test]
    fn services_have_distinct_names_and_ports() {
        for (i, (name, port)) in SERVICES.iter().enumerate() {
            assert_eq!(service_port(name), Some(*port));
            assert_eq!(service_name(*port), Some(*name));
            assert!(
                SERVICES[i + 1..]
                    .iter()
                    .all(|(n, p)| n != name && p != port)
            );
        }
        assert_eq!(service_port("ssh"), None);
    }
}
