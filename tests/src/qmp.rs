//! QEMU's machine protocol (QMP) for the tests: plain JSON lines over the
//! unix socket QEMU was started with (`-qmp unix:<path>,server=on,wait=off`),
//! and screenshots of the scan-out through `screendump` (PNG).

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A QMP connection, past capability negotiation.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// What `screendump` captured: `width` x `height` RGB pixels, row after row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<[u8; 3]>,
}

impl Qmp {
    /// Connects to `socket` (retrying until QEMU has created it, up to
    /// `timeout`) and leaves capability negotiation mode.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Qmp, String> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("QMP socket {}: {e}", socket.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut qmp = Qmp {
            reader,
            writer: stream,
        };
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments`; its `return` value, or QEMU's
    /// error as text. Events that arrive meanwhile are skipped.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, String> {
        let request = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{request}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("QMP read: {e}"))?;
            if n == 0 {
                return Err("QMP connection closed".into());
            }
            let v: Value =
                serde_json::from_str(&line).map_err(|e| format!("QMP reply {line:?}: {e}"))?;
            if let Some(ret) = v.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = v.get("error") {
                return Err(format!("QMP {command}: {err}"));
            }
        }
    }

    /// A PNG screenshot of the display, written to `path` and decoded.
    /// The touch screen (QEMU's virtio tablet): moves to pixel (`x`, `y`)
    /// of a `width` x `height` display and puts the finger down or lifts it,
    /// in one report, as `input-send-event` does for a real tablet.
    pub fn touch(
        &mut self,
        (x, y): (u32, u32),
        (width, height): (u32, u32),
        down: bool,
    ) -> Result<(), String> {
        // QEMU's absolute axes run 0..=0x7fff over the whole display; aim
        // at the pixel's middle.
        let abs =
            |p: u32, size: u32| (u64::from(p) * 2 + 1) * 0x8000 / (2 * u64::from(size.max(1)));
        self.execute(
            "input-send-event",
            json!({ "events": [
                { "type": "abs", "data": { "axis": "x", "value": abs(x, width) } },
                { "type": "abs", "data": { "axis": "y", "value": abs(y, height) } },
                { "type": "btn", "data": { "down": down, "button": "left" } },
            ]}),
        )
        .map(|_| ())
    }

    /// A key of the keyboard (QEMU's virtio keyboard) goes down or up;
    /// `qcode` as QMP names it (`ret`, `esc`, `a`, `1`, ...).
    pub fn key(&mut self, qcode: &str, down: bool) -> Result<(), String> {
        self.execute(
            "input-send-event",
            json!({ "events": [
                { "type": "key", "data": { "down": down, "key": { "type": "qcode", "data": qcode } } },
            ]}),
        )
        .map(|_| ())
    }

    pub fn screendump(&mut self, path: &Path) -> Result<Screenshot, String> {
        let _ = std::fs::remove_file(path);
        self.execute(
            "screendump",
            json!({ "filename": path.to_string_lossy(), "format": "png" }),
        )?;
        read_png(path)
    }
}

/// Decodes an 8-bit RGB or RGBA PNG.
pub fn read_png(path: &Path) -> Result<Screenshot, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => {
            return Err(format!(
                "{}: unexpected PNG colour type {other:?}",
                path.display()
            ));
        }
    };
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(Screenshot {
        width: info.width,
        height: info.height,
        rgb,
    })
}

/// Writes `shot` as an RGB PNG (golden images and screens for people).
pub fn write_png(path: &Path, shot: &Screenshot) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), shot.width, shot.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let bytes: Vec<u8> = shot.rgb.iter().flatten().copied().collect();
    writer
        .write_image_data(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Screenshot {
    /// Pixels that differ from `other` (all of them when the sizes differ),
    /// and the first one's coordinates.
    pub fn diff(&self, other: &Screenshot) -> (usize, Option<(u32, u32)>) {
        if (self.width, self.height) != (other.width, other.height) {
            return (self.rgb.len().max(other.rgb.len()), Some((0, 0)));
        }
        let mut first = None;
        let mut count = 0;
        for (i, (a, b)) in self.rgb.iter().zip(&other.rgb).enumerate() {
            if a != b {
                count += 1;
                first.get_or_insert((i as u32 % self.width, i as u32 / self.width));
            }
        }
        (count, first)
    }
}

/// Where a machine's QMP socket goes: `<work>/qmp.sock` (a unix socket
/// path must stay short, so the work directory is used as is).
pub fn socket_in(work: &Path) -> PathBuf {
    work.join("qmp.sock")
}
