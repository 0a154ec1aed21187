//! The record store against a simulated NOR flash: round trips, every
//! malformed slot, rollback, power cuts at every byte, arbitrary contents.

use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use secure_store::record::{HEADER_LEN, MAGIC, TAG_LEN};
use secure_store::{
    CounterError, Flash, FlashError, NoRollbackProtection, RecordError, RollbackCounter, SimFlash,
    SlotState, Store, StoreError, TestCounter,
};

const ROOT: [u8; 32] = [7; 32];
const BLOCK: usize = 2048;

fn flash() -> SimFlash {
    SimFlash::new(4, BLOCK, 4)
}

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

type TestStore<'a> = Store<&'a mut SimFlash, &'a mut TestCounter, ChaCha20Rng>;

fn open<'a>(f: &'a mut SimFlash, c: &'a mut TestCounter) -> Result<TestStore<'a>, StoreError> {
    Store::open(f, c, rng(1), &ROOT)
}

/// A flash holding `n` commits of `payload(i)`; returns it and the counter.
fn with_commits(n: u64) -> (SimFlash, TestCounter) {
    let (mut f, mut c) = (flash(), TestCounter::default());
    {
        let mut s = open(&mut f, &mut c).unwrap();
        for i in 1..=n {
            s.commit(&payload(i)).unwrap();
        }
    }
    (f, c)
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("state number {i}: ").into_bytes();
    p.extend((0..200u8).map(|b| b.wrapping_mul(i as u8)));
    p
}

#[test]
fn a_blank_flash_opens_empty_and_commits_alternate_slots() {
    let (mut f, mut c) = (flash(), TestCounter::default());
    let mut s = open(&mut f, &mut c).unwrap();
    assert_eq!(s.payload(), None);
    assert_eq!(s.report().current, None);
    assert!(!s.report().erased_after_use);
    assert_eq!(
        s.report().slots,
        [SlotState::Invalid(RecordError::Blank); 2]
    );
    for i in 1..=5 {
        s.commit(&payload(i)).unwrap();
        assert_eq!(s.generation(), i);
        assert_eq!(s.payload(), Some(payload(i).as_slice()));
    }
    drop(s);
    assert_eq!(c.value, 5, "the counter follows every commit");
    let s = open(&mut f, &mut c).unwrap();
    assert_eq!(s.payload(), Some(payload(5).as_slice()));
    assert_eq!(s.report().current, Some((1, 5, 5)));
    assert_eq!(
        s.report().slots,
        [
            SlotState::Valid {
                generation: 4,
                rollback: 4
            },
            SlotState::Valid {
                generation: 5,
                rollback: 5
            }
        ]
    );
}

#[test]
fn records_are_sealed_and_nonces_never_repeat() {
    let (mut f, mut c) = (flash(), TestCounter::default());
    let mut s = open(&mut f, &mut c).unwrap();
    let secret = b"credential secret 0123456789abcdef";
    s.commit(secret).unwrap();
    s.commit(secret).unwrap();
    s.commit(secret).unwrap();
    let raw = s.flash_mut().bytes().to_vec();
    assert!(
        !raw.windows(secret.len()).any(|w| w == secret),
        "plaintext on flash"
    );
    // Generations 1 and 3 both went to slot B; 2 to A: every nonce differs.
    let nonce = |slot: usize| raw[slot * BLOCK + 24..slot * BLOCK + 36].to_vec();
    assert_ne!(nonce(0), nonce(1));
    drop(s);
    let mut c2 = c;
    let s = open(&mut f, &mut c2).unwrap();
    assert_eq!(s.payload(), Some(&secret[..]));
}

#[test]
fn another_root_secret_cannot_open_the_store() {
    let (mut f, mut c) = with_commits(2);
    let err = Store::open(&mut f, &mut c, rng(1), &[8; 32])
        .err()
        .expect("another key must fail");
    assert_eq!(
        err,
        StoreError::Unreadable {
            a: RecordError::BadTag,
            b: RecordError::BadTag
        }
    );
    assert!(
        err.to_string().contains("sealed by another secure-os"),
        "{err}"
    );
}

/// Opens after `tamper` touched slot B (generation 3) of a 3-commit flash:
/// slot A (generation 2) must win, and slot B must show `expected`.
fn slot_b_fails_with(tamper: impl FnOnce(&mut [u8]), expected: RecordError) {
    let (mut f, mut c) = with_commits(3);
    tamper(&mut f.bytes_mut()[BLOCK..2 * BLOCK]);
    // The counter is at 3: going back to 2 is a rollback, so use a counter
    // that has not seen generation 3 to look at the slot's error alone.
    c.value = 2;
    let s = open(&mut f, &mut c).unwrap();
    assert_eq!(s.report().slots[1], SlotState::Invalid(expected));
    assert_eq!(s.payload(), Some(payload(2).as_slice()));
    assert_eq!(s.generation(), 2);
}

