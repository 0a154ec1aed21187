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
//! Flow control: each sender has a one-packet outbox. A packet waits there
//! until the destination posts RX buffers, and the switch takes nothing
//! more from that sender's TX ring meanwhile: the guest's ring fills and
//! its driver waits, as with any device. Nothing is dropped, except a
//! reset that answers nothing (never answered with a reset, per the spec),
//! and the resets the switch makes up when a VM's device resets, which are
//! best effort (the peer learns anyway the next time it sends).

use super::mem::GuestMemory;
use super::mmio::{BadAccess, WriteEffect};
use super::queue::QueueError;
use super::vsock::{Delivery, Header, Packet, TYPE_STREAM, VsockDevice, op};
use crate::partition::MAX_VMS;

/// Connections the switch tracks at once (all VMs together).
pub const MAX_CONNECTIONS: usize = 64;
/// Policy rules.
pub const MAX_RULES: usize = 32;
/// Switch-made resets waiting for one VM's RX buffers.
pub const CONTROL_SLOTS: usize = 8;
/// Rounds of one [`Switch::pump`] call before it yields to the guest.
pub const PUMP_ROUNDS: usize = 64;

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
}

impl PumpReport {
    pub fn needs_interrupt(&self, vm: usize) -> bool {
        vm < 32 && self.interrupts & (1 << vm) != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Connection {
    /// The VM that sent the request, and its port.
    client: usize,
    client_port: u32,
    server: usize,
    server_port: u32,
    established: bool,
}

/// One VM's end: its device and the resets waiting for it.
///
/// # Invariants
/// `control_len <= CONTROL_SLOTS`.
#[derive(Clone, Debug)]
struct Endpoint {
    device: Option<VsockDevice>,
    control: [Header; CONTROL_SLOTS],
    control_head: usize,
    control_len: usize,
}

/// A sender's packet waiting for its destination (`dest`).
#[derive(Clone, Debug)]
struct Outbox {
    packet: Packet,
    dest: Option<usize>,
}

/// The vsock switch of all VMs.
#[derive(Clone, Debug)]
pub struct Switch {
    endpoints: [Endpoint; MAX_VMS],
    outboxes: [Outbox; MAX_VMS],
    rules: [Option<Rule>; MAX_RULES],
    connections: [Option<Connection>; MAX_CONNECTIONS],
    /// Next sender each destination serves first (fairness).
    next_sender: [usize; MAX_VMS],
    /// Switch-made resets lost because a control queue was full.
    pub lost_resets: u32,
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
            endpoints: [const {
                Endpoint {
                    device: None,
                    control: [Header::zero(); CONTROL_SLOTS],
                    control_head: 0,
                    control_len: 0,
                }
            }; MAX_VMS],
            outboxes: [const {
                Outbox {
                    packet: Packet::new(),
                    dest: None,
                }
            }; MAX_VMS],
            rules: [None; MAX_RULES],
            connections: [None; MAX_CONNECTIONS],
            next_sender: [0; MAX_VMS],
            lost_resets: 0,
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
        let ep = self.endpoints.get_mut(vm).ok_or(ConfigError::VmIndex(vm))?;
        ep.device = Some(VsockDevice::new(cid));
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
        self.endpoints.get(vm).and_then(|e| e.device.as_ref())
    }

    fn device_mut(&mut self, vm: usize) -> Option<&mut VsockDevice> {
        self.endpoints.get_mut(vm).and_then(|e| e.device.as_mut())
    }

    fn cid(&self, vm: usize) -> u64 {
        self.device(vm).map_or(0, VsockDevice::cid)
    }

    fn vm_of_cid(&self, cid: u64) -> Option<usize> {
        self.endpoints
            .iter()
            .position(|e| e.device.as_ref().is_some_and(|d| d.cid() == cid))
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
    /// caller runs [`Switch::pump`]; a reset or failure of the device also
    /// ends its connections (their peers get resets, delivered by the next
    /// pump).
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

    /// Moves every packet that can move: resets and waiting packets into
    /// RX buffers, then new packets off TX rings. `mems[i]` is VM `i`'s RAM.
    pub fn pump<M: GuestMemory>(&mut self, mems: &mut [M]) -> PumpReport {
        let mut report = PumpReport::default();
        let mut progress = true;
        let mut rounds = 0;
        while progress && rounds < PUMP_ROUNDS {
            rounds += 1;
            progress = false;
            for dest in 0..MAX_VMS {
                progress |= self.drain_to(dest, mems, &mut report);
            }
            for sender in 0..MAX_VMS {
                progress |= self.take_from(sender, mems, &mut report);
            }
        }
        report.more = progress;
        for (vm, ep) in self.endpoints.iter_mut().enumerate() {
            if let Some(dev) = ep.device.as_mut()
                && dev.take_raised()
            {
                report.interrupts |= 1 << vm;
            }
        }
        report
    }

    fn fault(&mut self, vm: usize, e: QueueError, report: &mut PumpReport) {
        if let Some(f) = report.faults.get_mut(vm) {
            *f = Some(e);
        }
        self.forget_vm(vm);
    }

    /// Delivers what waits for `dest`; true if anything moved.
    fn drain_to<M: GuestMemory>(
        &mut self,
        dest: usize,
        mems: &mut [M],
        report: &mut PumpReport,
    ) -> bool {
        let Some(mem) = mems.get_mut(dest) else {
            return false;
        };
        let Some(ep) = self.endpoints.get_mut(dest) else {
            return false;
        };
        let Some(dev) = ep.device.as_mut() else {
            return false;
        };
        let mut moved = false;
        while ep.control_len > 0 {
            let Some(h) = ep.control.get(ep.control_head).copied() else {
                break;
            };
            match dev.deliver_control(mem, &h) {
                Ok(true) => {
                    ep.control_head = (ep.control_head + 1) % CONTROL_SLOTS;
                    ep.control_len -= 1;
                    moved = true;
                }
                Ok(false) => return moved,
                Err(e) => {
                    self.fault(dest, e, report);
                    return true;
                }
            }
        }
        let first = self.next_sender.get(dest).copied().unwrap_or(0);
        for k in 0..MAX_VMS {
            let sender = (first + k) % MAX_VMS;
            let Some(outbox) = self.outboxes.get_mut(sender) else {
                continue;
            };
            if outbox.dest != Some(dest) {
                continue;
            }
            loop {
                match dev.deliver_rx(mem, &mut outbox.packet) {
                    Ok(Delivery::Complete) => {
                        outbox.dest = None;
                        moved = true;
                        break;
                    }
                    Ok(Delivery::Partial) => moved = true,
                    Ok(Delivery::NoBuffer) => {
                        if let Some(n) = self.next_sender.get_mut(dest) {
                            *n = sender;
                        }
                        return moved;
                    }
                    Err(e) => {
                        self.fault(dest, e, report);
                        return true;
                    }
                }
            }
        }
        if let Some(n) = self.next_sender.get_mut(dest) {
            *n = (first + 1) % MAX_VMS;
        }
        moved
    }

    /// Takes one packet off `sender`'s TX ring if its outbox is free.
    fn take_from<M: GuestMemory>(
        &mut self,
        sender: usize,
        mems: &mut [M],
        report: &mut PumpReport,
    ) -> bool {
        let Some(mem) = mems.get_mut(sender) else {
            return false;
        };
        let Some(outbox) = self.outboxes.get_mut(sender) else {
            return false;
        };
        if outbox.dest.is_some() {
            return false;
        }
        let Some(dev) = self
            .endpoints
            .get_mut(sender)
            .and_then(|e| e.device.as_mut())
        else {
            return false;
        };
        match dev.take_tx(mem, &mut outbox.packet) {
            Ok(true) => {
                self.route(sender, report);
                true
            }
            Ok(false) => false,
            Err(e) => {
                self.fault(sender, e, report);
                true
            }
        }
    }

    fn allowed(&self, from: usize, to: usize, port: u32) -> bool {
        self.rules
            .iter()
            .flatten()
            .any(|r| r.from == from && r.to == to && r.port == port)
    }

    /// The connection between (`a`, `a_port`) and (`b`, `b_port`), either
    /// way round.
    fn find(&self, a: usize, a_port: u32, b: usize, b_port: u32) -> Option<usize> {
        self.connections.iter().position(|c| {
            c.is_some_and(|c| {
                (c.client == a
                    && c.client_port == a_port
                    && c.server == b
                    && c.server_port == b_port)
                    || (c.client == b
                        && c.client_port == b_port
                        && c.server == a
                        && c.server_port == a_port)
            })
        })
    }

    fn remove(&mut self, index: Option<usize>) {
        if let Some(c) = index.and_then(|i| self.connections.get_mut(i)) {
            *c = None;
        }
    }

    /// Decides what happens to the packet just taken from `sender`.
    fn route(&mut self, sender: usize, report: &mut PumpReport) {
        let sender_cid = self.cid(sender);
        let Some(outbox) = self.outboxes.get_mut(sender) else {
            return;
        };
        let h = &mut outbox.packet.header;
        // The sender cannot choose its identity.
        h.src_cid = sender_cid;
        let h = *h;
        let verdict = self.judge(sender, &h);
        match verdict {
            Ok(dest) => {
                if let Some(o) = self.outboxes.get_mut(sender) {
                    o.dest = Some(dest);
                }
            }
            Err(why) => {
                report.refused = report.refused.saturating_add(1);
                report.last_refusal = Some((sender, why));
                self.refuse(sender, &h);
            }
        }
    }

    /// The destination VM of a packet from `sender`, or why not.
    fn judge(&mut self, sender: usize, h: &Header) -> Result<usize, Refusal> {
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
        if !self.device(dest).is_some_and(VsockDevice::live) {
            return Err(Refusal::NotRunning(h.dst_cid));
        }
        let existing = self.find(sender, h.src_port, dest, h.dst_port);
        match h.op {
            op::REQUEST => {
                if !self.allowed(sender, dest, h.dst_port) {
                    return Err(Refusal::Policy {
                        to: h.dst_cid,
                        port: h.dst_port,
                    });
                }
                // A new request replaces whatever the pair had.
                self.remove(existing);
                let slot = self
                    .connections
                    .iter_mut()
                    .find(|c| c.is_none())
                    .ok_or(Refusal::TableFull)?;
                *slot = Some(Connection {
                    client: sender,
                    client_port: h.src_port,
                    server: dest,
                    server_port: h.dst_port,
                    established: false,
                });
                Ok(dest)
            }
            op::RESPONSE => {
                let c = existing
                    .and_then(|i| self.connections.get_mut(i))
                    .and_then(Option::as_mut)
                    .filter(|c| !c.established && c.server == sender)
                    .ok_or(Refusal::NoConnection { op: h.op })?;
                c.established = true;
                Ok(dest)
            }
            op::RST => {
                if existing.is_none() {
                    return Err(Refusal::StrayReset);
                }
                self.remove(existing);
                Ok(dest)
            }
            op::SHUTDOWN | op::RW | op::CREDIT_UPDATE | op::CREDIT_REQUEST => {
                let established = existing
                    .and_then(|i| self.connections.get(i).copied().flatten())
                    .is_some_and(|c| c.established);
                if established {
                    Ok(dest)
                } else {
                    Err(Refusal::NoConnection { op: h.op })
                }
            }
            other => Err(Refusal::BadOp(other)),
        }
    }

    /// Turns `sender`'s refused packet into a reset back to it, as if the
    /// destination had answered (a reset itself is dropped).
    fn refuse(&mut self, sender: usize, h: &Header) {
        if let Some(dest) = self.vm_of_cid(h.dst_cid) {
            let existing = self.find(sender, h.src_port, dest, h.dst_port);
            self.remove(existing);
        }
        let Some(outbox) = self.outboxes.get_mut(sender) else {
            return;
        };
        if h.op == op::RST {
            outbox.dest = None;
            return;
        }
        outbox.packet.set_control(reset_for(h));
        outbox.dest = Some(sender);
    }

    /// Forgets VM `vm`'s side of everything after its device reset or
    /// broke: its connections (peers get resets), its waiting packet, and
    /// packets waiting for it (their senders get resets).
    fn forget_vm(&mut self, vm: usize) {
        let cid = self.cid(vm);
        for i in 0..MAX_CONNECTIONS {
            let Some(c) = self.connections.get(i).copied().flatten() else {
                continue;
            };
            let (peer, peer_port, port) = if c.client == vm {
                (c.server, c.server_port, c.client_port)
            } else if c.server == vm {
                (c.client, c.client_port, c.server_port)
            } else {
                continue;
            };
            self.remove(Some(i));
            let rst = Header {
                src_cid: cid,
                dst_cid: self.cid(peer),
                src_port: port,
                dst_port: peer_port,
                kind: TYPE_STREAM,
                op: op::RST,
                ..Header::zero()
            };
            self.push_control(peer, rst);
        }
        if let Some(o) = self.outboxes.get_mut(vm) {
            o.dest = None;
        }
        if let Some(ep) = self.endpoints.get_mut(vm) {
            ep.control_len = 0;
        }
        for sender in 0..MAX_VMS {
            let Some(o) = self.outboxes.get_mut(sender) else {
                continue;
            };
            if o.dest != Some(vm) || sender == vm {
                continue;
            }
            let h = o.packet.header;
            if h.op == op::RST {
                o.dest = None;
            } else {
                o.packet.set_control(reset_for(&h));
                o.dest = Some(sender);
            }
        }
    }

    fn push_control(&mut self, vm: usize, h: Header) {
        let Some(ep) = self.endpoints.get_mut(vm) else {
            return;
        };
        if ep.control_len >= CONTROL_SLOTS {
            self.lost_resets = self.lost_resets.saturating_add(1);
            return;
        }
        let slot = (ep.control_head + ep.control_len) % CONTROL_SLOTS;
        if let Some(s) = ep.control.get_mut(slot) {
            *s = h;
            ep.control_len += 1;
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
