//! The five screens of the trusted display.
//!
//! Each `draw_*` function clears the target, draws one screen laid out for the target's
//! bounding box, and returns every string it drew ([`ScreenText`]), so the caller can check
//! exactly what the user saw. The approval screen's first lines are exactly
//! [`approval_text`]; the security word, hints and captions follow and are not signed.

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, Rectangle};
use heapless::String;

use crate::input::{Button, PinEntry};
use crate::layout::{Screen, TextRole, offset};
use crate::paint::{Align, DrawError, Painter, ScreenText, fill, fit_scale, stroke, text_size};
use crate::text::{ApprovalView, Field, TextError, approval_text, check_field};

/// The colours of the trusted display.
pub mod palette {
    use embedded_graphics::pixelcolor::Rgb888;

    /// Screen background.
    pub const BACKGROUND: Rgb888 = Rgb888::new(0xF5, 0xF7, 0xFA);
    /// Ordinary text.
    pub const INK: Rgb888 = Rgb888::new(0x14, 0x1B, 0x2D);
    /// Secondary text (the "Pay" line, hints).
    pub const MUTED: Rgb888 = Rgb888::new(0x4A, 0x55, 0x68);
    /// The header bar.
    pub const HEADER: Rgb888 = Rgb888::new(0x0B, 0x3D, 0x91);
    /// Text on coloured backgrounds.
    pub const ON_COLOUR: Rgb888 = Rgb888::new(0xFF, 0xFF, 0xFF);
    /// Approve, OK and success.
    pub const GO: Rgb888 = Rgb888::new(0x16, 0x7A, 0x3A);
    /// Decline, Cancel and failure.
    pub const STOP: Rgb888 = Rgb888::new(0xB4, 0x1E, 0x1E);
    /// Keypad keys.
    pub const KEY: Rgb888 = Rgb888::new(0xDD, 0xE2, 0xEA);
    /// The security word badge.
    pub const BADGE: Rgb888 = Rgb888::new(0xFF, 0xE3, 0x8F);
    /// The badge's border.
    pub const BADGE_BORDER: Rgb888 = Rgb888::new(0x9C, 0x6A, 0x00);
    /// The timeout disc.
    pub const NEUTRAL: Rgb888 = Rgb888::new(0x5B, 0x66, 0x78);
}

use palette::*;

/// Caption of the header bar on every screen.
pub const HEADER_TEXT: &str = "Secure payment";

/// The hints under the security word on the approval screen: approving
/// takes a press-and-hold (`guard::HOLD_MS`), which type-ahead cannot make.
pub const HINTS: [&str; 2] = [
    "Only approve if the word is yours",
    "Hold Approve (or Enter) 1 s to pay",
];

/// What the user decided, for [`draw_result`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The payment was approved and signed.
    Approved,
    /// The payment was declined.
    Declined,
}

/// Draws the approval screen: the statement of `view`, the user's `security_word` in a
/// badge, hints, and Decline / Approve buttons.
///
/// The returned text starts with exactly [`approval_text`]`(view)`, line for line.
pub fn draw_approval<D>(
    target: &mut D,
    view: &ApprovalView<'_>,
    security_word: &str,
) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    let statement = approval_text(view)?;
    check_field(Field::SecurityWord, security_word)?;
    let mut badge_text: String<48> = String::new();
    badge_text
        .push_str("Security word: ")
        .and_then(|()| badge_text.push_str(security_word))
        .map_err(|_| TextError::Capacity)?;

    let mut p = Painter::new(target);
    p.clear(BACKGROUND)?;
    header(&mut p)?;
    let column = p.layout.text_column(Screen::Approval);
    let gap = p.layout.gap();
    let mut y = 0u32;
    for (index, line) in statement.split('\n').enumerate() {
        let (role, color) = match index {
            0 => (TextRole::Body, MUTED),
            1 => (TextRole::Large, INK),
            _ => (TextRole::Body, INK),
        };
        let used = p.line(line, column, y, role, color, Align::Left)?;
        y = y.saturating_add(used).saturating_add(gap);
    }

    // The badge: a framed box just big enough for the word at body size.
    let pad = gap.saturating_mul(2);
    let inner = column.size.width.saturating_sub(pad.saturating_mul(2));
    let scale = fit_scale(&badge_text, p.layout.scale(TextRole::Body), inner);
    let badge_height = text_size(&badge_text, scale).height.saturating_add(pad);
    let badge = Rectangle::new(
        offset(column.top_left, 0, y),
        Size::new(column.size.width, badge_height),
    );
    p.panel(badge, BADGE, Some(BADGE_BORDER), pad)?;
    p.centered(&badge_text, badge, TextRole::Body, INK)?;
    y = y
        .saturating_add(badge_height)
        .saturating_add(gap.saturating_mul(2));

    for hint in HINTS {
        let used = p.line(hint, column, y, TextRole::Small, MUTED, Align::Left)?;
        y = y.saturating_add(used).saturating_add(gap);
    }
    buttons(&mut p, Screen::Approval)?;
    Ok(p.finish())
}

