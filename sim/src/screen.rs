//! An RGB framebuffer for the trusted-UI screens and its PNG snapshots.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use embedded_graphics::Pixel;
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Point, Size};

/// Width and height of the simulated trusted display (a landscape panel).
pub const DISPLAY: (u32, u32) = (800, 480);

/// The secure VM's private scan-out buffer, in RAM.
pub struct FrameBuffer {
    size: Size,
    pixels: Vec<Rgb888>,
}

impl FrameBuffer {
    pub fn new(width: u32, height: u32) -> Self {
        let count = usize::try_from(u64::from(width) * u64::from(height)).unwrap_or(0);
        FrameBuffer {
            size: Size::new(width, height),
            pixels: vec![Rgb888::BLACK; count],
        }
    }

    fn index(&self, point: Point) -> Option<usize> {
        let x = u32::try_from(point.x).ok()?;
        let y = u32::try_from(point.y).ok()?;
        (x < self.size.width && y < self.size.height)
            .then(|| usize::try_from(u64::from(y) * u64::from(self.size.width) + u64::from(x)).ok())
            .flatten()
    }

    /// Writes the framebuffer as an RGB PNG.
    pub fn save_png(&self, path: &Path) -> Result<(), String> {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut encoder =
            png::Encoder::new(BufWriter::new(file), self.size.width, self.size.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let bytes: Vec<u8> = self
            .pixels
            .iter()
            .flat_map(|c| [c.r(), c.g(), c.b()])
            .collect();
        encoder
            .write_header()
            .and_then(|mut w| w.write_image_data(&bytes))
            .map_err(|e| format!("{}: {e}", path.display()))
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
            if let Some(slot) = self.index(point).and_then(|i| self.pixels.get_mut(i)) {
                *slot = color;
            }
        }
        Ok(())
    }
}

/// Numbers and saves every screen shown: `dir/0001-approval.png`, ...
pub struct ScreenLog {
    dir: Option<PathBuf>,
    count: u32,
}

impl ScreenLog {
    /// `None`: draw but do not save (fast tests).
    pub fn new(dir: Option<PathBuf>) -> Self {
        ScreenLog { dir, count: 0 }
    }

    /// Saves `fb` as the next screen named `name`; returns the path.
    pub fn save(&mut self, fb: &FrameBuffer, name: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        self.count += 1;
        let path = dir.join(format!("{:04}-{name}.png", self.count));
        match fb.save_png(&path) {
            Ok(()) => Some(path),
            Err(e) => {
                eprintln!("[sim] cannot save screen: {e}");
                None
            }
        }
    }
}
