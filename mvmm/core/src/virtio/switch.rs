//! The vsock switch: moves packets between the VMs' vsock devices under the
//! board's policy.
//!
//! For a packet VM A queued on its TX ring, the switch
//! - overwrites `src_cid` with A's CID (a guest cannot claim another),
//! - finds the VM that owns `dst_cid` (the host CID 2, A's own CID and
//!   unknown CIDs are answered with a reset),
//! - lets a connection request through only when a [`Rule`] allows
//!   (A, destination VM, destination port), and remembers the connection,
//! - lets every other operation through only on a connection it knows
//!   (RESPONSE only from the side that was asked), and answers anything
//!   else with a reset addressed as if the destination had sent it.
//!
//! # No sender waits on its receiver
//! The switch takes every packet off a sender's TX ring when it pumps (the
//! TX buffer is used at once, so a driver that waits for its TX buffer, as
//! `virtio-drivers` does, waits for one trap and never for the other VM).
//! A packet whose destination has no RX buffer waits in that
//! destination's queue, which is bounded ([`QUEUE_BYTES`],
//! [`QUEUE_PACKETS`]): one connection may have at most
//! [`CONNECTION_BYTES`] waiting towards one side, and a sender may send
//! only what the receiver's credit allows (virtio-vsock's `buf_alloc` and
//! `fwd_cnt`, virtio 1.2 section 5.10.6.3). A connection that breaks a
//! bound (a peer that does not drain, a sender past its credit) is reset:
//! both sides get a reset and its waiting packets are dropped.
//!
//! # Resets are never lost
//! A connection the switch ends (a device reset, a refused packet on it, a
//! bound broken) stays in the table, marked closing, with one flag per side
//! that still has to hear of it; the reset is delivered before any packet
//! waiting for that side. Nothing about connections is kept in a slot
//! array that can overflow. Only the reset that answers a refused packet
//! outside any connection goes into a small per-VM ring, and is lost (and
//! counted) when that VM leaves it full: it concerns the VM's own bad
//! packet, and no connection of its peer.
//!
//! # Bounded work
//! One [`Switch::pump_for`] copies about [`PUMP_BYTES`] and moves at most
//! [`PUMP_PACKETS`] packets, starting with the VM that trapped, and says
//! when work is left ([`PumpReport::more`]); the caller releases the lock
//! between pumps so that another VM's trap is not held up behind a storm.

use super::mem::GuestMemory;
use super::mmio::{BadAccess, WriteEffect};
use super::queue::QueueError;
use super::vsock::{Header, MAX_PAYLOAD, Packet, TYPE_STREAM, VsockDevice, op};
use crate::partition::MAX_VMS;

/// Connections the switch tracks at once (all VMs together), closing ones
/// included.
pub const MAX_CONNECTIONS: usize = 64;
/// Policy rules.
pub const MAX_RULES: usize = 32;
/// Resets answering refused packets that wait for one VM's RX buffers.
pub const ANSWER_SLOTS: usize = 16;
/// Payload bytes waiting for one VM's RX buffers, all connections.
pub const QUEUE_BYTES: usize = 128 * 1024;
/// Packets waiting for one VM's RX buffers, all connections.
pub const QUEUE_PACKETS: usize = 256;
/// Payload bytes one connection may have waiting towards one side: the
/// whole queue of that side. A smaller share reset honest streams (a Linux
/// receiver grants 256 KiB of credit and refills its RX ring late under
/// load), and a queue only ever holds packets *for* one VM, so a
/// connection that fills it crowds out only that VM's own connections.
pub const CONNECTION_BYTES: u32 = QUEUE_BYTES as u32;
/// Payload bytes one pump copies before it stops (it always moves at least
/// one packet, so it may copy up to [`MAX_PAYLOAD`] more).
pub const PUMP_BYTES: usize = 64 * 1024;
/// Packets one pump moves (taken and delivered) before it stops.
pub const PUMP_PACKETS: usize = 64;
/// Pumps one trap runs at most (the lock is released between them); work
/// left after them waits for the next trap.
pub const TRAP_PUMPS: usize = 4;

/// VM `from` may connect to port `port` of VM `to` (VM indexes in the
/// board's order). Replies on that connection flow both ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub from: usize,
    pub to: usize,
    pub port: u32,
}

/// A switch configuration mistake (caught at boot, from board data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    VmIndex(usize),
    /// CIDs 0, 1 and 2 and `u32::MAX` (any) are reserved.
    ReservedCid(u64),
    DuplicateCid(u64),
    TooManyRules,
}

