//! Drawing helpers shared by the screens: pixel-scaled text, buttons, and a record of
//! every string drawn.
//!
//! Text uses embedded-graphics' 10x20 mono font blown up by a whole number (each font pixel
//! becomes an `s`x`s` block). That keeps every glyph crisp and identical on every build,
//! needs no font crate beyond embedded-graphics, and covers exactly the printable ASCII that
//! [`crate::text::check_field`] admits.

use core::fmt;

use embedded_graphics::mono_font::{MonoFont, MonoTextStyle, ascii::FONT_10X20};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{
    CornerRadii, PrimitiveStyle, PrimitiveStyleBuilder, Rectangle, RoundedRectangle,
};
use embedded_graphics::text::{Baseline, Text};
use heapless::String;

use crate::layout::{Layout, TextRole, offset};
use crate::text::TextError;

/// The font every screen uses, before scaling.
const FONT: &MonoFont<'static> = &FONT_10X20;

/// Capacity in bytes of the text a screen reports having displayed.
pub const SCREEN_TEXT_CAPACITY: usize = 512;

/// Everything a screen displayed, one drawn line or caption per `\n`-separated line, in
/// drawing order.
pub type ScreenText = String<SCREEN_TEXT_CAPACITY>;

/// Why a screen could not be drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrawError<E> {
    /// The text to show was refused (see [`TextError`]).
    Text(TextError),
    /// The draw target failed.
    Target(E),
}

impl<E> From<TextError> for DrawError<E> {
    fn from(error: TextError) -> Self {
        DrawError::Text(error)
    }
}

impl<E: fmt::Debug> fmt::Display for DrawError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrawError::Text(error) => write!(f, "{error}"),
            DrawError::Target(error) => write!(f, "draw target failed: {error:?}"),
        }
    }
}

/// Horizontal placement of a text line inside its column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Center,
}

/// A `DrawTarget` adapter that draws each pixel as a `scale`x`scale` block at `origin`.
struct Scaled<'a, D> {
    target: &'a mut D,
    origin: Point,
    scale: u32,
}

impl<D: DrawTarget<Color = Rgb888>> Dimensions for Scaled<'_, D> {
    fn bounding_box(&self) -> Rectangle {
        let outer = self.target.bounding_box();
        let scale = self.scale.max(1);
        Rectangle::new(Point::zero(), outer.size / scale)
    }
}

impl<D: DrawTarget<Color = Rgb888>> DrawTarget for Scaled<'_, D> {
    type Color = Rgb888;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        let step = i32::try_from(self.scale).unwrap_or(i32::MAX);
        for Pixel(point, color) in pixels {
            let top_left = Point::new(
                self.origin.x.saturating_add(point.x.saturating_mul(step)),
                self.origin.y.saturating_add(point.y.saturating_mul(step)),
            );
            let block = Rectangle::new(top_left, Size::new(self.scale, self.scale));
            self.target.fill_solid(&block, color)?;
        }
        Ok(())
    }
}

/// Width and height in pixels of `text` drawn at `scale`.
pub(crate) fn text_size(text: &str, scale: u32) -> Size {
    let advance = FONT
        .character_size
        .width
        .saturating_add(FONT.character_spacing);
    let chars = u32::try_from(text.chars().count()).unwrap_or(u32::MAX);
    Size::new(
        chars.saturating_mul(advance).saturating_mul(scale),
        FONT.character_size.height.saturating_mul(scale),
    )
}

/// The largest scale up to `preferred` at which `text` fits in `width` pixels (at least 1).
pub(crate) fn fit_scale(text: &str, preferred: u32, width: u32) -> u32 {
    (1..=preferred.max(1))
        .rev()
        .find(|&s| text_size(text, s).width <= width)
        .unwrap_or(1)
}

/// Draws onto one target while remembering every string drawn.
pub(crate) struct Painter<'t, D> {
    pub(crate) target: &'t mut D,
    pub(crate) layout: Layout,
    shown: ScreenText,
}

impl<'t, D: DrawTarget<Color = Rgb888>> Painter<'t, D> {
    /// A painter for `target`, laid out for its bounding box.
    pub(crate) fn new(target: &'t mut D) -> Self {
        let layout = Layout::new(target.bounding_box());
        Painter {
            target,
            layout,
            shown: ScreenText::new(),
        }
    }

    /// The record of everything drawn.
    pub(crate) fn finish(self) -> ScreenText {
        self.shown
    }

