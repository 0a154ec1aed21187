//! The virtio-vsock device (virtio 1.2, section 5.10) of one VM: packets in
//! and out of its queues.
//!
//! [`VsockDevice::take_tx`] copies the next packet the guest queued on its
//! TX queue into a caller-owned [`Packet`]; [`VsockDevice::deliver_rx`]
//! copies a packet into the next buffer chain the guest posted on its RX
//! queue, splitting a data packet across several chains when one is too
//! small, as vhost-vsock does. Neither decides where packets go: that is
//! the switch's job.

use super::mem::GuestMemory;
use super::mmio::{self, BadAccess, INT_USED_BUFFER, Transport, WriteEffect};
use super::queue::{Direction, QueueError};

/// virtio device id of a socket device.
pub const DEVICE_ID: u32 = 19;
/// Queue indexes.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;

/// Size of `struct virtio_vsock_hdr`.
pub const HEADER_LEN: usize = 44;
/// Largest payload of one packet (Linux sends up to 64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Well-known CIDs.
pub const CID_HYPERVISOR: u64 = 0;
pub const CID_LOCAL: u64 = 1;
pub const CID_HOST: u64 = 2;

/// Socket types.
pub const TYPE_STREAM: u16 = 1;
pub const TYPE_SEQPACKET: u16 = 2;

/// Operations.
pub mod op {
    pub const INVALID: u16 = 0;
    pub const REQUEST: u16 = 1;
    pub const RESPONSE: u16 = 2;
    pub const RST: u16 = 3;
    pub const SHUTDOWN: u16 = 4;
    pub const RW: u16 = 5;
    pub const CREDIT_UPDATE: u16 = 6;
    pub const CREDIT_REQUEST: u16 = 7;
}