/// Why the switch answered a packet with a reset (or dropped a reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No VM has this CID (includes the host, 2, and the sender itself).
    UnknownCid(u64),
    /// The destination's driver is not running.
    NotRunning(u64),
    /// No rule allows this request.
    Policy { to: u64, port: u32 },
    /// An operation on a connection the switch does not know.
    NoConnection { op: u16 },
    /// A socket type other than stream.
    BadType(u16),
    /// An unknown operation.
    BadOp(u16),
    /// Payload on an operation that carries none.
    PayloadOnControl { op: u16 },
    /// The connection table is full.
    TableFull,
    /// A reset for an unknown connection: dropped, not answered.
    StrayReset,
    /// Data beyond the credit the receiver gave (`buf_alloc` minus bytes
    /// in flight): the connection is reset.
    Credit {
        in_flight: u32,
        len: u32,
        buf_alloc: u32,
    },
    /// The receiver does not drain: the connection already has
    /// [`CONNECTION_BYTES`] waiting for it, or its queue is full. The
    /// connection is reset.
    NotDraining { waiting: u32, len: u32 },
}

/// What a [`Switch::pump`] did: interrupts to inject and things to log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PumpReport {
    /// Bit `i` set: inject VM `i`'s vsock interrupt.
    pub interrupts: u32,
    /// Queue faults: that VM's device now needs a reset.
    pub faults: [Option<QueueError>; MAX_VMS],
    /// Packets refused in this pump, and the last reason (VM, why).
    pub refused: u32,
    pub last_refusal: Option<(usize, Refusal)>,
    /// True when the pump stopped with work left (call it again later).
    pub more: bool,
    /// Payload bytes copied and packets moved (taken plus delivered).
    pub bytes: usize,
    pub packets: usize,
}

impl PumpReport {
    pub fn needs_interrupt(&self, vm: usize) -> bool {
        vm < 32 && self.interrupts & (1 << vm) != 0
    }

    /// Adds a later pump's report to this one.
    pub fn merge(&mut self, next: &PumpReport) {
        self.interrupts |= next.interrupts;
        for (slot, fault) in self.faults.iter_mut().zip(next.faults) {
            *slot = slot.or(fault);
        }
        self.refused = self.refused.saturating_add(next.refused);
        if next.last_refusal.is_some() {
            self.last_refusal = next.last_refusal;
        }
        self.more = next.more;
        self.bytes = self.bytes.saturating_add(next.bytes);
        self.packets = self.packets.saturating_add(next.packets);
    }
}

/// One side of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct End {
    vm: usize,
    port: u32,
    /// The credit this side last advertised.
    buf_alloc: u32,
    fwd_cnt: u32,
    /// Payload bytes this side sent on the connection.
    tx_cnt: u32,
    /// Payload bytes waiting in the switch for this side.
    waiting: u32,
    /// This side has still to be told the connection was reset.
    reset_owed: bool,
}

impl End {
    const fn new(vm: usize, port: u32) -> Self {
        End {
            vm,
            port,
            buf_alloc: 0,
            fwd_cnt: 0,
            tx_cnt: 0,
            waiting: 0,
            reset_owed: false,
        }
    }
}

const CLIENT: usize = 0;
const SERVER: usize = 1;

/// A connection: `ends[CLIENT]` sent the request to `ends[SERVER]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Connection {
    ends: [End; 2],
    established: bool,
    /// Reset by the switch or a side; kept until every owed reset is out.
    closing: bool,
    /// Tells this connection from an earlier one in the same slot.
    generation: u32,
}

impl Connection {
    fn side_of(&self, vm: usize, port: u32) -> Option<usize> {
        self.ends.iter().position(|e| e.vm == vm && e.port == port)
    }

    fn is(&self, a: usize, a_port: u32, b: usize, b_port: u32) -> bool {
        let [c, s] = self.ends;
        (c.vm == a && c.port == a_port && s.vm == b && s.port == b_port)
            || (c.vm == b && c.port == b_port && s.vm == a && s.port == a_port)
    }
}

/// A packet waiting for its destination's RX buffers: its header, and its
/// payload at `offset` in the destination's byte ring.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    header: Header,
    connection: usize,
    generation: u32,
    offset: u32,
    sent: u32,
}

impl Waiting {
    const fn empty() -> Self {
        Waiting {
            header: Header::zero(),
            connection: 0,
            generation: 0,
            offset: 0,
            sent: 0,
        }
    }
}

