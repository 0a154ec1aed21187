//! The secure VM's private framebuffer: the board's
//! `display.secure_framebuffer`, RAM of this VM that its link leaves free
//! (`__vm_image_limit`) and that no other VM maps (stage 2). mvmm scans it
//! out while this VM holds the display.

use super::board::{FRAMEBUFFER_BASE, FRAMEBUFFER_HEIGHT, FRAMEBUFFER_WIDTH};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

static TAKEN: AtomicBool = AtomicBool::new(false);

/// The framebuffer's pixels (row after row), handed out once; `None` when
/// the board has no display or on a second call.
pub fn take() -> Option<(&'static mut [u32], u32, u32)> {
    if FRAMEBUFFER_WIDTH == 0 || FRAMEBUFFER_BASE == 0 || TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    let count = FRAMEBUFFER_WIDTH as usize * FRAMEBUFFER_HEIGHT as usize;
    // SAFETY: the board places [FRAMEBUFFER_BASE, + 4 * count) inside this
    // VM's RAM (board validation), the link script ends the image, stack
    // and heap below it, the identity map covers it as normal memory, it is
    // 4 KiB aligned, and `TAKEN` hands the one `&mut` out once, for ever.
    let pixels = unsafe { core::slice::from_raw_parts_mut(FRAMEBUFFER_BASE as *mut u32, count) };
    Some((pixels, FRAMEBUFFER_WIDTH, FRAMEBUFFER_HEIGHT))
}

/// Writes the cache lines holding `pixels` back to memory, so that the
/// scan-out (which reads memory, not this CPU's caches) sees the frame.
pub fn publish(pixels: &[u32]) {
    let ctr: u64;
    // SAFETY: reads CTR_EL0, readable at EL1; no memory is touched.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let line = 4usize << ((ctr >> 16) & 0xf);
    let start = pixels.as_ptr() as usize & !(line - 1);
    let end = pixels.as_ptr() as usize + core::mem::size_of_val(pixels);
    for address in (start..end).step_by(line) {
        // SAFETY: cleans one data cache line of memory this function
        // borrows; it changes no value.
        unsafe { asm!("dc cvac, {}", in(reg) address, options(nostack, preserves_flags)) };
    }
    // SAFETY: a barrier; it orders the cleans before what follows (the
    // DISPLAY hypercall).
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}
