//! The trusted display: which framebuffer is on screen, and the bytes mvmm
//! hands the scan-out.
//!
//! The scan-out is QEMU's `ramfb`, programmed through fw_cfg: its file
//! `etc/ramfb` takes a 28-byte big-endian record (framebuffer address,
//! fourcc, flags, width, height, stride), written by fw_cfg DMA. Only mvmm
//! reaches fw_cfg (board validation), so only mvmm decides what is shown.
//!
//! Normally the rich VM's framebuffer is scanned out. The secure VM takes
//! the display for a trusted screen and gives it back; a secure VM that
//! resets gives it back too. The rich VM can only ever be refused: it
//! cannot map the secure framebuffer nor fw_cfg, and what it writes into
//! its own framebuffer is not on screen while the secure one is.
//!
//! The EL2 layer (`mvmm/src/arch/aarch64/fwcfg.rs`) only moves the bytes
//! this module computes.

use crate::partition::{Display, VmKind};

/// Offsets of fw_cfg's registers in its MMIO page (QEMU `virt`).
pub mod reg {
    /// Data: reads the selected item, one to eight bytes at a time.
    pub const DATA: u64 = 0x00;
    /// Selector (16-bit, big-endian).
    pub const SELECTOR: u64 = 0x08;
    /// DMA descriptor address, 64-bit big-endian: the high word here...
    pub const DMA_HIGH: u64 = 0x10;
    /// ...and the low word here; writing it starts the transfer.
    pub const DMA_LOW: u64 = 0x14;
}

/// fw_cfg items with fixed selectors.
pub mod item {
    /// The signature, `QEMU`.
    pub const SIGNATURE: u16 = 0x0000;
    /// The feature bitmap (little-endian u32).
    pub const ID: u16 = 0x0001;
    /// The file directory: a big-endian u32 count, then [`super::DIR_ENTRY_LEN`]-byte entries.
    pub const FILE_DIR: u16 = 0x0019;
}

/// What item [`item::SIGNATURE`] holds.
pub const SIGNATURE: [u8; 4] = *b"QEMU";
/// Feature bit of [`item::ID`]: the DMA interface exists.
pub const FEATURE_DMA: u32 = 1 << 1;

/// DMA control bits (the descriptor's first word).
pub mod dma {
    pub const ERROR: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const SKIP: u32 = 1 << 2;
    pub const SELECT: u32 = 1 << 3;
    pub const WRITE: u32 = 1 << 4;
}

/// Bytes of one fw_cfg file directory entry: be32 size, be16 selector,
/// be16 reserved, 56 bytes of NUL-padded name.
pub const DIR_ENTRY_LEN: usize = 64;
/// The ramfb configuration file.
pub const RAMFB_FILE: &str = "etc/ramfb";
/// Bytes of the ramfb configuration record.
pub const RAMFB_CONFIG_LEN: usize = 28;
/// DRM fourcc `XR24` (XRGB8888, little-endian: bytes B, G, R, unused).
pub const FOURCC_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
/// Most directory entries mvmm looks through (QEMU has a few dozen).
pub const MAX_DIR_ENTRIES: u32 = 1024;

/// The selector and size of `name` if `entry` (one directory entry) is that
/// file.
pub fn dir_entry_matches(entry: &[u8; DIR_ENTRY_LEN], name: &str) -> Option<(u16, u32)> {
    let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
    let select = u16::from_be_bytes([entry[4], entry[5]]);
    let stored = &entry[8..];
    let len = stored.iter().position(|&b| b == 0).unwrap_or(stored.len());
    (&stored[..len] == name.as_bytes()).then_some((select, size))
}

/// The ramfb record that scans out a `display`-shaped framebuffer at
/// physical address `base`.
pub fn ramfb_config(display: &Display, base: u64) -> [u8; RAMFB_CONFIG_LEN] {
    let mut out = [0u8; RAMFB_CONFIG_LEN];
    out[0..8].copy_from_slice(&base.to_be_bytes());
    out[8..12].copy_from_slice(&FOURCC_XRGB8888.to_be_bytes());
    // flags (4 bytes) stay 0.
    out[16..20].copy_from_slice(&display.width.to_be_bytes());
    out[20..24].copy_from_slice(&display.height.to_be_bytes());
    out[24..28].copy_from_slice(&display.stride().to_be_bytes());
    out
}

/// A fw_cfg DMA descriptor: control, length and address, big-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaDescriptor {
    pub control: u32,
    pub length: u32,
    pub address: u64,
}

impl DmaDescriptor {
    /// Selects item `selector` and writes `length` bytes from `address`
    /// into it.
    pub const fn write_item(selector: u16, length: u32, address: u64) -> Self {
        DmaDescriptor {
            control: (selector as u32) << 16 | dma::SELECT | dma::WRITE,
            length,
            address,
        }
    }

