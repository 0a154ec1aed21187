//! The vsock switch between a hostile rich VM and a well-behaved secure VM,
//! both driving their devices the way a virtio driver does (registers,
//! split rings in their RAM), through the switch's public API only.
//!
//! The rich VM sends packets with any header (forged source CIDs, any
//! destination, port, operation, type, length), in one or two descriptors;
//! posts or withholds RX buffers; scribbles on its own rings and buffers;
//! writes any register (resets, bad queue layouts); re-probes. The secure VM
//! answers connection requests, echoes data and keeps RX buffers posted.
//!
//! Invariants:
//! - every packet the secure VM receives carries the rich VM's CID as
//!   source (no forged CID passes) and its own as destination, is a stream
//!   packet whose length field matches its bytes, and opens a connection
//!   only to a port the policy allows;
//! - the switch writes the secure VM's RAM only into the RX buffers it
//!   posted and its used rings;
//! - when the secure VM's rings moved in a pump, it is told (interrupt).

use arbitrary::{Arbitrary, Unstructured};
use mvmm_core::partition::MemRange;
use mvmm_core::virtio::vsock::{HEADER_LEN, Header, TYPE_STREAM, op};
use mvmm_core::virtio::{GuestMemory, MemFault, RamWindow, Rule, Switch};

const RICH: usize = 0;
const SECURE: usize = 1;
const CIDS: [u64; 2] = [
    mvmm_abi::vsock::RICH_VM_CID as u64,
    mvmm_abi::vsock::SECURE_VM_CID as u64,
];
const BASES: [u64; 2] = [0x4000_0000, 0x5000_0000];
const RAM_SIZE: u64 = 0x2_0000;
const QSIZE: u16 = 16;
const BUFS: u64 = 0x4000;
const PORTS: [u32; 2] = [mvmm_abi::vsock::PAYMENT_PORT, mvmm_abi::vsock::ECHO_PORT];

/// Register offsets of virtio-mmio.
mod reg {
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const ALL: &[u64] = &[
        0x000, 0x004, 0x008, 0x00c, 0x010, 0x014, 0x020, 0x024, 0x030, 0x034, 0x038, 0x044, 0x050,
        0x060, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4, 0x0fc, 0x100, 0x104,
    ];
}

struct Ram {
    base: u64,
    bytes: Vec<u8>,
    /// Where the device may write (None: anywhere in the window).
    writable: Option<Vec<(u64, u64)>>,
}

impl GuestMemory for Ram {
    fn check(&self, ipa: u64, len: u64) -> Result<(), MemFault> {
        RamWindow::new(&[MemRange::new(self.base, RAM_SIZE)]).check(ipa, len)
    }
    fn read(&self, ipa: u64, buf: &mut [u8]) -> Result<(), MemFault> {
        self.check(ipa, buf.len() as u64)?;
        let at = (ipa - self.base) as usize;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, ipa: u64, data: &[u8]) -> Result<(), MemFault> {
        self.check(ipa, data.len() as u64)?;
        if let Some(ok) = &self.writable {
            let end = ipa + data.len() as u64;
            assert!(
                ok.iter().any(|&(a, n)| ipa >= a && end <= a + n),
                "the switch wrote {:#x}..{end:#x} of the secure VM, outside its RX buffers and rings",
                ipa
            );
        }
        let at = (ipa - self.base) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
}

impl Ram {
    fn u16_at(&self, ipa: u64) -> u16 {
        let at = (ipa - self.base) as usize;
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }
    fn u32_at(&self, ipa: u64) -> u32 {
        let at = (ipa - self.base) as usize;
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }
    fn put(&mut self, ipa: u64, data: &[u8]) {
        let at = (ipa - self.base) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }
}

/// The buffers of one descriptor chain: (address, length).
type Chain = Vec<(u64, u32)>;

/// One guest's driver: split rings at fixed places, buffers from a ring
/// allocator, chains remembered by head.
struct Driver {
    vm: usize,
    next_desc: [u16; 3],
    avail_idx: [u16; 3],
    last_used: [u16; 3],
    chains: [Vec<Option<Chain>>; 3],
    next_buf: u64,
}

fn desc(vm: usize, q: usize) -> u64 {
    BASES[vm] + q as u64 * 0x1000
}
fn avail(vm: usize, q: usize) -> u64 {
    desc(vm, q) + 0x400
}
fn used(vm: usize, q: usize) -> u64 {
    desc(vm, q) + 0x800
}

impl Driver {
    fn new(vm: usize) -> Driver {
        Driver {
            vm,
            next_desc: [0; 3],
            avail_idx: [0; 3],
            last_used: [0; 3],
            chains: core::array::from_fn(|_| vec![None; usize::from(QSIZE)]),
            next_buf: BASES[vm] + BUFS,
        }
    }

