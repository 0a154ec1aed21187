//! The configuration space of a virtio-input device (virtio 1.2, 5.8.4),
//! as the guest's driver reads it: it writes `select` and `subsel`, then
//! reads `size` and the union that answers.
//!
//! Layout: `select` (byte 0), `subsel` (1), `size` (2), 5 reserved bytes,
//! then 128 bytes of a string, a bitmap, an `absinfo` (min, max, fuzz, flat,
//! res: five little-endian u32) or `devids` (bustype, vendor, product,
//! version: four little-endian u16). A selection the device does not have
//! reads as size 0. Only `select` and `subsel` are writable.

use super::codes::{EV_ABS, EV_KEY, EV_SYN, KEY_CNT};
use crate::virtio::BadAccess;

/// Selectors.
pub mod select {
    pub const UNSET: u8 = 0x00;
    pub const ID_NAME: u8 = 0x01;
    pub const ID_SERIAL: u8 = 0x02;
    pub const ID_DEVIDS: u8 = 0x03;
    pub const PROP_BITS: u8 = 0x10;
    pub const EV_BITS: u8 = 0x11;
    pub const ABS_INFO: u8 = 0x12;
}

/// Bytes of the configuration space.
pub const CONFIG_LEN: usize = 8 + 128;

/// What a device reports about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// ID_NAME (at most 128 bytes are shown).
    pub name: &'static str,
    /// ID_SERIAL.
    pub serial: &'static str,
    /// ID_DEVIDS: bustype, vendor, product, version.
    pub devids: [u16; 4],
    /// Key codes the device may send, as inclusive ranges (below KEY_CNT).
    pub keys: &'static [(u16, u16)],
    /// Absolute axes and their maximum (minimum 0).
    pub abs: &'static [(u16, u32)],
}

/// BUS_VIRTUAL (Linux input.h).
pub const BUS_VIRTUAL: u16 = 0x06;

/// What the rich VM's device is: a keyboard with the keys of QEMU's
/// virtio-keyboard (codes 1..=248) and a touch tablet (BTN_LEFT, BTN_TOUCH,
/// ABS_X and ABS_Y over 0..=32767), the union of the two physical devices.
pub const RICH_INPUT: Profile = Profile {
    name: "mVMM keyboard and tablet",
    serial: "mvmm-input-0",
    devids: [BUS_VIRTUAL, 0x6d56, 0x0001, 0x0001],
    keys: &[(1, 248), (0x110, 0x110), (0x14a, 0x14a)],
    abs: &[(0, 32767), (1, 32767)],
};

/// What the secure VM's device is: the same keys and axes as the rich VM's
/// (secure-os decodes them with `trusted_ui::evdev`).
pub const SECURE_INPUT: Profile = Profile {
    name: "mVMM trusted keyboard and touch",
    serial: "mvmm-input-1",
    ..RICH_INPUT
};

/// A guest's view of one device's configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputConfig {
    profile: Profile,
    select: u8,
    subsel: u8,
}

impl InputConfig {
    pub const fn new(profile: Profile) -> InputConfig {
        InputConfig {
            profile,
            select: select::UNSET,
            subsel: 0,
        }
    }

    /// Back to the state after reset.
    pub fn reset(&mut self) {
        self.select = select::UNSET;
        self.subsel = 0;
    }

    /// The union's payload for the current selection; its length is `size`.
    fn payload(&self) -> ([u8; 128], u8) {
        let mut out = [0u8; 128];
        let p = &self.profile;
        let len = match (self.select, self.subsel) {
            (select::ID_NAME, 0) => copy_str(&mut out, p.name),
            (select::ID_SERIAL, 0) => copy_str(&mut out, p.serial),
            (select::ID_DEVIDS, 0) => {
                for (i, v) in p.devids.iter().enumerate() {
                    out[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
                }
                8
            }
            (select::EV_BITS, kind) => match u16::from(kind) {
                EV_KEY => bitmap(&mut out, p.keys.iter().copied()),
                EV_ABS => bitmap(&mut out, p.abs.iter().map(|(axis, _)| (*axis, *axis))),
                // EV_SYN is implied; other types are not sent.
                EV_SYN => 0,
                _ => 0,
            },
            (select::ABS_INFO, axis) => match p.abs.iter().find(|(a, _)| *a == u16::from(axis)) {
                Some((_, max)) => {
                    // min 0, max, fuzz 0, flat 0, res 0.
                    out[4..8].copy_from_slice(&max.to_le_bytes());
                    20
                }
                None => 0,
            },
            _ => 0,
        };
        (out, len)
    }

    /// The whole configuration space as it reads now.
    pub fn bytes(&self) -> [u8; CONFIG_LEN] {
        let (payload, size) = self.payload();
        let mut out = [0u8; CONFIG_LEN];
        out[0] = self.select;
        out[1] = self.subsel;
        out[2] = size;
        out[8..].copy_from_slice(&payload);
        out
    }

    /// A read of `size` bytes (1, 2, 4 or 8, naturally aligned) at `offset`
    /// into the configuration space.
    pub fn read(&self, offset: u64, size: u8) -> Result<u64, BadAccess> {
        let range = access(offset, size)?;
        let bytes = self.bytes();
        let mut value = [0u8; 8];
        let field = bytes.get(range).ok_or(BadAccess)?;
        value[..field.len()].copy_from_slice(field);
        Ok(u64::from_le_bytes(value))
    }

    /// A write; only the single bytes `select` (offset 0) and `subsel` (1)
    /// are writable (Linux writes them with 8-bit accesses).
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), BadAccess> {
        let byte = u8::try_from(value & 0xff).map_err(|_| BadAccess)?;
        match (offset, size) {
            (0, 1) => self.select = byte,
            (1, 1) => self.subsel = byte,
            _ => return Err(BadAccess),
        }
        Ok(())
    }
}

