//! The console: several writers on one physical UART, and what is typed
//! into it.
//!
//! # Output: the multiplexer
//!
//! Every row of the physical console starts with the prefix of whoever
//! wrote it (`[mvmm] `, `[rich] `, `[secure] `). A guest cannot forge
//! another writer's prefix, whatever bytes it writes, on a terminal of
//! [`WIDTH`] columns or more:
//! - Escape sequences are parsed whole (ESC, CSI, OSC, DCS, APC, PM, SOS,
//!   their 8-bit C1 forms) and dropped whole: nothing of a sequence that
//!   could move the cursor, erase, change the title or query the terminal
//!   is printed. A few sequences that only act inside the writer's own row
//!   are kept, clamped to it (cursor left and right, erase to the end of
//!   the row); line editing in a shell uses them.
//! - Carriage return goes back to the start of the writer's own row and
//!   prints its prefix again; backspace stops at the prefix.
//! - The multiplexer wraps rows itself before the terminal would, counting
//!   every character that is not ASCII as two columns (no character takes
//!   more), so a continuation row also starts with the prefix. The wrap is
//!   sent as [`SOFT_WRAP`] (LF CR), so a program reading the console can
//!   join the row again. Invalid
//!   UTF-8 shows as `?`; bidirectional and other invisible format
//!   characters, and C0/C1 controls other than the ones above, are dropped.
//!
//! Each writer's bytes are held until its line is complete (or its buffer
//! is full), so lines from CPUs printing at the same time never interleave.
//! A partial line (an interactive prompt) is shown when the writer calls
//! [`ConsoleMux::flush`], which mvmm does when a VM goes idle or reads its
//! UART; if another writer's line comes while it is open, the open line is
//! broken and re-prefixed when it continues.
//!
//! A line that starts with a level marker `<N>` (a digit, as Linux's printk
//! levels) is shown only when `N` is at most the console's level
//! ([`ConsoleMux::set_level`]); the marker itself is never shown. The
//! secure OS marks its heartbeat as debug (`<7>`), hidden by default.
//!
//! # Input
//!
//! [`InputQueue`] holds what was typed until the VM with console focus
//! takes it: the physical UART is always drained at once, so its interrupt
//! never stays raised, and a paste longer than the virtual UART's FIFO
//! waits in mvmm instead of being lost.

/// Most writers (mvmm plus every VM).
pub const MAX_SOURCES: usize = 1 + crate::partition::MAX_VMS;
/// Bytes of one writer held back while its line is incomplete.
pub const LINE_BUFFER: usize = 160;
/// Columns of the terminal the console is made for, prefix included: rows
/// are wrapped before this width.
pub const WIDTH: u16 = 80;
/// What the multiplexer sends where it wraps a row itself, before the
/// prefix of the continuation row: on a terminal the same as CR LF, and
/// distinct from a writer's own newline (CR LF), so a program that reads
/// the console can undo the wrap.
pub const SOFT_WRAP: [u8; 2] = *b"\n\r";
/// The level a console starts with: lines marked `<7>` (debug) are hidden.
pub const DEFAULT_LEVEL: u8 = 6;
/// The level that shows every line.
pub const VERBOSE_LEVEL: u8 = 7;

const ESC: u8 = 0x1b;

/// Where a writer's escape-sequence parser is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Seq {
    #[default]
    Ground,
    /// After ESC.
    Escape,
    /// ESC followed by intermediate bytes (0x20..=0x2f).
    Intermediate,
    /// A control sequence: `param` is its first parameter, `plain` false
    /// once it has a private marker, a second parameter or intermediates.
    Csi { param: u16, plain: bool },
    /// A control string (OSC, DCS, APC, PM, SOS), ended by BEL or ST.
    Str,
    /// ESC inside a control string: `\` ends it.
    StrEscape,
    /// 0xc2 inside a control string: 0x9c (C1 ST in UTF-8) ends it.
    StrC2,
}

/// What one row of a writer looks like on the terminal.
#[derive(Clone, Copy, Debug, Default)]
struct Row {
    /// The prefix of the current row has been printed.
    started: bool,
    /// Columns written after the prefix, at least (every non-ASCII
    /// character counted as zero) and at most (counted as two). Cursor
    /// moves left are bounded by the first, wrapping by the second.
    min_col: u16,
    max_col: u16,
    /// A carriage return not yet carried out: before `\n` it is dropped
    /// (`\r\n` ends a row as `\n` does), before anything else it goes
    /// back to the start of the row and prints the prefix again.
    return_pending: bool,
}

