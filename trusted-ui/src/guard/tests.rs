use embedded_graphics::geometry::{Point, Size};
use embedded_graphics::primitives::Rectangle;

use super::*;

fn layout() -> Layout {
    Layout::new(Rectangle::new(Point::zero(), Size::new(800, 480)))
}

fn centre(screen: Screen, button: Button) -> Point {
    layout()
        .buttons(screen)
        .iter()
        .find(|(b, _)| *b == button)
        .map(|(_, r)| r.center())
        .expect("button on screen")
}

const SHOWN: u64 = 10_000;
const ARMED: u64 = SHOWN + ARM_DELAY_MS;

fn approval() -> Guard {
    Guard::new(Screen::Approval, layout(), SHOWN)
}

fn key(k: KeyEvent, phase: Phase) -> Input {
    Input::Key {
        key: Key::Mapped(k),
        phase,
    }
}

fn touch(point: Point, phase: Phase) -> Input {
    Input::Touch { point, phase }
}

#[test]
fn everything_before_arming_is_discarded() {
    let mut g = approval();
    for t in [SHOWN, SHOWN + 1, ARMED - 1] {
        assert_eq!(
            g.input(t, key(KeyEvent::Cancel, Phase::Press)),
            Action::Discarded
        );
        assert_eq!(
            g.input(t, key(KeyEvent::Ok, Phase::Press)),
            Action::Discarded
        );
        let approve = centre(Screen::Approval, Button::Approve);
        assert_eq!(g.input(t, touch(approve, Phase::Press)), Action::Discarded);
    }
    // Nothing started a hold, however long we wait.
    assert_eq!(g.tick(ARMED + 10 * HOLD_MS), Action::None);
    assert_eq!(g.hold_progress(ARMED + 10 * HOLD_MS), None);
}

#[test]
fn type_ahead_cannot_approve() {
    // The rich VM asks the user to type "yes" and Enter, then sends the request: every key,
    // typed fast, before and after arming, never holds Enter for a second.
    let mut g = approval();
    let mut t = SHOWN - 300;
    for _ in 0..20 {
        for k in [
            Key::Other,
            Key::Other,
            Key::Other,
            Key::Mapped(KeyEvent::Ok),
        ] {
            let a = g.input(
                t,
                Input::Key {
                    key: k,
                    phase: Phase::Press,
                },
            );
            assert_ne!(a, Action::Approve);
            t += 60;
            let a = g.input(
                t,
                Input::Key {
                    key: k,
                    phase: Phase::Release,
                },
            );
            assert_ne!(a, Action::Approve);
            t += 60;
            assert_ne!(g.tick(t), Action::Approve);
        }
    }
}

#[test]
fn a_key_held_from_before_arming_does_not_count() {
    let mut g = approval();
    assert_eq!(
        g.input(SHOWN + 100, key(KeyEvent::Ok, Phase::Press)),
        Action::Discarded
    );
    // Auto-repeat well past arming and past a hold's length: still nothing.
    let mut t = SHOWN + 130;
    while t < ARMED + 3 * HOLD_MS {
        let a = g.input(t, key(KeyEvent::Ok, Phase::Hold));
        assert!(matches!(a, Action::Discarded), "{a:?} at {t}");
        assert_ne!(g.tick(t), Action::Approve);
        t += 33;
    }
    assert_eq!(g.input(t, key(KeyEvent::Ok, Phase::Release)), Action::None);
}

