//! A model of a guest driver for host tests: programs a device through its
//! registers the way Linux's virtio_mmio driver does, and lays out split
//! queues and buffers in a [`TestRam`].

use super::mem::testing::TestRam;
use super::mmio::{reg, status};
use super::queue::{DESC_F_NEXT, DESC_F_WRITE};
use super::vsock::{HEADER_LEN, Header, VsockDevice};
use std::collections::BTreeMap;
use std::vec::Vec;

pub const RAM_SIZE: usize = 0x10_0000;
pub const QSIZE: u16 = 16;

#[derive(Clone, Debug)]
pub struct GuestQueue {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
    next_desc: u16,
    pub avail_idx: u16,
    last_used: u16,
    /// Buffers of each outstanding chain, by head.
    chains: BTreeMap<u16, Vec<(u64, u32)>>,
}

pub struct Guest {
    pub ram: TestRam,
    pub queues: Vec<GuestQueue>,
    next_buf: u64,
}

/// Register access as a driver does it (through a device or the switch).
pub trait Registers {
    fn read_reg(&mut self, off: u64) -> u32;
    fn write_reg(&mut self, off: u64, v: u32);
}

impl Registers for VsockDevice {
    fn read_reg(&mut self, off: u64) -> u32 {
        self.read(off, 4).unwrap() as u32
    }
    fn write_reg(&mut self, off: u64, v: u32) {
        self.write(off, 4, u64::from(v)).unwrap();
    }
}

fn w<R: Registers + ?Sized>(dev: &mut R, off: u64, v: u32) {
    dev.write_reg(off, v);
}
fn r<R: Registers + ?Sized>(dev: &mut R, off: u64) -> u32 {
    dev.read_reg(off)
}

impl Guest {
    /// Lays out the queues and runs the Linux probe and setup sequence.
    pub fn new(base: u64, dev: &mut VsockDevice) -> Self {
        let mut g = Guest::unprobed(base);
        g.probe(dev);
        g
    }

    pub fn unprobed(base: u64) -> Self {
        let queues = (0..3u64)
            .map(|q| GuestQueue {
                desc: base + q * 0x4000,
                avail: base + q * 0x4000 + 0x1000,
                used: base + q * 0x4000 + 0x2000,
                size: QSIZE,
                next_desc: 0,
                avail_idx: 0,
                last_used: 0,
                chains: BTreeMap::new(),
            })
            .collect();
        Guest {
            ram: TestRam::new(base, RAM_SIZE),
            queues,
            next_buf: base + 0x1_0000,
        }
    }

    pub fn probe(&mut self, dev: &mut VsockDevice) {
        self.probe_with(dev);
        assert!(dev.live());
    }

