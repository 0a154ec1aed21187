//! The console multiplexer: several writers, one physical UART.
//!
//! Every line on the physical console starts with the prefix of whoever
//! wrote it (`[mvmm] `, `[rich] `, `[secure] `). A guest cannot forge
//! another writer's prefix: its lines always start with its own, and the
//! bytes that could move the terminal cursor back over a prefix (carriage
//! return, escape sequences, C1 controls, backspace at line start) are
//! dropped.
//!
//! Each writer's bytes are held until its line is complete (or its buffer
//! is full), so lines from CPUs printing at the same time never interleave.
//! A partial line (an interactive prompt) is shown when the writer calls
//! [`ConsoleMux::flush`], which mvmm does when a VM goes idle or reads its
//! UART; if another writer's line comes while it is open, the open line is
//! broken and re-prefixed when it continues.

/// Most writers (mvmm plus every VM).
pub const MAX_SOURCES: usize = 1 + crate::partition::MAX_VMS;
/// Bytes of one writer held back while its line is incomplete.
pub const LINE_BUFFER: usize = 160;

#[derive(Clone, Copy, Debug, Default)]
struct Line {
    /// The prefix of the current line has been printed.
    started: bool,
    /// Printable columns written after the prefix.
    column: u16,
    /// The previous byte was 0xc2, the UTF-8 lead of the C1 controls.
    after_c2: bool,
}

/// Multiplexer state.
///
/// # Invariants
/// `owner`, when set, is the writer whose line is open on the terminal
/// (its prefix printed, no newline yet).
#[derive(Debug)]
pub struct ConsoleMux<'p> {
    prefixes: &'p [&'p str],
    lines: [Line; MAX_SOURCES],
    owner: Option<usize>,
    held: [[u8; LINE_BUFFER]; MAX_SOURCES],
    held_len: [usize; MAX_SOURCES],
    /// Prefixes replaced with [`ConsoleMux::set_prefix`].
    custom: [Option<&'p str>; MAX_SOURCES],
}

