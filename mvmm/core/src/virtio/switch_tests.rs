//! Two fake VMs talking through the switch, and random queues.

use super::mem::testing::TestRam;
use super::mmio::reg;
use super::queue::DESC_F_WRITE;
use super::switch::*;
use super::testguest::{Guest, RAM_SIZE};
use super::vsock::*;
use proptest::prelude::*;
use std::boxed::Box;
use std::vec::Vec;

pub(super) const RICH: usize = 0;
pub(super) const SECURE: usize = 1;
pub(super) const RICH_BASE: u64 = 0x4000_0000;
pub(super) const SECURE_BASE: u64 = 0x8000_0000;
pub(super) const PORT: u32 = mvmm_abi::vsock::PAYMENT_PORT;
pub(super) const ECHO: u32 = mvmm_abi::vsock::ECHO_PORT;

pub(super) struct World {
    pub(super) sw: Box<Switch>,
    pub(super) guests: Vec<Guest>,
}

impl World {
    pub(super) fn new() -> Self {
        let mut sw = Box::new(Switch::new());
        sw.add_vm(RICH, 3).unwrap();
        sw.add_vm(SECURE, 4).unwrap();
        for port in [PORT, ECHO] {
            sw.allow(Rule {
                from: RICH,
                to: SECURE,
                port,
            })
            .unwrap();
        }
        let mut guests = Vec::new();
        for (vm, base) in [(RICH, RICH_BASE), (SECURE, SECURE_BASE)] {
            let mut g = Guest::unprobed(base);
            g.probe_with(&mut Shim { sw: &mut sw, vm });
            assert!(sw.device(vm).unwrap().live());
            guests.push(g);
        }
        World { sw, guests }
    }

    pub(super) fn pump(&mut self) -> PumpReport {
        self.pump_for(None)
    }

    /// A pump serving VM `first` first, as after its trap.
    pub(super) fn pump_for(&mut self, first: Option<usize>) -> PumpReport {
        let mut mems: Vec<TestRam> = self
            .guests
            .iter_mut()
            .map(|g| core::mem::replace(&mut g.ram, TestRam::new(0, 0)))
            .collect();
        let r = self.sw.pump_for(&mut mems, first);
        for (g, m) in self.guests.iter_mut().zip(mems) {
            g.ram = m;
        }
        r
    }

    pub(super) fn send(&mut self, vm: usize, h: Header, payload: &[u8]) {
        self.guests[vm].send(h, payload);
    }

    pub(super) fn recv(&mut self, vm: usize) -> Vec<(Header, Vec<u8>)> {
        self.guests[vm].received()
    }
}

/// Lets the driver model program a device owned by the switch.
pub(super) struct Shim<'a> {
    pub(super) sw: &'a mut Switch,
    pub(super) vm: usize,
}

impl super::testguest::Registers for Shim<'_> {
    fn read_reg(&mut self, off: u64) -> u32 {
        self.sw.mmio_read(self.vm, off, 4).unwrap() as u32
    }
    fn write_reg(&mut self, off: u64, v: u32) {
        self.sw.mmio_write(self.vm, off, 4, v.into()).unwrap();
    }
}

pub(super) fn h(src_cid: u64, dst_cid: u64, src_port: u32, dst_port: u32, op: u16) -> Header {
    Header {
        src_cid,
        dst_cid,
        src_port,
        dst_port,
        kind: TYPE_STREAM,
        op,
        buf_alloc: 262_144,
        ..Header::zero()
    }
}