    pub fn probe_with<R: Registers + ?Sized>(&mut self, dev: &mut R) {
        assert_eq!(r(dev, reg::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(r(dev, reg::VERSION), 2);
        // vsock (19) has three queues, input (18) two.
        let id = r(dev, reg::DEVICE_ID);
        assert!(id == 19 || id == 18, "device id {id}");
        let queues = if id == 19 { 3 } else { 2 };
        r(dev, reg::VENDOR_ID);
        w(dev, reg::STATUS, 0);
        assert_eq!(r(dev, reg::STATUS), 0);
        w(dev, reg::STATUS, status::ACKNOWLEDGE);
        w(dev, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        w(dev, reg::DEVICE_FEATURES_SEL, 1);
        let high = r(dev, reg::DEVICE_FEATURES);
        w(dev, reg::DEVICE_FEATURES_SEL, 0);
        let low = r(dev, reg::DEVICE_FEATURES);
        assert_eq!(high & 1, 1, "VERSION_1 offered");
        w(dev, reg::DRIVER_FEATURES_SEL, 1);
        w(dev, reg::DRIVER_FEATURES, 1);
        w(dev, reg::DRIVER_FEATURES_SEL, 0);
        // Nothing from the low word: no device-specific feature is used.
        let _ = low;
        w(dev, reg::DRIVER_FEATURES, 0);
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        w(dev, reg::STATUS, s);
        assert_eq!(
            r(dev, reg::STATUS) & status::FEATURES_OK,
            status::FEATURES_OK
        );
        for (i, q) in self.queues.iter().enumerate().take(queues) {
            w(dev, reg::QUEUE_SEL, i as u32);
            assert_eq!(r(dev, reg::QUEUE_READY), 0);
            assert!(r(dev, reg::QUEUE_NUM_MAX) >= u32::from(q.size));
            w(dev, reg::QUEUE_NUM, u32::from(q.size));
            w(dev, reg::QUEUE_DESC_LOW, q.desc as u32);
            w(dev, reg::QUEUE_DESC_HIGH, (q.desc >> 32) as u32);
            w(dev, reg::QUEUE_DRIVER_LOW, q.avail as u32);
            w(dev, reg::QUEUE_DRIVER_HIGH, (q.avail >> 32) as u32);
            w(dev, reg::QUEUE_DEVICE_LOW, q.used as u32);
            w(dev, reg::QUEUE_DEVICE_HIGH, (q.used >> 32) as u32);
            w(dev, reg::QUEUE_READY, 1);
            assert_eq!(r(dev, reg::QUEUE_READY), 1);
        }
        w(dev, reg::STATUS, s | status::DRIVER_OK);
    }

    fn alloc_buf(&mut self, len: u32) -> u64 {
        if self.next_buf + u64::from(len) > self.ram.base + RAM_SIZE as u64 {
            self.next_buf = self.ram.base + 0x1_0000;
        }
        let a = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(16);
        if self.next_buf >= self.ram.base + RAM_SIZE as u64 {
            self.next_buf = self.ram.base + 0x1_0000;
        }
        a
    }

    /// Writes a raw descriptor.
    pub fn put_desc(&mut self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.queues[q].desc + u64::from(index) * 16;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..].copy_from_slice(&next.to_le_bytes());
        self.ram.put(at, &b);
    }

    /// Makes chain `head` available.
    pub fn publish(&mut self, q: usize, head: u16) {
        let gq = &mut self.queues[q];
        let slot = gq.avail + 4 + 2 * u64::from(gq.avail_idx % gq.size);
        gq.avail_idx = gq.avail_idx.wrapping_add(1);
        let (avail, idx) = (gq.avail, gq.avail_idx);
        self.ram.put_u16(slot, head);
        self.ram.put_u16(avail + 2, idx);
    }

    /// Adds a chain of fresh buffers, each `(len, writable)`.
    pub fn add_chain(&mut self, q: usize, bufs: &[(u32, bool)], data: &[u8]) -> u16 {
        let head = self.queues[q].next_desc;
        let size = self.queues[q].size;
        let mut list = Vec::new();
        let mut data = data;
        for (i, &(len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % size;
            let addr = self.alloc_buf(len);
            let n = data.len().min(len as usize);
            self.ram.put(addr, &data[..n]);
            data = &data[n..];
            let last = i + 1 == bufs.len();
            let flags =
                if last { 0 } else { DESC_F_NEXT } | if writable { DESC_F_WRITE } else { 0 };
            self.put_desc(q, index, addr, len, flags, (index + 1) % size);
            list.push((addr, len));
        }
        self.queues[q].next_desc = (head + bufs.len() as u16) % size;
        self.queues[q].chains.insert(head, list);
        self.publish(q, head);
        head
    }

    /// Queues a packet on TX as Linux does: header, then payload.
    pub fn send(&mut self, header: Header, payload: &[u8]) -> u16 {
        let mut h = header;
        h.len = payload.len() as u32;
        let mut bytes = h.encode().to_vec();
        bytes.extend_from_slice(payload);
        if payload.is_empty() {
            self.add_chain(1, &[(HEADER_LEN as u32, false)], &bytes)
        } else {
            self.add_chain(
                1,
                &[(HEADER_LEN as u32, false), (payload.len() as u32, false)],
                &bytes,
            )
        }
    }

    /// Posts `n` RX buffers of `len` bytes (one descriptor each).
    pub fn post_rx(&mut self, n: usize, len: u32) {
        for _ in 0..n {
            self.add_chain(0, &[(len, true)], &[]);
        }
    }

    /// The next used element of queue `q`, with the bytes written.
    pub fn pop_used(&mut self, q: usize) -> Option<(u16, Vec<u8>)> {
        let gq = &mut self.queues[q];
        let idx = self.ram.get_u16(gq.used + 2);
        if idx == gq.last_used {
            return None;
        }
        let elem = gq.used + 4 + 8 * u64::from(gq.last_used % gq.size);
        gq.last_used = gq.last_used.wrapping_add(1);
        let id = self.ram.get_u32(elem) as u16;
        let len = self.ram.get_u32(elem + 4) as usize;
        let chain = gq.chains.remove(&id).unwrap_or_default();
        let mut out = Vec::new();
        for (addr, blen) in chain {
            let n = (len - out.len()).min(blen as usize);
            out.extend_from_slice(self.ram.get(addr, n));
        }
        assert_eq!(out.len(), len);
        Some((id, out))
    }

    /// Received packets (header, payload), draining the RX used ring.
    pub fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some((_, bytes)) = self.pop_used(0) {
            let h = Header::decode(bytes[..HEADER_LEN].try_into().unwrap());
            assert_eq!(h.len as usize, bytes.len() - HEADER_LEN);
            v.push((h, bytes[HEADER_LEN..].to_vec()));
        }
        v
    }

    /// Frees completed TX chains; returns how many.
    pub fn reap_tx(&mut self) -> usize {
        let mut n = 0;
        while self.pop_used(1).is_some() {
            n += 1;
        }
        n
    }
}