/// Level marker at the start of a line: `<`, a digit, `>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Level {
    /// At the start of a line: a marker may come.
    #[default]
    Start,
    /// Seen `<`.
    Open,
    /// Seen `<` and this digit.
    Digit(u8),
    /// The line is shown.
    Shown,
    /// The line is hidden until its newline.
    Hidden,
}

#[derive(Clone, Copy, Debug, Default)]
struct Writer {
    row: Row,
    level: Level,
    esc: Seq,
    /// A UTF-8 character being assembled: its bytes so far and how many it
    /// needs.
    utf8: [u8; 4],
    utf8_len: u8,
    utf8_need: u8,
}

/// Multiplexer state.
///
/// # Invariants
/// `owner`, when set, is the writer whose row is open on the terminal (its
/// prefix printed, no newline yet). Every row a writer starts begins with
/// its prefix, and no byte the multiplexer sends moves the cursor left of
/// the end of the prefix of the row it is on, nor onto another row except
/// by `\r\n`.
#[derive(Debug)]
pub struct ConsoleMux<'p> {
    prefixes: &'p [&'p str],
    writers: [Writer; MAX_SOURCES],
    owner: Option<usize>,
    held: [[u8; LINE_BUFFER]; MAX_SOURCES],
    held_len: [usize; MAX_SOURCES],
    /// Prefixes replaced with [`ConsoleMux::set_prefix`].
    custom: [Option<&'p str>; MAX_SOURCES],
    level: u8,
}

const NEW_WRITER: Writer = Writer {
    row: Row {
        started: false,
        min_col: 0,
        max_col: 0,
        return_pending: false,
    },
    level: Level::Start,
    esc: Seq::Ground,
    utf8: [0; 4],
    utf8_len: 0,
    utf8_need: 0,
};

