//! Input owned by mvmm: which VM a physical key or touch goes to, and the
//! virtio-input device a guest sees.
//!
//! Only mvmm drives the physical keyboard and tablet (virtio-input devices in
//! virtio-mmio slots no VM maps). Each event it reads goes through a
//! [`Router`], which follows the trusted path's focus:
//!
//! - While the secure VM holds the path, every event goes to it alone; the
//!   rich VM is not told that input happened, not even by an interrupt.
//! - Otherwise events go to the rich VM.
//! - **A key or a touch belongs to the side that saw it pressed.** Its
//!   repeats and its release go there, or nowhere: the rich VM never gets the
//!   release of a key pressed on the trusted path (which would tell it when
//!   the user typed), and the secure VM never gets the tail of a press the
//!   rich VM saw. When focus leaves the rich VM while it holds keys or a
//!   contact, it gets their releases at once (so nothing stays pressed or
//!   auto-repeats in Linux), and the real releases later are dropped.
//! - Motion of a contact whose side lost the focus goes nowhere until the
//!   contact ends. Event types other than keys, absolute axes and reports
//!   (scan codes, ...) are dropped.
//! - Reports stay whole: a SYN_REPORT goes to each side that got events since
//!   the previous one, and only to those.
//!
//! Events wait in a bounded [`EventQueue`] per side until the side's device
//! takes them; when one is full, new events are dropped and the side gets a
//! SYN_DROPPED (as Linux's evdev expects) before its next events.
//!
//! [`config`] answers a guest's reads of a virtio-input device's
//! configuration space (virtio 1.2, 5.8.4).

pub mod config;

pub use config::{InputConfig, Profile, RICH_INPUT, SECURE_INPUT};

/// Event types and codes this module acts on (Linux input-event-codes.h).
pub mod codes {
    pub const EV_SYN: u16 = 0;
    pub const EV_KEY: u16 = 1;
    pub const EV_ABS: u16 = 3;
    pub const SYN_REPORT: u16 = 0;
    pub const SYN_DROPPED: u16 = 3;
    pub const ABS_X: u16 = 0;
    pub const ABS_Y: u16 = 1;
    pub const BTN_LEFT: u16 = 0x110;
    pub const BTN_TOUCH: u16 = 0x14a;
    /// Key codes are below this (KEY_MAX + 1).
    pub const KEY_CNT: u16 = 0x300;
}

use codes::*;

/// One `virtio_input_event`: type, code, value (little-endian on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: u16,
    pub code: u16,
    pub value: u32,
}

impl Event {
    /// Bytes in the wire format.
    pub const LEN: usize = 8;

    pub const fn new(kind: u16, code: u16, value: u32) -> Event {
        Event { kind, code, value }
    }

