//! QEMU tests of the trusted display and input: mvmm drives QEMU's ramfb
//! through fw_cfg and reads QEMU's virtio keyboard and tablet; the rich VM's
//! simple-framebuffer is on screen (and the keyboard and touch are its own)
//! until the secure VM takes the path for an approval, and come back after
//! it. Screenshots come from QMP `screendump` (PNG) and are compared with
//! the screens `trusted-ui` renders on the host for the same statement and
//! security word, pixel for pixel (no tolerance); input comes from QMP
//! `input-send-event`, as a user's finger and keys would.
//!
//! Run by `cargo xtask test` (they need the images: `#[ignore]` otherwise).

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::*;
use mvmm_tests::payment::{self, PROMPT};
use mvmm_tests::qmp::{Screenshot, write_png};
use mvmm_tests::{ConsoleError, Images, Machine, load_test_board, provision};
use std::path::PathBuf;
use std::thread::sleep;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);

#[track_caller]
fn ok(result: Result<String, ConsoleError>) -> String {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// An RGB framebuffer on the host, as trusted-ui's golden tests use.
struct HostFrame(Screenshot);

impl OriginDimensions for HostFrame {
    fn size(&self) -> Size {
        Size::new(self.0.width, self.0.height)
    }
}

impl DrawTarget for HostFrame {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.0.width && (p.y as u32) < self.0.height {
                self.0.rgb[p.y as usize * self.0.width as usize + p.x as usize] =
                    [c.r(), c.g(), c.b()];
            }
        }
        Ok(())
    }
}

/// The approval screen of the tests' payment, as trusted-ui draws it on
/// the host at the board's display size with this device's security word.
fn golden(dir: &std::path::Path) -> Screenshot {
    let (board, _) = load_test_board().unwrap();
    let display = board.board.display.expect("the board has a display");
    let word = provision(dir, &board).unwrap().security_word;
    let mut frame = HostFrame(Screenshot {
        width: display.width,
        height: display.height,
        rgb: vec![[0; 3]; (display.width * display.height) as usize],
    });
    let view = trusted_ui::ApprovalView {
        merchant: payment::MERCHANT,
        amount_minor: payment::AMOUNT_MINOR,
        currency: protocol::Currency::from_code(payment::CURRENCY).unwrap(),
        credential_label: payment::LABEL,
    };
    trusted_ui::draw_approval(&mut frame, &view, &word).unwrap();
    frame.0
}

/// `golden` with the notice a prompt the app cancelled shows while the user
/// is still typing.
fn golden_closing(golden: &Screenshot) -> Screenshot {
    let mut frame = HostFrame(golden.clone());
    trusted_ui::draw_notice(&mut frame, payment::CLOSING_NOTICE).unwrap();
    frame.0
}

fn work_dir(name: &str) -> PathBuf {
    Images::dir_from_env().join("work").join(name)
}

#[track_caller]
fn assert_same(shot: &Screenshot, golden: &Screenshot, what: &str, saved: &std::path::Path) {
    let (differ, first) = shot.diff(golden);
    assert_eq!(
        differ,
        0,
        "{what}: {differ} pixels differ from trusted-ui's approval screen, the first at {first:?} (screenshot {})",
        saved.display()
    );
}

