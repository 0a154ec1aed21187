//! The graphical approval's input: the keyboard and touch events mvmm
//! routes to the secure VM's virtio-input device while it holds the trusted
//! path, turned into what to draw and what the user decided. I/O-free and
//! tested on the host; the image feeds it events and the time, and draws
//! what it asks for.
//!
//! The rules are `trusted_ui::guard`'s: events in the first
//! `ARM_DELAY_MS` of a screen are discarded, Approve takes a `HOLD_MS`
//! press-and-hold on the drawn button (or on Enter), Decline is a tap (or
//! Esc), and a prompt the app cancels stays until input has been quiet for
//! `QUIET_MS`. When a PIN is required, a completed hold opens the PIN
//! screen (armed anew), where digits, Back, OK and Cancel are keys or taps
//! on the drawn keypad.

use embedded_graphics::geometry::{Point, Size};
use embedded_graphics::primitives::Rectangle;
use trusted_ui::evdev::{Decoder, Event};
use trusted_ui::guard::{Action, Guard};
use trusted_ui::{KeyEvent, Layout, PIN_MAX_LEN, Pin, PinEntry, PinStep, Screen};

/// The largest ABS_X / ABS_Y value of the touch screen (mvmm's input
/// device reports 0..=32767 on both axes, as QEMU's virtio tablet does).
pub const ABS_MAX: u32 = 32767;

/// What the screen or the payment needs after an event or a tick.
#[derive(Debug)]
pub enum Effect {
    /// Nothing to do.
    None,
    /// Redraw the Approve hold's progress, per mille (0 clears it).
    Hold(u16),
    /// Show the PIN screen as [`Session::pin_entry`] now is.
    Pin,
    /// The user approved (with the PIN, when one was asked for).
    Approve(Option<Pin>),
    /// The user declined (or cancelled the setup).
    Decline,
    /// Setup: the user chose word `choice` and typed a PIN (4 digits or
    /// more) and OK.
    SetupDone { choice: usize, pin: Pin },
    /// A prompt the app cancelled has seen quiet input: release the path.
    Closed,
}

enum Stage {
    Approval,
    /// Setup: choosing the security word.
    Word,
    Pin(PinEntry),
}

/// The shortest PIN a setup accepts (`payment_app::PIN_DIGITS`).
pub const SETUP_PIN_MIN: usize = 4;

/// One approval on the display, from the moment it is shown.
pub struct Session {
    layout: Layout,
    decoder: Decoder,
    guard: Guard,
    pin_required: bool,
    stage: Stage,
    /// Setup: the word chosen, once it is.
    chosen: Option<usize>,
    setup: bool,
}

impl Session {
    /// The approval screen of a `size` display, shown at `shown_at` (ms).
    pub fn new(size: Size, pin_required: bool, shown_at: u64) -> Session {
        let layout = Layout::new(Rectangle::new(Point::zero(), size));
        Session {
            layout,
            decoder: Decoder::new(size, ABS_MAX),
            guard: Guard::new(Screen::Approval, layout, shown_at),
            pin_required,
            stage: Stage::Approval,
            chosen: None,
            setup: false,
        }
    }

    /// The setup's word choice on a `size` display, shown at `shown_at`;
    /// a choice leads to the PIN screen (armed anew).
    pub fn setup(size: Size, shown_at: u64) -> Session {
        let layout = Layout::new(Rectangle::new(Point::zero(), size));
        Session {
            layout,
            decoder: Decoder::new(size, ABS_MAX),
            guard: Guard::new(Screen::ChooseWord, layout, shown_at),
            pin_required: false,
            stage: Stage::Word,
            chosen: None,
            setup: true,
        }
    }

    /// Whether this is a setup (its PIN screen asks for a new PIN).
    pub fn is_setup(&self) -> bool {
        self.setup
    }

    /// The PIN typed so far (its length only is ever drawn), on the PIN
    /// screen.
    pub fn pin_entry(&self) -> Option<&PinEntry> {
        match &self.stage {
            Stage::Pin(entry) => Some(entry),
            Stage::Approval | Stage::Word => None,
        }
    }

