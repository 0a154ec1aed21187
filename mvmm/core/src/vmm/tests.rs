//! `Vmm` on the test board of `crate::partition::tests`: vm 0 is the rich VM
//! (vCPUs on CPUs 0 and 1, the rtc and net0 passed through, vsock), vm 1 the
//! secure VM (CPU 2, vsock). UART at 0x0900_0000 (SPI 33), distributor at
//! 0x0800_0000, redistributors from 0x080a_0000 every 0x2_0000.

use super::*;
use crate::bus::BusError;
use crate::partition::tests::BOARD;
use crate::power::AfterSystemOff;
use crate::trap::{DataAbort, Exit, Fault, GuestPosition, SysRegAccess};
use crate::vuart::{INT_RX, INT_TX};
use spin::relax::Spin;

const RICH: usize = 0;
const SECURE: usize = 1;
const UART: u64 = 0x0900_0000;
const GICD: u64 = 0x0800_0000;
const GICR: u64 = 0x080a_0000;
const STRIDE: u64 = 0x2_0000;
/// PL011 registers used here.
const DR: u64 = 0x000;
const FR: u64 = 0x018;
const IMSC: u64 = 0x038;
const FR_RXFE: u64 = 1 << 4;

/// The test board as a type.
struct Test;
impl OnBoard for Test {
    const BOARD: Board<'static> = BOARD;
}

fn started() -> Vmm<Test, Spin> {
    let vmm = Vmm::new();
    let mut failures = 0;
    vmm.start(|_, _| failures += 1);
    assert_eq!(failures, 0);
    vmm
}

fn abort(write: bool) -> DataAbort {
    DataAbort {
        syndrome_valid: true,
        size: 4,
        sign_extend: false,
        register: 1,
        sixty_four: false,
        write,
        stage1_walk: false,
        status: 0,
    }
}

fn load(offset: u64) -> Access {
    Access {
        offset,
        size: 4,
        store: None,
    }
}

fn store(offset: u64, value: u64) -> Access {
    Access {
        offset,
        size: 4,
        store: Some(value),
    }
}

fn sysreg(encoding: (u8, u8, u8, u8, u8), read: bool) -> SysRegAccess {
    let (op0, op1, crn, crm, op2) = encoding;
    SysRegAccess {
        op0,
        op1,
        crn,
        crm,
        op2,
        rt: 2,
        read,
    }
}

#[test]
fn each_exit_class_gets_its_action() {
    let vmm = started();
    assert_eq!(vmm.on_exit(RICH, &Exit::Wfi, 0), ExitAction::Idle);
    assert_eq!(vmm.on_exit(RICH, &Exit::Wfe, 0), ExitAction::Step);
    assert_eq!(
        vmm.on_exit(RICH, &Exit::Hvc { imm: 0 }, 0),
        ExitAction::Call { step_over: false }
    );
    // A trapped SMC returns to itself: it is stepped over before the call.
    assert_eq!(
        vmm.on_exit(RICH, &Exit::Smc { imm: 0 }, 0),
        ExitAction::Call { step_over: true }
    );
    let sgi = sysreg(crate::vgic::ICC_SGI1R_EL1, false);
    assert_eq!(
        vmm.on_exit(RICH, &Exit::SysReg(sgi), 0),
        ExitAction::SendSgi(sgi)
    );
    // PMCCNTR_EL0 (3, 3, 9, 13, 0): the PMU reads as zero.
    let pmu = sysreg((3, 3, 9, 13, 0), true);
    assert_eq!(
        vmm.on_exit(RICH, &Exit::SysReg(pmu), 0),
        ExitAction::ReadZero(pmu)
    );
    let unknown = sysreg((3, 4, 1, 1, 0), true); // HCR_EL2 from EL1
    assert_eq!(
        vmm.on_exit(RICH, &Exit::SysReg(unknown), 0),
        ExitAction::Refuse {
            fault: Fault::Undefined,
            cause: Cause::SysReg(unknown)
        }
    );
    assert_eq!(
        vmm.on_exit(RICH, &Exit::InstructionAbort { status: 7 }, 0x4100_0000),
        ExitAction::Refuse {
            fault: Fault::InstructionAbort,
            cause: Cause::FetchOutside {
                ipa: 0x4100_0000,
                status: 7
            }
        }
    );
    assert_eq!(
        vmm.on_exit(
            RICH,
            &Exit::Other {
                class: 0x3f,
                iss: 1
            },
            0
        ),
        ExitAction::Refuse {
            fault: Fault::Undefined,
            cause: Cause::Unexpected {
                class: 0x3f,
                iss: 1
            }
        }
    );
}