/// The numbers of the rich VM's `rich ev bytes: N` lines in `text`: how
/// many bytes its reader of /dev/input/event0 has got so far.
fn event_counts(text: &str) -> Vec<u64> {
    text.split("rich ev bytes: ")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_approval_screen_is_on_the_display_and_the_rich_vm_cannot_change_it() {
    // The rich VM reads its keyboard and touch device all along (the count
    // of bytes it got is printed with every framebuffer write); it keeps
    // writing noise into its own framebuffer while the payment is pending;
    // afterwards it paints it white and waits for a line on its console
    // before it powers off.
    let rich = format!(
        "echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null; \
         echo \"rich fb0: $(cat /sys/class/graphics/fb0/name)\"; \
         cat /dev/input/event0 > /tmp/ev & sleep 1; \
         echo 'rich input reader ready'; read -t 60 go; \
         echo \"rich ev bytes: $(wc -c < /tmp/ev) before the payment\"; \
         mvmm-pay enroll --label '{label}' --json; \
         (while [ ! -e /tmp/stop ]; do dd if=/dev/urandom of=/dev/fb0 bs=3200 count=480 2>/dev/null && echo w >> /tmp/fbwrites && echo \"rich fb written; rich ev bytes: $(wc -c < /tmp/ev)\"; sleep 0.2; done) & w=$!; \
         echo 'rich paying'; \
         mvmm-pay request --amount {amount} --currency {currency} --merchant '{merchant}' --json; \
         echo \"mvmm-pay request exited with $?\"; \
         touch /tmp/stop; wait $w; \
         echo \"rich fb writes during the approval: $(wc -l < /tmp/fbwrites) in all\"; \
         echo \"rich ev bytes: $(wc -c < /tmp/ev) before the second payment\"; \
         mvmm-pay request --amount {amount} --currency {currency} --merchant '{merchant}' --json > /tmp/second & p=$!; \
         sleep 6; kill $p; wait $p; echo 'rich second request ended'; read -t 60 go; \
         mvmm-pay request --amount {amount} --currency {currency} --merchant '{merchant}' --json > /tmp/third; \
         echo \"rich third request exited with $?; rich ev bytes: $(wc -c < /tmp/ev) after the third payment\"; \
         tr '\\000' '\\377' < /dev/zero | head -c 1536000 > /dev/fb0; \
         echo 'rich fb painted white'; read -t 60 go",
        label = payment::LABEL,
        amount = payment::AMOUNT,
        currency = payment::CURRENCY,
        merchant = payment::MERCHANT,
    );
    let dir = Images::dir_from_env();
    let golden = golden(&dir);
    let size = (golden.width, golden.height);
    let approve = payment::button_centre(size, trusted_ui::Button::Approve);
    let work = work_dir("display-approval");
    std::fs::create_dir_all(&work).unwrap();
    write_png(&work.join("golden.png"), &golden).unwrap();
    let (mut m, mut qmp) = Machine::boot_linux_with_qmp(Some(&rich), "display-approval");
    ok(m.expect(
        "[mvmm] display: 800x480 XR24 scan-out shows the rich VM's framebuffer",
        BOOT,
    ));
    ok(m.expect("[rich] rich fb0: simple", BOOT));
    // Outside an approval the keyboard is the rich VM's: a key typed now
    // reaches its /dev/input/event0.
    ok(m.expect("[rich] rich input reader ready", BOOT));
    qmp.key("a", true).unwrap();
    qmp.key("a", false).unwrap();
    sleep(Duration::from_millis(500));
    m.send("\n");
    let line = ok(m.expect(" before the payment", STEP));
    let before = event_counts(&line);
    assert!(
        before.last().is_some_and(|&n| n > 0),
        "a key typed outside an approval did not reach the rich VM: {line}"
    );
    // Type-ahead by touch: the finger goes down on where Approve will be
    // as the app sends the request, and stays down through the prompt.
    ok(m.expect("[rich] rich paying", BOOT));
    qmp.touch(approve, size, true).unwrap();
    let line = ok(m.expect("secure-os: approval screen on the display", BOOT));
    let shown = Instant::now();
    assert!(
        line.contains("[mvmm] display: scan-out shows the secure VM's framebuffer"),
        "mvmm switched the scan-out before secure-os reported it:\n{line}"
    );
    ok(m.expect(PROMPT, STEP));
    // A screenshot after each of two writes the rich VM made to its
    // framebuffer while the prompt is up (waiting for the writes, not for a
    // time, so a slow host changes nothing): both are exactly trusted-ui's
    // screen, whatever the rich VM draws and however long the early
    // finger has been down.
    for i in 0..2 {
        ok(m.expect("[rich] rich fb written", STEP));
        let path = work.join(format!("approval-{i}.png"));
        let shot = qmp.screendump(&path).unwrap();
        assert_same(
            &shot,
            &golden,
            &format!("screenshot {i} during the approval"),
            &path,
        );
    }
    // The early touch has now been held for more than a hold's time: it
    // approved nothing. Lift it.
    sleep(Duration::from_millis(trusted_ui::guard::HOLD_MS).saturating_sub(shown.elapsed()));
    qmp.touch(approve, size, false).unwrap();
    // What the rich VM had when the user starts answering; nothing the user
    // does on the trusted path may add to it.
    let line = ok(m.expect("rich ev bytes: ", STEP));
    let line = format!("{line}{}", ok(m.expect("[rich] rich fb written", STEP)));
    let baseline = *event_counts(&line).last().expect("a count");
    let during = shown.elapsed();
    assert!(
        !m.transcript().contains("secure-os: payment approved"),
        "a touch that began before the prompt approved it"
    );
    // A deliberate press-and-hold on Approve, and a few keys (a PIN, say)
    // while it is held.
    qmp.touch(approve, size, true).unwrap();
    for key in ["1", "2", "3"] {
        qmp.key(key, true).unwrap();
        qmp.key(key, false).unwrap();
    }
    sleep(Duration::from_millis(trusted_ui::guard::HOLD_MS + 300));
    qmp.touch(approve, size, false).unwrap();
    let line = ok(m.expect("secure-os: payment approved", STEP));
    assert!(
        line.contains("secure-os: approved on the touch screen"),
        "the payment was not approved by the hold:\n{line}"
    );
    let line = ok(m.expect(
        "[mvmm] display: scan-out shows the rich VM's framebuffer",
        STEP,
    ));
    let counts = event_counts(&line);
    assert!(
        counts.iter().all(|&n| n == baseline),
        "the rich VM's input device got events during the approval: {baseline} bytes, then {counts:?}"
    );
    ok(m.expect("[rich] mvmm-pay request exited with 0", STEP));
    // Up to the end of the line: the number may arrive in a later read.
    let line = ok(m.expect(" in all", STEP));
    let writes: u32 = line
        .rsplit("rich fb writes during the approval: ")
        .next()
        .and_then(|rest| {
            // The first number after the words, wherever the console split
            // the line.
            rest.split(|c: char| !c.is_ascii_digit())
                .find(|w| !w.is_empty())?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(
        writes >= 2,
        "the rich VM wrote its framebuffer {writes} times in {during:?} of approval"
    );
    // A cancel from the app while the user types (a PIN, say) on the
    // keyboard: the screen says it closes when the typing stops, the path
    // stays until it has, and nothing typed reaches the rich VM.
    let line = ok(m.expect(" before the second payment", STEP));
    let baseline = *event_counts(&line).last().expect("a count");
    ok(m.expect("secure-os: approval screen on the display", BOOT));
    sleep(payment::READ_TIME);
    let deadline = Instant::now() + STEP;
    let mut typed = 0;
    loop {
        let key = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"][typed % 10];
        qmp.key(key, true).unwrap();
        qmp.key(key, false).unwrap();
        typed += 1;
        match m.expect(payment::CLOSING_NOTICE, Duration::from_millis(250)) {
            Ok(_) => break,
            Err(ConsoleError::Timeout { .. }) if Instant::now() < deadline => {}
            Err(e) => panic!("{e} (the app's cancel never came while the user typed)"),
        }
    }
    let path = work.join("closing.png");
    // secure-os prints the notice as it starts drawing it: the screen is
    // judged once two screendumps in a row agree (a dump taken mid-draw
    // showed part of the panel).
    let mut shot = qmp.screendump(&path).unwrap();
    for _ in 0..20 {
        sleep(Duration::from_millis(100));
        let next = qmp.screendump(&path).unwrap();
        let settled = next.diff(&shot).0 == 0;
        shot = next;
        if settled {
            break;
        }
    }
    assert_same(
        &shot,
        &golden_closing(&golden),
        "the screen of a prompt the app cancelled",
        &path,
    );
    for key in ["9", "8", "7", "6"] {
        sleep(Duration::from_millis(300));
        qmp.key(key, true).unwrap();
        qmp.key(key, false).unwrap();
    }
    m.expect_all(
        &[
            "secure-os: input quiet, trusted path released",
            "[mvmm] console input goes back to vm 'rich'",
        ],
        STEP,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The rich side's own line may come before the closing notice (it
    // ends its request at once; the secure VM closes the screen only
    // after quiet input), so it is looked for in the whole transcript.
    m.seen_or_expect("[rich] rich second request ended", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    // The console is the rich VM's again: it asks for the next payment.
    m.send("\n");
    // Declining is a tap on Decline.
    ok(m.expect("secure-os: approval screen on the display", BOOT));
    sleep(payment::READ_TIME);
    let decline = payment::button_centre(size, trusted_ui::Button::Decline);
    qmp.touch(decline, size, true).unwrap();
    sleep(Duration::from_millis(100));
    qmp.touch(decline, size, false).unwrap();
    let line = ok(m.expect("secure-os: payment declined", STEP));
    assert!(
        line.contains("secure-os: declined on the touch screen"),
        "the tap on Decline did not decline:\n{line}"
    );
    let line = ok(m.expect(" after the third payment", STEP));
    assert!(
        !line.contains("exited with 0;"),
        "a declined request succeeded: {line}"
    );
    let after = *event_counts(&line).last().expect("a count");
    assert_eq!(
        after, baseline,
        "keys typed on the trusted path ({typed} before the cancel, 4 after it) or the tap reached the rich VM's input device"
    );
    // After the approval the rich VM's framebuffer is on screen again.
    ok(m.expect("[rich] rich fb painted white", STEP));
    let path = work.join("after.png");
    let after = qmp.screendump(&path).unwrap();
    let white = after.rgb.iter().filter(|p| **p == [0xff; 3]).count();
    assert!(
        white * 100 >= after.rgb.len() * 99,
        "after the approval only {white} of {} pixels show the rich VM's white frame ({})",
        after.rgb.len(),
        path.display()
    );
    m.send("\n");
    ok(m.expect("[rich] mvmm-rich: exit status", STEP));
    let status = m
        .wait_exit(STEP)
        .expect("QEMU did not exit after the rich VM's SYSTEM_OFF");
    assert!(status.success(), "QEMU exit status {status}");
    let out = m.transcript();
    let json = payment::json_lines(&out);
    assert_eq!(json.len(), 2, "enroll and request lines: {out}");
    payment::verify(&json[0], &json[1]).unwrap_or_else(|e| panic!("{e}"));
}

/// `golden` drawn again with `word` as the security word.
fn golden_with_word(golden: &Screenshot, word: &str) -> Screenshot {
    let mut frame = HostFrame(golden.clone());
    let view = trusted_ui::ApprovalView {
        merchant: payment::MERCHANT,
        amount_minor: payment::AMOUNT_MINOR,
        currency: protocol::Currency::from_code(payment::CURRENCY).unwrap(),
        credential_label: payment::LABEL,
    };
    trusted_ui::draw_approval(&mut frame, &view, word).unwrap();
    frame.0
}

/// The centre of `button` on `screen` of a `size` display.
fn centre_on(
    size: (u32, u32),
    screen: trusted_ui::Screen,
    button: trusted_ui::Button,
) -> (u32, u32) {
    let area =
        embedded_graphics::primitives::Rectangle::new(Point::zero(), Size::new(size.0, size.1));
    let (_, rect) = trusted_ui::Layout::new(area)
        .buttons(screen)
        .iter()
        .find(|(b, _)| *b == button)
        .copied()
        .expect("the screen has the button");
    let c = rect.center();
    (c.x as u32, c.y as u32)
}

/// A tap: finger down and up on `at`.
fn tap(qmp: &mut mvmm_tests::qmp::Qmp, at: (u32, u32), size: (u32, u32)) {
    qmp.touch(at, size, true).unwrap();
    sleep(Duration::from_millis(80));
    qmp.touch(at, size, false).unwrap();
    sleep(Duration::from_millis(80));
}

/// The setup on the trusted path, then a payment that asks for the PIN:
/// the user taps one of the three words offered (the screen is exactly
/// trusted-ui's), types a new PIN on the keyboard; the next approval screen
/// shows the chosen word; after the hold the PIN keypad comes up, a wrong
/// PIN is refused with the tries left, and the right one, tapped on the
/// keypad, approves.
#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_user_chooses_the_security_word_and_pin_on_the_trusted_path_and_pays_with_the_pin() {
    use trusted_ui::{Button, Screen};
    let rich = format!(
        "mvmm-pay enroll --label '{label}' --json; \
         mvmm-pay setup --json; echo \"setup exited with $?\"; \
         mvmm-pay request --amount {amount} --currency {currency} --merchant '{merchant}' --json; \
         echo \"request exited with $?\"",
        label = payment::LABEL,
        amount = payment::AMOUNT,
        currency = payment::CURRENCY,
        merchant = payment::MERCHANT,
    );
    let dir = Images::dir_from_env();
    let golden = golden(&dir);
    let size = (golden.width, golden.height);
    let work = work_dir("display-setup");
    std::fs::create_dir_all(&work).unwrap();
    let (mut m, mut qmp) = Machine::boot_linux_with_qmp(Some(&rich), "display-setup");
    ok(m.expect("secure-os: setup screen on the display", BOOT));
    let text = ok(m.expect("Choose your security word", STEP));
    let words: Vec<String> = (1..=3)
        .map(|n| {
            let tag = format!("  {n}) ");
            let rest = text
                .split(&tag)
                .nth(1)
                .unwrap_or_else(|| panic!("no word {n} on the console:\n{text}"));
            rest.split(['\r', '\n'])
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .collect();
    assert!(
        words.iter().all(|w| !w.is_empty()) && words[0] != words[1] && words[1] != words[2],
        "{words:?}"
    );
    // The choice screen, pixel for pixel.
    let mut choose = HostFrame(golden.clone());
    trusted_ui::draw_choose_word(&mut choose, [&words[0], &words[1], &words[2]]).unwrap();
    let path = work.join("choose-word.png");
    let shot = qmp.screendump(&path).unwrap();
    assert_same(&shot, &choose.0, "the word choice", &path);
    // Tap the second word; then a new PIN on the keyboard (2468, Enter).
    sleep(payment::READ_TIME);
    tap(
        &mut qmp,
        centre_on(size, Screen::ChooseWord, Button::Word(1)),
        size,
    );
    sleep(payment::READ_TIME);
    for key in ["2", "4", "6", "8", "ret"] {
        qmp.key(key, true).unwrap();
        qmp.key(key, false).unwrap();
        sleep(Duration::from_millis(60));
    }
    ok(m.expect("secure-os: trusted path set up", STEP));
    ok(m.expect("[rich] setup exited with 0", STEP));
    // The payment shows the chosen word.
    ok(m.expect("secure-os: approval screen on the display", STEP));
    let path = work.join("approval-chosen-word.png");
    sleep(Duration::from_millis(200));
    let shot = qmp.screendump(&path).unwrap();
    assert_same(
        &shot,
        &golden_with_word(&golden, &words[1]),
        "the approval screen with the chosen word",
        &path,
    );
    // Hold Approve: the PIN keypad follows.
    sleep(payment::READ_TIME);
    let approve = payment::button_centre(size, Button::Approve);
    qmp.touch(approve, size, true).unwrap();
    sleep(Duration::from_millis(trusted_ui::guard::HOLD_MS + 300));
    qmp.touch(approve, size, false).unwrap();
    sleep(payment::READ_TIME);
    // A wrong PIN on the keyboard, then the right one on the keypad.
    for key in ["1", "1", "1", "1", "ret"] {
        qmp.key(key, true).unwrap();
        qmp.key(key, false).unwrap();
        sleep(Duration::from_millis(60));
    }
    ok(m.expect("Wrong PIN, 2 tries left", STEP));
    sleep(payment::READ_TIME);
    for digit in [2u8, 4, 6, 8] {
        tap(
            &mut qmp,
            centre_on(size, Screen::PinEntry, Button::Digit(digit)),
            size,
        );
    }
    tap(
        &mut qmp,
        centre_on(size, Screen::PinEntry, Button::Ok),
        size,
    );
    let line = ok(m.expect("secure-os: payment approved", STEP));
    assert!(line.contains("approved on the touch screen"), "{line}");
    ok(m.expect("[rich] request exited with 0", STEP));
    ok(m.expect("[rich] mvmm-rich: exit status", STEP));
    let out = m.transcript();
    let json = payment::json_lines(&out);
    let enroll = json
        .iter()
        .find(|j| j.get("signature").is_some())
        .expect("the enrollment");
    let request = json
        .iter()
        .find(|j| j.get("token").is_some())
        .expect("the authorization");
    payment::verify(enroll, request).unwrap_or_else(|e| panic!("{e}"));
}
