//! Input that cannot be steered: the rules that stand between raw key and touch events and
//! an answer on the trusted path. I/O-free; time is milliseconds from any monotonic clock,
//! passed in by the caller.
//!
//! The rich VM chooses when a prompt appears, so it can try to make the user answer a screen
//! they have not read: ask them to type or tap something, then send the request as they
//! start. And it can cancel a prompt while the user is typing a PIN, hoping the rest of the
//! keys come back to it. The rules:
//!
//! - **Arming** ([`ARM_DELAY_MS`]): every event that arrives before the screen has been shown
//!   for this long is discarded, and so is a key or touch that *began* before then (a press
//!   starts something only if the press itself is seen after arming; repeats and moves of an
//!   earlier press do not).
//! - **Press-and-hold to approve** ([`HOLD_MS`]): Approve is never a tap. The Approve button
//!   (or the OK/Enter key) must be pressed after arming and held, without leaving the button,
//!   for this long; [`Guard::hold_progress`] says how far along the hold is so the screen can
//!   show it. Type-ahead is a stream of short presses and releases; it cannot hold.
//! - **Declining is a tap** (or the Cancel/Esc key), after arming: declining never costs money.
//! - **Quiet before release** ([`QUIET_MS`]): when the rich side cancels a prompt, the path is
//!   kept (and every event still swallowed) until input has been quiet this long; the screen
//!   says so ([`CLOSING_NOTICE`]). So a cancel mid-PIN never sends the next digits to the rich
//!   VM.
//! - **Rate limit** ([`PromptLimiter`]): after [`FREE_UNANSWERED`] prompts in a row that did not
//!   end in approval (declined, cancelled, timed out), each further prompt must wait
//!   [`BACKOFF_BASE_MS`], doubling up to [`BACKOFF_MAX_MS`]; an approval resets it.
//!
//! Touches are hit-tested against the same [`Layout`] the screen was drawn with, so a press
//! counts only on the button as drawn.

use embedded_graphics::geometry::Point;

use crate::input::{Button, KeyEvent};
use crate::layout::{Layout, Screen};

/// Events in the first 500 ms a screen is shown are discarded.
pub const ARM_DELAY_MS: u64 = 500;
/// Approve must be held for 1 s.
pub const HOLD_MS: u64 = 1_000;
/// A cancel from the rich side takes effect only after 2 s without input.
pub const QUIET_MS: u64 = 2_000;
/// Unanswered prompts in a row that are shown without delay.
pub const FREE_UNANSWERED: u32 = 2;
/// The first wait after [`FREE_UNANSWERED`] unanswered prompts.
pub const BACKOFF_BASE_MS: u64 = 5_000;
/// The longest wait between prompts.
pub const BACKOFF_MAX_MS: u64 = 60_000;
/// What the screen says while a cancelled prompt waits for quiet input.
pub const CLOSING_NOTICE: &str = "Cancelled by the app. This screen closes when you stop typing.";

/// A key of the trusted keyboard, already reduced to what the trusted path understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// A key with a meaning on the trusted path.
    Mapped(KeyEvent),
    /// Any other key: ignored, but it is still input (it keeps a cancelled prompt open).
    Other,
}

/// Whether a key or contact starts, continues or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Key down, or finger down.
    Press,
    /// Key auto-repeat, or the finger moved while down.
    Hold,
    /// Key up, or finger lifted.
    Release,
}

/// One input event, in screen coordinates for touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A key.
    Key { key: Key, phase: Phase },
    /// A single touch contact (or the tablet's pointer with its button down).
    Touch { point: Point, phase: Phase },
}

/// What an event (or the passing of time) means for the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing changes.
    None,
    /// The event was thrown away: too early, begun too early, or the prompt is closing.
    Discarded,
    /// Approve is being held: redraw its progress (per mille of [`HOLD_MS`]).
    Holding(u16),
    /// The hold ended before it completed (released, or left the button): redraw it empty.
    HoldAbandoned,
    /// A deliberate key or tap for the screen's own logic: Cancel (decline), digits, Back,
    /// and OK on screens other than the approval.
    Key(KeyEvent),
    /// Approve was held for [`HOLD_MS`].
    Approve,
    /// A cancelled prompt has seen [`QUIET_MS`] without input: end it and release the path.
    Closed,
}

/// What holds Approve down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Key,
    Touch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Hold {
    since: u64,
    by: Holder,
}

