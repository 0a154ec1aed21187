//! The console: the VM's virtual PL011 (mvmm multiplexes it onto the real
//! UART and adds the VM's prefix and the `\r`).
//!
//! Every access to the device traps to mvmm, so output writes DR without
//! polling FR (the virtual UART never reports a full FIFO), and input is
//! polled by the caller at a slow rate.

use super::board::UART_BASE;
use core::fmt::{self, Write};
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, Ordering};

const DR: usize = 0x00;
const FR: usize = 0x18;
const FR_RXFE: u32 = 1 << 4;

/// Writes bytes to the virtual PL011.
struct Pl011;

impl Pl011 {
    fn write_byte(&mut self, byte: u8) {
        // SAFETY: UART_BASE is the VM's PL011, identity-mapped as device
        // memory; DR is a 32-bit register and writing it sends one byte.
        unsafe { write_volatile((UART_BASE + DR) as *mut u32, u32::from(byte)) };
    }
}

impl Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| self.write_byte(b));
        Ok(())
    }
}

/// Serialises whole prints between vCPUs, so lines do not interleave.
static LOCK: AtomicBool = AtomicBool::new(false);

/// Prints `args` while holding the console lock.
pub fn print(args: fmt::Arguments<'_>) {
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let _ = Pl011.write_fmt(args);
    LOCK.store(false, Ordering::Release);
}

/// Prints without taking the lock: for the fatal paths, which may run while
/// this vCPU holds it.
pub fn emergency_print(args: fmt::Arguments<'_>) {
    let _ = Pl011.write_fmt(args);
}

/// Reads one received byte, if any (one FR read, plus a DR read when a byte
/// is there).
pub fn read_byte() -> Option<u8> {
    // SAFETY: FR and DR are 32-bit registers of the VM's PL011,
    // identity-mapped as device memory; reading DR pops one received byte,
    // which this function returns.
    unsafe {
        if read_volatile((UART_BASE + FR) as *const u32) & FR_RXFE != 0 {
            None
        } else {
            Some(read_volatile((UART_BASE + DR) as *const u32) as u8)
        }
    }
}