    /// Resets the device and sets it up as Linux does; the rings start empty.
    fn probe(&mut self, sw: &mut Switch, ram: &mut Ram) {
        *self = Driver::new(self.vm);
        ram.bytes[..BUFS as usize].fill(0);
        let mut w = |o: u64, v: u64| {
            let _ = sw.mmio_write(self.vm, o, 4, v);
        };
        w(reg::STATUS, 0);
        w(reg::STATUS, 3);
        w(reg::DRIVER_FEATURES_SEL, 1);
        w(reg::DRIVER_FEATURES, 1);
        w(reg::DRIVER_FEATURES_SEL, 0);
        w(reg::DRIVER_FEATURES, 0);
        w(reg::STATUS, 11);
        for q in 0..3 {
            w(reg::QUEUE_SEL, q as u64);
            w(reg::QUEUE_NUM, u64::from(QSIZE));
            w(reg::QUEUE_DESC_LOW, desc(self.vm, q));
            w(reg::QUEUE_DESC_LOW + 4, 0);
            w(reg::QUEUE_DRIVER_LOW, avail(self.vm, q));
            w(reg::QUEUE_DRIVER_LOW + 4, 0);
            w(reg::QUEUE_DEVICE_LOW, used(self.vm, q));
            w(reg::QUEUE_DEVICE_LOW + 4, 0);
            w(reg::QUEUE_READY, 1);
        }
        w(reg::STATUS, 15);
    }

    fn alloc(&mut self, len: u32) -> u64 {
        if self.next_buf + u64::from(len) > BASES[self.vm] + RAM_SIZE {
            self.next_buf = BASES[self.vm] + BUFS;
        }
        let a = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(16);
        a
    }

    /// Publishes a chain of buffers `(len, device-writable)` holding `data`.
    fn add_chain(&mut self, ram: &mut Ram, q: usize, bufs: &[(u32, bool)], data: &[u8]) -> bool {
        let head = self.next_desc[q];
        if self.chains[q][usize::from(head)].is_some() {
            return false; // ring full
        }
        let mut list = Vec::new();
        let mut data = data;
        for (i, &(len, writable)) in bufs.iter().enumerate() {
            let index = (head + i as u16) % QSIZE;
            let addr = self.alloc(len);
            let n = data.len().min(len as usize);
            ram.put(addr, &data[..n]);
            data = &data[n..];
            let last = i + 1 == bufs.len();
            let flags = u16::from(!last) | if writable { 2 } else { 0 };
            let mut d = [0u8; 16];
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            d[14..].copy_from_slice(&((index + 1) % QSIZE).to_le_bytes());
            ram.put(desc(self.vm, q) + u64::from(index) * 16, &d);
            list.push((addr, len));
        }
        self.next_desc[q] = (head + bufs.len() as u16) % QSIZE;
        self.chains[q][usize::from(head)] = Some(list);
        let slot = avail(self.vm, q) + 4 + 2 * u64::from(self.avail_idx[q] % QSIZE);
        ram.put(slot, &head.to_le_bytes());
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        ram.put(avail(self.vm, q) + 2, &self.avail_idx[q].to_le_bytes());
        true
    }

    /// Takes the next used chain of queue `q`: its bytes, as the device
    /// reported them.
    fn pop_used(&mut self, ram: &Ram, q: usize) -> Option<Vec<u8>> {
        if ram.u16_at(used(self.vm, q) + 2) == self.last_used[q] {
            return None;
        }
        let elem = used(self.vm, q) + 4 + 8 * u64::from(self.last_used[q] % QSIZE);
        self.last_used[q] = self.last_used[q].wrapping_add(1);
        let id = ram.u32_at(elem) as usize;
        let len = ram.u32_at(elem + 4) as usize;
        let chain = self.chains[q].get_mut(id).and_then(Option::take);
        let chain = chain.unwrap_or_default();
        let mut out = Vec::new();
        for (addr, blen) in chain {
            let n = len.saturating_sub(out.len()).min(blen as usize);
            let at = (addr - ram.base) as usize;
            out.extend_from_slice(&ram.bytes[at..at + n]);
        }
        Some(out)
    }