#[test]
fn connect_accept_data_shutdown() {
    let mut w = World::new();
    w.guests[RICH].post_rx(8, 4096);
    w.guests[SECURE].post_rx(8, 4096);
    w.send(RICH, h(3, 4, 50000, PORT, op::REQUEST), &[]);
    let r = w.pump();
    assert!(
        r.needs_interrupt(SECURE) && r.needs_interrupt(RICH),
        "{r:?}"
    );
    let got = w.recv(SECURE);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, h(3, 4, 50000, PORT, op::REQUEST));
    w.send(SECURE, h(4, 3, PORT, 50000, op::RESPONSE), &[]);
    w.pump();
    assert_eq!(w.recv(RICH)[0].0.op, op::RESPONSE);
    w.send(RICH, h(3, 4, 50000, PORT, op::RW), b"pay 12.50 EUR");
    w.send(SECURE, h(4, 3, PORT, 50000, op::CREDIT_UPDATE), &[]);
    w.pump();
    let got = w.recv(SECURE);
    assert_eq!(got[0].1, b"pay 12.50 EUR");
    assert_eq!(w.recv(RICH)[0].0.op, op::CREDIT_UPDATE);
    w.send(SECURE, h(4, 3, PORT, 50000, op::RW), b"token");
    w.pump();
    assert_eq!(w.recv(RICH)[0].1, b"token");
    w.send(RICH, h(3, 4, 50000, PORT, op::SHUTDOWN), &[]);
    w.pump();
    assert_eq!(w.recv(SECURE)[0].0.op, op::SHUTDOWN);
    w.send(SECURE, h(4, 3, PORT, 50000, op::RST), &[]);
    w.pump();
    assert_eq!(w.recv(RICH)[0].0.op, op::RST);
    // The connection is gone: more data is refused with a reset.
    w.send(RICH, h(3, 4, 50000, PORT, op::RW), b"late");
    let r = w.pump();
    assert_eq!(r.refused, 1);
    assert!(w.recv(SECURE).is_empty());
    assert_eq!(w.recv(RICH)[0].0, {
        let mut x = h(4, 3, PORT, 50000, op::RST);
        x.buf_alloc = 0;
        x
    });
    assert_eq!(w.guests[RICH].reap_tx(), 4);
}

#[test]
fn source_cid_is_stamped() {
    let mut w = World::new();
    w.guests[SECURE].post_rx(4, 4096);
    w.send(RICH, h(4, 4, 1, PORT, op::REQUEST), &[]);
    w.send(RICH, h(0xdead_beef, 4, 2, PORT, op::REQUEST), &[]);
    w.pump();
    let got = w.recv(SECURE);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|(hd, _)| hd.src_cid == 3));
}

#[test]
fn refusals_get_resets() {
    let mut w = World::new();
    w.guests[RICH].post_rx(8, 4096);
    w.guests[SECURE].post_rx(8, 4096);
    for (dst_cid, port, op_) in [
        (4, 22, op::REQUEST),   // no rule for this port
        (2, PORT, op::REQUEST), // the host
        (9, PORT, op::REQUEST), // nobody
        (3, PORT, op::REQUEST), // itself
        (4, PORT, op::RW),      // no connection
        (4, PORT, op::RESPONSE),
        (4, PORT, 99), // unknown op
    ] {
        w.send(RICH, h(3, dst_cid, 40000, port, op_), &[]);
        let r = w.pump();
        assert_eq!(r.refused, 1, "{dst_cid} {port} {op_}");
        let got = w.recv(RICH);
        assert_eq!(got.len(), 1);
        let rst = got[0].0;
        assert_eq!(rst.op, op::RST);
        assert_eq!(
            (rst.src_cid, rst.src_port, rst.dst_port),
            (dst_cid, port, 40000)
        );
    }
    // The secure VM may not connect back to the rich VM (rules are one-way).
    w.send(SECURE, h(4, 3, 1, PORT, op::REQUEST), &[]);
    assert_eq!(w.pump().refused, 1);
    assert_eq!(w.recv(SECURE)[0].0.op, op::RST);
    // A stray reset is dropped, never answered.
    w.send(RICH, h(3, 4, 1, 2, op::RST), &[]);
    let r = w.pump();
    assert_eq!(r.last_refusal, Some((RICH, Refusal::StrayReset)));
    assert!(w.recv(RICH).is_empty() && w.recv(SECURE).is_empty());
    // Seqpacket is not offered; payload on a control op is refused.
    let mut seq = h(3, 4, 1, PORT, op::REQUEST);
    seq.kind = TYPE_SEQPACKET;
    w.send(RICH, seq, &[]);
    w.send(RICH, h(3, 4, 1, PORT, op::REQUEST), b"x");
    assert_eq!(w.pump().refused, 2);
    assert!(w.recv(SECURE).is_empty());
}