#[test]
fn data_aborts_go_to_the_device_on_the_bus_or_fault() {
    let vmm = started();
    let exit = |a: DataAbort| Exit::DataAbort(a);
    assert_eq!(
        vmm.on_exit(RICH, &exit(abort(false)), UART + FR),
        ExitAction::Emulate {
            device: Emulated::Uart,
            offset: FR,
            abort: abort(false)
        }
    );
    assert_eq!(
        vmm.on_exit(RICH, &exit(abort(true)), GICR + STRIDE + 0x100),
        ExitAction::Emulate {
            device: Emulated::GicRedistributors,
            offset: STRIDE + 0x100,
            abort: abort(true)
        }
    );
    // The secure VM has one vCPU: vCPU 1's redistributor frame is not on
    // its bus.
    assert!(matches!(
        vmm.on_exit(SECURE, &exit(abort(false)), GICR + STRIDE),
        ExitAction::Refuse {
            fault: Fault::DataAbort { write: false },
            ..
        }
    ));
    // The secure VM's RAM is outside the rich VM (a stage-2 fault).
    assert_eq!(
        vmm.on_exit(RICH, &exit(abort(true)), 0x4100_0000),
        ExitAction::Refuse {
            fault: Fault::DataAbort { write: true },
            cause: Cause::DataOutside {
                ipa: 0x4100_0000,
                write: true
            }
        }
    );
    // An access the syndrome does not describe is never emulated, even on
    // a device: guessing the register or size would be wrong.
    let no_syndrome = DataAbort {
        syndrome_valid: false,
        ..abort(false)
    };
    assert!(matches!(
        vmm.on_exit(RICH, &exit(no_syndrome), UART),
        ExitAction::Refuse { .. }
    ));
    let walk = DataAbort {
        stage1_walk: true,
        ..abort(false)
    };
    assert!(matches!(
        vmm.on_exit(RICH, &exit(walk), UART),
        ExitAction::Refuse { .. }
    ));
}

#[test]
fn a_vm_whose_bus_cannot_be_built_is_off_and_every_access_faults() {
    // The rich VM's vsock slot inside its own RAM: no bus.
    const VMS: &[crate::partition::Vm<'static>] = &[crate::partition::Vm {
        vsock: Some(crate::partition::VsockSlot {
            cid: mvmm_abi::vsock::RICH_VM_CID,
            mmio: crate::partition::MemRange::new(0x5000_1000, 0x200),
            irq: 48,
        }),
        ..crate::partition::tests::VMS[0]
    }];
    struct Broken;
    impl OnBoard for Broken {
        const BOARD: Board<'static> = Board { vms: VMS, ..BOARD };
    }
    let vmm: Vmm<Broken, Spin> = Vmm::new();
    let mut failed = None;
    vmm.start(|vm, e| failed = Some((vm, e)));
    assert!(matches!(failed, Some((0, BusError::InRam { .. }))));
    assert!(vmm.vm(0).off);
    assert!(matches!(
        vmm.on_exit(0, &Exit::DataAbort(abort(false)), UART),
        ExitAction::Refuse { .. }
    ));
}

#[test]
fn faults_are_logged_up_to_the_limit_then_only_counted() {
    let vmm = started();
    for _ in 1..FAULT_LOG_LIMIT {
        assert_eq!(vmm.note_fault(RICH), FaultLog::Log);
    }
    assert_eq!(vmm.note_fault(RICH), FaultLog::LogLast);
    for _ in 0..1000 {
        assert_eq!(vmm.note_fault(RICH), FaultLog::Count);
    }
    // Each VM has its own count.
    assert_eq!(vmm.note_fault(SECURE), FaultLog::Log);
}

#[test]
fn uart_output_goes_to_the_console_and_bad_accesses_are_refused() {
    let vmm = started();
    let done = vmm.uart_access(RICH, store(DR, u64::from(b'A'))).unwrap();
    assert_eq!(done.output, Some(b'A'));
    let flags = vmm.uart_access(RICH, load(FR)).unwrap().load.unwrap();
    assert_ne!(flags & FR_RXFE, 0, "nothing typed: receive FIFO empty");
    let odd = Access {
        offset: DR,
        size: 3,
        store: Some(0),
    };
    assert!(vmm.uart_access(RICH, odd).is_err());
}

