//! The virtio-mmio transport, version 2 (virtio 1.2, section 4.2.2): the
//! register file a guest sees at a device's MMIO window.
//!
//! Every access traps; the arch layer passes offset, size and value to
//! [`Transport::read`] / [`Transport::write`] and injects an abort when they
//! return [`BadAccess`]: an offset the spec does not define, a register
//! read that is write-only or written that is read-only, or a size other
//! than 32 bits (any aligned 8 to 64 bits in the configuration space).
//!
//! The transport is the state a device reset clears: features, status,
//! queue configuration and interrupt status. The device proper (vsock)
//! sits on top and only uses queues while [`Transport::live`].

use super::queue::{Queue, QueueError};

/// "virt" in little-endian ASCII.
pub const MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) virtio-mmio layout.
pub const VERSION: u32 = 2;
/// mvmm's vendor id: "mVMM" in little-endian ASCII.
pub const VENDOR_ID: u32 = 0x4d4d_566d;
/// Most queues a device has (vsock: rx, tx, event; input: event, status).
pub const QUEUES: usize = 3;
/// Bytes of device configuration space.
pub const CONFIG_LEN: usize = 8;

/// VIRTIO_F_VERSION_1: the device is not legacy.
pub const F_VERSION_1: u64 = 1 << 32;

/// Device status bits.
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// InterruptStatus bits.
pub const INT_USED_BUFFER: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

/// Register offsets.
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// A guest access the transport refuses; the arch layer injects an abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAccess;

/// What a register write asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEffect {
    None,
    /// QueueNotify: the driver made buffers available on this queue.
    Notify(u16),
    /// Status was written with 0: the device was reset.
    Reset,
    /// The write broke the device (a queue enabled with a bad layout); it
    /// now needs a reset. Log the reason.
    Failed(QueueError),
}

/// Register state of one virtio-mmio device.
///
/// # Invariants
/// `queues[i].ready` only when its layout passed [`Queue::enable`].
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    device_id: u32,
    device_features: u64,
    config: [u8; CONFIG_LEN],
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The driver asked for a feature bit above 63 (none exists).
    unknown_features: bool,
    queue_sel: u32,
    status: u32,
    needs_reset: bool,
    interrupt_status: u32,
    /// Set when an interrupt bit is raised, cleared by [`Self::take_raised`].
    raised: bool,
    /// Queues the device has (at most [`QUEUES`]); the others read as absent.
    queue_count: usize,
    pub(crate) queues: [Queue; QUEUES],
}

impl Transport {
    pub const fn new(device_id: u32, device_features: u64, config: [u8; CONFIG_LEN]) -> Self {
        Transport {
            device_id,
            device_features,
            config,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            unknown_features: false,
            queue_sel: 0,
            status: 0,
            needs_reset: false,
            interrupt_status: 0,
            raised: false,
            queue_count: QUEUES,
            queues: [Queue::new(); QUEUES],
        }
    }

    /// The same device with only its first `count` queues (at most
    /// [`QUEUES`]).
    pub const fn with_queues(mut self, count: usize) -> Self {
        self.queue_count = if count < QUEUES { count } else { QUEUES };
        self
    }

    /// Back to the state after power-on (status written with 0).
    pub fn reset(&mut self) {
        *self = Self::new(self.device_id, self.device_features, self.config)
            .with_queues(self.queue_count);
    }

    /// The driver finished initialisation and the device is not broken.
    pub fn live(&self) -> bool {
        self.status & status::DRIVER_OK != 0
            && self.status & status::FAILED == 0
            && !self.needs_reset
    }

    /// The status register as the guest reads it.
    pub fn status(&self) -> u32 {
        if self.needs_reset {
            self.status | status::DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset
    }

    /// Features both sides agreed on (valid once FEATURES_OK is set).
    pub fn negotiated(&self) -> u64 {
        self.driver_features & self.device_features
    }

    /// True while an interrupt is asserted (InterruptStatus non-zero).
    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_status != 0
    }

    /// True once after a new interrupt bit was raised: the caller injects
    /// the device's interrupt.
    pub fn take_raised(&mut self) -> bool {
        core::mem::take(&mut self.raised)
    }

    /// Every notification is an edge (virtio-mmio interrupts are
    /// edge-triggered), even when the driver has not acknowledged the
    /// previous one: a driver that polls and never writes InterruptACK (the
    /// `virtio-drivers` socket driver) must still be woken.
    pub(crate) fn raise(&mut self, bits: u32) {
        self.raised = true;
        self.interrupt_status |= bits;
    }

    /// Declares the device broken: DEVICE_NEEDS_RESET, a configuration
    /// change interrupt, and no more queue processing until a reset.
    pub fn fail(&mut self) {
        if !self.needs_reset {
            self.needs_reset = true;
            self.raise(INT_CONFIG_CHANGE);
        }
    }

    fn selected(&self) -> Option<&Queue> {
        self.queues[..self.queue_count].get(self.queue_sel as usize)
    }

    /// The selected queue while its configuration may still change.
    fn selected_idle(&mut self) -> Option<&mut Queue> {
        self.queues[..self.queue_count]
            .get_mut(self.queue_sel as usize)
            .filter(|q| !q.ready)
    }

