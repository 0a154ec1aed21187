//! secure-os's event loop without its devices: what a connection's bytes, a
//! console key, a touch-screen event or the passing of time does to the
//! connections and to the approval on screen. I/O-free and tested on the
//! host; the image reads its devices, feeds the events to an [`EventLoop`]
//! and implements [`Devices`] over the real hardware.
//!
//! # Design notes
//! - Every effect is one [`Devices`] method: print a console line, take or
//!   give back the console focus or the display (mvmm's hypercalls), drop
//!   type-ahead, publish the framebuffer, reset a connection, fetch fresh
//!   entropy, read the clock. A hypercall's status is its method's return
//!   value because the next step hangs on it at once (no focus: the payment
//!   is declined; no display: the text prompt alone asks).
//! - The screens are drawn here, into the private framebuffer the image
//!   lends (a [`Framebuffer`] is plain memory), then published.
//! - Signing and storing happen inside the payment service, through its
//!   [`Storage`], while [`Switchboard::approve`] runs: the response is queued
//!   for the connection only once both succeeded, and a failed store answers
//!   with an error and ends the prompt as failed.
//! - The image paces the reads ([`EventLoop::wants_input`],
//!   [`EventLoop::wants_keys`]) and calls, in each round: the vsock events,
//!   the connections' input, their output, [`EventLoop::reap`], the console
//!   keys, the input device's events, then [`EventLoop::tick`].
//!
//! # Rules of the trusted path
//! - A request that needs the user takes the console focus first: refused,
//!   the payment is declined unseen. Type-ahead is dropped, the screen is
//!   drawn and the display taken (refused: the text prompt alone asks), and
//!   both prompts are armed only from the moment they are out
//!   ([`ConsoleGate`], [`Session`]).
//! - One prompt at a time: the service answers `Busy` to a second request;
//!   a request that comes while a cancelled prompt waits for quiet input, or
//!   while the limiter backs off after unanswered prompts, is declined
//!   without being shown (and does not count as unanswered).
//! - A rich-side cancel (its connection closes, or is reset for breaking
//!   the protocol) releases the path only once the console and the touch
//!   screen have both been quiet ([`CLOSING_NOTICE`] is shown meanwhile and
//!   every byte is swallowed).
//! - The path is given back (display, then drained console and focus)
//!   whenever the prompt ends: answered, declined, timed out, failed.

#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

use embedded_graphics::geometry::OriginDimensions as _;
use mvmm_core::hypercall::{CONSOLE_FOCUS, DISPLAY};
use payment_app::service::{Outcome, UiPrompt};
use payment_app::{SetupWords, Storage};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};
use trusted_ui::guard::{Ending, PromptLimiter};

use crate::keys::SecurityWord;
use crate::prompt::{self, CLOSING_NOTICE, ConsoleGate, Prompt, SetupPrompt, SetupStep, Step};
use crate::screen::{self, Framebuffer};
use crate::server::{Approval, Endpoint, PAYMENT_PORT, Stats, Switchboard, Ui};
use crate::touch::{Effect, Session};

/// Where console lines go (the vPL011; mvmm adds the VM's prefix).
pub trait Console {
    /// Prints one line.
    fn print(&mut self, line: fmt::Arguments<'_>);
}

/// What the event loop asks of the secure VM's devices.
pub trait Devices: Console {
    /// Microseconds of the monotonic counter (the same clock as the
    /// `now_ms` the loop is given, in finer units).
    fn now_us(&mut self) -> u64;
    /// mvmm's console-focus hypercall: take (`true`) or give back the
    /// console's input. Returns its status (0: done).
    fn console_focus(&mut self, take: bool) -> u64;
    /// mvmm's display hypercall: scan out the private framebuffer (`true`)
    /// or the rich VM's again. Returns its status (0: done).
    fn display(&mut self, take: bool) -> u64;
    /// Drops every console byte typed so far.
    fn drain_console(&mut self);
    /// Drops every input-device event queued so far.
    fn drain_input(&mut self);
    /// Makes the framebuffer's pixels visible to the scan-out.
    fn publish(&mut self, pixels: &[u32]);
    /// Resets a vsock connection.
    fn reset(&mut self, endpoint: Endpoint);
    /// 32 fresh bytes from the entropy sources, if they deliver.
    fn entropy(&mut self) -> Option<[u8; 32]>;
}

/// Prints one formatted line on a [`Console`].
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        $out.print(format_args!($($arg)*))
    };
}

/// The heartbeat: a debug line every `period` (any unit of a monotonic
/// counter), and the vsock counters after a beat when they changed.
#[derive(Debug)]
pub struct Heartbeat {
    period: u64,
    next: u64,
    beats: u64,
    last_stats: Stats,
}

impl Heartbeat {
    /// Beats every `period` from `now`.
    pub fn new(now: u64, period: u64) -> Heartbeat {
        let period = period.max(1);
        Heartbeat {
            period,
            next: now.wrapping_add(period),
            beats: 0,
            last_stats: Stats::default(),
        }
    }

    /// Prints the beats due at `now`; `stats` are the services' counters
    /// (`None` while the payment service is off).
    pub fn run(&mut self, now: u64, stats: Option<Stats>, console: &mut impl Console) {
        while now >= self.next {
            self.next = self.next.wrapping_add(self.period);
            self.beats += 1;
            // Debug level (`<7>`): mvmm's console shows it only when
            // verbose (`cargo xtask run --verbose`, the tests).
            say!(console, "<7>secure-os: heartbeat {}", self.beats);
            if let Some(stats) = stats
                && stats != self.last_stats
            {
                self.last_stats = stats;
                say!(
                    console,
                    "<7>secure-os: vsock stats: accepted {}, refused {}, frames {}, closed for violations {}, evicted {}, idle {}",
                    stats.accepted,
                    stats.refused,
                    stats.frames,
                    stats.violations,
                    stats.evicted,
                    stats.idle
                );
            }
        }
    }
}

/// The payment service's connections and the trusted prompt, between
/// events.
///
/// # Invariants
/// - `display_held` implies `focus_held`: the display is taken only once
///   the focus is, and both are given back together when the prompt ends.
/// - `session` is `Some` only while `display_held`.
/// - `focus_held` exactly while `gate` is `Some`.
/// - `prompt` and `setup` are `Some` only while `gate` is (a prompt on
///   screen is armed by its gate); a `gate` without either is a cancelled
///   prompt waiting for quiet input.
pub struct EventLoop<'fb, S: Storage> {
    board: Switchboard<S>,
    rng: ChaCha20Rng,
    /// The security word every prompt shows.
    word: SecurityWord,
    prompt: Option<Prompt>,
    /// The arming and quiet-before-release rules of the prompt on screen,
    /// or of a cancelled one that waits for quiet input.
    gate: Option<ConsoleGate>,
    /// Backs prompts off after unanswered ones.
    limiter: PromptLimiter,
    focus_held: bool,
    /// The private framebuffer the screens are drawn into, when the board
    /// has a display.
    screen: Option<Framebuffer<'fb>>,
    display_held: bool,
    /// The input rules of the approval on the display.
    session: Option<Session>,
    /// When the last request's bytes were read (us; for the
    /// prompt-to-pixels figure).
    request_arrived_us: u64,
    /// When the user's approval was taken and how long signing and storing
    /// it took (us), until its response is sent: the bench's breakdown of
    /// an approval.
    answered: Option<(u64, u64)>,
    /// The setup on screen: the words offered and the console's keys.
    setup: Option<(SetupWords, SetupPrompt)>,
}

impl<'fb, S: Storage> EventLoop<'fb, S> {
    /// The loop around the services, with its random generator, the
    /// security word to show and the private framebuffer (if any).
    pub fn new(
        board: Switchboard<S>,
        rng: ChaCha20Rng,
        word: SecurityWord,
        screen: Option<Framebuffer<'fb>>,
    ) -> Self {
        EventLoop {
            board,
            rng,
            word,
            prompt: None,
            gate: None,
            limiter: PromptLimiter::new(),
            focus_held: false,
            screen,
            display_held: false,
            session: None,
            request_arrived_us: 0,
            answered: None,
            setup: None,
        }
    }

    /// The connections' counters (for the heartbeat).
    pub fn stats(&self) -> Stats {
        self.board.stats()
    }