/// What waits for one VM: packets (payload in a byte ring, allocated in
/// order and freed in order) and answers to its refused packets.
///
/// # Invariants
/// `len <= QUEUE_PACKETS`; entries `head..head + len` (mod) are in
/// allocation order; every payload lies inside `bytes`; when the queue is
/// not empty the used bytes run from the oldest entry's offset up to
/// `tail`, wrapping at most once. `answers_len <= ANSWER_SLOTS`.
#[derive(Clone, Debug)]
struct Queue {
    entries: [Waiting; QUEUE_PACKETS],
    head: usize,
    len: usize,
    tail: usize,
    bytes: [u8; QUEUE_BYTES],
    answers: [Header; ANSWER_SLOTS],
    answers_head: usize,
    answers_len: usize,
}

impl Queue {
    const fn new() -> Self {
        Queue {
            entries: [Waiting::empty(); QUEUE_PACKETS],
            head: 0,
            len: 0,
            tail: 0,
            bytes: [0; QUEUE_BYTES],
            answers: [Header::zero(); ANSWER_SLOTS],
            answers_head: 0,
            answers_len: 0,
        }
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
        self.tail = 0;
        self.answers_len = 0;
    }

    fn front(&self) -> Option<&Waiting> {
        if self.len == 0 {
            return None;
        }
        self.entries.get(self.head)
    }

    fn pop(&mut self) {
        if self.len > 0 {
            self.head = (self.head + 1) % QUEUE_PACKETS;
            self.len -= 1;
        }
        if self.len == 0 {
            self.tail = 0;
        }
    }

    /// Where `n` payload bytes can go, if anywhere.
    fn room(&self, n: usize) -> Option<usize> {
        if self.len >= QUEUE_PACKETS {
            return None;
        }
        let Some(start) = self.front().map(|w| w.offset as usize) else {
            return (n <= QUEUE_BYTES).then_some(0);
        };
        if n == 0 {
            return Some(self.tail);
        }
        if self.tail >= start {
            // Used: start..tail. Free: tail..end, then 0..start (strictly
            // below start, so a full ring never looks empty).
            if self.tail + n <= QUEUE_BYTES {
                Some(self.tail)
            } else if n < start {
                Some(0)
            } else {
                None
            }
        } else {
            // Used: start..end and 0..tail. Free: tail..start.
            (self.tail + n < start).then_some(self.tail)
        }
    }

    fn push(&mut self, header: Header, payload: &[u8], connection: usize, generation: u32) -> bool {
        let Some(offset) = self.room(payload.len()) else {
            return false;
        };
        let Some(dst) = self.bytes.get_mut(offset..offset + payload.len()) else {
            return false;
        };
        dst.copy_from_slice(payload);
        let index = (self.head + self.len) % QUEUE_PACKETS;
        let Some(slot) = self.entries.get_mut(index) else {
            return false;
        };
        *slot = Waiting {
            header,
            connection,
            generation,
            offset: offset as u32,
            sent: 0,
        };
        self.len += 1;
        self.tail = offset + payload.len();
        true
    }

    fn push_answer(&mut self, h: Header) -> bool {
        if self.answers_len >= ANSWER_SLOTS {
            return false;
        }
        let slot = (self.answers_head + self.answers_len) % ANSWER_SLOTS;
        match self.answers.get_mut(slot) {
            Some(s) => {
                *s = h;
                self.answers_len += 1;
                true
            }
            None => false,
        }
    }
}

/// Budget of one pump.
#[derive(Clone, Copy, Debug)]
struct Budget {
    bytes: usize,
    packets: usize,
}

impl Budget {
    fn left(&self) -> bool {
        self.bytes > 0 && self.packets > 0
    }

    fn spend(&mut self, bytes: usize, report: &mut PumpReport) {
        self.bytes = self.bytes.saturating_sub(bytes);
        self.packets = self.packets.saturating_sub(1);
        report.bytes = report.bytes.saturating_add(bytes);
        report.packets = report.packets.saturating_add(1);
    }
}

/// The vsock switch of all VMs.
#[derive(Clone, Debug)]
pub struct Switch {
    devices: [Option<VsockDevice>; MAX_VMS],
    queues: [Queue; MAX_VMS],
    /// The packet being taken off a TX ring.
    scratch: Packet,
    rules: [Option<Rule>; MAX_RULES],
    connections: [Option<Connection>; MAX_CONNECTIONS],
    next_generation: u32,
    /// Sender served first by the next pump (fairness).
    next_sender: usize,
    /// Answers to refused packets lost because the sender's answer ring
    /// was full (the sender was not draining).
    pub lost_answers: u32,
    /// Connections reset because a bound was broken.
    pub resets: u32,
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}

