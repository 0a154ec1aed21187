//! The trusted path's input against a hostile rich VM and arbitrary device
//! events: arbitrary guest RAM (rings, descriptors) and register writes to
//! the rich VM's emulated virtio-input device, physical events of any type,
//! code and value, and focus moves, interleaved. Nothing may panic, no
//! guest access may leave the VM's RAM window (the memory model refuses and
//! the device must cope), and while the secure VM holds the path the rich
//! VM's device gets no event at all.

use mvmm_core::input::{Event, RICH_INPUT, Router, Side};
use mvmm_core::partition::MemRange;
use mvmm_core::virtio::input::InputDevice;
use mvmm_core::virtio::{GuestMemory, MemFault, RamWindow};

const RAM_BASE: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x1_0000;

struct Ram {
    bytes: Vec<u8>,
    ranges: [MemRange; 1],
    writes: usize,
}

impl Ram {
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
        self.writes += 1;
        Ok(())
    }
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    // The first half seeds the rich VM's RAM; the rest is a list of
    // 6-byte actions.
    let (seed, actions) = data.split_at(data.len() / 2);
    let mut bytes = vec![0u8; RAM_SIZE];
    for (b, s) in bytes.iter_mut().zip(seed) {
        *b = *s;
    }
    let mut ram = Ram {
        bytes,
        ranges: [MemRange::new(RAM_BASE, RAM_SIZE as u64)],
        writes: 0,
    };
    let mut device = InputDevice::new(RICH_INPUT);
    let mut router = Router::new();
    for a in actions.chunks(6) {
        let [kind, x, b0, b1, b2, b3] = *a else { break };
        let word = u32::from_le_bytes([b0, b1, b2, b3]);
        match kind % 4 {
            // A register write of the rich VM (sizes 1, 2 and 4; queue
            // addresses mostly inside its RAM).
            0 => {
                let offset = u64::from(x) * 4 % 0x200;
                let value = if (0x80..0xb0).contains(&offset) && offset & 0x7 == 0 {
                    RAM_BASE + u64::from(word) % RAM_SIZE as u64
                } else {
                    u64::from(word)
                };
                let size = [4u8, 1, 2, 4][usize::from(b0 % 4)];
                let _ = device.write(&mut ram, offset + u64::from(b1 % 4), size, value);
                let _ = device.read(u64::from(x) * 4 % 0x200, size);
            }
            // A physical event.
            1 => router.route(Event::new(
                u16::from(x % 5),
                u16::from_le_bytes([b0, b1]) % 0x300,
                u32::from(b2 % 3),
            )),
            // The path moves. Opening it gives the rich VM the releases of
            // what it held, at once: mvmm delivers them (here: dropped).
            2 => {
                let secure = x % 2 == 0;
                router.set_focus(if secure { Side::Secure } else { Side::Rich });
                if secure {
                    router.queue(Side::Rich).clear();
                }
            }
            // mvmm delivers what waits for the rich VM.
            _ => {
                let before = ram.writes;
                let waiting = router.queue(Side::Rich).len();
                let secure = router.focus() == Side::Secure;
                let _ = device.deliver(&mut ram, router.queue(Side::Rich));
                let _ = device.take_raised();
                if secure {
                    assert_eq!(
                        waiting, 0,
                        "events wait for the rich VM while the secure VM holds the path"
                    );
                    assert_eq!(ram.writes, before, "the rich VM's RAM was written");
                }
            }
        }
    }
}
