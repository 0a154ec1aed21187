//! mvmm's own disk: a virtio-blk device in a virtio-mmio slot that no VM
//! maps (the board's `rpmb` window), driven at EL2 with the `virtio-drivers`
//! crate. It holds the secure VM's rollback counter (`mvmm_core::rpmb`).
//! Its DMA goes only to mvmm's own pool (`super::dma`).
//!
//! Its registers are reached through `virtio-drivers`' `MmioTransport`,
//! which is built on `safe-mmio`; the one `unsafe` here is the promise
//! that transport's constructor asks for.

use super::dma::El2Hal;
use core::ptr::NonNull;
use mvmm_core::partition::MemRange;
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

/// mvmm's disk.
pub struct Disk(VirtIOBlk<El2Hal, MmioTransport<'static>>);

/// Bytes of one disk sector.
pub const SECTOR: usize = SECTOR_SIZE;

impl Disk {
    /// Starts the virtio-blk device in `window`; `None` when the slot holds
    /// no block device (the board then has no rollback counter).
    pub fn open(window: MemRange) -> Option<Disk> {
        let header = NonNull::new(window.base as usize as *mut VirtIOHeader)?;
        // SAFETY: `window` is the board's rpmb slot: device memory mapped at
        // EL2 (the identity map's device block), reachable by no VM (board
        // validation), and only this driver touches it.
        let transport = unsafe { MmioTransport::new(header, window.size as usize) }.ok()?;
        if transport.device_type() != DeviceType::Block {
            return None;
        }
        VirtIOBlk::new(transport).ok().map(Disk)
    }

    /// Reads sector `n`.
    pub fn read(&mut self, n: usize, buf: &mut [u8; SECTOR]) -> bool {
        self.0.read_blocks(n, buf).is_ok()
    }

    /// Writes sector `n` (the device completes it before this returns).
    pub fn write(&mut self, n: usize, buf: &[u8; SECTOR]) -> bool {
        self.0.write_blocks(n, buf).is_ok() && self.0.flush().is_ok()
    }
}