impl Switch {
    /// A switch with no VMs and no rules (a `static` initialiser).
    pub const fn new() -> Self {
        Switch {
            devices: [None; MAX_VMS],
            queues: [const { Queue::new() }; MAX_VMS],
            scratch: Packet::new(),
            rules: [None; MAX_RULES],
            connections: [None; MAX_CONNECTIONS],
            next_generation: 0,
            next_sender: 0,
            lost_answers: 0,
            resets: 0,
        }
    }

    /// Gives VM `vm` a vsock device with CID `cid`.
    pub fn add_vm(&mut self, vm: usize, cid: u64) -> Result<(), ConfigError> {
        if cid <= super::vsock::CID_HOST || cid >= u64::from(u32::MAX) {
            return Err(ConfigError::ReservedCid(cid));
        }
        if self.vm_of_cid(cid).is_some() {
            return Err(ConfigError::DuplicateCid(cid));
        }
        let slot = self.devices.get_mut(vm).ok_or(ConfigError::VmIndex(vm))?;
        *slot = Some(VsockDevice::new(cid));
        Ok(())
    }

    /// Adds a policy rule.
    pub fn allow(&mut self, rule: Rule) -> Result<(), ConfigError> {
        for vm in [rule.from, rule.to] {
            if vm >= MAX_VMS {
                return Err(ConfigError::VmIndex(vm));
            }
        }
        let slot = self
            .rules
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(ConfigError::TooManyRules)?;
        *slot = Some(rule);
        Ok(())
    }

    pub fn device(&self, vm: usize) -> Option<&VsockDevice> {
        self.devices.get(vm).and_then(Option::as_ref)
    }

    fn device_mut(&mut self, vm: usize) -> Option<&mut VsockDevice> {
        self.devices.get_mut(vm).and_then(Option::as_mut)
    }

    fn cid(&self, vm: usize) -> u64 {
        self.device(vm).map_or(0, VsockDevice::cid)
    }

    fn live(&self, vm: usize) -> bool {
        self.device(vm).is_some_and(VsockDevice::live)
    }

    fn vm_of_cid(&self, cid: u64) -> Option<usize> {
        self.devices
            .iter()
            .position(|d| d.as_ref().is_some_and(|d| d.cid() == cid))
    }

    /// Connections in the table (closing ones included).
    pub fn connections(&self) -> usize {
        self.connections.iter().flatten().count()
    }

    /// Open (not closing) connections with VM `vm` on one side.
    pub fn open_connections(&self, vm: usize) -> usize {
        self.connections
            .iter()
            .flatten()
            .filter(|c| !c.closing && c.ends.iter().any(|e| e.vm == vm))
            .count()
    }

    /// Packets waiting for VM `vm`'s RX buffers (resets owed included).
    pub fn waiting_for(&self, vm: usize) -> usize {
        let owed = self
            .connections
            .iter()
            .flatten()
            .flat_map(|c| c.ends.iter())
            .filter(|e| e.vm == vm && e.reset_owed)
            .count();
        self.queues
            .get(vm)
            .map_or(0, |q| q.len + q.answers_len + owed)
    }

    /// True while VM `vm`'s vsock interrupt is asserted.
    pub fn interrupt_pending(&self, vm: usize) -> bool {
        self.device(vm).is_some_and(VsockDevice::interrupt_pending)
    }

    /// A guest read of its vsock registers.
    pub fn mmio_read(&self, vm: usize, offset: u64, size: u8) -> Result<u64, BadAccess> {
        self.device(vm).ok_or(BadAccess)?.read(offset, size)
    }

