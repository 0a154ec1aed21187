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

use core::fmt::Write as _;

use payment_app::service::UiPrompt;
use trusted_ui::{KeyEvent, PIN_MAX_LEN, Pin, PinEntry, PinStep};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(prompt: &mut Prompt, keys: &[u8]) -> std::vec::Vec<Step> {
        keys.iter().map(|&k| prompt.key(k)).collect()
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