/// The rules for one screen, from the moment it is on the display.
#[derive(Clone, Debug)]
pub struct Guard {
    screen: Screen,
    layout: Layout,
    armed_at: u64,
    /// The button a touch pressed after arming went down on; `None` when no counted contact.
    touch_on: Option<Button>,
    /// Keys pressed after arming (only these may act on release or hold).
    ok_key_down: bool,
    hold: Option<Hold>,
    last_input: Option<u64>,
    closing: bool,
    done: bool,
}

impl Guard {
    /// The rules for `screen`, laid out as `layout`, shown on the display at `shown_at`.
    pub fn new(screen: Screen, layout: Layout, shown_at: u64) -> Guard {
        Guard {
            screen,
            layout,
            armed_at: shown_at.saturating_add(ARM_DELAY_MS),
            touch_on: None,
            ok_key_down: false,
            hold: None,
            last_input: None,
            closing: false,
            done: false,
        }
    }

    /// Whether events are counted yet.
    pub fn armed(&self, now: u64) -> bool {
        now >= self.armed_at
    }

    /// Whether the rich side cancelled and the guard waits for quiet input.
    pub fn closing(&self) -> bool {
        self.closing
    }

    /// How far the Approve hold is, per mille, if one is under way.
    pub fn hold_progress(&self, now: u64) -> Option<u16> {
        self.hold
            .map(|hold| permille(now.saturating_sub(hold.since)))
    }

    /// Whether input has been quiet for [`QUIET_MS`] at `now` (or there was none).
    pub fn quiet(&self, now: u64) -> bool {
        self.last_input
            .is_none_or(|last| now.saturating_sub(last) >= QUIET_MS)
    }

    /// The rich side cancelled the prompt. Returns [`Action::Closed`] when the path may be
    /// released now; otherwise the guard keeps swallowing input until [`Guard::tick`] reports
    /// [`Action::Closed`], and the screen should show [`CLOSING_NOTICE`].
    pub fn rich_cancel(&mut self, now: u64) -> Action {
        if self.done {
            return Action::None;
        }
        self.hold = None;
        self.touch_on = None;
        self.ok_key_down = false;
        if self.quiet(now) {
            self.done = true;
            Action::Closed
        } else {
            self.closing = true;
            Action::None
        }
    }

    /// The passing of time: completes a hold, or closes a cancelled prompt once quiet.
    pub fn tick(&mut self, now: u64) -> Action {
        if self.done {
            return Action::None;
        }
        if self.closing {
            if self.quiet(now) {
                self.done = true;
                return Action::Closed;
            }
            return Action::None;
        }
        match self.hold {
            Some(hold) if now.saturating_sub(hold.since) >= HOLD_MS => {
                self.hold = None;
                self.done = true;
                Action::Approve
            }
            Some(hold) => Action::Holding(permille(now.saturating_sub(hold.since))),
            None => Action::None,
        }
    }

    /// One event at `now`.
    pub fn input(&mut self, now: u64, event: Input) -> Action {
        // Every event counts as activity, even one that is then discarded: a user typing
        // keeps a cancelled prompt open.
        self.last_input = Some(self.last_input.map_or(now, |last| last.max(now)));
        if self.done || self.closing || !self.armed(now) {
            return Action::Discarded;
        }
        // A hold that has run its time approves even if this event would end it: the user
        // held long enough, and the event was seen after that.
        if let Action::Approve = self.tick(now) {
            return Action::Approve;
        }
        match event {
            Input::Key { key, phase } => self.key(now, key, phase),
            Input::Touch { point, phase } => self.touch(now, point, phase),
        }
    }

    fn key(&mut self, now: u64, key: Key, phase: Phase) -> Action {
        let Key::Mapped(event) = key else {
            return Action::None;
        };
        let approval = self.screen == Screen::Approval;
        match (event, phase) {
            (KeyEvent::Ok, Phase::Press) if approval => {
                self.ok_key_down = true;
                if self.hold.is_none() {
                    self.hold = Some(Hold {
                        since: now,
                        by: Holder::Key,
                    });
                    return Action::Holding(0);
                }
                Action::None
            }
            (KeyEvent::Ok, Phase::Hold) if approval => match self.hold {
                Some(hold) if self.ok_key_down => {
                    Action::Holding(permille(now.saturating_sub(hold.since)))
                }
                // Auto-repeat of a key pressed before arming: nothing.
                _ => Action::Discarded,
            },
            (KeyEvent::Ok, Phase::Release) if approval => {
                let was_down = core::mem::replace(&mut self.ok_key_down, false);
                match self.hold {
                    Some(Hold {
                        by: Holder::Key, ..
                    }) if was_down => {
                        self.hold = None;
                        Action::HoldAbandoned
                    }
                    _ => Action::None,
                }
            }
            // Everything else acts on press; repeats and releases do nothing.
            (event, Phase::Press) => self.deliberate(event),
            (_, Phase::Hold | Phase::Release) => Action::None,
        }
    }

