//! Where things go on the screen, computed from the target's bounding box.
//!
//! One [`Layout`] serves both drawing and hit-testing, so a button is always touched where
//! it was drawn. Sizes derive from the shorter side and the orientation, so the same code
//! lays out a landscape 800x480 panel and a portrait 720x1280 phone; every step uses
//! saturating arithmetic, so any size (even 0x0) lays out without a panic.

use embedded_graphics::geometry::{Point, Size};
use embedded_graphics::primitives::Rectangle;
use heapless::Vec;

use crate::input::Button;

/// The screens the trusted display can show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// The transaction statement with Approve / Decline.
    Approval,
    /// The PIN keypad.
    PinEntry,
    /// Approved or declined.
    Result,
    /// Too many wrong PINs.
    Lockout,
    /// The user did not answer in time.
    Timeout,
    /// The setup: choose one of three security words.
    ChooseWord,
}

/// Landscape when wider than tall, portrait otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orientation {
    /// Wider than tall, e.g. 800x480.
    Landscape,
    /// Taller than wide (or square), e.g. 720x1280.
    Portrait,
}

/// Most buttons on one screen: twelve keypad keys and Cancel.
pub const MAX_BUTTONS: usize = 13;

/// The buttons of one screen and where they are.
pub type ButtonList = Vec<(Button, Rectangle), MAX_BUTTONS>;

/// Text size classes; the pixel scale of each depends on the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextRole {
    /// The screen header and ordinary lines.
    Body,
    /// The amount and result titles.
    Large,
    /// Hints.
    Small,
}

/// Geometry of every screen for one display size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    area: Rectangle,
    orientation: Orientation,
}

impl Layout {
    /// The layout for a display whose drawable area is `area` (usually the
    /// `DrawTarget`'s bounding box).
    pub fn new(area: Rectangle) -> Layout {
        let orientation = if area.size.width > area.size.height {
            Orientation::Landscape
        } else {
            Orientation::Portrait
        };
        Layout { area, orientation }
    }

    /// The area laid out.
    pub fn area(&self) -> Rectangle {
        self.area
    }

    /// Landscape or portrait.
    pub fn orientation(&self) -> Orientation {
        self.orientation
    }

    fn width(&self) -> u32 {
        self.area.size.width
    }

    fn height(&self) -> u32 {
        self.area.size.height
    }

    fn short_side(&self) -> u32 {
        self.width().min(self.height())
    }

    /// Space kept free along every edge.
    pub fn margin(&self) -> u32 {
        self.short_side() / 30
    }

    /// Space between stacked items.
    pub(crate) fn gap(&self) -> u32 {
        self.base_scale().saturating_mul(3)
    }

    /// Pixel scale of ordinary text: 2 at 480 pixels on the short side, 3 at 720.
    fn base_scale(&self) -> u32 {
        (self.short_side() / 240).max(1)
    }

    /// The preferred pixel scale for a text role (lines too wide get a smaller one).
    pub(crate) fn scale(&self, role: TextRole) -> u32 {
        let base = self.base_scale();
        match role {
            TextRole::Body => base,
            // Portrait phones have height to spare: make the amount stand out more.
            TextRole::Large => match self.orientation {
                Orientation::Landscape => base.saturating_add(1),
                Orientation::Portrait => base.saturating_add(2),
            },
            TextRole::Small => base.saturating_sub(1).max(1),
        }
    }

    /// The header bar across the top.
    pub fn header(&self) -> Rectangle {
        let height = self.short_side() / 10;
        self.rect(0, 0, self.width(), height)
    }

    /// Where text lines go: below the header, inside the margins. For the PIN screen in
    /// landscape this is the left half (the keypad takes the right).
    pub fn text_column(&self, screen: Screen) -> Rectangle {
        let m = self.margin();
        let top = self.header().size.height.saturating_add(m);
        let width = match (screen, self.orientation) {
            (Screen::PinEntry, Orientation::Landscape) => {
                (self.width() / 2).saturating_sub(m.saturating_mul(2))
            }
            _ => self.width().saturating_sub(m.saturating_mul(2)),
        };
        self.rect(m, top, width, self.height().saturating_sub(top))
    }

    /// Height of the large buttons (Approve, Decline, Cancel, OK).
    fn button_height(&self) -> u32 {
        match self.orientation {
            Orientation::Landscape => self.height() / 6,
            Orientation::Portrait => self.height() / 9,
        }
    }

