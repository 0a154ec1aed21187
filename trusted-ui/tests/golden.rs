//! Golden-image snapshot tests: every screen at 800x480 and 720x1280, pixel for pixel.
//!
//! Each screen is rendered on the host into an in-memory RGB framebuffer and compared with
//! `tests/golden/<screen>_<width>x<height>.png`. Any changed pixel fails the test, which
//! reports the first differing coordinate and how many pixels differ.
//!
//! After an intended visual change, regenerate the files and review them before
//! committing:
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p trusted-ui --test golden
//! ```
//!
//! The PNGs are written indexed (the screens use a few dozen colours), so they stay small.

use std::fs;
use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use protocol::Currency;
use trusted_ui::{
    ApprovalView, KeyEvent, Outcome, PinEntry, ScreenText, approval_text, draw_approval,
    draw_choose_word, draw_hold, draw_lockout, draw_notice, draw_pin_entry, draw_pin_setup,
    draw_result, draw_timeout,
};

/// A plain RGB framebuffer, like the secure VM's scan-out buffer.
struct FrameBuffer {
    size: Size,
    pixels: Vec<Rgb888>,
}

impl FrameBuffer {
    fn new(width: u32, height: u32) -> Self {
        FrameBuffer {
            size: Size::new(width, height),
            pixels: vec![Rgb888::BLACK; (width * height) as usize],
        }
    }

    fn index(&self, point: Point) -> Option<usize> {
        let x = u32::try_from(point.x).ok()?;
        let y = u32::try_from(point.y).ok()?;
        (x < self.size.width && y < self.size.height).then(|| (y * self.size.width + x) as usize)
    }

    fn rgb_bytes(&self) -> Vec<u8> {
        self.pixels
            .iter()
            .flat_map(|c| [c.r(), c.g(), c.b()])
            .collect()
    }
}

impl OriginDimensions for FrameBuffer {
    fn size(&self) -> Size {
        self.size
    }
}

impl DrawTarget for FrameBuffer {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(point, color) in pixels {
            if let Some(i) = self.index(point) {
                self.pixels[i] = color;
            }
        }
        Ok(())
    }
}

const SIZES: [(u32, u32); 2] = [(800, 480), (720, 1280)];

fn view() -> ApprovalView<'static> {
    ApprovalView {
        merchant: "Corner Cafe",
        amount_minor: 1250,
        currency: Currency::from_code("EUR").expect("EUR is in the table"),
        credential_label: "Visa ending 4242",
    }
}

const SECURITY_WORD: &str = "LIGHTHOUSE";

type Render = fn(&mut FrameBuffer) -> ScreenText;

/// Every screen under test, by golden file stem.
fn screens() -> Vec<(&'static str, Render)> {
    vec![
        ("approval", |fb| {
            draw_approval(fb, &view(), SECURITY_WORD).expect("draws")
        }),
        ("approval_holding", |fb| {
            let text = draw_approval(fb, &view(), SECURITY_WORD).expect("draws");
            draw_hold(fb, 600).expect("draws");
            text
        }),
        ("approval_closing", |fb| {
            draw_approval(fb, &view(), SECURITY_WORD).expect("draws");
            draw_notice(fb, trusted_ui::guard::CLOSING_NOTICE).expect("draws")
        }),
        ("pin_entry", |fb| {
            let mut entry = PinEntry::new(6);
            for d in [4, 7, 1] {
                entry.handle(KeyEvent::Digit(d));
            }
            draw_pin_entry(fb, &entry, Some(2)).expect("draws")
        }),
        ("choose_word", |fb| {
            draw_choose_word(fb, ["HERON-76", "LIGHTHOUSE-07", "MAPLE-31"]).expect("draws")
        }),
        ("pin_setup", |fb| {
            let mut entry = PinEntry::new(12);
            for d in [2, 4] {
                entry.handle(KeyEvent::Digit(d));
            }
            draw_pin_setup(fb, &entry).expect("draws")
        }),
        ("result_approved", |fb| {
            draw_result(fb, Outcome::Approved).expect("draws")
        }),
        ("result_declined", |fb| {
            draw_result(fb, Outcome::Declined).expect("draws")
        }),
        ("lockout", |fb| draw_lockout(fb).expect("draws")),
        ("timeout", |fb| draw_timeout(fb).expect("draws")),
    ]
}