impl<'p> ConsoleMux<'p> {
    /// `prefixes[i]` is printed at the start of every row of writer `i`.
    pub const fn new(prefixes: &'p [&'p str]) -> Self {
        ConsoleMux {
            prefixes,
            writers: [NEW_WRITER; MAX_SOURCES],
            owner: None,
            held: [[0; LINE_BUFFER]; MAX_SOURCES],
            held_len: [0; MAX_SOURCES],
            custom: [None; MAX_SOURCES],
            level: DEFAULT_LEVEL,
        }
    }

    /// Lines marked with a level above `level` are hidden from now on.
    pub fn set_level(&mut self, level: u8) {
        self.level = level;
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
        self.writers[source] = NEW_WRITER;
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
            self.level_filter(source, byte, out);
        }
    }

    /// Writes a whole string from `source`.
    pub fn write_str(&mut self, source: usize, s: &str, out: &mut impl FnMut(u8)) {
        s.bytes().for_each(|b| self.write(source, b, out));
    }

    fn prefix(&self, source: usize) -> &'p str {
        let base = self.prefixes.get(source).copied().unwrap_or("");
        self.custom.get(source).copied().flatten().unwrap_or(base)
    }

    /// Columns a row of `source` has after its prefix.
    fn room(&self, source: usize) -> u16 {
        let prefix = u16::try_from(self.prefix(source).len()).unwrap_or(WIDTH);
        WIDTH.saturating_sub(prefix).max(1)
    }

    /// The level marker at the start of each line.
    fn level_filter(&mut self, source: usize, byte: u8, out: &mut impl FnMut(u8)) {
        let w = &mut self.writers[source];
        match (w.level, byte) {
            (Level::Hidden, b'\n') => w.level = Level::Start,
            (Level::Hidden, _) => {}
            (Level::Start, b'<') => w.level = Level::Open,
            (Level::Open, b'0'..=b'9') => w.level = Level::Digit(byte - b'0'),
            (Level::Digit(n), b'>') => {
                w.level = if n <= self.level {
                    Level::Shown
                } else {
                    Level::Hidden
                };
            }
            (Level::Shown, _) => {
                if byte == b'\n' {
                    w.level = Level::Start;
                }
                self.parse(source, byte, out);
            }
            (held, _) => {
                // Not a marker: what was held back is text after all.
                w.level = if byte == b'\n' {
                    Level::Start
                } else {
                    Level::Shown
                };
                if held != Level::Start {
                    self.parse(source, b'<', out);
                }
                if let Level::Digit(n) = held {
                    self.parse(source, b'0' + n, out);
                }
                self.parse(source, byte, out);
            }
        }
    }

    /// Runs one byte through the escape-sequence parser and the UTF-8
    /// decoder; whatever is to be shown goes on to the row.
    fn parse(&mut self, source: usize, byte: u8, out: &mut impl FnMut(u8)) {
        let w = &mut self.writers[source];
        // CAN and SUB abort a sequence; ESC starts a new one anywhere.
        if !matches!(w.esc, Seq::Ground | Seq::Str | Seq::StrEscape | Seq::StrC2) {
            match byte {
                0x18 | 0x1a => {
                    w.esc = Seq::Ground;
                    return;
                }
                ESC => {
                    w.esc = Seq::Escape;
                    return;
                }
                _ => {}
            }
        }
        match w.esc {
            Seq::Ground => {}
            Seq::Escape => {
                w.esc = match byte {
                    b'[' => Seq::Csi {
                        param: 0,
                        plain: true,
                    },
                    b']' | b'P' | b'X' | b'^' | b'_' => Seq::Str,
                    0x20..=0x2f => Seq::Intermediate,
                    // A final byte ends the sequence; controls inside are
                    // dropped.
                    0x30..=0x7e => Seq::Ground,
                    _ => Seq::Escape,
                };
                return;
            }
            Seq::Intermediate => {
                if (0x30..=0x7e).contains(&byte) {
                    w.esc = Seq::Ground;
                }
                return;
            }
            Seq::Csi { param, plain } => {
                w.esc = match byte {
                    b'0'..=b'9' if plain => Seq::Csi {
                        param: param
                            .saturating_mul(10)
                            .saturating_add(u16::from(byte - b'0')),
                        plain,
                    },
                    0x20..=0x3f => Seq::Csi {
                        param,
                        plain: false,
                    },
                    0x40..=0x7e => {
                        w.esc = Seq::Ground;
                        if plain {
                            self.control_sequence(source, param, byte, out);
                        }
                        return;
                    }
                    _ => Seq::Csi { param, plain },
                };
                return;
            }
            Seq::Str => {
                w.esc = match byte {
                    0x07 | 0x18 | 0x1a => Seq::Ground,
                    ESC => Seq::StrEscape,
                    0xc2 => Seq::StrC2,
                    _ => Seq::Str,
                };
                return;
            }
            Seq::StrC2 => {
                w.esc = Seq::Str;
                if byte == 0x9c {
                    w.esc = Seq::Ground;
                } else {
                    self.parse(source, byte, out);
                }
                return;
            }
            Seq::StrEscape => {
                // ST (ESC \) ends the string; ESC and anything else starts
                // a new sequence, as a terminal would.
                w.esc = Seq::Escape;
                if byte == b'\\' {
                    w.esc = Seq::Ground;
                } else {
                    self.parse(source, byte, out);
                }
                return;
            }
        }
        // Ground: text, controls, or the start of a sequence.
        if byte < 0x80 {
            if w.utf8_need > 0 {
                // A character cut short.
                w.utf8_need = 0;
                self.show(source, '?', out);
            }
            let w = &mut self.writers[source];
            match byte {
                ESC => w.esc = Seq::Escape,
                0x20..=0x7e => self.show(source, char::from(byte), out),
                b'\n' | b'\r' | 0x08 | b'\t' => self.control(source, byte, out),
                _ => {}
            }
            return;
        }
        let w = &mut self.writers[source];
        if w.utf8_need == 0 {
            let need = match byte {
                0xc2..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf4 => 4,
                _ => {
                    self.show(source, '?', out);
                    return;
                }
            };
            w.utf8 = [byte, 0, 0, 0];
            w.utf8_len = 1;
            w.utf8_need = need;
            return;
        }
        if byte & 0xc0 != 0x80 {
            // A new lead byte where a continuation was due.
            w.utf8_need = 0;
            self.show(source, '?', out);
            self.parse(source, byte, out);
            return;
        }
        w.utf8[usize::from(w.utf8_len)] = byte;
        w.utf8_len += 1;
        if w.utf8_len < w.utf8_need {
            return;
        }
        let len = usize::from(w.utf8_need);
        w.utf8_need = 0;
        let decoded = core::str::from_utf8(&w.utf8[..len])
            .ok()
            .and_then(|s| s.chars().next());
        match decoded {
            // C1 controls: CSI and the string introducers start sequences
            // that are dropped whole; the others are dropped.
            Some('\u{9b}') => {
                self.writers[source].esc = Seq::Csi {
                    param: 0,
                    plain: true,
                }
            }
            Some('\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}') => {
                self.writers[source].esc = Seq::Str
            }
            Some('\u{80}'..='\u{9f}') => {}
            Some(c) if invisible(c) => {}
            Some(c) => self.show(source, c, out),
            None => self.show(source, '?', out),
        }
    }

    /// A complete control sequence `CSI param final` without private
    /// markers or further parameters: kept only when it acts inside the
    /// writer's own row.
    fn control_sequence(
        &mut self,
        source: usize,
        param: u16,
        final_byte: u8,
        out: &mut impl FnMut(u8),
    ) {
        self.settle_return(source, out);
        let room = self.room(source);
        let row = self.writers[source].row;
        if !row.started || self.owner != Some(source) {
            return;
        }
        let mut emit = |n: u16, f: u8| {
            out(ESC);
            out(b'[');
            if n != 0 {
                let mut digits = [0u8; 5];
                let mut len = 0;
                let mut v = n;
                while v > 0 {
                    digits[len] = b'0' + (v % 10) as u8;
                    v /= 10;
                    len += 1;
                }
                digits[..len].iter().rev().for_each(|&d| out(d));
            }
            out(f);
        };
        let row = &mut self.writers[source].row;
        match final_byte {
            // Cursor left, never past the prefix.
            b'D' => {
                let n = param.max(1).min(row.min_col);
                if n > 0 {
                    emit(n, b'D');
                    row.min_col -= n;
                    row.max_col -= n;
                }
            }
            // Cursor right, inside the row.
            b'C' => {
                let n = param
                    .max(1)
                    .min(room.saturating_sub(1).saturating_sub(row.max_col));
                if n > 0 {
                    emit(n, b'C');
                    row.min_col += n;
                    row.max_col += n;
                }
            }
            // Erase to the end of the row (of the screen: below the last
            // row there is nothing, the cursor never goes up).
            b'K' | b'J' if param == 0 => emit(0, b'K'),
            _ => {}
        }
    }

    /// Carries out a pending carriage return (see [`Row`]).
    fn settle_return(&mut self, source: usize, out: &mut impl FnMut(u8)) {
        if !core::mem::take(&mut self.writers[source].row.return_pending) {
            return;
        }
        if self.owner == Some(source) {
            out(b'\r');
            self.prefix(source).bytes().for_each(&mut *out);
            let row = &mut self.writers[source].row;
            row.min_col = 0;
            row.max_col = 0;
        }
    }

    /// Newline, carriage return, backspace and tab.
    fn control(&mut self, source: usize, byte: u8, out: &mut impl FnMut(u8)) {
        if byte == b'\n' {
            self.writers[source].row.return_pending = false;
        } else {
            self.settle_return(source, out);
        }
        match byte {
            b'\n' => {
                self.open_row(source, out);
                out(b'\r');
                out(b'\n');
                self.writers[source].row = Row::default();
                self.owner = None;
            }
            b'\r' => {
                if self.owner == Some(source) && self.writers[source].row.started {
                    self.writers[source].row.return_pending = true;
                }
            }
            0x08 => {
                let row = &mut self.writers[source].row;
                if self.owner == Some(source) && row.min_col > 0 {
                    out(0x08);
                    row.min_col -= 1;
                    row.max_col -= 1;
                }
            }
            _ => {
                // Tab: spaces to the next multiple of eight columns.
                let col = self.writers[source].row.max_col;
                for _ in 0..(8 - col % 8) {
                    self.show(source, ' ', out);
                }
            }
        }
    }

    /// Starts a row for `source` if it has none open: closes another
    /// writer's open row, prints the prefix.
    fn open_row(&mut self, source: usize, out: &mut impl FnMut(u8)) {
        if let Some(other) = self.owner.filter(|&o| o != source) {
            // Someone else's row is open: close it; it re-prefixes later.
            out(b'\r');
            out(b'\n');
            self.writers[other].row = Row::default();
            self.owner = None;
        }
        if !self.writers[source].row.started {
            self.prefix(source).bytes().for_each(&mut *out);
            self.writers[source].row = Row {
                started: true,
                ..Row::default()
            };
            self.owner = Some(source);
        }
    }

    /// Shows one character, wrapping the row first if it might not fit.
    fn show(&mut self, source: usize, c: char, out: &mut impl FnMut(u8)) {
        self.settle_return(source, out);
        let (min_width, max_width) = if c.is_ascii() { (1, 1) } else { (0, 2) };
        self.open_row(source, out);
        if self.writers[source].row.max_col + max_width > self.room(source) {
            // A soft wrap: LF CR (a hard newline is CR LF), so that a log
            // reader can join the rows again (see `SOFT_WRAP`).
            SOFT_WRAP.iter().for_each(|&b| out(b));
            self.writers[source].row = Row::default();
            self.owner = None;
            self.open_row(source, out);
        }
        let mut buf = [0u8; 4];
        c.encode_utf8(&mut buf).bytes().for_each(&mut *out);
        let row = &mut self.writers[source].row;
        row.min_col += min_width;
        row.max_col += max_width;
    }
}

