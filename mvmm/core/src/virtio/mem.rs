//! Guest memory as the virtio devices see it: a bounds-checked window onto
//! one VM's RAM.
//!
//! The devices never hold a pointer into a guest. Every descriptor, ring
//! entry and buffer goes through [`GuestMemory`], and the devices call
//! [`GuestMemory::check`] on every guest-supplied range before they read or
//! write it, so an implementation that refuses anything outside the VM's
//! RAM is the whole of the isolation argument. [`RamWindow`] is that check;
//! the arch layer only adds the copy.

use crate::partition::MemRange;
use core::fmt;

/// A guest range the device was not allowed to touch (outside the VM's
/// RAM, empty, or wrapping around the top of the address space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemFault {
    pub ipa: u64,
    pub len: u64,
}

impl fmt::Display for MemFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x} (+{:#x}) is outside the VM's RAM",
            self.ipa, self.len
        )
    }
}

/// The RAM of one VM, addressed by intermediate physical address.
///
/// Implementations must refuse (with [`MemFault`]) any range that is not
/// entirely inside the VM's RAM, and must perform the calls in the order
/// they are made.
pub trait GuestMemory {
    /// Ok when `[ipa, ipa + len)` is non-empty and entirely inside the VM's
    /// RAM. Touches nothing.
    fn check(&self, ipa: u64, len: u64) -> Result<(), MemFault>;

    /// Copies `buf.len()` bytes from guest address `ipa`.
    fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), MemFault>;

    /// Copies `data` to guest address `ipa`.
    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemFault>;

    /// A full memory barrier between guest accesses (`dmb ish` on the
    /// target). The queues call it after reading a ring index and before
    /// publishing one, as a virtio device must.
    fn fence(&mut self) {}
}

/// The RAM ranges of one VM, and the one check every guest access passes.
#[derive(Clone, Copy, Debug)]
pub struct RamWindow<'a> {
    pub ranges: &'a [MemRange],
}

impl<'a> RamWindow<'a> {
    pub const fn new(ranges: &'a [MemRange]) -> Self {
        RamWindow { ranges }
    }

    /// Ok when `[ipa, ipa + len)` is non-empty, does not wrap, and lies
    /// inside a single range. A buffer spanning two adjacent ranges is
    /// refused: no driver needs it and it keeps the copy a single slice.
    pub fn check(&self, ipa: u64, len: u64) -> Result<(), MemFault> {
        let fault = MemFault { ipa, len };
        if len == 0 {
            return Err(fault);
        }
        if self.ranges.iter().any(|r| r.contains_range(ipa, len)) {
            Ok(())
        } else {
            Err(fault)
        }
    }

    /// The range holding `[ipa, ipa + len)` and the offset of `ipa` in it,
    /// for an implementation that copies through a per-range mapping.
    pub fn locate(&self, ipa: u64, len: u64) -> Result<(MemRange, u64), MemFault> {
        self.check(ipa, len)?;
        self.ranges
            .iter()
            .find(|r| r.contains_range(ipa, len))
            .map(|r| (*r, ipa - r.base))
            .ok_or(MemFault { ipa, len })
    }
}

