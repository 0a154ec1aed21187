//! QEMU's fw_cfg at EL2: finds the `etc/ramfb` file and points the
//! scan-out at a framebuffer with one DMA write (see `mvmm_core::display`
//! for the formats and the decisions).
//!
//! fw_cfg's page is the board's `display.fw_cfg`, which no VM maps (board
//! validation): its DMA reaches all memory. Its registers are a `safe-mmio`
//! block ([`Registers`], big-endian fields typed as such). The DMA
//! descriptor and the record it carries are ordinary memory, not MMIO: they
//! live in a static of mvmm's image, written with volatile stores and
//! published with a barrier before the transfer starts.

use core::ptr::{NonNull, read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};
use mvmm_core::display::{
    DIR_ENTRY_LEN, DmaDescriptor, FEATURE_DMA, MAX_DIR_ENTRIES, RAMFB_CONFIG_LEN, RAMFB_FILE,
    SIGNATURE, dir_entry_matches, item, reg,
};
use mvmm_core::partition::MemRange;
use safe_mmio::fields::{ReadOnly, WriteOnly};
use safe_mmio::{UniqueMmioPointer, field};
use zerocopy::byteorder::{BigEndian, U16, U32};

/// fw_cfg's MMIO registers (QEMU's docs/specs/fw_cfg.rst, "MMIO").
#[repr(C, align(8))]
struct Registers {
    /// Data: each read returns the next byte of the selected item.
    data: ReadOnly<u8>,
    /// The rest of the 64-bit data register (mvmm reads byte by byte).
    _data_wide: [u8; 7],
    /// Selects the item that data reads return.
    selector: WriteOnly<U16<BigEndian>>,
    _reserved: [u8; 6],
    /// DMA descriptor address, high word...
    dma_high: WriteOnly<U32<BigEndian>>,
    /// ...and low word; writing it starts the transfer.
    dma_low: WriteOnly<U32<BigEndian>>,
}

const _: () = assert!(core::mem::offset_of!(Registers, data) as u64 == reg::DATA);
const _: () = assert!(core::mem::offset_of!(Registers, selector) as u64 == reg::SELECTOR);
const _: () = assert!(core::mem::offset_of!(Registers, dma_high) as u64 == reg::DMA_HIGH);
const _: () = assert!(core::mem::offset_of!(Registers, dma_low) as u64 == reg::DMA_LOW);

/// The DMA descriptor (control, length, address: big-endian) and the
/// ramfb record it points at.
#[repr(C, align(16))]
struct DmaArea {
    control: u32,
    length: u32,
    address: u64,
    record: [u8; RAMFB_CONFIG_LEN],
}

/// Touched only through raw pointers by the one [`FwCfg`] (see `OPENED`).
static mut AREA: DmaArea = DmaArea {
    control: 0,
    length: 0,
    address: 0,
    record: [0; RAMFB_CONFIG_LEN],
};
/// Set by the first [`FwCfg::open`]: there is at most one driver, so the
/// DMA area has one user.
static OPENED: AtomicBool = AtomicBool::new(false);

/// Polls of the descriptor before a transfer counts as lost (QEMU
/// completes it during the register write).
const DMA_POLLS: u32 = 1_000_000;

/// The fw_cfg device with its ramfb file found.
pub struct FwCfg {
    regs: UniqueMmioPointer<'static, Registers>,
    ramfb: u16,
}