/// Characters a terminal may draw as nothing, or that reorder a row
/// (bidirectional controls): never shown.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{34f}' | '\u{61c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'
        | '\u{ffa0}' | '\u{fff0}'..='\u{fffb}' | '\u{e0000}'..='\u{e0fff}')
}

/// Bytes typed on the console, waiting for the VM with focus to read them.
///
/// # Invariants
/// `len <= INPUT_QUEUE`; the bytes waiting are `bytes[head..]` wrapping.
#[derive(Clone, Debug)]
pub struct InputQueue {
    bytes: [u8; INPUT_QUEUE],
    head: usize,
    len: usize,
    /// Bytes dropped since [`InputQueue::take_dropped`] was last called.
    dropped: usize,
}

/// Bytes of typed input mvmm holds for a VM that is slow to read them.
pub const INPUT_QUEUE: usize = 8192;

impl Default for InputQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl InputQueue {
    pub const fn new() -> Self {
        InputQueue {
            bytes: [0; INPUT_QUEUE],
            head: 0,
            len: 0,
            dropped: 0,
        }
    }

    /// Queues a typed byte; when the queue is full the byte is dropped and
    /// counted.
    pub fn push(&mut self, byte: u8) {
        if self.len == INPUT_QUEUE {
            self.dropped += 1;
            return;
        }
        self.bytes[(self.head + self.len) % INPUT_QUEUE] = byte;
        self.len += 1;
    }