impl<'p> ConsoleMux<'p> {
    /// `prefixes[i]` is printed at the start of every line of writer `i`.
    pub const fn new(prefixes: &'p [&'p str]) -> Self {
        ConsoleMux {
            prefixes,
            lines: [Line {
                started: false,
                column: 0,
                after_c2: false,
            }; MAX_SOURCES],
            owner: None,
            held: [[0; LINE_BUFFER]; MAX_SOURCES],
            held_len: [0; MAX_SOURCES],
            custom: [None; MAX_SOURCES],
        }
    }

    /// Changes the prefix of writer `source` from its next line on (the
    /// trusted prefix while the secure VM holds console focus). The open
    /// line, if any, is shown first under the old prefix.
    pub fn set_prefix(&mut self, source: usize, prefix: &'p str, out: &mut impl FnMut(u8)) {
        if source >= MAX_SOURCES {
            return;
        }
        self.flush(source, out);
        if self.owner == Some(source) {
            out(b'\r');
            out(b'\n');
            self.owner = None;
        }
        self.lines[source] = Line::default();
        if let Some(slot) = self.custom.get_mut(source) {
            *slot = Some(prefix);
        }
    }

    /// Writes one byte from writer `source`; `out` receives what goes to
    /// the physical UART. The byte is held until the line is complete.
    /// Unknown sources are ignored.
    pub fn write(&mut self, source: usize, byte: u8, out: &mut impl FnMut(u8)) {
        if source >= MAX_SOURCES || source >= self.prefixes.len() {
            return;
        }
        let len = self.held_len[source];
        self.held[source][len] = byte;
        self.held_len[source] = len + 1;
        if byte == b'\n' || len + 1 == LINE_BUFFER {
            self.flush(source, out);
        }
    }

    /// Shows whatever `source` holds, even an incomplete line.
    pub fn flush(&mut self, source: usize, out: &mut impl FnMut(u8)) {
        let Some(&len) = self.held_len.get(source) else {
            return;
        };
        self.held_len[source] = 0;
        for i in 0..len {
            let byte = self.held[source][i];
            self.emit(source, byte, out);
        }
    }

    /// Sends one byte to the terminal, with prefixes and filtering.
    fn emit(&mut self, source: usize, byte: u8, out: &mut impl FnMut(u8)) {
        let Some(&base) = self.prefixes.get(source) else {
            return;
        };
        let prefix = self.custom.get(source).copied().flatten().unwrap_or(base);
        if source >= MAX_SOURCES {
            return;
        }
        let after_c2 = core::mem::replace(&mut self.lines[source].after_c2, byte == 0xc2);
        let visible = match byte {
            b'\n' | b'\t' | 0x20..=0x7e => true,
            0x08 => self.lines[source].column > 0 && self.owner == Some(source),
            // C1 controls encoded in UTF-8 (c2 80..c2 9f) could act as CSI.
            0x80..=0x9f if after_c2 => false,
            0x80..=0xff => true,
            _ => false,
        };
        if !visible {
            return;
        }
        if let Some(other) = self.owner.filter(|&o| o != source) {
            // Someone else's line is open: close it; it re-prefixes later.
            out(b'\r');
            out(b'\n');
            self.lines[other] = Line::default();
            self.owner = None;
        }
        if !self.lines[source].started {
            prefix.bytes().for_each(&mut *out);
            self.lines[source].started = true;
            self.owner = Some(source);
        }
        let line = &mut self.lines[source];
        match byte {
            b'\n' => {
                out(b'\r');
                out(b'\n');
                *line = Line::default();
                self.owner = None;
            }
            0x08 => {
                out(byte);
                line.column -= 1;
            }
            // UTF-8 continuation bytes take no column of their own.
            0x80..=0xbf => out(byte),
            _ => {
                out(byte);
                line.column = line.column.saturating_add(1);
            }
        }
    }

    /// Writes a whole string from `source`.
    pub fn write_str(&mut self, source: usize, s: &str, out: &mut impl FnMut(u8)) {
        s.bytes().for_each(|b| self.write(source, b, out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFIXES: &[&str] = &["[mvmm] ", "[rich] ", "[secure] "];

    /// Writes each step's bytes, then flushes that writer (as mvmm does
    /// when a VM goes idle).
    fn run(steps: &[(usize, &[u8])]) -> String {
        let mut mux = ConsoleMux::new(PREFIXES);
        let mut out = Vec::new();
        for (source, bytes) in steps {
            for b in *bytes {
                mux.write(*source, *b, &mut |o| out.push(o));
            }
            mux.flush(*source, &mut |o| out.push(o));
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn lines_written_at_the_same_time_do_not_interleave() {
        let mut mux = ConsoleMux::new(PREFIXES);
        let mut out = Vec::new();
        let (a, b) = (b"probe: ready\n", b"secure-os: ready\n");
        for (i, &y) in b.iter().enumerate() {
            if let Some(&x) = a.get(i) {
                mux.write(1, x, &mut |o| out.push(o));
            }
            mux.write(2, y, &mut |o| out.push(o));
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "[rich] probe: ready\r\n[secure] secure-os: ready\r\n"
        );
    }

    #[test]
    fn a_full_buffer_is_shown_without_a_newline() {
        let mut mux = ConsoleMux::new(PREFIXES);
        let mut out = Vec::new();
        for _ in 0..LINE_BUFFER {
            mux.write(1, b'x', &mut |o| out.push(o));
        }
        assert_eq!(out.len(), "[rich] ".len() + LINE_BUFFER);
    }

    #[test]
    fn lines_get_their_writers_prefix() {
        assert_eq!(
            run(&[(1, b"hello\n"), (2, b"ready\n")]),
            "[rich] hello\r\n[secure] ready\r\n"
        );
        assert_eq!(run(&[(1, b"\n")]), "[rich] \r\n");
    }

    #[test]
    fn an_interrupted_line_is_broken_and_reprefixed() {
        assert_eq!(
            run(&[(1, b"/ # "), (2, b"tick\n"), (1, b"ls\n")]),
            "[rich] / # \r\n[secure] tick\r\n[rich] ls\r\n"
        );
    }

    #[test]
    fn a_guest_cannot_move_the_cursor_over_a_prefix() {
        // CR, ESC sequences, C1 CSI and backspace at line start are dropped.
        let out = run(&[
            (1, b"\r[secure] pay?\n"),
            (1, b"\x1b[2K\x08\x08x\n"),
            (1, b"\xc2\x9b1A\n"),
        ]);
        assert_eq!(
            out,
            "[rich] [secure] pay?\r\n[rich] [2K\x08\x08x\r\n[rich] \u{fffd}1A\r\n"
        );
        assert!(!out.contains('\x1b'));
        // Backspace inside one's own line works, but not past its start.
        assert_eq!(run(&[(1, b"ab\x08\x08\x08c\n")]), "[rich] ab\x08\x08c\r\n");
    }

    #[test]
    fn utf8_text_passes_through() {
        assert_eq!(
            run(&[(2, "Caf\u{e9} 12,50 \u{20ac}\n".as_bytes())]),
            "[secure] Caf\u{e9} 12,50 \u{20ac}\r\n"
        );
    }

    #[test]
    fn a_changed_prefix_applies_from_the_next_line() {
        let mut mux = ConsoleMux::new(PREFIXES);
        let mut out = Vec::new();
        mux.write_str(2, "a\npartial", &mut |o| out.push(o));
        mux.set_prefix(2, "[secure|TRUSTED] ", &mut |o| out.push(o));
        mux.write_str(2, "Pay 12.50 EUR?\n", &mut |o| out.push(o));
        mux.set_prefix(2, "[secure] ", &mut |o| out.push(o));
        mux.write_str(2, "b\n", &mut |o| out.push(o));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "[secure] a\r\n[secure] partial\r\n[secure|TRUSTED] Pay 12.50 EUR?\r\n[secure] b\r\n"
        );
    }

    #[test]
    fn unknown_sources_are_ignored() {
        assert_eq!(run(&[(7, b"x\n")]), "");
    }
}
