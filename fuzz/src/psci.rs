//! PSCI, SMCCC and mvmm's own hypercalls: any x0..x3 from any vCPU, in any
//! order, against a VM's power state.
//!
//! Invariants:
//! - SMC32 calls ignore the upper halves of their arguments (SMCCC), and a
//!   function id above 32 bits is never a known call;
//! - mvmm's hypercall ids and PSCI ids do not overlap: a call is decoded by
//!   at most one of the two;
//! - `handle` starts only a vCPU of the VM that was off, at a 4-byte-aligned
//!   entry inside the VM's RAM; stops only the caller; changes no other
//!   vCPU's state; answers every call with a PSCI return code or a value
//!   the spec allows.

use arbitrary::{Arbitrary, Unstructured};
use mvmm_core::hypercall::{self, Hypercall};
use mvmm_core::partition::MemRange;
use mvmm_core::psci::{Call, Outcome, VcpuPower, handle};

/// The function ids worth hitting, so most calls are real ones.
const FIDS: &[u64] = &[
    0x8000_0000,
    0x8000_0001,
    0x8400_0000,
    0x8400_0001,
    0xc400_0001,
    0x8400_0002,
    0x8400_0003,
    0xc400_0003,
    0x8400_0004,
    0xc400_0004,
    0x8400_0006,
    0x8400_0008,
    0x8400_0009,
    0x8400_000a,
    0xc600_0001,
    0xc600_0002,
    0xc600_0003,
];
const RAM: &[MemRange] = &[
    MemRange::new(0x4000_0000, 0x0100_0000),
    MemRange::new(0x8000_0000, 0x1000),
];

#[derive(Arbitrary, Debug)]
enum Fid {
    Known(u8),
    /// A known id with high bits or SMC64 flipped.
    Twisted(u8, u64),
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum Arg {
    /// An affinity: vCPU index with stray affinity bits.
    Mpidr(u8, u8),
    /// An address near or inside RAM.
    Near(bool, u32),
    Any(u64),
}

impl Arg {
    fn value(&self) -> u64 {
        match *self {
            Arg::Mpidr(aff0, stray) => u64::from(aff0 % 8) | ((u64::from(stray % 4) << 8) * 0x0101),
            Arg::Near(second, off) => RAM[usize::from(second)].base.wrapping_add(u64::from(off)),
            Arg::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Op {
    caller: u8,
    fid: Fid,
    args: [Arg; 3],
    /// A bit pattern XORed into the upper halves of the arguments.
    high: u32,
}

fn allowed_return(v: u64) -> bool {
    let codes = [0i64, -1, -2, -4, -5, -9].map(|c| c as u64);
    // Versions (1.1), MIGRATE_INFO_TYPE (2), AFFINITY_INFO (0, 1, 2).
    codes.contains(&v) || [0x0001_0001, 1, 2].contains(&v)
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(count) = u.int_in_range(1..=4usize) else {
        return;
    };
    let mut vcpus = vec![VcpuPower::Off; count];
    vcpus[0] = VcpuPower::On;
    for op in crate::ops::<Op>(&mut u, 64) {
        let x0 = match op.fid {
            Fid::Known(i) => FIDS[usize::from(i) % FIDS.len()],
            Fid::Twisted(i, bits) => FIDS[usize::from(i) % FIDS.len()] ^ (bits & !0xffff),
            Fid::Any(v) => v,
        };
        let x = [
            x0,
            op.args[0].value(),
            op.args[1].value(),
            op.args[2].value(),
        ];
        let call = Call::decode(x);
        if x0 > u64::from(u32::MAX) {
            assert_eq!(call, Call::Unknown { fid: x0 }, "{x0:#x} decoded");
        }
        if x0 <= u64::from(u32::MAX) && x0 & 0x4000_0000 == 0 {
            let high = u64::from(op.high) << 32;
            let twisted = Call::decode([x0, x[1] ^ high, x[2] ^ high, x[3] ^ high]);
            assert_eq!(call, twisted, "SMC32 {x0:#x} read an upper half");
        }
        let ours = hypercall::decode(x[0], x[1]);
        if ours.is_some() {
            assert!(
                matches!(call, Call::Unknown { .. }),
                "{x0:#x} is both a hypercall and {call:?}"
            );
        }
        match ours {
            Some(Hypercall::ConsoleFocus(on)) | Some(Hypercall::Display(on)) => {
                assert_eq!(x[1], u64::from(on))
            }
            Some(Hypercall::Invalid) => assert!(x[1] > 1),
            Some(Hypercall::Rpmb { frame }) => assert_eq!(frame, x[1]),
            None => {}
        }

        let caller = usize::from(op.caller) % count;
        let before = vcpus.clone();
        let outcome = handle(call, caller, &mut vcpus, RAM);
        let mut changed: Option<usize> = None;
        match outcome {
            Outcome::Return(v) => assert!(allowed_return(v), "{call:?} returned {v:#x}"),
            Outcome::StartVcpu { vcpu } => {
                let Call::CpuOn { entry, context, .. } = call else {
                    panic!("{call:?} started vCPU {vcpu}");
                };
                assert!(vcpu < count, "started vCPU {vcpu} of {count}");
                assert_eq!(
                    before[vcpu],
                    VcpuPower::Off,
                    "started a vCPU that was not off"
                );
                assert_eq!(vcpus[vcpu], VcpuPower::OnPending { entry, context });
                assert!(entry % 4 == 0, "entry {entry:#x} misaligned");
                assert!(
                    RAM.iter().any(|r| r.contains_range(entry, 4)),
                    "entry {entry:#x} outside RAM"
                );
                changed = Some(vcpu);
            }
            Outcome::StopCaller => {
                assert_eq!(call, Call::CpuOff);
                assert_eq!(vcpus[caller], VcpuPower::Off);
                changed = Some(caller);
            }
            Outcome::SystemOff => assert_eq!(call, Call::SystemOff),
            Outcome::SystemReset => assert_eq!(call, Call::SystemReset),
        }
        for i in 0..count {
            if Some(i) != changed {
                assert_eq!(before[i], vcpus[i], "{call:?} changed vCPU {i}");
            }
        }
        // The arch layer runs a started vCPU eventually.
        for state in vcpus.iter_mut() {
            if matches!(state, VcpuPower::OnPending { .. }) && op.high & 1 == 1 {
                *state = VcpuPower::On;
            }
        }
    }
}