#[test]
fn each_malformed_slot_has_its_own_error() {
    slot_b_fails_with(|b| b[0] ^= 1, RecordError::BadMagic);
    slot_b_fails_with(|b| b[8] = 2, RecordError::UnsupportedVersion { version: 2 });
    slot_b_fails_with(|b| b[11] = 1, RecordError::BadHeader);
    slot_b_fails_with(|b| b[10] = 0, RecordError::WrongSlot { found: 0, slot: 1 });
    slot_b_fails_with(
        |b| b[16] = 4,
        RecordError::WrongGeneration {
            generation: 4,
            slot: 1,
        },
    );
    slot_b_fails_with(
        |b| b[16..24].fill(0),
        RecordError::WrongGeneration {
            generation: 0,
            slot: 1,
        },
    );
    slot_b_fails_with(
        |b| b[12..16].copy_from_slice(&(BLOCK as u32).to_le_bytes()),
        RecordError::Truncated { sealed_len: BLOCK },
    );
    slot_b_fails_with(
        |b| b[12..16].copy_from_slice(&3u32.to_le_bytes()),
        RecordError::Truncated { sealed_len: 3 },
    );
    // A shorter length that still fits: the tag is read from the wrong place.
    slot_b_fails_with(|b| b[12] -= 1, RecordError::BadTag);
    // One ciphertext bit, one tag bit, one nonce bit, a torn tail.
    slot_b_fails_with(|b| b[HEADER_LEN + 3] ^= 0x10, RecordError::BadTag);
    let len = HEADER_LEN + 8 + payload(3).len() + TAG_LEN;
    slot_b_fails_with(|b| b[len - 1] ^= 1, RecordError::BadTag);
    slot_b_fails_with(|b| b[30] ^= 1, RecordError::BadTag);
    slot_b_fails_with(|b| b[len - 5..].fill(0xff), RecordError::BadTag);
    slot_b_fails_with(|b| b.fill(0xff), RecordError::Blank);
}

#[test]
fn a_record_copied_into_the_other_slot_is_refused() {
    let (mut f, mut c) = with_commits(2);
    let bytes = f.bytes_mut();
    let (a, b) = bytes.split_at_mut(BLOCK);
    b[..BLOCK].copy_from_slice(a);
    c.value = 2;
    let s = open(&mut f, &mut c).unwrap();
    assert_eq!(
        s.report().slots[1],
        SlotState::Invalid(RecordError::WrongSlot { found: 0, slot: 1 })
    );
    // Rewriting the slot byte as well breaks the tag (the header is AAD).
    let (mut f, mut c) = with_commits(2);
    let bytes = f.bytes_mut();
    let (a, b) = bytes.split_at_mut(BLOCK);
    b[..BLOCK].copy_from_slice(a);
    b[10] = 1;
    b[16] = 3;
    c.value = 2;
    let s = open(&mut f, &mut c).unwrap();
    assert_eq!(s.report().slots[1], SlotState::Invalid(RecordError::BadTag));
}

#[test]
fn both_slots_broken_and_not_blank_is_an_error() {
    let (mut f, mut c) = with_commits(2);
    f.bytes_mut()[0] ^= 1;
    f.bytes_mut()[BLOCK + HEADER_LEN] ^= 1;
    let err = open(&mut f, &mut c).err().unwrap();
    assert_eq!(
        err,
        StoreError::Unreadable {
            a: RecordError::BadMagic,
            b: RecordError::BadTag
        }
    );
}

#[test]
fn an_older_copy_of_the_flash_is_refused() {
    let (mut f, mut c) = with_commits(3);
    let old = f.clone();
    {
        let mut s = open(&mut f, &mut c).unwrap();
        s.commit(&payload(4)).unwrap();
        s.commit(&payload(5)).unwrap();
    }
    assert_eq!(c.value, 5);
    let mut restored = old;
    let err = open(&mut restored, &mut c).err().unwrap();
    assert_eq!(
        err,
        StoreError::RolledBack {
            generation: 3,
            rollback: 3,
            counter: 5
        }
    );
    assert!(err.to_string().starts_with("rollback detected"), "{err}");
    // Erasing the newest slot to let the older one win is a rollback too.
    let mut f2 = f.clone();
    f2.erase_block(BLOCK).unwrap();
    assert!(matches!(
        open(&mut f2, &mut c).err(),
        Some(StoreError::RolledBack { generation: 4, .. })
    ));
    // Without a real counter the same restore goes through (hence the name).
    let mut restored = f.clone();
    restored.bytes_mut()[BLOCK..2 * BLOCK].fill(0xff);
    let s = Store::open(
        &mut restored,
        NoRollbackProtection::default(),
        rng(1),
        &ROOT,
    )
    .unwrap();
    assert_eq!(s.generation(), 4);
    assert!(!s.report().rollback_protected);
}