    pub(crate) fn record(&mut self, text: &str) -> Result<(), DrawError<D::Error>> {
        if !self.shown.is_empty() {
            self.shown.push('\n').map_err(|_| TextError::Capacity)?;
        }
        self.shown.push_str(text).map_err(|_| TextError::Capacity)?;
        Ok(())
    }

    /// Fills the whole target.
    pub(crate) fn clear(&mut self, color: Rgb888) -> Result<(), DrawError<D::Error>> {
        self.target.clear(color).map_err(DrawError::Target)
    }

    /// Fills `rect`, optionally with rounded corners and a border.
    pub(crate) fn panel(
        &mut self,
        rect: Rectangle,
        fill: Rgb888,
        border: Option<Rgb888>,
        radius: u32,
    ) -> Result<(), DrawError<D::Error>> {
        let mut style = PrimitiveStyleBuilder::new().fill_color(fill);
        if let Some(color) = border {
            style = style
                .stroke_color(color)
                .stroke_width(self.layout.scale(TextRole::Body));
        }
        RoundedRectangle::new(rect, CornerRadii::new(Size::new(radius, radius)))
            .into_styled(style.build())
            .draw(self.target)
            .map_err(DrawError::Target)
    }

    /// Draws `text` at `scale` with its top-left corner at `top_left` and records it.
    pub(crate) fn text_at(
        &mut self,
        text: &str,
        top_left: Point,
        scale: u32,
        color: Rgb888,
    ) -> Result<(), DrawError<D::Error>> {
        self.record(text)?;
        let mut scaled = Scaled {
            target: &mut *self.target,
            origin: top_left,
            scale: scale.max(1),
        };
        Text::with_baseline(
            text,
            Point::zero(),
            MonoTextStyle::new(FONT, color),
            Baseline::Top,
        )
        .draw(&mut scaled)
        .map_err(DrawError::Target)?;
        Ok(())
    }

    /// Draws `text` inside `column` starting `y` pixels below its top, at the role's scale
    /// or smaller so it fits the column's width. Returns the height used.
    pub(crate) fn line(
        &mut self,
        text: &str,
        column: Rectangle,
        y: u32,
        role: TextRole,
        color: Rgb888,
        align: Align,
    ) -> Result<u32, DrawError<D::Error>> {
        let scale = fit_scale(text, self.layout.scale(role), column.size.width);
        let size = text_size(text, scale);
        let x = match align {
            Align::Left => 0,
            Align::Center => column.size.width.saturating_sub(size.width) / 2,
        };
        self.text_at(text, offset(column.top_left, x, y), scale, color)?;
        Ok(size.height)
    }

    /// Draws `text` centred in `rect` at the role's scale or smaller.
    pub(crate) fn centered(
        &mut self,
        text: &str,
        rect: Rectangle,
        role: TextRole,
        color: Rgb888,
    ) -> Result<(), DrawError<D::Error>> {
        let scale = fit_scale(text, self.layout.scale(role), rect.size.width);
        let size = text_size(text, scale);
        let x = rect.size.width.saturating_sub(size.width) / 2;
        let y = rect.size.height.saturating_sub(size.height) / 2;
        self.text_at(text, offset(rect.top_left, x, y), scale, color)
    }

    /// Draws a filled button with a centred caption and records the caption.
    pub(crate) fn button(
        &mut self,
        rect: Rectangle,
        caption: &str,
        fill: Rgb888,
        ink: Rgb888,
        role: TextRole,
    ) -> Result<(), DrawError<D::Error>> {
        let radius = rect.size.height.min(rect.size.width) / 6;
        self.panel(rect, fill, None, radius)?;
        self.centered(caption, rect, role, ink)
    }

    /// Draws any styled primitive.
    pub(crate) fn shape<S>(&mut self, shape: S) -> Result<(), DrawError<D::Error>>
    where
        S: Drawable<Color = Rgb888>,
    {
        shape
            .draw(self.target)
            .map(|_| ())
            .map_err(DrawError::Target)
    }
}

/// A solid fill style.
pub(crate) fn fill(color: Rgb888) -> PrimitiveStyle<Rgb888> {
    PrimitiveStyle::with_fill(color)
}

/// A stroke style.
pub(crate) fn stroke(color: Rgb888, width: u32) -> PrimitiveStyle<Rgb888> {
    PrimitiveStyle::with_stroke(color, width)
}