impl FwCfg {
    /// Checks fw_cfg's signature and DMA feature in `window` and finds
    /// `etc/ramfb`; the error says what is missing. Only the first call
    /// can succeed.
    pub fn open(window: MemRange) -> Result<FwCfg, &'static str> {
        if window.size < size_of::<Registers>() as u64 {
            return Err("the fw_cfg window is too small");
        }
        let Some(base) =
            NonNull::new(window.base as usize as *mut Registers).filter(|p| p.is_aligned())
        else {
            return Err("the fw_cfg window is not 8-byte aligned");
        };
        if OPENED.swap(true, Ordering::AcqRel) {
            return Err("fw_cfg is already in use");
        }
        // SAFETY: `base` is the board's fw_cfg window, aligned and large
        // enough for `Registers` (checked above), device memory in EL2's
        // identity map and in no VM's stage-2 map (board validation). Only
        // the first `open` gets here (`OPENED`), so this is the one pointer
        // to these registers, for as long as mvmm runs.
        let regs = unsafe { UniqueMmioPointer::new(base) };
        let mut dev = FwCfg { regs, ramfb: 0 };
        let mut word = [0u8; 4];
        dev.select(item::SIGNATURE);
        dev.read(&mut word);
        if word != SIGNATURE {
            return Err("no fw_cfg device (signature missing)");
        }
        dev.select(item::ID);
        dev.read(&mut word);
        if u32::from_le_bytes(word) & FEATURE_DMA == 0 {
            return Err("fw_cfg has no DMA interface");
        }
        dev.select(item::FILE_DIR);
        dev.read(&mut word);
        let count = u32::from_be_bytes(word).min(MAX_DIR_ENTRIES);
        let mut entry = [0u8; DIR_ENTRY_LEN];
        for _ in 0..count {
            dev.read(&mut entry);
            if let Some((select, size)) = dir_entry_matches(&entry, RAMFB_FILE) {
                if size as usize != RAMFB_CONFIG_LEN {
                    return Err("fw_cfg's etc/ramfb has an unexpected size");
                }
                dev.ramfb = select;
                return Ok(dev);
            }
        }
        Err("no etc/ramfb in fw_cfg (QEMU started without -device ramfb)")
    }

    /// Writes `record` into `etc/ramfb`: the scan-out shows the
    /// framebuffer it describes from the next frame on.
    pub fn scan_out(&mut self, record: &[u8; RAMFB_CONFIG_LEN]) -> Result<(), &'static str> {
        let area = &raw mut AREA;
        let record_pa = area
            .cast::<u8>()
            .wrapping_add(core::mem::offset_of!(DmaArea, record)) as u64;
        let (control, length, address) =
            DmaDescriptor::write_item(self.ramfb, RAMFB_CONFIG_LEN as u32, record_pa).words();
        // SAFETY: `AREA` is used by this driver alone (`OPENED`), and
        // `&mut self` makes this the only access; the writes are volatile so
        // none is dropped although only the device reads them back.
        unsafe {
            for (i, &b) in record.iter().enumerate() {
                write_volatile((&raw mut (*area).record).cast::<u8>().add(i), b);
            }
            write_volatile(&raw mut (*area).length, length);
            write_volatile(&raw mut (*area).address, address);
            write_volatile(&raw mut (*area).control, control);
        }
        // The descriptor and record reach memory before the device reads
        // them.
        aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
        let descriptor = area as u64;
        // The low word starts the transfer of the descriptor written above.
        field!(self.regs, dma_high).write(U32::new((descriptor >> 32) as u32));
        field!(self.regs, dma_low).write(U32::new(descriptor as u32));
        for _ in 0..DMA_POLLS {
            aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
            // SAFETY: as above; the device writes the control word back.
            let back = unsafe { read_volatile(&raw const (*area).control) };
            match DmaDescriptor::finished(back) {
                Some(true) => return Ok(()),
                Some(false) => return Err("fw_cfg refused the ramfb record"),
                None => core::hint::spin_loop(),
            }
        }
        Err("fw_cfg DMA did not complete")
    }

    fn select(&mut self, selector: u16) {
        field!(self.regs, selector).write(U16::new(selector));
    }

    /// Reads the next `buf.len()` bytes of the selected item.
    fn read(&mut self, buf: &mut [u8]) {
        let mut data = field!(self.regs, data);
        for b in buf {
            *b = data.read();
        }
    }
}