    fn set_low(value: &mut u64, low: u32) {
        *value = (*value & !0xffff_ffff) | u64::from(low);
    }

    fn set_high(value: &mut u64, high: u32) {
        *value = (*value & 0xffff_ffff) | (u64::from(high) << 32);
    }

    /// A guest read of `size` bytes at `offset` from the device's base.
    pub fn read(&self, offset: u64, size: u8) -> Result<u64, BadAccess> {
        if offset >= reg::CONFIG {
            return self.read_config(offset - reg::CONFIG, size);
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return Err(BadAccess);
        }
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device_id,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => {
                if self.selected().is_some() {
                    u32::from(super::queue::QUEUE_SIZE_MAX)
                } else {
                    0
                }
            }
            reg::QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status(),
            // No shared memory regions: length reads as all ones (-1).
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            // The configuration never changes.
            reg::CONFIG_GENERATION => 0,
            _ => return Err(BadAccess),
        };
        Ok(u64::from(value))
    }

    fn read_config(&self, offset: u64, size: u8) -> Result<u64, BadAccess> {
        let len = usize::from(size);
        if !matches!(size, 1 | 2 | 4 | 8) || !offset.is_multiple_of(u64::from(size)) {
            return Err(BadAccess);
        }
        let start = usize::try_from(offset).map_err(|_| BadAccess)?;
        let end = start.checked_add(len).ok_or(BadAccess)?;
        let bytes = self.config.get(start..end).ok_or(BadAccess)?;
        let mut word = [0u8; 8];
        word.get_mut(..len).ok_or(BadAccess)?.copy_from_slice(bytes);
        Ok(u64::from_le_bytes(word))
    }

    /// A guest write of `size` bytes at `offset`.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<WriteEffect, BadAccess> {
        // The configuration space (the CID) is read-only for the driver.
        if size != 4 || !offset.is_multiple_of(4) || offset >= reg::CONFIG {
            return Err(BadAccess);
        }
        let value = value as u32;
        let features_open = self.status & status::FEATURES_OK == 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => {
                // Features are frozen once FEATURES_OK is accepted.
                if features_open {
                    match self.driver_features_sel {
                        0 => Self::set_low(&mut self.driver_features, value),
                        1 => Self::set_high(&mut self.driver_features, value),
                        // No feature bits above 63 exist; writing one
                        // there is a request the device cannot meet.
                        _ => self.unknown_features |= value != 0,
                    }
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(q) = self.selected_idle() {
                    q.size = value.try_into().unwrap_or(0);
                }
            }
            reg::QUEUE_DESC_LOW => {
                if let Some(q) = self.selected_idle() {
                    Self::set_low(&mut q.desc, value);
                }
            }
            reg::QUEUE_DESC_HIGH => {
                if let Some(q) = self.selected_idle() {
                    Self::set_high(&mut q.desc, value);
                }
            }
            reg::QUEUE_DRIVER_LOW => {
                if let Some(q) = self.selected_idle() {
                    Self::set_low(&mut q.driver, value);
                }
            }
            reg::QUEUE_DRIVER_HIGH => {
                if let Some(q) = self.selected_idle() {
                    Self::set_high(&mut q.driver, value);
                }
            }
            reg::QUEUE_DEVICE_LOW => {
                if let Some(q) = self.selected_idle() {
                    Self::set_low(&mut q.device, value);
                }
            }
            reg::QUEUE_DEVICE_HIGH => {
                if let Some(q) = self.selected_idle() {
                    Self::set_high(&mut q.device, value);
                }
            }
            reg::QUEUE_READY => {
                let index = self.queue_sel;
                if let Some(q) = self.queues[..self.queue_count].get_mut(index as usize) {
                    if value & 1 == 0 {
                        q.ready = false;
                    } else if !q.ready
                        && let Err(e) = q.enable(index as u16)
                    {
                        self.fail();
                        return Ok(WriteEffect::Failed(e));
                    }
                }
            }
            reg::QUEUE_NOTIFY => {
                // Without VIRTIO_F_NOTIFICATION_DATA the value is the index.
                if let Ok(q) = u16::try_from(value)
                    && usize::from(q) < self.queue_count
                {
                    return Ok(WriteEffect::Notify(q));
                }
            }
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => return Ok(self.write_status(value)),
            reg::SHM_SEL => {}
            _ => return Err(BadAccess),
        }
        Ok(WriteEffect::None)
    }

    fn write_status(&mut self, value: u32) -> WriteEffect {
        if value == 0 {
            self.reset();
            return WriteEffect::Reset;
        }
        // Only a reset clears bits; DEVICE_NEEDS_RESET belongs to the device.
        let wanted = value & 0xff & !status::DEVICE_NEEDS_RESET;
        let new = wanted & !self.status;
        let mut next = self.status | wanted;
        if new & status::FEATURES_OK != 0 {
            let unknown = self.driver_features & !self.device_features;
            if unknown != 0 || self.unknown_features || self.driver_features & F_VERSION_1 == 0 {
                // The driver reads FEATURES_OK back and gives up.
                next &= !status::FEATURES_OK;
            }
        }
        if new & status::DRIVER_OK != 0 && next & status::FEATURES_OK == 0 {
            next &= !status::DRIVER_OK;
        }
        self.status = next;
        WriteEffect::None
    }
}