fn golden_path(stem: &str, (w, h): (u32, u32)) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{stem}_{w}x{h}.png"))
}

/// Encodes RGB pixels as an indexed PNG when they use at most 256 colours, else as RGB.
fn encode_png(fb: &FrameBuffer) -> Vec<u8> {
    let mut palette: Vec<Rgb888> = Vec::new();
    let mut indices = Vec::with_capacity(fb.pixels.len());
    for &c in &fb.pixels {
        let i = match palette.iter().position(|&p| p == c) {
            Some(i) => i,
            None => {
                palette.push(c);
                palette.len() - 1
            }
        };
        indices.push(i);
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, fb.size.width, fb.size.height);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::High);
    let data = if palette.len() <= 256 {
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_palette(
            palette
                .iter()
                .flat_map(|c| [c.r(), c.g(), c.b()])
                .collect::<Vec<u8>>(),
        );
        indices.iter().map(|&i| i as u8).collect()
    } else {
        encoder.set_color(png::ColorType::Rgb);
        fb.rgb_bytes()
    };
    let mut writer = encoder.write_header().expect("png header");
    writer.write_image_data(&data).expect("png data");
    writer.finish().expect("png end");
    out
}

/// Decodes a PNG into (width, height, RGB bytes).
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("fits memory")];
    let info = reader.next_frame(&mut buf).expect("png data");
    assert_eq!(
        info.color_type,
        png::ColorType::Rgb,
        "golden must decode to RGB"
    );
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn check_against_golden(stem: &str, size: (u32, u32), fb: &FrameBuffer) -> Result<(), String> {
    let path = golden_path(stem, size);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::write(&path, encode_png(fb)).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let bytes = fs::read(&path).map_err(|e| {
        format!(
            "{}: {e} (run UPDATE_GOLDEN=1 cargo test -p trusted-ui --test golden)",
            path.display()
        )
    })?;
    let (w, h, want) = decode_png(&bytes);
    if (w, h) != size {
        return Err(format!(
            "{}: golden is {w}x{h}, rendered {}x{}",
            path.display(),
            size.0,
            size.1
        ));
    }
    let got = fb.rgb_bytes();
    let differing: Vec<usize> = (0..got.len() / 3)
        .filter(|&i| got[i * 3..i * 3 + 3] != want[i * 3..i * 3 + 3])
        .collect();
    match differing.first() {
        None => Ok(()),
        Some(&first) => Err(format!(
            "{}: {} pixels differ, first at ({}, {}): rendered {:?}, golden {:?}",
            path.display(),
            differing.len(),
            first as u32 % w,
            first as u32 / w,
            &got[first * 3..first * 3 + 3],
            &want[first * 3..first * 3 + 3],
        )),
    }
}

