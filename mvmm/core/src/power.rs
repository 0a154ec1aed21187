//! A VM's vCPU power states and its reset protocol.
//!
//! [`VmPower`] is the one place that decides which vCPU of a VM runs: PSCI
//! calls ([`VmPower::psci`]), the start of a powered-off vCPU
//! ([`VmPower::take_start`]) and a whole-VM reset. The EL2 layer holds it
//! under the VM's lock and does what each method returns.
//!
//! # The reset protocol
//!
//! A reset must rewrite the VM's RAM and devices, so no vCPU of the VM may
//! run while it happens; and it must complete whatever the timing, because
//! a vCPU that is slow to stop (a host that does not schedule an emulated
//! CPU for a while, a long guest critical section) is late, not lost.
//!
//! 1. The first vCPU that asks ([`VmPower::request_reset`]) owns the reset.
//!    Every other vCPU that is on is asked to stop and must be kicked; one
//!    that was about to start (CPU_ON pending) never starts.
//! 2. Each asked vCPU stops at its next exit ([`VmPower::at_exit`]), or at
//!    its next power call: it becomes Off and waits for a CPU_ON like any
//!    powered-off vCPU. A vCPU that asks for a reset while one is under way
//!    stops the same way, so two simultaneous requests reset the VM once.
//! 3. The owner waits until [`VmPower::ready_to_reset`]; there is no
//!    deadline on that wait. It then rewrites the VM and calls
//!    [`VmPower::finish_reset`]: the VM restarts as it boots, on vCPU 0
//!    alone (as after a real reset, the boot CPU runs and the others wait
//!    for CPU_ON). An owner that is vCPU 0 starts the entry itself; any
//!    other owner powers off and vCPU 0 takes the entry as a start.
//!
//! Only if the wait lasts far longer than any scheduling delay
//! ([`Overdue`]) does the owner say so, and at last power the machine off:
//! then mvmm itself is wedged, and hanging silently would be worse.
//!
//! # Invariants
//! - While a reset is under way, no vCPU other than the owner is `On` once
//!   [`VmPower::ready_to_reset`] holds, and none can become `On` again
//!   before [`VmPower::finish_reset`].
//! - `stop[i]` is set only for vCPUs that are `On`, and only during a reset.

use crate::partition::{MAX_CPUS, MemRange, VmKind};
use crate::psci::{self, Call, Outcome, VcpuPower};

/// What a VM's PSCI SYSTEM_OFF does beyond stopping the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterSystemOff {
    /// The machine powers off: the rich VM (the user's phone) turned off,
    /// or no VM runs any more.
    Machine,
    /// Only this VM stops; the others run on (a secure VM that stops ends
    /// the trusted path, and payments fail until the machine restarts).
    ThisVm,
}

/// The machine-wide effect of SYSTEM_OFF from a VM of kind `kind`, when
/// `every_vm_off` says whether no VM runs any more (the caller included).
pub fn after_system_off(kind: VmKind, every_vm_off: bool) -> AfterSystemOff {
    if kind == VmKind::Rich || every_vm_off {
        AfterSystemOff::Machine
    } else {
        AfterSystemOff::ThisVm
    }
}

/// What a vCPU does at an exit, or after asking for a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtExit {
    /// Go on handling the exit.
    Run,
    /// Stop here: this vCPU is now Off (another vCPU resets the VM); wait
    /// for a CPU_ON. Nothing about the exit is handled.
    Stop,
}

/// Where the VM restarts after a reset ([`VmPower::finish_reset`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// The owner is vCPU 0: it starts the VM's entry now.
    Here,
    /// The owner is another vCPU: it is Off now (it waits for a CPU_ON);
    /// vCPU 0 takes the entry with [`VmPower::take_start`] (wake it).
    BootVcpu,
}

/// The answer to a reset request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetRequest {
    /// The caller owns the reset: kick every vCPU in `kick` (a bit per
    /// vCPU), then wait for [`VmPower::ready_to_reset`].
    Owner { kick: u32 },
    /// A reset is already under way: the caller stops like [`AtExit::Stop`].
    Stop,
}

/// How long a reset has waited for the VM's vCPUs to stop, in counter
/// ticks: judged by [`Overdue::judge`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overdue {
    /// Nothing to say.
    No,
    /// Worth a line on the console (once) and another kick: a vCPU has not
    /// stopped for [`Overdue::WARN_SECONDS`].
    Warn,
    /// No vCPU takes this long to reach an exit once kicked unless mvmm
    /// itself is wedged: power the machine off rather than hang.
    Wedged,
}