/// Draws the PIN screen: a prompt, one dot per possible digit (filled for each digit typed),
/// the tries left if known, and the keypad with Cancel.
///
/// The dots are reported in the returned text as `*` per typed digit and `-` per free
/// place; the digits themselves never reach the screen.
pub fn draw_pin_entry<D>(
    target: &mut D,
    entry: &PinEntry,
    tries_left: Option<u8>,
) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    pin_screen(target, "Enter your PIN", entry, tries_left)
}

/// Draws the setup's PIN screen: as [`draw_pin_entry`], asking the user to
/// choose a PIN (4 to 12 digits, then OK).
pub fn draw_pin_setup<D>(
    target: &mut D,
    entry: &PinEntry,
) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    pin_screen(target, "Choose a PIN (4+ digits)", entry, None)
}

/// Draws the setup's first screen: the three security words offered, one
/// per button, and Cancel. The word the user taps is shown on every
/// approval from then on.
pub fn draw_choose_word<D>(
    target: &mut D,
    words: [&str; 3],
) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    for word in words {
        check_field(Field::SecurityWord, word)?;
    }
    let mut p = Painter::new(target);
    p.clear(BACKGROUND)?;
    header(&mut p)?;
    let column = p.layout.text_column(Screen::ChooseWord);
    p.line(
        "Tap your security word",
        column,
        0,
        TextRole::Body,
        INK,
        Align::Left,
    )?;
    for (button, rect) in p.layout.buttons(Screen::ChooseWord) {
        match button {
            Button::Word(i) => {
                let word = words.get(usize::from(i)).copied().unwrap_or("");
                p.button(rect, word, BADGE, INK, TextRole::Large)?;
            }
            other => p.button(rect, other.label(), STOP, ON_COLOUR, TextRole::Large)?,
        }
    }
    Ok(p.finish())
}

fn pin_screen<D>(
    target: &mut D,
    title: &str,
    entry: &PinEntry,
    tries_left: Option<u8>,
) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    let mut p = Painter::new(target);
    p.clear(BACKGROUND)?;
    header(&mut p)?;
    let column = p.layout.text_column(Screen::PinEntry);
    let gap = p.layout.gap();
    let mut y = p.line(title, column, 0, TextRole::Large, INK, Align::Left)?;
    y = y.saturating_add(gap.saturating_mul(3));

    // Dots: diameter from the text scale, shrunk if the row would not fit.
    let places = u32::try_from(entry.max_len()).unwrap_or(u32::MAX).max(1);
    let typed = u32::try_from(entry.len()).unwrap_or(u32::MAX);
    let preferred = p.layout.scale(TextRole::Body).saturating_mul(12);
    let diameter = preferred.min(column.size.width.saturating_mul(2) / places.saturating_mul(3));
    let step = diameter.saturating_add(diameter / 2);
    let mut dots: String<{ crate::input::PIN_MAX_LEN }> = String::new();
    for place in 0..places {
        let top_left = offset(column.top_left, place.saturating_mul(step), y);
        let circle = Circle::new(top_left, diameter);
        let filled = place < typed;
        if filled {
            p.shape(circle.into_styled(fill(INK)))?;
        } else {
            p.shape(circle.into_styled(stroke(MUTED, (diameter / 8).max(1))))?;
        }
        let _ = dots.push(if filled { '*' } else { '-' });
    }
    p.record(&dots)?;
    y = y
        .saturating_add(diameter)
        .saturating_add(gap.saturating_mul(3));

    if let Some(tries) = tries_left {
        let mut line: String<24> = String::new();
        let plural = if tries == 1 { "try" } else { "tries" };
        core::fmt::Write::write_fmt(&mut line, format_args!("{tries} {plural} left"))
            .map_err(|_| TextError::Capacity)?;
        p.line(&line, column, y, TextRole::Body, MUTED, Align::Left)?;
    }
    buttons(&mut p, Screen::PinEntry)?;
    Ok(p.finish())
}

