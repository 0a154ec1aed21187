//! Host tests of the emulated virtio-input device, driven as Linux's
//! virtio_input driver drives it, and with hostile queues.

use super::input::{InputDevice, InputEffect};
use super::mem::testing::TestRam;
use super::mmio::{reg, status};
use super::queue::QueueError;
use super::testguest::{Guest, Registers};
use crate::input::codes::{EV_KEY, EV_SYN, SYN_REPORT};
use crate::input::config::select;
use crate::input::{Event, EventQueue, RICH_INPUT};

const BASE: u64 = 0x5000_0000;

/// Register access with a scratch memory (the probe sequence touches none).
impl Registers for InputDevice {
    fn read_reg(&mut self, off: u64) -> u32 {
        self.read(off, 4).unwrap() as u32
    }
    fn write_reg(&mut self, off: u64, v: u32) {
        let mut none = TestRam::new(0x1000, 0x1000);
        self.write(&mut none, off, 4, u64::from(v)).unwrap();
    }
}

fn probed() -> (InputDevice, Guest) {
    let mut dev = InputDevice::new(RICH_INPUT);
    let mut guest = Guest::unprobed(BASE);
    guest.probe_with(&mut dev);
    assert!(dev.live());
    (dev, guest)
}

fn key(code: u16, value: u32) -> Event {
    Event::new(EV_KEY, code, value)
}

fn waiting(events: &[Event]) -> EventQueue {
    let mut q = EventQueue::new();
    for &e in events {
        q.push(e);
    }
    q
}

#[test]
fn linux_sees_a_two_queue_input_device_with_its_configuration() {
    let (mut dev, _guest) = probed();
    assert_eq!(dev.read(reg::DEVICE_ID, 4), Ok(18));
    dev.write_reg(reg::QUEUE_SEL, 2);
    assert_eq!(dev.read_reg(reg::QUEUE_NUM_MAX), 0, "no third queue");
    let mut ram = TestRam::new(BASE, 0x1000);
    // select = EV_BITS, subsel = EV_KEY: a non-empty bitmap.
    dev.write(&mut ram, reg::CONFIG, 1, u64::from(select::EV_BITS))
        .unwrap();
    dev.write(&mut ram, reg::CONFIG + 1, 1, u64::from(EV_KEY))
        .unwrap();
    assert!(dev.read(reg::CONFIG + 2, 1).unwrap() > 0);
    // The name.
    dev.write(&mut ram, reg::CONFIG, 1, u64::from(select::ID_NAME))
        .unwrap();
    dev.write(&mut ram, reg::CONFIG + 1, 1, 0).unwrap();
    let size = dev.read(reg::CONFIG + 2, 1).unwrap() as usize;
    let name: Vec<u8> = (0..size)
        .map(|i| dev.read(reg::CONFIG + 8 + i as u64, 1).unwrap() as u8)
        .collect();
    assert_eq!(name, RICH_INPUT.name.as_bytes());
    // Only select and subsel are writable.
    assert!(dev.write(&mut ram, reg::CONFIG + 2, 1, 9).is_err());
    // A reset clears the selection.
    assert_eq!(
        dev.write(&mut ram, reg::STATUS, 4, 0),
        Ok(InputEffect::Reset)
    );
    assert_eq!(dev.read(reg::CONFIG, 1), Ok(0));
}

#[test]
fn events_fill_the_buffers_the_driver_posted_and_the_rest_wait() {
    let (mut dev, mut guest) = probed();
    for _ in 0..4 {
        guest.add_chain(0, &[(8, true)], &[]);
    }
    let events = [
        key(30, 1),
        Event::new(EV_SYN, SYN_REPORT, 0),
        key(30, 0),
        Event::new(EV_SYN, SYN_REPORT, 0),
        key(48, 1),
        Event::new(EV_SYN, SYN_REPORT, 0),
    ];
    let mut q = waiting(&events);
    assert_eq!(dev.deliver(&mut guest.ram, &mut q), Ok(4));
    assert!(dev.take_raised(), "the driver is interrupted");
    assert_eq!(q.len(), 2, "two events wait for buffers");
    for expected in &events[..4] {
        let (_, bytes) = guest.pop_used(0).unwrap();
        assert_eq!(Event::from_bytes(bytes.try_into().unwrap()), *expected);
    }
    assert_eq!(dev.deliver(&mut guest.ram, &mut q), Ok(0));
    assert!(!dev.take_raised());
    guest.add_chain(0, &[(8, true)], &[]);
    guest.add_chain(0, &[(8, true)], &[]);
    assert_eq!(dev.deliver(&mut guest.ram, &mut q), Ok(2));
    assert!(q.is_empty());
    for expected in &events[4..] {
        let (_, bytes) = guest.pop_used(0).unwrap();
        assert_eq!(Event::from_bytes(bytes.try_into().unwrap()), *expected);
    }
}

#[test]
fn a_device_the_driver_has_not_set_up_takes_nothing() {
    let mut dev = InputDevice::new(RICH_INPUT);
    let mut ram = TestRam::new(BASE, 0x1000);
    let mut q = waiting(&[key(2, 1)]);
    assert_eq!(dev.deliver(&mut ram, &mut q), Ok(0));
    assert_eq!(q.len(), 1);
}

#[test]
fn status_buffers_come_back_unread() {
    let (mut dev, mut guest) = probed();
    let head = guest.add_chain(1, &[(8, false)], &key(0x11, 1).to_bytes());
    assert_eq!(
        dev.write(&mut guest.ram, reg::QUEUE_NOTIFY, 4, 1),
        Ok(InputEffect::None)
    );
    let (id, bytes) = guest.pop_used(1).unwrap();
    assert_eq!((id, bytes.len()), (head, 0));
    assert_eq!(
        dev.write(&mut guest.ram, reg::QUEUE_NOTIFY, 4, 0),
        Ok(InputEffect::Buffers)
    );
}

#[test]
fn hostile_event_buffers_break_the_device_not_mvmm() {
    // Too small, read-only, outside the VM's RAM.
    type Post = Box<dyn Fn(&mut Guest)>;
    let cases: [(&str, Post); 3] = [
        (
            "4-byte buffer",
            Box::new(|g: &mut Guest| {
                g.add_chain(0, &[(4, true)], &[]);
            }),
        ),
        (
            "device-readable buffer",
            Box::new(|g: &mut Guest| {
                g.add_chain(0, &[(8, false)], &[]);
            }),
        ),
        (
            "buffer outside RAM",
            Box::new(|g: &mut Guest| {
                g.put_desc(0, 0, 0x4000_0000, 8, 2, 0);
                g.publish(0, 0);
            }),
        ),
    ];
    for (what, post) in cases {
        let (mut dev, mut guest) = probed();
        post(&mut guest);
        let mut q = waiting(&[key(2, 1), key(2, 0)]);
        let err = dev.deliver(&mut guest.ram, &mut q).unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::RxBufferTooSmall { .. }
                    | QueueError::WrongDirection { .. }
                    | QueueError::Memory { .. }
            ),
            "{what}: {err:?}"
        );
        assert_ne!(
            dev.read_reg(reg::STATUS) & status::DEVICE_NEEDS_RESET,
            0,
            "{what}: the device needs a reset"
        );
        assert!(guest.ram.violations().is_empty() || what == "buffer outside RAM");
        // Nothing more is delivered until the driver resets the device.
        assert_eq!(dev.deliver(&mut guest.ram, &mut q), Ok(0), "{what}");
        assert!(!q.is_empty(), "{what}: the events still wait");
    }
}