impl Overdue {
    /// Seconds of counter time after which a waiting reset is reported.
    pub const WARN_SECONDS: u64 = 10;
    /// Seconds after which mvmm gives up on the machine. Far beyond any
    /// scheduling delay of an emulated or real CPU: reaching it means a
    /// CPU of mvmm is stuck with interrupts masked.
    pub const WEDGED_SECONDS: u64 = 300;

    /// Judges a wait that started at counter value `since`, now `now`, with
    /// `frequency` ticks per second.
    pub fn judge(since: u64, now: u64, frequency: u64) -> Overdue {
        let waited = now.saturating_sub(since);
        if waited >= Self::WEDGED_SECONDS.saturating_mul(frequency) {
            Overdue::Wedged
        } else if waited >= Self::WARN_SECONDS.saturating_mul(frequency) {
            Overdue::Warn
        } else {
            Overdue::No
        }
    }
}

/// The power state of every vCPU of one VM, and its reset in progress.
#[derive(Clone, Debug)]
pub struct VmPower {
    vcpus: [VcpuPower; MAX_CPUS],
    count: usize,
    /// vCPUs asked to stop for the reset in progress.
    stop: [bool; MAX_CPUS],
    /// The vCPU that owns the reset in progress.
    reset_owner: Option<usize>,
}

impl VmPower {
    /// A VM of `count` vCPUs (at most [`MAX_CPUS`]), all off.
    pub const fn new(count: usize) -> VmPower {
        VmPower {
            vcpus: [VcpuPower::Off; MAX_CPUS],
            count: if count > MAX_CPUS { MAX_CPUS } else { count },
            stop: [false; MAX_CPUS],
            reset_owner: None,
        }
    }

    /// The VM's power state at boot: vCPU 0 runs.
    pub fn boot(&mut self) {
        if self.count > 0 {
            self.vcpus[0] = VcpuPower::On;
        }
    }

    /// The state of vCPU `vcpu` (Off for an index the VM does not have).
    pub fn state(&self, vcpu: usize) -> VcpuPower {
        self.vcpus().get(vcpu).copied().unwrap_or(VcpuPower::Off)
    }

    fn vcpus(&self) -> &[VcpuPower] {
        &self.vcpus[..self.count]
    }

    /// Whether a reset is under way.
    pub fn resetting(&self) -> bool {
        self.reset_owner.is_some()
    }

    /// At every exit of vCPU `vcpu`, before anything else: stops it if a
    /// reset asked it to.
    pub fn at_exit(&mut self, vcpu: usize) -> AtExit {
        if vcpu < self.count && core::mem::take(&mut self.stop[vcpu]) {
            self.vcpus[vcpu] = VcpuPower::Off;
            AtExit::Stop
        } else {
            AtExit::Run
        }
    }

    /// A PSCI call of vCPU `caller`. A caller that a reset asked to stop
    /// stops instead ([`Outcome::StopCaller`]), whatever it asked.
    /// [`Outcome::SystemReset`] is answered by [`VmPower::request_reset`].
    pub fn psci(&mut self, call: Call, caller: usize, ram: &[MemRange]) -> Outcome {
        if self.at_exit(caller) == AtExit::Stop {
            return Outcome::StopCaller;
        }
        let count = self.count;
        psci::handle(call, caller, &mut self.vcpus[..count], ram)
    }

    /// vCPU `caller` asks for the VM to be reset (PSCI SYSTEM_RESET).
    pub fn request_reset(&mut self, caller: usize) -> ResetRequest {
        if self.at_exit(caller) == AtExit::Stop {
            return ResetRequest::Stop;
        }
        if self.reset_owner.is_some() {
            // Not reachable through mvmm (a vCPU running during a reset has
            // been asked to stop), but the answer is the same.
            if let Some(state) = self.vcpus[..self.count].get_mut(caller) {
                *state = VcpuPower::Off;
            }
            return ResetRequest::Stop;
        }
        self.reset_owner = Some(caller);
        let mut kick = 0;
        for other in (0..self.count).filter(|&i| i != caller) {
            match self.vcpus[other] {
                VcpuPower::On => {
                    self.stop[other] = true;
                    kick |= 1 << other;
                }
                // A CPU_ON not yet taken up: that vCPU never starts.
                VcpuPower::OnPending { .. } => self.vcpus[other] = VcpuPower::Off,
                VcpuPower::Off => {}
            }
        }
        ResetRequest::Owner { kick }
    }

