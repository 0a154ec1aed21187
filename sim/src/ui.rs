//! The trusted-UI side of the simulator: draws the screens the secure OS
//! would scan out and turns the user's keys into approve / decline.

use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use payment_app::service::{Outcome as ServiceOutcome, UiPrompt};
use trusted_ui::{
    ApprovalView, KeyEvent, Outcome, PIN_MAX_LEN, PinEntry, PinStep, draw_approval, draw_lockout,
    draw_pin_entry, draw_result, draw_timeout,
};

use crate::Event;
use crate::screen::{DISPLAY, FrameBuffer, ScreenLog};

/// A scripted user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Press Approve (no PIN: with a PIN set, cancel the PIN screen).
    Approve,
    /// Press Decline.
    Decline,
    /// Press Approve and type this PIN (set as the PIN at start if none is).
    Pin(String),
}

impl std::str::FromStr for Answer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "approve" => Ok(Answer::Approve),
            "decline" => Ok(Answer::Decline),
            _ => match s.strip_prefix("pin:") {
                Some(pin)
                    if (4..=12).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    Ok(Answer::Pin(pin.into()))
                }
                _ => Err(format!(
                    "{s:?}: expected approve, decline or pin:DIGITS (4 to 12 digits)"
                )),
            },
        }
    }
}

/// Where the user's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The same answer to every prompt.
    Auto(Answer),
    /// Nobody answers: every approval times out (for tests).
    Silent,
    /// This process's terminal: `y` or Enter approve / submit, `n` declines,
    /// digits type the PIN, `b` deletes a digit.
    Terminal,
}

/// What the user decided.
pub(crate) enum Decision {
    Approve(Option<String>),
    Decline,
}

/// What the UI thread is told.
pub(crate) enum UiMsg {
    Show(Box<UiPrompt>),
    WrongPin(u8),
    Finished(ServiceOutcome),
    /// The client went away: the prompt is gone.
    Dismiss,
    Key(KeyEvent),
}

enum State {
    Idle,
    Approval(Box<UiPrompt>),
    Pin(PinEntry, Option<u8>),
    Waiting,
}

struct Ui {
    auto: Option<Answer>,
    word: String,
    fb: FrameBuffer,
    log: ScreenLog,
    shown: Arc<Mutex<Vec<PathBuf>>>,
    events: Sender<Event>,
    state: State,
}

pub(crate) fn spawn(
    input: Input,
    screens_dir: Option<PathBuf>,
    word: String,
    events: Sender<Event>,
    shown: Arc<Mutex<Vec<PathBuf>>>,
) -> Sender<UiMsg> {
    let (tx, rx) = mpsc::channel::<UiMsg>();
    let auto = match input {
        Input::Auto(answer) => Some(answer),
        Input::Silent => None,
        Input::Terminal => {
            let keys = tx.clone();
            thread::spawn(move || read_terminal(&keys));
            None
        }
    };
    let mut ui = Ui {
        auto,
        word,
        fb: FrameBuffer::new(DISPLAY.0, DISPLAY.1),
        log: ScreenLog::new(screens_dir),
        shown,
        events,
        state: State::Idle,
    };
    thread::spawn(move || {
        while let Ok(msg) = rx.recv() {
            ui.on(msg);
        }
    });
    tx
}

fn read_terminal(keys: &Sender<UiMsg>) {
    let mut stdin = std::io::stdin();
    let mut byte = [0u8; 1];
    while let Ok(1) = stdin.read(&mut byte) {
        let key = match byte[0] {
            b'y' | b'Y' | b'\n' | b'\r' => KeyEvent::Ok,
            b'n' | b'N' => KeyEvent::Cancel,
            b'b' | 0x7f | 0x08 => KeyEvent::Back,
            d @ b'0'..=b'9' => KeyEvent::Digit(d - b'0'),
            _ => continue,
        };
        if keys.send(UiMsg::Key(key)).is_err() {
            return;
        }
    }
}

/// Whether the approval screen's text is the header, then the statement to
/// be signed, line for line.
fn shows_statement(shown: &str, statement: &str) -> bool {
    let mut lines = shown.lines();
    lines.next() == Some(trusted_ui::HEADER_TEXT)
        && statement.lines().all(|line| lines.next() == Some(line))
}