    /// The buttons of `screen`, in drawing order.
    pub fn buttons(&self, screen: Screen) -> ButtonList {
        let mut list = ButtonList::new();
        let m = self.margin();
        let bh = self.button_height();
        let bottom_row_y = self.height().saturating_sub(m).saturating_sub(bh);
        let full_width = self.width().saturating_sub(m.saturating_mul(2));
        match screen {
            Screen::Approval => {
                let half = full_width.saturating_sub(m) / 2;
                let right_x = m.saturating_add(half).saturating_add(m);
                add(
                    &mut list,
                    Button::Decline,
                    self.rect(m, bottom_row_y, half, bh),
                );
                add(
                    &mut list,
                    Button::Approve,
                    self.rect(right_x, bottom_row_y, half, bh),
                );
            }
            Screen::PinEntry => {
                let (pad, cancel) = match self.orientation {
                    Orientation::Landscape => {
                        let left = self.width() / 2;
                        let top = self.header().size.height.saturating_add(m);
                        let pad = self.rect(
                            left,
                            top,
                            self.width().saturating_sub(left).saturating_sub(m),
                            self.height().saturating_sub(top).saturating_sub(m),
                        );
                        let cancel = self.rect(
                            m,
                            bottom_row_y,
                            left.saturating_sub(m.saturating_mul(2)),
                            bh,
                        );
                        (pad, cancel)
                    }
                    Orientation::Portrait => {
                        let top = self.height().saturating_mul(3) / 8;
                        let pad = self.rect(
                            m,
                            top,
                            full_width,
                            bottom_row_y.saturating_sub(m).saturating_sub(top),
                        );
                        (pad, self.rect(m, bottom_row_y, full_width, bh))
                    }
                };
                keypad(&mut list, pad, m / 2);
                add(&mut list, Button::Cancel, cancel);
            }
            Screen::ChooseWord => {
                // Three word rows under the title line, then Cancel.
                let top = self
                    .header()
                    .size
                    .height
                    .saturating_add(m)
                    .saturating_add(bh.saturating_mul(2) / 3);
                let room = bottom_row_y.saturating_sub(m).saturating_sub(top);
                let gap = m / 2;
                let row = bh.min(room.saturating_sub(gap.saturating_mul(2)) / 3);
                for i in 0..3u8 {
                    let y =
                        top.saturating_add(u32::from(i).saturating_mul(row.saturating_add(gap)));
                    add(&mut list, Button::Word(i), self.rect(m, y, full_width, row));
                }
                let half = full_width.saturating_sub(m) / 2;
                add(
                    &mut list,
                    Button::Cancel,
                    self.rect(m, bottom_row_y, half, bh),
                );
            }
            Screen::Result | Screen::Lockout | Screen::Timeout => {
                let width = match self.orientation {
                    Orientation::Landscape => self.width() / 3,
                    Orientation::Portrait => full_width,
                };
                let x = self.width().saturating_sub(width) / 2;
                add(&mut list, Button::Ok, self.rect(x, bottom_row_y, width, bh));
            }
        }
        list
    }

    /// The button of `screen` under `point`, if any. Points on no button give `None`.
    pub fn hit_test(&self, screen: Screen, point: Point) -> Option<Button> {
        self.buttons(screen)
            .iter()
            .find(|(_, rect)| rect.contains(point))
            .map(|(button, _)| *button)
    }

    /// A rectangle at offset (`x`, `y`) from the area's top-left corner.
    fn rect(&self, x: u32, y: u32, width: u32, height: u32) -> Rectangle {
        Rectangle::new(offset(self.area.top_left, x, y), Size::new(width, height))
    }
}

/// `origin` moved right by `dx` and down by `dy`, saturating at the edge of `i32`.
pub(crate) fn offset(origin: Point, dx: u32, dy: u32) -> Point {
    let dx = i32::try_from(dx).unwrap_or(i32::MAX);
    let dy = i32::try_from(dy).unwrap_or(i32::MAX);
    Point::new(origin.x.saturating_add(dx), origin.y.saturating_add(dy))
}

fn add(list: &mut ButtonList, button: Button, rect: Rectangle) {
    // MAX_BUTTONS covers the largest screen, so this never drops a button.
    let _ = list.push((button, rect));
}

