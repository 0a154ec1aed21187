//! The secure VM's vsock services, one definition for both ends: the
//! payment service (secure-os) and the wallet's bridge (android-bridge).
//! The board's channel policy (`boards/*/board.toml`, `[[channel]]` rules)
//! names the same ports as the ones the rich VM may reach.

/// The payment service: `u32 BE length || packet` frames
/// ([`crate::framing`]) carrying [`crate::message`] packets.
pub const PAYMENT_PORT: u32 = 7100;
/// The echo service: every byte sent back (benchmarks, `chan-tool`).
pub const ECHO_PORT: u32 = 7101;
