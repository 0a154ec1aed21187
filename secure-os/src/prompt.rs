//! The text-mode trusted prompt: what it prints and how it reads keys.
//! Pure logic, host-tested; the image feeds it bytes from the vPL011.
//!
//! # Keys
//! - Confirm stage (`Approve? [y/n]`): `y`/`Y` or `n`/`N` select an answer
//!   (the last one typed counts), Enter (`\r` or `\n`) commits it; Enter with
//!   nothing selected, and every other key, is ignored. Backspace/DEL clears
//!   the selection; Esc or Ctrl-C declines at once.
//! - PIN stage (`PIN:`): digits are collected (masked), Backspace/DEL removes
//!   one, Enter submits a non-empty PIN, Esc or Ctrl-C declines; other keys
//!   are ignored.
//!
//! Committing on Enter means a single stray key never approves anything.
//!
//! # Rules (the same as the graphical screen's, `trusted_ui::guard`)
//! [`ConsoleGate`] stands in front of [`Prompt`]:
//! - bytes that arrive in the first [`ARM_DELAY_MS`] after the prompt was
//!   printed are discarded (so is everything typed before it: secure-os
//!   drains the UART when it takes focus);
//! - when the rich side cancels the prompt while the user is typing, the
//!   console stays with the secure VM, every byte is swallowed, and focus
//!   goes back only after [`QUIET_MS`] without a byte ([`CLOSING_NOTICE`] is
//!   printed);
//! - a serial console has no key-up, so press-and-hold cannot be asked for:
//!   approving needs `y` and then Enter, both after the arming delay.

use core::fmt::Write as _;

use payment_app::service::UiPrompt;
use trusted_ui::guard::{ARM_DELAY_MS, QUIET_MS};
use trusted_ui::{KeyEvent, PIN_MAX_LEN, Pin, PinEntry, PinStep};

pub use trusted_ui::guard::CLOSING_NOTICE;

/// The arming, and quiet-before-release, rules for one text prompt. Time is
/// in milliseconds of any monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleGate {
    armed_at: u64,
    last_byte: Option<u64>,
    closing: bool,
}

impl ConsoleGate {
    /// A prompt printed at `shown_at`.
    pub fn new(shown_at: u64) -> ConsoleGate {
        ConsoleGate {
            armed_at: shown_at.saturating_add(ARM_DELAY_MS),
            last_byte: None,
            closing: false,
        }
    }

    /// A byte typed at `now`: true when the prompt may see it. Every byte,
    /// counted or not, is activity for [`ConsoleGate::quiet`].
    pub fn admit(&mut self, now: u64) -> bool {
        self.last_byte = Some(self.last_byte.map_or(now, |last| last.max(now)));
        !self.closing && now >= self.armed_at
    }

    /// No byte for [`QUIET_MS`] (or none at all).
    pub fn quiet(&self, now: u64) -> bool {
        self.last_byte
            .is_none_or(|last| now.saturating_sub(last) >= QUIET_MS)
    }

    /// The rich side cancelled at `now`: true when the console may go back
    /// at once; otherwise the gate is closing and swallows every byte until
    /// [`ConsoleGate::quiet`].
    pub fn rich_cancel(&mut self, now: u64) -> bool {
        if self.quiet(now) {
            true
        } else {
            self.closing = true;
            false
        }
    }

    /// Keeps a cancelled prompt open until [`ConsoleGate::quiet`] even
    /// though the console is quiet now (the user is still touching the
    /// screen): every byte is swallowed meanwhile.
    pub fn hold_open(&mut self) {
        self.closing = true;
    }

    /// Whether a cancelled prompt waits for quiet input.
    pub fn closing(&self) -> bool {
        self.closing
    }
}

/// The heading line of the prompt.
pub const HEADING: &str = "=== TRUSTED PAYMENT PROMPT (secure VM) ===";
/// The question line.
pub const QUESTION: &str = "Approve? [y/n] then Enter";
/// The PIN line.
pub const PIN_QUESTION: &str = "PIN: (digits, then Enter; Esc declines)";

/// The lines that show an approval, in order: heading, the exact statement
/// that gets signed (one line each: `Pay`, amount and currency,
/// `to <merchant>`, `with <label>`), the security word, the question.
pub fn prompt_lines(prompt: &UiPrompt, security_word: &str) -> heapless::Vec<Line, 12> {
    let mut lines = heapless::Vec::new();
    let _ = lines.push(line(HEADING));
    for statement in prompt.prompt.text.split('\n') {
        let _ = lines.push(line(statement));
    }
    let mut word = Line::new();
    let _ = write!(word, "Security word: {security_word}");
    let _ = lines.push(word);
    let _ = lines.push(line(QUESTION));
    lines
}

