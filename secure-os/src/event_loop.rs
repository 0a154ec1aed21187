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
//! - A rich-side cancel (its connection closes) releases the path only once
//!   the console and the touch screen have both been quiet
//!   ([`CLOSING_NOTICE`] is shown meanwhile and every byte is swallowed).
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
///   the focus is, and both are given back together ([`Self::end_prompt`]).
/// - `session` is `Some` only while `display_held`.
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
