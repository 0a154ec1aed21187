//! The virtual GIC against hostile vCPUs: any sequence of distributor and
//! redistributor reads and writes (any offset, size, value) from several
//! vCPUs, interleaved with interrupts raised, lowered and delivered.
//!
//! Invariants checked after every step:
//! - only 1-, 4- (and 8-byte, where the register allows it) aligned
//!   accesses succeed; a vCPU that does not exist has no redistributor;
//! - a vCPU's private interrupts (SGIs, PPIs) change only through its own
//!   redistributor or through interrupts raised for it: no access of
//!   another vCPU, and no distributor access, touches them;
//! - every SPI routes to an existing vCPU;
//! - `next_pending` names an interrupt that is pending, enabled and the
//!   vCPU's own, with the priority the guest reads back;
//! - a byte written to a priority register reads back unchanged;
//! - an SGI never targets a vCPU outside the VM, and "all but self"
//!   never includes the sender;
//! - identification registers read their constants.

use arbitrary::{Arbitrary, Unstructured};
use mvmm_core::partition::MAX_CPUS;
use mvmm_core::vgic::{SPI_LIMIT, Vgic};

const SGI: u64 = 0x1_0000;
const IPRIORITYR: u64 = 0x400;
/// Offsets a guest driver really uses, so most accesses hit registers.
const DIST_REGS: &[u64] = &[
    0x0, 0x4, 0x8, 0xc, 0x80, 0x84, 0x88, 0x100, 0x104, 0x108, 0x180, 0x184, 0x188, 0x200, 0x204,
    0x208, 0x280, 0x284, 0x288, 0x300, 0x380, 0x400, 0x420, 0x440, 0x45c, 0xc00, 0xc04, 0xc08,
    0xc0c, 0xc10, 0xd00, 0x6000, 0x6100, 0x6200, 0x62f8, 0x6300, 0xffe8,
];
const REDIST_REGS: &[u64] = &[
    0x0, 0x4, 0x8, 0xc, 0x14, 0xffe8, 0x10080, 0x10100, 0x10180, 0x10200, 0x10280, 0x10300,
    0x10380, 0x10400, 0x10404, 0x1041c, 0x10c00, 0x10c04, 0x10d00,
];

#[derive(Arbitrary, Debug)]
enum Offset {
    /// One of the registers a driver uses, plus a small displacement.
    Known(u8, u8),
    Any(u32),
}

