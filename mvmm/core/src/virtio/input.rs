//! The virtio-input device mvmm emulates in a VM (virtio 1.2, 5.8): the
//! keyboard and touch screen as the VM sees them. Its events are the ones
//! [`crate::input::Router`] gave the VM; mvmm writes each into a buffer the
//! driver made available on the event queue and raises the interrupt.
//!
//! The driver's status queue (LEDs) is consumed and returned empty: nothing
//! a VM says there reaches the physical devices. Every guest value (queue
//! layout, descriptors) is checked by the transport and the queue; a broken
//! queue sets DEVICE_NEEDS_RESET and the events wait (bounded) meanwhile.

use super::mem::GuestMemory;
use super::mmio::{BadAccess, F_VERSION_1, INT_USED_BUFFER, Transport, WriteEffect, reg};
use super::queue::{Direction, QueueError};
use crate::input::{Event, EventQueue, InputConfig, Profile};

/// Device type 18: input.
pub const DEVICE_ID: u32 = 18;
/// The event queue (device to driver).
pub const EVENTQ: u16 = 0;
/// The status queue (driver to device: LEDs).
pub const STATUSQ: u16 = 1;

/// What a register write asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputEffect {
    None,
    /// New event buffers: deliver what waits for this VM.
    Buffers,
    /// The driver reset the device: what waited for it is stale.
    Reset,
    /// A queue broke (logged by the caller); the device needs a reset.
    Failed(QueueError),
}

/// One VM's virtio-input device.
#[derive(Clone, Copy, Debug)]
pub struct InputDevice {
    transport: Transport,
    config: InputConfig,
}

impl InputDevice {
    pub const fn new(profile: Profile) -> InputDevice {
        InputDevice {
            transport: Transport::new(DEVICE_ID, F_VERSION_1, [0; 8]).with_queues(2),
            config: InputConfig::new(profile),
        }
    }

    /// Whether the driver has finished setting the device up.
    pub fn live(&self) -> bool {
        self.transport.live()
    }

    /// A guest read of `size` bytes at `offset` from the device's base.
    pub fn read(&self, offset: u64, size: u8) -> Result<u64, BadAccess> {
        match offset.checked_sub(reg::CONFIG) {
            Some(at) => self.config.read(at, size),
            None => self.transport.read(offset, size),
        }
    }

    /// A guest write. Notifies of the status queue are answered here.
    pub fn write<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<InputEffect, BadAccess> {
        if let Some(at) = offset.checked_sub(reg::CONFIG) {
            self.config.write(at, size, value)?;
            return Ok(InputEffect::None);
        }
        Ok(match self.transport.write(offset, size, value)? {
            WriteEffect::None => InputEffect::None,
            WriteEffect::Reset => {
                self.config.reset();
                InputEffect::Reset
            }
            WriteEffect::Failed(e) => InputEffect::Failed(e),
            WriteEffect::Notify(EVENTQ) => InputEffect::Buffers,
            WriteEffect::Notify(_) => match self.drain_status(mem) {
                Ok(()) => InputEffect::None,
                Err(e) => {
                    self.transport.fail();
                    InputEffect::Failed(e)
                }
            },
        })
    }

    /// Returns every status buffer unread (LED state is not passed on).
    fn drain_status<M: GuestMemory + ?Sized>(&mut self, mem: &mut M) -> Result<(), QueueError> {
        if !self.transport.live() {
            return Ok(());
        }
        let queue = &mut self.transport.queues[usize::from(STATUSQ)];
        let size = queue.size;
        let mut completed = false;
        for _ in 0..size {
            let Some(head) = queue.peek(mem)? else { break };
            // Walk the chain so a malformed one breaks the device now.
            let mut chain = queue.chain(head, Direction::DeviceReads);
            while chain.next(mem)?.is_some() {}
            queue.complete(mem, head, 0)?;
            completed = true;
        }
        if completed && queue.wants_interrupt(mem)? {
            self.transport.raise(INT_USED_BUFFER);
        }
        Ok(())
    }

    /// Moves events from `waiting` into the driver's event buffers, as many
    /// as it made available; returns how many. An event stays in `waiting`
    /// while there is no buffer for it. On a queue error the device is
    /// marked broken (and the caller logs the error); the event that was
    /// being written is lost.
    pub fn deliver<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        waiting: &mut EventQueue,
    ) -> Result<usize, QueueError> {
        if !self.transport.live() || waiting.is_empty() {
            return Ok(0);
        }
        let result = self.fill(mem, waiting);
        match result {
            Ok(n) => {
                let queue = &self.transport.queues[usize::from(EVENTQ)];
                if n > 0 && queue.wants_interrupt(mem).unwrap_or(true) {
                    self.transport.raise(INT_USED_BUFFER);
                }
                Ok(n)
            }
            Err(e) => {
                self.transport.fail();
                Err(e)
            }
        }
    }

    fn fill<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        waiting: &mut EventQueue,
    ) -> Result<usize, QueueError> {
        let queue = &mut self.transport.queues[usize::from(EVENTQ)];
        let mut delivered = 0;
        while !waiting.is_empty() {
            let Some(head) = queue.peek(mem)? else { break };
            let mut chain = queue.chain(head, Direction::DeviceWrites);
            let Some(buffer) = chain.next(mem)? else {
                break;
            };
            if buffer.len < Event::LEN as u32 {
                return Err(QueueError::RxBufferTooSmall {
                    len: u64::from(buffer.len),
                });
            }
            let Some(event) = waiting.pop() else { break };
            mem.write(buffer.addr, &event.to_bytes())
                .map_err(|fault| QueueError::Memory {
                    area: super::queue::Area::Buffer,
                    fault,
                })?;
            queue.complete(mem, head, Event::LEN as u32)?;
            delivered += 1;
        }
        Ok(delivered)
    }

    /// True once after an interrupt bit was raised: inject the device's
    /// interrupt.
    pub fn take_raised(&mut self) -> bool {
        self.transport.take_raised()
    }

    /// Back to power-on (the VM was reset).
    pub fn reset(&mut self) {
        self.transport.reset();
        self.config.reset();
    }
}
