//! QEMU tests of the trusted display: mvmm drives QEMU's ramfb through
//! fw_cfg; the rich VM's simple-framebuffer is on screen until the secure
//! VM takes the display for an approval, and comes back after it.
//! Screenshots come from QMP `screendump` (PNG) and are compared with the
//! approval screen `trusted-ui` renders on the host for the same statement
//! and security word, pixel for pixel (no tolerance).
//!
//! Run by `cargo xtask test` (they need the images: `#[ignore]` otherwise).

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::*;
use mvmm_tests::payment::{self, PROMPT};
use mvmm_tests::qmp::{Screenshot, write_png};
use mvmm_tests::{ConsoleError, Images, Machine, load_board, provision};
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
    let (board, _) = load_board("qemu-virt").unwrap();
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

#[test]
#[ignore = "needs the QEMU images: run `cargo xtask test`"]
fn the_approval_screen_is_on_the_display_and_the_rich_vm_cannot_change_it() {
    // The rich VM keeps writing noise into its own framebuffer while the
    // payment is pending; afterwards it paints it white and waits for a
    // line on its console before it powers off.
    let rich = format!(
        "echo 0 > /sys/class/graphics/fbcon/cursor_blink 2>/dev/null; \
         echo \"rich fb0: $(cat /sys/class/graphics/fb0/name)\"; \
         mvmm-pay enroll --label '{label}' --json; \
         (while [ ! -e /tmp/stop ]; do dd if=/dev/urandom of=/dev/fb0 bs=3200 count=480 2>/dev/null && echo w >> /tmp/fbwrites && echo 'rich fb written'; sleep 0.2; done) & \
         mvmm-pay request --amount {amount} --currency {currency} --merchant '{merchant}' --json; \
         echo \"mvmm-pay request exited with $?\"; \
         touch /tmp/stop; wait; \
         echo \"rich fb writes during the approval: $(wc -l < /tmp/fbwrites) in all\"; \
         tr '\\000' '\\377' < /dev/zero | head -c 1536000 > /dev/fb0; \
         echo 'rich fb painted white'; read -t 60 go",
        label = payment::LABEL,
        amount = payment::AMOUNT,
        currency = payment::CURRENCY,
        merchant = payment::MERCHANT,
    );
    let dir = Images::dir_from_env();
    let golden = golden(&dir);
    let work = work_dir("display-approval");
    std::fs::create_dir_all(&work).unwrap();
    write_png(&work.join("golden.png"), &golden).unwrap();
    let (mut m, mut qmp) = Machine::boot_linux_with_qmp(Some(&rich), "display-approval");
    ok(m.expect(
        "[mvmm] display: 800x480 XR24 scan-out shows the rich VM's framebuffer",
        BOOT,
    ));
    ok(m.expect("[rich] rich fb0: simple", BOOT));
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
    // screen.
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
    let during = shown.elapsed();
    for key in ["y", "\r"] {
        sleep(Duration::from_millis(150));
        m.send(key);
    }
    ok(m.expect("secure-os: payment approved", STEP));
    ok(m.expect(
        "[mvmm] display: scan-out shows the rich VM's framebuffer",
        STEP,
    ));
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