    /// A guest write of its vsock registers. On [`WriteEffect::Notify`] the
    /// caller runs [`Switch::pump_for`]; a reset or failure of the device
    /// also ends its connections (their peers get resets, delivered by the
    /// next pump).
    pub fn mmio_write(
        &mut self,
        vm: usize,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<WriteEffect, BadAccess> {
        let effect = self
            .device_mut(vm)
            .ok_or(BadAccess)?
            .write(offset, size, value)?;
        if matches!(effect, WriteEffect::Reset | WriteEffect::Failed(_)) {
            self.forget_vm(vm);
        }
        Ok(effect)
    }

    /// [`Switch::pump_for`] with no VM served first.
    pub fn pump<M: GuestMemory>(&mut self, mems: &mut [M]) -> PumpReport {
        self.pump_for(mems, None)
    }

    /// Moves packets, within one pump's budget: first off the TX ring of
    /// `first` (the VM that trapped: its driver may be waiting for its TX
    /// buffers) and into its RX buffers, then resets owed and waiting
    /// packets into every VM's RX buffers and new packets off every TX
    /// ring. `mems[i]` is VM `i`'s RAM.
    pub fn pump_for<M: GuestMemory>(&mut self, mems: &mut [M], first: Option<usize>) -> PumpReport {
        let mut report = PumpReport::default();
        let mut budget = Budget {
            bytes: PUMP_BYTES,
            packets: PUMP_PACKETS,
        };
        if let Some(vm) = first {
            self.take_from(vm, mems, &mut budget, &mut report);
            self.drain_to(vm, mems, &mut budget, &mut report);
        }
        let mut progress = true;
        while progress && budget.left() {
            progress = false;
            let start = self.next_sender;
            self.next_sender = (start + 1) % MAX_VMS;
            for k in 0..MAX_VMS {
                progress |= self.drain_to((start + k) % MAX_VMS, mems, &mut budget, &mut report);
            }
            for k in 0..MAX_VMS {
                progress |= self.take_from((start + k) % MAX_VMS, mems, &mut budget, &mut report);
            }
        }
        report.more = !budget.left() && self.work_left(mems);
        for (vm, dev) in self.devices.iter_mut().enumerate() {
            if let Some(dev) = dev.as_mut()
                && dev.take_raised()
            {
                report.interrupts |= 1 << vm;
            }
        }
        report
    }

    /// True when some TX ring has a packet or something waits for a VM
    /// (a cheap over-estimate: a VM with no RX buffer counts).
    fn work_left<M: GuestMemory>(&self, mems: &mut [M]) -> bool {
        (0..MAX_VMS).any(|vm| {
            let tx = match (self.device(vm), mems.get_mut(vm)) {
                (Some(dev), Some(mem)) => dev.tx_pending(mem),
                _ => false,
            };
            tx || (self.live(vm) && self.waiting_for(vm) > 0)
        })
    }

    fn fault(&mut self, vm: usize, e: QueueError, report: &mut PumpReport) {
        if let Some(f) = report.faults.get_mut(vm) {
            *f = Some(e);
        }
        self.forget_vm(vm);
    }

    /// Delivers what waits for `dest`, owed resets first; true if anything
    /// moved.
    fn drain_to<M: GuestMemory>(
        &mut self,
        dest: usize,
        mems: &mut [M],
        budget: &mut Budget,
        report: &mut PumpReport,
    ) -> bool {
        let Some(mem) = mems.get_mut(dest) else {
            return false;
        };
        let mut moved = self.drop_stale(dest);
        if !self.live(dest) {
            return moved;
        }
        // Resets owed to `dest`.
        for i in 0..MAX_CONNECTIONS {
            if !budget.left() {
                return moved;
            }
            let Some(c) = self.connections.get(i).copied().flatten() else {
                continue;
            };
            let Some(side) = c.ends.iter().position(|e| e.vm == dest && e.reset_owed) else {
                continue;
            };
            let (me, peer) = (c.ends[side], c.ends[1 - side]);
            let rst = Header {
                src_cid: self.cid(peer.vm),
                dst_cid: self.cid(dest),
                src_port: peer.port,
                dst_port: me.port,
                kind: TYPE_STREAM,
                op: op::RST,
                ..Header::zero()
            };
            let Some(dev) = self.devices.get_mut(dest).and_then(Option::as_mut) else {
                return moved;
            };
            match dev.deliver_control(mem, &rst) {
                Ok(true) => {
                    budget.spend(0, report);
                    moved = true;
                    self.settle(i, side);
                }
                Ok(false) => return moved,
                Err(e) => {
                    self.fault(dest, e, report);
                    return true;
                }
            }
        }
        // Answers to its refused packets.
        while budget.left() {
            let Some(q) = self.queues.get_mut(dest) else {
                return moved;
            };
            if q.answers_len == 0 {
                break;
            }
            let Some(h) = q.answers.get(q.answers_head).copied() else {
                break;
            };
            let Some(dev) = self.devices.get_mut(dest).and_then(Option::as_mut) else {
                return moved;
            };
            match dev.deliver_control(mem, &h) {
                Ok(true) => {
                    q.answers_head = (q.answers_head + 1) % ANSWER_SLOTS;
                    q.answers_len -= 1;
                    budget.spend(0, report);
                    moved = true;
                }
                Ok(false) => return moved,
                Err(e) => {
                    self.fault(dest, e, report);
                    return true;
                }
            }
        }
        // Packets, in order.
        while budget.left() {
            moved |= self.drop_stale(dest);
            let (Some(q), Some(Some(dev))) =
                (self.queues.get_mut(dest), self.devices.get_mut(dest))
            else {
                return moved;
            };
            let Some(w) = q.front().copied() else {
                break;
            };
            let start = w.offset as usize + w.sent as usize;
            let end = w.offset as usize + w.header.len as usize;
            let remaining = q.bytes.get(start..end).unwrap_or(&[]);
            match dev.deliver_bytes(mem, &w.header, remaining) {
                Ok(Some(sent)) => {
                    budget.spend(sent as usize, report);
                    moved = true;
                    let done = w.sent.saturating_add(sent) >= w.header.len;
                    if done {
                        q.pop();
                        if let Some(c) = self.live_connection(w.connection, w.generation)
                            && let Some(side) = c.side_of(dest, w.header.dst_port)
                        {
                            let e = &mut c.ends[side];
                            e.waiting = e.waiting.saturating_sub(w.header.len);
                        }
                    } else if let Some(front) = q.entries.get_mut(q.head) {
                        front.sent = front.sent.saturating_add(sent);
                    }
                }
                Ok(None) => return moved,
                Err(e) => {
                    self.fault(dest, e, report);
                    return true;
                }
            }
        }
        moved
    }

    /// Drops packets at the front of `dest`'s queue whose connection is
    /// gone; true if any.
    fn drop_stale(&mut self, dest: usize) -> bool {
        let mut dropped = false;
        loop {
            let Some(w) = self.queues.get(dest).and_then(Queue::front).copied() else {
                return dropped;
            };
            if self.live_connection(w.connection, w.generation).is_some() {
                return dropped;
            }
            if let Some(q) = self.queues.get_mut(dest) {
                q.pop();
            }
            dropped = true;
        }
    }

    fn live_connection(&mut self, index: usize, generation: u32) -> Option<&mut Connection> {
        self.connections
            .get_mut(index)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == generation && !c.closing)
    }