    /// Where the device may write: used rings and posted RX buffers.
    fn writable(&self) -> Vec<(u64, u64)> {
        let mut ok: Vec<(u64, u64)> = (0..3).map(|q| (used(self.vm, q), 0x100)).collect();
        for chain in self.chains[0].iter().flatten() {
            ok.extend(chain.iter().map(|&(a, n)| (a, u64::from(n))));
        }
        ok
    }
}

#[derive(Arbitrary, Debug)]
enum Cid {
    Rich,
    Secure,
    Host,
    Any(u64),
}

#[derive(Arbitrary, Debug)]
struct Packet {
    src: Cid,
    dst: Cid,
    src_port: u16,
    dst_port: Option<u32>,
    op: u8,
    kind: Option<u16>,
    /// Lie about the length by this much.
    len_delta: Option<i8>,
    payload: u8,
    split: bool,
    credit: u16,
}

#[derive(Arbitrary, Debug)]
enum Op {
    RichSend(Packet),
    RichPostRx(u8, u16),
    RichReadRx,
    RichScribble(u16, Vec<u8>),
    RichRegister(u8, u32),
    RichProbe,
    /// The secure VM withholds RX buffers for a while, or resumes.
    SecureStarve(bool),
    SecureProbe,
    Pump,
}

struct World {
    sw: Switch,
    mems: [Ram; 2],
    drivers: [Driver; 2],
    secure_starved: bool,
    /// The secure VM's connections: (rich port, secure port).
    accepted: Vec<(u32, u32)>,
}

impl World {
    fn notify(&mut self, vm: usize, q: u64) {
        let _ = self.sw.mmio_write(vm, reg::QUEUE_NOTIFY, 4, q);
        self.pump();
    }

    fn pump(&mut self) {
        self.mems[SECURE].writable = Some(self.drivers[SECURE].writable());
        let before = self.mems[SECURE].u16_at(used(SECURE, 0) + 2);
        let report = self.sw.pump(&mut self.mems[..]);
        let after = self.mems[SECURE].u16_at(used(SECURE, 0) + 2);
        if before != after {
            assert!(
                report.needs_interrupt(SECURE) || self.sw.interrupt_pending(SECURE),
                "the secure VM got packets and no interrupt"
            );
        }
        self.secure_runs();
    }