#[test]
fn holding_enter_approves_after_hold_ms_with_progress() {
    let mut g = approval();
    assert_eq!(
        g.input(ARMED, key(KeyEvent::Ok, Phase::Press)),
        Action::Holding(0)
    );
    assert_eq!(g.tick(ARMED + HOLD_MS / 2), Action::Holding(500));
    assert_eq!(g.hold_progress(ARMED + HOLD_MS / 4), Some(250));
    assert_eq!(
        g.input(ARMED + 600, key(KeyEvent::Ok, Phase::Hold)),
        Action::Holding(600)
    );
    assert_eq!(g.tick(ARMED + HOLD_MS - 1), Action::Holding(999));
    assert_eq!(g.tick(ARMED + HOLD_MS), Action::Approve);
    // Answered: nothing more happens.
    assert_eq!(g.tick(ARMED + 2 * HOLD_MS), Action::None);
    assert_eq!(
        g.input(ARMED + 2 * HOLD_MS, key(KeyEvent::Ok, Phase::Press)),
        Action::Discarded
    );
}

#[test]
fn releasing_early_abandons_the_hold() {
    let mut g = approval();
    g.input(ARMED, key(KeyEvent::Ok, Phase::Press));
    assert_eq!(
        g.input(ARMED + HOLD_MS - 1, key(KeyEvent::Ok, Phase::Release)),
        Action::HoldAbandoned
    );
    assert_eq!(g.tick(ARMED + 5 * HOLD_MS), Action::None);
    // A fresh hold starts from zero.
    let t = ARMED + 6 * HOLD_MS;
    assert_eq!(
        g.input(t, key(KeyEvent::Ok, Phase::Press)),
        Action::Holding(0)
    );
    assert_eq!(g.tick(t + HOLD_MS - 1), Action::Holding(999));
    assert_eq!(g.tick(t + HOLD_MS), Action::Approve);
}

#[test]
fn a_late_release_after_the_full_hold_still_approves() {
    let mut g = approval();
    g.input(ARMED, key(KeyEvent::Ok, Phase::Press));
    assert_eq!(
        g.input(ARMED + HOLD_MS + 5, key(KeyEvent::Ok, Phase::Release)),
        Action::Approve
    );
}

#[test]
fn touch_hold_on_approve_approves() {
    let mut g = approval();
    let approve = centre(Screen::Approval, Button::Approve);
    assert_eq!(
        g.input(ARMED + 10, touch(approve, Phase::Press)),
        Action::Holding(0)
    );
    let nudged = Point::new(approve.x + 3, approve.y - 2);
    assert_eq!(
        g.input(ARMED + 510, touch(nudged, Phase::Hold)),
        Action::Holding(500)
    );
    assert_eq!(g.tick(ARMED + 10 + HOLD_MS), Action::Approve);
}

#[test]
fn touch_sliding_off_approve_or_lifting_early_abandons() {
    let mut g = approval();
    let approve = centre(Screen::Approval, Button::Approve);
    g.input(ARMED, touch(approve, Phase::Press));
    assert_eq!(
        g.input(ARMED + 200, touch(Point::new(400, 50), Phase::Hold)),
        Action::HoldAbandoned
    );
    // Sliding back onto the button does not resume the spent contact.
    assert_eq!(
        g.input(ARMED + 300, touch(approve, Phase::Hold)),
        Action::None
    );
    assert_eq!(g.tick(ARMED + 3 * HOLD_MS), Action::None);
    assert_eq!(
        g.input(ARMED + 3 * HOLD_MS, touch(approve, Phase::Release)),
        Action::None
    );

    let t = ARMED + 4 * HOLD_MS;
    g.input(t, touch(approve, Phase::Press));
    assert_eq!(
        g.input(t + 900, touch(approve, Phase::Release)),
        Action::HoldAbandoned
    );
    assert_eq!(g.tick(t + 2 * HOLD_MS), Action::None);
}

#[test]
fn tapping_approve_never_approves() {
    let mut g = approval();
    let approve = centre(Screen::Approval, Button::Approve);
    let mut t = ARMED;
    for _ in 0..50 {
        assert_ne!(g.input(t, touch(approve, Phase::Press)), Action::Approve);
        assert_ne!(
            g.input(t + 80, touch(approve, Phase::Release)),
            Action::Approve
        );
        t += 100;
        assert_ne!(g.tick(t), Action::Approve);
    }
}

