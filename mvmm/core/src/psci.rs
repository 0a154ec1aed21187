//! PSCI 1.1 over SMCCC, emulated per VM.
//!
//! A guest's power calls (CPU_ON, SYSTEM_OFF, ...) never reach the firmware:
//! mvmm answers them for the VM's own vCPUs only. [`Call::decode`] reads the
//! function id and arguments, [`handle`] updates the VM's vCPU power states
//! and says what the arch layer must do.

use crate::partition::MemRange;

/// PSCI version 1.1 (major << 16 | minor).
pub const VERSION_1_1: u64 = 0x0001_0001;
/// SMCCC version 1.1.
pub const SMCCC_VERSION_1_1: u64 = 0x0001_0001;

/// Function ids (SMC32 and SMC64 forms where both exist).
pub mod fid {
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    pub const CPU_SUSPEND_64: u32 = 0xc400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON_32: u32 = 0x8400_0003;
    pub const CPU_ON_64: u32 = 0xc400_0003;
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const PSCI_FEATURES: u32 = 0x8400_000a;
}

/// PSCI return codes.
pub mod ret {
    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const ALREADY_ON: i64 = -4;
    pub const ON_PENDING: i64 = -5;
    pub const INVALID_ADDRESS: i64 = -9;
}

/// MIGRATE_INFO_TYPE answer: no trusted OS that needs migrating.
const MIGRATE_NOT_REQUIRED: u64 = 2;

/// A decoded power or SMCCC call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    SmcccVersion,
    SmcccArchFeatures {
        fid: u32,
    },
    Version,
    Features {
        fid: u32,
    },
    CpuOn {
        target: u64,
        entry: u64,
        context: u64,
    },
    CpuOff,
    AffinityInfo {
        target: u64,
        level: u64,
    },
    MigrateInfoType,
    SystemOff,
    SystemReset,
    /// Any other function id: answered NOT_SUPPORTED.
    Unknown {
        fid: u64,
    },
}

impl Call {
    /// Decodes x0 (function id) and x1..x3. SMC32 forms only look at the
    /// low 32 bits of their arguments, as SMCCC requires.
    pub fn decode(x: [u64; 4]) -> Call {
        let Ok(f) = u32::try_from(x[0]) else {
            return Call::Unknown { fid: x[0] };
        };
        let smc32 = f & 0x4000_0000 == 0;
        let arg = |i: usize| if smc32 { x[i] & 0xffff_ffff } else { x[i] };
        match f {
            fid::SMCCC_VERSION => Call::SmcccVersion,
            fid::SMCCC_ARCH_FEATURES => Call::SmcccArchFeatures { fid: arg(1) as u32 },
            fid::PSCI_VERSION => Call::Version,
            fid::PSCI_FEATURES => Call::Features { fid: arg(1) as u32 },
            fid::CPU_ON_32 | fid::CPU_ON_64 => Call::CpuOn {
                target: arg(1),
                entry: arg(2),
                context: arg(3),
            },
            fid::CPU_OFF => Call::CpuOff,
            fid::AFFINITY_INFO_32 | fid::AFFINITY_INFO_64 => Call::AffinityInfo {
                target: arg(1),
                level: arg(2),
            },
            fid::MIGRATE_INFO_TYPE => Call::MigrateInfoType,
            fid::SYSTEM_OFF => Call::SystemOff,
            fid::SYSTEM_RESET => Call::SystemReset,
            _ => Call::Unknown { fid: x[0] },
        }
    }
}

/// Power state of one vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuPower {
    Off,
    /// CPU_ON accepted; the vCPU starts at `entry` with x0 = `context`.
    OnPending {
        entry: u64,
        context: u64,
    },
    On,
}

/// What the arch layer does after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Write this value to the caller's x0 and resume it.
    Return(u64),
    /// Wake vCPU `vcpu` (now OnPending), then return SUCCESS to the caller.
    StartVcpu { vcpu: usize },
    /// Power the calling vCPU off (now Off); it does not return.
    StopCaller,
    /// The VM asked to power off.
    SystemOff,
    /// The VM asked to be reset.
    SystemReset,
}

