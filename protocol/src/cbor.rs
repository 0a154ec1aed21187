//! The small part of CBOR (RFC 8949) that the signed claims use, in its
//! core deterministic encoding only (RFC 8949 §4.2.1).
//!
//! [`Writer`] emits preferred (shortest) heads and definite lengths; callers
//! write map keys in canonical order. [`Reader`] accepts exactly that form
//! and nothing else: a non-shortest head, an indefinite length, a tag, a
//! float or a reserved value is [`CborError::NotDeterministic`] or
//! [`CborError::Unsupported`], and map keys must come in strictly
//! increasing bytewise order of their encodings (which also rules out
//! duplicates). So one claims value has exactly one accepted encoding.
//!
//! No allocation: the writer fills a caller's buffer, the reader borrows.
//! Nothing here panics on any input.

/// Major types.
const UNSIGNED: u8 = 0;
const NEGATIVE: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const SIMPLE: u8 = 7;

/// Simple values `false` and `true` (major type 7).
const FALSE: u64 = 20;
const TRUE: u64 = 21;

/// Deepest nesting [`Reader::skip`] follows.
const MAX_DEPTH: u8 = 8;

/// Why bytes are not the expected deterministic CBOR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CborError {
    /// The input ends inside an item.
    Truncated,
    /// A head is not the shortest form, or a length is indefinite.
    NotDeterministic,
    /// A tag, float, reserved or unassigned simple value, or nesting too deep.
    Unsupported,
    /// The item has another type than expected.
    WrongType,
    /// A value is out of range (an integer too large, bad UTF-8, a wrong length).
    OutOfRange,
    /// Map keys are not in strictly increasing canonical order.
    KeyOrder,
    /// The output buffer is full.
    BufferFull,
}

/// Appends deterministic CBOR to a caller's buffer.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    /// Writes into `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, len: 0 }
    }

    /// The bytes written so far.
    pub fn finish(self) -> &'a [u8] {
        let Writer { buf, len } = self;
        buf.get(..len).unwrap_or_default()
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), CborError> {
        let end = self
            .len
            .checked_add(bytes.len())
            .ok_or(CborError::BufferFull)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(CborError::BufferFull)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    /// A head in its shortest form.
    fn head(&mut self, major: u8, arg: u64) -> Result<(), CborError> {
        let major = major << 5;
        match arg {
            0..=23 => self.raw(&[major | arg as u8]),
            24..=0xff => self.raw(&[major | 24, arg as u8]),
            0x100..=0xffff => {
                self.raw(&[major | 25])?;
                self.raw(&(arg as u16).to_be_bytes())
            }
            0x1_0000..=0xffff_ffff => {
                self.raw(&[major | 26])?;
                self.raw(&(arg as u32).to_be_bytes())
            }
            _ => {
                self.raw(&[major | 27])?;
                self.raw(&arg.to_be_bytes())
            }
        }
    }

    /// An unsigned integer.
    pub fn uint(&mut self, value: u64) -> Result<(), CborError> {
        self.head(UNSIGNED, value)
    }

    /// Any integer that fits an `i64` (map keys, COSE labels).
    pub fn int(&mut self, value: i64) -> Result<(), CborError> {
        match u64::try_from(value) {
            Ok(unsigned) => self.head(UNSIGNED, unsigned),
            // -1 - n for n >= 0: the argument is !value as u64.
            Err(_) => self.head(NEGATIVE, !(value as u64)),
        }
    }

    /// A byte string.
    pub fn bytes(&mut self, value: &[u8]) -> Result<(), CborError> {
        self.head(BYTES, value.len() as u64)?;
        self.raw(value)
    }

    /// A text string.
    pub fn text(&mut self, value: &str) -> Result<(), CborError> {
        self.head(TEXT, value.len() as u64)?;
        self.raw(value.as_bytes())
    }

    /// `false` or `true`.
    pub fn bool(&mut self, value: bool) -> Result<(), CborError> {
        self.head(SIMPLE, if value { TRUE } else { FALSE })
    }

    /// The head of a map of `entries` pairs; the caller writes them next,
    /// keys in canonical order.
    pub fn map(&mut self, entries: usize) -> Result<(), CborError> {
        self.head(MAP, entries as u64)
    }

    /// Already-encoded CBOR (a nested item the caller built).
    pub fn encoded(&mut self, item: &[u8]) -> Result<(), CborError> {
        self.raw(item)
    }
}