/// One printed line.
pub type Line = heapless::String<160>;

fn line(text: &str) -> Line {
    let mut out = Line::new();
    let _ = out.push_str(text);
    out
}

/// What one key did.
#[derive(Debug)]
pub enum Step {
    /// Nothing to do (key ignored, or a PIN digit/back: see [`Prompt::pin_len`]).
    Nothing,
    /// The user selected yes (true) or no (false); not committed yet.
    Selected(bool),
    /// The selection was cleared.
    Cleared,
    /// Yes was committed and a PIN is required: show [`PIN_QUESTION`].
    AskPin,
    /// Approve, with the PIN when one was asked for.
    Approve(Option<Pin>),
    /// Decline.
    Decline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Confirm,
    Pin,
}

/// The key handling of one approval.
#[derive(Debug)]
pub struct Prompt {
    stage: Stage,
    choice: Option<bool>,
    pin_required: bool,
    pin: PinEntry,
}

const ESC: u8 = 0x1b;
const CTRL_C: u8 = 0x03;
const BACKSPACE: u8 = 0x08;
const DEL: u8 = 0x7f;

impl Prompt {
    /// A prompt; `pin_required` as the payment app's prompt says.
    pub fn new(pin_required: bool) -> Self {
        Prompt {
            stage: Stage::Confirm,
            choice: None,
            pin_required,
            pin: PinEntry::new(PIN_MAX_LEN),
        }
    }

    /// Digits typed in the PIN stage so far (for the masked echo).
    pub fn pin_len(&self) -> usize {
        self.pin.len()
    }

    /// Whether the PIN stage is active.
    pub fn asking_pin(&self) -> bool {
        self.stage == Stage::Pin
    }

    /// After a wrong PIN: ask again (the digits were already taken out).
    pub fn retry_pin(&mut self) {
        self.stage = Stage::Pin;
        self.pin = PinEntry::new(PIN_MAX_LEN);
    }

    /// Handles one byte from the console.
    pub fn key(&mut self, byte: u8) -> Step {
        if matches!(byte, ESC | CTRL_C) {
            return Step::Decline;
        }
        match self.stage {
            Stage::Confirm => match byte {
                b'y' | b'Y' => {
                    self.choice = Some(true);
                    Step::Selected(true)
                }
                b'n' | b'N' => {
                    self.choice = Some(false);
                    Step::Selected(false)
                }
                BACKSPACE | DEL if self.choice.is_some() => {
                    self.choice = None;
                    Step::Cleared
                }
                b'\r' | b'\n' => match self.choice {
                    None => Step::Nothing,
                    Some(false) => Step::Decline,
                    Some(true) if self.pin_required => {
                        self.stage = Stage::Pin;
                        Step::AskPin
                    }
                    Some(true) => Step::Approve(None),
                },
                _ => Step::Nothing,
            },
            Stage::Pin => {
                let event = match byte {
                    b'0'..=b'9' => KeyEvent::Digit(byte - b'0'),
                    BACKSPACE | DEL => KeyEvent::Back,
                    b'\r' | b'\n' => KeyEvent::Ok,
                    _ => return Step::Nothing,
                };
                match self.pin.handle(event) {
                    PinStep::Editing => Step::Nothing,
                    PinStep::Submitted => Step::Approve(Some(self.pin.take())),
                    PinStep::Cancelled => Step::Decline,
                }
            }
        }
    }
}

/// The PIN as the payment app takes it (ASCII digits).
pub fn pin_text(pin: &Pin) -> heapless::String<PIN_MAX_LEN> {
    let mut out = heapless::String::new();
    for digit in pin.digits() {
        let _ = out.push(char::from(b'0' + digit));
    }
    out
}

/// The heading of the setup on the console.
pub const SETUP_HEADING: &str = "=== TRUSTED SETUP (secure VM) ===";
/// The setup's word question.
pub const SETUP_QUESTION: &str = "Choose your security word: 1, 2 or 3, then Enter (Esc cancels)";
/// The setup's PIN question.
pub const SETUP_PIN_QUESTION: &str = "New PIN: (4 to 12 digits, then Enter)";

/// The console lines of a setup: heading, the words numbered, the question.
pub fn setup_lines(words: &[&str]) -> heapless::Vec<Line, 8> {
    let mut lines = heapless::Vec::new();
    let _ = lines.push(line(SETUP_HEADING));
    for (i, word) in words.iter().enumerate() {
        let mut l = Line::new();
        let _ = write!(l, "  {}) {word}", i + 1);
        let _ = lines.push(l);
    }
    let _ = lines.push(line(SETUP_QUESTION));
    lines
}

