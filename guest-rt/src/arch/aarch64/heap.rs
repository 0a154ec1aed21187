//! The heap behind `alloc`: a fixed area of the image (`.heap`, not loaded,
//! not zeroed) handed to the `talc` allocator once at boot.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};
use talc::{ErrOnOom, Span, Talc, Talck};

/// Bytes of heap (also the pool virtio DMA buffers come from).
pub const HEAP_SIZE: usize = 8 << 20;

/// The heap's memory.
#[repr(C, align(4096))]
struct HeapArea(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: Rust never reads or writes the area through this static; after
// `init` only the allocator hands out disjoint pieces of it.
unsafe impl Sync for HeapArea {}

#[unsafe(link_section = ".heap")]
static AREA: HeapArea = HeapArea(UnsafeCell::new([0; HEAP_SIZE]));

#[global_allocator]
static ALLOCATOR: Talck<spin::Mutex<()>, ErrOnOom> = Talc::new(ErrOnOom).lock();

static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Gives the heap area to the allocator (once; later calls do nothing).
/// Returns the area's base address and size.
pub fn init() -> (usize, usize) {
    let base = AREA.0.get().cast::<u8>();
    if !CLAIMED.swap(true, Ordering::AcqRel) {
        // SAFETY: the area is a static of HEAP_SIZE bytes that nothing else
        // uses (see `HeapArea`), claimed exactly once thanks to CLAIMED; it
        // stays valid for the program's lifetime. If talc refuses the span
        // (it cannot for 8 MiB), allocations fail and the caller sees it.
        let _ = unsafe {
            ALLOCATOR
                .lock()
                .claim(Span::from_base_size(base, HEAP_SIZE))
        };
    }
    (base as usize, HEAP_SIZE)
}
