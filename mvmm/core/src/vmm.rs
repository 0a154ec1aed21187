//! `Vmm`: the state of every VM mvmm runs, and the decisions its exits and
//! interrupts call for.
//!
//! mvmm's EL2 code (`mvmm/src/hv`) asks a [`Vmm`] what an exit means
//! ([`Vmm::on_exit`]), hands it the emulated accesses (virtual UART, virtual
//! GIC, SGIs, typed input), and carries out what comes back: a value loaded
//! into a register, a byte for the console, vCPUs to notify of a raised
//! interrupt, a fault to inject, a log line. Hardware access (list
//! registers, the physical GIC and UART, guest registers) stays in EL2 code;
//! everything here runs under `cargo test` on the host.
//!
//! # Locking
//! - One lock per VM ([`Vmm::vm`]) guards its [`VmState`]: virtual UART,
//!   virtual GIC, power state, fault count. No code holds two VMs' locks at
//!   once.
//! - The typed-input queue has its own lock, taken *before* a VM's lock
//!   when both are needed ([`Vmm::feed_input`], [`Vmm::move_focus`]).
//! - mvmm's other locks come after these: the console multiplexer, then the
//!   arch layer's register locks (the physical GIC's, the PL011's), each
//!   held only while registers are touched; the VMM channel's switch is
//!   never held with the input queue.
//! - The focus is an atomic, written only under the input queue's lock, so
//!   typed bytes and the focus change are ordered.
//!
//! The lock type's waiting strategy is a parameter: mvmm's waiters yield
//! (`arch::Yield`), host tests spin.

use crate::bus::{Bus, BusError, Emulated};
use crate::console::{FocusChange, InputQueue, focus_change};
use crate::hypercall::{self, Hypercall, Refusal};
use crate::irq::{self, Physical};
use crate::partition::{Board, MAX_VMS, VmKind};
use crate::power::{AfterSystemOff, AtExit, VmPower, after_system_off};
use crate::psci::{Call, Outcome};
use crate::trap::{
    self, DataAbort, Exit, Fault, GuestPosition, Injection, SysRegAccess, SysRegAction,
};
use crate::trng;
use crate::vgic::{self, Vgic};
use crate::vuart::{BadAccess, VirtualPl011};
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::RelaxStrategy;
use spin::mutex::{Mutex, MutexGuard};

/// Faults logged per VM before mvmm only counts them: a guest must not be
/// able to flood the console.
pub const FAULT_LOG_LIMIT: u32 = 32;

/// What mvmm keeps per VM.
pub struct VmState {
    /// The VM's virtual PL011 (its console).
    pub uart: VirtualPl011,
    /// The VM's virtual GIC: distributor, redistributors, pending state.
    pub vgic: Vgic,
    /// Which vCPUs run, and the VM's reset in progress.
    pub power: VmPower,
    /// Physical address of the VM's stage-2 root table (0: none built).
    pub stage2_root: u64,
    /// Guest faults seen (see [`FAULT_LOG_LIMIT`]).
    pub faults: u32,
    /// The VM does not run: powered off, refused at boot, or stopped.
    pub off: bool,
}

impl VmState {
    const fn new() -> Self {
        VmState {
            uart: VirtualPl011::new(),
            vgic: Vgic::new(1),
            power: VmPower::new(0),
            stage2_root: 0,
            faults: 0,
            off: false,
        }
    }

    /// Fresh virtual devices for a VM of `vcpus` vCPUs (boot, reset).
    pub fn reset_devices(&mut self, vcpus: usize) {
        self.uart = VirtualPl011::new();
        self.vgic = Vgic::new(vcpus);
    }

    /// Makes the virtual UART's interrupt line `irq` follow the UART:
    /// raised (returning the vCPU to notify) or lowered.
    pub fn update_uart_irq(&mut self, irq: u32) -> Option<usize> {
        if self.uart.interrupt_pending() {
            self.vgic.raise(0, irq)
        } else {
            self.vgic.lower(0, irq);
            None
        }
    }
}