#[test]
fn an_erased_flash_after_use_starts_empty_above_the_counter() {
    let (mut f, mut c) = with_commits(4);
    f.erase_block(0).unwrap();
    f.erase_block(BLOCK).unwrap();
    let mut s = open(&mut f, &mut c).unwrap();
    assert!(s.report().erased_after_use);
    assert_eq!(s.payload(), None);
    s.commit(b"fresh").unwrap();
    assert_eq!((s.generation(), s.rollback()), (1, 5));
    drop(s);
    assert_eq!(c.value, 5);
}

#[test]
fn a_lost_counter_update_catches_up_at_open() {
    let (mut f, mut c) = with_commits(2);
    c.fail_advance = true;
    {
        let mut s = open(&mut f, &mut c).unwrap();
        let err = s.commit(&payload(3)).unwrap_err();
        assert_eq!(
            err,
            StoreError::CounterBehind {
                rollback: 3,
                error: CounterError::Unavailable { code: 2 }
            }
        );
        assert_eq!(s.last_error(), Some(err));
        // The record is committed all the same.
        assert_eq!(s.generation(), 3);
    }
    c.fail_advance = false;
    assert_eq!(c.value, 2);
    let s = open(&mut f, &mut c).unwrap();
    assert!(s.report().counter_caught_up);
    assert_eq!(s.generation(), 3);
    drop(s);
    assert_eq!(c.value, 3);
    c.fail_read = true;
    assert!(matches!(
        open(&mut f, &mut c).err(),
        Some(StoreError::Counter(_))
    ));
}

#[test]
fn oversized_payloads_and_tiny_flashes_are_refused() {
    let (mut f, mut c) = (flash(), TestCounter::default());
    let mut s = open(&mut f, &mut c).unwrap();
    assert_eq!(
        s.commit(&[0; BLOCK]).unwrap_err(),
        StoreError::PayloadTooLarge { len: BLOCK }
    );
    assert_eq!(
        s.commit(&vec![0; secure_store::MAX_PAYLOAD + 1])
            .unwrap_err(),
        StoreError::PayloadTooLarge {
            len: secure_store::MAX_PAYLOAD + 1
        }
    );
    assert_eq!(s.payload(), None);
    let mut tiny = SimFlash::new(1, BLOCK, 4);
    assert!(matches!(
        Store::open(&mut tiny, TestCounter::default(), rng(1), &ROOT).err(),
        Some(StoreError::Geometry { .. })
    ));
}

/// A flash with a stuck-at-zero word 40 bytes into every program.
struct Stuck<'a>(&'a mut SimFlash);

impl Flash for Stuck<'_> {
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    fn erase_block_size(&self) -> usize {
        self.0.erase_block_size()
    }
    fn write_unit(&self) -> usize {
        self.0.write_unit()
    }
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        self.0.read(offset, buf)
    }
    fn program(&mut self, offset: usize, data: &[u8]) -> Result<(), FlashError> {
        self.0.program(offset, data)?;
        self.0.program(offset + HEADER_LEN, &[0; 4])
    }
    fn erase_block(&mut self, offset: usize) -> Result<(), FlashError> {
        self.0.erase_block(offset)
    }
}

#[test]
fn a_flash_that_does_not_keep_what_was_written_fails_verification() {
    let (mut f, mut c) = with_commits(1);
    {
        let mut s = Store::open(Stuck(&mut f), &mut c, rng(2), &ROOT).unwrap();
        let err = s.commit(&payload(2)).unwrap_err();
        assert_eq!(err, StoreError::VerifyFailed { slot: 0 });
        assert_eq!(s.generation(), 1, "the failed commit did not count");
        assert_eq!(s.payload(), Some(payload(1).as_slice()));
    }
    let s = open(&mut f, &mut c).unwrap();
    assert_eq!(s.generation(), 1);
    assert_eq!(s.payload(), Some(payload(1).as_slice()));
}

/// Bytes a commit of `payload` programs plus its one erase (the budget
/// [`SimFlash::cut_power_after`] counts).
fn commit_cost(p: &[u8]) -> usize {
    (HEADER_LEN + 8 + p.len() + TAG_LEN).next_multiple_of(4) + 1
}