    /// Side `side` of connection `index` has heard of its reset; the entry
    /// goes when no side is owed one.
    fn settle(&mut self, index: usize, side: usize) {
        if let Some(slot) = self.connections.get_mut(index) {
            if let Some(c) = slot.as_mut()
                && let Some(e) = c.ends.get_mut(side)
            {
                e.reset_owed = false;
            }
            if slot.is_some_and(|c| c.closing && c.ends.iter().all(|e| !e.reset_owed)) {
                *slot = None;
            }
        }
    }

    /// Ends connection `index`: the sides in `tell` (whose device runs)
    /// are owed a reset; its waiting packets are dropped.
    fn reset(&mut self, index: usize, tell: [bool; 2]) {
        let live = [0, 1].map(|s| {
            self.connections
                .get(index)
                .copied()
                .flatten()
                .is_some_and(|c| self.live(c.ends[s].vm))
        });
        if let Some(slot) = self.connections.get_mut(index) {
            if let Some(c) = slot.as_mut() {
                c.closing = true;
                for s in 0..2 {
                    c.ends[s].reset_owed |= tell[s] && live[s];
                    c.ends[s].waiting = 0;
                }
            }
            if slot.is_some_and(|c| c.ends.iter().all(|e| !e.reset_owed)) {
                *slot = None;
            }
        }
    }

    /// Takes packets off `sender`'s TX ring while the budget lasts; true
    /// if any.
    fn take_from<M: GuestMemory>(
        &mut self,
        sender: usize,
        mems: &mut [M],
        budget: &mut Budget,
        report: &mut PumpReport,
    ) -> bool {
        let mut moved = false;
        while budget.left() {
            let Some(mem) = mems.get_mut(sender) else {
                return moved;
            };
            let Some(dev) = self.devices.get_mut(sender).and_then(Option::as_mut) else {
                return moved;
            };
            match dev.take_tx(mem, &mut self.scratch) {
                Ok(true) => {
                    budget.spend(self.scratch.header.len as usize, report);
                    moved = true;
                    self.route(sender, report);
                }
                Ok(false) => return moved,
                Err(e) => {
                    self.fault(sender, e, report);
                    return true;
                }
            }
        }
        moved
    }