/// `struct virtio_vsock_hdr`, decoded. All fields are little-endian on
/// the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    /// Payload bytes following the header.
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub const fn zero() -> Self {
        Header {
            src_cid: 0,
            dst_cid: 0,
            src_port: 0,
            dst_port: 0,
            len: 0,
            kind: 0,
            op: 0,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Self {
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b.get(o..o + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(w)
        };
        let u32_at = |o: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(b.get(o..o + 4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(w)
        };
        let u16_at = |o: usize| {
            let mut w = [0u8; 2];
            w.copy_from_slice(b.get(o..o + 2).unwrap_or(&[0; 2]));
            u16::from_le_bytes(w)
        };
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        let fields: [(usize, &[u8]); 10] = [
            (0, &self.src_cid.to_le_bytes()),
            (8, &self.dst_cid.to_le_bytes()),
            (16, &self.src_port.to_le_bytes()),
            (20, &self.dst_port.to_le_bytes()),
            (24, &self.len.to_le_bytes()),
            (28, &self.kind.to_le_bytes()),
            (30, &self.op.to_le_bytes()),
            (32, &self.flags.to_le_bytes()),
            (36, &self.buf_alloc.to_le_bytes()),
            (40, &self.fwd_cnt.to_le_bytes()),
        ];
        for (offset, bytes) in fields {
            if let Some(dst) = b.get_mut(offset..offset + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        }
        b
    }
}

/// One packet in flight: a header and up to [`MAX_PAYLOAD`] bytes.
///
/// # Invariants
/// `header.len as usize <= MAX_PAYLOAD`; `sent <= header.len` counts
/// payload bytes already delivered (a packet split across RX buffers).
#[derive(Clone, Debug)]
pub struct Packet {
    pub header: Header,
    payload: [u8; MAX_PAYLOAD],
    sent: u32,
}

impl Default for Packet {
    fn default() -> Self {
        Self::new()
    }
}

impl Packet {
    pub const fn new() -> Self {
        Packet {
            header: Header::zero(),
            payload: [0; MAX_PAYLOAD],
            sent: 0,
        }
    }

    /// A packet with `payload` (refused when longer than [`MAX_PAYLOAD`]).
    pub fn set(&mut self, header: Header, payload: &[u8]) -> bool {
        let Some(dst) = self.payload.get_mut(..payload.len()) else {
            return false;
        };
        dst.copy_from_slice(payload);
        self.header = header;
        self.header.len = payload.len() as u32;
        self.sent = 0;
        true
    }

    /// A header-only packet.
    pub fn set_control(&mut self, header: Header) {
        self.header = header;
        self.header.len = 0;
        self.sent = 0;
    }

    /// The whole payload.
    pub fn payload(&self) -> &[u8] {
        self.payload.get(..self.header.len as usize).unwrap_or(&[])
    }

    /// Payload bytes not yet delivered.
    pub fn remaining(&self) -> &[u8] {
        self.payload().get(self.sent as usize..).unwrap_or(&[])
    }
}

/// What [`VsockDevice::deliver_rx`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// No RX buffer is posted (or the device is not running): nothing
    /// consumed, the caller keeps the packet.
    NoBuffer,
    /// Part of a data packet went into one RX buffer; call again.
    Partial,
    /// The whole packet was delivered.
    Complete,
}

/// The features this device offers.
pub const FEATURES: u64 = mmio::F_VERSION_1;

/// One VM's virtio-vsock device.
#[derive(Clone, Copy, Debug)]
pub struct VsockDevice {
    cid: u64,
    transport: Transport,
}

impl VsockDevice {
    /// A device whose configuration space shows `cid` as the guest's CID.
    pub const fn new(cid: u64) -> Self {
        VsockDevice {
            cid,
            transport: Transport::new(DEVICE_ID, FEATURES, cid.to_le_bytes()),
        }
    }

    pub fn cid(&self) -> u64 {
        self.cid
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// True when the driver has set DRIVER_OK and the device is not broken.
    pub fn live(&self) -> bool {
        self.transport.live()
    }

    pub fn read(&self, offset: u64, size: u8) -> Result<u64, BadAccess> {
        self.transport.read(offset, size)
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<WriteEffect, BadAccess> {
        self.transport.write(offset, size, value)
    }

    pub fn interrupt_pending(&self) -> bool {
        self.transport.interrupt_pending()
    }

    /// True once after the device raised an interrupt bit.
    pub fn take_raised(&mut self) -> bool {
        self.transport.take_raised()
    }

    fn fail(&mut self, e: QueueError) -> QueueError {
        self.transport.fail();
        e
    }

    /// Raises the used-buffer interrupt unless the driver suppressed it.
    fn notify_used<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        queue: usize,
    ) -> Result<(), QueueError> {
        let Some(q) = self.transport.queues.get(queue) else {
            return Ok(());
        };
        if q.wants_interrupt(mem)? {
            self.transport.raise(INT_USED_BUFFER);
        }
        Ok(())
    }

    /// True when the guest has queued a packet on TX that is not taken yet
    /// (a malformed ring counts as work: the next take reports it).
    pub fn tx_pending<M: GuestMemory + ?Sized>(&self, mem: &mut M) -> bool {
        self.live()
            && self
                .transport
                .queues
                .get(TX_QUEUE)
                .is_some_and(|q| !matches!(q.peek(mem), Ok(None)))
    }

    /// Copies the next packet the guest queued on TX into `out`. Ok(false)
    /// when there is none (or the device is not running). An error means
    /// the TX queue was malformed: the device now needs a reset.
    pub fn take_tx<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        out: &mut Packet,
    ) -> Result<bool, QueueError> {
        self.take_tx_inner(mem, out).map_err(|e| self.fail(e))
    }

    fn take_tx_inner<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        out: &mut Packet,
    ) -> Result<bool, QueueError> {
        if !self.live() {
            return Ok(false);
        }
        let Some(queue) = self.transport.queues.get(TX_QUEUE).copied() else {
            return Ok(false);
        };
        let Some(head) = queue.peek(mem)? else {
            return Ok(false);
        };
        let mut chain = queue.chain(head, Direction::DeviceReads);
        let mut header_bytes = [0u8; HEADER_LEN];
        let mut total: u64 = 0;
        let limit = (HEADER_LEN + MAX_PAYLOAD) as u64;
        while let Some(d) = chain.next(mem)? {
            let len = u64::from(d.len);
            let end = total.saturating_add(len);
            if end > limit {
                return Err(QueueError::PacketTooLong { len: end });
            }
            // Bytes of this descriptor that belong to the header, then to
            // the payload. `total <= limit` keeps every cast in range.
            let mut addr = d.addr;
            let mut left = d.len as usize;
            let at = total as usize;
            if at < HEADER_LEN {
                let n = left.min(HEADER_LEN - at);
                let dst = header_bytes
                    .get_mut(at..at + n)
                    .ok_or(QueueError::PacketTooLong { len: end })?;
                mem.read(addr, dst).map_err(|fault| QueueError::Memory {
                    area: super::queue::Area::Buffer,
                    fault,
                })?;
                addr += n as u64;
                left -= n;
            }
            if left > 0 {
                let from = (at + d.len as usize - left) - HEADER_LEN;
                let dst = out
                    .payload
                    .get_mut(from..from + left)
                    .ok_or(QueueError::PacketTooLong { len: end })?;
                mem.read(addr, dst).map_err(|fault| QueueError::Memory {
                    area: super::queue::Area::Buffer,
                    fault,
                })?;
            }
            total = end;
        }
        if total < HEADER_LEN as u64 {
            return Err(QueueError::PacketTooShort { len: total });
        }
        let header = Header::decode(&header_bytes);
        if header.len as usize > MAX_PAYLOAD {
            return Err(QueueError::PacketTooLong {
                len: u64::from(header.len),
            });
        }
        if u64::from(header.len) != total - HEADER_LEN as u64 {
            return Err(QueueError::LengthMismatch {
                header: header.len,
                chain: total,
            });
        }
        out.header = header;
        out.sent = 0;
        let q = self
            .transport
            .queues
            .get_mut(TX_QUEUE)
            .ok_or(QueueError::PacketTooShort { len: 0 })?;
        q.complete(mem, head, 0)?;
        self.notify_used(mem, TX_QUEUE)?;
        Ok(true)
    }

    /// Writes `packet` (or, for a data packet, as much of it as fits) into
    /// the next RX buffer chain. An error means the RX queue was malformed:
    /// the device now needs a reset and the packet was not delivered.
    pub fn deliver_rx<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        packet: &mut Packet,
    ) -> Result<Delivery, QueueError> {
        let sent = self
            .deliver_inner(mem, &packet.header, packet.remaining())
            .map_err(|e| self.fail(e))?;
        let Some(sent) = sent else {
            return Ok(Delivery::NoBuffer);
        };
        packet.sent = packet.sent.saturating_add(sent);
        if packet.remaining().is_empty() {
            Ok(Delivery::Complete)
        } else {
            Ok(Delivery::Partial)
        }
    }

    /// Writes `header` with as much of `remaining` (payload bytes not yet
    /// delivered) as the next RX chain holds: the payload bytes sent, or
    /// None when no chain is posted (nothing consumed). An error as for
    /// [`Self::deliver_rx`].
    pub fn deliver_bytes<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        header: &Header,
        remaining: &[u8],
    ) -> Result<Option<u32>, QueueError> {
        self.deliver_inner(mem, header, remaining)
            .map_err(|e| self.fail(e))
    }

    /// Writes a header-only packet into the next RX buffer chain. Ok(false)
    /// when no buffer is posted; an error as for [`Self::deliver_rx`].
    pub fn deliver_control<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        header: &Header,
    ) -> Result<bool, QueueError> {
        let mut header = *header;
        header.len = 0;
        self.deliver_inner(mem, &header, &[])
            .map(|sent| sent.is_some())
            .map_err(|e| self.fail(e))
    }

    /// Delivers `header` with as much of `remaining` as the next RX chain
    /// holds; the payload bytes sent, or None when no chain is posted.
    fn deliver_inner<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        header: &Header,
        remaining: &[u8],
    ) -> Result<Option<u32>, QueueError> {
        if !self.live() {
            return Ok(None);
        }
        let Some(queue) = self.transport.queues.get(RX_QUEUE).copied() else {
            return Ok(None);
        };
        let Some(head) = queue.peek(mem)? else {
            return Ok(None);
        };
        // First pass: validate the chain and measure it.
        let mut chain = queue.chain(head, Direction::DeviceWrites);
        let mut capacity: u64 = 0;
        while let Some(d) = chain.next(mem)? {
            capacity = capacity.saturating_add(u64::from(d.len));
        }
        let room = capacity.saturating_sub(HEADER_LEN as u64);
        if capacity < HEADER_LEN as u64 || (room == 0 && !remaining.is_empty()) {
            return Err(QueueError::RxBufferTooSmall { len: capacity });
        }
        // Only data packets may be split; anything else carries no payload
        // from a well-behaved driver, and is never cut.
        let take = remaining.len().min(room.try_into().unwrap_or(usize::MAX));
        if take < remaining.len() && header.op != op::RW {
            return Err(QueueError::RxBufferTooSmall { len: capacity });
        }
        let mut header = *header;
        header.len = take as u32;
        let header_bytes = header.encode();
        let body = remaining.get(..take).unwrap_or(&[]);
        // Second pass: write header then payload across the chain.
        let mut chain = queue.chain(head, Direction::DeviceWrites);
        let mut written: usize = 0;
        let wanted = HEADER_LEN + take;
        while written < wanted {
            let Some(d) = chain.next(mem)? else {
                // The driver changed the chain under us.
                return Err(QueueError::RxBufferTooSmall {
                    len: written as u64,
                });
            };
            let mut addr = d.addr;
            let mut room = (d.len as usize).min(wanted - written);
            while room > 0 {
                let (src, n) = if written < HEADER_LEN {
                    let n = room.min(HEADER_LEN - written);
                    (header_bytes.get(written..written + n), n)
                } else {
                    let from = written - HEADER_LEN;
                    (body.get(from..from + room), room)
                };
                let src = src.ok_or(QueueError::RxBufferTooSmall {
                    len: written as u64,
                })?;
                mem.write(addr, src).map_err(|fault| QueueError::Memory {
                    area: super::queue::Area::Buffer,
                    fault,
                })?;
                addr += n as u64;
                room -= n;
                written += n;
            }
        }
        let q = self
            .transport
            .queues
            .get_mut(RX_QUEUE)
            .ok_or(QueueError::RxBufferTooSmall { len: 0 })?;
        q.complete(mem, head, wanted as u32)?;
        self.notify_used(mem, RX_QUEUE)?;
        Ok(Some(take as u32))
    }
}