impl Ui {
    fn on(&mut self, msg: UiMsg) {
        match msg {
            UiMsg::Show(prompt) => self.show(prompt),
            UiMsg::Key(key) => self.key(key),
            UiMsg::WrongPin(remaining) => {
                eprintln!("[sim] wrong PIN, {remaining} tries left");
                self.pin_screen(PinEntry::new(PIN_MAX_LEN), Some(remaining));
                if self.auto.is_some() {
                    // A scripted user does not retry a wrong PIN.
                    self.key(KeyEvent::Cancel);
                }
            }
            UiMsg::Finished(outcome) => {
                self.state = State::Idle;
                let (name, drawn) = match outcome {
                    ServiceOutcome::Approved => {
                        ("approved", draw_result(&mut self.fb, Outcome::Approved))
                    }
                    ServiceOutcome::Declined | ServiceOutcome::Failed(_) => {
                        ("declined", draw_result(&mut self.fb, Outcome::Declined))
                    }
                    ServiceOutcome::TimedOut => ("timeout", draw_timeout(&mut self.fb)),
                    ServiceOutcome::Locked => ("lockout", draw_lockout(&mut self.fb)),
                };
                eprintln!("[sim] approval finished: {outcome:?}");
                if drawn.is_ok() {
                    self.save(name);
                }
            }
            UiMsg::Dismiss => {
                eprintln!("[sim] the client closed the connection: prompt dismissed");
                self.state = State::Idle;
            }
        }
    }

    fn save(&mut self, name: &str) {
        if let Some(path) = self.log.save(&self.fb, name) {
            eprintln!("[sim] screen: {}", path.display());
            if let Ok(mut shown) = self.shown.lock() {
                shown.push(path);
            }
        }
    }

    fn decide(&mut self, decision: Decision) {
        self.state = State::Waiting;
        let _ = self.events.send(Event::Decision(decision));
    }

    fn show(&mut self, prompt: Box<UiPrompt>) {
        let request = &prompt.request;
        let Some(currency) = request.currency.currency() else {
            return self.decide(Decision::Decline);
        };
        let view = ApprovalView {
            merchant: &request.merchant,
            amount_minor: request.amount_minor,
            currency,
            credential_label: &prompt.credential_label,
        };
        match draw_approval(&mut self.fb, &view, &self.word) {
            // What you see is what you sign: the screen must start with the
            // exact text the app will sign.
            Ok(shown) if shows_statement(&shown, &prompt.prompt.text) => {}
            _ => {
                eprintln!("[sim] the approval screen cannot show the signed text: declining");
                return self.decide(Decision::Decline);
            }
        }
        self.save("approval");
        eprintln!(
            "[sim] trusted display asks:\n{}\n[sim] approve? (y/n{})",
            prompt.prompt.text,
            if prompt.prompt.pin_required {
                ", then the PIN and Enter"
            } else {
                ""
            }
        );
        self.state = State::Approval(prompt);
        match self.auto.clone() {
            Some(Answer::Decline) => self.key(KeyEvent::Cancel),
            Some(_) => self.key(KeyEvent::Ok),
            None => {}
        }
    }

    fn pin_screen(&mut self, entry: PinEntry, tries: Option<u8>) {
        if draw_pin_entry(&mut self.fb, &entry, tries).is_ok() {
            self.save("pin");
        }
        self.state = State::Pin(entry, tries);
    }

    fn key(&mut self, key: KeyEvent) {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => {}
            State::Waiting => self.state = State::Waiting,
            State::Approval(prompt) => match key {
                KeyEvent::Ok if prompt.prompt.pin_required => {
                    self.pin_screen(PinEntry::new(PIN_MAX_LEN), None);
                    match self.auto.clone() {
                        Some(Answer::Pin(pin)) => {
                            for d in pin.bytes() {
                                self.key(KeyEvent::Digit(d - b'0'));
                            }
                            self.key(KeyEvent::Ok);
                        }
                        Some(_) => {
                            eprintln!(
                                "[sim] a PIN is set but --auto gives none (use --auto pin:DIGITS): cancelling"
                            );
                            self.key(KeyEvent::Cancel);
                        }
                        None => {}
                    }
                }
                KeyEvent::Ok => self.decide(Decision::Approve(None)),
                KeyEvent::Cancel => self.decide(Decision::Decline),
                _ => self.state = State::Approval(prompt),
            },
            State::Pin(mut entry, tries) => match entry.handle(key) {
                PinStep::Editing => {
                    // Redraw only in interactive mode (one screen per digit).
                    if self.auto.is_none() {
                        self.pin_screen(entry, tries);
                    } else {
                        self.state = State::Pin(entry, tries);
                    }
                }
                PinStep::Submitted => {
                    if self.auto.is_some() && draw_pin_entry(&mut self.fb, &entry, tries).is_ok() {
                        self.save("pin");
                    }
                    let pin: String = entry
                        .take()
                        .digits()
                        .iter()
                        .map(|d| char::from(b'0' + d))
                        .collect();
                    self.decide(Decision::Approve(Some(pin)));
                }
                PinStep::Cancelled => self.decide(Decision::Decline),
            },
        }
    }
}