    /// The secure VM's driver and services: read what came, answer, restock.
    fn secure_runs(&mut self) {
        let status = self
            .sw
            .mmio_read(SECURE, reg::INTERRUPT_STATUS, 4)
            .unwrap_or(0);
        let _ = self.sw.mmio_write(SECURE, reg::INTERRUPT_ACK, 4, status);
        let mut answers = Vec::new();
        while let Some(bytes) = self.drivers[SECURE].pop_used(&self.mems[SECURE], 0) {
            assert!(
                bytes.len() >= HEADER_LEN,
                "a packet shorter than its header"
            );
            let h = Header::decode(bytes[..HEADER_LEN].try_into().expect("header"));
            assert_eq!(
                h.src_cid, CIDS[RICH],
                "forged source CID reached the secure VM: {h:?}"
            );
            assert_eq!(h.dst_cid, CIDS[SECURE], "{h:?}");
            assert_eq!(h.kind, TYPE_STREAM, "{h:?}");
            assert_eq!(h.len as usize, bytes.len() - HEADER_LEN, "{h:?}");
            let conn = (h.src_port, h.dst_port);
            match h.op {
                op::REQUEST => {
                    assert!(PORTS.contains(&h.dst_port), "policy let {h:?} through");
                    if !self.accepted.contains(&conn) {
                        self.accepted.push(conn);
                    }
                    answers.push((conn, op::RESPONSE, Vec::new()));
                }
                op::RW => answers.push((conn, op::RW, bytes[HEADER_LEN..].to_vec())),
                op::CREDIT_REQUEST => answers.push((conn, op::CREDIT_UPDATE, Vec::new())),
                op::RST | op::SHUTDOWN => self.accepted.retain(|c| *c != conn),
                _ => {}
            }
        }
        while self.drivers[SECURE]
            .pop_used(&self.mems[SECURE], 1)
            .is_some()
        {}
        for ((rich_port, port), op, payload) in answers.into_iter().take(4) {
            let h = Header {
                src_cid: CIDS[SECURE],
                dst_cid: CIDS[RICH],
                src_port: port,
                dst_port: rich_port,
                len: payload.len() as u32,
                kind: TYPE_STREAM,
                op,
                flags: 0,
                buf_alloc: 64 * 1024,
                fwd_cnt: 0,
            };
            let mut bytes = h.encode().to_vec();
            bytes.extend_from_slice(&payload);
            let bufs: &[(u32, bool)] = &[(bytes.len() as u32, false)];
            if self.drivers[SECURE].add_chain(&mut self.mems[SECURE], 1, bufs, &bytes) {
                let _ = self.sw.mmio_write(SECURE, reg::QUEUE_NOTIFY, 4, 1);
            }
        }
        if !self.secure_starved {
            while self.drivers[SECURE].add_chain(&mut self.mems[SECURE], 0, &[(4096, true)], &[]) {}
            let _ = self.sw.mmio_write(SECURE, reg::QUEUE_NOTIFY, 4, 0);
        }
    }
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut sw = Switch::new();
    for vm in [RICH, SECURE] {
        sw.add_vm(vm, CIDS[vm]).expect("valid CIDs");
    }
    for port in PORTS {
        sw.allow(Rule {
            from: RICH,
            to: SECURE,
            port,
        })
        .expect("room for rules");
    }
    let ram = |vm: usize| Ram {
        base: BASES[vm],
        bytes: vec![0; RAM_SIZE as usize],
        writable: None,
    };
    let mut w = World {
        sw,
        mems: [ram(RICH), ram(SECURE)],
        drivers: [Driver::new(RICH), Driver::new(SECURE)],
        secure_starved: false,
        accepted: Vec::new(),
    };
    for vm in [SECURE, RICH] {
        w.drivers[vm].probe(&mut w.sw, &mut w.mems[vm]);
    }
    w.secure_runs();
    for op in crate::ops::<Op>(&mut u, 64) {
        match op {
            Op::RichSend(p) => {
                let cid = |c: &Cid| match *c {
                    Cid::Rich => CIDS[RICH],
                    Cid::Secure => CIDS[SECURE],
                    Cid::Host => 2,
                    Cid::Any(v) => v,
                };
                let payload = vec![0x5a; usize::from(p.payload)];
                let len = match p.len_delta {
                    Some(d) => (payload.len() as u32).wrapping_add_signed(i32::from(d)),
                    None => payload.len() as u32,
                };
                let h = Header {
                    src_cid: cid(&p.src),
                    dst_cid: cid(&p.dst),
                    src_port: 40000 + u32::from(p.src_port % 8),
                    dst_port: p.dst_port.unwrap_or(PORTS[usize::from(p.op & 1)]),
                    len,
                    kind: p.kind.unwrap_or(TYPE_STREAM),
                    op: u16::from(p.op % 9),
                    flags: 0,
                    buf_alloc: u32::from(p.credit) * 16,
                    fwd_cnt: 0,
                };
                let mut bytes = h.encode().to_vec();
                bytes.extend_from_slice(&payload);
                let bufs: Vec<(u32, bool)> = if p.split && !payload.is_empty() {
                    vec![(HEADER_LEN as u32, false), (payload.len() as u32, false)]
                } else {
                    vec![(bytes.len() as u32, false)]
                };
                if w.drivers[RICH].add_chain(&mut w.mems[RICH], 1, &bufs, &bytes) {
                    w.notify(RICH, 1);
                }
            }
            Op::RichPostRx(n, len) => {
                for _ in 0..n % 8 {
                    let len = u32::from(len % 4096);
                    w.drivers[RICH].add_chain(&mut w.mems[RICH], 0, &[(len, true)], &[]);
                }
                w.notify(RICH, 0);
            }
            Op::RichReadRx => {
                while w.drivers[RICH].pop_used(&w.mems[RICH], 0).is_some() {}
                while w.drivers[RICH].pop_used(&w.mems[RICH], 1).is_some() {}
            }
            Op::RichScribble(at, bytes) => {
                let at = usize::from(at) % RAM_SIZE as usize;
                let n = bytes.len().min(RAM_SIZE as usize - at);
                w.mems[RICH].bytes[at..at + n].copy_from_slice(&bytes[..n]);
            }
            Op::RichRegister(r, value) => {
                let o = reg::ALL[usize::from(r) % reg::ALL.len()];
                let _ = w.sw.mmio_write(RICH, o, 4, u64::from(value));
                let _ = w.sw.mmio_read(RICH, o, 4);
                w.pump();
            }
            Op::RichProbe => {
                w.drivers[RICH].probe(&mut w.sw, &mut w.mems[RICH]);
                w.pump();
            }
            Op::SecureStarve(on) => {
                w.secure_starved = on;
                w.pump();
            }
            Op::SecureProbe => {
                w.drivers[SECURE].probe(&mut w.sw, &mut w.mems[SECURE]);
                w.accepted.clear();
                w.mems[SECURE].writable = None;
                w.secure_runs();
            }
            Op::Pump => w.pump(),
        }
    }
}