    /// Whether the app cancelled and the screen waits for quiet input.
    pub fn closing(&self) -> bool {
        self.guard.closing()
    }

    /// Whether input has been quiet long enough to release the path.
    pub fn quiet(&self, now: u64) -> bool {
        self.guard.quiet(now)
    }

    /// One event from the device at `now`.
    pub fn event(&mut self, now: u64, event: Event) -> Effect {
        let Some(input) = self.decoder.push(event) else {
            return Effect::None;
        };
        let action = self.guard.input(now, input);
        self.act(now, action)
    }

    /// The passing of time: completes a hold, or closes a cancelled prompt.
    pub fn tick(&mut self, now: u64) -> Effect {
        let action = self.guard.tick(now);
        self.act(now, action)
    }

    /// The app cancelled the payment: [`Effect::Closed`] when the path may
    /// go back now; otherwise the screen should say so (`CLOSING_NOTICE`)
    /// and [`Session::tick`] reports `Closed` once input is quiet.
    pub fn rich_cancel(&mut self, now: u64) -> Effect {
        let action = self.guard.rich_cancel(now);
        self.act(now, action)
    }

    /// The PIN was wrong and tries remain: a fresh PIN screen, shown at
    /// `now` (armed anew).
    pub fn retry_pin(&mut self, now: u64) {
        self.open_pin(now);
    }

    fn open_pin(&mut self, now: u64) {
        self.stage = Stage::Pin(PinEntry::new(PIN_MAX_LEN));
        self.guard = Guard::new(Screen::PinEntry, self.layout, now);
        self.decoder.reset();
    }