/// What an exit calls for ([`Vmm::on_exit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// WFI: show what the VM printed without a newline (a prompt), step
    /// over, and wait for an interrupt.
    Idle,
    /// Step over the instruction and go on (WFE; a system register write
    /// that has no effect).
    Step,
    /// A power or vendor call (PSCI, TRNG, mvmm's hypercalls). A trapped
    /// SMC returns to the SMC itself, so it is stepped over first
    /// (`step_over`); an HVC returns to the next instruction already.
    Call { step_over: bool },
    /// A write to ICC_SGI1R_EL1 (or a sibling): SGIs to the VM's vCPUs
    /// ([`Vmm::send_sgi`]), then step over.
    SendSgi(SysRegAccess),
    /// A register that reads as zero and ignores writes (debug, PMU):
    /// load zero into `rt` on a read, then step over.
    ReadZero(SysRegAccess),
    /// An access to the emulated device `device` at `offset` from its base
    /// (the VM's bus, `crate::bus`), as `abort` describes it.
    Emulate {
        device: Emulated,
        offset: u64,
        abort: DataAbort,
    },
    /// Refused: logged ([`Vmm::note_fault`]) and `fault` injected.
    Refuse { fault: Fault, cause: Cause },
}

/// Why an exit was refused (what the log says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// A system register mvmm does not emulate.
    SysReg(SysRegAccess),
    /// A data access outside the VM's partition, or one the syndrome does
    /// not describe (no emulation from guessing).
    DataOutside { ipa: u64, write: bool },
    /// An instruction fetch outside the VM's partition.
    FetchOutside { ipa: u64, status: u8 },
    /// An exception class mvmm does not handle.
    Unexpected { class: u8, iss: u32 },
}

/// Whether a fault is logged ([`Vmm::note_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultLog {
    /// Log it.
    Log,
    /// Log it, and say that later ones are only counted.
    LogLast,
    /// Only count it.
    Count,
}

/// A guest's load or store on an emulated register, as the syndrome
/// describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub offset: u64,
    /// 1, 2, 4 or 8 bytes.
    pub size: u8,
    /// `Some(value)` for a store, `None` for a load.
    pub store: Option<u64>,
}

impl Access {
    /// The access `abort` describes, at `offset`; `value` is the guest's
    /// transfer register (used for a store).
    pub fn of(abort: &DataAbort, offset: u64, value: u64) -> Access {
        Access {
            offset,
            size: abort.size,
            store: abort.write.then_some(value),
        }
    }
}

/// What an emulated access did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done {
    /// The value a load returns (sign- or zero-extended as the guest asked
    /// by the caller, `trap::load_value`).
    pub load: Option<u64>,
    /// A byte the VM wrote to its console.
    pub output: Option<u8>,
    /// vCPUs of the VM to notify (a bit per vCPU): an interrupt was raised
    /// for them, or may have become deliverable.
    pub notify: u32,
}

/// What moving typed input did ([`Vmm::feed_input`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Bytes the full queue dropped since the last report.
    pub dropped: usize,
    /// The vCPU of the VM fed to notify of a raised UART interrupt.
    pub notify: Option<usize>,
}

/// The board a [`Vmm`] runs on, as a type: mvmm's board is a constant
/// generated from the board file, so every fact of it the `Vmm` looks at
/// (the UART's interrupt, the GIC's addresses, each VM's CPUs) folds into
/// the code instead of being loaded and walked on every exit.
pub trait OnBoard {
    const BOARD: Board<'static>;
}

/// Every VM's state, on board `B`. See the module docs for the locking.
pub struct Vmm<B: OnBoard, R: RelaxStrategy> {
    board: core::marker::PhantomData<B>,
    vms: [Mutex<VmState, R>; MAX_VMS],
    buses: spin::Once<[Bus; MAX_VMS]>,
    input: Mutex<InputQueue, R>,
    focus: AtomicUsize,
}