/// Draws the result of an approval.
pub fn draw_result<D>(target: &mut D, outcome: Outcome) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    match outcome {
        Outcome::Approved => message(
            target,
            Screen::Result,
            Symbol::Check,
            GO,
            &["Approved", "Payment approved.", "Return to your app."],
        ),
        Outcome::Declined => message(
            target,
            Screen::Result,
            Symbol::Cross,
            STOP,
            &["Declined", "Payment declined.", "Nothing was paid."],
        ),
    }
}

/// Draws the lockout screen shown after too many wrong PINs.
pub fn draw_lockout<D>(target: &mut D) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    message(
        target,
        Screen::Lockout,
        Symbol::Bang,
        STOP,
        &[
            "PIN locked",
            "Too many wrong PINs.",
            "Call your card issuer.",
        ],
    )
}

/// Draws the timeout screen shown when the user did not answer in time.
pub fn draw_timeout<D>(target: &mut D) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    message(
        target,
        Screen::Timeout,
        Symbol::Clock,
        NEUTRAL,
        &["Timed out", "No answer in time.", "Nothing was paid."],
    )
}

/// The pictogram in a message screen's disc.
#[derive(Clone, Copy)]
enum Symbol {
    Check,
    Cross,
    Bang,
    Clock,
}

/// A message screen: a coloured disc with a symbol, a title, body lines and an OK button.
fn message<D>(
    target: &mut D,
    screen: Screen,
    symbol: Symbol,
    colour: Rgb888,
    lines: &[&str],
) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    let mut p = Painter::new(target);
    p.clear(BACKGROUND)?;
    header(&mut p)?;
    let column = p.layout.text_column(screen);
    let gap = p.layout.gap();

    let diameter = p.layout.area().size.width.min(p.layout.area().size.height) / 4;
    let role_of = |index: usize| {
        if index == 0 {
            TextRole::Large
        } else {
            TextRole::Body
        }
    };
    // Centre the disc and the lines vertically in the room above the buttons.
    let content = lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let scale = fit_scale(line, p.layout.scale(role_of(index)), column.size.width);
            text_size(line, scale).height.saturating_add(gap)
        })
        .fold(
            diameter.saturating_add(gap.saturating_mul(2)),
            u32::saturating_add,
        );
    let buttons_top = p
        .layout
        .buttons(screen)
        .first()
        .map_or(column.top_left.y, |(_, rect)| rect.top_left.y);
    let room = u32::try_from(buttons_top.saturating_sub(column.top_left.y)).unwrap_or(0);
    let column = Rectangle::new(
        offset(column.top_left, 0, room.saturating_sub(content) / 2),
        column.size,
    );

    let disc = Circle::new(
        offset(
            column.top_left,
            column.size.width.saturating_sub(diameter) / 2,
            0,
        ),
        diameter,
    );
    p.shape(disc.into_styled(fill(colour)))?;
    draw_symbol(&mut p, symbol, disc.bounding_box())?;

    let mut y = diameter.saturating_add(gap.saturating_mul(2));
    for (index, line) in lines.iter().enumerate() {
        let role = role_of(index);
        let ink = if index == 0 { colour } else { INK };
        let used = p.line(line, column, y, role, ink, Align::Center)?;
        y = y.saturating_add(used).saturating_add(gap);
    }
    buttons(&mut p, screen)?;
    Ok(p.finish())
}

/// A point inside `rect` at (`x`, `y`) thousandths of its width and height.
fn at(rect: Rectangle, x: u32, y: u32) -> Point {
    let scale = |length: u32, part: u32| {
        u32::try_from(u64::from(length) * u64::from(part) / 1000).unwrap_or(u32::MAX)
    };
    offset(
        rect.top_left,
        scale(rect.size.width, x),
        scale(rect.size.height, y),
    )
}

