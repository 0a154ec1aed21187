//! The physical PL011 UART that mvmm owns: polled byte in, byte out.

use crate::board::BOARD;
use core::ptr;

const DR: usize = 0x000;
const FR: usize = 0x018;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;

fn reg(offset: usize) -> *mut u32 {
    (BOARD.uart.mmio.base as usize + offset) as *mut u32
}

fn read(offset: usize) -> u32 {
    // SAFETY: the UART's MMIO page is identity mapped as device memory at
    // EL2, no VM has it in its stage-2 map, and a 32-bit read of FR or DR
    // has no effect beyond the UART.
    unsafe { ptr::read_volatile(reg(offset)) }
}

/// Sends one byte, waiting while the transmit FIFO is full.
pub fn console_write_byte(byte: u8) {
    while read(FR) & FR_TXFF != 0 {
        core::hint::spin_loop();
    }
    // SAFETY: as in `read`; writing DR queues one byte for transmission.
    unsafe { ptr::write_volatile(reg(DR), u32::from(byte)) }
}

/// A received byte, if one is waiting.
pub fn console_read_byte() -> Option<u8> {
    if read(FR) & FR_RXFE != 0 {
        None
    } else {
        Some(read(DR) as u8)
    }
}

const IMSC: usize = 0x038;
const INT_RX: u32 = 1 << 4;
const INT_RT: u32 = 1 << 6;

/// Raises the UART's interrupt when input arrives (receive and receive
/// timeout), so mvmm need not poll.
pub fn enable_rx_interrupt() {
    // SAFETY: as in `read`; IMSC only selects which UART events interrupt.
    unsafe { ptr::write_volatile(reg(IMSC), INT_RX | INT_RT) }
}
