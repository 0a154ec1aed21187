//! A virtual PL011 UART: the register file a guest sees at its UART address.
//!
//! Every guest access traps (the page is not mapped at stage 2); the arch
//! layer calls [`VirtualPl011::read`] / [`VirtualPl011::write`]. Output goes
//! to the console multiplexer, input comes from the physical UART when the VM
//! has console focus and waits in a small receive FIFO.

/// Register offsets.
mod reg {
    pub const DR: u64 = 0x000;
    pub const RSR_ECR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
    pub const ID_START: u64 = 0xfe0;
}

/// Flag register bits.
const FR_RXFE: u32 = 1 << 4;
const FR_RXFF: u32 = 1 << 6;
const FR_TXFE: u32 = 1 << 7;
/// Interrupt bits (RIS, MIS, IMSC, ICR).
pub const INT_RX: u32 = 1 << 4;
pub const INT_TX: u32 = 1 << 5;
pub const INT_RT: u32 = 1 << 6;

/// PrimeCell peripheral and cell id bytes of an Arm PL011 r1p5, at
/// 0xfe0..0xffc, which drivers check before binding.
const ID: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// Receive FIFO depth (the PL011 has 32 entries).
pub const RX_FIFO: usize = 32;

/// A guest access the device cannot take: unknown size or misaligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAccess;

/// State of one virtual PL011.
///
/// # Invariants
/// `rx_len <= RX_FIFO`; the bytes waiting are `rx[rx_head..]` wrapping.
#[derive(Clone, Debug)]
pub struct VirtualPl011 {
    cr: u32,
    lcr_h: u32,
    ibrd: u32,
    fbrd: u32,
    ifls: u32,
    imsc: u32,
    ris: u32,
    dmacr: u32,
    rx: [u8; RX_FIFO],
    rx_head: usize,
    rx_len: usize,
}

impl Default for VirtualPl011 {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualPl011 {
    pub const fn new() -> Self {
        VirtualPl011 {
            // Reset values: TXE and RXE set, UART disabled.
            cr: 0x300,
            lcr_h: 0,
            ibrd: 0,
            fbrd: 0,
            ifls: 0x12,
            imsc: 0,
            // The transmitter is always ready: output never waits.
            ris: INT_TX,
            dmacr: 0,
            rx: [0; RX_FIFO],
            rx_head: 0,
            rx_len: 0,
        }
    }

    /// Queues a byte typed for this VM. False (and the byte is not
    /// queued) when the FIFO is full; the caller keeps it for later.
    pub fn push_input(&mut self, byte: u8) -> bool {
        if self.rx_len == RX_FIFO {
            return false;
        }
        self.rx[(self.rx_head + self.rx_len) % RX_FIFO] = byte;
        self.rx_len += 1;
        self.ris |= INT_RX | INT_RT;
        true
    }

    /// Room left in the receive FIFO.
    pub fn input_space(&self) -> usize {
        RX_FIFO - self.rx_len
    }

    /// True when an unmasked interrupt is raised (the line to the vGIC).
    pub fn interrupt_pending(&self) -> bool {
        self.ris & self.imsc != 0
    }

    fn pop_input(&mut self) -> Option<u8> {
        if self.rx_len == 0 {
            return None;
        }
        let byte = self.rx[self.rx_head];
        self.rx_head = (self.rx_head + 1) % RX_FIFO;
        self.rx_len -= 1;
        if self.rx_len == 0 {
            self.ris &= !(INT_RX | INT_RT);
        }
        Some(byte)
    }

    fn check(offset: u64, size: u8) -> Result<(), BadAccess> {
        // Drivers use 8-, 16- and 32-bit accesses (Linux's uses 16).
        let aligned = offset.is_multiple_of(u64::from(size));
        if aligned && matches!(size, 1 | 2 | 4) {
            Ok(())
        } else {
            Err(BadAccess)
        }
    }

