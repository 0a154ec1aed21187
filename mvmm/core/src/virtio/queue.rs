//! Split virtqueues (virtio 1.2, section 2.7) seen from the device side.
//!
//! The driver owns the descriptor table and the available ring; the device
//! owns the used ring. All three live in guest RAM and every byte is
//! guest-controlled, so this module trusts nothing it reads: ring indexes
//! are checked against the queue size, descriptor chains are bounded by it
//! (a chain longer than the queue must contain a loop), every descriptor's
//! whole range is checked against the VM's RAM before any byte of it is
//! touched, and the direction of each descriptor must be the one the queue
//! expects. Any violation is a [`QueueError`]: the device then stops using
//! its queues and asks the driver for a reset.

use super::mem::{GuestMemory, MemFault, read_u16, write_u16};
use core::fmt;

/// The largest queue the device offers (QueueNumMax).
pub const QUEUE_SIZE_MAX: u16 = 256;

/// Descriptor flags (virtq_desc.flags).
pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;

/// Available ring flag: the driver does not want used-buffer interrupts.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Size of one descriptor in the table.
const DESC_SIZE: u64 = 16;
/// Size of one used ring element (id: u32, len: u32).
const USED_ELEM_SIZE: u64 = 8;

/// Which part of a queue a fault was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    DescriptorTable,
    AvailableRing,
    UsedRing,
    Buffer,
}

/// Why a queue (and so its device) was declared broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// A ring, table or buffer address outside the VM's RAM.
    Memory { area: Area, fault: MemFault },
    /// The driver's available index ran more than a queue size ahead.
    AvailIndexJump { avail: u16, used: u16, size: u16 },
    /// A head or `next` index not below the queue size.
    IndexOutOfRange { index: u16, size: u16 },
    /// A chain with more descriptors than the queue has (a loop).
    ChainTooLong { size: u16 },
    /// An indirect descriptor; VIRTIO_F_INDIRECT_DESC is not offered.
    Indirect { index: u16 },
    /// Flag bits this device does not know.
    UnknownFlags { index: u16, flags: u16 },
    /// A device-writable descriptor where a readable one was expected, or
    /// the reverse.
    WrongDirection { index: u16 },
    /// A descriptor of length zero.
    ZeroLength { index: u16 },
    /// A TX chain shorter than a packet header.
    PacketTooShort { len: u64 },
    /// A TX chain or header announcing more than the device accepts.
    PacketTooLong { len: u64 },
    /// The header's payload length disagrees with the chain's length.
    LengthMismatch { header: u32, chain: u64 },
    /// An RX chain too small to hold a header and one payload byte.
    RxBufferTooSmall { len: u64 },
    /// A queue enabled with a size or address the device cannot use.
    BadConfig { queue: u16, reason: &'static str },
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Memory { area, fault } => write!(f, "{area:?}: {fault}"),
            QueueError::AvailIndexJump { avail, used, size } => write!(
                f,
                "available index {avail} is more than {size} ahead of {used}"
            ),
            QueueError::IndexOutOfRange { index, size } => {
                write!(f, "descriptor index {index} out of a queue of {size}")
            }
            QueueError::ChainTooLong { size } => {
                write!(f, "descriptor chain longer than the queue ({size}): a loop")
            }
            QueueError::Indirect { index } => {
                write!(f, "indirect descriptor {index} (not negotiated)")
            }
            QueueError::UnknownFlags { index, flags } => {
                write!(f, "descriptor {index} has unknown flags {flags:#x}")
            }
            QueueError::WrongDirection { index } => {
                write!(f, "descriptor {index} has the wrong direction")
            }
            QueueError::ZeroLength { index } => write!(f, "descriptor {index} has length 0"),
            QueueError::PacketTooShort { len } => write!(f, "packet of {len} bytes"),
            QueueError::PacketTooLong { len } => write!(f, "packet of {len} bytes is too long"),
            QueueError::LengthMismatch { header, chain } => write!(
                f,
                "header says {header} payload bytes, chain holds {chain} bytes"
            ),
            QueueError::RxBufferTooSmall { len } => write!(f, "RX buffer of {len} bytes"),
            QueueError::BadConfig { queue, reason } => write!(f, "queue {queue}: {reason}"),
        }
    }
}