    /// The three words as they lie in memory (each big-endian).
    pub const fn words(&self) -> (u32, u32, u64) {
        (
            self.control.to_be(),
            self.length.to_be(),
            self.address.to_be(),
        )
    }

    /// What a control word read back after the transfer means: `Some(true)`
    /// done, `Some(false)` failed, `None` still running. The device clears
    /// the word when done and sets [`dma::ERROR`] on failure.
    pub const fn finished(control_read_back: u32) -> Option<bool> {
        let control = u32::from_be(control_read_back);
        if control & dma::ERROR != 0 {
            Some(false)
        } else if control == 0 {
            Some(true)
        } else {
            None
        }
    }
}

/// Why a display request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Only a secure VM may take or release the display.
    NotSecure,
    /// The board has no display.
    NoDisplay,
}

/// Which VM's framebuffer is on screen.
///
/// # Invariants
/// The secure framebuffer is on screen only between a secure VM's take and
/// its release (or its reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Screen {
    on_screen: VmKind,
}

impl Default for Screen {
    fn default() -> Self {
        Screen::new()
    }
}

impl Screen {
    /// At boot the rich VM's framebuffer is on screen.
    pub const fn new() -> Self {
        Screen {
            on_screen: VmKind::Rich,
        }
    }

    /// The VM kind whose framebuffer is scanned out.
    pub const fn on_screen(&self) -> VmKind {
        self.on_screen
    }

    /// A VM of kind `caller` takes (`take`) or releases the display. On
    /// success, `Some(kind)` when the scan-out must be pointed at the
    /// framebuffer of `kind`, `None` when it already shows the right one.
    pub fn request(
        &mut self,
        display: Option<&Display>,
        caller: VmKind,
        take: bool,
    ) -> Result<Option<VmKind>, Refused> {
        if caller != VmKind::Secure {
            return Err(Refused::NotSecure);
        }
        if display.is_none() {
            return Err(Refused::NoDisplay);
        }
        let wanted = if take { VmKind::Secure } else { VmKind::Rich };
        Ok(self.show(wanted))
    }

    /// The secure VM stopped (reset, powered off): the rich VM's
    /// framebuffer comes back. `Some(Rich)` when the scan-out must change.
    pub fn secure_stopped(&mut self) -> Option<VmKind> {
        self.show(VmKind::Rich)
    }

    fn show(&mut self, wanted: VmKind) -> Option<VmKind> {
        (self.on_screen != wanted).then(|| {
            self.on_screen = wanted;
            wanted
        })
    }
}

/// The longest the secure VM may hold the trusted path (display, console
/// and input focus) in one go. secure-os ends an unanswered approval after
/// 60 s and keeps the path at most a few seconds more while the user is
/// still typing; a secure VM that holds it longer has stopped answering,
/// and mvmm gives the path back to the rich VM (the phone must not stay
/// stuck on a trusted screen).
pub const HOLD_LIMIT_SECONDS: u64 = 120;

/// When the secure VM took the trusted path (counter ticks), if it holds
/// it: decides when mvmm takes it back. mvmm keeps `since` in an atomic
/// and asks [`PathLease::expired`] on the rich VM's timer interrupts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathLease {
    since: Option<u64>,
}

impl PathLease {
    /// Nobody holds the path.
    pub const fn none() -> Self {
        PathLease { since: None }
    }

    /// The secure VM takes (or, already holding, keeps) the path at `now`:
    /// the lease starts with the first take, not renewed by later ones.
    pub fn take(&mut self, now: u64) {
        self.since.get_or_insert(now);
    }

    /// Whether the holder has kept the path past [`HOLD_LIMIT_SECONDS`]
    /// at `now` (counter at `frequency` Hz; a counter that went backwards
    /// counts as no time).
    pub fn expired(&self, now: u64, frequency: u64) -> bool {
        self.since.is_some_and(|since| {
            now.saturating_sub(since) >= HOLD_LIMIT_SECONDS.saturating_mul(frequency.max(1))
        })
    }

    /// As a single word for an atomic (0: nobody holds it).
    pub fn to_word(self) -> u64 {
        self.since.map_or(0, |since| since.max(1))
    }