#[test]
fn every_screen_matches_its_golden_image() {
    let mut failures = Vec::new();
    for size in SIZES {
        for (stem, render) in screens() {
            let mut fb = FrameBuffer::new(size.0, size.1);
            let start = Instant::now();
            render(&mut fb);
            eprintln!(
                "{stem} {}x{}: rendered in {:?}",
                size.0,
                size.1,
                start.elapsed()
            );
            if let Err(message) = check_against_golden(stem, size, &fb) {
                failures.push(message);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

#[test]
fn approval_screen_shows_the_signed_statement_line_for_line() {
    let statement = approval_text(&view()).expect("valid view");
    for (w, h) in SIZES {
        let mut fb = FrameBuffer::new(w, h);
        let shown = draw_approval(&mut fb, &view(), SECURITY_WORD).expect("draws");
        let lines: Vec<&str> = shown.lines().collect();
        // Header first, then the statement exactly, then the unsigned extras.
        assert_eq!(lines[0], trusted_ui::HEADER_TEXT);
        let statement_lines: Vec<&str> = statement.lines().collect();
        assert_eq!(
            &lines[1..1 + statement_lines.len()],
            statement_lines.as_slice()
        );
        assert!(shown.contains("Security word: LIGHTHOUSE"));
        assert!(
            !statement.contains(SECURITY_WORD),
            "the word is never signed"
        );
        assert!(shown.ends_with("Decline\nApprove"));
    }
}

#[test]
fn pin_screen_shows_only_the_count() {
    let mut entry = PinEntry::new(6);
    for d in [9, 8, 7, 6] {
        entry.handle(KeyEvent::Digit(d));
    }
    let mut fb = FrameBuffer::new(720, 1280);
    let shown = draw_pin_entry(&mut fb, &entry, None).expect("draws");
    assert!(shown.lines().any(|l| l == "****--"), "{shown}");
    for digit in ["9", "8", "7", "6"] {
        // Digits appear only as keypad captions, never in a line with other text.
        assert_eq!(shown.lines().filter(|l| *l == digit).count(), 1, "{shown}");
    }
    assert!(!shown.contains("9876"));
}

#[test]
fn bad_text_draws_nothing_and_names_the_field() {
    let mut fb = FrameBuffer::new(800, 480);
    let before = fb.pixels.clone();
    let bad_word = draw_approval(&mut fb, &view(), "two\nlines");
    assert!(matches!(
        bad_word,
        Err(trusted_ui::DrawError::Text(
            trusted_ui::TextError::NotPrintable {
                field: trusted_ui::Field::SecurityWord,
                ..
            }
        ))
    ));
    let long_merchant = "m".repeat(trusted_ui::MERCHANT_MAX_LEN + 1);
    let view = ApprovalView {
        merchant: &long_merchant,
        ..view()
    };
    assert!(matches!(
        draw_approval(&mut fb, &view, SECURITY_WORD),
        Err(trusted_ui::DrawError::Text(
            trusted_ui::TextError::TooLong {
                field: trusted_ui::Field::Merchant,
                ..
            }
        ))
    ));
    assert!(fb.pixels == before, "nothing is drawn for refused text");
}

#[test]
fn longest_texts_and_odd_sizes_draw_without_panic() {
    let merchant = "W".repeat(trusted_ui::MERCHANT_MAX_LEN);
    let label = "W".repeat(trusted_ui::CREDENTIAL_LABEL_MAX_LEN);
    let word = "W".repeat(trusted_ui::SECURITY_WORD_MAX_LEN);
    let view = ApprovalView {
        merchant: &merchant,
        amount_minor: u64::MAX,
        currency: Currency::from_code("KWD").expect("KWD"),
        credential_label: &label,
    };
    for (w, h) in [
        (800, 480),
        (720, 1280),
        (1, 1),
        (0, 0),
        (320, 240),
        (1080, 2400),
    ] {
        let mut fb = FrameBuffer::new(w, h);
        draw_approval(&mut fb, &view, &word).expect("draws");
        let mut entry = PinEntry::new(trusted_ui::PIN_MAX_LEN);
        for _ in 0..20 {
            entry.handle(KeyEvent::Digit(1));
        }
        draw_pin_entry(&mut fb, &entry, Some(255)).expect("draws");
        draw_lockout(&mut fb).expect("draws");
    }
}

#[test]
fn a_single_changed_pixel_is_reported() {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        return; // Nothing to compare while regenerating.
    }
    let mut fb = FrameBuffer::new(800, 480);
    draw_timeout(&mut fb).expect("draws");
    let i = fb.index(Point::new(123, 45)).expect("inside");
    fb.pixels[i] = Rgb888::new(1, 2, 3);
    let error = check_against_golden("timeout", (800, 480), &fb).expect_err("must differ");
    assert!(
        error.contains("1 pixels differ, first at (123, 45)"),
        "{error}"
    );
}