/// Enables the distributor and SPI 33 (the UART) for vCPU 0 of `vm`.
fn enable_uart_irq(vmm: &Vmm<Test, Spin>, vm: usize) {
    let none = &crate::vgic::no_live_state;
    vmm.gic_access(vm, GICD, store(0, 0b11), none).unwrap();
    // ISENABLER1: SPIs 32..63.
    vmm.gic_access(vm, GICD + 0x104, store(0, 1 << 1), none)
        .unwrap();
    vmm.uart_access(vm, store(IMSC, u64::from(INT_RX))).unwrap();
}

#[test]
fn typed_input_reaches_only_the_vm_with_focus_and_raises_its_interrupt() {
    let vmm = started();
    enable_uart_irq(&vmm, RICH);
    enable_uart_irq(&vmm, SECURE);
    assert_eq!(vmm.focus(), RICH);
    // The secure VM reads its UART: what was typed is not for it.
    let fed = vmm.feed_input(SECURE, b"1234".iter().copied());
    assert_eq!(fed.notify, None);
    let flags = vmm.uart_access(SECURE, load(FR)).unwrap().load.unwrap();
    assert_ne!(flags & FR_RXFE, 0);
    // The rich VM has focus: the queue moves into its FIFO, vCPU 0 told.
    let fed = vmm.feed_input(RICH, core::iter::empty());
    assert_eq!(fed.notify, Some(0));
    let mut got = [0u8; 4];
    for b in &mut got {
        *b = vmm.uart_access(RICH, load(DR)).unwrap().load.unwrap() as u8;
    }
    assert_eq!(&got, b"1234");
}

#[test]
fn type_ahead_never_crosses_a_focus_change() {
    let vmm = started();
    enable_uart_irq(&vmm, SECURE);
    // Typed while the rich VM had focus and not yet taken by it...
    vmm.feed_input(SECURE, b"y\n".iter().copied());
    let change = vmm.focus_change(SECURE, true);
    assert_eq!(change.focus, SECURE);
    assert!(change.route_first, "the UART interrupt moves first");
    // ... is discarded when the secure VM takes focus: it never answers a
    // trusted prompt.
    assert_eq!(vmm.move_focus(change.focus), 2);
    let fed = vmm.feed_input(SECURE, core::iter::empty());
    assert_eq!(fed.notify, None);
    let flags = vmm.uart_access(SECURE, load(FR)).unwrap().load.unwrap();
    assert_ne!(flags & FR_RXFE, 0);
    // The rest of a PIN typed into the prompt never reaches the rich VM.
    vmm.feed_input(RICH, b"42".iter().copied());
    let back = vmm.focus_change(SECURE, false);
    assert_eq!((back.focus, back.route_first), (RICH, false));
    assert_eq!(vmm.move_focus(back.focus), 2);
}

#[test]
fn a_full_input_queue_drops_and_says_so_without_blocking() {
    let vmm = started();
    // The secure VM never has focus here: nothing drains the queue.
    let typed = crate::console::INPUT_QUEUE + 100;
    let fed = vmm.feed_input(SECURE, core::iter::repeat_n(b'x', typed));
    assert_eq!(fed.dropped, 100);
    assert_eq!(vmm.feed_input(SECURE, core::iter::empty()).dropped, 0);
}

#[test]
fn the_uart_interrupt_follows_the_transmit_fifo() {
    let vmm = started();
    enable_uart_irq(&vmm, RICH);
    // TX interrupt enabled: the (always empty) transmit FIFO raises it.
    let done = vmm
        .uart_access(RICH, store(IMSC, u64::from(INT_TX)))
        .unwrap();
    assert_eq!(done.notify, 1 << 0);
    assert_eq!(vmm.uart_line(RICH), Some(0));
    vmm.uart_access(RICH, store(IMSC, 0)).unwrap();
    assert_eq!(vmm.uart_line(RICH), None);
}

#[test]
fn sgis_reach_the_named_vcpus_once_enabled() {
    let vmm = started();
    let none = &crate::vgic::no_live_state;
    // SGI 3 to vCPU 1 (target list bit 1), sent by vCPU 0: disabled yet.
    let value = (3u64 << 24) | 0b10;
    assert_eq!(vmm.send_sgi(RICH, 0, value), 0);
    // vCPU 1 enables SGI 3 in its redistributor's SGI frame (ISENABLER0).
    let done = vmm
        .gic_access(RICH, GICR + STRIDE + 0x1_0100, store(0, 1 << 3), none)
        .unwrap();
    assert_eq!(done.notify, 0b11, "a store notifies every vCPU");
    assert_eq!(vmm.send_sgi(RICH, 0, value), 0b10);
    let mut injected = Vec::new();
    vmm.flush(RICH, 1, |intid, _| {
        injected.push(intid);
        Injected::Loaded
    });
    assert_eq!(injected, [3]);
    // Delivered: nothing left to inject.
    vmm.flush(RICH, 1, |_, _| panic!("nothing pending"));
    // Targets beyond the VM's vCPUs are ignored.
    assert_eq!(vmm.send_sgi(RICH, 0, (3u64 << 24) | 0xfffc), 0);
}