#[test]
fn decline_is_a_tap_on_decline_after_arming() {
    let decline = centre(Screen::Approval, Button::Decline);
    let mut g = approval();
    // Pressed before arming, released after: not a tap.
    assert_eq!(
        g.input(ARMED - 10, touch(decline, Phase::Press)),
        Action::Discarded
    );
    assert_eq!(
        g.input(ARMED + 10, touch(decline, Phase::Release)),
        Action::None
    );
    // Pressed on Decline, released elsewhere: not a tap.
    g.input(ARMED + 20, touch(decline, Phase::Press));
    assert_eq!(
        g.input(ARMED + 90, touch(Point::new(400, 20), Phase::Release)),
        Action::None
    );
    // A real tap.
    assert_eq!(
        g.input(ARMED + 100, touch(decline, Phase::Press)),
        Action::None
    );
    assert_eq!(
        g.input(ARMED + 180, touch(decline, Phase::Release)),
        Action::Key(KeyEvent::Cancel)
    );
    assert_eq!(
        g.input(ARMED + 200, touch(decline, Phase::Press)),
        Action::Discarded
    );
}

#[test]
fn cancel_key_declines_and_wins_over_a_hold() {
    let mut g = approval();
    g.input(ARMED, key(KeyEvent::Ok, Phase::Press));
    assert_eq!(
        g.input(ARMED + 400, key(KeyEvent::Cancel, Phase::Press)),
        Action::Key(KeyEvent::Cancel)
    );
    assert_eq!(g.tick(ARMED + 3 * HOLD_MS), Action::None);
}

#[test]
fn touches_off_every_button_do_nothing() {
    let mut g = approval();
    for (x, y) in [(0, 0), (799, 0), (400, 240), (-5, 470), (10_000, 10_000)] {
        let p = Point::new(x, y);
        assert_eq!(g.input(ARMED, touch(p, Phase::Press)), Action::None);
        assert_eq!(g.input(ARMED + 50, touch(p, Phase::Release)), Action::None);
    }
}

#[test]
fn rich_cancel_waits_for_quiet_input() {
    let mut g = Guard::new(Screen::PinEntry, layout(), SHOWN);
    // The user types PIN digits.
    for (i, t) in (ARMED..ARMED + 1000).step_by(200).enumerate() {
        let d = u8::try_from(i).expect("small");
        assert_eq!(
            g.input(t, key(KeyEvent::Digit(d), Phase::Press)),
            Action::Key(KeyEvent::Digit(d))
        );
    }
    let last = ARMED + 800;
    // The rich side cancels mid-PIN: the path stays.
    assert_eq!(g.rich_cancel(last + 100), Action::None);
    assert!(g.closing());
    // Further keys are swallowed and keep it open.
    assert_eq!(
        g.input(last + 1500, key(KeyEvent::Digit(7), Phase::Press)),
        Action::Discarded
    );
    assert_eq!(g.tick(last + 1500 + QUIET_MS - 1), Action::None);
    assert_eq!(g.tick(last + 1500 + QUIET_MS), Action::Closed);
    assert_eq!(g.tick(last + 1500 + 2 * QUIET_MS), Action::None);
}

#[test]
fn rich_cancel_counts_discarded_early_input_as_typing() {
    let mut g = approval();
    g.input(SHOWN + 100, key(KeyEvent::Digit(1), Phase::Press));
    assert_eq!(g.rich_cancel(SHOWN + 200), Action::None);
    assert_eq!(g.tick(SHOWN + 100 + QUIET_MS), Action::Closed);
}

#[test]
fn rich_cancel_without_recent_input_closes_at_once() {
    let mut g = approval();
    assert_eq!(g.rich_cancel(ARMED), Action::Closed);
    let mut g = approval();
    g.input(ARMED, key(KeyEvent::Ok, Phase::Press));
    assert_eq!(g.rich_cancel(ARMED + QUIET_MS), Action::Closed);
    // The hold was dropped with the prompt.
    assert_eq!(g.tick(ARMED + 3 * QUIET_MS), Action::None);
}

