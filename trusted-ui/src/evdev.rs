//! Linux input events (the `virtio_input_event` records of a virtio keyboard and tablet) into
//! the [`Input`]s of [`crate::guard`].
//!
//! Keys are reported as they come. The tablet reports absolute X/Y (`0..=abs_max`, 32767 for
//! QEMU's `virtio-tablet-device`) and a button (BTN_TOUCH or BTN_LEFT); a contact is
//! reported once per SYN_REPORT: [`Phase::Press`] when the button went down, [`Phase::Hold`]
//! when it stays down and the point moved, [`Phase::Release`] when it came up. Events of
//! other types (LEDs, relative motion, misc) are ignored. Any value is accepted: nothing here
//! panics on what a device sends.

use embedded_graphics::geometry::{Point, Size};

use crate::guard::{Input, Key, Phase};
use crate::input::KeyEvent;

/// Event types.
pub const EV_SYN: u16 = 0;
pub const EV_KEY: u16 = 1;
pub const EV_ABS: u16 = 3;
/// SYN_REPORT: the end of one report.
pub const SYN_REPORT: u16 = 0;
/// Absolute axes.
pub const ABS_X: u16 = 0;
pub const ABS_Y: u16 = 1;
/// The tablet's buttons that mean "contact".
pub const BTN_LEFT: u16 = 0x110;
pub const BTN_TOUCH: u16 = 0x14a;

/// One `virtio_input_event` (virtio 1.2, 5.8.6): little-endian type, code, value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: u16,
    pub code: u16,
    pub value: u32,
}

impl Event {
    /// Bytes in the wire format.
    pub const LEN: usize = 8;

    /// Parses the 8-byte wire format.
    pub fn from_bytes(b: [u8; 8]) -> Event {
        Event {
            kind: u16::from_le_bytes([b[0], b[1]]),
            code: u16::from_le_bytes([b[2], b[3]]),
            value: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// The 8-byte wire format.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0; 8];
        b[..2].copy_from_slice(&self.kind.to_le_bytes());
        b[2..4].copy_from_slice(&self.code.to_le_bytes());
        b[4..].copy_from_slice(&self.value.to_le_bytes());
        b
    }
}

/// The trusted-path meaning of a Linux key code.
pub fn key_of(code: u16) -> Key {
    let event = match code {
        28 | 96 => KeyEvent::Ok,                       // KEY_ENTER, KEY_KPENTER
        1 => KeyEvent::Cancel,                         // KEY_ESC
        14 => KeyEvent::Back,                          // KEY_BACKSPACE
        11 | 82 => KeyEvent::Digit(0),                 // KEY_0, KEY_KP0
        2..=10 => KeyEvent::Digit((code - 1) as u8),   // KEY_1..KEY_9
        79..=81 => KeyEvent::Digit((code - 78) as u8), // KEY_KP1..KP3
        75..=77 => KeyEvent::Digit((code - 71) as u8), // KEY_KP4..KP6
        71..=73 => KeyEvent::Digit((code - 64) as u8), // KEY_KP7..KP9
        _ => return Key::Other,
    };
    Key::Mapped(event)
}

/// Turns a stream of events into [`Input`]s for a screen of `size` pixels.
#[derive(Clone, Copy, Debug)]
pub struct Decoder {
    size: Size,
    abs_max: u32,
    /// The latest axis values, reported or not.
    x: u32,
    y: u32,
    /// Contact state in the current (unreported) frame and at the last SYN_REPORT.
    down: bool,
    reported_down: bool,
    reported_at: Option<Point>,
}

impl Decoder {
    /// A decoder for a tablet whose axes run `0..=abs_max` over a screen of `size`.
    pub fn new(size: Size, abs_max: u32) -> Decoder {
        Decoder {
            size,
            abs_max,
            x: 0,
            y: 0,
            down: false,
            reported_down: false,
            reported_at: None,
        }
    }

    fn scale(value: u32, max: u32, pixels: u32) -> i32 {
        let v = u64::from(value.min(max));
        let p = v * u64::from(pixels) / (u64::from(max) + 1);
        i32::try_from(p).unwrap_or(i32::MAX)
    }

    fn point(&self) -> Point {
        Point::new(
            Self::scale(self.x, self.abs_max, self.size.width),
            Self::scale(self.y, self.abs_max, self.size.height),
        )
    }

    /// Forgets any contact in progress (the device was taken away or reset).
    pub fn reset(&mut self) {
        self.down = false;
        self.reported_down = false;
        self.reported_at = None;
    }

    /// One event; returns the input it completes, if any.
    pub fn push(&mut self, event: Event) -> Option<Input> {
        match (event.kind, event.code) {
            (EV_KEY, BTN_LEFT | BTN_TOUCH) => {
                self.down = event.value != 0;
                None
            }
            (EV_KEY, code) => {
                let phase = match event.value {
                    0 => Phase::Release,
                    1 => Phase::Press,
                    _ => Phase::Hold,
                };
                Some(Input::Key {
                    key: key_of(code),
                    phase,
                })
            }
            (EV_ABS, ABS_X) => {
                self.x = event.value;
                None
            }
            (EV_ABS, ABS_Y) => {
                self.y = event.value;
                None
            }
            (EV_SYN, SYN_REPORT) => self.report(),
            _ => None,
        }
    }

