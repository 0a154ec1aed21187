//! Input on the trusted path: key events, on-screen buttons and the masked PIN entry.
//!
//! While the secure VM owns the input device, keys and touches reach only this code. A
//! touch is first hit-tested against the current screen's buttons (see
//! [`crate::Layout::hit_test`]); a hit becomes the same [`KeyEvent`] a hardware key would
//! send, so the payment app handles one kind of event.

use core::fmt;

/// A key press, from a keypad or translated from a touched button.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEvent {
    /// A decimal digit, `0..=9`. Other values are ignored by [`PinEntry`].
    Digit(u8),
    /// Confirm: approve a payment, submit a PIN, dismiss a message.
    Ok,
    /// Refuse: decline a payment, abandon PIN entry.
    Cancel,
    /// Delete the last PIN digit.
    Back,
}

/// A button drawn on a screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Button {
    /// Approve the payment shown.
    Approve,
    /// Decline the payment shown.
    Decline,
    /// A keypad digit, `0..=9`.
    Digit(u8),
    /// Submit the PIN, or dismiss a message screen.
    Ok,
    /// Delete the last PIN digit.
    Back,
    /// Abandon PIN entry, or the setup.
    Cancel,
    /// One of the security words a setup offers, `0..3` (its key is the
    /// digit one above: 1, 2, 3).
    Word(u8),
}

impl Button {
    /// The key event this button stands for.
    pub const fn key_event(self) -> KeyEvent {
        match self {
            Button::Approve | Button::Ok => KeyEvent::Ok,
            Button::Decline | Button::Cancel => KeyEvent::Cancel,
            Button::Digit(d) => KeyEvent::Digit(d),
            Button::Back => KeyEvent::Back,
            Button::Word(i) => KeyEvent::Digit(i.saturating_add(1)),
        }
    }

    /// The caption drawn on the button.
    pub const fn label(self) -> &'static str {
        match self {
            Button::Approve => "Approve",
            Button::Decline => "Decline",
            Button::Digit(d) => match d {
                0 => "0",
                1 => "1",
                2 => "2",
                3 => "3",
                4 => "4",
                5 => "5",
                6 => "6",
                7 => "7",
                8 => "8",
                9 => "9",
                _ => "?",
            },
            Button::Ok => "OK",
            Button::Back => "Back",
            Button::Cancel => "Cancel",
            // The screen draws the word itself.
            Button::Word(_) => "",
        }
    }
}

/// Most digits a PIN may have.
pub const PIN_MAX_LEN: usize = 12;

/// What a key did to a [`PinEntry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinStep {
    /// Still typing (a digit was added or removed, or the key was ignored).
    Editing,
    /// OK was pressed with at least one digit: take the PIN out with [`PinEntry::take`].
    Submitted,
    /// Cancel was pressed; the digits have been wiped.
    Cancelled,
}

/// The PIN being typed on the trusted display.
///
/// Only the count of digits is visible ([`PinEntry::len`]); the digits leave only through
/// [`PinEntry::take`], which the payment app calls to verify them. `Debug` shows the count.
///
/// # Invariants
/// `len <= max_len <= PIN_MAX_LEN`, and `digits[..len]` are each `0..=9`.
pub struct PinEntry {
    digits: [u8; PIN_MAX_LEN],
    len: usize,
    max_len: usize,
}

impl PinEntry {
    /// An empty entry accepting up to `max_len` digits (clamped to `1..=PIN_MAX_LEN`).
    pub fn new(max_len: usize) -> PinEntry {
        PinEntry {
            digits: [0; PIN_MAX_LEN],
            len: 0,
            max_len: max_len.clamp(1, PIN_MAX_LEN),
        }
    }

    /// Digits typed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no digit has been typed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most digits this entry accepts.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Applies one key: a digit is appended (ignored when full or out of range), Back
    /// removes the last digit, OK submits a non-empty PIN, Cancel wipes and cancels.
    pub fn handle(&mut self, key: KeyEvent) -> PinStep {
        match key {
            KeyEvent::Digit(d) if d <= 9 && self.len < self.max_len => {
                if let Some(slot) = self.digits.get_mut(self.len) {
                    *slot = d;
                    self.len += 1;
                }
                PinStep::Editing
            }
            KeyEvent::Digit(_) => PinStep::Editing,
            KeyEvent::Back => {
                self.len = self.len.saturating_sub(1);
                if let Some(slot) = self.digits.get_mut(self.len) {
                    *slot = 0;
                }
                PinStep::Editing
            }
            KeyEvent::Ok if self.len > 0 => PinStep::Submitted,
            KeyEvent::Ok => PinStep::Editing,
            KeyEvent::Cancel => {
                self.wipe();
                PinStep::Cancelled
            }
        }
    }