/// Reads deterministic CBOR from borrowed bytes.
#[derive(Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// Whether every byte was consumed.
    pub fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// Fails unless every byte was consumed.
    pub fn end(&self) -> Result<(), CborError> {
        if self.at_end() {
            Ok(())
        } else {
            Err(CborError::OutOfRange)
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CborError> {
        let end = self.pos.checked_add(n).ok_or(CborError::Truncated)?;
        let out = self.bytes.get(self.pos..end).ok_or(CborError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// Major type and argument of the next head; rejects every form that is
    /// not the shortest and every indefinite length.
    fn head(&mut self) -> Result<(u8, u64), CborError> {
        let first = *self.take(1)?.first().ok_or(CborError::Truncated)?;
        let major = first >> 5;
        let info = first & 0x1f;
        if major == SIMPLE && info >= 24 {
            // Floats and two-byte simple values: never part of our claims.
            return Err(CborError::Unsupported);
        }
        let (arg, shortest_min) = match info {
            0..=23 => (u64::from(info), 0),
            24 => (u64::from(self.fixed::<1>()?[0]), 24),
            25 => (u64::from(u16::from_be_bytes(self.fixed::<2>()?)), 0x100),
            26 => (u64::from(u32::from_be_bytes(self.fixed::<4>()?)), 0x1_0000),
            27 => (u64::from_be_bytes(self.fixed::<8>()?), 0x1_0000_0000),
            31 => return Err(CborError::NotDeterministic),
            _ => return Err(CborError::Unsupported),
        };
        if arg < shortest_min {
            return Err(CborError::NotDeterministic);
        }
        Ok((major, arg))
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], CborError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn expect(&mut self, major: u8) -> Result<u64, CborError> {
        let (got, arg) = self.head()?;
        if got != major {
            return Err(CborError::WrongType);
        }
        Ok(arg)
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Result<u64, CborError> {
        self.expect(UNSIGNED)
    }

    /// An integer in `i64` range (unsigned or negative).
    pub fn int(&mut self) -> Result<i64, CborError> {
        match self.head()? {
            (UNSIGNED, arg) => i64::try_from(arg).map_err(|_| CborError::OutOfRange),
            (NEGATIVE, arg) => i64::try_from(arg)
                .map(|n| -1 - n)
                .map_err(|_| CborError::OutOfRange),
            _ => Err(CborError::WrongType),
        }
    }

    fn string(&mut self, major: u8) -> Result<&'a [u8], CborError> {
        let len = self.expect(major)?;
        self.take(usize::try_from(len).map_err(|_| CborError::Truncated)?)
    }

    /// A byte string.
    pub fn bytes(&mut self) -> Result<&'a [u8], CborError> {
        self.string(BYTES)
    }

    /// A byte string of exactly `N` bytes.
    pub fn bytes_exact<const N: usize>(&mut self) -> Result<[u8; N], CborError> {
        self.bytes()?.try_into().map_err(|_| CborError::OutOfRange)
    }

    /// A UTF-8 text string.
    pub fn text(&mut self) -> Result<&'a str, CborError> {
        core::str::from_utf8(self.string(TEXT)?).map_err(|_| CborError::OutOfRange)
    }

    /// `false` or `true`.
    pub fn bool(&mut self) -> Result<bool, CborError> {
        match self.head()? {
            (SIMPLE, FALSE) => Ok(false),
            (SIMPLE, TRUE) => Ok(true),
            (SIMPLE, _) => Err(CborError::Unsupported),
            _ => Err(CborError::WrongType),
        }
    }

    /// The number of pairs of a definite-length map.
    pub fn map(&mut self) -> Result<u64, CborError> {
        self.expect(MAP)
    }

    /// Skips one complete item (of a type this module supports) and returns
    /// its encoded bytes.
    pub fn skip(&mut self) -> Result<&'a [u8], CborError> {
        let start = self.pos;
        self.skip_at(0)?;
        self.bytes.get(start..self.pos).ok_or(CborError::Truncated)
    }

    fn skip_at(&mut self, depth: u8) -> Result<(), CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::Unsupported);
        }
        let (major, arg) = self.head()?;
        match major {
            UNSIGNED | NEGATIVE => Ok(()),
            BYTES | TEXT => {
                let len = usize::try_from(arg).map_err(|_| CborError::Truncated)?;
                let body = self.take(len)?;
                if major == TEXT && core::str::from_utf8(body).is_err() {
                    return Err(CborError::OutOfRange);
                }
                Ok(())
            }
            ARRAY => {
                for _ in 0..arg {
                    self.skip_at(depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let mut previous: Option<&[u8]> = None;
                for _ in 0..arg {
                    let key_start = self.pos;
                    self.skip_at(depth + 1)?;
                    let key = self.bytes.get(key_start..self.pos).unwrap_or_default();
                    check_order(previous, key)?;
                    previous = Some(key);
                    self.skip_at(depth + 1)?;
                }
                Ok(())
            }
            SIMPLE if arg == FALSE || arg == TRUE => Ok(()),
            _ => Err(CborError::Unsupported),
        }
    }
}

/// Keys of a deterministic map come in strictly increasing bytewise order
/// of their encodings (RFC 8949 §4.2.1).
fn check_order(previous: Option<&[u8]>, key: &[u8]) -> Result<(), CborError> {
    match previous {
        Some(previous) if previous >= key => Err(CborError::KeyOrder),
        _ => Ok(()),
    }
}

/// Most entries [`Entries`] holds.
pub const MAX_ENTRIES: usize = 16;

