//! The rollback counter mvmm keeps for this VM (see `mvmm_core::rpmb`):
//! frames authenticated under a key from this image's sealing CDI, carried
//! by the RPMB hypercall. The secure storage keeps its committed rollback
//! value in its sealed record and compares it with this counter: a record
//! older than the counter is a restored copy.

use mvmm_core::rpmb::{self, Counter, FRAME_LEN, Frame, Key, ResponseError};

/// Carries one frame to mvmm and back (the RPMB hypercall on the target).
pub trait FrameLink {
    /// Sends `frame`; on return it holds mvmm's response.
    fn exchange(&mut self, frame: &mut [u8; FRAME_LEN]) -> Result<(), &'static str>;
}

/// Why the counter cannot be read or advanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackError {
    /// mvmm has no counter for this VM (no disk, or it did not answer).
    Unavailable(&'static str),
    /// The answer did not come from mvmm with this image's key, or
    /// answered another request.
    Untrusted(ResponseError),
}

impl core::fmt::Display for RollbackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RollbackError::Unavailable(why) => write!(f, "no rollback counter ({why})"),
            RollbackError::Untrusted(ResponseError::Forged) => {
                write!(f, "the counter's answer does not authenticate")
            }
            RollbackError::Untrusted(ResponseError::Replayed) => {
                write!(f, "the counter's answer is a replay")
            }
            RollbackError::Untrusted(ResponseError::Refused(code)) => {
                write!(f, "mvmm refused the counter update (result {code})")
            }
        }
    }
}

/// This VM's end of the counter.
pub struct RollbackCounter<L: FrameLink> {
    link: L,
    key: Key,
}

impl<L: FrameLink> RollbackCounter<L> {
    /// The counter reached through `link`, with the key of `cdi_seal`.
    pub fn new(link: L, cdi_seal: &[u8; 32]) -> Self {
        RollbackCounter {
            link,
            key: Key::for_frames(cdi_seal),
        }
    }

    fn exchange(&mut self, request: &Frame) -> Result<Counter, RollbackError> {
        let mut frame = request.seal(&self.key);
        self.link
            .exchange(&mut frame)
            .map_err(RollbackError::Unavailable)?;
        rpmb::check_response(request, &frame, &self.key).map_err(RollbackError::Untrusted)
    }

    /// The value mvmm holds; `nonce` must be fresh (from the entropy
    /// source), so an old answer cannot be replayed.
    pub fn read(&mut self, nonce: [u8; 16]) -> Result<u64, RollbackError> {
        self.exchange(&Frame::read(nonce)).map(|c| c.value)
    }

    /// Raises the counter to `value` (never lowers it).
    pub fn advance_to(&mut self, value: u64, nonce: [u8; 16]) -> Result<u64, RollbackError> {
        let current = self.exchange(&Frame::read(nonce))?;
        if current.value >= value {
            return Ok(current.value);
        }
        self.exchange(&Frame::advance(current.write_counter, value))
            .map(|c| c.value)
    }
}

/// The counter as the secure store uses it (`secure_store::RollbackCounter`),
/// with read nonces from `nonces`.
pub struct StoreCounter<L: FrameLink, R> {
    counter: RollbackCounter<L>,
    nonces: R,
}

impl<L: FrameLink, R: rand_core::Rng> StoreCounter<L, R> {
    pub fn new(counter: RollbackCounter<L>, nonces: R) -> Self {
        StoreCounter { counter, nonces }
    }

    fn nonce(&mut self) -> [u8; 16] {
        let mut nonce = [0u8; 16];
        self.nonces.fill_bytes(&mut nonce);
        nonce
    }
}

impl<L: FrameLink, R: rand_core::Rng> secure_store::RollbackCounter for StoreCounter<L, R> {
    fn read(&mut self) -> Result<u64, secure_store::CounterError> {
        let nonce = self.nonce();
        self.counter.read(nonce).map_err(store_error)
    }

    fn advance_to(&mut self, value: u64) -> Result<(), secure_store::CounterError> {
        let nonce = self.nonce();
        self.counter
            .advance_to(value, nonce)
            .map(|_| ())
            .map_err(store_error)
    }
}