    /// Moves the typed digits out and leaves the entry empty.
    pub fn take(&mut self) -> Pin {
        let pin = Pin {
            digits: self.digits,
            len: self.len,
        };
        self.wipe();
        pin
    }

    fn wipe(&mut self) {
        self.digits = [0; PIN_MAX_LEN];
        self.len = 0;
        // Keep the compiler from dropping the overwrite as a dead store.
        core::hint::black_box(&mut self.digits);
    }
}

impl fmt::Debug for PinEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PinEntry({} of {} digits)", self.len, self.max_len)
    }
}

impl Drop for PinEntry {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// A PIN taken out of a [`PinEntry`]. `Debug` does not show the digits; they are wiped on
/// drop.
pub struct Pin {
    digits: [u8; PIN_MAX_LEN],
    len: usize,
}

impl Pin {
    /// The digits, each `0..=9`, most significant first.
    pub fn digits(&self) -> &[u8] {
        self.digits.get(..self.len).unwrap_or(&[])
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({} digits)", self.len)
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        self.digits = [0; PIN_MAX_LEN];
        core::hint::black_box(&mut self.digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn type_keys(entry: &mut PinEntry, keys: &[KeyEvent]) -> PinStep {
        keys.iter()
            .fold(PinStep::Editing, |_, key| entry.handle(*key))
    }

    #[test]
    fn digits_back_and_take() {
        let mut entry = PinEntry::new(4);
        let keys = [
            KeyEvent::Digit(1),
            KeyEvent::Digit(2),
            KeyEvent::Digit(9),
            KeyEvent::Back,
            KeyEvent::Digit(3),
            KeyEvent::Digit(4),
            KeyEvent::Digit(5),  // full: ignored
            KeyEvent::Digit(10), // not a digit: ignored
        ];
        assert_eq!(type_keys(&mut entry, &keys), PinStep::Editing);
        assert_eq!(entry.len(), 4);
        assert_eq!(entry.handle(KeyEvent::Ok), PinStep::Submitted);
        let pin = entry.take();
        assert_eq!(pin.digits(), &[1, 2, 3, 4]);
        assert!(entry.is_empty());
    }

    #[test]
    fn debug_never_shows_digits() {
        let mut entry = PinEntry::new(6);
        type_keys(&mut entry, &[KeyEvent::Digit(7), KeyEvent::Digit(3)]);
        let shown = format!("{entry:?}");
        assert_eq!(shown, "PinEntry(2 of 6 digits)");
        let pin = entry.take();
        assert_eq!(format!("{pin:?}"), "Pin(2 digits)");
    }

    #[test]
    fn ok_on_empty_and_back_on_empty_do_nothing() {
        let mut entry = PinEntry::new(4);
        assert_eq!(entry.handle(KeyEvent::Back), PinStep::Editing);
        assert_eq!(entry.handle(KeyEvent::Ok), PinStep::Editing);
        assert!(entry.is_empty());
    }

    #[test]
    fn cancel_wipes() {
        let mut entry = PinEntry::new(4);
        type_keys(&mut entry, &[KeyEvent::Digit(5), KeyEvent::Digit(6)]);
        assert_eq!(entry.handle(KeyEvent::Cancel), PinStep::Cancelled);
        assert!(entry.is_empty());
        assert_eq!(entry.take().digits(), &[] as &[u8]);
    }

    #[test]
    fn max_len_is_clamped() {
        assert_eq!(PinEntry::new(0).max_len(), 1);
        assert_eq!(PinEntry::new(1000).max_len(), PIN_MAX_LEN);
    }

    #[test]
    fn buttons_map_to_keys() {
        assert_eq!(Button::Approve.key_event(), KeyEvent::Ok);
        assert_eq!(Button::Decline.key_event(), KeyEvent::Cancel);
        assert_eq!(Button::Digit(7).key_event(), KeyEvent::Digit(7));
        assert_eq!(Button::Digit(7).label(), "7");
    }
}
