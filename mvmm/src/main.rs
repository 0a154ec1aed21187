//! mVMM: a microvisor for aarch64 handsets.
//!
//! It runs at EL2, splits the machine into statically partitioned VMs (the
//! rich VM and the secure VM of `boards/<board>/board.toml`), and gives each
//! only its own CPUs, RAM and devices. See docs/architecture.md.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod arch;
#[cfg(target_os = "none")]
mod hv;

/// The board and partition, generated at build time from the board file.
#[cfg(target_os = "none")]
mod board {
    include!(concat!(env!("OUT_DIR"), "/board.rs"));
    include!(concat!(env!("OUT_DIR"), "/boot_authority.rs"));
}

/// Logs one line from mvmm itself on the console (prefix `[mvmm] `).
#[cfg(target_os = "none")]
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log_line(format_args!($($arg)*))
    };
}

/// Formats a log line into a bounded buffer and writes it in one piece, so
/// that lines from different CPUs never interleave.
#[cfg(target_os = "none")]
pub fn log_line(args: core::fmt::Arguments<'_>) {
    use core::fmt::Write;
    struct Line {
        buf: [u8; 240],
        len: usize,
    }
    impl Write for Line {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let room = self.buf.len() - self.len;
            let n = s.len().min(room);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut line = Line {
        buf: [0; 240],
        len: 0,
    };
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    hv::console_write(hv::MVMM_SOURCE, &line.buf[..line.len]);
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    use core::fmt::Write;
    struct Raw;
    impl Write for Raw {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            s.bytes().for_each(arch::console_write_byte);
            Ok(())
        }
    }
    // Bypasses the console lock: the panicking CPU may hold it.
    let _ = write!(Raw, "\r\n[mvmm] PANIC: {info}\r\n");
    arch::system_off()
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("mvmm runs at EL2 on an aarch64 machine; build and boot it with `cargo xtask run`.");
    std::process::exit(1);
}
