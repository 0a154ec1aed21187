//! Synchronous exits from a guest: decoding, emulated MMIO (vPL011, vGIC,
//! vsock), and faults reported and injected back into the guest.

use super::*;

/// A synchronous exception from the guest on this CPU: `Vmm::on_exit`
/// says what it calls for; this carries it out.
pub fn guest_sync(regs: &mut GuestRegs, esr: u64) {
    let Some((vm_index, vcpu, vm)) = current() else {
        park()
    };
    // Another vCPU may be resetting this VM: then nothing of this exit is
    // handled.
    stop_if_asked(vm_index, vcpu);
    let exit = Exit::decode(esr);
    let (ipa, va) = match exit {
        Exit::DataAbort(_) | Exit::InstructionAbort { .. } => arch::fault_address(),
        _ => (0, 0),
    };
    let action = VMM.on_exit(vm_index, &exit, ipa);
    count_exit(ExitKind::of(
        &exit,
        match action {
            ExitAction::Emulate { device, .. } => Some(device),
            _ => None,
        },
    ));
    match action {
        ExitAction::Idle => {
            // Idle: whatever it printed without a newline is a prompt.
            console_flush(vm_index + 1);
            regs.elr += 4;
            arch::wait_for_interrupt();
        }
        ExitAction::Step => regs.elr += 4,
        ExitAction::Call { step_over } => {
            if step_over {
                regs.elr += 4;
            }
            power_call(regs, vm_index, vcpu, vm);
        }
        ExitAction::SendSgi(access) => {
            if !access.read {
                send_sgi(vm_index, vcpu, vm, regs.get(access.rt));
            }
            regs.elr += 4;
        }
        ExitAction::ReadZero(access) => {
            if access.read {
                regs.set(access.rt, 0);
            }
            regs.elr += 4;
        }
        ExitAction::Emulate {
            device,
            offset,
            abort,
        } => match device {
            Emulated::GicDistributor | Emulated::GicRedistributors => {
                gic_access(regs, vm_index, vm, &abort, ipa, va);
            }
            Emulated::Vsock => vsock_access(regs, vm_index, vm, &abort, offset, va),
            Emulated::Uart => uart_access(regs, vm_index, vm, &abort, offset, va),
            Emulated::Input => input_access(regs, vm_index, vm, &abort, offset, va),
        },
        ExitAction::Refuse { fault, cause } => {
            match cause {
                Cause::SysReg(access) => report(
                    vm_index,
                    vm,
                    regs,
                    format_args!("trapped system register access {access:?}; undefined"),
                ),
                Cause::DataOutside { ipa, write } => report(
                    vm_index,
                    vm,
                    regs,
                    format_args!(
                        "stage-2 fault: {} at IPA {ipa:#x} (VA {va:#x}) outside its partition; injecting an abort",
                        if write { "write" } else { "read" }
                    ),
                ),
                Cause::FetchOutside { ipa, status } => report(
                    vm_index,
                    vm,
                    regs,
                    format_args!(
                        "stage-2 fault: instruction fetch at IPA {ipa:#x} (VA {va:#x}, status {status:#x}) outside its partition; injecting an abort"
                    ),
                ),
                Cause::Unexpected { class, iss } => report(
                    vm_index,
                    vm,
                    regs,
                    format_args!(
                        "unexpected trap (class {class:#x}, syndrome {iss:#x}); injecting an undefined instruction"
                    ),
                ),
            }
            let far = match fault {
                Fault::Undefined => None,
                Fault::DataAbort { .. } | Fault::InstructionAbort => Some(va),
            };
            inject(regs, vm_index, vm, fault, far);
        }
    }
}

/// An access to the VM's virtual PL011 at `offset`.
fn uart_access(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    abort: &DataAbort,
    offset: u64,
    va: u64,
) {
    if !abort.write {
        // Reading input or flags: show the prompt it answers first, and
        // refill the receive FIFO from what was typed.
        console_flush(vm_index + 1);
        feed_input(vm_index);
    }
    let access = Access::of(abort, offset, regs.get(abort.register));
    match VMM.uart_access(vm_index, access) {
        Ok(done) => {
            if let Some(raw) = done.load {
                regs.set(abort.register, trap::load_value(abort, raw));
            }
            notify(vm_index, vm, done.notify);
            if let Some(byte) = done.output {
                console_write(vm_index + 1, &[byte]);
            }
            regs.elr += 4;
        }
        Err(_) => refuse_access(regs, vm_index, vm, abort, "UART", offset, va),
    }
}

/// A guest access to an emulated device that the device refuses (bad size
/// or offset): logged, and an abort injected, as hardware would.
pub(super) fn refuse_access(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    abort: &DataAbort,
    device: &str,
    at: u64,
    va: u64,
) {
    report(
        vm_index,
        vm,
        regs,
        format_args!(
            "bad {}-byte access to its {device} at {at:#x}; injecting an abort",
            abort.size
        ),
    );
    inject(
        regs,
        vm_index,
        vm,
        Fault::DataAbort { write: abort.write },
        Some(va),
    );
}

/// Logs a device fault of VM `vm_index` (which may not be the one running
/// here), up to `mvmm_core::vmm::FAULT_LOG_LIMIT` per VM.
pub(super) fn report_vm_fault(vm_index: usize, vm: &Vm<'static>, what: core::fmt::Arguments<'_>) {
    match VMM.note_fault(vm_index) {
        FaultLog::Log => log!("vm '{}': {}", vm.name, what),
        FaultLog::LogLast => {
            log!("vm '{}': {}", vm.name, what);
            log!("vm '{}': further faults are counted, not logged", vm.name);
        }
        FaultLog::Count => {}
    }
}

/// Logs a guest event with the VM's name and the guest's pc, up to
/// `mvmm_core::vmm::FAULT_LOG_LIMIT` per VM.
pub(super) fn report(
    vm_index: usize,
    vm: &Vm<'static>,
    regs: &GuestRegs,
    what: core::fmt::Arguments<'_>,
) {
    report_vm_fault(vm_index, vm, format_args!("{} (pc {:#x})", what, regs.elr));
}

/// Delivers `fault` to the guest's EL1 vectors; a guest that cannot take
/// exceptions (`Vmm::injection`) is stopped instead.
pub(super) fn inject(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    fault: Fault,
    far: Option<u64>,
) {
    let at = GuestPosition {
        pc: regs.elr,
        pstate: regs.spsr,
        vbar: arch::guest_vbar(),
    };
    let Some(injection) = VMM.injection(vm_index, fault, at, arch::guest_mmu_on()) else {
        log!(
            "vm '{}': cannot take exceptions (VBAR_EL1 {:#x} unusable); stopping this vCPU",
            vm.name,
            at.vbar
        );
        VMM.vm(vm_index).off = true;
        park();
    };
    arch::set_el1_exception(
        injection.esr_el1,
        far,
        injection.elr_el1,
        injection.spsr_el1,
    );
    regs.elr = injection.pc;
    regs.spsr = injection.pstate;
}

/// An FIQ or SError from the guest: logged; the guest continues.
pub fn guest_unexpected(regs: &mut GuestRegs, kind: &str) {
    if let Some((vm_index, _, vm)) = current() {
        report(vm_index, vm, regs, format_args!("unexpected {kind}"));
    }
}
