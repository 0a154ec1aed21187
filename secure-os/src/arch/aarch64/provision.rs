//! The provisioning page: the last page of the VM's RAM, where the loader
//! puts the device secret before boot (see `crate::keys`). It is read once
//! and then zeroed (and cleaned from the caches), so the secret does not
//! linger in memory.

use crate::keys::{self, ProvisionError, SECRET_LEN};
use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};

/// Bytes of the provisioning page.
pub const PAGE_SIZE: usize = 4096;

unsafe extern "C" {
    /// End of the VM's RAM range the image is linked in (vm-<name>.ld).
    static __vm_ram_end: u8;
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Address of the provisioning page (0x42ff_f000 for qemu-virt's secure VM).
pub fn page_address() -> usize {
    (&raw const __vm_ram_end as usize) - PAGE_SIZE
}

/// Copies the secret out of the provisioning page and zeroes the page,
/// whatever it held. A second call finds nothing (`NoMagic`).
pub fn take_secret() -> Result<[u8; SECRET_LEN], ProvisionError> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(ProvisionError::NoMagic);
    }
    let base = page_address();
    let mut head = [0u8; 8 + SECRET_LEN];
    for (i, byte) in head.iter_mut().enumerate() {
        // SAFETY: the page is the last page of this VM's RAM, identity-mapped
        // as normal memory; the linker script asserts the image (code, data,
        // stacks, heap) ends below it, so no Rust object lives there and a
        // volatile read of it aliases nothing.
        *byte = unsafe { read_volatile((base + i) as *const u8) };
    }
    let result = keys::parse_provisioned(&head);
    head.fill(0);
    core::hint::black_box(&mut head);
    for offset in (0..PAGE_SIZE).step_by(8) {
        // SAFETY: as above; the page belongs to no Rust object, so zeroing it
        // with aligned volatile stores breaks no invariant.
        unsafe { write_volatile((base + offset) as *mut u64, 0) };
    }
    clean_to_poc(base, PAGE_SIZE);
    result
}

/// Cleans and invalidates `len` bytes at `base` to the point of coherency,
/// so the zeroes reach memory.
fn clean_to_poc(base: usize, len: usize) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let line = 4usize << ((ctr >> 16) & 0xf);
    let mut addr = base & !(line - 1);
    while addr < base + len {
        // SAFETY: DC CIVAC on a mapped address of this VM's RAM only writes
        // back and drops cache lines; memory contents are unchanged.
        unsafe { asm!("dc civac, {}", in(reg) addr, options(nostack, preserves_flags)) };
        addr += line;
    }
    // SAFETY: a barrier; no memory is changed.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}
