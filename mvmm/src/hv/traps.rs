//! Synchronous exits from a guest: decoding, emulated MMIO (vPL011, vGIC,
//! vsock), and faults reported and injected back into the guest.

use super::*;

/// A synchronous exception from the guest on this CPU.
pub fn guest_sync(regs: &mut GuestRegs, esr: u64) {
    let Some((vm_index, vcpu, vm)) = current() else {
        park()
    };
    // Another vCPU may be resetting this VM: then nothing of this exit is
    // handled.
    stop_if_asked(vm_index, vcpu);
    let exit = Exit::decode(esr);
    if !matches!(exit, Exit::DataAbort(_)) {
        // A data abort is counted by the device it hits (`data_abort`).
        count_exit(ExitKind::of(&exit, None));
    }
    match exit {
        Exit::Wfi => {
            // Idle: whatever it printed without a newline is a prompt.
            console_flush(vm_index + 1);
            regs.elr += 4;
            arch::wait_for_interrupt();
        }
        Exit::Wfe => regs.elr += 4,
        Exit::Hvc { .. } => power_call(regs, vm_index, vcpu, vm),
        Exit::Smc { .. } => {
            // A trapped SMC returns to the SMC itself; an HVC to the next
            // instruction.
            regs.elr += 4;
            power_call(regs, vm_index, vcpu, vm);
        }
        Exit::SysReg(access) => match access.action() {
            SysRegAction::SendSgi => {
                send_sgi(regs, vm_index, vcpu, vm, &access);
                regs.elr += 4;
            }
            SysRegAction::ReadZero => {
                if access.read {
                    regs.set(access.rt, 0);
                }
                regs.elr += 4;
            }
            SysRegAction::Ignore => regs.elr += 4,
            SysRegAction::Undefined => {
                report(
                    vm_index,
                    vm,
                    regs,
                    format_args!("trapped system register access {access:?}; undefined"),
                );
                inject(regs, vm_index, vm, Fault::Undefined, None);
            }
        },
        Exit::DataAbort(abort) => data_abort(regs, vm_index, vm, &abort),
        Exit::InstructionAbort { status } => {
            let (ipa, va) = arch::fault_address();
            report(
                vm_index,
                vm,
                regs,
                format_args!(
                    "stage-2 fault: instruction fetch at IPA {ipa:#x} (VA {va:#x}, status {status:#x}) outside its partition; injecting an abort"
                ),
            );
            inject(regs, vm_index, vm, Fault::InstructionAbort, Some(va));
        }
        Exit::Other { class, iss } => {
            report(
                vm_index,
                vm,
                regs,
                format_args!(
                    "unexpected trap (class {class:#x}, syndrome {iss:#x}); injecting an undefined instruction"
                ),
            );
            inject(regs, vm_index, vm, Fault::Undefined, None);
        }
    }
}

/// A stage-2 data abort: an emulated device on the VM's bus
/// (`mvmm_core::bus`), or an access outside the VM.
pub(super) fn data_abort(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    abort: &DataAbort,
) {
    let (ipa, va) = arch::fault_address();
    // Only an access the syndrome describes fully can be emulated.
    let emulable = abort.syndrome_valid && !abort.stage1_walk;
    let device = BUSES
        .get()
        .and_then(|buses| buses.get(vm_index))
        .and_then(|bus| bus.lookup(ipa))
        .filter(|_| emulable);
    count_exit(ExitKind::of(
        &Exit::DataAbort(*abort),
        device.map(|(d, _)| d),
    ));
    match device {
        Some((Emulated::GicDistributor | Emulated::GicRedistributors, _)) => {
            gic_access(regs, vm_index, vm, abort, ipa, va);
        }
        Some((Emulated::Vsock, offset)) => vsock_access(regs, vm_index, vm, abort, offset, va),
        Some((Emulated::Uart, offset)) => uart_access(regs, vm_index, vm, abort, offset, va),
        Some((Emulated::Input, offset)) => input_access(regs, vm_index, vm, abort, offset, va),
        None => {
            report(
                vm_index,
                vm,
                regs,
                format_args!(
                    "stage-2 fault: {} at IPA {ipa:#x} (VA {va:#x}) outside its partition; injecting an abort",
                    if abort.write { "write" } else { "read" }
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
    let mut state = VMS[vm_index].lock();
    let result = if abort.write {
        state
            .uart
            .write(offset, abort.size, regs.get(abort.register) as u32)
    } else {
        state.uart.read(offset, abort.size).map(|raw| {
            regs.set(abort.register, trap::load_value(abort, u64::from(raw)));
            None
        })
    };
    let raised = update_uart_irq(&mut state);
    drop(state);
    if let Some(target) = raised {
        deliver(vm_index, vm, target);
    }
    match result {
        Ok(output) => {
            if let Some(byte) = output {
                console_write(vm_index + 1, &[byte]);
            }
            regs.elr += 4;
        }
        Err(_) => {
            refuse_access(regs, vm_index, vm, abort, "UART", offset, va);
        }
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
/// here), under the same per-VM limit as [`report`].
pub(super) fn report_vm_fault(vm_index: usize, vm: &Vm<'static>, what: core::fmt::Arguments<'_>) {
    let count = {
        let mut state = VMS[vm_index].lock();
        state.faults = state.faults.saturating_add(1);
        state.faults
    };
    if count <= FAULT_LOG_LIMIT {
        log!("vm '{}': {}", vm.name, what);
    }
    if count == FAULT_LOG_LIMIT {
        log!("vm '{}': further faults are counted, not logged", vm.name);
    }
}

/// Logs a guest event with the VM's name and the guest's pc, up to
/// [`FAULT_LOG_LIMIT`] per VM.
pub(super) fn report(
    vm_index: usize,
    vm: &Vm<'static>,
    regs: &GuestRegs,
    what: core::fmt::Arguments<'_>,
) {
    report_vm_fault(vm_index, vm, format_args!("{} (pc {:#x})", what, regs.elr));
}

/// Delivers `fault` to the guest's EL1 vectors. A guest whose vectors are
/// not inside its own RAM could only fault again, for ever: it is stopped.
pub(super) fn inject(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    fault: Fault,
    far: Option<u64>,
) {
    let vbar = arch::guest_vbar();
    // Without stage 1, VBAR_EL1 is a guest-physical address that must lie
    // in the VM's RAM; with stage 1 on, a vector that faults at stage 2
    // shows up as an instruction abort inside the vector table itself.
    // Either way the guest could only fault again, for ever: stop it.
    let vectors_outside =
        !arch::guest_mmu_on() && !vm.ram.iter().any(|r| r.contains_range(vbar, 0x800));
    let fault_in_vectors = fault == Fault::InstructionAbort && regs.elr.wrapping_sub(vbar) < 0x800;
    if vectors_outside || fault_in_vectors {
        log!(
            "vm '{}': cannot take exceptions (VBAR_EL1 {vbar:#x} unusable); stopping this vCPU",
            vm.name
        );
        VMS[vm_index].lock().off = true;
        park();
    }
    let at = GuestPosition {
        pc: regs.elr,
        pstate: regs.spsr,
        vbar,
    };
    let injection = trap::inject(fault, at);
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