    fn touch(&mut self, now: u64, point: Point, phase: Phase) -> Action {
        let under = self.layout.hit_test(self.screen, point);
        match phase {
            Phase::Press => {
                self.touch_on = under;
                if under == Some(Button::Approve) && self.hold.is_none() {
                    self.hold = Some(Hold {
                        since: now,
                        by: Holder::Touch,
                    });
                    return Action::Holding(0);
                }
                Action::None
            }
            Phase::Hold => {
                let touch_hold = matches!(
                    self.hold,
                    Some(Hold {
                        by: Holder::Touch,
                        ..
                    })
                );
                if touch_hold && under != Some(Button::Approve) {
                    // Slid off the button: the hold is over, and this contact is spent.
                    self.hold = None;
                    self.touch_on = None;
                    return Action::HoldAbandoned;
                }
                match self.hold {
                    Some(hold) if touch_hold => {
                        Action::Holding(permille(now.saturating_sub(hold.since)))
                    }
                    _ => Action::None,
                }
            }
            Phase::Release => {
                let pressed = self.touch_on.take();
                if let Some(Hold {
                    by: Holder::Touch, ..
                }) = self.hold
                {
                    self.hold = None;
                    return Action::HoldAbandoned;
                }
                // A tap: pressed and released on the same button, both after arming.
                match (pressed, under) {
                    (Some(p), Some(u)) if p == u && p != Button::Approve => {
                        self.deliberate(p.key_event())
                    }
                    _ => Action::None,
                }
            }
        }
    }

    /// A deliberate key press or tap: on the approval screen OK never answers (it must be
    /// held); anything else goes to the screen.
    fn deliberate(&mut self, event: KeyEvent) -> Action {
        match (self.screen, event) {
            (Screen::Approval, KeyEvent::Ok) => Action::None,
            (Screen::Approval, KeyEvent::Cancel) => {
                self.hold = None;
                self.done = true;
                Action::Key(KeyEvent::Cancel)
            }
            (Screen::Approval, KeyEvent::Digit(_) | KeyEvent::Back) => Action::None,
            (_, event) => Action::Key(event),
        }
    }
}

fn permille(elapsed: u64) -> u16 {
    let p = elapsed.saturating_mul(1000) / HOLD_MS.max(1);
    u16::try_from(p.min(1000)).unwrap_or(1000)
}

/// How a prompt ended, for [`PromptLimiter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The user approved.
    Approved,
    /// Declined, cancelled by the rich side, timed out, or refused.
    Unanswered,
}

/// Rate limit on prompts: a rich VM cannot wear the user down with prompt after prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromptLimiter {
    unanswered: u32,
    next_allowed: u64,
}

impl PromptLimiter {
    /// No prompts yet.
    pub const fn new() -> PromptLimiter {
        PromptLimiter {
            unanswered: 0,
            next_allowed: 0,
        }
    }

    /// `Ok` when a prompt may be shown at `now`, otherwise how many ms are left to wait.
    pub fn check(&self, now: u64) -> Result<(), u64> {
        if now >= self.next_allowed {
            Ok(())
        } else {
            Err(self.next_allowed - now)
        }
    }

    /// Unanswered prompts in a row.
    pub fn unanswered(&self) -> u32 {
        self.unanswered
    }

    /// Records how a prompt ended at `now`.
    pub fn ended(&mut self, now: u64, ending: Ending) {
        match ending {
            Ending::Approved => *self = PromptLimiter::new(),
            Ending::Unanswered => {
                self.unanswered = self.unanswered.saturating_add(1);
                if let Some(extra) = self.unanswered.checked_sub(FREE_UNANSWERED) {
                    let wait = BACKOFF_BASE_MS
                        .checked_shl(extra.min(16))
                        .unwrap_or(BACKOFF_MAX_MS)
                        .min(BACKOFF_MAX_MS);
                    self.next_allowed = now.saturating_add(wait);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