#[test]
fn rich_cancel_during_a_hold_does_not_approve() {
    let mut g = approval();
    g.input(ARMED, key(KeyEvent::Ok, Phase::Press));
    assert_eq!(g.rich_cancel(ARMED + 100), Action::None);
    assert_eq!(g.tick(ARMED + HOLD_MS + 1), Action::None);
    assert_eq!(g.tick(ARMED + QUIET_MS), Action::Closed);
}

#[test]
fn pin_keypad_taps_and_keys() {
    let mut g = Guard::new(Screen::PinEntry, layout(), SHOWN);
    let five = centre(Screen::PinEntry, Button::Digit(5));
    assert_eq!(g.input(ARMED, touch(five, Phase::Press)), Action::None);
    assert_eq!(
        g.input(ARMED + 60, touch(five, Phase::Release)),
        Action::Key(KeyEvent::Digit(5))
    );
    let ok = centre(Screen::PinEntry, Button::Ok);
    g.input(ARMED + 100, touch(ok, Phase::Press));
    assert_eq!(
        g.input(ARMED + 160, touch(ok, Phase::Release)),
        Action::Key(KeyEvent::Ok)
    );
    assert_eq!(
        g.input(ARMED + 200, key(KeyEvent::Back, Phase::Press)),
        Action::Key(KeyEvent::Back)
    );
    assert_eq!(
        g.input(ARMED + 210, key(KeyEvent::Back, Phase::Release)),
        Action::None
    );
    assert_eq!(
        g.input(ARMED + 220, key(KeyEvent::Digit(3), Phase::Hold)),
        Action::None
    );
    // PIN digits typed ahead of the screen are dropped.
    let mut g = Guard::new(Screen::PinEntry, layout(), SHOWN);
    assert_eq!(
        g.input(SHOWN + 5, key(KeyEvent::Digit(1), Phase::Press)),
        Action::Discarded
    );
}

#[test]
fn arming_saturates_at_the_end_of_time() {
    let mut g = Guard::new(Screen::Approval, layout(), u64::MAX - 10);
    assert_eq!(
        g.input(u64::MAX - 5, key(KeyEvent::Cancel, Phase::Press)),
        Action::Discarded
    );
    assert_eq!(
        g.input(u64::MAX, key(KeyEvent::Ok, Phase::Press)),
        Action::Holding(0)
    );
    assert_eq!(g.tick(u64::MAX), Action::Holding(0));
}

#[test]
fn limiter_backs_off_after_unanswered_prompts_and_resets_on_approval() {
    let mut l = PromptLimiter::new();
    let mut t = 0;
    for _ in 0..FREE_UNANSWERED - 1 {
        assert_eq!(l.check(t), Ok(()));
        l.ended(t, Ending::Unanswered);
    }
    assert_eq!(l.check(t), Ok(()));
    l.ended(t, Ending::Unanswered);
    assert_eq!(l.check(t), Err(BACKOFF_BASE_MS));
    let mut expected = BACKOFF_BASE_MS;
    for _ in 0..10 {
        assert_eq!(l.check(t + expected - 1), Err(1));
        t += expected;
        assert_eq!(l.check(t), Ok(()));
        l.ended(t, Ending::Unanswered);
        expected = (expected * 2).min(BACKOFF_MAX_MS);
        assert_eq!(l.check(t), Err(expected));
    }
    assert_eq!(expected, BACKOFF_MAX_MS);
    t += expected;
    l.ended(t, Ending::Approved);
    assert_eq!(l.check(t), Ok(()));
    assert_eq!(l.unanswered(), 0);
}

#[test]
fn limiter_never_overflows() {
    let mut l = PromptLimiter::new();
    for _ in 0..100 {
        l.ended(u64::MAX - 1, Ending::Unanswered);
    }
    assert_eq!(l.check(u64::MAX), Ok(()));
    assert!(l.check(u64::MAX - 2).is_err());
}