#[test]
fn a_slow_receiver_keeps_everything_in_order_and_the_sender_never_waits() {
    let mut w = World::new();
    w.guests[RICH].post_rx(8, 4096);
    w.guests[SECURE].post_rx(1, 4096);
    w.send(RICH, h(3, 4, 1, PORT, op::REQUEST), &[]);
    w.pump();
    w.recv(SECURE);
    w.send(SECURE, h(4, 3, PORT, 1, op::RESPONSE), &[]);
    w.pump();
    w.recv(RICH);
    let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..4u8 {
        w.send(RICH, h(3, 4, 1, PORT, op::RW), &[i; 100]);
    }
    w.send(RICH, h(3, 4, 1, PORT, op::RW), &big);
    let r = w.pump();
    assert!(!r.more);
    // The secure VM has no RX buffer: the packets wait in the switch, and
    // the rich VM's TX ring is empty (the request and all five packets).
    assert!(w.recv(SECURE).is_empty());
    assert_eq!(w.guests[RICH].reap_tx(), 6);
    for _ in 0..3 {
        w.pump();
    }
    assert!(w.recv(SECURE).is_empty());
    // Buffers appear a few at a time; everything arrives, in order.
    let mut data = Vec::new();
    for _ in 0..20 {
        w.guests[SECURE].post_rx(2, 4096);
        w.pump();
        for (hd, p) in w.recv(SECURE) {
            assert_eq!(hd.op, op::RW);
            assert!(p.len() <= 4096 - HEADER_LEN);
            data.extend_from_slice(&p);
        }
    }
    let mut want = Vec::new();
    for i in 0..4u8 {
        want.extend_from_slice(&[i; 100]);
    }
    want.extend_from_slice(&big);
    assert_eq!(data, want);
    assert_eq!(w.sw.connections(), 1);
}

#[test]
fn a_reset_device_ends_its_connections() {
    let mut w = World::new();
    w.guests[RICH].post_rx(8, 4096);
    w.guests[SECURE].post_rx(8, 4096);
    w.send(RICH, h(3, 4, 1, PORT, op::REQUEST), &[]);
    w.pump();
    w.send(SECURE, h(4, 3, PORT, 1, op::RESPONSE), &[]);
    w.pump();
    w.recv(SECURE);
    w.recv(RICH);
    // The rich VM reboots: its device is reset.
    assert_eq!(
        w.sw.mmio_write(RICH, reg::STATUS, 4, 0),
        Ok(super::mmio::WriteEffect::Reset)
    );
    w.pump();
    let got = w.recv(SECURE);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, op::RST);
    assert_eq!(
        (got[0].0.src_cid, got[0].0.src_port, got[0].0.dst_port),
        (3, 1, PORT)
    );
}

#[test]
fn a_broken_sender_is_isolated() {
    let mut w = World::new();
    w.guests[SECURE].post_rx(8, 4096);
    // The rich VM points a TX descriptor into the secure VM's RAM.
    w.guests[RICH].put_desc(1, 0, SECURE_BASE + 0x1_0000, 44, 0, 0);
    w.guests[RICH].publish(1, 0);
    let before = w.guests[SECURE].ram.bytes.clone();
    let r = w.pump();
    assert!(matches!(
        r.faults[RICH],
        Some(super::queue::QueueError::Memory { .. })
    ));
    assert!(r.needs_interrupt(RICH));
    assert!(w.sw.device(SECURE).unwrap().live());
    assert!(w.guests[RICH].ram.violations().is_empty());
    assert!(w.guests[SECURE].ram.writes().is_empty());
    assert_eq!(w.guests[SECURE].ram.bytes, before);
}

