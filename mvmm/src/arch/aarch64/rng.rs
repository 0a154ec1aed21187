//! mvmm's entropy device: a virtio-rng in a virtio-mmio slot no VM maps
//! (the board's `entropy`), driven at EL2 with `virtio-drivers`. Its output
//! reaches the secure VM only through the TRNG calls (`mvmm_core::trng`):
//! the device does DMA, so no VM may own it without an IOMMU.
//!
//! Its registers are reached through `virtio-drivers`' `MmioTransport`,
//! which is built on `safe-mmio`; the one `unsafe` here is the promise
//! that transport's constructor asks for.

use super::dma::El2Hal;
use core::ptr::NonNull;
use mvmm_core::partition::MemRange;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

/// mvmm's entropy device.
pub struct Entropy(VirtIORng<El2Hal, MmioTransport<'static>>);

impl Entropy {
    /// Starts the virtio-rng in `window`; `None` when the slot holds none.
    pub fn open(window: MemRange) -> Option<Entropy> {
        let header = NonNull::new(window.base as usize as *mut VirtIOHeader)?;
        // SAFETY: `window` is the board's entropy slot: device memory mapped
        // at EL2 (the identity map's device block), reachable by no VM
        // (board validation), and only this driver touches it.
        let transport = unsafe { MmioTransport::new(header, window.size as usize) }.ok()?;
        if transport.device_type() != DeviceType::EntropySource {
            return None;
        }
        VirtIORng::new(transport).ok().map(Entropy)
    }

    /// Fills `out` from the device; false when it did not deliver enough
    /// (the device answers each request with at most what it has).
    pub fn fill(&mut self, out: &mut [u8]) -> bool {
        let mut filled = 0;
        for _ in 0..8 {
            if filled == out.len() {
                return true;
            }
            match self.0.request_entropy(&mut out[filled..]) {
                Ok(n) => filled += n.min(out.len() - filled),
                Err(_) => return false,
            }
        }
        filled == out.len()
    }
}