    /// A guest read of `size` bytes at `offset` from the UART base.
    pub fn read(&mut self, offset: u64, size: u8) -> Result<u32, BadAccess> {
        Self::check(offset, size)?;
        Ok(match offset {
            reg::DR => self.pop_input().map_or(0, u32::from),
            reg::FR => {
                let mut fr = FR_TXFE;
                if self.rx_len == 0 {
                    fr |= FR_RXFE;
                }
                if self.rx_len == RX_FIFO {
                    fr |= FR_RXFF;
                }
                fr
            }
            reg::IBRD => self.ibrd,
            reg::FBRD => self.fbrd,
            reg::LCR_H => self.lcr_h,
            reg::CR => self.cr,
            reg::IFLS => self.ifls,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris,
            reg::MIS => self.ris & self.imsc,
            reg::DMACR => self.dmacr,
            o if (reg::ID_START..reg::ID_START + 32).contains(&o) => {
                ID[((o - reg::ID_START) / 4) as usize]
            }
            // RSR, ILPR and reserved offsets read as zero.
            _ => 0,
        })
    }

    /// A guest write; returns the byte to transmit for a DR write.
    pub fn write(&mut self, offset: u64, size: u8, value: u32) -> Result<Option<u8>, BadAccess> {
        Self::check(offset, size)?;
        match offset {
            reg::DR => return Ok(Some(value as u8)),
            reg::IBRD => self.ibrd = value & 0xffff,
            reg::FBRD => self.fbrd = value & 0x3f,
            reg::LCR_H => self.lcr_h = value & 0xff,
            reg::CR => self.cr = value & 0xff87,
            reg::IFLS => self.ifls = value & 0x3f,
            reg::IMSC => self.imsc = value & 0x7ff,
            // The TX interrupt stays raised: the virtual FIFO is always empty.
            reg::ICR => self.ris &= !(value & !INT_TX),
            reg::DMACR => self.dmacr = value & 0x7,
            reg::RSR_ECR | reg::ILPR => {}
            // Writes to read-only or reserved offsets are ignored.
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmit_and_flags() {
        let mut u = VirtualPl011::new();
        assert_eq!(u.write(reg::DR, 4, 0x141), Ok(Some(0x41)));
        assert_eq!(u.write(reg::DR, 1, b'x'.into()), Ok(Some(b'x')));
        assert_eq!(u.read(reg::FR, 4), Ok(FR_TXFE | FR_RXFE));
        assert_eq!(u.read(0xfe0, 4), Ok(0x11));
        assert_eq!(u.read(0xffc, 4), Ok(0xb1));
    }

    #[test]
    fn receive_fifo_fills_drains_and_interrupts() {
        let mut u = VirtualPl011::new();
        u.write(reg::IMSC, 4, INT_RX).unwrap();
        assert!(!u.interrupt_pending());
        for i in 0..RX_FIFO as u8 {
            assert!(u.push_input(i));
        }
        assert!(!u.push_input(0xff), "a full FIFO refuses input");
        assert!(u.interrupt_pending());
        assert_eq!(u.read(reg::FR, 4).unwrap() & FR_RXFF, FR_RXFF);
        for i in 0..RX_FIFO as u32 {
            assert_eq!(u.read(reg::DR, 4), Ok(i));
        }
        assert_eq!(u.read(reg::DR, 4), Ok(0));
        assert!(!u.interrupt_pending());
        assert_eq!(u.input_space(), RX_FIFO);
    }

    #[test]
    fn misaligned_and_odd_sized_accesses_are_refused() {
        let mut u = VirtualPl011::new();
        assert_eq!(u.read(reg::FR + 1, 2), Err(BadAccess));
        assert_eq!(u.read(reg::FR, 8), Err(BadAccess));
        assert_eq!(u.write(reg::CR + 2, 4, 0), Err(BadAccess));
        assert_eq!(
            u.write(reg::IMSC, 2, INT_RX),
            Ok(None),
            "16-bit access as Linux does"
        );
        assert_eq!(u.read(0x800, 4), Ok(0), "reserved offsets read as zero");
    }
}
