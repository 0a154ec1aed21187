//! guest-rt: the EL1 runtime every guest image of mVMM is built on.
//!
//! The runtime boots an EL1 guest of mVMM (entered at its RAM base with the
//! MMU off and interrupts masked), turns the MMU on with a constant identity
//! map before any Rust runs, installs exception vectors, and offers the few
//! services a small guest needs: a heap, a console on the virtual PL011, the
//! virtual timer as a periodic tick through the GICv3 CPU interface, PSCI
//! power calls, the SMCCC conduit to mvmm, and recoverable memory probes for
//! the isolation tests. Its build script links each image at its VM's RAM
//! (`vm-<name>.ld`, from the board file) and hands the board's addresses to
//! the runtime as constants (`arch::board`).
//!
//! It is to secure-os and the probe test guest what a payload runtime is to
//! its payloads: the image brings its own `main` and its own devices.
//!
//! An image uses it like this:
//!
//! ```ignore
//! guest_rt::entry!(main);
//! fn main() -> ! { guest_rt::println!("hello"); guest_rt::rt::halt() }
//! ```
//!
//! # Design notes
//! - All assembly, system-register and MMIO access lives in `arch`; `rt` is
//!   the safe facade an image uses. The panic handler is the runtime's.
//! - `text` (console lines, hex numbers) is plain logic: on the host only it
//!   is built, so `cargo test --workspace` covers it.

#![cfg_attr(target_os = "none", no_std)]

pub mod text;

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
        /// The runtime's call into this image (see `guest_rt::entry!`).
        #[unsafe(export_name = "__guest_rt_image_main")]
        extern "Rust" fn __guest_rt_image_main() -> ! {
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
