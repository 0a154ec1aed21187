//! The only heap at EL2: a small arena for the buffers `virtio-drivers`
//! boxes when mvmm starts its input devices (two 32-event buffers). It is
//! handed out at boot and never given back; nothing allocates on a guest's
//! behalf, so no guest action can exhaust it.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of the arena: the input devices' event buffers (2 x 256 bytes)
/// with room to spare.
const ARENA: usize = 4096;

#[repr(C, align(4096))]
struct Arena([u8; ARENA]);

/// In .bss: zeroed at boot, reached only through [`BootHeap`].
static mut MEMORY: Arena = Arena([0; ARENA]);

/// A bump allocator over [`MEMORY`]: `dealloc` does nothing.
struct BootHeap {
    used: AtomicUsize,
}

#[global_allocator]
static HEAP: BootHeap = BootHeap {
    used: AtomicUsize::new(0),
};

// SAFETY: `alloc` hands out disjoint ranges of the static arena, each
// aligned as asked, or null when the arena cannot fit the request; the
// ranges are never reused, so `dealloc` may ignore them.
unsafe impl GlobalAlloc for BootHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = (&raw mut MEMORY).cast::<u8>() as usize;
        let mut start = 0;
        let claimed = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                start = (base + used).next_multiple_of(layout.align()) - base;
                let end = start.checked_add(layout.size())?;
                (end <= ARENA).then_some(end)
            });
        if claimed.is_err() {
            return ptr::null_mut();
        }
        // SAFETY: `start + size <= ARENA`: the range is inside the arena.
        unsafe { (&raw mut MEMORY).cast::<u8>().add(start) }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}
