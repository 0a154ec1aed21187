//! The services an image uses: console, tick, power, probes. All safe;
//! the runtime's panic handler lives here too.

use crate::arch;
use core::fmt;

pub use arch::gic::enable_spi;
pub use arch::probe::{Abort, WriteError, read32 as peek32, write32 as poke32};
pub use arch::psci::{cpu_off, cpu_on, system_off, system_reset, version as psci_version};
pub use arch::timer::{arm_physical, now, physical_fired, start_tick, ticks};
pub use arch::{cpu_index, current_el, halt, timer_frequency, wait_for_interrupt};

/// Prints formatted text on the console (used by `print!`/`println!`).
pub fn console_print(args: fmt::Arguments<'_>) {
    arch::console::print(args);
}

/// One received console byte, if any. Each call costs a trap to mvmm:
/// poll at a slow rate.
pub fn console_read_byte() -> Option<u8> {
    arch::console::read_byte()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::console::emergency_print(format_args!(
        "PANIC on vcpu {}: {info}\n",
        arch::cpu_index()
    ));
    halt()
}