    fn allowed(&self, from: usize, to: usize, port: u32) -> bool {
        self.rules
            .iter()
            .flatten()
            .any(|r| r.from == from && r.to == to && r.port == port)
    }

    /// The open connection between (`a`, `a_port`) and (`b`, `b_port`),
    /// either way round.
    fn find(&self, a: usize, a_port: u32, b: usize, b_port: u32) -> Option<usize> {
        self.connections
            .iter()
            .position(|c| c.is_some_and(|c| !c.closing && c.is(a, a_port, b, b_port)))
    }

    /// Decides what happens to the packet just taken from `sender`.
    fn route(&mut self, sender: usize, report: &mut PumpReport) {
        // The sender cannot choose its identity.
        self.scratch.header.src_cid = self.cid(sender);
        let h = self.scratch.header;
        let why = match self.judge(sender, &h) {
            Ok(None) => return,
            Ok(Some((dest, index))) => match self.enqueue(dest, index) {
                Ok(()) => return,
                Err(why) => {
                    self.resets = self.resets.saturating_add(1);
                    self.reset(index, [true, true]);
                    why
                }
            },
            Err(why) => {
                self.refuse(sender, &h);
                why
            }
        };
        report.refused = report.refused.saturating_add(1);
        report.last_refusal = Some((sender, why));
    }

