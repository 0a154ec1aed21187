//! The hand-over page: the last page of the VM's RAM, where mvmm puts this
//! image's DICE CDIs and measurements before the VM starts (see
//! `mvmm_core::dice`; the device secret itself never reaches this VM). It is
//! read once and then zeroed (and cleaned from the caches), so the CDIs do
//! not linger in memory.

use core::arch::asm;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};
use mvmm_core::dice::{HANDOVER_LEN, Handover, Mode};
use protocol::eat::{BoardName, BootMeasurements};
use zeroize::Zeroizing;

/// Bytes of the provisioning page.
pub const PAGE_SIZE: usize = 4096;

unsafe extern "C" {
    /// End of the VM's RAM range the image is linked in (vm-<name>.ld).
    static __vm_ram_end: u8;
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Address of the hand-over page: the last page of the secure VM's RAM (the board's `provision`).
pub fn page_address() -> usize {
    (&raw const __vm_ram_end as usize) - PAGE_SIZE
}

/// What mvmm handed this VM (see `mvmm_core::dice::Handover`): the CDIs of
/// this image and the measurements they were derived from. The CDIs are
/// wiped when this is dropped.
pub struct BootSecrets {
    pub cdi_attest: Zeroizing<[u8; 32]>,
    pub cdi_seal: Zeroizing<[u8; 32]>,
    pub measurements: BootMeasurements,
}

/// Copies the hand-over out of its page and zeroes the page, whatever it
/// held. A second call finds nothing.
pub fn take_handover() -> Result<BootSecrets, &'static str> {
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err("already taken");
    }
    let base = page_address();
    let mut raw = Zeroizing::new([0u8; HANDOVER_LEN]);
    for (i, byte) in raw.iter_mut().enumerate() {
        // SAFETY: the page is the last page of this VM's RAM, identity-mapped
        // as normal memory; the linker script asserts the image (code, data,
        // stacks, heap) ends below it, so no Rust object lives there and a
        // volatile read of it aliases nothing.
        *byte = unsafe { read_volatile((base + i) as *const u8) };
    }
    for offset in (0..PAGE_SIZE).step_by(8) {
        // SAFETY: as above; the page belongs to no Rust object, so zeroing it
        // with aligned volatile stores breaks no invariant.
        unsafe { write_volatile((base + offset) as *mut u64, 0) };
    }
    clean_to_poc(base, PAGE_SIZE);
    let handover = Handover::decode(&raw[..]).ok_or("no MVMMCDI1 hand-over from mvmm")?;
    let secrets = BootSecrets {
        cdi_attest: Zeroizing::new(handover.cdis.attest),
        cdi_seal: Zeroizing::new(handover.cdis.seal),
        measurements: BootMeasurements {
            mvmm: handover.mvmm_hash,
            secure_os: handover.image_hash,
            security_version: handover.security_version,
            debug: handover.mode == Mode::Debug,
            board: BoardName::try_from(handover.board).map_err(|_| "board name too long")?,
        },
    };
    Ok(secrets)
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