    /// Every open connection.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.board.endpoints().collect()
    }

    /// Whether `endpoint`'s input should be read now (back-pressure).
    pub fn wants_input(&self, endpoint: Endpoint) -> bool {
        self.board.wants_input(endpoint)
    }

    /// The next bytes to send to `endpoint` (possibly empty); report what
    /// went with [`Self::sent`] or [`Self::send_failed`].
    pub fn outbox(&self, endpoint: Endpoint) -> &[u8] {
        self.board.outbox(endpoint)
    }

    /// Whether console keys should be read now: a prompt is up, or a
    /// cancelled one swallows keys until they stop.
    pub fn wants_keys(&self) -> bool {
        self.gate.is_some()
    }

    /// Whether this VM holds the console focus.
    pub fn holds_focus(&self) -> bool {
        self.focus_held
    }

    /// Whether this VM holds the display.
    pub fn holds_display(&self) -> bool {
        self.display_held
    }

    /// A peer asks to connect: accepted, or reset. Every payment
    /// connection reseeds the generator.
    pub fn connection_request(&mut self, dev: &mut impl Devices, endpoint: Endpoint, now_ms: u64) {
        if self.board.accept(endpoint, now_ms).is_err() {
            dev.reset(endpoint);
        } else if endpoint.local_port == PAYMENT_PORT {
            self.reseed(dev);
        }
    }

    /// The peer closed `endpoint` (or reading it failed): a payment waiting
    /// on it is cancelled.
    pub fn disconnected(&mut self, dev: &mut impl Devices, endpoint: Endpoint, now_ms: u64) {
        if self.board.closed(endpoint) {
            say!(dev, "secure-os: payment cancelled (connection closed)");
            self.rich_cancelled(dev, now_ms);
        }
    }

    /// Bytes arrived on `endpoint`.
    pub fn received(
        &mut self,
        dev: &mut impl Devices,
        endpoint: Endpoint,
        bytes: &[u8],
        now_ms: u64,
    ) {
        let arrived = dev.now_us();
        match self.board.receive(endpoint, bytes, &mut self.rng, now_ms) {
            Some(Ui::Payment(ui)) => {
                self.request_arrived_us = arrived;
                self.start_prompt(dev, &ui, now_ms);
            }
            Some(Ui::Setup(words)) => self.start_setup(dev, words, now_ms),
            Some(Ui::Cancelled) => {
                say!(dev, "secure-os: payment cancelled (connection reset)");
                self.rich_cancelled(dev, now_ms);
            }
            None => {}
        }
    }

    /// The first `count` bytes of `endpoint`'s outbox went out.
    pub fn sent(&mut self, dev: &mut impl Devices, endpoint: Endpoint, count: usize) {
        self.board.sent(endpoint, count);
        if let Some((at, stored)) = self.answered.take() {
            let since = dev.now_us().wrapping_sub(at);
            say!(
                dev,
                "<7>secure-os: approval: signed and stored in {stored} us, response sent {since} us after the answer"
            );
        }
    }

    /// Sending to `endpoint` failed (not for want of the peer's credit):
    /// the connection is reset, and a payment waiting on it cancelled.
    pub fn send_failed(&mut self, dev: &mut impl Devices, endpoint: Endpoint, now_ms: u64) {
        dev.reset(endpoint);
        if self.board.closed(endpoint) {
            say!(dev, "secure-os: payment cancelled (connection lost)");
            self.rich_cancelled(dev, now_ms);
        }
    }

    /// Resets the connections that broke the protocol, never read their
    /// answers, made room for others or said nothing for too long. True
    /// when any was.
    pub fn reap(&mut self, dev: &mut impl Devices, now_ms: u64) -> bool {
        self.board.expire_idle(now_ms);
        let mut any = false;
        for endpoint in self.board.take_doomed() {
            dev.reset(endpoint);
            any = true;
        }
        any
    }

    /// One byte typed on the console (read only while
    /// [`Self::wants_keys`]).
    pub fn key(&mut self, dev: &mut impl Devices, byte: u8, now_ms: u64) {
        // Too early, or the prompt is closing: the byte is dropped.
        if !self.gate.as_mut().is_some_and(|g| g.admit(now_ms)) {
            return;
        }
        if let Some((_, setup)) = self.setup.as_mut() {
            match setup.key(byte) {
                SetupStep::Nothing => {}
                SetupStep::Selected(n) => say!(dev, "> {}", n + 1),
                SetupStep::AskPin => say!(dev, "{}", prompt::SETUP_PIN_QUESTION),
                SetupStep::TooShort => {
                    say!(dev, "At least 4 digits");
                    say!(dev, "{}", prompt::SETUP_PIN_QUESTION);
                }
                SetupStep::Done { choice, pin } => self.complete_setup(dev, choice, &pin),
                SetupStep::Cancel => self.cancel_setup(dev),
            }
            return;
        }
        let Some(step) = self.prompt.as_mut().map(|p| p.key(byte)) else {
            return;
        };
        match step {
            Step::Nothing => {}
            Step::Selected(yes) => say!(dev, "> {}", if yes { "y" } else { "n" }),
            Step::Cleared => say!(dev, "> (cleared)"),
            Step::AskPin => say!(dev, "{}", prompt::PIN_QUESTION),
            Step::Decline => {
                let outcome = self.board.decline();
                self.finish(dev, done(outcome));
            }
            Step::Approve(pin) => {
                let text = pin.as_ref().map(prompt::pin_text);
                if let Some(text) = &text {
                    let mut stars = heapless::String::<16>::new();
                    for _ in 0..text.len() {
                        let _ = stars.push('*');
                    }
                    say!(dev, "PIN: {stars}");
                }
                match self.approve(dev, text.as_deref(), now_ms) {
                    Approval::WrongPin { remaining } => {
                        say!(dev, "Wrong PIN, {remaining} tries left");
                        if let Some(prompt) = self.prompt.as_mut() {
                            prompt.retry_pin();
                        }
                        say!(dev, "{}", prompt::PIN_QUESTION);
                    }
                    other => self.finish(dev, done(other)),
                }
            }
        }
    }

    /// One event from the input device: taken by the approval on the
    /// display, dropped when there is none.
    pub fn touch(&mut self, dev: &mut impl Devices, event: trusted_ui::evdev::Event, now_ms: u64) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let effect = session.event(now_ms, event);
        self.touch_effect(dev, effect, now_ms);
    }

    /// The passing of time, once a round: completes a hold on the touch
    /// screen, releases a cancelled prompt's path once input is quiet, ends
    /// an approval whose deadline passed.
    pub fn tick(&mut self, dev: &mut impl Devices, now_ms: u64) {
        if let Some(effect) = self.session.as_mut().map(|s| s.tick(now_ms)) {
            self.touch_effect(dev, effect, now_ms);
        }
        let touch_quiet = self.session.as_ref().is_none_or(|s| s.quiet(now_ms));
        if touch_quiet && self.gate.is_some_and(|g| g.closing() && g.quiet(now_ms)) {
            say!(dev, "secure-os: input quiet, trusted path released");
            self.end_prompt(dev);
        }
        if let Some(outcome) = self.board.poll(now_ms) {
            self.finish(dev, Some(outcome));
        }
    }

    /// Panics when an invariant of the type does not hold (tests only).
    #[cfg(test)]
    fn check_invariants(&self) {
        assert!(
            !self.display_held || self.focus_held,
            "display without focus"
        );
        assert!(
            self.session.is_none() || self.display_held,
            "session off screen"
        );
        assert!(
            self.gate.is_some() || (self.prompt.is_none() && self.setup.is_none()),
            "prompt without its gate"
        );
        assert_eq!(
            self.focus_held,
            self.gate.is_some(),
            "focus without a prompt"
        );
    }

    /// Mixes fresh entropy into the generator (so the seed never equals
    /// raw device output, and a state that leaked does not stay useful).
    fn reseed(&mut self, dev: &mut impl Devices) {
        if let Some(fresh) = dev.entropy() {
            let mut current = [0u8; 32];
            self.rng.fill_bytes(&mut current);
            let seed: [u8; 32] = Sha256::new()
                .chain_update(current)
                .chain_update(fresh)
                .finalize()
                .into();
            self.rng = ChaCha20Rng::from_seed(seed);
        }
    }

    /// Milliseconds of the clock now (later than the round's `now_ms` when
    /// drawing took time).
    fn clock_ms(dev: &mut impl Devices) -> u64 {
        dev.now_us() / 1000
    }

    /// Asks the service to approve, timing the signing and storing.
    fn approve(&mut self, dev: &mut impl Devices, pin: Option<&str>, now_ms: u64) -> Approval {
        let started = dev.now_us();
        let approval = self.board.approve(pin, now_ms);
        self.answered = Some((started, dev.now_us().wrapping_sub(started)));
        approval
    }

    /// Takes the console focus, or says why not (`what` is declined).
    fn take_focus(&mut self, dev: &mut impl Devices, what: &str) -> bool {
        let status = dev.console_focus(true);
        if status != 0 {
            say!(
                dev,
                "secure-os: console focus unavailable (hvc {CONSOLE_FOCUS:#x} returned {status:#x}): declining {what}"
            );
            return false;
        }
        self.focus_held = true;
        // Type-ahead: keys typed before the prompt was shown never answer it.
        dev.drain_console();
        true
    }

    /// Shows the setup: the words offered (on the screen and the console),
    /// then the new PIN.
    fn start_setup(&mut self, dev: &mut impl Devices, words: SetupWords, now_ms: u64) {
        if self.gate.is_some() {
            say!(
                dev,
                "secure-os: setup declined (the previous prompt is still closing)"
            );
            self.refuse();
            return;
        }
        if !self.take_focus(dev, "the setup") {
            self.refuse();
            return;
        }
        let texts = [words[0].as_str(), words[1].as_str(), words[2].as_str()];
        if let Some(fb) = self.screen.as_mut() {
            match trusted_ui::draw_choose_word(fb, texts) {
                Ok(_) => {
                    dev.publish(fb.pixels());
                    let size = fb.size();
                    if dev.display(true) == 0 {
                        self.display_held = true;
                        dev.drain_input();
                        self.session = Some(Session::setup(size, Self::clock_ms(dev)));
                        say!(dev, "secure-os: setup screen on the display");
                    }
                }
                Err(e) => say!(
                    dev,
                    "secure-os: setup screen not drawn ({e:?}); console only"
                ),
            }
        }
        for line in prompt::setup_lines(&texts) {
            say!(dev, "{line}");
        }
        self.setup = Some((words, SetupPrompt::new()));
        self.gate = Some(ConsoleGate::new(Self::clock_ms(dev).max(now_ms)));
    }

    /// The user chose word `choice` and `pin` in the setup.
    fn complete_setup(&mut self, dev: &mut impl Devices, choice: usize, pin: &trusted_ui::Pin) {
        let chosen = self
            .setup
            .as_ref()
            .and_then(|(words, _)| words.get(choice).cloned());
        let text = prompt::pin_text(pin);
        match self.board.finish_setup(choice, &text, &mut self.rng) {
            Approval::Done(Outcome::Approved) => {
                if let Some(word) = chosen {
                    self.word = word;
                }
                say!(
                    dev,
                    "secure-os: trusted path set up (security word chosen, PIN set)"
                );
            }
            Approval::Done(outcome) => say!(dev, "secure-os: setup failed ({outcome:?})"),
            _ => say!(dev, "secure-os: setup ended"),
        }
        self.end_prompt(dev);
    }

    /// The user cancelled the setup.
    fn cancel_setup(&mut self, dev: &mut impl Devices) {
        let _ = self.board.decline();
        say!(dev, "secure-os: setup cancelled");
        self.end_prompt(dev);
    }

    fn start_prompt(&mut self, dev: &mut impl Devices, ui: &UiPrompt, now_ms: u64) {
        if self.gate.is_some() {
            // A cancelled prompt still waits for quiet input: the user is
            // typing, so no new prompt appears under their keys.
            say!(
                dev,
                "secure-os: payment declined (the previous prompt is still closing)"
            );
            self.refuse();
            return;
        }
        if let Err(wait_ms) = self.limiter.check(now_ms) {
            say!(
                dev,
                "secure-os: payment declined ({} unanswered prompts in a row; next prompt in {wait_ms} ms)",
                self.limiter.unanswered()
            );
            self.refuse();
            return;
        }
        if !self.take_focus(dev, "payment") {
            let outcome = self.board.decline();
            self.finish(dev, done(outcome));
            return;
        }
        self.show_screen(dev, ui);
        for line in prompt::prompt_lines(ui, &self.word) {
            say!(dev, "{line}");
        }
        self.prompt = Some(Prompt::new(ui.prompt.pin_required));
        // Armed from the moment the whole prompt is out: the screen and the
        // question line are both shown by now.
        self.gate = Some(ConsoleGate::new(Self::clock_ms(dev).max(now_ms)));
    }

    /// Declines a request without showing it (rate limit, or a prompt
    /// still closing). It does not count as another unanswered prompt.
    fn refuse(&mut self) {
        let _ = self.board.decline();
    }

    /// The rich side closed the connection of the prompt on screen: the
    /// payment is cancelled, but the path goes back only once the user has
    /// stopped typing.
    fn rich_cancelled(&mut self, dev: &mut impl Devices, now_ms: u64) {
        self.prompt = None;
        let Some(gate) = self.gate.as_mut() else {
            self.end_prompt(dev);
            return;
        };
        if gate.closing() {
            return;
        }
        self.limiter.ended(now_ms, Ending::Unanswered);
        let console_quiet = gate.rich_cancel(now_ms);
        let touch_quiet = match self.session.as_mut() {
            Some(session) => matches!(session.rich_cancel(now_ms), Effect::Closed),
            None => true,
        };
        if console_quiet && touch_quiet {
            self.end_prompt(dev);
        } else {
            gate.hold_open();
            say!(dev, "{CLOSING_NOTICE}");
            self.draw(dev, |fb| {
                trusted_ui::draw_notice(fb, CLOSING_NOTICE).map(|_| ())
            });
        }
    }

    /// Draws the approval screen into the private framebuffer and takes
    /// the display. Without a display the text prompt alone shows the
    /// approval (same keys, same rules).
    fn show_screen(&mut self, dev: &mut impl Devices, ui: &UiPrompt) {
        let Some(fb) = self.screen.as_mut() else {
            return;
        };
        let started = dev.now_us();
        if let Err(e) = screen::draw_prompt(fb, ui, &self.word) {
            say!(
                dev,
                "secure-os: approval screen not drawn ({e:?}); text prompt only"
            );
            return;
        }
        dev.publish(fb.pixels());
        let size = fb.size();
        let drawn = dev.now_us().wrapping_sub(started);
        match dev.display(true) {
            0 => {
                self.display_held = true;
                // Events queued before the screen was up are dropped: they
                // were typed at something else.
                dev.drain_input();
                self.session = Some(Session::new(
                    size,
                    ui.prompt.pin_required,
                    Self::clock_ms(dev),
                ));
                // Prompt to pixels: from the request's bytes to the scan-out
                // showing the screen (the hypercall returns once mvmm has
                // pointed it here).
                let shown = dev.now_us().wrapping_sub(self.request_arrived_us);
                say!(
                    dev,
                    "secure-os: approval screen on the display (drawn in {drawn} us; prompt to pixels {shown} us)"
                );
            }
            status => say!(
                dev,
                "secure-os: display unavailable (hvc {DISPLAY:#x} returned {status:#x}); text prompt only"
            ),
        }
    }

    /// Draws into the private framebuffer, when this VM shows it, and
    /// publishes it.
    fn draw(
        &mut self,
        dev: &mut impl Devices,
        paint: impl FnOnce(
            &mut Framebuffer<'fb>,
        ) -> Result<(), trusted_ui::DrawError<core::convert::Infallible>>,
    ) {
        if !self.display_held {
            return;
        }
        let Some(fb) = self.screen.as_mut() else {
            return;
        };
        if let Err(e) = paint(fb) {
            say!(dev, "secure-os: screen not redrawn ({e:?})");
        }
        dev.publish(fb.pixels());
    }

    /// Carries out what the approval's input rules decided.
    fn touch_effect(&mut self, dev: &mut impl Devices, effect: Effect, now_ms: u64) {
        match effect {
            Effect::None | Effect::Closed => {}
            Effect::Hold(permille) => self.draw(dev, |fb| trusted_ui::draw_hold(fb, permille)),
            Effect::Pin => self.draw_pin(dev, None),
            Effect::SetupDone { choice, pin } => self.complete_setup(dev, choice, &pin),
            Effect::Decline if self.setup.is_some() => self.cancel_setup(dev),
            Effect::Decline => {
                say!(dev, "secure-os: declined on the touch screen");
                let outcome = self.board.decline();
                self.finish(dev, done(outcome));
            }
            Effect::Approve(pin) => {
                say!(dev, "secure-os: approved on the touch screen");
                let text = pin.as_ref().map(prompt::pin_text);
                match self.approve(dev, text.as_deref(), now_ms) {
                    Approval::WrongPin { remaining } => {
                        say!(dev, "Wrong PIN, {remaining} tries left");
                        let shown = Self::clock_ms(dev);
                        if let Some(session) = self.session.as_mut() {
                            session.retry_pin(shown);
                        }
                        self.draw_pin(dev, Some(remaining));
                    }
                    other => self.finish(dev, done(other)),
                }
            }
        }
    }

    /// Shows the PIN screen as the session's entry is.
    fn draw_pin(&mut self, dev: &mut impl Devices, tries_left: Option<u8>) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        let Some(entry) = session.pin_entry() else {
            return;
        };
        if !self.display_held {
            return;
        }
        let Some(fb) = self.screen.as_mut() else {
            return;
        };
        let drawn = if session.is_setup() {
            trusted_ui::draw_pin_setup(fb, entry)
        } else {
            trusted_ui::draw_pin_entry(fb, entry, tries_left)
        };
        if let Err(e) = drawn {
            say!(dev, "secure-os: PIN screen not drawn ({e:?})");
        }
        dev.publish(fb.pixels());
    }

    /// Reports how the approval ended and closes the prompt.
    fn finish(&mut self, dev: &mut impl Devices, outcome: Option<Outcome>) {
        let ending = match outcome {
            Some(Outcome::Approved) => Ending::Approved,
            _ => Ending::Unanswered,
        };
        self.limiter.ended(Self::clock_ms(dev), ending);
        match outcome {
            Some(Outcome::Approved) => say!(dev, "secure-os: payment approved"),
            Some(Outcome::Declined) => say!(dev, "secure-os: payment declined"),
            Some(Outcome::TimedOut) => say!(dev, "secure-os: payment timed out"),
            Some(Outcome::Locked) => say!(
                dev,
                "secure-os: payment declined (PIN locked after too many wrong PINs)"
            ),
            Some(Outcome::Failed(code)) => say!(dev, "secure-os: payment failed ({code:?})"),
            None => say!(dev, "secure-os: payment ended"),
        }
        self.end_prompt(dev);
    }

    /// Closes the prompt and gives the display and the console back.
    fn end_prompt(&mut self, dev: &mut impl Devices) {
        self.prompt = None;
        self.gate = None;
        self.session = None;
        self.setup = None;
        if self.display_held {
            self.display_held = false;
            let status = dev.display(false);
            if status != 0 {
                say!(dev, "secure-os: releasing the display returned {status:#x}");
            }
        }
        if self.focus_held {
            dev.drain_console();
            self.focus_held = false;
            let status = dev.console_focus(false);
            if status != 0 {
                say!(
                    dev,
                    "secure-os: releasing console focus returned {status:#x}"
                );
            }
        }
    }
}