    fn report(&mut self) -> Option<Input> {
        let point = self.point();
        let phase = match (self.reported_down, self.down) {
            (false, true) => Phase::Press,
            (true, false) => Phase::Release,
            (true, true) if self.reported_at != Some(point) => Phase::Hold,
            _ => return None,
        };
        self.reported_down = self.down;
        self.reported_at = Some(point);
        Some(Input::Touch { point, phase })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: u16, code: u16, value: u32) -> Event {
        Event { kind, code, value }
    }

    #[test]
    fn wire_format_round_trips() {
        let e = ev(EV_ABS, ABS_Y, 0x1234_5678);
        assert_eq!(e.to_bytes(), [3, 0, 1, 0, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(Event::from_bytes(e.to_bytes()), e);
    }

    #[test]
    fn keys_map_and_carry_their_phase() {
        let mut d = Decoder::new(Size::new(800, 480), 32767);
        let k = |code, value| ev(EV_KEY, code, value);
        assert_eq!(
            d.push(k(28, 1)),
            Some(Input::Key {
                key: Key::Mapped(KeyEvent::Ok),
                phase: Phase::Press
            })
        );
        assert_eq!(
            d.push(k(28, 2)),
            Some(Input::Key {
                key: Key::Mapped(KeyEvent::Ok),
                phase: Phase::Hold
            })
        );
        assert_eq!(
            d.push(k(21, 0)),
            Some(Input::Key {
                key: Key::Other,
                phase: Phase::Release
            })
        );
        let digits: Vec<Key> = [11, 2, 3, 4, 5, 6, 7, 8, 9, 10]
            .iter()
            .map(|c| key_of(*c))
            .collect();
        let keypad: Vec<Key> = [82, 79, 80, 81, 75, 76, 77, 71, 72, 73]
            .iter()
            .map(|c| key_of(*c))
            .collect();
        for (n, (a, b)) in digits.iter().zip(&keypad).enumerate() {
            let want = Key::Mapped(KeyEvent::Digit(u8::try_from(n).expect("digit")));
            assert_eq!((*a, *b), (want, want));
        }
        assert_eq!(key_of(1), Key::Mapped(KeyEvent::Cancel));
        assert_eq!(key_of(14), Key::Mapped(KeyEvent::Back));
        assert_eq!(key_of(96), Key::Mapped(KeyEvent::Ok));
        for code in [0, 12, 70, 74, 78, 83, 0xffff] {
            assert_eq!(key_of(code), Key::Other, "code {code}");
        }
    }

    #[test]
    fn a_tablet_tap_is_press_moves_release_in_screen_pixels() {
        let mut d = Decoder::new(Size::new(800, 480), 32767);
        assert_eq!(d.push(ev(EV_ABS, ABS_X, 16384)), None);
        assert_eq!(d.push(ev(EV_ABS, ABS_Y, 32767)), None);
        assert_eq!(d.push(ev(EV_KEY, BTN_LEFT, 1)), None);
        assert_eq!(
            d.push(ev(EV_SYN, SYN_REPORT, 0)),
            Some(Input::Touch {
                point: Point::new(400, 479),
                phase: Phase::Press
            })
        );
        // A report with no change says nothing.
        assert_eq!(d.push(ev(EV_SYN, SYN_REPORT, 0)), None);
        d.push(ev(EV_ABS, ABS_X, 0));
        assert_eq!(
            d.push(ev(EV_SYN, SYN_REPORT, 0)),
            Some(Input::Touch {
                point: Point::new(0, 479),
                phase: Phase::Hold
            })
        );
        d.push(ev(EV_KEY, BTN_TOUCH, 0));
        assert_eq!(
            d.push(ev(EV_SYN, SYN_REPORT, 0)),
            Some(Input::Touch {
                point: Point::new(0, 479),
                phase: Phase::Release
            })
        );
        // Moving without contact reports nothing.
        d.push(ev(EV_ABS, ABS_X, 100));
        assert_eq!(d.push(ev(EV_SYN, SYN_REPORT, 0)), None);
    }

    #[test]
    fn hostile_values_stay_on_screen_and_never_panic() {
        for max in [0, 1, 32767, u32::MAX] {
            let mut d = Decoder::new(Size::new(800, 480), max);
            for v in [0, 1, max, u32::MAX] {
                d.push(ev(EV_ABS, ABS_X, v));
                d.push(ev(EV_ABS, ABS_Y, v));
                d.push(ev(EV_KEY, BTN_TOUCH, v));
                if let Some(Input::Touch { point, .. }) = d.push(ev(EV_SYN, SYN_REPORT, 0)) {
                    assert!(
                        (0..800).contains(&point.x) && (0..480).contains(&point.y),
                        "{point:?}"
                    );
                }
            }
        }
        let mut d = Decoder::new(Size::new(0, 0), 32767);
        d.push(ev(EV_KEY, BTN_TOUCH, 1));
        assert_eq!(
            d.push(ev(EV_SYN, SYN_REPORT, 0)),
            Some(Input::Touch {
                point: Point::zero(),
                phase: Phase::Press
            })
        );
        assert_eq!(d.push(ev(0xffff, 0xffff, u32::MAX)), None);
    }
}