    /// Queues the scratch packet for `dest` on connection `index`.
    fn enqueue(&mut self, dest: usize, index: usize) -> Result<(), Refusal> {
        let h = self.scratch.header;
        let Some(c) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return Err(Refusal::NoConnection { op: h.op });
        };
        let generation = c.generation;
        let side = c
            .side_of(dest, h.dst_port)
            .ok_or(Refusal::NoConnection { op: h.op })?;
        let waiting = c.ends[side].waiting;
        let not_draining = Refusal::NotDraining {
            waiting,
            len: h.len,
        };
        if waiting.saturating_add(h.len) > CONNECTION_BYTES {
            return Err(not_draining);
        }
        let q = self.queues.get_mut(dest).ok_or(not_draining)?;
        if !q.push(h, self.scratch.payload(), index, generation) {
            return Err(not_draining);
        }
        c.ends[side].waiting = waiting.saturating_add(h.len);
        Ok(())
    }

    /// The destination VM and connection of a packet from `sender`
    /// (`None`: consumed here, e.g. a reset), or why not.
    fn judge(&mut self, sender: usize, h: &Header) -> Result<Option<(usize, usize)>, Refusal> {
        if h.kind != TYPE_STREAM {
            return Err(Refusal::BadType(h.kind));
        }
        if h.op != op::RW && h.len != 0 {
            return Err(Refusal::PayloadOnControl { op: h.op });
        }
        let dest = self
            .vm_of_cid(h.dst_cid)
            .filter(|&d| d != sender)
            .ok_or(Refusal::UnknownCid(h.dst_cid))?;
        if !self.live(dest) {
            return Err(Refusal::NotRunning(h.dst_cid));
        }
        let existing = self.find(sender, h.src_port, dest, h.dst_port);
        if h.op == op::REQUEST {
            if !self.allowed(sender, dest, h.dst_port) {
                return Err(Refusal::Policy {
                    to: h.dst_cid,
                    port: h.dst_port,
                });
            }
            // A new request replaces what the pair had: the other side
            // hears of the old connection's end first.
            if let Some(old) = existing {
                let tell = self
                    .connections
                    .get(old)
                    .copied()
                    .flatten()
                    .map_or([false; 2], |c| {
                        [c.ends[CLIENT].vm != sender, c.ends[SERVER].vm != sender]
                    });
                self.reset(old, tell);
            }
            let index = self.free_slot(sender).ok_or(Refusal::TableFull)?;
            let generation = self.next_generation;
            self.next_generation = generation.wrapping_add(1);
            let mut client = End::new(sender, h.src_port);
            client.buf_alloc = h.buf_alloc;
            client.fwd_cnt = h.fwd_cnt;
            if let Some(slot) = self.connections.get_mut(index) {
                *slot = Some(Connection {
                    ends: [client, End::new(dest, h.dst_port)],
                    established: false,
                    closing: false,
                    generation,
                });
            }
            return Ok(Some((dest, index)));
        }
        let index = existing.ok_or(if h.op == op::RST {
            Refusal::StrayReset
        } else {
            Refusal::NoConnection { op: h.op }
        })?;
        let c = self
            .connections
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(Refusal::NoConnection { op: h.op })?;
        let side = c
            .side_of(sender, h.src_port)
            .ok_or(Refusal::NoConnection { op: h.op })?;
        match h.op {
            op::RESPONSE if !c.established && side == SERVER => c.established = true,
            op::RST => {
                let mut tell = [false; 2];
                tell[1 - side] = true;
                self.reset(index, tell);
                return Ok(None);
            }
            op::SHUTDOWN | op::RW | op::CREDIT_UPDATE | op::CREDIT_REQUEST if c.established => {}
            op::RESPONSE | op::SHUTDOWN | op::RW | op::CREDIT_UPDATE | op::CREDIT_REQUEST => {
                return Err(Refusal::NoConnection { op: h.op });
            }
            other => return Err(Refusal::BadOp(other)),
        }
        // Every packet carries its sender's credit.
        c.ends[side].buf_alloc = h.buf_alloc;
        c.ends[side].fwd_cnt = h.fwd_cnt;
        if h.op == op::RW {
            let peer = c.ends[1 - side];
            let in_flight = c.ends[side].tx_cnt.wrapping_sub(peer.fwd_cnt);
            if u64::from(in_flight) + u64::from(h.len) > u64::from(peer.buf_alloc) {
                return Err(Refusal::Credit {
                    in_flight,
                    len: h.len,
                    buf_alloc: peer.buf_alloc,
                });
            }
            c.ends[side].tx_cnt = c.ends[side].tx_cnt.wrapping_add(h.len);
        }
        Ok(Some((dest, index)))
    }

    /// A free table slot for a request from `requester`. When the table is
    /// full, a closing connection that only `requester` still has to hear
    /// of is dropped (a VM that does not drain loses its own resets).
    fn free_slot(&mut self, requester: usize) -> Option<usize> {
        if let Some(i) = self.connections.iter().position(Option::is_none) {
            return Some(i);
        }
        let i = self.connections.iter().position(|c| {
            c.is_some_and(|c| {
                c.closing && c.ends.iter().all(|e| !e.reset_owed || e.vm == requester)
            })
        })?;
        if let Some(slot) = self.connections.get_mut(i) {
            *slot = None;
        }
        Some(i)
    }

    /// Answers `sender`'s refused packet: a packet on an open connection
    /// resets it (both sides are told); any other packet but a reset is
    /// answered with a reset, as if the destination had sent it.
    fn refuse(&mut self, sender: usize, h: &Header) {
        if let Some(dest) = self.vm_of_cid(h.dst_cid)
            && let Some(index) = self.find(sender, h.src_port, dest, h.dst_port)
        {
            self.reset(index, [true, true]);
            return;
        }
        if h.op == op::RST {
            return;
        }
        let answered = self
            .queues
            .get_mut(sender)
            .is_some_and(|q| q.push_answer(reset_for(h)));
        if !answered {
            self.lost_answers = self.lost_answers.saturating_add(1);
        }
    }

    /// Forgets VM `vm`'s side of everything after its device reset or
    /// broke: each of its connections ends (each peer is owed a reset; no
    /// limit, none lost), and what waited for it is dropped.
    fn forget_vm(&mut self, vm: usize) {
        for i in 0..MAX_CONNECTIONS {
            let Some(c) = self.connections.get(i).copied().flatten() else {
                continue;
            };
            let Some(side) = c.ends.iter().position(|e| e.vm == vm) else {
                continue;
            };
            if let Some(Some(c)) = self.connections.get_mut(i) {
                c.ends[side].reset_owed = false;
            }
            let mut tell = [false; 2];
            tell[1 - side] = !c.closing;
            self.reset(i, tell);
            self.settle(i, side);
        }
        if let Some(q) = self.queues.get_mut(vm) {
            q.clear();
        }
    }
}

/// The reset answering `h`, addressed from its destination to its source.
fn reset_for(h: &Header) -> Header {
    Header {
        src_cid: h.dst_cid,
        dst_cid: h.src_cid,
        src_port: h.dst_port,
        dst_port: h.src_port,
        kind: h.kind,
        op: op::RST,
        ..Header::zero()
    }
}

/// Largest payload a pump may copy (its budget plus one packet).
pub const PUMP_BYTES_MAX: usize = PUMP_BYTES + MAX_PAYLOAD;
