//! The trusted screen: a `DrawTarget` over the secure VM's private
//! framebuffer (XRGB8888, one `u32` a pixel), and the approval screen
//! `trusted-ui` draws into it. Plain logic, host-tested; the image gets the
//! framebuffer's memory from `arch::framebuffer`.

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Pixel, Size};
use embedded_graphics::primitives::Rectangle;
use payment_app::service::UiPrompt;
use trusted_ui::{ApprovalView, DrawError, ScreenText, draw_approval};

/// A framebuffer in memory: `width` x `height` XRGB8888 pixels, row after
/// row with no padding.
///
/// # Invariants
/// `pixels.len() == width * height`.
pub struct Framebuffer<'a> {
    pixels: &'a mut [u32],
    width: u32,
    height: u32,
}

/// The XRGB8888 word of a colour (bits 31..24 unused).
pub fn xrgb(color: Rgb888) -> u32 {
    u32::from(color.r()) << 16 | u32::from(color.g()) << 8 | u32::from(color.b())
}

impl<'a> Framebuffer<'a> {
    /// `None` when `pixels` does not hold exactly `width * height` pixels.
    pub fn new(pixels: &'a mut [u32], width: u32, height: u32) -> Option<Self> {
        let count = usize::try_from(u64::from(width) * u64::from(height)).ok()?;
        (pixels.len() == count).then_some(Framebuffer {
            pixels,
            width,
            height,
        })
    }

    /// The pixels, row after row.
    pub fn pixels(&self) -> &[u32] {
        self.pixels
    }
}

impl OriginDimensions for Framebuffer<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Framebuffer<'_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(point, color) in pixels {
            let (Ok(x), Ok(y)) = (u32::try_from(point.x), u32::try_from(point.y)) else {
                continue;
            };
            if x < self.width && y < self.height {
                self.pixels[(y * self.width + x) as usize] = xrgb(color);
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let area = area.intersection(&Rectangle::new(
            embedded_graphics::prelude::Point::zero(),
            self.size(),
        ));
        let Some(bottom_right) = area.bottom_right() else {
            return Ok(());
        };
        let word = xrgb(color);
        let (left, right) = (area.top_left.x as usize, bottom_right.x as usize);
        for y in area.top_left.y as usize..=bottom_right.y as usize {
            let row = y * self.width as usize;
            self.pixels[row + left..=row + right].fill(word);
        }
        Ok(())
    }

    fn clear(&mut self, color: Self::Color) -> Result<(), Self::Error> {
        self.pixels.fill(xrgb(color));
        Ok(())
    }
}

/// Why the approval screen was not drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScreenError {
    /// The request's currency is not one the display knows (the payment
    /// app refuses those before a prompt).
    UnknownCurrency,
    /// `trusted-ui` refused a field.
    Draw(DrawError<core::convert::Infallible>),
}

/// Draws the approval screen of `prompt` with the user's `security_word`:
/// the statement that gets signed, exactly as `trusted-ui` lays it out.
pub fn draw_prompt(
    target: &mut Framebuffer<'_>,
    prompt: &UiPrompt,
    security_word: &str,
) -> Result<ScreenText, ScreenError> {
    let currency = prompt
        .request
        .currency
        .currency()
        .ok_or(ScreenError::UnknownCurrency)?;
    let view = ApprovalView {
        merchant: prompt.request.merchant.as_str(),
        amount_minor: prompt.request.amount_minor,
        currency,
        credential_label: prompt.credential_label.as_str(),
    };
    draw_approval(target, &view, security_word).map_err(ScreenError::Draw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::Drawable;
    use embedded_graphics::prelude::{Point, Primitive};
    use embedded_graphics::primitives::PrimitiveStyle;

    #[test]
    fn pixels_are_xrgb_words_and_out_of_bounds_is_clipped() {
        let mut memory = [0u32; 4 * 3];
        assert!(Framebuffer::new(&mut memory[..11], 4, 3).is_none());
        let mut fb = Framebuffer::new(&mut memory, 4, 3).unwrap();
        fb.draw_iter([
            Pixel(Point::new(1, 2), Rgb888::new(0x12, 0x34, 0x56)),
            Pixel(Point::new(4, 0), Rgb888::WHITE),
            Pixel(Point::new(-1, 0), Rgb888::WHITE),
        ])
        .unwrap();
        assert_eq!(fb.pixels()[2 * 4 + 1], 0x0012_3456);
        assert_eq!(fb.pixels().iter().filter(|&&p| p != 0).count(), 1);
        Rectangle::new(Point::new(2, 1), Size::new(10, 10))
            .into_styled(PrimitiveStyle::with_fill(Rgb888::RED))
            .draw(&mut fb)
            .unwrap();
        assert_eq!(fb.pixels()[4 + 2], 0x00ff_0000);
        assert_eq!(fb.pixels()[4 + 1], 0);
        assert_eq!(fb.pixels()[2 * 4 + 3], 0x00ff_0000);
        fb.clear(Rgb888::BLUE).unwrap();
        assert!(fb.pixels().iter().all(|&p| p == 0xff));
    }

    #[test]
    fn the_prompt_screen_is_trusted_uis_approval_screen() {
        use embedded_graphics::pixelcolor::Rgb888;
        use protocol::{CurrencyCode, Merchant, PaymentRequest};
        let view = ApprovalView {
            merchant: "Corner Cafe",
            amount_minor: 1250,
            currency: protocol::Currency::from_code("EUR").unwrap(),
            credential_label: "Visa ending 4242",
        };
        let prompt = UiPrompt {
            prompt: payment_app::ApprovalPrompt {
                text: trusted_ui::approval_text(&view).unwrap(),
                pin_required: false,
                deadline_ms: 0,
            },
            request: PaymentRequest {
                credential: Default::default(),
                amount_minor: 1250,
                currency: CurrencyCode(*b"EUR"),
                merchant: Merchant::try_from("Corner Cafe").unwrap(),
                nonce: [0; 32],
            },
            credential_label: protocol::Label::try_from("Visa ending 4242").unwrap(),
        };
        let mut memory = vec![0u32; 800 * 480];
        let mut fb = Framebuffer::new(&mut memory, 800, 480).unwrap();
        let text = draw_prompt(&mut fb, &prompt, "HERON-76").unwrap();
        assert!(text.lines().any(|l| l == "12.50 EUR"), "{text:?}");
        // The same pixels as trusted-ui drawing the same view directly.
        let mut direct = vec![0u32; 800 * 480];
        let mut reference = Framebuffer::new(&mut direct, 800, 480).unwrap();
        draw_approval(&mut reference, &view, "HERON-76").unwrap();
        assert!(memory == direct);
        assert_eq!(memory[0], xrgb(Rgb888::new(0x0B, 0x3D, 0x91)));
    }
}
