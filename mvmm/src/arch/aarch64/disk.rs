//! mvmm's own disk: a virtio-blk device in a virtio-mmio slot that no VM
//! maps (the board's `rpmb` window), driven at EL2 with the `virtio-drivers`
//! crate. It holds the secure VM's rollback counter (`mvmm_core::rpmb`).
//!
//! The device's DMA goes only to a pool inside mvmm's own image; the pool is
//! handed out once (the device lives as long as mvmm) and never freed.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use mvmm_core::partition::MemRange;
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

const PAGE: usize = 4096;
/// DMA pages for the disk's one virtqueue (descriptors, rings) and spare.
const POOL_PAGES: usize = 8;

#[repr(C, align(4096))]
struct Pool([u8; POOL_PAGES * PAGE]);

/// Lives in .bss: zeroed at boot, owned by nothing but this allocator.
static mut POOL: Pool = Pool([0; POOL_PAGES * PAGE]);
static POOL_USED: AtomicUsize = AtomicUsize::new(0);

/// DMA for mvmm's own devices: EL2's identity map, so physical addresses
/// are virtual ones.
struct El2Hal;

// SAFETY: `dma_alloc` hands out disjoint, page-aligned, zeroed ranges of a
// static pool that nothing else touches, at their identity-mapped physical
// address; shared buffers are used in place (identity map, coherent DMA
// under QEMU and on the SoCs mvmm targets).
unsafe impl Hal for El2Hal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let first = POOL_USED.fetch_add(pages, Ordering::AcqRel);
        if first + pages > POOL_PAGES {
            // virtio-drivers has no failure path here: a dangling pointer
            // with address 0 makes the queue setup fail on the device.
            return (0, NonNull::dangling());
        }
        let base = (&raw mut POOL).cast::<u8>();
        // SAFETY: `first + pages <= POOL_PAGES`, so the offset stays inside
        // the pool; the range was handed out to no one before.
        let ptr = unsafe { base.add(first * PAGE) };
        let ptr = NonNull::new(ptr).unwrap_or(NonNull::dangling());
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        // The pool is never given back: the disk lives as long as mvmm.
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

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
