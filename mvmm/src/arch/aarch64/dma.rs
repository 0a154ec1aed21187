//! DMA for the devices mvmm drives itself (its disk, its entropy device),
//! with the `virtio-drivers` crate at EL2.
//!
//! Their DMA goes only to a pool inside mvmm's own image; the pool is handed
//! out once (the devices live as long as mvmm) and never freed.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

const PAGE: usize = 4096;
/// DMA pages for the virtqueues of mvmm's devices (descriptors and rings,
/// two pages a queue: the disk's and the entropy device's one queue each,
/// the two input devices' two each) and spare.
const POOL_PAGES: usize = 16;

#[repr(C, align(4096))]
struct Pool([u8; POOL_PAGES * PAGE]);

/// Lives in .bss: zeroed at boot, owned by nothing but this allocator.
static mut POOL: Pool = Pool([0; POOL_PAGES * PAGE]);
static POOL_USED: AtomicUsize = AtomicUsize::new(0);

/// DMA for mvmm's own devices: EL2's identity map, so physical addresses
/// are virtual ones.
pub struct El2Hal;

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
        // The pool is never given back: mvmm's devices live as long as it.
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