    fn act(&mut self, now: u64, action: Action) -> Effect {
        match action {
            Action::Holding(permille) => Effect::Hold(permille),
            Action::HoldAbandoned => Effect::Hold(0),
            Action::Approve if self.pin_required => {
                self.open_pin(now);
                Effect::Pin
            }
            Action::Approve => Effect::Approve(None),
            Action::Closed => Effect::Closed,
            Action::Key(key) => match &mut self.stage {
                Stage::Approval => match key {
                    KeyEvent::Cancel => Effect::Decline,
                    _ => Effect::None,
                },
                Stage::Word => match key {
                    KeyEvent::Cancel => Effect::Decline,
                    KeyEvent::Digit(d @ 1..=3) => {
                        self.chosen = Some(usize::from(d - 1));
                        self.open_pin(now);
                        Effect::Pin
                    }
                    _ => Effect::None,
                },
                Stage::Pin(entry)
                    if self.setup && key == KeyEvent::Ok && entry.len() < SETUP_PIN_MIN =>
                {
                    // Too short for a new PIN: keep typing.
                    Effect::Pin
                }
                Stage::Pin(entry) => match (entry.handle(key), self.chosen) {
                    (PinStep::Editing, _) => Effect::Pin,
                    (PinStep::Submitted, Some(choice)) if self.setup => Effect::SetupDone {
                        choice,
                        pin: entry.take(),
                    },
                    (PinStep::Submitted, _) => Effect::Approve(Some(entry.take())),
                    (PinStep::Cancelled, _) => Effect::Decline,
                },
            },
            Action::None | Action::Discarded => Effect::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trusted_ui::Button;
    use trusted_ui::evdev::{ABS_X, ABS_Y, BTN_TOUCH, EV_ABS, EV_KEY, EV_SYN, SYN_REPORT};
    use trusted_ui::guard::{ARM_DELAY_MS, HOLD_MS, QUIET_MS};

    const SIZE: Size = Size::new(800, 480);

    fn ev(kind: u16, code: u16, value: u32) -> Event {
        Event { kind, code, value }
    }

    /// The device coordinates of the centre of `button` on `screen`.
    fn centre(screen: Screen, button: Button) -> (u32, u32) {
        let layout = Layout::new(Rectangle::new(Point::zero(), SIZE));
        let (_, rect) = layout
            .buttons(screen)
            .iter()
            .find(|(b, _)| *b == button)
            .copied()
            .unwrap();
        let c = rect.center();
        let scale = |v: i32, pixels: u32| (v as u64 * 32768 / u64::from(pixels)) as u32 + 1;
        (scale(c.x, SIZE.width), scale(c.y, SIZE.height))
    }

    /// A touch down (or up) at `at`: the events of one report.
    fn touch(s: &mut Session, now: u64, at: (u32, u32), down: bool) -> Vec<Effect> {
        [
            ev(EV_ABS, ABS_X, at.0),
            ev(EV_ABS, ABS_Y, at.1),
            ev(EV_KEY, BTN_TOUCH, u32::from(down)),
            ev(EV_SYN, SYN_REPORT, 0),
        ]
        .into_iter()
        .map(|e| s.event(now, e))
        .collect()
    }

    fn key(s: &mut Session, now: u64, code: u16, value: u32) -> Effect {
        s.event(now, ev(EV_KEY, code, value))
    }

    #[test]
    fn holding_approve_for_a_second_approves_and_a_tap_does_not() {
        let mut s = Session::new(SIZE, false, 0);
        let approve = centre(Screen::Approval, Button::Approve);
        let t = ARM_DELAY_MS + 10;
        // A tap: press and release at once.
        touch(&mut s, t, approve, true);
        assert!(matches!(
            touch(&mut s, t + 50, approve, false).last(),
            Some(Effect::Hold(0))
        ));
        // A hold: progress, then approval at HOLD_MS.
        let effects = touch(&mut s, t + 100, approve, true);
        assert!(matches!(effects.last(), Some(Effect::Hold(0))));
        assert!(matches!(s.tick(t + 100 + HOLD_MS / 2), Effect::Hold(500)));
        assert!(matches!(s.tick(t + 100 + HOLD_MS), Effect::Approve(None)));
    }

    #[test]
    fn touches_and_keys_before_arming_are_discarded() {
        let mut s = Session::new(SIZE, false, 1000);
        let approve = centre(Screen::Approval, Button::Approve);
        // Pressed before arming and held past it: never approves.
        touch(&mut s, 1100, approve, true);
        assert!(matches!(
            s.tick(1000 + ARM_DELAY_MS + HOLD_MS * 2),
            Effect::None
        ));
        // Enter pressed before arming, auto-repeating after: nothing.
        assert!(matches!(key(&mut s, 1200, 28, 1), Effect::None));
        assert!(matches!(
            key(&mut s, 1000 + ARM_DELAY_MS + 100, 28, 2),
            Effect::None
        ));
        assert!(matches!(
            s.tick(1000 + ARM_DELAY_MS + HOLD_MS * 3),
            Effect::None
        ));
    }

    #[test]
    fn decline_is_a_tap_or_escape() {
        let mut s = Session::new(SIZE, false, 0);
        let decline = centre(Screen::Approval, Button::Decline);
        touch(&mut s, ARM_DELAY_MS, decline, true);
        assert!(matches!(
            touch(&mut s, ARM_DELAY_MS + 80, decline, false).last(),
            Some(Effect::Decline)
        ));
        let mut s = Session::new(SIZE, false, 0);
        assert!(matches!(key(&mut s, ARM_DELAY_MS, 1, 1), Effect::Decline));
    }

    #[test]
    fn a_pin_is_typed_on_the_keypad_after_the_hold() {
        let mut s = Session::new(SIZE, true, 0);
        let t = ARM_DELAY_MS;
        assert!(matches!(key(&mut s, t, 28, 1), Effect::Hold(0)));
        assert!(matches!(s.tick(t + HOLD_MS), Effect::Pin));
        key(&mut s, t + HOLD_MS + 10, 28, 0);
        let pin_at = t + HOLD_MS;
        // The PIN screen is armed anew: a digit at once is dropped.
        assert!(matches!(key(&mut s, pin_at + 10, 3, 1), Effect::None));
        let t = pin_at + ARM_DELAY_MS;
        for (i, digit) in [1u8, 2, 3, 4].into_iter().enumerate() {
            let at = centre(Screen::PinEntry, Button::Digit(digit));
            let now = t + 100 * i as u64;
            touch(&mut s, now, at, true);
            assert!(matches!(
                touch(&mut s, now + 40, at, false).last(),
                Some(Effect::Pin)
            ));
        }
        assert_eq!(s.pin_entry().unwrap().len(), 4);
        match key(&mut s, t + 1000, 28, 1) {
            Effect::Approve(Some(pin)) => assert_eq!(pin.digits(), &[1, 2, 3, 4]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_cancel_while_the_user_types_keeps_the_path_until_quiet() {
        let mut s = Session::new(SIZE, false, 0);
        let t = ARM_DELAY_MS + 100;
        key(&mut s, t, 5, 1);
        assert!(matches!(s.rich_cancel(t + 10), Effect::None));
        assert!(s.closing());
        // Typing goes on: swallowed, and it keeps the path.
        assert!(matches!(key(&mut s, t + 500, 6, 1), Effect::None));
        assert!(matches!(s.tick(t + 500 + QUIET_MS - 1), Effect::None));
        assert!(matches!(s.tick(t + 500 + QUIET_MS), Effect::Closed));
        // Without recent input, a cancel releases at once.
        let mut s = Session::new(SIZE, false, 0);
        assert!(matches!(s.rich_cancel(QUIET_MS + 1), Effect::Closed));
    }

    #[test]
    fn setup_takes_a_tapped_word_and_a_pin_of_four_digits_or_more() {
        let mut s = Session::setup(SIZE, 0);
        let word = centre(Screen::ChooseWord, Button::Word(1));
        // Before arming: nothing.
        touch(&mut s, 10, word, true);
        assert!(matches!(
            touch(&mut s, 20, word, false).last(),
            Some(Effect::None)
        ));
        let t = ARM_DELAY_MS;
        touch(&mut s, t, word, true);
        assert!(matches!(
            touch(&mut s, t + 50, word, false).last(),
            Some(Effect::Pin)
        ));
        assert!(s.pin_entry().is_some());
        // The PIN screen is armed anew; then 2, 4, OK is too short, 2468 OK
        // is taken.
        let t = t + 50 + ARM_DELAY_MS;
        for (i, code) in [3u16, 5].into_iter().enumerate() {
            key(&mut s, t + i as u64 * 10, code, 1);
        }
        assert!(matches!(key(&mut s, t + 30, 28, 1), Effect::Pin));
        for (i, code) in [7u16, 9].into_iter().enumerate() {
            key(&mut s, t + 40 + i as u64 * 10, code, 1);
        }
        match key(&mut s, t + 100, 28, 1) {
            Effect::SetupDone { choice, pin } => {
                assert_eq!(choice, 1);
                assert_eq!(pin.digits(), &[2, 4, 6, 8]);
            }
            other => panic!("{other:?}"),
        }
        // Keys 1-3 choose too; Cancel cancels.
        let mut s = Session::setup(SIZE, 0);
        assert!(matches!(key(&mut s, ARM_DELAY_MS, 4, 1), Effect::Pin));
        let mut s = Session::setup(SIZE, 0);
        assert!(matches!(key(&mut s, ARM_DELAY_MS, 1, 1), Effect::Decline));
    }

    #[test]
    fn arbitrary_events_never_panic_and_never_approve_without_a_hold() {
        // A deterministic stream of hostile events, all within 900 ms of
        // arming (shorter than a hold): nothing may approve.
        let mut s = Session::new(SIZE, false, 0);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let kind = [EV_SYN, EV_KEY, EV_ABS, 4][(x % 4) as usize];
            let code = ((x >> 8) % 0x160) as u16;
            let value = (x >> 24) as u32 % 3;
            let now = ARM_DELAY_MS + (i % 900);
            let effect = s.event(now, ev(kind, code, value));
            assert!(!matches!(effect, Effect::Approve(_)), "event {i}");
            if matches!(effect, Effect::Decline) {
                s = Session::new(SIZE, false, 0);
            }
        }
    }
}