    /// The vCPUs the reset in progress still waits for (a bit each): kick
    /// them again when the wait is long.
    pub fn waiting_for(&self) -> u32 {
        (0..self.count)
            .filter(|&i| self.stop[i])
            .fold(0, |mask, i| mask | 1 << i)
    }

    /// Whether the owner of the reset may rewrite the VM: every other vCPU
    /// has stopped.
    pub fn ready_to_reset(&self) -> bool {
        self.reset_owner.is_some_and(|owner| {
            (0..self.count).all(|i| i == owner || self.vcpus[i] == VcpuPower::Off)
        })
    }

    /// The reset is done: vCPU 0 is the VM's one vCPU that runs, from
    /// `entry` with `context` in x0. `None` (and nothing changes) when
    /// `owner` does not own a reset that is ready.
    pub fn finish_reset(&mut self, owner: usize, entry: u64, context: u64) -> Option<Restart> {
        if self.reset_owner != Some(owner) || !self.ready_to_reset() || self.count == 0 {
            return None;
        }
        self.vcpus = [VcpuPower::Off; MAX_CPUS];
        self.stop = [false; MAX_CPUS];
        self.reset_owner = None;
        if owner == 0 {
            self.vcpus[0] = VcpuPower::On;
            Some(Restart::Here)
        } else {
            self.vcpus[0] = VcpuPower::OnPending { entry, context };
            Some(Restart::BootVcpu)
        }
    }