    pub fn from_word(word: u64) -> Self {
        PathLease {
            since: (word != 0).then_some(word),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::MemRange;

    #[test]
    fn a_lease_expires_after_the_hold_limit_from_the_first_take() {
        let hz = 62_500_000;
        let mut lease = PathLease::none();
        assert!(!lease.expired(u64::MAX, hz), "nobody holds it");
        lease.take(1000);
        lease.take(1000 + 50 * hz); // a second take does not renew it
        assert!(!lease.expired(1000 + HOLD_LIMIT_SECONDS * hz - 1, hz));
        assert!(lease.expired(1000 + HOLD_LIMIT_SECONDS * hz, hz));
        assert!(!lease.expired(0, hz), "a counter that went back is no time");
        let word = lease.to_word();
        assert_eq!(PathLease::from_word(word), lease);
        let released = PathLease::from_word(PathLease::none().to_word());
        assert_eq!(released.to_word(), 0);
        assert!(!released.expired(u64::MAX, hz));
        let mut at_zero = PathLease::none();
        at_zero.take(0);
        assert_ne!(at_zero.to_word(), 0, "a take at counter 0 still holds");
    }

    const DISPLAY: Display = Display {
        fw_cfg: MemRange::new(0x0902_0000, 0x1000),
        width: 800,
        height: 480,
        rich_framebuffer: 0x7f00_0000,
        secure_framebuffer: 0x42e0_0000,
    };

    #[test]
    fn the_ramfb_record_is_big_endian_xr24() {
        let cfg = ramfb_config(&DISPLAY, 0x42e0_0000);
        assert_eq!(
            cfg,
            [
                0, 0, 0, 0, 0x42, 0xe0, 0, 0, // address
                b'4', b'2', b'R', b'X', // fourcc XR24 as a big-endian u32
                0, 0, 0, 0, // flags
                0, 0, 0x03, 0x20, // 800
                0, 0, 0x01, 0xe0, // 480
                0, 0, 0x0c, 0x80, // 3200
            ]
        );
        assert_eq!(FOURCC_XRGB8888, 0x3432_5258);
    }

    #[test]
    fn directory_entries_match_by_exact_name() {
        let mut entry = [0u8; DIR_ENTRY_LEN];
        entry[0..4].copy_from_slice(&28u32.to_be_bytes());
        entry[4..6].copy_from_slice(&0x0025u16.to_be_bytes());
        entry[8..8 + RAMFB_FILE.len()].copy_from_slice(RAMFB_FILE.as_bytes());
        assert_eq!(dir_entry_matches(&entry, RAMFB_FILE), Some((0x25, 28)));
        assert_eq!(dir_entry_matches(&entry, "etc/ramf"), None);
        assert_eq!(dir_entry_matches(&entry, "etc/ramfb2"), None);
        // A name that fills all 56 bytes without a NUL is compared whole.
        let mut full = [b'a'; DIR_ENTRY_LEN];
        full[..8].fill(0);
        assert_eq!(dir_entry_matches(&full, &"a".repeat(56)), Some((0, 0)));
    }

    #[test]
    fn dma_descriptors_select_and_write() {
        let d = DmaDescriptor::write_item(0x25, 28, 0x4020_1000);
        assert_eq!(d.control, 0x0025_0018);
        let (control, length, address) = d.words();
        assert_eq!(control.to_ne_bytes(), [0x00, 0x25, 0x00, 0x18]);
        assert_eq!(length.to_ne_bytes(), [0, 0, 0, 28]);
        assert_eq!(address.to_ne_bytes(), [0, 0, 0, 0, 0x40, 0x20, 0x10, 0]);
        assert_eq!(DmaDescriptor::finished(0), Some(true));
        assert_eq!(DmaDescriptor::finished(1u32.to_be()), Some(false));
        assert_eq!(DmaDescriptor::finished(control), None);
    }

    #[test]
    fn only_the_secure_vm_switches_the_screen() {
        let mut screen = Screen::new();
        assert_eq!(screen.on_screen(), VmKind::Rich);
        assert_eq!(
            screen.request(Some(&DISPLAY), VmKind::Rich, true),
            Err(Refused::NotSecure)
        );
        assert_eq!(
            screen.request(None, VmKind::Secure, true),
            Err(Refused::NoDisplay)
        );
        assert_eq!(screen.on_screen(), VmKind::Rich);
        assert_eq!(
            screen.request(Some(&DISPLAY), VmKind::Secure, true),
            Ok(Some(VmKind::Secure))
        );
        // Taking twice changes nothing; the rich VM cannot take it back.
        assert_eq!(
            screen.request(Some(&DISPLAY), VmKind::Secure, true),
            Ok(None)
        );
        assert_eq!(
            screen.request(Some(&DISPLAY), VmKind::Rich, false),
            Err(Refused::NotSecure)
        );
        assert_eq!(screen.on_screen(), VmKind::Secure);
        assert_eq!(
            screen.request(Some(&DISPLAY), VmKind::Secure, false),
            Ok(Some(VmKind::Rich))
        );
        assert_eq!(
            screen.request(Some(&DISPLAY), VmKind::Secure, false),
            Ok(None)
        );
        // A secure VM that resets while on screen gives the display back.
        screen
            .request(Some(&DISPLAY), VmKind::Secure, true)
            .unwrap();
        assert_eq!(screen.secure_stopped(), Some(VmKind::Rich));
        assert_eq!(screen.secure_stopped(), None);
    }
}
