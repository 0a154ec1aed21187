//! Exit accounting: how often each VM enters mvmm, and why.
//!
//! Every synchronous exit is counted by its kind ([`ExitKind::of`]: the
//! exception class, the system register, the emulated device a data abort
//! hit), every interrupt exit once, and every physical interrupt taken by
//! its source ([`IrqSource`]). The counters are per physical CPU: a CPU
//! runs one vCPU of one VM, so each has a single writer and the hot path
//! is a load and a store, no atomic read-modify-write shared between CPUs.
//! mvmm sums a VM's CPUs into [`ExitCounts`] and logs them when the VM
//! powers off or resets (`vm 'rich' exits: ...`); `cargo xtask bench`
//! reads that line ([`ExitCounts::parse`]) to report exits per second of
//! each workload.

use crate::bus::Emulated;
use crate::trap::Exit;
use crate::vgic;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Why a vCPU entered mvmm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    Wfi,
    Wfe,
    Hvc,
    Smc,
    /// A write to ICC_SGI1R_EL1 and its siblings: an SGI to send.
    SgiSend,
    /// Any other trapped system register or set/way cache operation.
    SysReg,
    /// A data abort on the VM's bus, by device.
    Gicd,
    Gicr,
    Uart,
    Vsock,
    Input,
    /// A data or instruction abort outside the VM (a fault).
    Fault,
    /// An exception class mvmm does not handle.
    Other,
    /// A physical interrupt (counted once per exit; the interrupts taken in
    /// it are counted by [`IrqSource`]).
    Irq,
}

impl ExitKind {
    /// Every kind, in the order of the log line.
    pub const ALL: [ExitKind; 14] = [
        ExitKind::Irq,
        ExitKind::Wfi,
        ExitKind::Wfe,
        ExitKind::Hvc,
        ExitKind::Smc,
        ExitKind::SgiSend,
        ExitKind::SysReg,
        ExitKind::Gicd,
        ExitKind::Gicr,
        ExitKind::Uart,
        ExitKind::Vsock,
        ExitKind::Input,
        ExitKind::Fault,
        ExitKind::Other,
    ];