fn store_error(e: RollbackError) -> secure_store::CounterError {
    match e {
        RollbackError::Unavailable(_) => secure_store::CounterError::Unavailable { code: 0 },
        RollbackError::Untrusted(_) => secure_store::CounterError::Unauthenticated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mvmm's side in process, optionally misbehaving.
    struct Fake {
        held: Counter,
        key: Key,
        /// Answer with this old response instead (a replay).
        replay: Option<[u8; FRAME_LEN]>,
        last: Option<[u8; FRAME_LEN]>,
    }

    impl FrameLink for &mut Fake {
        fn exchange(&mut self, frame: &mut [u8; FRAME_LEN]) -> Result<(), &'static str> {
            let response = self.held.handle(frame, &self.key, |_| true);
            self.last = Some(response);
            *frame = self.replay.unwrap_or(response);
            Ok(())
        }
    }

    fn fake(cdi: &[u8; 32]) -> Fake {
        Fake {
            held: Counter::default(),
            key: Key::for_frames(cdi),
            replay: None,
            last: None,
        }
    }

    #[test]
    fn the_counter_reads_and_advances_through_mvmm() {
        let cdi = [4u8; 32];
        let mut mvmm = fake(&cdi);
        let mut counter = RollbackCounter::new(&mut mvmm, &cdi);
        assert_eq!(counter.read([1; 16]), Ok(0));
        assert_eq!(counter.advance_to(5, [2; 16]), Ok(5));
        assert_eq!(counter.advance_to(3, [3; 16]), Ok(5), "never lowered");
        assert_eq!(counter.read([4; 16]), Ok(5));
        drop(counter);
        assert_eq!(mvmm.held.value, 5);
    }

    #[test]
    fn another_images_key_or_a_replayed_answer_is_not_trusted() {
        let mut mvmm = fake(&[4u8; 32]);
        let mut stranger = RollbackCounter::new(&mut mvmm, &[5u8; 32]);
        assert_eq!(
            stranger.advance_to(9, [1; 16]),
            Err(RollbackError::Untrusted(ResponseError::Forged))
        );
        drop(stranger);
        assert_eq!(mvmm.held.value, 0);
        // An old answer (value 0) replayed after the counter moved on.
        let cdi = [4u8; 32];
        let mut counter = RollbackCounter::new(&mut mvmm, &cdi);
        assert_eq!(counter.read([1; 16]), Ok(0));
        drop(counter);
        let old = mvmm.last;
        let mut counter = RollbackCounter::new(&mut mvmm, &cdi);
        assert_eq!(counter.advance_to(2, [2; 16]), Ok(2));
        drop(counter);
        mvmm.replay = old;
        let mut counter = RollbackCounter::new(&mut mvmm, &cdi);
        assert_eq!(
            counter.read([3; 16]),
            Err(RollbackError::Untrusted(ResponseError::Replayed))
        );
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use secure_store::RollbackCounter as _;

    struct InProcess {
        held: Counter,
        key: Key,
    }

    impl FrameLink for &mut InProcess {
        fn exchange(&mut self, frame: &mut [u8; FRAME_LEN]) -> Result<(), &'static str> {
            *frame = self.held.handle(frame, &self.key, |_| true);
            Ok(())
        }
    }

    #[test]
    fn the_store_reads_and_advances_mvmms_counter() {
        let cdi = [6u8; 32];
        let mut mvmm = InProcess {
            held: Counter::default(),
            key: Key::for_frames(&cdi),
        };
        let mut counter = StoreCounter::new(
            RollbackCounter::new(&mut mvmm, &cdi),
            ChaCha20Rng::seed_from_u64(1),
        );
        assert_eq!(counter.read(), Ok(0));
        assert_eq!(counter.advance_to(3), Ok(()));
        assert_eq!(counter.read(), Ok(3));
        drop(counter);
        assert_eq!(mvmm.held.value, 3);
        let mut other = StoreCounter::new(
            RollbackCounter::new(&mut mvmm, &[7u8; 32]),
            ChaCha20Rng::seed_from_u64(2),
        );
        assert_eq!(
            other.read(),
            Err(secure_store::CounterError::Unauthenticated)
        );
    }
}