fn access(offset: u64, size: u8) -> Result<core::ops::Range<usize>, BadAccess> {
    if !matches!(size, 1 | 2 | 4 | 8) || !offset.is_multiple_of(u64::from(size)) {
        return Err(BadAccess);
    }
    let start = usize::try_from(offset).map_err(|_| BadAccess)?;
    let end = start.checked_add(usize::from(size)).ok_or(BadAccess)?;
    if end > CONFIG_LEN {
        return Err(BadAccess);
    }
    Ok(start..end)
}

fn copy_str(out: &mut [u8; 128], s: &str) -> u8 {
    let n = s.len().min(out.len());
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    u8::try_from(n).unwrap_or(128)
}

/// Sets the bits of `ranges` (clamped below KEY_CNT and the 1024 bits of
/// the union); returns the bytes up to the last non-zero one.
fn bitmap(out: &mut [u8; 128], ranges: impl Iterator<Item = (u16, u16)>) -> u8 {
    let limit = KEY_CNT.min(128 * 8);
    for (first, last) in ranges {
        for code in first..=last.min(limit - 1) {
            if let Some(byte) = out.get_mut(usize::from(code / 8)) {
                *byte |= 1 << (code % 8);
            }
        }
    }
    let used = out.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    u8::try_from(used).unwrap_or(128)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(cfg: &mut InputConfig, sel: u8, sub: u8) {
        cfg.write(0, 1, u64::from(sel)).expect("select");
        cfg.write(1, 1, u64::from(sub)).expect("subsel");
    }

    #[test]
    fn name_devids_and_unknown_selections() {
        let mut cfg = InputConfig::new(RICH_INPUT);
        assert_eq!(cfg.read(2, 1), Ok(0), "unset reads size 0");
        select(&mut cfg, select::ID_NAME, 0);
        let name = RICH_INPUT.name.as_bytes();
        assert_eq!(cfg.read(2, 1), Ok(name.len() as u64));
        assert_eq!(&cfg.bytes()[8..8 + name.len()], name);
        select(&mut cfg, select::ID_DEVIDS, 0);
        assert_eq!(cfg.read(2, 1), Ok(8));
        assert_eq!(cfg.read(8, 2), Ok(u64::from(BUS_VIRTUAL)));
        for (sel, sub) in [
            (select::ID_NAME, 1),
            (0x7f, 0),
            (select::EV_BITS, 2),
            (select::ABS_INFO, 5),
            (0xff, 0xff),
        ] {
            select(&mut cfg, sel, sub);
            assert_eq!(cfg.read(2, 1), Ok(0), "select {sel:#x}/{sub}");
            assert!(cfg.bytes()[8..].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn key_and_abs_bitmaps_and_absinfo() {
        let mut cfg = InputConfig::new(RICH_INPUT);
        select(&mut cfg, select::EV_BITS, 1);
        let bytes = cfg.bytes();
        let size = usize::from(bytes[2]);
        assert_eq!(size, 0x14a / 8 + 1);
        let has = |code: u16| bytes[8 + usize::from(code / 8)] & (1 << (code % 8)) != 0;
        assert!(!has(0) && has(1) && has(28) && has(248) && !has(249));
        assert!(has(0x110) && has(0x14a) && !has(0x111));
        select(&mut cfg, select::EV_BITS, 3);
        assert_eq!(cfg.read(2, 1), Ok(1));
        assert_eq!(cfg.read(8, 1), Ok(0b11));
        select(&mut cfg, select::ABS_INFO, 1);
        assert_eq!(cfg.read(2, 1), Ok(20));
        assert_eq!(cfg.read(8, 4), Ok(0));
        assert_eq!(cfg.read(12, 4), Ok(32767));
        assert_eq!(cfg.read(8, 8), Ok(32767 << 32));
    }

    #[test]
    fn bad_accesses_are_refused() {
        let mut cfg = InputConfig::new(RICH_INPUT);
        for (offset, size) in [
            (0, 3),
            (1, 2),
            (3, 4),
            (136, 1),
            (132, 8),
            (u64::MAX, 1),
            (u64::MAX - 7, 8),
        ] {
            assert_eq!(cfg.read(offset, size), Err(BadAccess), "{offset}/{size}");
        }
        for (offset, size) in [(0, 2), (0, 4), (2, 1), (8, 1), (200, 1)] {
            assert_eq!(
                cfg.write(offset, size, 1),
                Err(BadAccess),
                "{offset}/{size}"
            );
        }
        assert_eq!(cfg.read(135, 1), Ok(0));
        cfg.write(0, 1, 0x1234).expect("low byte only");
        assert_eq!(cfg.read(0, 1), Ok(0x34));
        cfg.reset();
        assert_eq!(cfg.read(0, 4), Ok(0));
    }
}