    /// The name in the log line.
    pub const fn name(self) -> &'static str {
        match self {
            ExitKind::Wfi => "wfi",
            ExitKind::Wfe => "wfe",
            ExitKind::Hvc => "hvc",
            ExitKind::Smc => "smc",
            ExitKind::SgiSend => "sgi-send",
            ExitKind::SysReg => "sysreg",
            ExitKind::Gicd => "mmio-gicd",
            ExitKind::Gicr => "mmio-gicr",
            ExitKind::Uart => "mmio-uart",
            ExitKind::Vsock => "mmio-vsock",
            ExitKind::Input => "mmio-input",
            ExitKind::Fault => "fault",
            ExitKind::Other => "other",
            ExitKind::Irq => "irq",
        }
    }

    /// The kind of a synchronous exit; `device` is what the VM's bus has at
    /// a data abort's address (`None`: outside the VM).
    pub fn of(exit: &Exit, device: Option<Emulated>) -> ExitKind {
        match exit {
            Exit::Wfi => ExitKind::Wfi,
            Exit::Wfe => ExitKind::Wfe,
            Exit::Hvc { .. } => ExitKind::Hvc,
            Exit::Smc { .. } => ExitKind::Smc,
            Exit::SysReg(access)
                if matches!(
                    access.encoding(),
                    vgic::ICC_SGI1R_EL1 | vgic::ICC_ASGI1R_EL1 | vgic::ICC_SGI0R_EL1
                ) && !access.read =>
            {
                ExitKind::SgiSend
            }
            Exit::SysReg(_) => ExitKind::SysReg,
            Exit::DataAbort(_) => match device {
                Some(Emulated::GicDistributor) => ExitKind::Gicd,
                Some(Emulated::GicRedistributors) => ExitKind::Gicr,
                Some(Emulated::Uart) => ExitKind::Uart,
                Some(Emulated::Vsock) => ExitKind::Vsock,
                Some(Emulated::Input) => ExitKind::Input,
                None => ExitKind::Fault,
            },
            Exit::InstructionAbort { .. } => ExitKind::Fault,
            Exit::Other { .. } => ExitKind::Other,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Where a physical interrupt taken while a guest ran came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqSource {
    /// An EL1 timer, forwarded to the guest.
    Timer,
    /// A passed-through device's interrupt, forwarded.
    Device,
    /// mvmm's kick SGI or the vGIC maintenance interrupt.
    Kick,
    /// The physical UART (console input).
    Uart,
    /// mvmm's own devices (input, SMMU) and anything unexpected.
    Mvmm,
}

impl IrqSource {
    pub const ALL: [IrqSource; 5] = [
        IrqSource::Timer,
        IrqSource::Device,
        IrqSource::Kick,
        IrqSource::Uart,
        IrqSource::Mvmm,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            IrqSource::Timer => "timer",
            IrqSource::Device => "device",
            IrqSource::Kick => "kick",
            IrqSource::Uart => "uart",
            IrqSource::Mvmm => "mvmm",
        }
    }

    const fn index(self) -> usize {
        ExitKind::ALL.len() + self as usize
    }
}

/// Counters kept.
const SLOTS: usize = ExitKind::ALL.len() + IrqSource::ALL.len();

/// One CPU's counters. Written only by the CPU that owns them; read by any
/// (a sum taken while they run is a moment's approximation).
pub struct ExitCounters {
    slots: [AtomicU64; SLOTS],
}

impl Default for ExitCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl ExitCounters {
    pub const fn new() -> Self {
        ExitCounters {
            slots: [const { AtomicU64::new(0) }; SLOTS],
        }
    }

    fn bump(&self, slot: usize) {
        // One writer: a load and a store, no exclusive pair.
        let counter = &self.slots[slot];
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    /// Counts one exit of `kind`.
    pub fn exit(&self, kind: ExitKind) {
        self.bump(kind.index());
    }

    /// Counts one interrupt taken from `source`.
    pub fn irq(&self, source: IrqSource) {
        self.bump(source.index());
    }

    /// Sets every counter to zero (the VM restarts).
    pub fn clear(&self) {
        for slot in &self.slots {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// Adds these counters to `total`.
    pub fn add_to(&self, total: &mut ExitCounts) {
        for (sum, slot) in total.0.iter_mut().zip(&self.slots) {
            *sum = sum.wrapping_add(slot.load(Ordering::Relaxed));
        }
    }
}

/// A VM's counts: the sum of its CPUs' counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts([u64; SLOTS]);

impl ExitCounts {
    /// Exits of `kind`.
    pub fn exits(&self, kind: ExitKind) -> u64 {
        self.0[kind.index()]
    }

    /// Interrupts taken from `source`.
    pub fn irqs(&self, source: IrqSource) -> u64 {
        self.0[source.index()]
    }

    /// These counts less `earlier` (a run's counts less its boot's), kind
    /// by kind, never below zero.
    pub fn minus(&self, earlier: &ExitCounts) -> ExitCounts {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(earlier.0) {
            *a = a.saturating_sub(b);
        }
        out
    }

    /// Every exit, of every kind.
    pub fn total(&self) -> u64 {
        ExitKind::ALL.iter().map(|&k| self.exits(k)).sum()
    }

    /// Reads a line printed by [`fmt::Display`] (the part after
    /// `exits: `); `None` if it is not one.
    pub fn parse(text: &str) -> Option<ExitCounts> {
        let mut counts = ExitCounts::default();
        let (total, rest) = text.trim().split_once("; ")?;
        let total: u64 = total.strip_prefix("total ")?.parse().ok()?;
        let (exits, irqs) = rest.split_once("; irqs ")?;
        for item in exits.split(", ").filter(|s| *s != "none") {
            let (name, n) = item.split_once(' ')?;
            let kind = ExitKind::ALL.iter().find(|k| k.name() == name)?;
            counts.0[kind.index()] = n.parse().ok()?;
        }
        for item in irqs.split(", ").filter(|s| *s != "none") {
            let (name, n) = item.split_once(' ')?;
            let source = IrqSource::ALL.iter().find(|k| k.name() == name)?;
            counts.0[source.index()] = n.parse().ok()?;
        }
        (counts.total() == total).then_some(counts)
    }
}

/// `total N; irq N, wfi N, ...; irqs timer N, ...`: kinds with no exit and
/// sources with no interrupt are left out (`none` if that is all of them).
impl fmt::Display for ExitCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "total {}; ", self.total())?;
        counted(f, ExitKind::ALL.iter().map(|&k| (k.name(), self.exits(k))))?;
        f.write_str("; irqs ")?;
        counted(f, IrqSource::ALL.iter().map(|&s| (s.name(), self.irqs(s))))
    }
}

/// `name N, name N` for the non-zero counts, or `none`.
fn counted<'a>(
    f: &mut fmt::Formatter<'_>,
    counts: impl Iterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut first = true;
    for (name, n) in counts.filter(|&(_, n)| n > 0) {
        if !first {
            f.write_str(", ")?;
        }
        first = false;
        write!(f, "{name} {n}")?;
    }
    if first {
        f.write_str("none")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trap::SysRegAccess;

    fn sysreg_write(encoding: (u8, u8, u8, u8, u8)) -> Exit {
        let (op0, op1, crn, crm, op2) = encoding;
        Exit::SysReg(SysRegAccess {
            op0,
            op1,
            crn,
            crm,
            op2,
            rt: 1,
            read: false,
        })
    }

    #[test]
    fn exits_are_classified_by_class_register_and_device() {
        assert_eq!(ExitKind::of(&Exit::Wfi, None), ExitKind::Wfi);
        assert_eq!(ExitKind::of(&Exit::Hvc { imm: 0 }, None), ExitKind::Hvc);
        let sgi = Exit::decode(0x6200_0000 | (3 << 20) | (12 << 10) | (11 << 1) | (5 << 17));
        assert!(matches!(sgi, Exit::SysReg(a) if a.encoding() == vgic::ICC_SGI1R_EL1));
        assert_eq!(ExitKind::of(&sgi, None), ExitKind::SgiSend);
        assert_eq!(
            ExitKind::of(&sysreg_write((3, 0, 1, 0, 1)), None),
            ExitKind::SysReg
        );
        let abort = Exit::decode(0x9300_0046); // a data abort, ISV set
        assert!(matches!(abort, Exit::DataAbort(_)));
        for (device, kind) in [
            (Some(Emulated::GicDistributor), ExitKind::Gicd),
            (Some(Emulated::GicRedistributors), ExitKind::Gicr),
            (Some(Emulated::Uart), ExitKind::Uart),
            (Some(Emulated::Vsock), ExitKind::Vsock),
            (Some(Emulated::Input), ExitKind::Input),
            (None, ExitKind::Fault),
        ] {
            assert_eq!(ExitKind::of(&abort, device), kind);
        }
        assert_eq!(
            ExitKind::of(
                &Exit::Other {
                    class: 0x3f,
                    iss: 0
                },
                None
            ),
            ExitKind::Other
        );
    }

    #[test]
    fn counts_sum_over_cpus_print_and_parse_back() {
        let (a, b) = (ExitCounters::new(), ExitCounters::new());
        for _ in 0..3 {
            a.exit(ExitKind::Gicd);
        }
        b.exit(ExitKind::Gicd);
        b.exit(ExitKind::Irq);
        b.irq(IrqSource::Timer);
        b.irq(IrqSource::Kick);
        let mut sum = ExitCounts::default();
        a.add_to(&mut sum);
        b.add_to(&mut sum);
        assert_eq!(sum.exits(ExitKind::Gicd), 4);
        assert_eq!(sum.total(), 5);
        let line = sum.to_string();
        assert_eq!(line, "total 5; irq 1, mmio-gicd 4; irqs timer 1, kick 1");
        assert_eq!(ExitCounts::parse(&line), Some(sum));
        let mut boot = ExitCounts::default();
        b.add_to(&mut boot);
        assert_eq!(
            sum.minus(&boot).to_string(),
            "total 3; mmio-gicd 3; irqs none"
        );
        assert_eq!(boot.minus(&sum).total(), 0);
        a.clear();
        let mut again = ExitCounts::default();
        a.add_to(&mut again);
        assert_eq!(again, ExitCounts::default());
        assert_eq!(again.to_string(), "total 0; none; irqs none");
        assert_eq!(ExitCounts::parse(&again.to_string()), Some(again));
    }

    #[test]
    fn a_line_that_does_not_add_up_or_names_nothing_known_is_refused() {
        for bad in [
            "",
            "total 2; wfi 1; irqs none",
            "total 1; teleport 1; irqs none",
            "total 1; wfi x; irqs none",
            "total 1; wfi 1; irqs gremlin 3",
            "wfi 1",
        ] {
            assert_eq!(ExitCounts::parse(bad), None, "{bad:?}");
        }
    }
}