#[test]
fn a_power_cut_at_every_byte_of_a_commit_loses_no_committed_state() {
    // From an empty flash (the first commit), and with the current record in
    // slot A and in slot B.
    let (mut cuts, mut expected_cuts) = (0, 0);
    for before in 0..=3u64 {
        let (f0, c0) = with_commits(before);
        let new = payload(100 + before);
        expected_cuts += commit_cost(&new);
        for budget in 0..=commit_cost(&new) {
            let (mut f, mut c) = (f0.clone(), c0);
            let result = {
                let mut s = open(&mut f, &mut c).unwrap();
                f_cut(&mut s, budget);
                s.commit(&new)
            };
            f.power_on();
            let s = open(&mut f, &mut c)
                .unwrap_or_else(|e| panic!("no open after a cut at {budget}: {e}"));
            let got = s.payload().map(<[u8]>::to_vec);
            let old = (before > 0).then(|| payload(before));
            if result.is_ok() {
                assert_eq!(
                    got.as_ref(),
                    Some(&new),
                    "a commit that returned Ok was lost"
                );
            } else {
                assert!(
                    got == old || got.as_ref() == Some(&new),
                    "after a cut at byte {budget}: {got:?}"
                );
                cuts += 1;
            }
            // Whatever survived, the store keeps working.
            drop(s);
            let mut s = open(&mut f, &mut c).unwrap();
            s.commit(b"after").unwrap();
        }
    }
    // Every budget short of the whole commit cut it: one erase and every
    // byte of the record.
    assert_eq!(cuts, expected_cuts);
}

fn f_cut(s: &mut Store<&mut SimFlash, &mut TestCounter, ChaCha20Rng>, budget: usize) {
    s.flash_mut().cut_power_after(budget);
}

#[test]
fn repeated_power_cuts_in_a_row_never_go_back() {
    // Cuts during consecutive commits, each at a pseudo-random byte: the
    // store always opens with the newest committed payload or the one in
    // flight.
    let (mut f, mut c) = (flash(), TestCounter::default());
    let mut committed: Option<Vec<u8>> = None;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..500u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let new = payload(round);
        let budget = (x as usize) % (commit_cost(&new) + 40);
        let ok = {
            let mut s = open(&mut f, &mut c).unwrap();
            assert_eq!(s.payload().map(<[u8]>::to_vec), committed, "round {round}");
            s.flash_mut().cut_power_after(budget);
            s.commit(&new).is_ok()
        };
        f.power_on();
        let s = open(&mut f, &mut c).unwrap();
        let got = s.payload().map(<[u8]>::to_vec);
        if ok {
            assert_eq!(got.as_ref(), Some(&new));
        } else {
            assert!(got == committed || got.as_ref() == Some(&new));
        }
        committed = got;
    }
}

fn any_flash() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Random bytes.
        proptest::collection::vec(any::<u8>(), 2 * 512),
        // Valid records with random bytes overwritten.
        (
            proptest::collection::vec((0..2 * 512usize, any::<u8>()), 0..8),
            0..4u64
        )
            .prop_map(|(edits, n)| {
                let mut f = SimFlash::new(2, 512, 4);
                {
                    let mut s = Store::open(&mut f, TestCounter::default(), rng(3), &ROOT).unwrap();
                    for i in 1..=n {
                        s.commit(&payload(i)[..100]).unwrap();
                    }
                }
                let mut bytes = f.bytes().to_vec();
                for (at, byte) in edits {
                    bytes[at] = byte;
                }
                bytes
            }),
        // Headers with the right magic and random fields.
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<u8>()).prop_map(|(h0, h1, fill)| {
            let mut bytes = vec![fill; 2 * 512];
            for (slot, h) in [(0, h0), (1, h1)] {
                bytes[slot * 512..slot * 512 + 8].copy_from_slice(&MAGIC);
                bytes[slot * 512 + 8..slot * 512 + 40].copy_from_slice(&h);
            }
            bytes
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_flash_contents_never_panic_the_opener(bytes in any_flash(), counter in 0..6u64) {
        let mut f = SimFlash::with_contents(bytes, 512, 4);
        let mut c = TestCounter { value: counter, ..TestCounter::default() };
        if let Ok(mut s) = Store::open(&mut f, &mut c, rng(4), &ROOT) {
            let _ = s.payload();
            // A store that opened can always commit and reopen.
            s.commit(b"next").unwrap();
            drop(s);
            let s = Store::open(&mut f, &mut c, rng(5), &ROOT).unwrap();
            prop_assert_eq!(s.payload(), Some(&b"next"[..]));
        }
    }
}

#[test]
fn the_counter_trait_works_through_references() {
    let mut c = TestCounter::default();
    {
        let r: &mut TestCounter = &mut c;
        r.advance_to(4).unwrap();
        r.advance_to(2).unwrap();
        assert_eq!(r.read().unwrap(), 4);
    }
    assert_eq!(c.advances, 1);
    let mut n = NoRollbackProtection::default();
    n.advance_to(9).unwrap();
    assert_eq!(n.read().unwrap(), 9);
    assert!(!n.protects_against_rollback());
}
