//! Options the platform's loader gives mvmm at boot (QEMU's `-device
//! loader,data=...` in emulation, the bootloader on a phone): one 64-bit
//! little-endian word in the page just below mvmm's image.
//!
//! ```text
//! bits 0..32   magic "mvmm" (0x6d6d766d): without it, the defaults
//! bits 32..40  console level (see `console::ConsoleMux::set_level`)
//! bits 40..64  zero
//! ```
//! The word is input from outside mvmm: a wrong magic or a non-zero
//! reserved field means "no options", never a guess.

use crate::console::DEFAULT_LEVEL;

/// Where mvmm's image starts inside its reservation: the first 2 MiB are
/// left to the firmware's device tree (QEMU puts its DTB at the start of
/// RAM when the image leaves room).
pub const IMAGE_OFFSET: u64 = 0x20_0000;
/// Magic of a boot options word.
pub const MAGIC: u32 = u32::from_le_bytes(*b"mvmm");

/// The address of the boot options word for an mvmm reservation starting
/// at `mvmm_base`: the last page before the image.
pub const fn address(mvmm_base: u64) -> u64 {
    mvmm_base + IMAGE_OFFSET - 0x1000
}

/// What the loader said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// Console lines marked with a higher level are hidden.
    pub console_level: u8,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            console_level: DEFAULT_LEVEL,
        }
    }
}

impl BootOptions {
    /// Reads the word; anything malformed gives the defaults.
    pub fn decode(word: u64) -> BootOptions {
        if word as u32 != MAGIC || word >> 40 != 0 {
            return BootOptions::default();
        }
        BootOptions {
            console_level: (word >> 32) as u8,
        }
    }

    /// The word a loader writes.
    pub fn encode(&self) -> u64 {
        u64::from(MAGIC) | u64::from(self.console_level) << 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::VERBOSE_LEVEL;

    #[test]
    fn options_round_trip_and_malformed_words_give_the_defaults() {
        let verbose = BootOptions {
            console_level: VERBOSE_LEVEL,
        };
        assert_eq!(BootOptions::decode(verbose.encode()), verbose);
        assert_eq!(verbose.encode(), 0x0000_0007_6d6d_766d);
        for word in [0, u64::MAX, 0x0000_0007_6d6d_766e, 0x0100_0007_6d6d_766d] {
            assert_eq!(
                BootOptions::decode(word),
                BootOptions::default(),
                "{word:#x}"
            );
        }
        assert_eq!(address(0x4000_0000), 0x401f_f000);
    }
}
