//! The rich VM's boot seed: `/chosen/rng-seed` in its device tree, filled
//! by mvmm with fresh bytes from its entropy device each time the VM
//! (re)starts.
//!
//! Linux seeds its random number generator from `rng-seed` (phone
//! bootloaders pass one; so does QEMU's own `virt` board). The rich VM has
//! no other early source: its CPU model has no RNDR and it gets no TRNG
//! (`crate::trng`: only the secure VM may draw from mvmm's device at run
//! time). Unseeded, Linux took every system call's random kernel-stack
//! offset from the whole input pool: 9,300 instructions per call, which
//! made `sha256sum` of 64 MiB run 4.4% longer than on bare QEMU and the
//! boot 2.8% (docs/benchmarks.md). The seed is credited, so the generator
//! is ready at once.
//!
//! The device tree is built on the host (`crate::devicetree`) with a
//! [`SEED_LEN`]-byte `rng-seed` of zeros; the image store puts it into the
//! VM's RAM at the VM's boot argument. [`find`] walks that copy, before any
//! vCPU of the VM runs, and returns where the value lies; every read is
//! bounded by the header's sizes and the VM's RAM (a tree the rich VM's
//! user supplied is data like any other).

use crate::virtio::{GuestMemory, MemFault};

/// Bytes of seed mvmm writes (256 bits, as QEMU gives).
pub const SEED_LEN: usize = 32;
/// The property's name.
pub const PROPERTY: &str = "rng-seed";

/// Largest device tree walked.
const MAX_TREE: u32 = 1 << 20;
const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Longest node name compared ("chosen" and unit addresses are short).
const MAX_NAME: usize = 64;

/// Why no seed could be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedError {
    /// No flattened device tree at the boot argument (bad magic).
    NotATree,
    /// The header's sizes or offsets do not fit the tree or its limit.
    BadHeader,
    /// A token, name or property runs past the structure block, or an
    /// unknown token.
    Malformed,
    /// The tree has no `/chosen/rng-seed`, or one of another size.
    NoSeed,
    /// A read left the VM's RAM.
    Memory(MemFault),
}

impl From<MemFault> for SeedError {
    fn from(f: MemFault) -> Self {
        SeedError::Memory(f)
    }
}

/// Bytes of the whole `rng-seed` property in the structure block: its
/// token, length and name offset, then the value.
pub const PROPERTY_BYTES: usize = 12 + SEED_LEN;

/// What replaces the `rng-seed` whose value starts at `value` when mvmm has
/// no entropy to put there: where the property starts, and NOP tokens over
/// all of it. Left in place, its zeros would be credited by Linux as a
/// seed everyone knows; a NOP is skipped by every device tree reader.
pub fn removal(value: u64) -> (u64, [u8; PROPERTY_BYTES]) {
    let mut nops = [0u8; PROPERTY_BYTES];
    for word in nops.chunks_exact_mut(4) {
        word.copy_from_slice(&NOP.to_be_bytes());
    }
    (value - 12, nops)
}

fn be32(mem: &impl GuestMemory, at: u64) -> Result<u32, SeedError> {
    let mut b = [0u8; 4];
    mem.read(at, &mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Where the [`SEED_LEN`]-byte value of `/chosen/rng-seed` lies in the
/// flattened device tree at guest address `dtb`: its guest address.
pub fn find(mem: &impl GuestMemory, dtb: u64) -> Result<u64, SeedError> {
    if be32(mem, dtb)? != MAGIC {
        return Err(SeedError::NotATree);
    }
    let total = be32(mem, dtb + 4)?;
    let off_struct = be32(mem, dtb + 8)?;
    let off_strings = be32(mem, dtb + 12)?;
    let size_strings = be32(mem, dtb + 32)?;
    let size_struct = be32(mem, dtb + 36)?;
    let inside = |off: u32, len: u32| off.checked_add(len).is_some_and(|end| end <= total);
    if total > MAX_TREE || !inside(off_struct, size_struct) || !inside(off_strings, size_strings) {
        return Err(SeedError::BadHeader);
    }
    let start = dtb + u64::from(off_struct);
    let end = start + u64::from(size_struct);
    let strings = dtb + u64::from(off_strings);
    let mut at = start;
    let mut depth = 0u32;
    // Depth of the `/chosen` node while inside it.
    let mut in_chosen = false;
    // Each step consumes at least 4 bytes: the walk ends.
    while at + 4 <= end {
        let token = be32(mem, at)?;
        at += 4;
        match token {
            BEGIN_NODE => {
                let (name, len) = node_name(mem, at, end)?;
                at += (len as u64 + 1).next_multiple_of(4);
                depth += 1;
                in_chosen = depth == 2 && name.get(..len) == Some(&b"chosen"[..]);
            }
            END_NODE => {
                if depth == 0 {
                    return Err(SeedError::Malformed);
                }
                if depth == 2 && in_chosen {
                    return Err(SeedError::NoSeed);
                }
                depth -= 1;
            }
            PROP => {
                if at + 8 > end {
                    return Err(SeedError::Malformed);
                }
                let len = be32(mem, at)?;
                let name_off = be32(mem, at + 4)?;
                let value = at + 8;
                let next = value
                    .checked_add(u64::from(len).next_multiple_of(4))
                    .filter(|&n| n <= end)
                    .ok_or(SeedError::Malformed)?;
                if in_chosen && depth == 2 && is_seed_name(mem, strings, size_strings, name_off)? {
                    return if len as usize == SEED_LEN {
                        Ok(value)
                    } else {
                        Err(SeedError::NoSeed)
                    };
                }
                at = next;
            }
            NOP => {}
            END => break,
            _ => return Err(SeedError::Malformed),
        }
    }
    Err(SeedError::NoSeed)
}

/// The NUL-terminated name at `at` (at most [`MAX_NAME`] bytes compared):
/// its bytes and its length without the NUL.
fn node_name(
    mem: &impl GuestMemory,
    at: u64,
    end: u64,
) -> Result<([u8; MAX_NAME], usize), SeedError> {
    let mut name = [0u8; MAX_NAME];
    let mut len = 0usize;
    let mut chunk = [0u8; 4];
    loop {
        if at + len as u64 + 4 > end {
            return Err(SeedError::Malformed);
        }
        mem.read(at + len as u64, &mut chunk)?;
        for &b in &chunk {
            if b == 0 {
                return Ok((name, len));
            }
            if let Some(slot) = name.get_mut(len) {
                *slot = b;
            }
            len += 1;
        }
        if len > MAX_TREE as usize {
            return Err(SeedError::Malformed);
        }
    }
}

/// Whether the strings block names [`PROPERTY`] at `offset`.
fn is_seed_name(
    mem: &impl GuestMemory,
    strings: u64,
    size: u32,
    offset: u32,
) -> Result<bool, SeedError> {
    let want = PROPERTY.len() + 1;
    if offset.checked_add(want as u32).is_none_or(|end| end > size) {
        return Ok(false);
    }
    let mut got = [0u8; PROPERTY.len() + 1];
    mem.read(strings + u64::from(offset), &mut got)?;
    Ok(&got[..PROPERTY.len()] == PROPERTY.as_bytes() && got[PROPERTY.len()] == 0)
}

#[cfg(test)]
mod tests;
