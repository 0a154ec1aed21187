//! `find` on flattened device trees built here, token by token.

use super::*;
use crate::virtio::mem::testing::TestRam;
use proptest::prelude::*;

const BASE: u64 = 0x5600_0000;

/// Guest RAM holding exactly `blob` at `BASE`, and nothing else.
fn ram(blob: &[u8]) -> TestRam {
    let mut ram = TestRam::new(BASE, blob.len());
    ram.bytes.copy_from_slice(blob);
    ram
}

/// A small device tree writer: the structure block and the strings.
#[derive(Default)]
struct Tree {
    structure: Vec<u8>,
    strings: Vec<u8>,
}

impl Tree {
    fn word(&mut self, w: u32) -> &mut Self {
        self.structure.extend_from_slice(&w.to_be_bytes());
        self
    }
    fn pad(&mut self) {
        while !self.structure.len().is_multiple_of(4) {
            self.structure.push(0);
        }
    }
    fn begin(&mut self, name: &str) -> &mut Self {
        self.word(BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad();
        self
    }
    fn end(&mut self) -> &mut Self {
        self.word(END_NODE)
    }
    fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.word(PROP).word(value.len() as u32).word(off);
        self.structure.extend_from_slice(value);
        self.pad();
        self
    }
    /// The blob: header, empty reservation map, structure, strings.
    fn blob(&mut self) -> Vec<u8> {
        self.word(END);
        let off_rsv = 40u32;
        let off_struct = off_rsv + 16;
        let off_strings = off_struct + self.structure.len() as u32;
        let total = off_strings + self.strings.len() as u32;
        let mut b = Vec::new();
        for w in [
            MAGIC,
            total,
            off_struct,
            off_strings,
            off_rsv,
            17,
            16,
            0,
            self.strings.len() as u32,
            self.structure.len() as u32,
        ] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(&self.structure);
        b.extend_from_slice(&self.strings);
        b
    }
}

/// A tree shaped like the rich VM's: root properties, `/chosen` with the
/// command line and the seed, then memory.
fn rich_tree(seed_len: usize) -> Vec<u8> {
    Tree::default()
        .begin("")
        .prop("compatible", b"linux,dummy-virt\0")
        .prop("#address-cells", &2u32.to_be_bytes())
        .begin("chosen")
        .prop("bootargs", b"console=ttyAMA0 nokaslr\0")
        .prop(PROPERTY, &vec![0; seed_len])
        .prop("linux,initrd-start", &0x4800_0000u64.to_be_bytes())
        .end()
        .begin("memory@50000000")
        .prop("device_type", b"memory\0")
        .end()
        .end()
        .blob()
}

#[test]
fn the_seed_is_found_and_filled_in_place() {
    let blob = rich_tree(SEED_LEN);
    let mut mem = ram(&blob);
    let at = find(&mem, BASE).expect("seed");
    mem.write(at, &[0xa5; SEED_LEN]).unwrap();
    // Only the seed's bytes changed.
    let changed: Vec<usize> = (0..blob.len())
        .filter(|&i| mem.bytes[i] != blob[i])
        .collect();
    assert_eq!(changed.len(), SEED_LEN);
    assert_eq!(changed[0] as u64, at - BASE);
    // And it is the value of the `rng-seed` property: its length word
    // precedes it by 8 bytes.
    let len_at = (at - BASE - 8) as usize;
    assert_eq!(&blob[len_at..len_at + 4], &(SEED_LEN as u32).to_be_bytes());
}

