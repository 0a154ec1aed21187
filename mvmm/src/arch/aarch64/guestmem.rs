//! Copies to and from a VM's RAM for the devices mvmm emulates.
//!
//! EL2's identity map covers all RAM as normal memory, so a guest-physical
//! address of a VM (IPA == PA) is a valid EL2 address once
//! [`RamWindow::check`] has proved the whole range lies inside that VM's
//! RAM. That check is the only gate; it runs before every copy.

use mvmm_core::image_store::Entry;
use mvmm_core::partition::MemRange;
use mvmm_core::virtio::{GuestMemory, MemFault, RamWindow};

/// One VM's RAM, as the virtio devices see it.
pub struct VmRam<'a> {
    window: RamWindow<'a>,
}

impl<'a> VmRam<'a> {
    pub fn new(window: RamWindow<'a>) -> Self {
        VmRam { window }
    }
}

impl GuestMemory for VmRam<'_> {
    fn check(&self, ipa: u64, len: u64) -> Result<(), MemFault> {
        self.window.check(ipa, len)
    }

    fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.window.check(ipa, buf.len() as u64)?;
        // SAFETY: the check above proved [ipa, ipa + len) lies inside this
        // VM's RAM, which EL2 maps as normal memory at the same address and
        // which holds no Rust object of mvmm's. The guest may change it
        // concurrently; the devices treat every byte as untrusted and copy
        // once, so a torn read is only a malformed request.
        unsafe {
            core::ptr::copy_nonoverlapping(ipa as usize as *const u8, buf.as_mut_ptr(), buf.len())
        };
        Ok(())
    }

    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemFault> {
        self.window.check(ipa, data.len() as u64)?;
        // SAFETY: as in `read`: the range is inside this VM's RAM, mapped at
        // EL2 at the same address, and owned by no Rust object of mvmm's.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), ipa as usize as *mut u8, data.len())
        };
        Ok(())
    }

    fn fence(&mut self) {
        aarch64_cpu::asm::barrier::dmb(aarch64_cpu::asm::barrier::ISH);
    }
}

/// Reads bytes of the boot image store (RAM only mvmm owns) at `offset`.
/// False when the range is not inside `store`.
pub fn read_store(store: MemRange, offset: u64, buf: &mut [u8]) -> bool {
    let Some(pa) = store.base.checked_add(offset) else {
        return false;
    };
    if !store.contains_range(pa, buf.len() as u64) {
        return false;
    }
    // SAFETY: the range lies inside the image store, board RAM that no VM
    // maps and that EL2 maps as normal memory at the same address; nothing
    // else writes it after the loader has filled it.
    unsafe {
        core::ptr::copy_nonoverlapping(pa as usize as *const u8, buf.as_mut_ptr(), buf.len())
    };
    true
}

/// Copies one image from the store into a VM's RAM. Both ranges are
/// checked again here; false (and nothing copied) when either is out of
/// bounds.
pub fn copy_image(store: MemRange, entry: &Entry, vm_ram: &[MemRange]) -> bool {
    let Some(src) = store.base.checked_add(entry.source) else {
        return false;
    };
    if !store.contains_range(src, entry.size)
        || RamWindow::new(vm_ram)
            .check(entry.destination, entry.size)
            .is_err()
    {
        return false;
    }
    // SAFETY: the source lies inside the image store and the destination
    // inside the VM's RAM (checked above); the two are disjoint (the board
    // validation keeps the store out of every VM), EL2 maps both as normal
    // memory at the same address, and no Rust object lives in either.
    unsafe {
        core::ptr::copy_nonoverlapping(
            src as usize as *const u8,
            entry.destination as usize as *mut u8,
            entry.size as usize,
        )
    };
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISH);
    true
}

/// The boot options word the loader left for mvmm (see
/// `mvmm_core::boot_options`), read once at boot; 0 when its address is
/// not inside mvmm's own reservation.
pub fn read_boot_options(mvmm: MemRange) -> u64 {
    let pa = mvmm_core::boot_options::address(mvmm.base);
    if !mvmm.contains_range(pa, 8) {
        return 0;
    }
    // SAFETY: the word lies in mvmm's reservation below its image (no VM
    // maps it), identity-mapped as normal memory at EL2 and 8-byte aligned;
    // only the loader wrote it, before any CPU started.
    unsafe { core::ptr::read_volatile(pa as usize as *const u64) }
}

/// Takes the unique device secret the loader left in mvmm's UDS page (see
/// `mvmm_core::dice`): copies the provisioning blob out and zeroes the whole
/// page, whatever it held, so nothing of it stays in memory. `None` when
/// the page holds no secret or lies outside mvmm's reservation.
pub fn take_uds(mvmm: MemRange) -> Option<zeroize::Zeroizing<[u8; mvmm_core::dice::SECRET_LEN]>> {
    const PAGE: u64 = 0x1000;
    let pa = mvmm_core::dice::uds_address(mvmm.base);
    if !mvmm.contains_range(pa, PAGE) {
        return None;
    }
    let mut blob = zeroize::Zeroizing::new([0u8; 8 + mvmm_core::dice::SECRET_LEN]);
    for (i, byte) in blob.iter_mut().enumerate() {
        // SAFETY: the page lies in mvmm's reservation below its image (no
        // VM maps it, no Rust object lives there), identity-mapped as normal
        // memory; only the loader wrote it.
        *byte = unsafe { core::ptr::read_volatile((pa as usize + i) as *const u8) };
    }
    for offset in (0..PAGE).step_by(8) {
        // SAFETY: as above; aligned volatile stores into a page that belongs
        // to no Rust object.
        unsafe { core::ptr::write_volatile((pa + offset) as usize as *mut u64, 0) };
    }
    mvmm_core::dice::parse_uds(&blob[..]).map(zeroize::Zeroizing::new)
}

/// mvmm's own code and read-only data as loaded (what its measurement
/// covers; see `sections.ld`).
pub fn measured_image() -> &'static [u8] {
    unsafe extern "C" {
        static __measured_start: u8;
        static __measured_end: u8;
    }
    let start = &raw const __measured_start;
    let end = &raw const __measured_end;
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: the linker script places both symbols around .text and
    // .rodata of this image, which are loaded, mapped at EL2 and never
    // written while mvmm runs.
    unsafe { core::slice::from_raw_parts(start, len) }
}
