//! The physical PL011 UART that mvmm owns: polled byte in, byte out.
//!
//! Its registers are a `safe-mmio` block ([`Registers`]): each field says
//! whether reading it has an effect (DR pops the receive FIFO) or not (FR).

use crate::board::BOARD;
use core::ptr::NonNull;
use safe_mmio::fields::{ReadPure, ReadPureWrite, ReadWrite};
use safe_mmio::{UniqueMmioPointer, field};

/// The PL011's registers up to the interrupt mask (PrimeCell UART TRM).
#[repr(C, align(4))]
struct Registers {
    /// 0x000 DR: a read takes one received byte, a write queues one.
    dr: ReadWrite<u32>,
    /// 0x004 RSR/ECR and 0x008..0x018 reserved.
    _rsr_reserved: [u32; 5],
    /// 0x018 FR: FIFO and line flags.
    fr: ReadPure<u32>,
    /// 0x01c reserved, 0x020 ILPR, 0x024 IBRD, 0x028 FBRD, 0x02c LCR_H,
    /// 0x030 CR, 0x034 IFLS: set up by firmware, left alone.
    _setup: [u32; 7],
    /// 0x038 IMSC: which UART events raise its interrupt.
    imsc: ReadPureWrite<u32>,
}

const _: () = assert!(core::mem::offset_of!(Registers, fr) == 0x18);
const _: () = assert!(core::mem::offset_of!(Registers, imsc) == 0x38);
const _: () = assert!(size_of::<Registers>() as u64 <= BOARD.uart.mmio.size);

const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
const INT_RX: u32 = 1 << 4;
const INT_RT: u32 = 1 << 6;

/// The UART's registers (board data; a null address fails the build).
const UART: NonNull<Registers> = match NonNull::new(BOARD.uart.mmio.base as usize as *mut Registers)
{
    Some(p) => p,
    None => panic!("the board's UART is at address 0"),
};

/// Held across each access: the console writer (under the console lock,
/// or the panic handler without it) and the input reader (under the input
/// lock) run on different CPUs, and a `UniqueMmioPointer` promises that no
/// other pointer to the registers is in use. A leaf lock held for one
/// register access, in which nothing can panic, so the panic handler can
/// take it too.
static TURN: spin::mutex::Mutex<(), super::Yield> = spin::mutex::Mutex::new(());

/// Runs `f` on the UART's registers, [`TURN`] held.
fn with_uart<R>(f: impl FnOnce(UniqueMmioPointer<'_, Registers>) -> R) -> R {
    let _turn = TURN.lock();
    // SAFETY: `UART` is the board's UART page (a `Registers` fits it,
    // asserted above), identity mapped as device memory at EL2 and in no
    // stage-2 map (board validation). The pointer lives only inside this
    // call, while `TURN` is held: no other pointer to the UART is in use.
    f(unsafe { UniqueMmioPointer::new(UART) })
}

fn flags() -> u32 {
    with_uart(|mut uart| field!(uart, fr).read())
}

/// Sends one byte, waiting while the transmit FIFO is full.
pub fn console_write_byte(byte: u8) {
    while flags() & FR_TXFF != 0 {
        core::hint::spin_loop();
    }
    with_uart(|mut uart| field!(uart, dr).write(u32::from(byte)));
}

/// A received byte, if one is waiting.
pub fn console_read_byte() -> Option<u8> {
    with_uart(|mut uart| {
        if field!(uart, fr).read() & FR_RXFE != 0 {
            None
        } else {
            Some(field!(uart, dr).read() as u8)
        }
    })
}

/// Raises the UART's interrupt when input arrives (receive and receive
/// timeout), so mvmm need not poll.
pub fn enable_rx_interrupt() {
    with_uart(|mut uart| field!(uart, imsc).write(INT_RX | INT_RT));
}