    /// Parses the wire format.
    pub fn from_bytes(b: [u8; 8]) -> Event {
        Event {
            kind: u16::from_le_bytes([b[0], b[1]]),
            code: u16::from_le_bytes([b[2], b[3]]),
            value: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// The wire format.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0; 8];
        b[..2].copy_from_slice(&self.kind.to_le_bytes());
        b[2..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    const fn syn() -> Event {
        Event::new(EV_SYN, SYN_REPORT, 0)
    }
}

/// The two sides input can go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Rich,
    Secure,
}

impl Side {
    const fn index(self) -> usize {
        match self {
            Side::Rich => 0,
            Side::Secure => 1,
        }
    }
}

/// Events waiting for one side's device.
pub const QUEUE_LEN: usize = 128;

/// A bounded queue of events for one side.
#[derive(Clone, Debug)]
///
/// # Invariants
/// `len <= QUEUE_LEN`, `head < QUEUE_LEN`; the events are
/// `ring[(head + i) % QUEUE_LEN]` for `i < len`.
pub struct EventQueue {
    ring: [Event; QUEUE_LEN],
    head: usize,
    len: usize,
    dropped: bool,
}

impl Default for EventQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl EventQueue {
    pub const fn new() -> Self {
        EventQueue {
            ring: [Event::new(0, 0, 0); QUEUE_LEN],
            head: 0,
            len: 0,
            dropped: false,
        }
    }

    fn push_back(&mut self, event: Event) {
        if self.len < QUEUE_LEN {
            if let Some(slot) = self.ring.get_mut((self.head + self.len) % QUEUE_LEN) {
                *slot = event;
            }
            self.len += 1;
        }
    }

    pub(crate) fn push(&mut self, event: Event) {
        // Keep room for the SYN_DROPPED that follows an overflow.
        if self.dropped || self.len + 1 >= QUEUE_LEN {
            if !self.dropped {
                self.dropped = true;
                self.push_back(Event::new(EV_SYN, SYN_DROPPED, 0));
            }
            return;
        }
        self.push_back(event);
    }

    /// The next event for the device, oldest first.
    pub fn pop(&mut self) -> Option<Event> {
        if self.len == 0 {
            self.dropped = false;
            return None;
        }
        let event = self.ring.get(self.head).copied();
        self.head = (self.head + 1) % QUEUE_LEN;
        self.len -= 1;
        if self.len == 0 {
            // After the queue drains, events flow again (the guest resyncs
            // its state on the SYN_DROPPED it just took).
            self.dropped = false;
        }
        event
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything waiting (the side's device was reset, or focus
    /// moved away from a side that has not taken its events yet).
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.dropped = false;
    }
}

/// Keys, one bit each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeySet([u64; (KEY_CNT as usize) / 64]);

impl KeySet {
    const fn new() -> Self {
        KeySet([0; (KEY_CNT as usize) / 64])
    }
    fn slot(code: u16) -> Option<(usize, u64)> {
        (code < KEY_CNT).then(|| (usize::from(code / 64), 1u64 << (code % 64)))
    }
    fn contains(&self, code: u16) -> bool {
        Self::slot(code).is_some_and(|(i, bit)| self.0.get(i).is_some_and(|w| w & bit != 0))
    }
    fn set(&mut self, code: u16, on: bool) {
        if let Some((i, bit)) = Self::slot(code)
            && let Some(word) = self.0.get_mut(i)
        {
            if on {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }
    fn codes(&self) -> impl Iterator<Item = u16> + '_ {
        (0..KEY_CNT).filter(|c| self.contains(*c))
    }
}

/// The routing of physical input between the rich and the secure VM.
///
/// # Invariants
/// A key code is in at most one side's `held` set; `touch_owner` is the side
/// that saw the current contact start, if one is down and still owned.
#[derive(Clone, Debug)]
pub struct Router {
    focus: Side,
    held: [KeySet; 2],
    touch_owner: Option<Side>,
    /// The button code the current contact went down with (BTN_TOUCH or
    /// BTN_LEFT): its release is sent with the same code.
    touch_code: u16,
    /// A contact is down that no side owns any more (focus moved while it
    /// was down): its motion and its release go nowhere.
    orphan_contact: bool,
    /// Sides that got events since the last SYN_REPORT.
    in_report: [bool; 2],
    queues: [EventQueue; 2],
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// Input goes to the rich VM until the secure VM takes the path.
    pub const fn new() -> Router {
        Router {
            focus: Side::Rich,
            held: [KeySet::new(), KeySet::new()],
            touch_owner: None,
            touch_code: BTN_TOUCH,
            orphan_contact: false,
            in_report: [false; 2],
            queues: [EventQueue::new(), EventQueue::new()],
        }
    }

    /// Who gets new input.
    pub fn focus(&self) -> Side {
        self.focus
    }

    /// The events waiting for `side`.
    pub fn queue(&mut self, side: Side) -> &mut EventQueue {
        &mut self.queues[side.index()]
    }

    /// Moves the focus. Leaving the rich VM releases what it holds (keys and
    /// contact) in one report; leaving the secure VM drops its unread events
    /// and forgets its held keys (their releases will go nowhere).
    pub fn set_focus(&mut self, to: Side) {
        if to == self.focus {
            return;
        }
        let from = self.focus;
        self.focus = to;
        if self.touch_owner.is_some_and(|owner| owner == from) {
            self.orphan_contact = true;
        }
        match from {
            Side::Rich => {
                let rich = Side::Rich.index();
                let held = self.held[rich];
                let mut any = false;
                for code in held.codes() {
                    self.queues[rich].push(Event::new(EV_KEY, code, 0));
                    any = true;
                }
                self.held[rich] = KeySet::new();
                if self.touch_owner == Some(Side::Rich) {
                    self.queues[rich].push(Event::new(EV_KEY, self.touch_code, 0));
                    self.touch_owner = None;
                    any = true;
                }
                if any || self.in_report[rich] {
                    self.queues[rich].push(Event::syn());
                }
                self.in_report[rich] = false;
            }
            Side::Secure => {
                let secure = Side::Secure.index();
                self.queues[secure].clear();
                self.held[secure] = KeySet::new();
                if self.touch_owner == Some(Side::Secure) {
                    self.touch_owner = None;
                }
                self.in_report[secure] = false;
            }
        }
    }

    fn send(&mut self, side: Side, event: Event) {
        self.queues[side.index()].push(event);
        self.in_report[side.index()] = true;
    }

    /// One event read from a physical device.
    pub fn route(&mut self, event: Event) {
        match (event.kind, event.code) {
            (EV_SYN, SYN_REPORT) => {
                for side in [Side::Rich, Side::Secure] {
                    if core::mem::take(&mut self.in_report[side.index()]) {
                        self.queues[side.index()].push(event);
                    }
                }
            }
            (EV_KEY, BTN_TOUCH | BTN_LEFT) => {
                if event.value == 0 {
                    self.orphan_contact = false;
                    if let Some(owner) = self.touch_owner.take() {
                        self.send(owner, event);
                    }
                } else if !self.orphan_contact {
                    // A new contact belongs to the focus. A second "down"
                    // while one is owned keeps the owner.
                    if self.touch_owner.is_none() {
                        self.touch_code = event.code;
                    }
                    let owner = *self.touch_owner.get_or_insert(self.focus);
                    self.send(owner, event);
                }
            }
            (EV_KEY, code) => {
                let owner = [Side::Rich, Side::Secure]
                    .into_iter()
                    .find(|s| self.held[s.index()].contains(code));
                match (event.value, owner) {
                    // Press: belongs to the focus (a press of a key already
                    // held elsewhere moves it: that side never sees it again).
                    (1, _) => {
                        if let Some(other) = owner {
                            self.held[other.index()].set(code, false);
                        }
                        self.held[self.focus.index()].set(code, true);
                        self.send(self.focus, event);
                    }
                    (0, Some(side)) => {
                        self.held[side.index()].set(code, false);
                        self.send(side, event);
                    }
                    (_, Some(side)) if side == self.focus => self.send(side, event),
                    // Releases and repeats of keys nobody owns (pressed
                    // before a focus change, or never seen): dropped.
                    _ => {}
                }
            }
            // Motion of a contact whose owner lost the focus goes nowhere;
            // any other motion goes to the focus (the owner of a contact is
            // always the focus: a focus change orphans the contact).
            (EV_ABS, _) if self.orphan_contact => {}
            (EV_ABS, _) => self.send(self.focus, event),
            // Anything else (EV_MSC scan codes, which would time keys for
            // the rich VM, EV_REL, ...) is not needed by either side.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
