//! The malformed records `chan-tool flood` sends to the payment service
//! (`u32 BE length || packet` framing, payment-app/src/service.rs).

/// The payment service's largest frame (`protocol::framing::MAX_FRAME_LEN`:
/// record header 8 + message 1024 + tag 16, plus 16). A unit test checks it
/// against the crate.
pub const MAX_FRAME_LEN: u32 = 1064;

/// A small deterministic generator (xorshift64*): the flood is reproducible
/// from its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is the one state xorshift never leaves.
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `lo..=hi`.
    pub fn range(&mut self, lo: u32, hi: u32) -> u32 {
        let span = u64::from(hi - lo) + 1;
        lo + (self.next_u64() % span) as u32
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Kinds of malformed record, used in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A well-framed packet of random bytes (the service answers with an
    /// error and keeps the connection).
    Garbage,
    /// A frame of length 0.
    Empty,
    /// A length prefix above the bound, then a few bytes (the stream is out
    /// of step: the service resets the connection).
    Oversized,
    /// Random bytes without any framing (the first four read as a length).
    Unframed,
    /// A header announcing more bytes than follow, then the client closes.
    Truncated,
}

pub const KINDS: [Kind; 5] = [
    Kind::Garbage,
    Kind::Empty,
    Kind::Oversized,
    Kind::Unframed,
    Kind::Truncated,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Garbage => "garbage",
            Kind::Empty => "empty",
            Kind::Oversized => "oversized",
            Kind::Unframed => "unframed",
            Kind::Truncated => "truncated",
        }
    }
}

/// The bytes of record number `i`.
pub fn record(i: u64, rng: &mut Rng) -> (Kind, Vec<u8>) {
    let kind = KINDS[(i % KINDS.len() as u64) as usize];
    let bytes = match kind {
        Kind::Garbage => {
            let len = rng.range(1, MAX_FRAME_LEN);
            let mut b = vec![0; 4 + len as usize];
            b[..4].copy_from_slice(&len.to_be_bytes());
            rng.fill(&mut b[4..]);
            b
        }
        Kind::Empty => 0u32.to_be_bytes().to_vec(),
        Kind::Oversized => {
            // Just above the bound, 64 KiB, or anything up to u32::MAX.
            let len = match rng.range(0, 2) {
                0 => MAX_FRAME_LEN + 1,
                1 => 0x1_0000,
                _ => rng.range(MAX_FRAME_LEN + 1, u32::MAX),
            };
            let mut b = vec![0; 4 + 64];
            b[..4].copy_from_slice(&len.to_be_bytes());
            rng.fill(&mut b[4..]);
            b
        }
        Kind::Unframed => {
            let mut b = vec![0; rng.range(1, 512) as usize];
            rng.fill(&mut b);
            // Make sure the first four bytes do not happen to read as a
            // length within the bound: this one must be out of step.
            if b.len() >= 4 {
                b[0] |= 0x80;
            }
            b
        }
        Kind::Truncated => {
            let len = rng.range(2, MAX_FRAME_LEN);
            let sent = rng.range(0, len - 1) as usize;
            let mut b = vec![0; 4 + sent];
            b[..4].copy_from_slice(&len.to_be_bytes());
            rng.fill(&mut b[4..]);
            b
        }
    };
    (kind, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(b: &[u8]) -> u32 {
        u32::from_be_bytes(b[..4].try_into().unwrap())
    }

    #[test]
    fn bound_matches_the_payment_service() {
        assert_eq!(MAX_FRAME_LEN as usize, protocol::framing::MAX_FRAME_LEN);
    }

    #[test]
    fn records_are_malformed_as_described() {
        let mut rng = Rng::new(42);
        for i in 0..500 {
            let (kind, b) = record(i, &mut rng);
            assert_eq!(kind, KINDS[(i % 5) as usize]);
            match kind {
                Kind::Garbage => {
                    let len = header(&b);
                    assert!((1..=MAX_FRAME_LEN).contains(&len));
                    assert_eq!(b.len(), 4 + len as usize);
                }
                Kind::Empty => assert_eq!(b, [0, 0, 0, 0]),
                Kind::Oversized => assert!(header(&b) > MAX_FRAME_LEN),
                Kind::Unframed => {
                    assert!(!b.is_empty());
                    if b.len() >= 4 {
                        assert!(header(&b) > MAX_FRAME_LEN);
                    }
                }
                Kind::Truncated => assert!((b.len() - 4) < header(&b) as usize),
            }
        }
    }

    #[test]
    fn the_seed_decides() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..20).map(|i| record(i, &mut rng).1).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let mut rng = Rng::new(0);
        assert_ne!(rng.next_u64(), rng.next_u64());
        for _ in 0..1000 {
            assert!((3..=5).contains(&rng.range(3, 5)));
        }
        let _ = rng.range(0, u32::MAX); // the full span does not overflow
    }
}
