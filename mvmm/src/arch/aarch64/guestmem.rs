//! Copies to and from a VM's RAM for the devices mvmm emulates.
//!
//! EL2's identity map covers all RAM as normal memory, so a guest-physical
//! address of a VM (IPA == PA) is a valid EL2 address once
//! [`RamWindow::check`] has proved the whole range lies inside that VM's
//! RAM. That check is the only gate; it runs before every copy.

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