/// What one key did in a setup on the console.
#[derive(Debug)]
pub enum SetupStep {
    /// Nothing to report (a digit of the PIN, an ignored key).
    Nothing,
    /// Word `n` (0-based) is selected, not committed yet.
    Selected(usize),
    /// The word is committed: ask for the PIN ([`SETUP_PIN_QUESTION`]).
    AskPin,
    /// Enter on a PIN shorter than 4 digits: ask again.
    TooShort,
    /// Word and PIN chosen.
    Done { choice: usize, pin: Pin },
    /// Esc or Ctrl-C.
    Cancel,
}

/// The key handling of one setup on the console (the same choices as the
/// screen: one of three words, then a PIN of 4 to 12 digits).
#[derive(Debug)]
pub struct SetupPrompt {
    selected: Option<usize>,
    committed: Option<usize>,
    pin: PinEntry,
}

impl Default for SetupPrompt {
    fn default() -> Self {
        Self::new()
    }
}

impl SetupPrompt {
    pub fn new() -> SetupPrompt {
        SetupPrompt {
            selected: None,
            committed: None,
            pin: PinEntry::new(PIN_MAX_LEN),
        }
    }

    /// Handles one byte from the console.
    pub fn key(&mut self, byte: u8) -> SetupStep {
        if matches!(byte, ESC | CTRL_C) {
            return SetupStep::Cancel;
        }
        let Some(choice) = self.committed else {
            return match byte {
                b'1'..=b'3' => {
                    let n = usize::from(byte - b'1');
                    self.selected = Some(n);
                    SetupStep::Selected(n)
                }
                b'\r' | b'\n' if self.selected.is_some() => {
                    self.committed = self.selected;
                    SetupStep::AskPin
                }
                _ => SetupStep::Nothing,
            };
        };
        match byte {
            b'0'..=b'9' => {
                self.pin.handle(KeyEvent::Digit(byte - b'0'));
                SetupStep::Nothing
            }
            BACKSPACE | DEL => {
                self.pin.handle(KeyEvent::Back);
                SetupStep::Nothing
            }
            b'\r' | b'\n' if self.pin.len() < 4 => SetupStep::TooShort,
            b'\r' | b'\n' => SetupStep::Done {
                choice,
                pin: self.pin.take(),
            },
            _ => SetupStep::Nothing,
        }
    }