#[test]
fn with_no_list_register_free_interrupts_stay_pending_for_later() {
    let vmm = started();
    let none = &crate::vgic::no_live_state;
    vmm.gic_access(RICH, GICR + 0x1_0100, store(0, 0b110), none)
        .unwrap();
    vmm.send_sgi(RICH, 0, (1u64 << 24) | 1);
    vmm.send_sgi(RICH, 0, (2u64 << 24) | 1);
    let mut first = Vec::new();
    vmm.flush(RICH, 0, |intid, _| {
        first.push(intid);
        if first.len() == 1 {
            Injected::Loaded
        } else {
            Injected::Later
        }
    });
    assert_eq!(first.len(), 2);
    let mut rest = Vec::new();
    vmm.flush(RICH, 0, |intid, _| {
        rest.push(intid);
        Injected::Loaded
    });
    assert_eq!(rest, [first[1]], "the one that found no room is retried");
}

#[test]
fn gic_reads_show_live_state_and_bad_offsets_are_refused() {
    let vmm = started();
    // ISPENDR1 of the rtc's SPI 34: pending in the hardware.
    let live = |_vcpu: usize, intid: u32| crate::vgic::Live {
        pending: intid == 34,
        active: false,
    };
    let pending = vmm
        .gic_access(RICH, GICD + 0x204, load(0x204), &live)
        .unwrap()
        .load
        .unwrap();
    assert_eq!(pending & (1 << 2), 1 << 2);
    assert!(
        vmm.gic_access(RICH, GICD + 0x3, load(3), &crate::vgic::no_live_state)
            .is_err()
    );
    // An address in neither the distributor nor the redistributors.
    assert!(
        vmm.gic_access(RICH, UART, load(0), &crate::vgic::no_live_state)
            .is_err()
    );
}

#[test]
fn passed_through_interrupts_are_forwarded_and_follow_the_guests_enable() {
    let vmm = started();
    let irqs: Vec<_> = vmm.device_irqs(RICH).collect();
    assert_eq!(irqs, [(34, "rtc"), (79, "net0")]);
    assert!(vmm.forwarded(RICH, 34));
    assert!(vmm.forwarded(RICH, crate::vgic::VTIMER_INTID));
    assert!(!vmm.forwarded(SECURE, 34), "the rtc is the rich VM's");
    let mut seen = Vec::new();
    vmm.device_irq_enables(RICH, |irq, on| seen.push((irq, on)));
    assert_eq!(seen, [(34, false), (79, false)]);
    // ISENABLER1 bit 2 = SPI 34.
    vmm.gic_access(
        RICH,
        GICD + 0x104,
        store(0, 1 << 2),
        &crate::vgic::no_live_state,
    )
    .unwrap();
    seen.clear();
    vmm.device_irq_enables(RICH, |irq, on| seen.push((irq, on)));
    assert_eq!(seen, [(34, true), (79, false)]);
}

#[test]
fn system_off_of_the_secure_vm_stops_it_and_the_rich_vm_stops_the_machine() {
    let vmm = started();
    assert_eq!(vmm.system_off(SECURE), AfterSystemOff::ThisVm);
    assert!(vmm.vm(SECURE).off);
    assert!(!vmm.vm(RICH).off);
    assert_eq!(vmm.system_off(RICH), AfterSystemOff::Machine);
    // The secure VM last: every VM is off, so the machine goes too.
    let vmm = started();
    vmm.system_off(RICH);
    assert_eq!(vmm.system_off(SECURE), AfterSystemOff::Machine);
}

