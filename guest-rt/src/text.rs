//! Console text handling that needs no hardware: input lines and hex numbers.

/// What [`LineBuffer::push`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// The byte was stored (or ignored); the line goes on.
    Pending,
    /// A line ended; [`LineBuffer::line`] holds it until the next push.
    Complete,
    /// A line ended that did not fit; its bytes were dropped.
    TooLong,
}

/// Collects console input into lines of at most `N` bytes.
///
/// Either `\r` or `\n` ends a line, so `\r\n` gives one line and an empty one
/// (empty lines are reported as `Complete` with an empty [`line`](Self::line)).
///
/// # Invariants
/// `len <= N`; once a line overflows, the rest of it is discarded up to its
/// end, which is reported as `TooLong`.
#[derive(Debug)]
pub struct LineBuffer<const N: usize> {
    bytes: [u8; N],
    len: usize,
    overflowed: bool,
    complete: bool,
}

impl<const N: usize> Default for LineBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuffer<N> {
    /// The longest line kept.
    pub const CAPACITY: usize = N;

    /// An empty buffer.
    pub const fn new() -> Self {
        LineBuffer {
            bytes: [0; N],
            len: 0,
            overflowed: false,
            complete: false,
        }
    }

    /// Adds one input byte.
    pub fn push(&mut self, byte: u8) -> LineEvent {
        if self.complete {
            self.complete = false;
            self.len = 0;
        }
        match byte {
            b'\r' | b'\n' => {
                if self.overflowed {
                    self.overflowed = false;
                    self.len = 0;
                    LineEvent::TooLong
                } else {
                    self.complete = true;
                    LineEvent::Complete
                }
            }
            _ if self.overflowed => LineEvent::Pending,
            _ if self.len == N => {
                self.overflowed = true;
                LineEvent::Pending
            }
            _ => {
                self.bytes[self.len] = byte;
                self.len += 1;
                LineEvent::Pending
            }
        }
    }

    /// The line just completed (empty while a line is still being typed).
    pub fn line(&self) -> &[u8] {
        if self.complete {
            &self.bytes[..self.len]
        } else {
            &[]
        }
    }
}

/// Parses an unsigned hexadecimal number, with or without `0x`/`0X`, with
/// optional `_` separators. `None` for an empty, non-hex or too large value.
pub fn parse_hex_u64(text: &str) -> Option<u64> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let mut value: u64 = 0;
    let mut any = false;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        let digit = c.to_digit(16)?;
        value = value.checked_mul(16)?.checked_add(u64::from(digit))?;
        any = true;
    }
    any.then_some(value)
}

/// [`parse_hex_u64`] limited to 32 bits.
pub fn parse_hex_u32(text: &str) -> Option<u32> {
    parse_hex_u64(text).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed<const N: usize>(buf: &mut LineBuffer<N>, input: &[u8]) -> Vec<(LineEvent, Vec<u8>)> {
        let mut out = Vec::new();
        for &b in input {
            let ev = buf.push(b);
            if ev != LineEvent::Pending {
                out.push((ev, buf.line().to_vec()));
            }
        }
        out
    }

    #[test]
    fn lines_end_at_cr_or_lf() {
        let mut buf = LineBuffer::<16>::new();
        let got = feed(&mut buf, b"peek 10\rpoke 1 2\n");
        assert_eq!(
            got,
            vec![
                (LineEvent::Complete, b"peek 10".to_vec()),
                (LineEvent::Complete, b"poke 1 2".to_vec())
            ]
        );
    }

    #[test]
    fn crlf_gives_an_empty_second_line() {
        let mut buf = LineBuffer::<16>::new();
        let got = feed(&mut buf, b"off\r\n");
        assert_eq!(
            got,
            vec![
                (LineEvent::Complete, b"off".to_vec()),
                (LineEvent::Complete, vec![])
            ]
        );
    }

    #[test]
    fn line_of_exactly_capacity_fits() {
        let mut buf = LineBuffer::<4>::new();
        assert_eq!(
            feed(&mut buf, b"abcd\n"),
            vec![(LineEvent::Complete, b"abcd".to_vec())]
        );
    }

    #[test]
    fn overlong_line_is_dropped_whole_and_the_next_one_works() {
        let mut buf = LineBuffer::<4>::new();
        let got = feed(&mut buf, b"abcdefghijklmnop\nab\n");
        assert_eq!(
            got,
            vec![
                (LineEvent::TooLong, vec![]),
                (LineEvent::Complete, b"ab".to_vec())
            ]
        );
    }

    #[test]
    fn partial_line_is_not_visible() {
        let mut buf = LineBuffer::<8>::new();
        feed(&mut buf, b"pe");
        assert!(buf.line().is_empty());
    }

    #[test]
    fn never_overflows_on_long_garbage() {
        let mut buf = LineBuffer::<3>::new();
        for i in 0..10_000u32 {
            let _ = buf.push((i % 251) as u8 | 0x20);
        }
        assert_eq!(buf.push(b'\n'), LineEvent::TooLong);
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(parse_hex_u64("0x4100_0000"), Some(0x4100_0000));
        assert_eq!(parse_hex_u64("DEADbeef"), Some(0xdead_beef));
        assert_eq!(parse_hex_u64("0XfF"), Some(0xff));
        assert_eq!(parse_hex_u64("ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_hex_u64("1_0000_0000_0000_0000"), None);
        assert_eq!(parse_hex_u64(""), None);
        assert_eq!(parse_hex_u64("0x"), None);
        assert_eq!(parse_hex_u64("0x_"), None);
        assert_eq!(parse_hex_u64("12g"), None);
        assert_eq!(parse_hex_u64("-1"), None);
        assert_eq!(parse_hex_u32("0x1_0000_0000"), None);
        assert_eq!(parse_hex_u32("0xffffffff"), Some(u32::MAX));
    }
}