/// Lays out a 3x4 phone keypad in `pad` with `gap` pixels between keys:
/// 1 2 3 / 4 5 6 / 7 8 9 / Back 0 OK.
fn keypad(list: &mut ButtonList, pad: Rectangle, gap: u32) {
    const KEYS: [Button; 12] = [
        Button::Digit(1),
        Button::Digit(2),
        Button::Digit(3),
        Button::Digit(4),
        Button::Digit(5),
        Button::Digit(6),
        Button::Digit(7),
        Button::Digit(8),
        Button::Digit(9),
        Button::Back,
        Button::Digit(0),
        Button::Ok,
    ];
    let key_w = pad.size.width.saturating_sub(gap.saturating_mul(2)) / 3;
    let key_h = pad.size.height.saturating_sub(gap.saturating_mul(3)) / 4;
    for (index, button) in (0u32..).zip(KEYS) {
        let (col, row) = (index % 3, index / 3);
        let x = col.saturating_mul(key_w.saturating_add(gap));
        let y = row.saturating_mul(key_h.saturating_add(gap));
        add(
            list,
            button,
            Rectangle::new(offset(pad.top_left, x, y), Size::new(key_w, key_h)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCREENS: [Screen; 5] = [
        Screen::Approval,
        Screen::PinEntry,
        Screen::Result,
        Screen::Lockout,
        Screen::Timeout,
    ];

    fn layout(width: u32, height: u32) -> Layout {
        Layout::new(Rectangle::new(Point::zero(), Size::new(width, height)))
    }

    fn center(rect: &Rectangle) -> Point {
        rect.center()
    }

    #[test]
    fn orientation_follows_the_aspect() {
        assert_eq!(layout(800, 480).orientation(), Orientation::Landscape);
        assert_eq!(layout(720, 1280).orientation(), Orientation::Portrait);
    }

    #[test]
    fn buttons_are_inside_the_screen_and_do_not_overlap() {
        for l in [layout(800, 480), layout(720, 1280)] {
            let area = l.area();
            for screen in SCREENS {
                let buttons = l.buttons(screen);
                assert!(!buttons.is_empty());
                for (i, (button, rect)) in buttons.iter().enumerate() {
                    assert!(
                        rect.size.width >= 48 && rect.size.height >= 48,
                        "{button:?} {rect:?}"
                    );
                    assert!(area.contains(rect.top_left), "{button:?}");
                    assert!(area.contains(rect.bottom_right().unwrap_or_default()));
                    for (other, other_rect) in buttons.iter().skip(i + 1) {
                        assert!(
                            rect.intersection(other_rect).is_zero_sized(),
                            "{button:?} overlaps {other:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_button_is_hit_at_its_center() {
        for l in [layout(800, 480), layout(720, 1280)] {
            for screen in SCREENS {
                for (button, rect) in l.buttons(screen) {
                    assert_eq!(l.hit_test(screen, center(&rect)), Some(button));
                }
            }
        }
    }

    #[test]
    fn known_points_hit_the_expected_buttons() {
        let landscape = layout(800, 480);
        assert_eq!(
            landscape.hit_test(Screen::Approval, Point::new(600, 430)),
            Some(Button::Approve)
        );
        assert_eq!(
            landscape.hit_test(Screen::Approval, Point::new(200, 430)),
            Some(Button::Decline)
        );
        assert_eq!(
            landscape.hit_test(Screen::Approval, Point::new(400, 200)),
            None
        );
        let portrait = layout(720, 1280);
        assert_eq!(
            portrait.hit_test(Screen::Approval, Point::new(540, 1200)),
            Some(Button::Approve)
        );
        assert_eq!(
            portrait.hit_test(Screen::Approval, Point::new(180, 1200)),
            Some(Button::Decline)
        );
        assert_eq!(
            portrait.hit_test(Screen::Approval, Point::new(360, 300)),
            None
        );
        // Keypad: landscape on the right half, portrait in the lower part.
        assert_eq!(
            landscape.hit_test(Screen::PinEntry, Point::new(100, 100)),
            None
        );
        assert_eq!(
            portrait.hit_test(Screen::PinEntry, Point::new(360, 200)),
            None
        );
    }

    #[test]
    fn points_off_every_button_do_nothing() {
        for l in [layout(800, 480), layout(720, 1280)] {
            for screen in SCREENS {
                for p in [
                    Point::new(-1, -1),
                    Point::new(0, 0),
                    Point::new(i32::MAX, i32::MAX),
                    Point::new(i32::MIN, 5),
                    Point::new(799, 0),
                ] {
                    assert_eq!(l.hit_test(screen, p), None, "{screen:?} {p:?}");
                }
            }
        }
    }

    #[test]
    fn the_keypad_has_every_digit_once() {
        for l in [layout(800, 480), layout(720, 1280)] {
            let buttons = l.buttons(Screen::PinEntry);
            for d in 0..=9u8 {
                let n = buttons
                    .iter()
                    .filter(|(b, _)| *b == Button::Digit(d))
                    .count();
                assert_eq!(n, 1);
            }
        }
    }

    #[test]
    fn degenerate_sizes_do_not_panic() {
        for (w, h) in [
            (0, 0),
            (1, 1),
            (3, 1000),
            (u32::MAX, u32::MAX),
            (u32::MAX, 1),
        ] {
            let l = layout(w, h);
            for screen in SCREENS {
                let _ = l.hit_test(screen, Point::new(1, 1));
                let _ = l.text_column(screen);
            }
        }
    }
}
