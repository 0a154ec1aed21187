//! PCIe configuration space at EL2, through a host bridge's ECAM window:
//! mvmm_core::pcie decides which registers and values; this file only
//! reads and writes them.
//!
//! Plain volatile accesses, not `safe-mmio`: each is one 16-bit register at
//! an address `mvmm_core::pcie` computes (any function of any bus), not a
//! fixed register block; a `safe-mmio` pointer would be made per access
//! with the same promise as the `unsafe` blocks below, and save nothing.

use core::ptr;
use mvmm_core::partition::{PcieHost, StreamIds};
use mvmm_core::pcie;

/// Quiesces every function of `host` that `streams` covers
/// (`pcie::QUIESCED`: no DMA, no decoding, no INTx); returns how many
/// functions there are. The caller makes sure nothing else drives them
/// meanwhile (the VM's vCPUs are stopped).
pub fn quiesce_functions(host: &PcieHost, streams: StreamIds) -> usize {
    let mut stopped = 0;
    for rid in pcie::functions(host, streams) {
        let (Some(vendor), Some(command)) = (
            rid.config_address(host, pcie::VENDOR_ID),
            rid.config_address(host, pcie::COMMAND),
        ) else {
            continue;
        };
        if read16(vendor) == pcie::NO_FUNCTION {
            continue;
        }
        if let Some(value) = pcie::quiesced(read16(command)) {
            write16(command, value);
        }
        stopped += 1;
    }
    stopped
}

fn read16(address: u64) -> u16 {
    // SAFETY: `address` comes from `Rid::config_address`: 2-byte aligned
    // and inside a PCIe host bridge's ECAM window from the board, which is
    // device memory in mvmm's EL2 map (the first GiB). Reading a
    // configuration register has no side effect.
    unsafe { ptr::read_volatile(address as usize as *const u16) }
}

fn write16(address: u64, value: u16) {
    // SAFETY: as in `read16`; the value is the quiesced command register
    // (`pcie::quiesced`), which only stops the function.
    unsafe { ptr::write_volatile(address as usize as *mut u16, value) }
}