    /// Digits of the new PIN typed so far.
    pub fn pin_len(&self) -> usize {
        self.pin.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setup_on_the_console_takes_a_word_then_a_pin() {
        let mut s = SetupPrompt::new();
        assert!(matches!(s.key(b'\r'), SetupStep::Nothing));
        assert!(matches!(s.key(b'4'), SetupStep::Nothing));
        assert!(matches!(s.key(b'2'), SetupStep::Selected(1)));
        assert!(matches!(s.key(b'3'), SetupStep::Selected(2)));
        assert!(matches!(s.key(b'\r'), SetupStep::AskPin));
        for b in b"12" {
            s.key(*b);
        }
        assert!(matches!(s.key(b'\r'), SetupStep::TooShort));
        for b in b"34" {
            s.key(*b);
        }
        match s.key(b'\n') {
            SetupStep::Done { choice, pin } => {
                assert_eq!(choice, 2);
                assert_eq!(pin.digits(), &[1, 2, 3, 4]);
            }
            other => panic!("{other:?}"),
        }
        let mut s = SetupPrompt::new();
        s.key(b'1');
        assert!(matches!(s.key(0x1b), SetupStep::Cancel));
        let lines = setup_lines(&["A-01", "B-02", "C-03"]);
        assert_eq!(lines[2].as_str(), "  2) B-02");
    }

    fn feed(prompt: &mut Prompt, keys: &[u8]) -> std::vec::Vec<Step> {
        keys.iter().map(|&k| prompt.key(k)).collect()
    }

    #[test]
    fn gate_discards_early_bytes() {
        let mut g = ConsoleGate::new(1_000);
        assert!(!g.admit(1_000));
        assert!(!g.admit(1_000 + ARM_DELAY_MS - 1));
        assert!(g.admit(1_000 + ARM_DELAY_MS));
        // Type-ahead typed as the prompt appears never answers it.
        let mut g = ConsoleGate::new(1_000);
        let mut p = Prompt::new(false);
        for (t, b) in [(1_050, b'y'), (1_200, b'\r')] {
            if g.admit(t) {
                assert!(!matches!(p.key(b), Step::Approve(_)));
            }
        }
        assert!(matches!(p.key(b'\r'), Step::Nothing));
    }

    #[test]
    fn gate_keeps_the_console_while_the_user_types() {
        let mut g = ConsoleGate::new(0);
        assert!(g.rich_cancel(10), "no byte yet: release at once");
        let mut g = ConsoleGate::new(0);
        assert!(g.admit(600));
        assert!(!g.rich_cancel(700));
        assert!(g.closing());
        assert!(!g.admit(1_500), "bytes after the cancel are swallowed");
        assert!(!g.quiet(1_500 + QUIET_MS - 1));
        assert!(g.quiet(1_500 + QUIET_MS));
        // Bytes before arming count as typing too.
        let mut g = ConsoleGate::new(0);
        assert!(!g.admit(100));
        assert!(!g.rich_cancel(200));
        assert!(g.quiet(100 + QUIET_MS));
        // A byte typed long ago does not hold the console.
        let mut g = ConsoleGate::new(0);
        g.admit(600);
        assert!(g.rich_cancel(600 + QUIET_MS));
    }

    #[test]
    fn yes_needs_enter() {
        let mut p = Prompt::new(false);
        let steps = feed(&mut p, b"xqy");
        assert!(matches!(
            steps[..],
            [Step::Nothing, Step::Nothing, Step::Selected(true)]
        ));
        assert!(matches!(p.key(b'\r'), Step::Approve(None)));
    }

    #[test]
    fn enter_alone_is_ignored_and_last_choice_counts() {
        let mut p = Prompt::new(false);
        assert!(matches!(p.key(b'\n'), Step::Nothing));
        feed(&mut p, b"yn");
        assert!(matches!(p.key(b'\n'), Step::Decline));
        let mut p = Prompt::new(false);
        feed(&mut p, b"y");
        assert!(matches!(p.key(DEL), Step::Cleared));
        assert!(matches!(p.key(b'\r'), Step::Nothing));
    }

    #[test]
    fn escape_declines() {
        let mut p = Prompt::new(true);
        assert!(matches!(p.key(ESC), Step::Decline));
        let mut p = Prompt::new(true);
        feed(&mut p, b"y\r");
        assert!(matches!(p.key(CTRL_C), Step::Decline));
    }

    #[test]
    fn pin_is_collected_masked_and_submitted() {
        let mut p = Prompt::new(true);
        feed(&mut p, b"Y");
        assert!(matches!(p.key(b'\r'), Step::AskPin));
        assert!(p.asking_pin());
        // The \n of a \r\n pair and letters do nothing.
        feed(&mut p, b"\n12a3");
        assert_eq!(p.pin_len(), 3);
        feed(&mut p, &[BACKSPACE]);
        feed(&mut p, b"45");
        assert_eq!(p.pin_len(), 4);
        let Step::Approve(Some(pin)) = p.key(b'\r') else {
            panic!("expected approve with pin");
        };
        assert_eq!(pin_text(&pin).as_str(), "1245");
        p.retry_pin();
        assert_eq!(p.pin_len(), 0);
        assert!(matches!(p.key(b'\r'), Step::Nothing));
    }

    #[test]
    fn lines_show_the_exact_statement() {
        use protocol::{CurrencyCode, Merchant, PaymentRequest};
        let text = trusted_ui::approval_text(&trusted_ui::ApprovalView {
            merchant: "Corner Cafe",
            amount_minor: 1250,
            currency: protocol::Currency::from_code("EUR").expect("known"),
            credential_label: "Visa ending 4242",
        })
        .expect("valid");
        let prompt = UiPrompt {
            prompt: payment_app::ApprovalPrompt {
                text,
                pin_required: false,
                deadline_ms: 0,
            },
            request: PaymentRequest {
                credential: Default::default(),
                amount_minor: 1250,
                currency: CurrencyCode(*b"EUR"),
                merchant: Merchant::try_from("Corner Cafe").expect("fits"),
                nonce: [0; 32],
            },
            credential_label: protocol::Label::try_from("Visa ending 4242").expect("fits"),
        };
        let lines = prompt_lines(&prompt, "HERON-76");
        let lines: std::vec::Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
        assert_eq!(
            lines,
            [
                HEADING,
                "Pay",
                "12.50 EUR",
                "to Corner Cafe",
                "with Visa ending 4242",
                "Security word: HERON-76",
                QUESTION
            ]
        );
    }
}
