//! Arm's True Random Number Generator firmware interface (SMCCC TRNG,
//! Arm DEN0098), which mvmm offers the secure VM.
//!
//! The entropy device (a virtio-rng on QEMU `virt`) does DMA, so no VM may
//! own it without an IOMMU: mvmm drives it at EL2 and hands out its output
//! through these calls instead. Linux's and any firmware's TRNG clients
//! speak the same ABI. A VM the board does not entitle gets NOT_SUPPORTED
//! for every call, as when no TRNG exists.

/// Function ids (SMCCC standard secure service range).
pub mod fid {
    pub const VERSION: u64 = 0x8400_0050;
    pub const FEATURES: u64 = 0x8400_0051;
    pub const GET_UUID: u64 = 0x8400_0052;
    pub const RND32: u64 = 0x8400_0053;
    pub const RND64: u64 = 0xc400_0053;
}

/// Version 1.0 (major in bits 30:16, minor in 15:0).
pub const VERSION_1_0: u64 = 0x1_0000;

/// Return codes.
pub mod ret {
    pub const SUCCESS: u64 = 0;
    pub const NOT_SUPPORTED: u64 = -1i64 as u64;
    pub const INVALID_PARAMETERS: u64 = -2i64 as u64;
    pub const NO_ENTROPY: u64 = -3i64 as u64;
}

/// mvmm's TRNG implementation UUID (random, fixed; w0..w3 of GET_UUID). Its
/// first word is not 0xffff_ffff, which would read as NOT_SUPPORTED.
pub const UUID: [u32; 4] = [0x6d76_6d6d, 0x1f3a_4c52, 0x9e0b_7d21, 0x5a8c_e4f6];

/// Most bits one RND32 / RND64 call returns.
pub const MAX_BITS_32: u64 = 96;
pub const MAX_BITS_64: u64 = 192;

/// Bytes of entropy the largest request needs.
pub const MAX_BYTES: usize = 24;

/// A decoded TRNG call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    Version,
    Features {
        fid: u64,
    },
    GetUuid,
    /// `bits` random bits in w1..w3 (RND32) or x1..x3 (RND64).
    Random {
        bits: u64,
        wide: bool,
    },
}

/// Decodes x0..x1 if x0 is a TRNG function id.
pub fn decode(x0: u64, x1: u64) -> Option<Call> {
    Some(match x0 {
        fid::VERSION => Call::Version,
        fid::FEATURES => Call::Features { fid: x1 },
        fid::GET_UUID => Call::GetUuid,
        // SMCCC32 calls use only the low 32 bits of their arguments.
        fid::RND32 => Call::Random {
            bits: x1 & 0xffff_ffff,
            wide: false,
        },
        fid::RND64 => Call::Random {
            bits: x1,
            wide: true,
        },
        _ => return None,
    })
}

/// What a call returns in x0..x3, given `entropy` (24 bytes the caller
/// filled from the device, or `None` when it could not).
///
/// Only `bits` bits are returned, right-aligned: for RND64 x3 holds bits
/// 63:0, x2 bits 127:64, x1 bits 191:128; for RND32 the same in 32-bit
/// words w3, w2, w1. Unrequested bits are zero.
pub fn answer(call: Call, entropy: Option<&[u8; MAX_BYTES]>) -> [u64; 4] {
    match call {
        Call::Version => [VERSION_1_0, 0, 0, 0],
        Call::Features { fid } => match fid {
            fid::VERSION | fid::FEATURES | fid::GET_UUID | fid::RND32 | fid::RND64 => {
                [ret::SUCCESS, 0, 0, 0]
            }
            _ => [ret::NOT_SUPPORTED, 0, 0, 0],
        },
        Call::GetUuid => UUID.map(u64::from),
        Call::Random { bits, wide } => {
            let max = if wide { MAX_BITS_64 } else { MAX_BITS_32 };
            if bits == 0 || bits > max {
                return [ret::INVALID_PARAMETERS, 0, 0, 0];
            }
            let Some(entropy) = entropy else {
                return [ret::NO_ENTROPY, 0, 0, 0];
            };
            let word = |i: usize| {
                u64::from_le_bytes(entropy[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]))
            };
            let width = if wide { 64 } else { 32 };
            // Registers x3, x2, x1 from the least significant bits up.
            let mut out = [ret::SUCCESS, 0, 0, 0];
            let mut left = bits;
            for reg in (1..=3).rev() {
                let take = left.min(width);
                let mask = if take == 64 {
                    u64::MAX
                } else {
                    (1u64 << take) - 1
                };
                out[reg] = word(3 - reg) & mask;
                left -= take;
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: [u8; MAX_BYTES] = [0xff; MAX_BYTES];

    #[test]
    fn version_features_and_uuid() {
        assert_eq!(
            answer(decode(fid::VERSION, 0).unwrap(), None)[0],
            VERSION_1_0
        );
        for f in [
            fid::VERSION,
            fid::FEATURES,
            fid::GET_UUID,
            fid::RND32,
            fid::RND64,
        ] {
            assert_eq!(answer(Call::Features { fid: f }, None)[0], ret::SUCCESS);
        }
        assert_eq!(
            answer(Call::Features { fid: 0x8400_0054 }, None)[0],
            ret::NOT_SUPPORTED
        );
        let uuid = answer(Call::GetUuid, None);
        assert_ne!(uuid[0], 0xffff_ffff);
        assert_eq!(decode(0x8400_0054, 0), None);
        assert_eq!(decode(0xc600_0001, 0), None);
    }

    #[test]
    fn returns_exactly_the_bits_asked_for() {
        let r = answer(decode(fid::RND64, 192).unwrap(), Some(&E));
        assert_eq!(r, [0, u64::MAX, u64::MAX, u64::MAX]);
        let r = answer(decode(fid::RND64, 70).unwrap(), Some(&E));
        assert_eq!(r, [0, 0, 0x3f, u64::MAX]);
        let r = answer(decode(fid::RND64, 1).unwrap(), Some(&E));
        assert_eq!(r, [0, 0, 0, 1]);
        let r = answer(decode(fid::RND32, 96).unwrap(), Some(&E));
        assert_eq!(r, [0, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff]);
        // RND32 ignores the high half of w1.
        let r = answer(decode(fid::RND32, 1 << 32 | 40).unwrap(), Some(&E));
        assert_eq!(r, [0, 0, 0xff, 0xffff_ffff]);
    }

    #[test]
    fn refuses_bad_sizes_and_reports_no_entropy() {
        for (f, bits) in [
            (fid::RND64, 0),
            (fid::RND64, 193),
            (fid::RND32, 97),
            (fid::RND32, 0),
            (fid::RND64, u64::MAX),
        ] {
            assert_eq!(
                answer(decode(f, bits).unwrap(), Some(&E))[0],
                ret::INVALID_PARAMETERS,
                "{f:#x} {bits}"
            );
        }
        assert_eq!(
            answer(decode(fid::RND64, 64).unwrap(), None),
            [ret::NO_ENTROPY, 0, 0, 0]
        );
    }
}
