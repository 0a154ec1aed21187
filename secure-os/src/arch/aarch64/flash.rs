//! The secure VM's NOR flash: a CFI device with the Intel/Sharp command set
//! (QEMU virt's second pflash bank), two 16-bit chips side by side on a
//! 32-bit bus, so every command and status is doubled (`0x00XX00XX`).
//!
//! The bank is plain MMIO: in read-array mode it reads like memory; a
//! command written to an address switches the chips until `0xFF` (read
//! array) is written back. Every operation ends in read-array mode. Status
//! is polled a bounded number of times; a device that never becomes ready
//! is reported, never waited for forever.

use core::ptr::{read_volatile, write_volatile};
use secure_store::flash::check_range;
use secure_store::{Flash, FlashError};

use super::board::{FLASH_BASE, FLASH_SIZE};

const READ_ARRAY: u32 = 0x00ff_00ff;
const READ_STATUS: u32 = 0x0070_0070;
const CLEAR_STATUS: u32 = 0x0050_0050;
const PROGRAM: u32 = 0x0040_0040;
const ERASE_SETUP: u32 = 0x0020_0020;
const ERASE_CONFIRM: u32 = 0x00d0_00d0;
const CFI_QUERY: u32 = 0x0098_0098;
/// SR.7 (write state machine ready) in both chips.
const STATUS_READY: u32 = 0x0080_0080;
/// SR.5 erase error, SR.4 program error, SR.3 VPP low, SR.1 block locked.
const STATUS_ERRORS: u32 = 0x003a_003a;
/// Status reads before giving up on one operation.
const POLL_LIMIT: u32 = 1_000_000;
/// The erase block of QEMU's pflash on `virt` (and of common 2x16-bit parts).
pub const ERASE_BLOCK: usize = 256 * 1024;
/// Program granularity: one 32-bit bus word.
const WORD: usize = 4;

/// Why the flash could not be used at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The board gives the secure VM no secure-storage device.
    NotOnBoard,
    /// Nothing answered the CFI query with "QRY" at the device's address.
    NoCfiAnswer { base: usize, got: [u32; 3] },
}

/// The board's flash bank, owned by this driver.
///
/// # Invariants
/// `[base, base + size)` is the secure VM's `secure-storage` device from the
/// board file: MMIO that this VM's stage-2 map and the identity map cover
/// (as device memory), that no Rust object lives in, and that no other
/// code of this OS touches; `base` and `size` are multiples of
/// [`ERASE_BLOCK`]. Between operations the chips are in read-array mode.
pub struct CfiFlash {
    base: usize,
    size: usize,
}

impl CfiFlash {
    /// Takes the board's flash and checks that a CFI device answers there.
    /// Call once: a second instance would interleave commands.
    pub fn take() -> Result<CfiFlash, ProbeError> {
        if FLASH_SIZE == 0
            || !FLASH_BASE.is_multiple_of(ERASE_BLOCK)
            || !FLASH_SIZE.is_multiple_of(ERASE_BLOCK)
        {
            return Err(ProbeError::NotOnBoard);
        }
        let flash = CfiFlash {
            base: FLASH_BASE,
            size: FLASH_SIZE,
        };
        // CFI query: write 0x98 at word 0x55; words 0x10..0x12 read "QRY".
        flash.write_word(0x55 * WORD, CFI_QUERY);
        let got = [0x10, 0x11, 0x12].map(|w| flash.read_word(w * WORD));
        flash.write_word(0, READ_ARRAY);
        let expected = [b'Q', b'R', b'Y'].map(|c| u32::from(c) * 0x0001_0001);
        if got != expected {
            return Err(ProbeError::NoCfiAnswer {
                base: FLASH_BASE,
                got,
            });
        }
        Ok(flash)
    }

    /// Physical address of the bank.
    pub fn base(&self) -> usize {
        self.base
    }

    fn read_word(&self, offset: usize) -> u32 {
        debug_assert!(offset + WORD <= self.size && offset.is_multiple_of(WORD));
        // SAFETY: by the type's invariants the bank is device memory mapped
        // for this VM and owned by this driver; the callers keep `offset`
        // word aligned and inside the bank.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_word(&self, offset: usize, value: u32) {
        debug_assert!(offset + WORD <= self.size && offset.is_multiple_of(WORD));
        // SAFETY: as in `read_word`; a write to the bank is a command or
        // data for the chips, it modifies no memory Rust knows about.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) };
    }

    /// Polls the status at `offset` until ready; returns the status.
    fn wait_ready(&self, offset: usize) -> Result<u32, FlashError> {
        // After a program or erase command the chips answer with status
        // already; the explicit command makes that independent of the part.
        self.write_word(offset, READ_STATUS);
        for _ in 0..POLL_LIMIT {
            let status = self.read_word(offset);
            if status & STATUS_READY == STATUS_READY {
                return Ok(status);
            }
            core::hint::spin_loop();
        }
        self.write_word(offset, READ_ARRAY);
        Err(FlashError::Timeout { offset })
    }

    /// Ends an operation: clears error bits, back to read-array mode.
    fn finish(&self, offset: usize, status: u32) -> u32 {
        if status & STATUS_ERRORS != 0 {
            self.write_word(offset, CLEAR_STATUS);
        }
        self.write_word(offset, READ_ARRAY);
        status & STATUS_ERRORS
    }
}

impl Flash for CfiFlash {
    fn capacity(&self) -> usize {
        self.size
    }

    fn erase_block_size(&self) -> usize {
        ERASE_BLOCK
    }

    fn write_unit(&self) -> usize {
        WORD
    }

    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        check_range(self.size, offset, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done;
            let word = self.read_word(at & !(WORD - 1)).to_le_bytes();
            let start = at % WORD;
            let n = (WORD - start).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&word[start..start + n]);
            done += n;
        }
        Ok(())
    }

    fn program(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        check_range(self.size, offset, data.len())?;
        if !offset.is_multiple_of(WORD) || !data.len().is_multiple_of(WORD) {
            return Err(FlashError::Unaligned { offset });
        }
        // Word after word without going back to read-array mode in
        // between (the command set allows a program command in status
        // mode): each switch between array and command mode is a change of
        // the memory map for QEMU's pflash, which flushes every CPU's TLB.
        // One status check per word, one return to read-array at the end.
        let mut last = None;
        for (i, chunk) in data.chunks_exact(WORD).enumerate() {
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if value == u32::MAX {
                continue; // programming ones changes nothing
            }
            let at = offset + i * WORD;
            self.write_word(at, PROGRAM);
            self.write_word(at, value);
            let status = self.wait_ready(at)?;
            if status & STATUS_ERRORS != 0 {
                self.finish(at, status);
                return Err(FlashError::ProgramFailed { offset: at, status });
            }
            last = Some(at);
        }
        if let Some(at) = last {
            self.write_word(at, READ_ARRAY);
        }
        Ok(())
    }

    fn erase_block(&mut self, offset: usize) -> Result<(), FlashError> {
        check_range(self.size, offset, ERASE_BLOCK)?;
        if !offset.is_multiple_of(ERASE_BLOCK) {
            return Err(FlashError::Unaligned { offset });
        }
        self.write_word(offset, ERASE_SETUP);
        self.write_word(offset, ERASE_CONFIRM);
        let status = self.wait_ready(offset)?;
        if self.finish(offset, status) != 0 {
            return Err(FlashError::EraseFailed { offset, status });
        }
        Ok(())
    }
}