/// Which way the device moves data through a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Device-readable buffers only (a TX queue).
    DeviceReads,
    /// Device-writable buffers only (an RX queue).
    DeviceWrites,
}

/// One descriptor, already validated: `[addr, addr + len)` is inside the
/// VM's RAM and non-empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub addr: u64,
    pub len: u32,
}

/// The device side of one split virtqueue.
///
/// # Invariants
/// When `ready`, `size` is a power of two in `1..=QUEUE_SIZE_MAX` and the
/// three areas are aligned as the spec requires (checked by
/// [`Queue::enable`]). `last_avail` and `used_idx` are free-running 16-bit
/// counters, equal since the device never completes out of order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    last_avail: u16,
    used_idx: u16,
}

impl Default for Queue {
    fn default() -> Self {
        Self::new()
    }
}

impl Queue {
    pub const fn new() -> Self {
        Queue {
            size: QUEUE_SIZE_MAX,
            ready: false,
            desc: 0,
            driver: 0,
            device: 0,
            last_avail: 0,
            used_idx: 0,
        }
    }

    /// Checks the configuration the driver wrote and starts the queue.
    pub fn enable(&mut self, index: u16) -> Result<(), QueueError> {
        let bad = |reason| QueueError::BadConfig {
            queue: index,
            reason,
        };
        if self.size == 0 || self.size > QUEUE_SIZE_MAX || !self.size.is_power_of_two() {
            return Err(bad("size is not a power of two up to QueueNumMax"));
        }
        if !self.desc.is_multiple_of(16) {
            return Err(bad("descriptor table not 16-byte aligned"));
        }
        if !self.driver.is_multiple_of(2) {
            return Err(bad("available ring not 2-byte aligned"));
        }
        if !self.device.is_multiple_of(4) {
            return Err(bad("used ring not 4-byte aligned"));
        }
        self.ready = true;
        self.last_avail = 0;
        self.used_idx = 0;
        Ok(())
    }

    fn mem_err(area: Area) -> impl Fn(MemFault) -> QueueError {
        move |fault| QueueError::Memory { area, fault }
    }

    /// Address of available ring slot `slot` (a guest address computed from
    /// guest values: checked arithmetic, then checked again by the memory).
    fn avail_slot(&self, slot: u16) -> Result<u64, QueueError> {
        let off = 4 + 2 * u64::from(slot % self.size);
        self.driver.checked_add(off).ok_or(QueueError::Memory {
            area: Area::AvailableRing,
            fault: MemFault {
                ipa: self.driver,
                len: off,
            },
        })
    }

    /// Buffers the driver made available that the device has not taken.
    pub fn pending<M: GuestMemory + ?Sized>(&self, mem: &mut M) -> Result<u16, QueueError> {
        if !self.ready {
            return Ok(0);
        }
        let avail_idx_addr = self.driver.checked_add(2).ok_or(QueueError::Memory {
            area: Area::AvailableRing,
            fault: MemFault {
                ipa: self.driver,
                len: 4,
            },
        })?;
        let avail = read_u16(mem, avail_idx_addr).map_err(Self::mem_err(Area::AvailableRing))?;
        // Ring entries and descriptors are read after the index.
        mem.fence();
        let waiting = avail.wrapping_sub(self.last_avail);
        if waiting > self.size {
            return Err(QueueError::AvailIndexJump {
                avail,
                used: self.last_avail,
                size: self.size,
            });
        }
        Ok(waiting)
    }

    /// The head of the next available chain, without taking it.
    pub fn peek<M: GuestMemory + ?Sized>(&self, mem: &mut M) -> Result<Option<u16>, QueueError> {
        if self.pending(mem)? == 0 {
            return Ok(None);
        }
        let addr = self.avail_slot(self.last_avail)?;
        let head = read_u16(mem, addr).map_err(Self::mem_err(Area::AvailableRing))?;
        if head >= self.size {
            return Err(QueueError::IndexOutOfRange {
                index: head,
                size: self.size,
            });
        }
        Ok(Some(head))
    }

    /// A walker over the chain starting at `head`.
    pub fn chain(&self, head: u16, direction: Direction) -> Chain {
        Chain {
            desc: self.desc,
            size: self.size,
            next: Some(head),
            seen: 0,
            direction,
        }
    }

