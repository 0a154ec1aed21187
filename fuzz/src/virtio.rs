//! The VMM channel against a hostile guest: arbitrary guest RAM (rings,
//! descriptors, packets) and arbitrary register writes to the rich VM's
//! vsock device, then the switch pumps. Nothing may panic, and every guest
//! access must stay inside the VM's RAM window (checked by the memory
//! model below, which the devices go through for every byte).

use mvmm_core::partition::MemRange;
use mvmm_core::virtio::switch::{Rule, Switch};
use mvmm_core::virtio::{GuestMemory, MemFault, RamWindow};

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x1_0000;

struct Ram {
    bytes: Vec<u8>,
    ranges: [MemRange; 1],
}

impl Ram {
    fn new(seed: &[u8]) -> Ram {
        let mut bytes = vec![0u8; RAM_SIZE];
        for (i, b) in seed.iter().enumerate().take(RAM_SIZE) {
            bytes[i] = *b;
        }
        Ram {
            bytes,
            ranges: [MemRange::new(RAM_BASE, RAM_SIZE as u64)],
        }
    }

    fn offset(&self, ipa: u64, len: u64) -> Result<usize, MemFault> {
        RamWindow::new(&self.ranges).check(ipa, len)?;
        Ok((ipa - RAM_BASE) as usize)
    }
}

impl GuestMemory for Ram {
    fn check(&self, ipa: u64, len: u64) -> Result<(), MemFault> {
        RamWindow::new(&self.ranges).check(ipa, len)
    }
    fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        let at = self.offset(ipa, buf.len() as u64)?;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemFault> {
        let at = self.offset(ipa, data.len() as u64)?;
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    // The first half seeds the rich VM's RAM; the rest is a list of
    // register writes: (offset byte, 4 value bytes).
    let (ram_seed, writes) = data.split_at(data.len() / 2);
    let mut mems = [Ram::new(ram_seed), Ram::new(&[])];
    let mut switch = Switch::new();
    let _ = switch.add_vm(0, 3);
    let _ = switch.add_vm(1, 4);
    let _ = switch.allow(Rule {
        from: 0,
        to: 1,
        port: 7100,
    });
    for w in writes.chunks(5) {
        let [off, a, b, c, d] = *w else { break };
        // Offsets of the virtio-mmio register file, 4-byte aligned.
        let offset = u64::from(off) * 4 % 0x200;
        let value = u64::from(u32::from_le_bytes([a, b, c, d]));
        let value = if offset & 0x7 == 0x0 && (0x80..0xb0).contains(&offset) {
            // Queue addresses: mostly inside the RAM window.
            RAM_BASE + value % RAM_SIZE as u64
        } else {
            value
        };
        let _ = switch.mmio_write(0, offset, 4, value);
        let _ = switch.mmio_read(0, offset, 4);
        let _ = switch.pump(&mut mems[..]);
    }
}