/// Reads a little-endian `u16` from guest memory.
pub(crate) fn read_u16<M: GuestMemory + ?Sized>(mem: &M, ipa: u64) -> Result<u16, MemFault> {
    let mut b = [0; 2];
    mem.check(ipa, 2)?;
    mem.read(ipa, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

/// Writes a little-endian `u16` to guest memory.
pub(crate) fn write_u16<M: GuestMemory + ?Sized>(
    mem: &mut M,
    ipa: u64,
    value: u16,
) -> Result<(), MemFault> {
    mem.check(ipa, 2)?;
    mem.write(ipa, &value.to_le_bytes())
}

/// A Vec-backed RAM for host tests that records every access it is asked
/// for, so tests can prove the devices never even try to touch memory
/// outside the window.
#[cfg(test)]
pub mod testing {
    use super::*;
    use core::cell::RefCell;
    use std::vec;
    use std::vec::Vec;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Access {
        pub ipa: u64,
        pub len: u64,
        pub write: bool,
        /// False when the range was outside the window (and refused).
        pub inside: bool,
    }

    pub struct TestRam {
        pub base: u64,
        pub bytes: Vec<u8>,
        pub log: RefCell<Vec<Access>>,
    }

    impl TestRam {
        pub fn new(base: u64, size: usize) -> Self {
            TestRam {
                base,
                bytes: vec![0; size],
                log: RefCell::new(Vec::new()),
            }
        }

        fn range(&self) -> MemRange {
            MemRange::new(self.base, self.bytes.len() as u64)
        }

        fn offset(&self, ipa: u64, len: u64, write: bool) -> Result<usize, MemFault> {
            let inside = len > 0 && self.range().contains_range(ipa, len);
            self.log.borrow_mut().push(Access {
                ipa,
                len,
                write,
                inside,
            });
            if inside {
                Ok((ipa - self.base) as usize)
            } else {
                Err(MemFault { ipa, len })
            }
        }

        /// Accesses the device tried outside the window.
        pub fn violations(&self) -> Vec<Access> {
            self.log
                .borrow()
                .iter()
                .filter(|a| !a.inside)
                .copied()
                .collect()
        }

        /// Writes the device made.
        pub fn writes(&self) -> Vec<Access> {
            self.log
                .borrow()
                .iter()
                .filter(|a| a.write)
                .copied()
                .collect()
        }

        pub fn clear_log(&self) {
            self.log.borrow_mut().clear();
        }

        /// Test helpers: direct pokes that bypass the log.
        pub fn put(&mut self, ipa: u64, data: &[u8]) {
            let o = (ipa - self.base) as usize;
            self.bytes[o..o + data.len()].copy_from_slice(data);
        }
        pub fn get(&self, ipa: u64, len: usize) -> &[u8] {
            let o = (ipa - self.base) as usize;
            &self.bytes[o..o + len]
        }
        pub fn put_u16(&mut self, ipa: u64, v: u16) {
            self.put(ipa, &v.to_le_bytes());
        }
        pub fn get_u16(&self, ipa: u64) -> u16 {
            u16::from_le_bytes([self.get(ipa, 2)[0], self.get(ipa, 2)[1]])
        }
        pub fn get_u32(&self, ipa: u64) -> u32 {
            let b = self.get(ipa, 4);
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }

    impl GuestMemory for TestRam {
        fn check(&self, ipa: u64, len: u64) -> Result<(), MemFault> {
            if len > 0 && self.range().contains_range(ipa, len) {
                Ok(())
            } else {
                Err(MemFault { ipa, len })
            }
        }

        fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
            let o = self.offset(ipa, buf.len() as u64, false)?;
            buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
            Ok(())
        }

        fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemFault> {
            let o = self.offset(ipa, data.len() as u64, true)?;
            self.bytes[o..o + data.len()].copy_from_slice(data);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_refuses_empty_wrapping_straddling_and_foreign_ranges() {
        let ranges = [
            MemRange::new(0x4000_0000, 0x1000),
            MemRange::new(0x4000_1000, 0x1000),
        ];
        let w = RamWindow::new(&ranges);
        assert_eq!(w.check(0x4000_0000, 0x1000), Ok(()));
        assert_eq!(w.check(0x4000_1ffc, 4), Ok(()));
        assert!(w.check(0x4000_0000, 0).is_err());
        assert!(w.check(0x4000_0ffc, 8).is_err(), "spans two ranges");
        assert!(w.check(0x4000_1ffd, 4).is_err(), "straddles the end");
        assert!(w.check(u64::MAX - 1, 4).is_err(), "wraps");
        assert!(w.check(0x4000_0000, u64::MAX).is_err(), "wraps");
        assert!(w.check(0x3fff_fffc, 8).is_err(), "starts below");
        assert!(w.check(0x5000_0000, 4).is_err(), "another VM");
        assert_eq!(
            w.locate(0x4000_1010, 16),
            Ok((MemRange::new(0x4000_1000, 0x1000), 0x10))
        );
    }
}