#[test]
fn without_entropy_the_seed_is_removed_and_the_tree_still_reads() {
    let blob = rich_tree(SEED_LEN);
    let mut mem = ram(&blob);
    let at = find(&mem, BASE).unwrap();
    let (start, nops) = removal(at);
    mem.write(start, &nops).unwrap();
    // The property is gone: no zeros left for Linux to credit.
    assert_eq!(find(&mem, BASE), Err(SeedError::NoSeed));
    // Only its bytes changed, and they are NOP tokens.
    let changed: Vec<usize> = (0..blob.len())
        .filter(|&i| mem.bytes[i] != blob[i])
        .collect();
    assert!(
        changed
            .iter()
            .all(|&i| (start - BASE) as usize <= i && i < (start - BASE) as usize + PROPERTY_BYTES)
    );
    assert_eq!(
        &mem.bytes[(start - BASE) as usize..][..4],
        &NOP.to_be_bytes()
    );
    // The rest of /chosen is still where a reader finds it: a seed placed
    // after the NOPs would be found.
    let again = Tree::default()
        .begin("")
        .begin("chosen")
        .prop("bootargs", b"x\0")
        .prop(PROPERTY, &[0; SEED_LEN])
        .prop(PROPERTY, &[0; SEED_LEN])
        .end()
        .end()
        .blob();
    let mut mem = ram(&again);
    let first = find(&mem, BASE).unwrap();
    let (start, nops) = removal(first);
    mem.write(start, &nops).unwrap();
    assert_eq!(find(&mem, BASE), Ok(first + PROPERTY_BYTES as u64));
}

#[test]
fn a_seed_elsewhere_or_of_another_size_is_not_used() {
    assert_eq!(
        find(&ram(&rich_tree(16)), BASE),
        Err(SeedError::NoSeed),
        "a 16-byte seed would leave half of it zero"
    );
    // An `rng-seed` outside /chosen is not the one Linux reads.
    let elsewhere = Tree::default()
        .begin("")
        .prop(PROPERTY, &[0; SEED_LEN])
        .begin("chosen")
        .prop("bootargs", b"x\0")
        .end()
        .begin("soc")
        .begin("chosen")
        .prop(PROPERTY, &[0; SEED_LEN])
        .end()
        .end()
        .end()
        .blob();
    assert_eq!(find(&ram(&elsewhere), BASE), Err(SeedError::NoSeed));
    // A property whose name only starts with `rng-seed`.
    let longer = Tree::default()
        .begin("")
        .begin("chosen")
        .prop("rng-seedling", &[0; SEED_LEN])
        .end()
        .end()
        .blob();
    assert_eq!(find(&ram(&longer), BASE), Err(SeedError::NoSeed));
}

#[test]
fn broken_trees_are_refused_with_the_reason() {
    let good = rich_tree(SEED_LEN);
    let mut bad_magic = good.clone();
    bad_magic[0] = 0;
    assert_eq!(find(&ram(&bad_magic), BASE), Err(SeedError::NotATree));
    // Structure block said to run past the tree's end.
    let mut long_struct = good.clone();
    long_struct[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(find(&ram(&long_struct), BASE), Err(SeedError::BadHeader));
    // The tree cut off in its structure block, where the RAM ends: reads
    // would leave the RAM.
    let mut short = good.clone();
    short.truncate(100);
    assert!(matches!(
        find(&ram(&short), BASE),
        Err(SeedError::Memory(_) | SeedError::Malformed)
    ));
    // An unknown token.
    let mut token = good.clone();
    token[56..60].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(find(&ram(&token), BASE), Err(SeedError::Malformed));
    // Nothing at the boot argument at all.
    assert!(matches!(
        find(&ram(&Vec::new()), BASE),
        Err(SeedError::Memory(_))
    ));
}

proptest! {
    /// Whatever the bytes (a rich VM's user may boot their own tree), the
    /// walk ends with an answer, never a panic, and an answer it gives
    /// lies inside the tree.
    #[test]
    fn any_bytes_give_an_answer(flips in proptest::collection::vec((0usize..400, any::<u8>()), 0..8)) {
        let mut blob = rich_tree(SEED_LEN);
        for (at, byte) in flips {
            if let Some(b) = blob.get_mut(at) {
                *b = byte;
            }
        }
        let len = blob.len() as u64;
        if let Ok(at) = find(&ram(&blob), BASE) {
            prop_assert!(at >= BASE && at + SEED_LEN as u64 <= BASE + len);
        }
    }
}