#[test]
fn only_the_secure_vm_gets_mvmms_calls_and_a_trng() {
    use crate::hypercall::{CONSOLE_FOCUS, Hypercall, Refusal};
    let vmm = started();
    assert_eq!(
        vmm.on_call(SECURE, 0, [CONSOLE_FOCUS, 1, 0, 0]),
        CallAction::Hypercall(Hypercall::ConsoleFocus(true))
    );
    assert!(matches!(
        vmm.on_call(RICH, 0, [CONSOLE_FOCUS, 1, 0, 0]),
        CallAction::Refused(Refusal::NotSecure(_))
    ));
    assert!(matches!(
        vmm.on_call(SECURE, 0, [crate::trng::fid::RND64, 192, 0, 0]),
        CallAction::Trng(_)
    ));
    assert_eq!(
        vmm.on_call(RICH, 0, [crate::trng::fid::RND64, 192, 0, 0]),
        CallAction::Answer([crate::trng::ret::NOT_SUPPORTED, 0, 0, 0])
    );
}

#[test]
fn psci_calls_change_the_vms_power_state() {
    use crate::psci::{Outcome, fid};
    let vmm = started();
    vmm.vm(RICH).power.boot();
    assert_eq!(
        vmm.on_call(RICH, 0, [u64::from(fid::PSCI_VERSION), 0, 0, 0]),
        CallAction::Psci(Outcome::Return(crate::psci::VERSION_1_1))
    );
    let cpu_on = [u64::from(fid::CPU_ON_64), 1, 0x5000_0000, 7];
    assert_eq!(
        vmm.on_call(RICH, 0, cpu_on),
        CallAction::Psci(Outcome::StartVcpu { vcpu: 1 })
    );
    assert_eq!(vmm.vm(RICH).power.take_start(1), Some((0x5000_0000, 7)));
    // An entry point in the secure VM's RAM is refused.
    let vmm2 = started();
    vmm2.vm(RICH).power.boot();
    let outside = [u64::from(fid::CPU_ON_64), 1, 0x4100_0000, 0];
    assert_eq!(
        vmm2.on_call(RICH, 0, outside),
        CallAction::Psci(Outcome::Return(crate::psci::ret::INVALID_ADDRESS as u64))
    );
    assert_eq!(vmm2.vm(RICH).power.take_start(1), None);
    assert_eq!(
        vmm.on_call(RICH, 1, [u64::from(fid::SYSTEM_OFF), 0, 0, 0]),
        CallAction::Psci(Outcome::SystemOff)
    );
}

#[test]
fn physical_interrupts_are_classified_and_only_the_rich_timer_feeds_the_watchdog() {
    use crate::irq::Physical;
    let vmm = started();
    let timer = vmm.on_irq(RICH, crate::vgic::VTIMER_INTID);
    assert_eq!(timer, Physical::Timer);
    assert!(vmm.feeds_watchdog(RICH, timer));
    assert!(!vmm.feeds_watchdog(SECURE, vmm.on_irq(SECURE, crate::vgic::VTIMER_INTID)));
    assert_eq!(vmm.on_irq(RICH, 34), Physical::Device);
    assert_eq!(vmm.on_irq(SECURE, 34), Physical::Unexpected);
    assert_eq!(vmm.on_irq(RICH, 33), Physical::ConsoleInput);
}

#[test]
fn a_guest_that_cannot_take_exceptions_is_stopped_not_faulted_for_ever() {
    let vmm = started();
    // EL1h, stage 1 off, vectors at the start of the rich VM's RAM.
    let at = GuestPosition {
        pc: 0x5000_1234,
        pstate: 0b0101,
        vbar: 0x5000_0000,
    };
    let injected = vmm
        .injection(RICH, Fault::DataAbort { write: true }, at, false)
        .expect("vectors in its RAM");
    assert_eq!(injected.pc, 0x5000_0200, "current EL with SP_ELx");
    assert_eq!(injected.elr_el1, 0x5000_1234);
    // Vectors in the secure VM's RAM: the rich VM cannot take anything.
    let elsewhere = GuestPosition {
        vbar: 0x4100_0000,
        ..at
    };
    assert_eq!(
        vmm.injection(RICH, Fault::Undefined, elsewhere, false),
        None
    );
    // With stage 1 on, VBAR_EL1 is a virtual address: not checked...
    let virtual_vbar = GuestPosition {
        vbar: 0xffff_8000_0001_0000,
        pc: 0xffff_8000_0002_0000,
        ..at
    };
    assert!(
        vmm.injection(RICH, Fault::InstructionAbort, virtual_vbar, true)
            .is_some()
    );
    // ... but a fetch fault inside the vector table means the vectors
    // themselves are unreachable.
    let in_vectors = GuestPosition {
        pc: 0xffff_8000_0001_0280,
        ..virtual_vbar
    };
    assert_eq!(
        vmm.injection(RICH, Fault::InstructionAbort, in_vectors, true),
        None
    );
}