impl<B: OnBoard, R: RelaxStrategy> Default for Vmm<B, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: OnBoard, R: RelaxStrategy> Vmm<B, R> {
    /// The board's VMs.
    const VMS: &'static [crate::partition::Vm<'static>] = B::BOARD.vms;

    /// A `Vmm` with no VM set up yet ([`Vmm::start`]); `const`, so mvmm
    /// holds it in a `static`.
    pub const fn new() -> Self {
        Vmm {
            board: core::marker::PhantomData,
            vms: [const { Mutex::new(VmState::new()) }; MAX_VMS],
            buses: spin::Once::new(),
            input: Mutex::new(InputQueue::new()),
            focus: AtomicUsize::new(0),
        }
    }

    /// Sets every VM up from the board: its device bus, its virtual GIC and
    /// power state for its vCPUs, console focus on the rich VM. `failed` is
    /// told of a VM whose bus cannot be built (the build validates the
    /// board, so this is an mvmm bug); that VM gets an empty bus, so each of
    /// its accesses faults, and is marked off.
    pub fn start(&self, mut failed: impl FnMut(usize, BusError)) {
        let mut errors: [Option<BusError>; MAX_VMS] = [None; MAX_VMS];
        self.buses.call_once(|| {
            core::array::from_fn(
                |i| match Self::VMS.get(i).map(|vm| Bus::for_vm(&B::BOARD, vm)) {
                    Some(Ok(bus)) => bus,
                    Some(Err(e)) => {
                        errors[i] = Some(e);
                        Bus::new()
                    }
                    None => Bus::new(),
                },
            )
        });
        for (i, vm) in Self::VMS.iter().enumerate().take(MAX_VMS) {
            let mut state = self.vms[i].lock();
            state.reset_devices(vm.cpus.len());
            state.power = VmPower::new(vm.cpus.len());
            if let Some(e) = errors[i] {
                state.off = true;
                drop(state);
                failed(i, e);
            }
        }
        self.focus.store(self.rich(), Ordering::Relaxed);
    }

    /// VM `vm`'s state, locked. Panics on an index the board does not have
    /// (mvmm's own indices, never a guest's value).
    #[inline]
    pub fn vm(&self, vm: usize) -> MutexGuard<'_, VmState, R> {
        self.vms[vm].lock()
    }

    /// The index of the board's rich VM (0 when it has none).
    fn rich(&self) -> usize {
        Self::VMS
            .iter()
            .position(|v| v.kind == VmKind::Rich)
            .unwrap_or(0)
    }

    // ----- exits -----

    /// What exit `exit` of VM `vm` calls for. `ipa` is the faulting
    /// guest-physical address of an abort (HPFAR_EL2 with FAR_EL2's page
    /// offset); it is not looked at for other exits.
    #[inline]
    pub fn on_exit(&self, vm: usize, exit: &Exit, ipa: u64) -> ExitAction {
        match *exit {
            Exit::Wfi => ExitAction::Idle,
            Exit::Wfe => ExitAction::Step,
            Exit::Hvc { .. } => ExitAction::Call { step_over: false },
            Exit::Smc { .. } => ExitAction::Call { step_over: true },
            Exit::SysReg(access) => match access.action() {
                SysRegAction::SendSgi => ExitAction::SendSgi(access),
                SysRegAction::ReadZero => ExitAction::ReadZero(access),
                SysRegAction::Ignore => ExitAction::Step,
                SysRegAction::Undefined => ExitAction::Refuse {
                    fault: Fault::Undefined,
                    cause: Cause::SysReg(access),
                },
            },
            Exit::DataAbort(abort) => match self.device_at(vm, ipa, &abort) {
                Some((device, offset)) => ExitAction::Emulate {
                    device,
                    offset,
                    abort,
                },
                None => ExitAction::Refuse {
                    fault: Fault::DataAbort { write: abort.write },
                    cause: Cause::DataOutside {
                        ipa,
                        write: abort.write,
                    },
                },
            },
            Exit::InstructionAbort { status } => ExitAction::Refuse {
                fault: Fault::InstructionAbort,
                cause: Cause::FetchOutside { ipa, status },
            },
            Exit::Other { class, iss } => ExitAction::Refuse {
                fault: Fault::Undefined,
                cause: Cause::Unexpected { class, iss },
            },
        }
    }

    /// The emulated device of VM `vm` that answers a data abort at `ipa`:
    /// only an access the syndrome describes fully (and not one made by
    /// the guest's own table walk) is emulated.
    #[inline]
    pub fn device_at(&self, vm: usize, ipa: u64, abort: &DataAbort) -> Option<(Emulated, u64)> {
        if !abort.syndrome_valid || abort.stage1_walk {
            return None;
        }
        self.buses.get()?.get(vm)?.lookup(ipa)
    }

    /// Counts a fault of VM `vm` and says whether to log it.
    pub fn note_fault(&self, vm: usize) -> FaultLog {
        let mut state = self.vm(vm);
        state.faults = state.faults.saturating_add(1);
        match state.faults {
            n if n < FAULT_LOG_LIMIT => FaultLog::Log,
            FAULT_LOG_LIMIT => FaultLog::LogLast,
            _ => FaultLog::Count,
        }
    }

    /// How to deliver `fault` to VM `vm`'s EL1 from `at`
    /// (`crate::trap::inject`), or `None` when the guest cannot take
    /// exceptions and would only fault again, for ever: then its vCPU is
    /// stopped. That is so when, with its stage 1 off (`stage1_on` false),
    /// VBAR_EL1 (then a guest-physical address) does not lie in its RAM,
    /// or when the fault is an instruction abort inside the vector table
    /// itself (with stage 1 on, a vector that faults at stage 2 shows up
    /// that way).
    pub fn injection(
        &self,
        vm: usize,
        fault: Fault,
        at: GuestPosition,
        stage1_on: bool,
    ) -> Option<Injection> {
        const VECTORS: u64 = 0x800;
        let ram = Self::VMS.get(vm)?.ram;
        let vectors_outside = !stage1_on && !ram.iter().any(|r| r.contains_range(at.vbar, VECTORS));
        let fault_in_vectors =
            fault == Fault::InstructionAbort && at.pc.wrapping_sub(at.vbar) < VECTORS;
        (!vectors_outside && !fault_in_vectors).then(|| trap::inject(fault, at))
    }

    // ----- the virtual UART and typed input -----

    /// A load or store on VM `vm`'s virtual PL011. A store may give a byte
    /// for the console; either may raise the UART's interrupt.
    #[inline]
    pub fn uart_access(&self, vm: usize, access: Access) -> Result<Done, BadAccess> {
        let mut state = self.vm(vm);
        let mut done = Done::default();
        match access.store {
            Some(value) => {
                done.output = state.uart.write(access.offset, access.size, value as u32)?;
            }
            None => {
                done.load = Some(u64::from(state.uart.read(access.offset, access.size)?));
            }
        }
        if let Some(vcpu) = state.update_uart_irq(B::BOARD.uart.irq) {
            done.notify = 1 << vcpu;
        }
        Ok(done)
    }

    /// Re-evaluates VM `vm`'s UART interrupt (a level interrupt still high
    /// after the guest's end of interrupt is raised again); the vCPU to
    /// notify.
    #[inline]
    pub fn uart_line(&self, vm: usize) -> Option<usize> {
        self.vm(vm).update_uart_irq(B::BOARD.uart.irq)
    }

    /// Queues `typed` (what the physical UART holds), then moves as much as
    /// fits into VM `vm`'s receive FIFO if `vm` has focus. Every byte is
    /// taken from the UART even when the queue is full (so its interrupt
    /// clears and nothing spins); the queue drops the excess and says so.
    pub fn feed_input(&self, vm: usize, typed: impl Iterator<Item = u8>) -> Fed {
        let mut input = self.input.lock();
        for byte in typed {
            input.push(byte);
        }
        let mut fed = Fed {
            dropped: input.take_dropped(),
            notify: None,
        };
        if self.focus.load(Ordering::Relaxed) != vm {
            return fed;
        }
        let mut state = self.vm(vm);
        while state.uart.input_space() > 0 {
            let Some(byte) = input.pop() else {
                break;
            };
            state.uart.push_input(byte);
        }
        fed.notify = state.update_uart_irq(B::BOARD.uart.irq);
        fed
    }

    /// The VM whose virtual UART receives typed input.
    #[inline]
    pub fn focus(&self) -> usize {
        self.focus.load(Ordering::Relaxed)
    }

    /// What moving focus to secure VM `vm` (`take`), or back to the rich
    /// VM, involves, in order (`crate::console::focus_change`).
    pub fn focus_change(&self, vm: usize, take: bool) -> FocusChange {
        focus_change(&B::BOARD, vm, take)
    }

    /// Moves focus to VM `to`. What was typed and not yet taken was for the
    /// VM that had focus: it is discarded, never handed to the other one
    /// (type-ahead into a trusted prompt, or the rest of a PIN into the
    /// rich VM). Returns how many bytes were discarded.
    pub fn move_focus(&self, to: usize) -> usize {
        let mut input = self.input.lock();
        self.focus.store(to, Ordering::Relaxed);
        input.clear()
    }

    // ----- the virtual GIC -----

    /// A write of `value` to ICC_SGI1R_EL1 by vCPU `vcpu` of VM `vm`: the
    /// SGI is made pending for each vCPU it names; returns the vCPUs to
    /// notify (a bit per vCPU).
    #[inline]
    pub fn send_sgi(&self, vm: usize, vcpu: usize, value: u64) -> u32 {
        let vcpus = Self::VMS.get(vm).map_or(0, |v| v.cpus.len());
        let mut state = self.vm(vm);
        let (intid, mask) = state.vgic.sgi_targets(vcpu, value);
        let mut notify = 0u32;
        for target in (0..vcpus.min(32)).filter(|t| mask & (1 << t) != 0) {
            if state.vgic.raise(target, intid).is_some() {
                notify |= 1 << target;
            }
        }
        notify
    }

    /// A load or store on VM `vm`'s virtual GIC at guest-physical `ipa` (in
    /// its distributor or its redistributors). `live` says what the
    /// hardware holds of an interrupt (list registers, the physical GIC for
    /// forwarded ones) for the pending and active registers. A store
    /// notifies every vCPU: an enable or a priority change may have made a
    /// queued interrupt deliverable.
    #[inline]
    pub fn gic_access(
        &self,
        vm: usize,
        ipa: u64,
        access: Access,
        live: &dyn Fn(usize, u32) -> vgic::Live,
    ) -> Result<Done, vgic::BadAccess> {
        let gic = B::BOARD.gic;
        let mut state = self.vm(vm);
        let mut done = Done::default();
        if gic.distributor.contains(ipa) {
            let offset = ipa - gic.distributor.base;
            match access.store {
                Some(value) => state.vgic.dist_write(offset, access.size, value)?,
                None => done.load = Some(state.vgic.dist_read_live(offset, access.size, live)?),
            }
        } else if gic.redistributors.contains(ipa) && gic.redistributor_stride != 0 {
            let rel = ipa - gic.redistributors.base;
            let (target, offset) = (
                (rel / gic.redistributor_stride) as usize,
                rel % gic.redistributor_stride,
            );
            match access.store {
                Some(value) => state
                    .vgic
                    .redist_write(target, offset, access.size, value)?,
                None => {
                    done.load = Some(state.vgic.redist_read_live(
                        target,
                        offset,
                        access.size,
                        live,
                    )?)
                }
            }
        } else {
            return Err(vgic::BadAccess);
        }
        if access.store.is_some() {
            let vcpus = Self::VMS.get(vm).map_or(0, |v| v.cpus.len());
            done.notify = if vcpus >= 32 {
                u32::MAX
            } else {
                (1u32 << vcpus) - 1
            };
        }
        Ok(done)
    }

    /// An emulated device of VM `vm` signals its interrupt `intid` (an
    /// edge: vsock and input have new used buffers): pending for vCPU 0, or
    /// for the vCPU the guest routed the SPI to; returns the vCPU to notify
    /// when the guest has it enabled.
    #[inline]
    pub fn raise(&self, vm: usize, intid: u32) -> Option<usize> {
        self.vm(vm).vgic.raise(0, intid)
    }

    /// The physical interrupts of the devices passed through to VM `vm`,
    /// with each device's name.
    pub fn device_irqs(&self, vm: usize) -> impl Iterator<Item = (u32, &'static str)> + 'static {
        let devices: &'static [crate::partition::Device<'static>] = B::BOARD.devices;
        Self::VMS
            .get(vm)
            .into_iter()
            .flat_map(|v| v.devices.iter())
            .filter_map(move |name| devices.iter().find(|d| d.name == *name))
            .flat_map(|d| d.irqs.iter().map(move |&irq| (irq, d.name)))
    }

    /// Whether interrupt `intid` is forwarded to VM `vm` with the HW bit
    /// (its EL1 timers, its passed-through devices' interrupts).
    pub fn forwarded(&self, vm: usize, intid: u32) -> bool {
        vgic::FORWARDED_TIMERS.contains(&intid) || self.device_irqs(vm).any(|(irq, _)| irq == intid)
    }

    /// Tells `enable` whether each passed-through interrupt of VM `vm` is
    /// enabled in its virtual distributor: the physical enable follows the
    /// guest's.
    pub fn device_irq_enables(&self, vm: usize, mut enable: impl FnMut(u32, bool)) {
        let state = self.vm(vm);
        for (irq, _) in self.device_irqs(vm) {
            enable(irq, state.vgic.is_enabled(0, irq));
        }
    }

    /// Moves vCPU `vcpu`'s pending virtual interrupts into the hardware
    /// through `inject` (a free list register), highest priority first,
    /// until `inject` has no room ([`Injected::Later`]: retried on the next
    /// end-of-interrupt maintenance interrupt).
    #[inline]
    pub fn flush(&self, vm: usize, vcpu: usize, mut inject: impl FnMut(u32, u8) -> Injected) {
        let mut state = self.vm(vm);
        while let Some((intid, priority)) = state.vgic.next_pending(vcpu) {
            match inject(intid, priority) {
                Injected::Loaded | Injected::Merged => state.vgic.delivered(vcpu, intid),
                Injected::Later => break,
            }
        }
    }

    // ----- calls and interrupts -----

    /// What the power or vendor call in x0..x3 of vCPU `vcpu` of VM `vm`
    /// (an HVC, or a trapped SMC) is. A PSCI call is applied to the VM's
    /// power state here; what is left for the caller is in the action.
    #[inline]
    pub fn on_call(&self, vm: usize, vcpu: usize, x: [u64; 4]) -> CallAction {
        let Some(this) = Self::VMS.get(vm) else {
            return CallAction::Answer([psci_not_supported(), 0, 0, 0]);
        };
        if let Some(call) = hypercall::decode(x[0], x[1]) {
            return match hypercall::admit(this.kind, call) {
                Ok(call) => CallAction::Hypercall(call),
                Err(refusal) => CallAction::Refused(refusal),
            };
        }
        if let Some(call) = trng::decode(x[0], x[1]) {
            // Only a secure VM has a TRNG; any other VM sees a machine
            // without one.
            return if this.kind == VmKind::Secure {
                CallAction::Trng(call)
            } else {
                CallAction::Answer([trng::ret::NOT_SUPPORTED, 0, 0, 0])
            };
        }
        let outcome = self.vm(vm).power.psci(Call::decode(x), vcpu, this.ram);
        CallAction::Psci(outcome)
    }

    /// What physical interrupt `intid`, taken while VM `vm` ran, calls for
    /// (`crate::irq::classify`).
    #[inline]
    pub fn on_irq(&self, vm: usize, intid: u32) -> Physical {
        match Self::VMS.get(vm) {
            Some(this) => irq::classify(&B::BOARD, this, intid),
            None => Physical::Unexpected,
        }
    }

    /// Whether a physical interrupt of `source` feeds the trusted path's
    /// watchdog: the rich VM's own timer, which ticks while the rich VM
    /// runs (`crate::display::PathLease`).
    #[inline]
    pub fn feeds_watchdog(&self, vm: usize, source: Physical) -> bool {
        source == Physical::Timer && Self::VMS.get(vm).is_some_and(|v| v.kind == VmKind::Rich)
    }

    /// At every exit of vCPU `vcpu` of VM `vm`, first: whether it stops
    /// because another vCPU resets the VM (`crate::power`).
    #[inline]
    pub fn at_exit(&self, vm: usize, vcpu: usize) -> AtExit {
        self.vm(vm).power.at_exit(vcpu)
    }

    // ----- power -----

    /// VM `vm` called PSCI SYSTEM_OFF: it is off now; says whether the
    /// whole machine powers off (`crate::power::after_system_off`).
    pub fn system_off(&self, vm: usize) -> AfterSystemOff {
        let kind = Self::VMS.get(vm).map_or(VmKind::Rich, |v| v.kind);
        self.vm(vm).off = true;
        let every_vm_off = (0..Self::VMS.len().min(MAX_VMS)).all(|i| self.vm(i).off);
        after_system_off(kind, every_vm_off)
    }
}

/// What a power or vendor call is ([`Vmm::on_call`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallAction {
    /// One of mvmm's hypercalls, admitted for this VM.
    Hypercall(Hypercall),
    /// One of mvmm's hypercalls this VM may not make: x0 gets
    /// `refusal.code()`.
    Refused(Refusal),
    /// A TRNG call of the secure VM: answered from mvmm's entropy device.
    Trng(trng::Call),
    /// Answered at once: x0..x3.
    Answer([u64; 4]),
    /// A PSCI call, already applied to the VM's power state.
    Psci(Outcome),
}

/// PSCI's NOT_SUPPORTED as a register value.
fn psci_not_supported() -> u64 {
    crate::psci::ret::NOT_SUPPORTED as u64
}

/// What the hardware did with a virtual interrupt handed to it
/// ([`Vmm::flush`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// Put into a free list register.
    Loaded,
    /// Already in a list register: pending again there.
    Merged,
    /// No list register free: try again later.
    Later,
}

#[cfg(test)]
mod tests;