impl Offset {
    fn resolve(&self, regs: &[u64]) -> u64 {
        match *self {
            Offset::Known(i, d) => regs[usize::from(i) % regs.len()] + u64::from(d % 8),
            Offset::Any(o) => u64::from(o),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    DistRead {
        at: Offset,
        size: u8,
    },
    DistWrite {
        at: Offset,
        size: u8,
        value: u64,
    },
    RedistRead {
        vcpu: u8,
        at: Offset,
        size: u8,
    },
    RedistWrite {
        vcpu: u8,
        at: Offset,
        size: u8,
        value: u64,
    },
    Raise {
        vcpu: u8,
        intid: u16,
    },
    Lower {
        vcpu: u8,
        intid: u16,
    },
    /// The arch layer loads the vCPU's best pending interrupt.
    Deliver {
        vcpu: u8,
    },
    Sgi {
        sender: u8,
        value: u64,
    },
}

/// What the guest sees of vCPU `vcpu`'s private interrupts through its
/// own redistributor's SGI frame (group, enable, pending, config, priority).
fn private_view(g: &mut Vgic, vcpu: usize) -> Vec<u64> {
    let mut regs = vec![0x80, 0x100, 0x200, 0xc00, 0xc04];
    regs.extend((0..8).map(|i| IPRIORITYR + 4 * i));
    regs.iter()
        .map(|&o| {
            g.redist_read(vcpu, SGI + o, 4)
                .expect("an existing vCPU's SGI frame reads")
        })
        .collect()
}

fn views(g: &mut Vgic) -> Vec<Vec<u64>> {
    (0..g.vcpus()).map(|v| private_view(g, v)).collect()
}

fn size_ok(offset: u64, size: u8, allow_64: bool) -> bool {
    (size == 1 || size == 4 || (allow_64 && size == 8))
        && offset.is_multiple_of(u64::from(size.max(1)))
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(vcpus) = u.int_in_range(1..=MAX_CPUS as u8) else {
        return;
    };
    let mut g = Vgic::new(usize::from(vcpus));
    let n = g.vcpus();
    assert_eq!(n, usize::from(vcpus));
    for op in crate::ops::<Op>(&mut u, 256) {
        let before = views(&mut g);
        // Which vCPU's private state the step may change (None: none).
        let mut may_touch: Option<usize> = None;
        match op {
            Op::DistRead { at, size } => {
                let o = at.resolve(DIST_REGS);
                let r = g.dist_read(o, size);
                if r.is_ok() {
                    assert!(size_ok(o, size, o >= 0x6000), "dist read {o:#x}/{size}");
                }
                match (o, size, r) {
                    (0x8, 4, r) => assert_eq!(r, Ok(0x43b), "GICD_IIDR"),
                    (0xffe8, 4, r) => assert_eq!(r, Ok(0x30), "GICD_PIDR2"),
                    (0x4, 4, Ok(typer)) => {
                        assert_eq!(typer & 0x1f, u64::from(SPI_LIMIT / 32 - 1), "ITLinesNumber")
                    }
                    _ => {}
                }
            }
            Op::DistWrite { at, size, value } => {
                let o = at.resolve(DIST_REGS);
                if g.dist_write(o, size, value).is_ok() {
                    assert!(size_ok(o, size, o >= 0x6000), "dist write {o:#x}/{size}");
                    if size == 1
                        && (IPRIORITYR + 32..IPRIORITYR + u64::from(SPI_LIMIT)).contains(&o)
                    {
                        assert_eq!(g.dist_read(o, 1), Ok(value & 0xff), "SPI priority {o:#x}");
                    }
                }
            }
            Op::RedistRead { vcpu, at, size } => {
                let (v, o) = (usize::from(vcpu), at.resolve(REDIST_REGS));
                let r = g.redist_read(v, o, size);
                if r.is_ok() {
                    assert!(v < n, "redistributor of vCPU {v} of {n} read");
                    assert!(size_ok(o, size, o == 0x8), "redist read {o:#x}/{size}");
                }
                if let (0x8, 8, Ok(typer)) = (o, size, r) {
                    assert_eq!(typer >> 32, v as u64, "GICR_TYPER affinity");
                    assert_eq!(typer >> 4 & 1 == 1, v + 1 == n, "GICR_TYPER.Last");
                }
            }
            Op::RedistWrite {
                vcpu,
                at,
                size,
                value,
            } => {
                let (v, o) = (usize::from(vcpu), at.resolve(REDIST_REGS));
                if g.redist_write(v, o, size, value).is_ok() {
                    assert!(v < n, "redistributor of vCPU {v} of {n} written");
                    assert!(size_ok(o, size, false), "redist write {o:#x}/{size}");
                    may_touch = Some(v);
                    if size == 1 && (SGI + IPRIORITYR..SGI + IPRIORITYR + 32).contains(&o) {
                        assert_eq!(g.redist_read(v, o, 1), Ok(value & 0xff), "PPI priority");
                    }
                }
            }
            Op::Raise { vcpu, intid } => {
                let (v, intid) = (usize::from(vcpu), u32::from(intid));
                let told = g.raise(v, intid);
                if let Some(t) = told {
                    assert!(t < n, "raise told vCPU {t} of {n}");
                    assert!(
                        v < n && intid < SPI_LIMIT,
                        "raise of {intid} on {v} delivered"
                    );
                    assert!(
                        g.next_pending(t).is_some(),
                        "vCPU {t} told, nothing pending"
                    );
                    if intid < 32 {
                        assert_eq!(t, v, "a private interrupt goes to its own vCPU");
                    }
                }
                if intid < 32 && v < n {
                    may_touch = Some(v);
                }
            }
            Op::Lower { vcpu, intid } => {
                let (v, intid) = (usize::from(vcpu), u32::from(intid));
                g.lower(v, intid);
                if intid < 32 && v < n {
                    may_touch = Some(v);
                }
            }
            Op::Deliver { vcpu } => {
                let v = usize::from(vcpu);
                if let Some((intid, priority)) = g.next_pending(v) {
                    assert!(v < n, "vCPU {v} of {n} has a pending interrupt");
                    assert!(intid < SPI_LIMIT, "INTID {intid} beyond the model");
                    assert!(
                        g.is_enabled(v, intid),
                        "INTID {intid} delivered while disabled"
                    );
                    if intid >= 32 {
                        assert_eq!(g.target(intid), Some(v), "SPI {intid} to the wrong vCPU");
                        let read = g.dist_read(IPRIORITYR + u64::from(intid), 1);
                        assert_eq!(read, Ok(u64::from(priority)), "SPI {intid} priority");
                    } else {
                        let read = g.redist_read(v, SGI + IPRIORITYR + u64::from(intid), 1);
                        assert_eq!(read, Ok(u64::from(priority)), "PPI {intid} priority");
                    }
                    g.delivered(v, intid);
                    may_touch = Some(v);
                }
            }
            Op::Sgi { sender, value } => {
                let s = usize::from(sender) % n;
                let (intid, mask) = g.sgi_targets(s, value);
                assert!(intid < 16, "SGI INTID {intid}");
                assert_eq!(mask >> n, 0, "SGI mask {mask:#x} beyond {n} vCPUs");
                if value >> 40 & 1 == 1 {
                    assert_eq!(mask >> s & 1, 0, "all-but-self SGI includes its sender");
                }
            }
        }
        let after = views(&mut g);
        for v in 0..n {
            if Some(v) != may_touch {
                assert_eq!(before[v], after[v], "vCPU {v}'s private interrupts changed");
            }
        }
        for intid in 32..SPI_LIMIT {
            let t = g.target(intid).expect("an SPI has a route");
            assert!(t < n, "SPI {intid} routed to vCPU {t} of {n}");
        }
    }
}
