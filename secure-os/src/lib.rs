//! secure-os: the secure VM's operating system, and the EL1 runtime its images share.
//!
//! The runtime boots an EL1 guest of mVMM (entered at its RAM base with the
//! MMU off and interrupts masked), turns the MMU on with a constant identity
//! map before any Rust runs, installs exception vectors, and offers the few
//! services a small guest needs: a console on the virtual PL011, the virtual
//! timer as a periodic tick through the GICv3 CPU interface, PSCI power calls,
//! and recoverable memory probes for the isolation tests.
//!
//! An image uses it like this:
//!
//! ```ignore
//! secure_os::entry!(main);
//! fn main() -> ! { secure_os::println!("hello"); secure_os::rt::halt() }
//! ```
//!
//! # Design notes
//! - All assembly, system-register and MMIO access lives in `arch`; the rest
//!   (`text`, `keys`, `prompt`, `screen`, `server`) is plain logic tested on the host.
//! - On the host only the logic modules are built, so `cargo test --workspace`
//!   covers them.

#![cfg_attr(target_os = "none", no_std)]

extern crate alloc;

/// The device identity lives in `protocol` so the host computes the same key.
pub use protocol::device_key as keys;
pub mod prompt;
pub mod rollback;
pub mod screen;
pub mod server;
pub mod text;
pub mod touch;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(target_os = "none")]
pub mod rt;

/// Declares the image's entry: `fn() -> !`, run on the boot vCPU with the
/// MMU, vectors and console ready and interrupts masked.
#[cfg(target_os = "none")]
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The runtime's call into this image (see `secure_os::entry!`).
        #[unsafe(export_name = "__secure_os_image_main")]
        extern "Rust" fn __secure_os_image_main() -> ! {
            let main: fn() -> ! = $main;
            main()
        }
    };
}

/// Prints to the console, without a newline (see [`println!`]).
#[cfg(target_os = "none")]
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::rt::console_print(format_args!($($arg)*))
    };
}

/// Prints one line to the console. mvmm prefixes it with the VM's name and
/// turns `\n` into `\r\n`.
#[cfg(target_os = "none")]
#[macro_export]
macro_rules! println {
    () => {
        $crate::print!("\n")
    };
    ($($arg:tt)*) => {
        $crate::rt::console_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
