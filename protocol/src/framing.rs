//! Packets on a byte stream (vsock `SOCK_STREAM`, a Unix socket): each
//! travels as `u32 BE length || packet`, with `length <= MAX_FRAME_LEN`.
//!
//! Both ends use these: the bridge on the rich side, the payment service on
//! the secure side (its reassembling reader is `payment_app::service::
//! FrameReader`). A header announcing more than [`MAX_FRAME_LEN`] means the
//! stream is out of step or hostile: the connection is closed.

use crate::message::MAX_PACKET_LEN;

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 4;
/// Largest packet a frame may carry.
pub const MAX_FRAME_LEN: usize = MAX_PACKET_LEN;

/// A frame header announced a packet longer than [`MAX_FRAME_LEN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTooLong {
    /// The announced length.
    pub len: u32,
}

/// The 4-byte header for a packet of `len` bytes; `None` when too long.
pub fn encode_frame_header(len: usize) -> Option<[u8; FRAME_HEADER_LEN]> {
    if len > MAX_FRAME_LEN {
        return None;
    }
    u32::try_from(len).ok().map(u32::to_be_bytes)
}

/// The packet length a frame header announces, checked against the bound.
pub fn decode_frame_header(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, FrameTooLong> {
    let len = u32::from_be_bytes(header);
    match usize::try_from(len) {
        Ok(n) if n <= MAX_FRAME_LEN => Ok(n),
        _ => Err(FrameTooLong { len }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_up_to_the_bound_and_refuse_beyond() {
        for len in [0, 1, 300, MAX_FRAME_LEN] {
            let header = encode_frame_header(len).unwrap();
            assert_eq!(decode_frame_header(header), Ok(len));
        }
        assert_eq!(encode_frame_header(MAX_FRAME_LEN + 1), None);
        let too_long = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        assert_eq!(
            decode_frame_header(too_long),
            Err(FrameTooLong {
                len: MAX_FRAME_LEN as u32 + 1
            })
        );
        assert_eq!(
            decode_frame_header([0xff; 4]),
            Err(FrameTooLong { len: u32::MAX })
        );
    }
}
