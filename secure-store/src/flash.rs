//! The flash the store sits on, and a simulated one for host tests.
//!
//! NOR flash semantics: erasing sets a whole erase block to `0xff`;
//! programming can only clear bits, in units of [`Flash::write_unit`] bytes at
//! aligned offsets. secure-os implements [`Flash`] for QEMU's CFI pflash
//! bank (its arch layer); [`SimFlash`] models the same device in RAM and can
//! lose power after any number of programmed bytes.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Why a flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashError {
    /// The range is not inside the device.
    OutOfRange { offset: usize, len: usize },
    /// The offset or length is not a multiple of the write unit (program) or
    /// the erase block (erase).
    Unaligned { offset: usize },
    /// The device did not report ready within its polling budget.
    Timeout { offset: usize },
    /// The device reported a failed program (its status register).
    ProgramFailed { offset: usize, status: u32 },
    /// The device reported a failed erase (its status register).
    EraseFailed { offset: usize, status: u32 },
    /// Simulated power loss: the operation stopped part way (host tests).
    PowerLost,
}

impl fmt::Display for FlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FlashError::OutOfRange { offset, len } => {
                write!(
                    f,
                    "{len} bytes at flash offset {offset:#x} are outside the device"
                )
            }
            FlashError::Unaligned { offset } => {
                write!(
                    f,
                    "flash offset {offset:#x} is not aligned for this operation"
                )
            }
            FlashError::Timeout { offset } => {
                write!(
                    f,
                    "flash at offset {offset:#x} did not become ready in time"
                )
            }
            FlashError::ProgramFailed { offset, status } => write!(
                f,
                "flash program at offset {offset:#x} failed (status {status:#010x})"
            ),
            FlashError::EraseFailed { offset, status } => write!(
                f,
                "flash erase of the block at offset {offset:#x} failed (status {status:#010x})"
            ),
            FlashError::PowerLost => write!(f, "power lost during a flash operation"),
        }
    }
}

/// A NOR flash device: read anywhere, program erased bytes, erase blocks.
pub trait Flash {
    /// Size of the device in bytes.
    fn capacity(&self) -> usize;
    /// Size of one erase block in bytes (a power of two).
    fn erase_block_size(&self) -> usize;
    /// Offsets and lengths given to [`Flash::program`] are multiples of this.
    fn write_unit(&self) -> usize;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError>;
    /// Programs `data` at `offset` (clears bits only; erase first).
    fn program(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError>;
    /// Erases the block that starts at `offset` to `0xff`.
    fn erase_block(&mut self, offset: usize) -> Result<(), FlashError>;
}

impl<F: Flash + ?Sized> Flash for &mut F {
    fn capacity(&self) -> usize {
        (**self).capacity()
    }
    fn erase_block_size(&self) -> usize {
        (**self).erase_block_size()
    }
    fn write_unit(&self) -> usize {
        (**self).write_unit()
    }
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        (**self).read(offset, buf)
    }
    fn program(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        (**self).program(offset, data)
    }
    fn erase_block(&mut self, offset: usize) -> Result<(), FlashError> {
        (**self).erase_block(offset)
    }
}

/// Checks that `[offset, offset + len)` lies inside a device of `capacity`.
pub fn check_range(capacity: usize, offset: usize, len: usize) -> Result<(), FlashError> {
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(FlashError::OutOfRange { offset, len }),
    }
}

/// Flash in RAM with NOR semantics and a power switch.
///
/// # Invariants
/// `bytes.len()` is a multiple of `block`; `block` is a multiple of `unit`.
#[derive(Clone, Debug)]
pub struct SimFlash {
    bytes: Vec<u8>,
    block: usize,
    unit: usize,
    /// Bytes that may still be programmed before power is lost (`None`:
    /// unlimited). An erase costs one byte of budget.
    budget: Option<usize>,
    powered: bool,
}

impl SimFlash {
    /// An erased device of `blocks` erase blocks of `block` bytes, programmed
    /// in units of `unit` bytes.
    pub fn new(blocks: usize, block: usize, unit: usize) -> SimFlash {
        assert!(unit > 0 && block.is_multiple_of(unit) && blocks > 0);
        SimFlash {
            bytes: vec![0xff; blocks * block],
            block,
            unit,
            budget: None,
            powered: true,
        }
    }

    /// A device holding exactly `bytes` (arbitrary contents, for fuzzing).
    pub fn with_contents(bytes: Vec<u8>, block: usize, unit: usize) -> SimFlash {
        assert!(unit > 0 && block.is_multiple_of(unit) && bytes.len().is_multiple_of(block));
        SimFlash {
            bytes,
            block,
            unit,
            budget: None,
            powered: true,
        }
    }

    /// Power is lost after `bytes` more programmed bytes: the program that
    /// crosses the limit writes only the bytes before it; an erase with no
    /// budget left erases only the first half of its block. Every later
    /// operation fails until [`SimFlash::power_on`].
    pub fn cut_power_after(&mut self, bytes: usize) {
        self.budget = Some(bytes);
    }

    /// Power comes back (a reboot): no limit, contents as they were left.
    pub fn power_on(&mut self) {
        self.budget = None;
        self.powered = true;
    }

    /// Whether power was lost.
    pub fn power_lost(&self) -> bool {
        !self.powered
    }

    /// The raw contents.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The raw contents, to tamper with.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn lose_power(&mut self) -> FlashError {
        self.powered = false;
        FlashError::PowerLost
    }
}

impl Flash for SimFlash {
    fn capacity(&self) -> usize {
        self.bytes.len()
    }

    fn erase_block_size(&self) -> usize {
        self.block
    }

    fn write_unit(&self) -> usize {
        self.unit
    }

    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        if !self.powered {
            return Err(FlashError::PowerLost);
        }
        check_range(self.bytes.len(), offset, buf.len())?;
        buf.copy_from_slice(&self.bytes[offset..offset + buf.len()]);
        Ok(())
    }

    fn program(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        if !self.powered {
            return Err(FlashError::PowerLost);
        }
        check_range(self.bytes.len(), offset, data.len())?;
        if !offset.is_multiple_of(self.unit) || !data.len().is_multiple_of(self.unit) {
            return Err(FlashError::Unaligned { offset });
        }
        let allowed = self.budget.map_or(data.len(), |b| b.min(data.len()));
        for (cell, byte) in self.bytes[offset..offset + allowed].iter_mut().zip(data) {
            *cell &= byte;
        }
        if let Some(budget) = self.budget.as_mut() {
            *budget -= allowed;
            if allowed < data.len() {
                return Err(self.lose_power());
            }
        }
        Ok(())
    }

    fn erase_block(&mut self, offset: usize) -> Result<(), FlashError> {
        if !self.powered {
            return Err(FlashError::PowerLost);
        }
        check_range(self.bytes.len(), offset, self.block)?;
        if !offset.is_multiple_of(self.block) {
            return Err(FlashError::Unaligned { offset });
        }
        let block = &mut self.bytes[offset..offset + self.block];
        match self.budget.as_mut() {
            Some(0) => {
                let half = block.len() / 2;
                block[..half].fill(0xff);
                Err(self.lose_power())
            }
            Some(budget) => {
                *budget -= 1;
                block.fill(0xff);
                Ok(())
            }
            None => {
                block.fill(0xff);
                Ok(())
            }
        }
    }
}