    /// On a powered-off vCPU waiting for a CPU_ON: its entry point and
    /// context if it may start now (it is then On).
    pub fn take_start(&mut self, vcpu: usize) -> Option<(u64, u64)> {
        if self.reset_owner.is_some() {
            return None;
        }
        match self.vcpus().get(vcpu) {
            Some(&VcpuPower::OnPending { entry, context }) => {
                self.vcpus[vcpu] = VcpuPower::On;
                Some((entry, context))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psci::fid;

    const RAM: &[MemRange] = &[MemRange::new(0x5000_0000, 0x1000_0000)];

    fn cpu_on(target: u64) -> Call {
        Call::decode([u64::from(fid::CPU_ON_64), target, 0x5000_0000, 7])
    }

    fn off() -> Call {
        Call::decode([u64::from(fid::CPU_OFF), 0, 0, 0])
    }

    /// Two vCPUs, both running.
    fn both_on() -> VmPower {
        let mut p = VmPower::new(2);
        p.boot();
        assert_eq!(p.psci(cpu_on(1), 0, RAM), Outcome::StartVcpu { vcpu: 1 });
        assert_eq!(p.take_start(1), Some((0x5000_0000, 7)));
        p
    }

    #[test]
    fn a_reset_waits_for_the_other_vcpu_however_long_it_takes() {
        let mut p = both_on();
        assert_eq!(p.request_reset(0), ResetRequest::Owner { kick: 0b10 });
        // However many times the owner looks, it is not ready until vCPU 1
        // reaches an exit: no deadline decides anything.
        for _ in 0..1000 {
            assert!(!p.ready_to_reset());
        }
        assert_eq!(p.waiting_for(), 0b10);
        assert_eq!(p.at_exit(1), AtExit::Stop);
        assert!(p.ready_to_reset());
        assert_eq!(p.finish_reset(0, 0x5000_0000, 0), Some(Restart::Here));
        assert_eq!(p.state(0), VcpuPower::On);
        assert_eq!(p.state(1), VcpuPower::Off);
        assert!(!p.resetting());
    }

    #[test]
    fn a_pending_cpu_on_never_starts_during_a_reset() {
        let mut p = VmPower::new(2);
        p.boot();
        assert_eq!(p.psci(cpu_on(1), 0, RAM), Outcome::StartVcpu { vcpu: 1 });
        assert_eq!(p.request_reset(0), ResetRequest::Owner { kick: 0 });
        assert_eq!(p.take_start(1), None);
        assert!(p.ready_to_reset());
        assert_eq!(p.finish_reset(0, 0x5000_0000, 0), Some(Restart::Here));
        assert_eq!(p.take_start(1), None);
    }

    #[test]
    fn only_the_owner_of_a_ready_reset_finishes_it() {
        let mut p = both_on();
        assert_eq!(p.finish_reset(0, 0x5000_0000, 0), None);
        p.request_reset(1);
        assert_eq!(
            p.finish_reset(1, 0x5000_0000, 0),
            None,
            "vCPU 0 has not stopped"
        );
        assert_eq!(p.at_exit(0), AtExit::Stop);
        assert_eq!(
            p.finish_reset(0, 0x5000_0000, 0),
            None,
            "vCPU 0 does not own the reset"
        );
        // vCPU 1 owns it, but the VM restarts on vCPU 0, as it boots.
        assert_eq!(p.finish_reset(1, 0x5000_0000, 9), Some(Restart::BootVcpu));
        assert_eq!(p.state(1), VcpuPower::Off);
        assert_eq!(p.take_start(1), None);
        assert_eq!(p.take_start(0), Some((0x5000_0000, 9)));
        assert_eq!(p.state(0), VcpuPower::On);
    }

    #[test]
    fn overdue_judges_counter_time_only_far_beyond_scheduling_delays() {
        let hz = 62_500_000;
        assert_eq!(Overdue::judge(100, 100 + hz, hz), Overdue::No);
        assert_eq!(
            Overdue::judge(0, Overdue::WARN_SECONDS * hz, hz),
            Overdue::Warn
        );
        assert_eq!(
            Overdue::judge(0, Overdue::WEDGED_SECONDS * hz, hz),
            Overdue::Wedged
        );
        // A counter that went backwards (never on hardware) is no wait.
        assert_eq!(Overdue::judge(u64::MAX, 0, hz), Overdue::No);
    }

    /// What one vCPU of the model does next.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Act {
        /// Runs guest code and traps (an exit of any kind).
        Exit,
        /// Calls PSCI SYSTEM_RESET.
        Reset,
        /// Calls PSCI CPU_OFF.
        CpuOff,
        /// Calls PSCI CPU_ON for the other vCPU.
        CpuOnOther,
    }

    /// Where one vCPU of the model is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Pc {
        /// Running its script at this step.
        Script(usize),
        /// Owns a reset and polls for it to be ready.
        Owner,
        /// Off, waiting for a CPU_ON.
        Parked,
        /// Restarted the VM after its reset: done.
        Restarted,
    }

    #[derive(Clone, Debug)]
    struct World {
        power: VmPower,
        pc: [Pc; 2],
        resets_done: u32,
    }

    impl World {
        /// The atomic steps vCPU `v` may take now (each one call under the
        /// VM's lock, as in mvmm).
        fn step(&self, v: usize, scripts: &[&[Act]; 2]) -> Option<World> {
            let mut w = self.clone();
            match self.pc[v] {
                Pc::Script(i) => {
                    let &act = scripts[v].get(i)?;
                    w.pc[v] = Pc::Script(i + 1);
                    let stopped = match act {
                        Act::Exit => w.power.at_exit(v) == AtExit::Stop,
                        Act::Reset => match w.power.request_reset(v) {
                            ResetRequest::Owner { .. } => {
                                w.pc[v] = Pc::Owner;
                                false
                            }
                            ResetRequest::Stop => true,
                        },
                        Act::CpuOff => w.power.psci(off(), v, RAM) == Outcome::StopCaller,
                        Act::CpuOnOther => {
                            let _ = w.power.psci(cpu_on(1 - v as u64), v, RAM);
                            w.power.state(v) == VcpuPower::Off
                        }
                    };
                    if stopped {
                        w.pc[v] = Pc::Parked;
                    }
                }
                Pc::Owner => {
                    if !w.power.ready_to_reset() {
                        return None;
                    }
                    w.resets_done += 1;
                    w.pc[v] = match w.power.finish_reset(v, 0x5000_0000, 0) {
                        Some(Restart::Here) => Pc::Restarted,
                        // vCPU 0 takes the entry; the owner waits.
                        Some(Restart::BootVcpu) => Pc::Parked,
                        None => panic!("a ready reset did not finish: {w:?}"),
                    };
                }
                Pc::Parked => {
                    w.power.take_start(v)?;
                    w.pc[v] = Pc::Script(usize::MAX);
                }
                Pc::Restarted => return None,
            }
            Some(w)
        }

        fn check(&self) {
            // While a reset is ready, only its owner may be on.
            if self.power.ready_to_reset() {
                let owner = self.power.reset_owner.unwrap();
                assert_eq!(self.power.state(1 - owner), VcpuPower::Off, "{self:?}");
            }
        }
    }

    /// Explores every interleaving of the two vCPUs' atomic steps; a vCPU
    /// that finished its script keeps taking exits while it runs (a kick
    /// always produces one). Returns the number of final states.
    fn explore(w: World, scripts: &[&[Act]; 2], finals: &mut u32) {
        w.check();
        let mut moved = false;
        for v in 0..2 {
            let mut next = w.step(v, scripts);
            // A running vCPU past its script still exits when kicked.
            if next.is_none()
                && matches!(w.pc[v], Pc::Script(_))
                && w.power.state(v) == VcpuPower::On
                && w.power.stop[v]
            {
                let mut n = w.clone();
                assert_eq!(n.power.at_exit(v), AtExit::Stop);
                n.pc[v] = Pc::Parked;
                next = Some(n);
            }
            if let Some(n) = next {
                moved = true;
                explore(n, scripts, finals);
            }
        }
        if !moved {
            *finals += 1;
            // Never stuck: a reset that was asked for completed, once.
            assert!(!w.power.resetting(), "stuck mid-reset: {w:?}");
            if w.resets_done > 0 {
                assert_eq!(w.resets_done, 1, "{w:?}");
                let on = (0..2).filter(|&v| w.power.state(v) == VcpuPower::On);
                assert_eq!(on.count(), 1, "exactly one vCPU runs after a reset: {w:?}");
                assert_eq!(
                    w.power.state(0),
                    VcpuPower::On,
                    "the VM restarts on vCPU 0, as it boots: {w:?}"
                );
            }
        }
    }

    fn every_interleaving(scripts: [&[Act]; 2]) -> u32 {
        let world = World {
            power: both_on(),
            pc: [Pc::Script(0), Pc::Script(0)],
            resets_done: 0,
        };
        let mut finals = 0;
        explore(world, &scripts, &mut finals);
        assert!(finals > 0);
        finals
    }

    #[test]
    fn every_interleaving_of_a_reset_and_a_running_vcpu_completes_once() {
        use Act::*;
        every_interleaving([&[Reset], &[Exit, Exit, Exit]]);
        every_interleaving([&[Exit, Reset], &[Exit]]);
    }

    #[test]
    fn every_interleaving_of_two_simultaneous_resets_resets_once() {
        use Act::*;
        let finals = every_interleaving([&[Reset], &[Reset]]);
        assert!(finals >= 2, "both orders explored");
        every_interleaving([&[Exit, Reset], &[Reset, Exit]]);
    }

    #[test]
    fn every_interleaving_of_cpu_off_racing_a_reset_completes() {
        use Act::*;
        every_interleaving([&[Reset], &[CpuOff]]);
        every_interleaving([&[CpuOff], &[Reset]]);
        every_interleaving([&[Exit, Reset], &[Exit, CpuOff, Exit]]);
    }

    #[test]
    fn every_interleaving_of_cpu_on_racing_a_reset_completes() {
        use Act::*;
        // vCPU 1 powers itself off, then vCPU 0 brings it back while
        // vCPU 1... is parked; or vCPU 0 resets while vCPU 1 turns on.
        every_interleaving([&[CpuOnOther, Reset], &[CpuOff]]);
        every_interleaving([&[Reset], &[CpuOff, Exit]]);
        every_interleaving([&[CpuOnOther, Exit, Reset], &[CpuOff, CpuOnOther]]);
    }

    #[test]
    fn the_rich_vm_or_the_last_vm_turns_the_machine_off() {
        assert_eq!(
            after_system_off(VmKind::Rich, false),
            AfterSystemOff::Machine
        );
        assert_eq!(
            after_system_off(VmKind::Rich, true),
            AfterSystemOff::Machine
        );
        assert_eq!(
            after_system_off(VmKind::Secure, false),
            AfterSystemOff::ThisVm
        );
        assert_eq!(
            after_system_off(VmKind::Secure, true),
            AfterSystemOff::Machine
        );
    }
}