    /// The oldest byte waiting.
    pub fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.bytes[self.head];
        self.head = (self.head + 1) % INPUT_QUEUE;
        self.len -= 1;
        Some(byte)
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets what is waiting (focus moved: what was typed for one VM
    /// never reaches another); returns how many bytes that was.
    pub fn clear(&mut self) -> usize {
        let n = self.len;
        self.head = 0;
        self.len = 0;
        n
    }

    /// How many bytes were dropped since the last call.
    pub fn take_dropped(&mut self) -> usize {
        core::mem::take(&mut self.dropped)
    }
}

/// The prefix of the secure VM's lines while it holds console focus (the
/// trusted prompt). No guest can print it: [`ConsoleMux`] starts every row
/// with its writer's prefix.
pub const TRUSTED_PREFIX: &str = "[TRUSTED secure] ";

/// What moving console input focus does, in the order it must be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FocusChange {
    /// The VM whose virtual UART receives typed input afterwards.
    pub focus: usize,
    /// The CPU the physical UART's interrupt goes to: the first CPU of
    /// [`FocusChange::focus`].
    pub uart_cpu: Option<usize>,
    /// Route the interrupt before switching focus (taking) or after it
    /// (releasing). Either way a key typed in between interrupts the secure
    /// VM's CPU, never a rich-VM CPU while the key is the secure VM's (the
    /// interrupt would tell the rich VM when and how many keys were typed).
    pub route_first: bool,
    /// Whether the lines of the VM that asked carry [`TRUSTED_PREFIX`].
    pub trusted: bool,
}

/// Focus to VM `vm` (`take`), or back to the board's rich VM. Only a secure
/// VM asks (`crate::hypercall::admit`). What was typed before the change is
/// discarded by the caller: it was for the VM that had focus.
pub fn focus_change(board: &crate::partition::Board<'_>, vm: usize, take: bool) -> FocusChange {
    let rich = board
        .vms
        .iter()
        .position(|v| v.kind == crate::partition::VmKind::Rich)
        .unwrap_or(0);
    let focus = if take { vm } else { rich };
    FocusChange {
        focus,
        uart_cpu: board.vms.get(focus).and_then(|v| v.cpus.first()).copied(),
        route_first: take,
        trusted: take,
    }
}

#[cfg(test)]
mod tests;