/// The vCPU a PSCI target MPIDR names. vCPU `i` of a VM has MPIDR Aff0 = i
/// and all other affinity fields zero.
fn vcpu_of(target: u64, vcpus: usize) -> Option<usize> {
    const AFFINITY_MASK: u64 = 0xff_00ff_ffff;
    if target & AFFINITY_MASK & !0xff != 0 {
        return None;
    }
    let index = (target & 0xff) as usize;
    (index < vcpus).then_some(index)
}

const fn code(value: i64) -> Outcome {
    Outcome::Return(value as u64)
}

/// Applies `call` from vCPU `caller` to the VM whose vCPU states are
/// `vcpus` and whose RAM is `ram`.
pub fn handle(call: Call, caller: usize, vcpus: &mut [VcpuPower], ram: &[MemRange]) -> Outcome {
    match call {
        Call::SmcccVersion => Outcome::Return(SMCCC_VERSION_1_1),
        Call::SmcccArchFeatures { .. } => code(ret::NOT_SUPPORTED),
        Call::Version => Outcome::Return(VERSION_1_1),
        Call::Features { fid } => match fid {
            fid::PSCI_VERSION
            | fid::PSCI_FEATURES
            | fid::CPU_ON_32
            | fid::CPU_ON_64
            | fid::CPU_OFF
            | fid::AFFINITY_INFO_32
            | fid::AFFINITY_INFO_64
            | fid::MIGRATE_INFO_TYPE
            | fid::SYSTEM_OFF
            | fid::SYSTEM_RESET
            | fid::SMCCC_VERSION => code(ret::SUCCESS),
            _ => code(ret::NOT_SUPPORTED),
        },
        Call::CpuOn {
            target,
            entry,
            context,
        } => {
            let Some(vcpu) = vcpu_of(target, vcpus.len()) else {
                return code(ret::INVALID_PARAMETERS);
            };
            if !ram.iter().any(|r| r.contains_range(entry, 4)) || entry % 4 != 0 {
                return code(ret::INVALID_ADDRESS);
            }
            match vcpus[vcpu] {
                VcpuPower::On => code(ret::ALREADY_ON),
                VcpuPower::OnPending { .. } => code(ret::ON_PENDING),
                VcpuPower::Off => {
                    vcpus[vcpu] = VcpuPower::OnPending { entry, context };
                    Outcome::StartVcpu { vcpu }
                }
            }
        }
        Call::CpuOff => match vcpus.get_mut(caller) {
            Some(state) => {
                *state = VcpuPower::Off;
                Outcome::StopCaller
            }
            None => code(ret::INVALID_PARAMETERS),
        },
        Call::AffinityInfo { target, level } => match (level, vcpu_of(target, vcpus.len())) {
            (0, Some(vcpu)) => Outcome::Return(match vcpus[vcpu] {
                VcpuPower::On => 0,
                VcpuPower::Off => 1,
                VcpuPower::OnPending { .. } => 2,
            }),
            _ => code(ret::INVALID_PARAMETERS),
        },
        Call::MigrateInfoType => Outcome::Return(MIGRATE_NOT_REQUIRED),
        Call::SystemOff => Outcome::SystemOff,
        Call::SystemReset => Outcome::SystemReset,
        Call::Unknown { .. } => code(ret::NOT_SUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: &[MemRange] = &[MemRange::new(0x5000_0000, 0x1000_0000)];

    fn call(x0: u32, x1: u64, x2: u64, x3: u64) -> Call {
        Call::decode([u64::from(x0), x1, x2, x3])
    }

    #[test]
    fn version_features_and_unknown_ids() {
        let mut v = [VcpuPower::On, VcpuPower::Off];
        assert_eq!(
            handle(call(fid::PSCI_VERSION, 0, 0, 0), 0, &mut v, RAM),
            Outcome::Return(VERSION_1_1)
        );
        assert_eq!(
            handle(
                call(fid::PSCI_FEATURES, fid::CPU_ON_64.into(), 0, 0),
                0,
                &mut v,
                RAM
            ),
            code(0)
        );
        assert_eq!(
            handle(
                call(fid::PSCI_FEATURES, fid::CPU_SUSPEND_64.into(), 0, 0),
                0,
                &mut v,
                RAM
            ),
            code(ret::NOT_SUPPORTED)
        );
        assert_eq!(
            handle(call(0x8400_00ff, 0, 0, 0), 0, &mut v, RAM),
            code(ret::NOT_SUPPORTED)
        );
        assert_eq!(
            Call::decode([0x1_8400_0000, 0, 0, 0]),
            Call::Unknown { fid: 0x1_8400_0000 }
        );
        assert_eq!(
            handle(call(fid::MIGRATE_INFO_TYPE, 0, 0, 0), 0, &mut v, RAM),
            Outcome::Return(2)
        );
        assert_eq!(
            handle(call(fid::SYSTEM_OFF, 0, 0, 0), 0, &mut v, RAM),
            Outcome::SystemOff
        );
        assert_eq!(
            handle(call(fid::SYSTEM_RESET, 0, 0, 0), 0, &mut v, RAM),
            Outcome::SystemReset
        );
    }

    #[test]
    fn cpu_on_lifecycle() {
        let mut v = [VcpuPower::On, VcpuPower::Off];
        let on = call(fid::CPU_ON_64, 1, 0x5000_1000, 7);
        assert_eq!(handle(on, 0, &mut v, RAM), Outcome::StartVcpu { vcpu: 1 });
        assert_eq!(
            v[1],
            VcpuPower::OnPending {
                entry: 0x5000_1000,
                context: 7
            }
        );
        assert_eq!(
            handle(call(fid::AFFINITY_INFO_64, 1, 0, 0), 0, &mut v, RAM),
            Outcome::Return(2)
        );
        assert_eq!(handle(on, 0, &mut v, RAM), code(ret::ON_PENDING));
        v[1] = VcpuPower::On;
        assert_eq!(handle(on, 0, &mut v, RAM), code(ret::ALREADY_ON));
        assert_eq!(
            handle(call(fid::AFFINITY_INFO_64, 1, 0, 0), 0, &mut v, RAM),
            Outcome::Return(0)
        );
        assert_eq!(
            handle(call(fid::CPU_OFF, 0, 0, 0), 1, &mut v, RAM),
            Outcome::StopCaller
        );
        assert_eq!(
            handle(call(fid::AFFINITY_INFO_64, 1, 0, 0), 0, &mut v, RAM),
            Outcome::Return(1)
        );
    }

    #[test]
    fn cpu_on_refuses_other_vms_cpus_and_foreign_entry_points() {
        let mut v = [VcpuPower::On, VcpuPower::Off];
        // vCPU 2 does not exist; Aff1 set names another cluster.
        assert_eq!(
            handle(call(fid::CPU_ON_64, 2, 0x5000_0000, 0), 0, &mut v, RAM),
            code(ret::INVALID_PARAMETERS)
        );
        assert_eq!(
            handle(call(fid::CPU_ON_64, 0x101, 0x5000_0000, 0), 0, &mut v, RAM),
            code(ret::INVALID_PARAMETERS)
        );
        // Entry in the secure VM's RAM, or misaligned.
        assert_eq!(
            handle(call(fid::CPU_ON_64, 1, 0x4100_0000, 0), 0, &mut v, RAM),
            code(ret::INVALID_ADDRESS)
        );
        assert_eq!(
            handle(call(fid::CPU_ON_64, 1, 0x5000_0002, 0), 0, &mut v, RAM),
            code(ret::INVALID_ADDRESS)
        );
        assert_eq!(v[1], VcpuPower::Off);
        assert_eq!(
            handle(call(fid::AFFINITY_INFO_64, 0, 1, 0), 0, &mut v, RAM),
            code(ret::INVALID_PARAMETERS)
        );
    }

    #[test]
    fn smc32_arguments_are_truncated() {
        assert_eq!(
            Call::decode([
                u64::from(fid::CPU_ON_32),
                0xffff_ffff_0000_0001,
                0x1_5000_0000,
                0
            ]),
            Call::CpuOn {
                target: 1,
                entry: 0x5000_0000,
                context: 0
            }
        );
    }
}
