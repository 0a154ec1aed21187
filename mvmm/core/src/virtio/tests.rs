//! Device-level tests: the transport as drivers program it, packets in and
//! out of the queues, and adversarial queues.

use super::mmio::{INT_CONFIG_CHANGE, INT_USED_BUFFER, WriteEffect, reg, status};
use super::queue::{Area, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, QueueError};
use super::testguest::{Guest, QSIZE, RAM_SIZE};
use super::vsock::*;
use std::boxed::Box;
use std::vec;

const BASE: u64 = 0x4000_0000;
const OTHER: u64 = 0x8000_0000;
const CID: u64 = 3;

fn setup() -> (VsockDevice, Guest) {
    let mut dev = VsockDevice::new(CID);
    let g = Guest::new(BASE, &mut dev);
    (dev, g)
}

fn hdr(op: u16, dst_cid: u64, dst_port: u32, src_port: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid,
        src_port,
        dst_port,
        kind: TYPE_STREAM,
        op,
        buf_alloc: 65536,
        ..Header::zero()
    }
}

fn broken(dev: &VsockDevice) -> bool {
    dev.read(reg::STATUS, 4).unwrap() as u32 & status::DEVICE_NEEDS_RESET != 0
        && dev.read(reg::INTERRUPT_STATUS, 4).unwrap() as u32 & INT_CONFIG_CHANGE != 0
}

#[test]
fn linux_probe_sequence_and_config_space() {
    let (dev, _g) = setup();
    assert_eq!(dev.read(0x100, 4), Ok(3));
    assert_eq!(dev.read(0x104, 4), Ok(0));
    assert_eq!(dev.read(0x100, 8), Ok(3));
    assert_eq!(dev.read(0x100, 1), Ok(3));
    assert_eq!(dev.read(0x102, 2), Ok(0));
    assert_eq!(dev.read(reg::CONFIG_GENERATION, 4), Ok(0));
    assert_eq!(dev.read(reg::SHM_LEN_LOW, 4), Ok(0xffff_ffff));
}

#[test]
fn bad_accesses_are_refused() {
    let (mut dev, _g) = setup();
    assert!(dev.read(0x101, 4).is_err(), "misaligned config");
    assert!(dev.read(0x104, 8).is_err(), "past the config space");
    assert!(dev.read(0x108, 4).is_err());
    assert!(dev.read(0x100, 3).is_err());
    assert!(
        dev.read(reg::MAGIC_VALUE, 2).is_err(),
        "registers are 32-bit"
    );
    assert!(dev.read(reg::VERSION + 1, 4).is_err());
    assert!(dev.read(reg::QUEUE_NOTIFY, 4).is_err(), "write-only");
    assert!(dev.read(0x0f0, 4).is_err(), "undefined");
    assert!(dev.read(u64::MAX - 3, 4).is_err());
    assert!(dev.write(reg::MAGIC_VALUE, 4, 0).is_err(), "read-only");
    assert!(dev.write(0x100, 4, 7).is_err(), "the CID is read-only");
    assert!(dev.write(reg::STATUS, 8, 0).is_err());
    assert_eq!(dev.read(0x100, 4), Ok(3));
}