/// A descriptor address drawn from the interesting places.
fn addr_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..RAM_SIZE as u64).prop_map(|o| RICH_BASE + o),
        (0u64..64).prop_map(|o| RICH_BASE + RAM_SIZE as u64 - o),
        (0u64..64).prop_map(|o| SECURE_BASE + o),
        (0u64..64).prop_map(|o| u64::MAX - o),
        any::<u64>(),
    ]
}

fn len_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..128, Just(44u32), 0u32..0x2_0000, any::<u32>()]
}

#[derive(Debug, Clone)]
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn desc_strategy() -> impl Strategy<Value = RawDesc> {
    (
        addr_strategy(),
        len_strategy(),
        prop_oneof![0u16..8, any::<u16>()],
        prop_oneof![0u16..20, any::<u16>()],
    )
        .prop_map(|(addr, len, flags, next)| RawDesc {
            addr,
            len,
            flags,
            next,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_queues_never_escape_the_vm(
        tx in proptest::collection::vec(desc_strategy(), 16),
        rx in proptest::collection::vec(desc_strategy(), 16),
        tx_ring in proptest::collection::vec(any::<u16>(), 16),
        rx_ring in proptest::collection::vec(prop_oneof![0u16..16, any::<u16>()], 16),
        tx_idx in prop_oneof![0u16..20, any::<u16>()],
        rx_idx in prop_oneof![0u16..20, any::<u16>()],
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut w = World::new();
        // A connection between honest guests, then the rich VM's queues
        // turn random while the secure VM sends it data.
        w.guests[SECURE].post_rx(8, 4096);
        w.guests[RICH].post_rx(1, 4096);
        w.send(RICH, h(3, 4, 1, PORT, op::REQUEST), &[]);
        w.pump();
        w.send(SECURE, h(4, 3, PORT, 1, op::RESPONSE), &[]);
        w.pump();
        prop_assert_eq!(w.recv(RICH).len(), 1);
        let g = &mut w.guests[RICH];
        for (i, d) in tx.iter().enumerate() {
            g.put_desc(1, i as u16, d.addr, d.len, d.flags, d.next);
        }
        for (i, d) in rx.iter().enumerate() {
            let write = if i % 3 == 0 { 0 } else { DESC_F_WRITE };
            g.put_desc(0, i as u16, d.addr, d.len, d.flags | write, d.next);
        }
        for (q, ring, idx) in [(1usize, &tx_ring, tx_idx), (0, &rx_ring, rx_idx)] {
            let avail = g.queues[q].avail;
            for (i, v) in ring.iter().enumerate() {
                g.ram.put_u16(avail + 4 + 2 * i as u64, *v % 32);
            }
            g.ram.put_u16(avail + 2, idx.wrapping_add(1));
        }
        let used = [g.queues[0].used, g.queues[1].used];
        let writable: Vec<(u64, u64)> = rx.iter().map(|d| (d.addr, u64::from(d.len))).collect();
        w.guests[RICH].ram.clear_log();
        w.send(SECURE, h(4, 3, PORT, 1, op::RW), &payload);
        for _ in 0..4 {
            let r = w.pump();
            if let Some(e) = r.faults[RICH] {
                prop_assert!(w.sw.device(RICH).unwrap().transport().needs_reset(), "{e}");
            }
        }
        let ram = &w.guests[RICH].ram;
        prop_assert!(ram.violations().is_empty(), "{:?}", ram.violations());
        // Writes land only in the used rings or in RX descriptors' buffers.
        for a in ram.writes() {
            let in_used = used.iter().any(|&u| a.ipa >= u && a.ipa + a.len <= u + 4 + 8 * 16 + 2);
            let in_rx = writable.iter().any(|&(b, l)| a.ipa >= b && a.ipa.checked_add(a.len).is_some_and(|e| e <= b.saturating_add(l)));
            prop_assert!(in_used || in_rx, "write {a:?}");
        }
        // The secure VM is unharmed.
        prop_assert!(w.sw.device(SECURE).unwrap().live());
        prop_assert!(w.guests[SECURE].ram.violations().is_empty());
    }
}