fn draw_symbol<D>(
    p: &mut Painter<'_, D>,
    symbol: Symbol,
    disc: Rectangle,
) -> Result<(), DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    let width = (disc.size.width / 10).max(1);
    let pen = stroke(ON_COLOUR, width);
    let segment = |a: (u32, u32), b: (u32, u32)| {
        Line::new(at(disc, a.0, a.1), at(disc, b.0, b.1)).into_styled(pen)
    };
    match symbol {
        Symbol::Check => {
            p.shape(segment((270, 520), (440, 690)))?;
            p.shape(segment((440, 690), (740, 340)))?;
        }
        Symbol::Cross => {
            p.shape(segment((320, 320), (680, 680)))?;
            p.shape(segment((680, 320), (320, 680)))?;
        }
        Symbol::Bang => {
            p.shape(segment((500, 220), (500, 600)))?;
            let dot = width.saturating_add(width / 2);
            p.shape(Circle::with_center(at(disc, 500, 760), dot).into_styled(fill(ON_COLOUR)))?;
        }
        Symbol::Clock => {
            let face = disc.size.width.saturating_mul(3) / 5;
            let thin = (width / 2).max(1);
            p.shape(Circle::with_center(disc.center(), face).into_styled(stroke(ON_COLOUR, thin)))?;
            p.shape(
                Line::new(disc.center(), at(disc, 500, 300)).into_styled(stroke(ON_COLOUR, thin)),
            )?;
            p.shape(
                Line::new(disc.center(), at(disc, 660, 500)).into_styled(stroke(ON_COLOUR, thin)),
            )?;
        }
    }
    Ok(())
}

fn header<D>(p: &mut Painter<'_, D>) -> Result<(), DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    let bar = p.layout.header();
    p.shape(bar.into_styled(fill(HEADER)))?;
    p.centered(HEADER_TEXT, bar, TextRole::Body, ON_COLOUR)
}

fn buttons<D>(p: &mut Painter<'_, D>, screen: Screen) -> Result<(), DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    for (button, rect) in p.layout.buttons(screen) {
        let (fill_colour, ink, role) = match button {
            Button::Approve | Button::Ok => (GO, ON_COLOUR, TextRole::Large),
            Button::Decline | Button::Cancel => (STOP, ON_COLOUR, TextRole::Large),
            Button::Digit(_) => (KEY, INK, TextRole::Large),
            Button::Back => (KEY, INK, TextRole::Body),
            Button::Word(_) => (BADGE, INK, TextRole::Large),
        };
        p.button(rect, button.label(), fill_colour, ink, role)?;
    }
    Ok(())
}

/// Redraws the progress of an Approve hold on the approval screen drawn by
/// [`draw_approval`] on the same target: a bar along the bottom of the
/// Approve button, `permille` of its width (0 clears it).
pub fn draw_hold<D>(target: &mut D, permille: u16) -> Result<(), DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    let mut p = Painter::new(target);
    let Some((_, rect)) = p
        .layout
        .buttons(Screen::Approval)
        .iter()
        .find(|(button, _)| *button == Button::Approve)
        .copied()
    else {
        return Ok(());
    };
    let inset = (rect.size.height / 16).max(2);
    let height = (rect.size.height / 14).max(3);
    let width = rect.size.width.saturating_sub(inset.saturating_mul(2));
    let done = u32::try_from(u64::from(width) * u64::from(permille.min(1000)) / 1000).unwrap_or(0);
    let top_left = offset(
        rect.top_left,
        inset,
        rect.size
            .height
            .saturating_sub(inset)
            .saturating_sub(height),
    );
    p.shape(Rectangle::new(top_left, Size::new(width, height)).into_styled(fill(GO)))?;
    if done > 0 {
        p.shape(Rectangle::new(top_left, Size::new(done, height)).into_styled(fill(ON_COLOUR)))?;
    }
    Ok(())
}

/// Puts `text` in a notice over the hints of the approval screen (the
/// screen stays otherwise as drawn): for example `guard::CLOSING_NOTICE`
/// while a prompt the app cancelled waits for the user to stop typing.
pub fn draw_notice<D>(target: &mut D, text: &str) -> Result<ScreenText, DrawError<D::Error>>
where
    D: DrawTarget<Color = Rgb888>,
{
    let mut p = Painter::new(target);
    let column = p.layout.text_column(Screen::Approval);
    let gap = p.layout.gap();
    let buttons_top = p
        .layout
        .buttons(Screen::Approval)
        .first()
        .map_or(column.top_left.y, |(_, rect)| rect.top_left.y);
    let scale = fit_scale(
        text,
        p.layout.scale(TextRole::Small),
        column.size.width.saturating_sub(gap.saturating_mul(4)),
    );
    let height = text_size(text, scale)
        .height
        .saturating_add(gap.saturating_mul(4));
    let bottom = u32::try_from(buttons_top.saturating_sub(column.top_left.y)).unwrap_or(0);
    let panel = Rectangle::new(
        offset(
            column.top_left,
            0,
            bottom.saturating_sub(height).saturating_sub(gap),
        ),
        Size::new(column.size.width, height),
    );
    p.panel(panel, BADGE, Some(STOP), gap)?;
    p.centered(text, panel, TextRole::Small, INK)?;
    Ok(p.finish())
}