/// The outcome of an answer that ended the approval.
fn done(approval: Approval) -> Option<Outcome> {
    match approval {
        Approval::Done(outcome) => Some(outcome),
        Approval::WrongPin { .. } | Approval::NothingPending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::rc::Rc;
    use core::cell::{Cell, RefCell};
    use p256::ecdsa::SigningKey;
    use p256::elliptic_curve::Generate;
    use payment_app::service::{FrameReader, MAX_FRAME_LEN};
    use payment_app::{PaymentApp, Policy, Service, StorageError};
    use protocol::session::{ClientHandshake, MAX_RECORD_LEN, Session as Channel};
    use protocol::{
        CredentialId, CurrencyCode, ErrorCode, FixedBytes, Label, MAX_MESSAGE_LEN, Merchant,
        PaymentRequest, RecordBytes, Reply, Request, Response, decode_response, encode_request,
    };
    use std::string::{String, ToString};
    use std::vec;
    use trusted_ui::evdev::{EV_KEY, Event};
    use trusted_ui::guard::{ARM_DELAY_MS, BACKOFF_BASE_MS, HOLD_MS, QUIET_MS};

    use crate::server::tests::request as clear_frame;
    use crate::server::{ECHO_PORT, IDLE_TIMEOUT_MS};

    const KEY_ESC: u16 = 1;
    const KEY_ENTER: u16 = 28;
    const WIDTH: u32 = 800;
    const HEIGHT: u32 = 480;
    const RICH: u64 = 3;

    /// One thing the loop asked of the devices.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Act {
        Line(String),
        Focus(bool),
        Display(bool),
        DrainConsole,
        DrainInput,
        Publish,
        Reset(Endpoint),
        Entropy,
    }

    /// Devices that record what they are asked, on a clock the test sets.
    /// They also check the order the hypervisor relies on: the display is
    /// taken only with the focus held, each is taken once and given back
    /// once.
    struct Recorder {
        now_us: u64,
        acts: Vec<Act>,
        focus_status: u64,
        display_status: u64,
        focus: bool,
        display: bool,
    }

    impl Recorder {
        fn new() -> Recorder {
            Recorder {
                now_us: 0,
                acts: Vec::new(),
                focus_status: 0,
                display_status: 0,
                focus: false,
                display: false,
            }
        }

        /// Everything asked since the last call.
        fn take(&mut self) -> Vec<Act> {
            core::mem::take(&mut self.acts)
        }

        /// The lines among `acts`.
        fn lines(acts: &[Act]) -> Vec<&str> {
            acts.iter()
                .filter_map(|a| match a {
                    Act::Line(l) => Some(l.as_str()),
                    _ => None,
                })
                .collect()
        }

        /// The acts that are not lines.
        fn effects(acts: &[Act]) -> Vec<Act> {
            acts.iter()
                .filter(|a| !matches!(a, Act::Line(_)))
                .cloned()
                .collect()
        }

        fn said(acts: &[Act], text: &str) -> bool {
            Self::lines(acts).iter().any(|l| l.contains(text))
        }
    }

    impl Console for Recorder {
        fn print(&mut self, line: fmt::Arguments<'_>) {
            self.acts.push(Act::Line(line.to_string()));
        }
    }

    impl Devices for Recorder {
        fn now_us(&mut self) -> u64 {
            self.now_us
        }

        fn console_focus(&mut self, take: bool) -> u64 {
            assert_ne!(take, self.focus, "focus taken twice or given back twice");
            assert!(take || !self.display, "focus given back before the display");
            self.acts.push(Act::Focus(take));
            if take && self.focus_status != 0 {
                return self.focus_status;
            }
            self.focus = take;
            0
        }

        fn display(&mut self, take: bool) -> u64 {
            assert_ne!(
                take, self.display,
                "display taken twice or given back twice"
            );
            assert!(self.focus, "display switched without the focus");
            self.acts.push(Act::Display(take));
            if take && self.display_status != 0 {
                return self.display_status;
            }
            self.display = take;
            0
        }

        fn drain_console(&mut self) {
            self.acts.push(Act::DrainConsole);
        }

        fn drain_input(&mut self) {
            self.acts.push(Act::DrainInput);
        }

        fn publish(&mut self, pixels: &[u32]) {
            assert_eq!(pixels.len(), (WIDTH * HEIGHT) as usize);
            self.acts.push(Act::Publish);
        }

        fn reset(&mut self, endpoint: Endpoint) {
            self.acts.push(Act::Reset(endpoint));
        }

        fn entropy(&mut self) -> Option<[u8; 32]> {
            self.acts.push(Act::Entropy);
            Some([0x5a; 32])
        }
    }

    /// Storage in memory whose writes can be made to fail.
    #[derive(Clone, Default)]
    struct Flash {
        blob: Rc<RefCell<Option<Vec<u8>>>>,
        fail: Rc<Cell<bool>>,
        writes: Rc<Cell<u32>>,
    }

    impl Storage for Flash {
        fn load(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
            match &*self.blob.borrow() {
                None => Ok(None),
                Some(blob) => {
                    let target = buf.get_mut(..blob.len()).ok_or(StorageError)?;
                    target.copy_from_slice(blob);
                    Ok(Some(blob.len()))
                }
            }
        }

        fn store(&mut self, blob: &[u8]) -> Result<(), StorageError> {
            if self.fail.get() {
                return Err(StorageError);
            }
            *self.blob.borrow_mut() = Some(blob.to_vec());
            self.writes.set(self.writes.get() + 1);
            Ok(())
        }
    }

    /// A rich-side client: its connection and its session.
    struct Client {
        ep: Endpoint,
        channel: Channel,
    }

    /// The event loop on recording devices, with a clock in ms.
    struct Rig<'fb> {
        lp: EventLoop<'fb, Flash>,
        dev: Recorder,
        flash: Flash,
        key: SigningKey,
        rng: ChaCha20Rng,
        now: u64,
        next_port: u32,
    }

    impl<'fb> Rig<'fb> {
        /// With a display when `pixels` is given (800x480).
        fn new(pixels: Option<&'fb mut [u32]>) -> Rig<'fb> {
            let mut rng = ChaCha20Rng::seed_from_u64(42);
            let key = SigningKey::generate_from_rng(&mut rng);
            let flash = Flash::default();
            let app = PaymentApp::new(key.clone(), flash.clone(), Policy::default())
                .expect("empty storage");
            let board = Switchboard::new(Service::new(app, key.clone()));
            let word = SecurityWord::try_from("HERON-76").expect("fits");
            let screen = pixels.map(|p| Framebuffer::new(p, WIDTH, HEIGHT).expect("size"));
            let lp = EventLoop::new(board, ChaCha20Rng::seed_from_u64(1), word, screen);
            let mut rig = Rig {
                lp,
                dev: Recorder::new(),
                flash,
                key,
                rng,
                now: 0,
                next_port: 50_000,
            };
            rig.at(1_000);
            rig
        }

        /// Sets the clock.
        fn at(&mut self, ms: u64) {
            self.now = ms;
            self.dev.now_us = ms * 1000;
        }

        /// Moves the clock on.
        fn later(&mut self, ms: u64) {
            self.at(self.now + ms);
        }

        fn endpoint(&mut self, local_port: u32) -> Endpoint {
            self.next_port += 1;
            Endpoint {
                peer_cid: RICH,
                peer_port: self.next_port,
                local_port,
            }
        }

        /// Connects a client to the payment port and opens its session.
        fn connect(&mut self) -> Client {
            let ep = self.endpoint(PAYMENT_PORT);
            self.lp.connection_request(&mut self.dev, ep, self.now);
            let (hs, hello) = ClientHandshake::start(&mut self.rng, self.key.verifying_key());
            let bytes = clear_frame(&Request::OpenSession(FixedBytes(hello)));
            self.lp.received(&mut self.dev, ep, &bytes, self.now);
            let packets = self.packets(ep);
            assert_eq!(packets.len(), 1);
            let channel = match decode_response(&packets[0]).expect("decodes") {
                Ok(Reply::SessionOpened(server)) => hs.finish(&server.0).expect("handshake"),
                other => panic!("{other:?}"),
            };
            Client { ep, channel }
        }

        /// Sends a request in the client's session.
        fn send(&mut self, client: &mut Client, request: &Request) {
            let mut plain = [0u8; MAX_MESSAGE_LEN];
            let encoded = encode_request(request, &mut plain).expect("fits");
            let mut record = [0u8; MAX_RECORD_LEN];
            let len = client.channel.seal(encoded, &mut record).expect("seal");
            let bytes = clear_frame(&Request::Sealed(
                RecordBytes::from_slice(&record[..len]).expect("fits"),
            ));
            self.lp.received(&mut self.dev, client.ep, &bytes, self.now);
        }

        /// Sends everything queued for `ep`; the packets in it.
        fn packets(&mut self, ep: Endpoint) -> Vec<Vec<u8>> {
            let mut reader = FrameReader::new();
            loop {
                let bytes = self.lp.outbox(ep).to_vec();
                if bytes.is_empty() {
                    break;
                }
                self.lp.sent(&mut self.dev, ep, bytes.len());
                reader.push(&bytes);
            }
            let mut out = Vec::new();
            while let Some(packet) = reader.next_frame().expect("well framed") {
                out.push(packet);
            }
            out
        }

        /// The client's answers sent so far, opened.
        fn answers(&mut self, client: &mut Client) -> Vec<Response> {
            let packets = self.packets(client.ep);
            packets
                .iter()
                .map(|packet| match decode_response(packet).expect("decodes") {
                    Ok(Reply::Sealed(record)) => {
                        let mut plain = [0u8; MAX_MESSAGE_LEN];
                        let len = client.channel.open(&record, &mut plain).expect("opens");
                        decode_response(&plain[..len]).expect("inner")
                    }
                    other => other,
                })
                .collect()
        }

        /// Enrolls a card; its credential.
        fn enroll(&mut self, client: &mut Client) -> CredentialId {
            let label = Label::try_from("Visa ending 4242").expect("fits");
            self.send(client, &Request::Enroll { label });
            match self.answers(client).as_slice() {
                [Ok(Reply::Enrolled(record))] => record.credential,
                other => panic!("{other:?}"),
            }
        }

        /// Asks for a payment of 12.50 EUR.
        fn pay(&mut self, client: &mut Client, credential: CredentialId) {
            let request = Request::RequestPayment(PaymentRequest {
                credential,
                amount_minor: 1250,
                currency: CurrencyCode(*b"EUR"),
                merchant: Merchant::try_from("Corner Cafe").expect("fits"),
                nonce: [9; 32],
            });
            self.send(client, &request);
        }

        /// Types on the console, as the image reads it (only while the
        /// loop wants keys).
        fn type_keys(&mut self, bytes: &[u8]) {
            for &byte in bytes {
                if self.lp.wants_keys() {
                    self.lp.key(&mut self.dev, byte, self.now);
                }
            }
        }

        /// A key on the input device's keyboard (1: down, 0: up).
        fn press(&mut self, code: u16, value: u32) {
            let event = Event {
                kind: EV_KEY,
                code,
                value,
            };
            self.lp.touch(&mut self.dev, event, self.now);
        }

        /// The end of a round: resets, then the passing of time.
        fn tick(&mut self) {
            self.lp.reap(&mut self.dev, self.now);
            self.lp.tick(&mut self.dev, self.now);
        }

        /// A client with a card, and a payment on screen (armed).
        fn prompt_up(&mut self) -> Client {
            let mut client = self.connect();
            let credential = self.enroll(&mut client);
            self.pay(&mut client, credential);
            assert!(self.lp.holds_focus());
            self.dev.take();
            client
        }
    }

    fn pixels() -> Vec<u32> {
        vec![0u32; (WIDTH * HEIGHT) as usize]
    }

    #[test]
    fn a_request_takes_the_focus_then_the_display_and_shows_the_statement() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let mut client = rig.connect();
        let credential = rig.enroll(&mut client);
        rig.dev.take();
        rig.pay(&mut client, credential);
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::effects(&acts),
            [
                Act::Focus(true),
                Act::DrainConsole,
                Act::Publish,
                Act::Display(true),
                Act::DrainInput,
            ]
        );
        assert_eq!(
            Recorder::lines(&acts),
            [
                "secure-os: approval screen on the display (drawn in 0 us; prompt to pixels 0 us)",
                prompt::HEADING,
                "Pay",
                "12.50 EUR",
                "to Corner Cafe",
                "with Visa ending 4242",
                "Security word: HERON-76",
                prompt::QUESTION,
            ]
        );
        assert!(rig.lp.holds_focus() && rig.lp.holds_display());
        assert!(memory_was_drawn(&rig));
        // Nothing is answered until the user does.
        assert!(rig.answers(&mut client).is_empty());
    }

    fn memory_was_drawn(rig: &Rig<'_>) -> bool {
        rig.lp
            .screen
            .as_ref()
            .is_some_and(|fb| fb.pixels().iter().any(|&p| p != 0))
    }

    #[test]
    fn without_a_display_the_text_prompt_alone_asks() {
        // No framebuffer on the board.
        let mut rig = Rig::new(None);
        let mut client = rig.prompt_up();
        assert!(rig.lp.holds_focus() && !rig.lp.holds_display());
        rig.later(ARM_DELAY_MS);
        rig.type_keys(b"y\r");
        let acts = rig.dev.take();
        assert!(Recorder::said(&acts, "secure-os: payment approved"));
        assert_eq!(
            Recorder::effects(&acts),
            [Act::DrainConsole, Act::Focus(false)]
        );
        assert!(matches!(
            rig.answers(&mut client).as_slice(),
            [Ok(Reply::Authorized(_))]
        ));

        // A display mvmm refuses: the text prompt asks, the path stays
        // with the console alone.
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        rig.dev.display_status = mvmm_core::hypercall::NOT_SUPPORTED;
        let mut client = rig.connect();
        let credential = rig.enroll(&mut client);
        rig.pay(&mut client, credential);
        let acts = rig.dev.take();
        assert!(Recorder::said(
            &acts,
            "secure-os: display unavailable (hvc 0xc6000003 returned 0xffffffffffffffff); text prompt only"
        ));
        assert!(Recorder::said(&acts, prompt::QUESTION));
        assert!(rig.lp.holds_focus() && !rig.lp.holds_display());
        // The input device's events go nowhere.
        rig.later(ARM_DELAY_MS);
        rig.press(KEY_ENTER, 1);
        rig.later(HOLD_MS * 2);
        rig.tick();
        assert!(rig.lp.holds_focus());
        rig.type_keys(b"n\r");
        assert!(Recorder::said(
            &rig.dev.take(),
            "secure-os: payment declined"
        ));
        assert_eq!(
            rig.answers(&mut client).as_slice(),
            [Err(ErrorCode::Declined)]
        );
    }

    #[test]
    fn no_console_focus_declines_unseen() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        rig.dev.focus_status = mvmm_core::hypercall::NOT_SUPPORTED;
        let mut client = rig.connect();
        let credential = rig.enroll(&mut client);
        rig.dev.take();
        rig.pay(&mut client, credential);
        let acts = rig.dev.take();
        assert_eq!(Recorder::effects(&acts), [Act::Focus(true)]);
        assert_eq!(
            Recorder::lines(&acts),
            [
                "secure-os: console focus unavailable (hvc 0xc6000001 returned 0xffffffffffffffff): declining payment",
                "secure-os: payment declined",
            ]
        );
        assert!(!memory_was_drawn(&rig));
        assert_eq!(
            rig.answers(&mut client).as_slice(),
            [Err(ErrorCode::Declined)]
        );
        assert!(!rig.lp.wants_keys());
    }

    #[test]
    fn type_ahead_and_early_keys_never_approve() {
        let mut rig = Rig::new(None);
        let mut client = rig.prompt_up();
        // Typed within the arming delay: dropped, even the Enter that
        // would commit.
        rig.later(ARM_DELAY_MS - 1);
        rig.type_keys(b"y\ry\r");
        // Armed now, but nothing was selected: Enter alone does nothing.
        rig.later(1);
        rig.type_keys(b"\r");
        let acts = rig.dev.take();
        assert!(acts.is_empty(), "{acts:?}");
        assert!(rig.answers(&mut client).is_empty());
        // A stray key alone never approves; y then Enter does.
        rig.type_keys(b"y");
        assert_eq!(Recorder::lines(&rig.dev.take()), ["> y"]);
        assert!(rig.answers(&mut client).is_empty());
        rig.type_keys(b"\r");
        assert!(Recorder::said(
            &rig.dev.take(),
            "secure-os: payment approved"
        ));
        assert!(matches!(
            rig.answers(&mut client).as_slice(),
            [Ok(Reply::Authorized(_))]
        ));
    }

    #[test]
    fn the_touch_screen_needs_an_armed_hold() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let mut client = rig.prompt_up();
        // Enter held down from before arming until long after: nothing.
        rig.later(ARM_DELAY_MS / 2);
        rig.press(KEY_ENTER, 1);
        rig.later(HOLD_MS * 3);
        rig.tick();
        rig.press(KEY_ENTER, 0);
        assert!(rig.answers(&mut client).is_empty());
        assert!(!Recorder::said(&rig.dev.take(), "approved"));
        // Held after arming: progress is drawn, then the hold approves.
        rig.press(KEY_ENTER, 1);
        rig.later(HOLD_MS / 2);
        rig.tick();
        assert!(Recorder::effects(&rig.dev.take()).contains(&Act::Publish));
        assert!(rig.answers(&mut client).is_empty());
        rig.later(HOLD_MS / 2);
        rig.tick();
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            [
                "secure-os: approved on the touch screen",
                "secure-os: payment approved",
            ]
        );
        // Display first, then the drained console and the focus.
        assert_eq!(
            Recorder::effects(&acts),
            [Act::Display(false), Act::DrainConsole, Act::Focus(false)]
        );
        assert!(matches!(
            rig.answers(&mut client).as_slice(),
            [Ok(Reply::Authorized(_))]
        ));
        // Events after the prompt are dropped.
        rig.dev.take();
        rig.press(KEY_ESC, 1);
        assert!(rig.dev.take().is_empty());
    }

    #[test]
    fn a_tap_or_escape_declines_on_the_touch_screen() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let mut client = rig.prompt_up();
        rig.later(ARM_DELAY_MS);
        rig.press(KEY_ESC, 1);
        assert_eq!(
            Recorder::lines(&rig.dev.take()),
            [
                "secure-os: declined on the touch screen",
                "secure-os: payment declined",
            ]
        );
        assert_eq!(
            rig.answers(&mut client).as_slice(),
            [Err(ErrorCode::Declined)]
        );
        assert!(!rig.lp.holds_focus() && !rig.lp.holds_display());
    }

    #[test]
    fn a_rich_cancel_while_typing_keeps_the_path_until_quiet() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let client = rig.prompt_up();
        rig.later(ARM_DELAY_MS + 100);
        rig.type_keys(b"y");
        rig.dev.take();
        // The rich side closes the connection while the user types.
        rig.later(100);
        rig.lp.disconnected(&mut rig.dev, client.ep, rig.now);
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            [
                "secure-os: payment cancelled (connection closed)",
                CLOSING_NOTICE,
            ]
        );
        // The notice is drawn on the screen; the path stays.
        assert_eq!(Recorder::effects(&acts), [Act::Publish]);
        assert!(rig.lp.holds_focus() && rig.lp.holds_display());
        // Typing goes on: swallowed (no echo), and it keeps the path.
        rig.later(QUIET_MS - 10);
        rig.type_keys(b"\ry\r");
        rig.tick();
        assert!(rig.dev.take().is_empty());
        let last_key = rig.now;
        rig.at(last_key + QUIET_MS - 1);
        rig.tick();
        assert!(rig.lp.holds_focus());
        rig.at(last_key + QUIET_MS);
        rig.tick();
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            ["secure-os: input quiet, trusted path released"]
        );
        assert_eq!(
            Recorder::effects(&acts),
            [Act::Display(false), Act::DrainConsole, Act::Focus(false)]
        );
        assert!(!rig.lp.wants_keys());
    }

    #[test]
    fn a_rich_cancel_while_touching_waits_for_the_screen_to_be_quiet() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let client = rig.prompt_up();
        rig.later(ARM_DELAY_MS + QUIET_MS);
        rig.press(KEY_ENTER, 1);
        rig.later(10);
        rig.lp.disconnected(&mut rig.dev, client.ep, rig.now);
        assert!(Recorder::said(&rig.dev.take(), CLOSING_NOTICE));
        // The console was quiet, the keyboard was not: the path stays
        // until the input device is quiet too.
        rig.later(QUIET_MS - 20);
        rig.tick();
        assert!(rig.lp.holds_display());
        rig.later(20);
        rig.tick();
        assert!(Recorder::said(
            &rig.dev.take(),
            "secure-os: input quiet, trusted path released"
        ));
        assert!(!rig.lp.holds_focus() && !rig.lp.holds_display());
    }

    #[test]
    fn a_quiet_rich_cancel_releases_at_once() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let client = rig.prompt_up();
        rig.later(ARM_DELAY_MS);
        rig.lp.disconnected(&mut rig.dev, client.ep, rig.now);
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            ["secure-os: payment cancelled (connection closed)"]
        );
        assert_eq!(
            Recorder::effects(&acts),
            [Act::Display(false), Act::DrainConsole, Act::Focus(false)]
        );
    }

    #[test]
    fn unanswered_prompts_back_off() {
        let mut rig = Rig::new(None);
        let mut client = rig.connect();
        let credential = rig.enroll(&mut client);
        // Two prompts declined in a row are free.
        for _ in 0..2 {
            rig.pay(&mut client, credential);
            assert!(rig.lp.holds_focus());
            rig.later(ARM_DELAY_MS);
            rig.type_keys(b"n\r");
            rig.later(10);
        }
        rig.answers(&mut client);
        rig.dev.take();
        // The third comes too soon: declined without a prompt.
        rig.pay(&mut client, credential);
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            [format!(
                "secure-os: payment declined (2 unanswered prompts in a row; next prompt in {} ms)",
                BACKOFF_BASE_MS - 10
            )
            .as_str()]
        );
        assert!(Recorder::effects(&acts).is_empty());
        assert_eq!(
            rig.answers(&mut client).as_slice(),
            [Err(ErrorCode::Declined)]
        );
        // Once the backoff passed, the user is asked again.
        rig.later(BACKOFF_BASE_MS);
        rig.pay(&mut client, credential);
        assert!(rig.lp.holds_focus());
        assert!(Recorder::said(&rig.dev.take(), prompt::QUESTION));
    }

    #[test]
    fn a_second_request_is_busy_and_one_while_closing_is_declined_unseen() {
        let mut rig = Rig::new(None);
        let mut first = rig.prompt_up();
        let mut second = rig.connect();
        let credential = rig.enroll(&mut second);
        rig.dev.take();
        // One approval at a time: the second is answered Busy, the prompt
        // on screen is not touched.
        rig.pay(&mut second, credential);
        assert!(rig.dev.take().is_empty());
        assert_eq!(rig.answers(&mut second).as_slice(), [Err(ErrorCode::Busy)]);
        // The first is cancelled while the user types: a new request
        // meanwhile is declined without a prompt.
        rig.later(ARM_DELAY_MS);
        rig.type_keys(b"y");
        rig.lp.disconnected(&mut rig.dev, first.ep, rig.now);
        rig.dev.take();
        rig.pay(&mut second, credential);
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            ["secure-os: payment declined (the previous prompt is still closing)"]
        );
        assert!(Recorder::effects(&acts).is_empty());
        assert_eq!(
            rig.answers(&mut second).as_slice(),
            [Err(ErrorCode::Declined)]
        );
        assert!(rig.answers(&mut first).is_empty());
    }

    #[test]
    fn a_malformed_frame_closes_only_its_connection() {
        let mut rig = Rig::new(None);
        let mut client = rig.prompt_up();
        let other = rig.endpoint(PAYMENT_PORT);
        rig.lp.connection_request(&mut rig.dev, other, rig.now);
        let too_long = u32::try_from(MAX_FRAME_LEN + 1).expect("small");
        rig.lp
            .received(&mut rig.dev, other, &too_long.to_be_bytes(), rig.now);
        assert!(!rig.lp.wants_input(other));
        rig.tick();
        let acts = rig.dev.take();
        assert_eq!(Recorder::effects(&acts), [Act::Entropy, Act::Reset(other)]);
        assert!(!rig.lp.endpoints().contains(&other));
        // The prompt on screen and its connection go on.
        assert!(rig.lp.holds_focus());
        rig.later(ARM_DELAY_MS);
        rig.type_keys(b"y\r");
        assert!(matches!(
            rig.answers(&mut client).as_slice(),
            [Ok(Reply::Authorized(_))]
        ));
        assert_eq!(rig.lp.stats().violations, 1);
    }

    #[test]
    fn a_malformed_frame_on_the_prompts_connection_cancels_it() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let client = rig.prompt_up();
        rig.later(ARM_DELAY_MS + QUIET_MS);
        let too_long = u32::try_from(MAX_FRAME_LEN + 1).expect("small");
        rig.lp
            .received(&mut rig.dev, client.ep, &too_long.to_be_bytes(), rig.now);
        rig.tick();
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            ["secure-os: payment cancelled (connection reset)"]
        );
        // The input was quiet: the path goes back at once.
        assert_eq!(
            Recorder::effects(&acts),
            [
                Act::Display(false),
                Act::DrainConsole,
                Act::Focus(false),
                Act::Reset(client.ep),
            ]
        );
        assert!(!rig.lp.wants_keys());
    }

    #[test]
    fn the_response_goes_out_only_after_signing_and_storing() {
        let mut rig = Rig::new(None);
        let mut client = rig.prompt_up();
        let writes = rig.flash.writes.get();
        rig.later(ARM_DELAY_MS);
        rig.type_keys(b"y");
        assert!(rig.lp.outbox(client.ep).is_empty());
        rig.type_keys(b"\r");
        assert_eq!(rig.flash.writes.get(), writes + 1, "the counter was stored");
        rig.dev.take();
        rig.later(2);
        let answers = rig.answers(&mut client);
        assert!(matches!(answers.as_slice(), [Ok(Reply::Authorized(_))]));
        // The bench's breakdown comes with the first bytes sent after it.
        assert_eq!(
            Recorder::lines(&rig.dev.take()),
            [
                "<7>secure-os: approval: signed and stored in 0 us, response sent 2000 us after the answer"
            ]
        );
    }

    #[test]
    fn a_failed_store_answers_an_error_and_approves_nothing() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let mut client = rig.prompt_up();
        rig.flash.fail.set(true);
        rig.later(ARM_DELAY_MS);
        rig.press(KEY_ENTER, 1);
        rig.later(HOLD_MS);
        rig.tick();
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            [
                "secure-os: approved on the touch screen",
                "secure-os: payment failed (StorageFailure)",
            ]
        );
        assert!(!rig.lp.holds_focus() && !rig.lp.holds_display());
        assert_eq!(
            rig.answers(&mut client).as_slice(),
            [Err(ErrorCode::StorageFailure)]
        );
        // The counter did not move: a retry signs the same counter anew.
        rig.flash.fail.set(false);
        rig.send(&mut client, &Request::Status);
        match rig.answers(&mut client).as_slice() {
            [Ok(Reply::Status(status))] => assert_eq!(status.transaction_counter, 0),
            other => panic!("{other:?}"),
        }
    }

    /// Sets the trusted path up on the console: word `choice` (1 to 3)
    /// and `pin`.
    fn set_up(rig: &mut Rig<'_>, client: &mut Client, choice: u8, pin: &[u8]) -> Vec<Act> {
        rig.send(client, &Request::Setup);
        rig.later(ARM_DELAY_MS);
        rig.type_keys(&[b'0' + choice, b'\r']);
        rig.type_keys(pin);
        rig.type_keys(b"\r");
        rig.dev.take()
    }

    #[test]
    fn setup_on_the_console_sets_the_word_every_prompt_shows() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let mut client = rig.connect();
        let credential = rig.enroll(&mut client);
        rig.dev.take();
        let acts = set_up(&mut rig, &mut client, 2, b"12\r2468");
        let lines = Recorder::lines(&acts);
        assert_eq!(lines[0], "secure-os: setup screen on the display");
        assert_eq!(lines[1], prompt::SETUP_HEADING);
        let chosen = lines[3].trim_start().trim_start_matches("2) ").to_string();
        assert_eq!(lines[5], prompt::SETUP_QUESTION);
        assert_eq!(
            &lines[6..],
            [
                "> 2",
                prompt::SETUP_PIN_QUESTION,
                "At least 4 digits",
                prompt::SETUP_PIN_QUESTION,
                "secure-os: trusted path set up (security word chosen, PIN set)",
            ]
        );
        assert_eq!(
            Recorder::effects(&acts),
            [
                Act::Focus(true),
                Act::DrainConsole,
                Act::Publish,
                Act::Display(true),
                Act::DrainInput,
                Act::Display(false),
                Act::DrainConsole,
                Act::Focus(false),
            ]
        );
        assert!(matches!(
            rig.answers(&mut client).as_slice(),
            [Ok(Reply::Status(_))]
        ));
        rig.pay(&mut client, credential);
        let word = format!("Security word: {chosen}");
        assert!(Recorder::said(&rig.dev.take(), &word), "{word}");
    }

    #[test]
    fn a_wrong_pin_asks_again_and_the_right_one_approves() {
        let mut rig = Rig::new(None);
        let mut client = rig.connect();
        let credential = rig.enroll(&mut client);
        set_up(&mut rig, &mut client, 1, b"2468");
        rig.answers(&mut client);
        rig.pay(&mut client, credential);
        rig.dev.take();
        rig.later(ARM_DELAY_MS);
        rig.type_keys(b"y\r");
        assert_eq!(
            Recorder::lines(&rig.dev.take()),
            ["> y", prompt::PIN_QUESTION]
        );
        rig.type_keys(b"1357\r");
        assert_eq!(
            Recorder::lines(&rig.dev.take()),
            ["PIN: ****", "Wrong PIN, 2 tries left", prompt::PIN_QUESTION]
        );
        assert!(rig.answers(&mut client).is_empty());
        assert!(rig.lp.holds_focus());
        rig.type_keys(b"2468\r");
        assert_eq!(
            Recorder::lines(&rig.dev.take()),
            ["PIN: ****", "secure-os: payment approved"]
        );
        assert!(matches!(
            rig.answers(&mut client).as_slice(),
            [Ok(Reply::Authorized(_))]
        ));
    }

    #[test]
    fn a_cancelled_setup_changes_nothing() {
        let mut rig = Rig::new(None);
        let mut client = rig.connect();
        rig.dev.take();
        rig.send(&mut client, &Request::Setup);
        rig.later(ARM_DELAY_MS);
        rig.type_keys(b"1\x1b");
        assert!(Recorder::said(
            &rig.dev.take(),
            "secure-os: setup cancelled"
        ));
        assert!(!rig.lp.holds_focus());
        assert_eq!(
            rig.answers(&mut client).as_slice(),
            [Err(ErrorCode::Declined)]
        );
    }

    #[test]
    fn an_unanswered_prompt_times_out_and_gives_the_path_back() {
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let mut client = rig.prompt_up();
        let deadline = rig.now + Policy::default().approval_timeout_ms;
        rig.at(deadline);
        rig.tick();
        assert!(rig.lp.holds_display());
        rig.at(deadline + 1);
        rig.tick();
        let acts = rig.dev.take();
        assert_eq!(Recorder::lines(&acts), ["secure-os: payment timed out"]);
        assert_eq!(
            Recorder::effects(&acts),
            [Act::Display(false), Act::DrainConsole, Act::Focus(false)]
        );
        assert_eq!(
            rig.answers(&mut client).as_slice(),
            [Err(ErrorCode::TimedOut)]
        );
    }

    #[test]
    fn connections_elsewhere_are_reset_payment_ones_reseed() {
        let mut rig = Rig::new(None);
        let stray = rig.endpoint(22);
        rig.lp.connection_request(&mut rig.dev, stray, rig.now);
        assert_eq!(rig.dev.take(), [Act::Reset(stray)]);
        let echo = rig.endpoint(ECHO_PORT);
        rig.lp.connection_request(&mut rig.dev, echo, rig.now);
        assert!(rig.dev.take().is_empty());
        rig.lp.received(&mut rig.dev, echo, b"ping", rig.now);
        assert_eq!(rig.lp.outbox(echo), b"ping");
        let payment = rig.endpoint(PAYMENT_PORT);
        rig.lp.connection_request(&mut rig.dev, payment, rig.now);
        assert_eq!(rig.dev.take(), [Act::Entropy]);
        // Idle ones are reset.
        rig.later(IDLE_TIMEOUT_MS);
        assert!(rig.lp.reap(&mut rig.dev, rig.now));
        let mut reset = rig.dev.take();
        reset.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(reset, [Act::Reset(echo), Act::Reset(payment)]);
        assert!(rig.lp.endpoints().is_empty());
    }

    #[test]
    fn a_lost_send_cancels_the_payment() {
        let mut rig = Rig::new(None);
        let client = rig.prompt_up();
        rig.later(ARM_DELAY_MS + QUIET_MS);
        rig.lp.send_failed(&mut rig.dev, client.ep, rig.now);
        let acts = rig.dev.take();
        assert_eq!(
            Recorder::lines(&acts),
            ["secure-os: payment cancelled (connection lost)"]
        );
        assert_eq!(
            Recorder::effects(&acts),
            [Act::Reset(client.ep), Act::DrainConsole, Act::Focus(false)]
        );
    }

    #[test]
    fn the_heartbeat_reports_changed_counters_only() {
        let mut console = Recorder::new();
        let mut beat = Heartbeat::new(100, 50);
        beat.run(149, None, &mut console);
        assert!(console.take().is_empty());
        // Two periods passed: two beats; no counters without the service.
        beat.run(200, None, &mut console);
        assert_eq!(
            Recorder::lines(&console.take()),
            ["<7>secure-os: heartbeat 1", "<7>secure-os: heartbeat 2"]
        );
        let stats = Stats {
            accepted: 1,
            ..Stats::default()
        };
        beat.run(250, Some(stats), &mut console);
        beat.run(300, Some(stats), &mut console);
        assert_eq!(
            Recorder::lines(&console.take()),
            [
                "<7>secure-os: heartbeat 3",
                "<7>secure-os: vsock stats: accepted 1, refused 0, frames 0, closed for violations 0, evicted 0, idle 0",
                "<7>secure-os: heartbeat 4",
            ]
        );
    }

    #[test]
    fn hostile_event_streams_always_give_the_path_back() {
        // A deterministic stream of events from a hostile rich side and a
        // user typing at random: whatever happens, the recorder's checks
        // hold (display only with the focus, each taken and given back
        // once), and once the connections are gone and time has passed,
        // the path is back with the rich VM.
        let mut memory = pixels();
        let mut rig = Rig::new(Some(&mut memory));
        let mut client = rig.connect();
        let credential = rig.enroll(&mut client);
        let junk = rig.endpoint(PAYMENT_PORT);
        rig.lp.connection_request(&mut rig.dev, junk, rig.now);
        let seen_what = [
            prompt::HEADING,
            "payment approved",
            "payment declined",
            "payment cancelled",
            CLOSING_NOTICE,
            "input quiet",
            "unanswered prompts",
            "approved on the touch screen",
        ];
        let mut seen = [0u32; 8];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let arg = (x >> 16) as u32;
            match x % 16 {
                0 | 1 => rig.pay(&mut client, credential),
                2 => rig.type_keys(&[arg as u8]),
                3 => rig.type_keys(b"y\r"),
                4 => rig.press((arg % 40) as u16, arg >> 30),
                5..=7 => rig.later(u64::from(arg % 2_500)),
                8 => {
                    let bytes = x.to_le_bytes();
                    rig.lp
                        .received(&mut rig.dev, junk, &bytes[..arg as usize % 8], rig.now);
                }
                9 if arg.is_multiple_of(4) => {
                    rig.lp.disconnected(&mut rig.dev, client.ep, rig.now);
                    client = rig.connect();
                }
                10 if arg.is_multiple_of(8) => {
                    rig.lp.disconnected(&mut rig.dev, junk, rig.now);
                    rig.lp.connection_request(&mut rig.dev, junk, rig.now);
                }
                11 => {
                    let _ = rig.answers(&mut client);
                }
                _ => rig.tick(),
            }
            rig.lp.check_invariants();
            for line in Recorder::lines(&rig.dev.take()) {
                for (i, what) in seen_what.iter().enumerate() {
                    if line.contains(what) {
                        seen[i] += 1;
                    }
                }
            }
        }
        // The stream reaches every turn of the trusted path.
        for (what, count) in seen_what.iter().zip(seen) {
            assert!(count > 0, "never saw {what:?}: {seen:?}");
        }
        rig.lp.disconnected(&mut rig.dev, client.ep, rig.now);
        rig.lp.disconnected(&mut rig.dev, junk, rig.now);
        rig.later(QUIET_MS + HOLD_MS);
        rig.tick();
        assert!(!rig.lp.holds_focus() && !rig.lp.holds_display());
        assert!(!rig.dev.focus && !rig.dev.display);
        assert!(!rig.lp.wants_keys());
    }
}
