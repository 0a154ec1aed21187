//! The console multiplexer against a hostile rich VM: any bytes (escape
//! sequences, wide and invisible characters, invalid UTF-8, controls),
//! written and flushed in any pieces, interleaved with lines of mvmm and the
//! secure VM, level changes and the secure VM's trusted prefix switching on
//! and off.
//!
//! Invariant: on a terminal of `WIDTH` columns (rendered with vt100), every
//! row that shows text begins with a writer's prefix, and a row that begins
//! with the secure VM's or mvmm's prefix shows exactly one of the lines
//! they wrote: the rich VM can neither forge another writer's row nor
//! overwrite one.

use arbitrary::{Arbitrary, Unstructured};
use core::num::NonZero;
use mvmm_core::console::{ConsoleMux, WIDTH};

const PREFIXES: &[&str] = &["[mvmm] ", "[rich] ", "[secure] "];
const TRUSTED: &str = "[secure*] ";
const MVMM: usize = 0;
const RICH: usize = 1;
const SECURE: usize = 2;
const MVMM_LINES: &[&str] = &["rich VM reset", "vsock: refused 3 packets"];
const SECURE_LINES: &[&str] = &["Pay 12.50 EUR to Corner Cafe?", "approved"];

#[derive(Arbitrary, Debug)]
enum Op {
    /// Rich VM bytes, then maybe a flush (its vCPU went idle).
    Rich(Vec<u8>, bool),
    /// Rich VM bytes built from the pieces that matter most.
    RichPieces(Vec<Piece>, bool),
    Secure(u8),
    Mvmm(u8),
    /// The secure VM takes (true) or releases console focus.
    Focus(bool),
    Level(u8),
}

#[derive(Arbitrary, Debug)]
enum Piece {
    Text(u8),
    Prefix(u8),
    Cr,
    Lf,
    Backspace(u8),
    Csi(u8, u8),
    Esc(u8),
    Wide(u8),
    Invisible(u8),
    C1(u8),
    Level(u8),
    Byte(u8),
}

fn push_piece(p: &Piece, out: &mut Vec<u8>) {
    match *p {
        Piece::Text(n) => out.extend(std::iter::repeat_n(b'x', usize::from(n % 100))),
        Piece::Prefix(i) => {
            let all = [PREFIXES[0], PREFIXES[2], TRUSTED];
            out.extend_from_slice(all[usize::from(i) % 3].as_bytes())
        }
        Piece::Cr => out.push(b'\r'),
        Piece::Lf => out.push(b'\n'),
        Piece::Backspace(n) => out.extend(std::iter::repeat_n(8u8, usize::from(n % 12))),
        Piece::Csi(n, f) => {
            let finals = b"ABCDEFGHJKSTfmhlsurnq@PX";
            out.extend_from_slice(format!("\x1b[{n}").as_bytes());
            out.push(finals[usize::from(f) % finals.len()]);
        }
        Piece::Esc(c) => out.extend_from_slice(&[0x1b, c]),
        Piece::Wide(i) => {
            let chars = ["中", "😀", "ｗ", "é", "\u{0301}", "\u{200b}"];
            out.extend_from_slice(chars[usize::from(i) % chars.len()].as_bytes())
        }
        Piece::Invisible(i) => {
            let chars = ["\u{202e}", "\u{2066}", "\u{feff}", "\u{00ad}", "\u{200d}"];
            out.extend_from_slice(chars[usize::from(i) % chars.len()].as_bytes())
        }
        Piece::C1(c) => out.extend_from_slice(&[0xc2, 0x80 | (c & 0x1f)]),
        Piece::Level(d) => out.extend_from_slice(&[b'<', b'0' + d % 10, b'>']),
        Piece::Byte(b) => out.push(b),
    }
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut mux = ConsoleMux::new(PREFIXES);
    let mut out = Vec::new();
    let mut trusted = false;
    for op in crate::ops::<Op>(&mut u, 64) {
        let mut sink = |b| out.push(b);
        match op {
            Op::Rich(bytes, flush) => {
                for b in bytes {
                    mux.write(RICH, b, &mut sink);
                }
                if flush {
                    mux.flush(RICH, &mut sink);
                }
            }
            Op::RichPieces(pieces, flush) => {
                let mut bytes = Vec::new();
                pieces.iter().for_each(|p| push_piece(p, &mut bytes));
                for b in bytes {
                    mux.write(RICH, b, &mut sink);
                }
                if flush {
                    mux.flush(RICH, &mut sink);
                }
            }
            Op::Secure(i) => {
                let line = SECURE_LINES[usize::from(i) % SECURE_LINES.len()];
                mux.write_str(SECURE, line, &mut sink);
                mux.write_str(SECURE, "\n", &mut sink);
            }
            Op::Mvmm(i) => {
                let line = MVMM_LINES[usize::from(i) % MVMM_LINES.len()];
                mux.write_str(MVMM, line, &mut sink);
                mux.write_str(MVMM, "\n", &mut sink);
            }
            Op::Focus(on) => {
                trusted = on;
                let prefix = if on { TRUSTED } else { PREFIXES[SECURE] };
                mux.set_prefix(SECURE, prefix, &mut sink);
            }
            Op::Level(l) => mux.set_level(l % 9),
        }
    }
    let _ = trusted;
    let n = |v: u16| NonZero::new(v).expect("non-zero");
    let mut term = vt100::Parser::new(n(200), n(WIDTH), 0);
    term.process(&out);
    for row in term.screen().rows(0, WIDTH) {
        let row = row.trim_end();
        if row.is_empty() {
            continue;
        }
        let theirs = [
            (PREFIXES[SECURE], SECURE_LINES),
            (TRUSTED, SECURE_LINES),
            (PREFIXES[MVMM], MVMM_LINES),
        ];
        if let Some((prefix, lines)) = theirs.iter().find(|(p, _)| row.starts_with(p)) {
            let text = &row[prefix.len()..];
            assert!(
                lines.contains(&text),
                "row {row:?} under {prefix:?} is not a line its writer wrote\n{out:?}"
            );
            continue;
        }
        assert!(
            row.starts_with(PREFIXES[RICH]) || row == PREFIXES[RICH].trim_end(),
            "row {row:?} has no writer's prefix\n{out:?}"
        );
    }
}