/// The pairs of an integer-keyed map, each value still encoded, in
/// canonical order.
///
/// # Invariants
/// Keys are strictly increasing in canonical order; `len <= MAX_ENTRIES`.
pub struct Entries<'a> {
    pairs: [(i64, &'a [u8]); MAX_ENTRIES],
    len: usize,
}

impl<'a> Entries<'a> {
    /// Reads a map whose keys are all integers (claims, COSE_Key).
    pub fn read(reader: &mut Reader<'a>) -> Result<Self, CborError> {
        let count = reader.map()?;
        let count = usize::try_from(count)
            .ok()
            .filter(|&n| n <= MAX_ENTRIES)
            .ok_or(CborError::OutOfRange)?;
        let mut entries = Entries {
            pairs: [(0, &[][..]); MAX_ENTRIES],
            len: 0,
        };
        let mut previous: Option<&[u8]> = None;
        for slot in entries.pairs.iter_mut().take(count) {
            let key_start = reader.pos;
            let key = reader.int()?;
            let encoded_key = reader.bytes.get(key_start..reader.pos).unwrap_or_default();
            check_order(previous, encoded_key)?;
            previous = Some(encoded_key);
            *slot = (key, reader.skip()?);
        }
        entries.len = count;
        Ok(entries)
    }

    /// The encoded value under `key`.
    pub fn get(&self, key: i64) -> Option<Reader<'a>> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| Reader::new(value))
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = i64> + '_ {
        self.iter().map(|(k, _)| k)
    }

    fn iter(&self) -> impl Iterator<Item = (i64, &'a [u8])> + '_ {
        self.pairs.iter().take(self.len).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(f: impl FnOnce(&mut Writer<'_>) -> Result<(), CborError>) -> std::vec::Vec<u8> {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        f(&mut w).unwrap();
        w.finish().to_vec()
    }

    #[test]
    fn heads_are_shortest() {
        assert_eq!(encode(|w| w.uint(23)), [0x17]);
        assert_eq!(encode(|w| w.uint(24)), [0x18, 24]);
        assert_eq!(encode(|w| w.uint(256)), [0x19, 1, 0]);
        assert_eq!(encode(|w| w.uint(65536)), [0x1a, 0, 1, 0, 0]);
        assert_eq!(encode(|w| w.uint(1 << 32)), [0x1b, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(encode(|w| w.int(-1)), [0x20]);
        assert_eq!(encode(|w| w.int(-65537)), [0x3a, 0, 1, 0, 0]);
        assert_eq!(
            encode(|w| w.int(i64::MIN)),
            [0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(encode(|w| w.bool(true)), [0xf5]);
    }

    #[test]
    fn reader_refuses_every_non_deterministic_form() {
        let refused: &[(&[u8], CborError)] = &[
            (&[0x18, 5], CborError::NotDeterministic),
            (&[0x19, 0, 5], CborError::NotDeterministic),
            (&[0x1b, 0, 0, 0, 0, 0, 0, 0, 5], CborError::NotDeterministic),
            (&[0x5f, 0x41, 0, 0xff], CborError::NotDeterministic),
            (&[0x1c], CborError::Unsupported),
            (&[0x19, 1], CborError::Truncated),
            (&[], CborError::Truncated),
        ];
        for (bytes, error) in refused {
            assert_eq!(
                Reader::new(bytes).skip().err(),
                Some(*error),
                "{bytes:02x?}"
            );
        }
        // A tag, a float, null.
        for bytes in [&[0xd2, 0x00][..], &[0xf9, 0, 0], &[0xf6]] {
            assert_eq!(
                Reader::new(bytes).skip().err(),
                Some(CborError::Unsupported)
            );
        }
        // Keys out of order or repeated.
        assert_eq!(
            Reader::new(&[0xa2, 0x02, 0, 0x01, 0]).skip().err(),
            Some(CborError::KeyOrder)
        );
        assert_eq!(
            Reader::new(&[0xa2, 0x01, 0, 0x01, 0]).skip().err(),
            Some(CborError::KeyOrder)
        );
        assert_eq!(
            Reader::new(&[0xa2, 0x20, 0, 0x01, 0]).skip().err(),
            Some(CborError::KeyOrder)
        );
        assert!(Reader::new(&[0xa2, 0x01, 0, 0x20, 0]).skip().is_ok());
        // Invalid UTF-8 in text.
        assert_eq!(
            Reader::new(&[0x61, 0xff]).text().err(),
            Some(CborError::OutOfRange)
        );
        // Too deep.
        let deep = [0x81u8; 12];
        assert_eq!(
            Reader::new(&deep).skip().err(),
            Some(CborError::Unsupported)
        );
    }

    #[test]
    fn integers_round_trip_at_the_edges() {
        for value in [
            0,
            1,
            23,
            24,
            255,
            256,
            65535,
            65536,
            -1,
            -24,
            -25,
            -256,
            -257,
            -65537,
            i64::MAX,
            i64::MIN,
        ] {
            let bytes = encode(|w| w.int(value));
            let mut r = Reader::new(&bytes);
            assert_eq!(r.int(), Ok(value));
            assert!(r.at_end());
        }
        // -2^64 does not fit an i64.
        let mut r = Reader::new(&[0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.int(), Err(CborError::OutOfRange));
    }
}