    /// Returns chain `head` to the driver with `written` bytes written,
    /// consuming the available entry [`Queue::peek`] showed.
    pub fn complete<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        head: u16,
        written: u32,
    ) -> Result<(), QueueError> {
        let slot = u64::from(self.used_idx % self.size);
        let elem =
            self.device
                .checked_add(4 + slot * USED_ELEM_SIZE)
                .ok_or(QueueError::Memory {
                    area: Area::UsedRing,
                    fault: MemFault {
                        ipa: self.device,
                        len: u64::MAX,
                    },
                })?;
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        bytes[4..].copy_from_slice(&written.to_le_bytes());
        let used_err = Self::mem_err(Area::UsedRing);
        mem.check(elem, USED_ELEM_SIZE).map_err(&used_err)?;
        // The index is checked too before the element is written, so a
        // failure never leaves a half-published entry.
        let idx_addr = self.device.checked_add(2).ok_or(QueueError::Memory {
            area: Area::UsedRing,
            fault: MemFault {
                ipa: self.device,
                len: 4,
            },
        })?;
        mem.check(idx_addr, 2).map_err(&used_err)?;
        mem.write(elem, &bytes).map_err(&used_err)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        self.used_idx = self.used_idx.wrapping_add(1);
        // The element must be visible before the index that publishes it.
        mem.fence();
        write_u16(mem, idx_addr, self.used_idx).map_err(&used_err)
    }

    /// False when the driver asked not to be interrupted for used buffers.
    pub fn wants_interrupt<M: GuestMemory + ?Sized>(
        &self,
        mem: &mut M,
    ) -> Result<bool, QueueError> {
        let flags = read_u16(mem, self.driver).map_err(Self::mem_err(Area::AvailableRing))?;
        Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
    }
}

/// Walks one descriptor chain, validating each descriptor as it goes.
///
/// # Invariants
/// `seen <= size`; the walk ends with an error once it would exceed it.
#[derive(Clone, Copy, Debug)]
pub struct Chain {
    desc: u64,
    size: u16,
    next: Option<u16>,
    seen: u16,
    direction: Direction,
}

impl Chain {
    /// The next descriptor of the chain, `None` at its end.
    pub fn next<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
    ) -> Result<Option<Descriptor>, QueueError> {
        let Some(index) = self.next else {
            return Ok(None);
        };
        if index >= self.size {
            return Err(QueueError::IndexOutOfRange {
                index,
                size: self.size,
            });
        }
        if self.seen >= self.size {
            return Err(QueueError::ChainTooLong { size: self.size });
        }
        self.seen += 1;
        let addr =
            self.desc
                .checked_add(u64::from(index) * DESC_SIZE)
                .ok_or(QueueError::Memory {
                    area: Area::DescriptorTable,
                    fault: MemFault {
                        ipa: self.desc,
                        len: u64::MAX,
                    },
                })?;
        let mut raw = [0u8; DESC_SIZE as usize];
        let table_err = Queue::mem_err(Area::DescriptorTable);
        mem.check(addr, DESC_SIZE).map_err(&table_err)?;
        mem.read(addr, &mut raw).map_err(&table_err)?;
        let [
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            l0,
            l1,
            l2,
            l3,
            f0,
            f1,
            n0,
            n1,
        ] = raw;
        let buf_addr = u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let flags = u16::from_le_bytes([f0, f1]);
        let next = u16::from_le_bytes([n0, n1]);
        if flags & DESC_F_INDIRECT != 0 {
            return Err(QueueError::Indirect { index });
        }
        if flags & !(DESC_F_NEXT | DESC_F_WRITE) != 0 {
            return Err(QueueError::UnknownFlags { index, flags });
        }
        let writable = flags & DESC_F_WRITE != 0;
        if writable != (self.direction == Direction::DeviceWrites) {
            return Err(QueueError::WrongDirection { index });
        }
        if len == 0 {
            return Err(QueueError::ZeroLength { index });
        }
        mem.check(buf_addr, u64::from(len))
            .map_err(Queue::mem_err(Area::Buffer))?;
        self.next = (flags & DESC_F_NEXT != 0).then_some(next);
        Ok(Some(Descriptor {
            addr: buf_addr,
            len,
        }))
    }
}