#[test]
fn virtio_drivers_sequence_and_feature_checks() {
    // virtio-drivers: status ACK|DRIVER, read features 0/1, write them,
    // FEATURES_OK, queues with QueueReady, DRIVER_OK.
    let mut dev = VsockDevice::new(CID);
    let set = |d: &mut VsockDevice, o, v: u32| d.write(o, 4, u64::from(v)).unwrap();
    set(&mut dev, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    // No VERSION_1: FEATURES_OK does not stick.
    set(&mut dev, reg::DRIVER_FEATURES_SEL, 1);
    set(&mut dev, reg::DRIVER_FEATURES, 0);
    set(&mut dev, reg::STATUS, 0xb);
    assert_eq!(dev.read(reg::STATUS, 4), Ok(3));
    // DRIVER_OK without FEATURES_OK does not stick either.
    set(&mut dev, reg::STATUS, 7);
    assert_eq!(dev.read(reg::STATUS, 4), Ok(3));
    assert!(!dev.live());
    // An unoffered feature (indirect descriptors, bit 28) is refused.
    set(&mut dev, reg::DRIVER_FEATURES, 1);
    set(&mut dev, reg::DRIVER_FEATURES_SEL, 0);
    set(&mut dev, reg::DRIVER_FEATURES, 1 << 28);
    set(&mut dev, reg::STATUS, 0xb);
    assert_eq!(dev.read(reg::STATUS, 4), Ok(3));
    // A bit above 63 is refused.
    set(&mut dev, reg::DRIVER_FEATURES, 0);
    set(&mut dev, reg::DRIVER_FEATURES_SEL, 2);
    set(&mut dev, reg::DRIVER_FEATURES, 1);
    set(&mut dev, reg::STATUS, 0xb);
    assert_eq!(dev.read(reg::STATUS, 4), Ok(3));
    // Reset, then the right features.
    assert_eq!(dev.write(reg::STATUS, 4, 0), Ok(WriteEffect::Reset));
    let mut g = Guest::unprobed(BASE);
    g.probe(&mut dev);
    assert_eq!(dev.transport().negotiated(), super::mmio::F_VERSION_1);
    // Features are frozen after FEATURES_OK.
    set(&mut dev, reg::DRIVER_FEATURES_SEL, 0);
    set(&mut dev, reg::DRIVER_FEATURES, 2);
    assert_eq!(dev.transport().negotiated(), super::mmio::F_VERSION_1);
    // Queue layout is frozen while the queue is ready.
    set(&mut dev, reg::QUEUE_SEL, 1);
    set(&mut dev, reg::QUEUE_DESC_LOW, 0x1234);
    assert_eq!(dev.transport().queues[1].desc, g.queues[1].desc);
    // Queues past the third do not exist.
    set(&mut dev, reg::QUEUE_SEL, 3);
    assert_eq!(dev.read(reg::QUEUE_NUM_MAX, 4), Ok(0));
    assert_eq!(dev.write(reg::QUEUE_NOTIFY, 4, 7), Ok(WriteEffect::None));
    assert_eq!(
        dev.write(reg::QUEUE_NOTIFY, 4, 1),
        Ok(WriteEffect::Notify(1))
    );
}

#[test]
fn bad_queue_layout_needs_reset() {
    for (num, desc) in [
        (12u32, 0x4000_0000u32),
        (16, 0x4000_0008),
        (512, 0x4000_0000),
        (0, 0x4000_0000),
    ] {
        let mut dev = VsockDevice::new(CID);
        dev.write(reg::STATUS, 4, 3).unwrap();
        dev.write(reg::QUEUE_SEL, 4, 0).unwrap();
        dev.write(reg::QUEUE_NUM, 4, num.into()).unwrap();
        dev.write(reg::QUEUE_DESC_LOW, 4, desc.into()).unwrap();
        let effect = dev.write(reg::QUEUE_READY, 4, 1).unwrap();
        assert!(matches!(
            effect,
            WriteEffect::Failed(QueueError::BadConfig { .. })
        ));
        assert_eq!(dev.read(reg::QUEUE_READY, 4), Ok(0));
        assert!(broken(&dev));
        assert!(dev.take_raised());
        // A reset recovers.
        dev.write(reg::STATUS, 4, 0).unwrap();
        assert_eq!(dev.read(reg::STATUS, 4), Ok(0));
        assert_eq!(dev.read(reg::INTERRUPT_STATUS, 4), Ok(0));
    }
}

#[test]
fn tx_packet_is_taken_and_completed() {
    let (mut dev, mut g) = setup();
    let mut p = Box::new(Packet::new());
    assert_eq!(dev.take_tx(&mut g.ram, &mut p), Ok(false));
    g.send(hdr(op::RW, 4, 7100, 1000), b"hello");
    assert_eq!(dev.take_tx(&mut g.ram, &mut p), Ok(true));
    assert_eq!(p.header.op, op::RW);
    assert_eq!(p.payload(), b"hello");
    assert_eq!(g.reap_tx(), 1);
    assert!(dev.take_raised());
    assert_eq!(
        dev.read(reg::INTERRUPT_STATUS, 4),
        Ok(u64::from(INT_USED_BUFFER))
    );
    dev.write(reg::INTERRUPT_ACK, 4, 1).unwrap();
    assert!(!dev.interrupt_pending());
    assert_eq!(dev.take_tx(&mut g.ram, &mut p), Ok(false));
    assert!(g.ram.violations().is_empty());
}

#[test]
fn header_split_across_descriptors_and_single_descriptor_packets() {
    let (mut dev, mut g) = setup();
    let mut p = Box::new(Packet::new());
    let mut h = hdr(op::RW, 4, 1, 2);
    h.len = 3;
    let mut bytes = h.encode().to_vec();
    bytes.extend_from_slice(b"abc");
    g.add_chain(1, &[(10, false), (30, false), (7, false)], &bytes);
    g.add_chain(1, &[(47, false)], &bytes);
    for _ in 0..2 {
        assert_eq!(dev.take_tx(&mut g.ram, &mut p), Ok(true));
        assert_eq!(p.header, h);
        assert_eq!(p.payload(), b"abc");
    }
}

#[test]
fn no_interrupt_when_suppressed() {
    let (mut dev, mut g) = setup();
    g.ram.put_u16(g.queues[1].avail, 1);
    g.send(hdr(op::REQUEST, 4, 1, 2), &[]);
    let mut p = Box::new(Packet::new());
    assert_eq!(dev.take_tx(&mut g.ram, &mut p), Ok(true));
    assert!(!dev.take_raised());
}

#[test]
fn rx_waits_for_buffers_and_splits_data() {
    let (mut dev, mut g) = setup();
    let mut p = Box::new(Packet::new());
    let data: std::vec::Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    assert!(p.set(hdr(op::RW, CID, 5, 6), &data));
    assert_eq!(dev.deliver_rx(&mut g.ram, &mut p), Ok(Delivery::NoBuffer));
    assert!(g.ram.writes().is_empty());
    g.post_rx(1, 1024 + HEADER_LEN as u32);
    g.add_chain(0, &[(HEADER_LEN as u32, true), (1024, true)], &[]);
    assert_eq!(dev.deliver_rx(&mut g.ram, &mut p), Ok(Delivery::Partial));
    assert_eq!(dev.deliver_rx(&mut g.ram, &mut p), Ok(Delivery::Partial));
    assert_eq!(dev.deliver_rx(&mut g.ram, &mut p), Ok(Delivery::NoBuffer));
    g.post_rx(1, 4096);
    assert_eq!(dev.deliver_rx(&mut g.ram, &mut p), Ok(Delivery::Complete));
    let got = g.received();
    assert_eq!(got.len(), 3);
    let mut all = vec![];
    for (h, payload) in &got {
        assert_eq!(h.op, op::RW);
        all.extend_from_slice(payload);
    }
    assert_eq!(got[0].1.len(), 1024);
    assert_eq!(all, data);
    // A control packet needs only a header.
    p.set_control(hdr(op::CREDIT_UPDATE, CID, 5, 6));
    g.post_rx(1, HEADER_LEN as u32);
    assert_eq!(dev.deliver_rx(&mut g.ram, &mut p), Ok(Delivery::Complete));
    assert_eq!(g.received()[0].0.op, op::CREDIT_UPDATE);
}

/// Runs `take_tx` against a queue the test corrupted; checks the error, the
/// reset request, and that nothing was written or touched outside RAM.
fn expect_tx_error(g: &mut Guest, dev: &mut VsockDevice, check: impl Fn(&QueueError) -> bool) {
    let mut p = Box::new(Packet::new());
    g.ram.clear_log();
    let r = dev.take_tx(&mut g.ram, &mut p);
    assert!(matches!(&r, Err(e) if check(e)), "{r:?}");
    assert!(broken(dev));
    assert!(g.ram.violations().is_empty(), "{:?}", g.ram.violations());
    assert!(g.ram.writes().is_empty(), "{:?}", g.ram.writes());
    // A broken device touches nothing until reset.
    g.ram.clear_log();
    assert_eq!(dev.take_tx(&mut g.ram, &mut p), Ok(false));
    assert_eq!(dev.deliver_rx(&mut g.ram, &mut p), Ok(Delivery::NoBuffer));
    assert!(g.ram.log.borrow().is_empty());
    // And recovers after one.
    let mut fresh = Guest::unprobed(BASE);
    fresh.probe(dev);
    fresh.send(hdr(op::RW, 4, 1, 2), b"ok");
    assert_eq!(dev.take_tx(&mut fresh.ram, &mut p), Ok(true));
}

fn tx_case(build: impl Fn(&mut Guest), check: impl Fn(&QueueError) -> bool) {
    let (mut dev, mut g) = setup();
    build(&mut g);
    expect_tx_error(&mut g, &mut dev, check);
}

const RAM_END: u64 = BASE + RAM_SIZE as u64;

#[test]
fn adversarial_tx_descriptors() {
    let buf = BASE + 0x2_0000;
    // A loop: descriptor 0 points to itself.
    tx_case(
        |g| {
            g.put_desc(1, 0, buf, 44, DESC_F_NEXT, 0);
            g.publish(1, 0);
        },
        |e| matches!(e, QueueError::ChainTooLong { .. }),
    );
    // A longer loop 0 -> 1 -> 2 -> 0.
    tx_case(
        |g| {
            for i in 0..3 {
                g.put_desc(1, i, buf, 4, DESC_F_NEXT, (i + 1) % 3);
            }
            g.publish(1, 0);
        },
        |e| matches!(e, QueueError::ChainTooLong { .. }),
    );
    // A chain using every descriptor, then pointing past the table.
    tx_case(
        |g| {
            for i in 0..QSIZE {
                g.put_desc(1, i, buf, 4, DESC_F_NEXT, i + 1);
            }
            g.publish(1, 0);
        },
        |e| matches!(e, QueueError::IndexOutOfRange { index: 16, .. }),
    );
    // Head index past the table.
    tx_case(
        |g| g.publish(1, QSIZE),
        |e| matches!(e, QueueError::IndexOutOfRange { index: QSIZE, .. }),
    );
    for (addr, len) in [
        (u64::MAX - 15, 44u32), // wraps around u64
        (u64::MAX, 1),          // last byte of the address space
        (RAM_END - 20, 44),     // straddles the end of RAM
        (RAM_END, 44),          // just past it
        (BASE - 4, 44),         // starts below
        (OTHER, 44),            // the other VM's RAM
        (0, 44),                // address zero
        (BASE, u32::MAX),       // huge length
    ] {
        tx_case(
            |g| {
                g.put_desc(1, 0, addr, len, 0, 0);
                g.publish(1, 0);
            },
            |e| matches!(e, QueueError::Memory { area: Area::Buffer, fault } if fault.ipa == addr),
        );
    }
    // Wrong direction, zero length, indirect, unknown flags.
    for (flags, len, want) in [
        (DESC_F_WRITE, 44, "dir"),
        (0, 0, "zero"),
        (DESC_F_INDIRECT, 16, "indirect"),
        (0x80, 44, "flags"),
    ] {
        tx_case(
            |g| {
                g.put_desc(1, 0, buf, len, flags, 0);
                g.publish(1, 0);
            },
            |e| match want {
                "dir" => matches!(e, QueueError::WrongDirection { .. }),
                "zero" => matches!(e, QueueError::ZeroLength { .. }),
                "indirect" => matches!(e, QueueError::Indirect { .. }),
                _ => matches!(e, QueueError::UnknownFlags { .. }),
            },
        );
    }
    // Bad available index: more than a queue ahead.
    tx_case(
        |g| {
            let avail = g.queues[1].avail;
            g.ram.put_u16(avail + 2, QSIZE + 1);
        },
        |e| matches!(e, QueueError::AvailIndexJump { .. }),
    );
    tx_case(
        |g| {
            let avail = g.queues[1].avail;
            g.ram.put_u16(avail + 2, 0xffff);
        },
        |e| matches!(e, QueueError::AvailIndexJump { .. }),
    );
    // Too short, too long, header length disagreeing with the chain.
    tx_case(
        |g| {
            g.add_chain(1, &[(20, false)], &[]);
        },
        |e| matches!(e, QueueError::PacketTooShort { len: 20 }),
    );
    tx_case(
        |g| {
            g.add_chain(1, &[(44, false), (0x8000, false), (0x8001, false)], &[]);
        },
        |e| matches!(e, QueueError::PacketTooLong { .. }),
    );
    tx_case(
        |g| {
            let mut h = hdr(op::RW, 4, 1, 2);
            h.len = 10;
            g.add_chain(1, &[(44, false), (4, false)], &h.encode());
        },
        |e| {
            matches!(
                e,
                QueueError::LengthMismatch {
                    header: 10,
                    chain: 48
                }
            )
        },
    );
}

fn move_queue(g: &mut Guest, dev: &mut VsockDevice, q: u32, off: u64, value: u64) {
    dev.write(reg::STATUS, 4, 0).unwrap();
    g.probe(dev);
    dev.write(reg::QUEUE_SEL, 4, q.into()).unwrap();
    dev.write(reg::QUEUE_READY, 4, 0).unwrap();
    dev.write(off, 4, value & 0xffff_ffff).unwrap();
    dev.write(off + 4, 4, value >> 32).unwrap();
    dev.write(reg::QUEUE_READY, 4, 1).unwrap();
}

#[test]
fn rings_outside_ram() {
    // Each ring in the other VM, wrapping the address space, and
    // straddling the end of RAM.
    for (off, area, straddle) in [
        (reg::QUEUE_DESC_LOW, Area::DescriptorTable, RAM_END),
        (reg::QUEUE_DRIVER_LOW, Area::AvailableRing, RAM_END - 2),
        (reg::QUEUE_DEVICE_LOW, Area::UsedRing, RAM_END - 4),
    ] {
        for addr in [OTHER, u64::MAX - 15, straddle] {
            let (mut dev, mut g) = setup();
            g.send(hdr(op::RW, 4, 1, 2), b"x");
            move_queue(&mut g, &mut dev, 1, off, addr);
            if area != Area::AvailableRing {
                g.queues[1].avail_idx = 0;
                g.publish(1, 0);
            }
            expect_tx_error(
                &mut g,
                &mut dev,
                |e| matches!(e, QueueError::Memory { area: a, .. } if *a == area),
            );
        }
    }
}

#[test]
fn adversarial_rx_buffers() {
    type Case = (&'static [(u32, bool)], fn(&QueueError) -> bool);
    let cases: [Case; 3] = [
        (&[(100, false)], |e| {
            matches!(e, QueueError::WrongDirection { .. })
        }),
        (&[(40, true)], |e| {
            matches!(e, QueueError::RxBufferTooSmall { len: 40 })
        }),
        (&[(44, true)], |e| {
            matches!(e, QueueError::RxBufferTooSmall { len: 44 })
        }),
    ];
    for (bufs, check) in cases {
        let (mut dev, mut g) = setup();
        g.add_chain(0, bufs, &[]);
        let mut p = Box::new(Packet::new());
        p.set(hdr(op::RW, CID, 1, 2), b"data");
        g.ram.clear_log();
        let r = dev.deliver_rx(&mut g.ram, &mut p);
        assert!(matches!(&r, Err(e) if check(e)), "{r:?}");
        assert!(broken(&dev));
        assert!(g.ram.writes().is_empty());
        assert_eq!(p.remaining(), b"data", "the packet stays with the caller");
    }
    // An RX buffer in the other VM: refused before a byte is written.
    let (mut dev, mut g) = setup();
    g.put_desc(0, 0, OTHER, 4096, DESC_F_WRITE, 0);
    g.publish(0, 0);
    let mut p = Box::new(Packet::new());
    p.set_control(hdr(op::RST, CID, 1, 2));
    g.ram.clear_log();
    assert!(dev.deliver_rx(&mut g.ram, &mut p).is_err());
    assert!(g.ram.writes().is_empty() && g.ram.violations().is_empty());
}

#[test]
fn indexes_wrap_around() {
    let (mut dev, mut g) = setup();
    let mut p = Box::new(Packet::new());
    for i in 0..70_000u32 {
        g.send(hdr(op::RW, 4, 1, 2), &i.to_le_bytes());
        assert_eq!(dev.take_tx(&mut g.ram, &mut p), Ok(true));
        assert_eq!(p.payload(), i.to_le_bytes());
        assert_eq!(g.reap_tx(), 1);
        if i % 1000 == 0 {
            g.ram.clear_log();
        }
    }
    assert!(g.ram.violations().is_empty());
}
