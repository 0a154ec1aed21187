//! The VMM channel: every VM's vsock device behind the switch.

use super::*;

/// Gives the vsock switch each VM's cid and the board's policy.
pub(super) fn configure_switch() {
    let mut switch = SWITCH.lock();
    for (i, vm) in BOARD.vms.iter().enumerate() {
        if let Some(slot) = vm.vsock
            && let Err(e) = switch.add_vm(i, u64::from(slot.cid))
        {
            log!(
                "vm '{}': vsock cid {} refused by the switch: {e:?}",
                vm.name,
                slot.cid
            );
        }
    }
    for rule in BOARD.vsock_rules {
        let index = |name: &str| BOARD.vms.iter().position(|vm| vm.name == name);
        if let (Some(from), Some(to)) = (index(rule.from), index(rule.to))
            && let Err(e) = switch.allow(Rule {
                from,
                to,
                port: rule.port,
            })
        {
            log!(
                "vsock rule {} -> {}:{} refused: {e:?}",
                rule.from,
                rule.to,
                rule.port
            );
        }
    }
}

/// A guest access to its vsock device's registers; a notify moves packets
/// between the VMs.
pub(super) fn vsock_access(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    abort: &DataAbort,
    offset: u64,
    va: u64,
) {
    let mut switch = SWITCH.lock();
    let result = if abort.write {
        switch
            .mmio_write(vm_index, offset, abort.size, regs.get(abort.register))
            .map(Some)
    } else {
        switch.mmio_read(vm_index, offset, abort.size).map(|v| {
            regs.set(abort.register, trap::load_value(abort, v));
            None
        })
    };
    let report = match result {
        Ok(Some(WriteEffect::Failed(e))) => {
            drop(switch);
            report(
                vm_index,
                vm,
                regs,
                format_args!("vsock device needs a reset: {e}"),
            );
            None
        }
        Ok(Some(WriteEffect::Notify(_) | WriteEffect::Reset)) => {
            let mut report = pump(&mut switch, vm_index);
            drop(switch);
            // Work left: more bounded pumps, each under the lock taken
            // anew, so that a trap of another VM waiting for the (ticket)
            // lock goes first. What is left after TRAP_PUMPS waits for the
            // next trap.
            let mut rounds = 1;
            while report.more && rounds < TRAP_PUMPS {
                let next = pump(&mut SWITCH.lock(), vm_index);
                report.merge(&next);
                rounds += 1;
            }
            Some(report)
        }
        Ok(_) => {
            drop(switch);
            None
        }
        Err(_) => {
            drop(switch);
            refuse_access(regs, vm_index, vm, abort, "vsock device", offset, va);
            return;
        }
    };
    regs.elr += 4;
    if let Some(report) = report {
        // A reset for a connection already gone is normal at close: not
        // worth a log line.
        if let Some((from, why)) = report
            .last_refusal
            .filter(|(_, why)| !matches!(why, Refusal::StrayReset))
            && let Some(sender) = BOARD.vms.get(from)
        {
            report_vm_fault(
                from,
                sender,
                format_args!(
                    "vsock: refused {} packet(s), last: {why:?}; the sender gets a reset",
                    report.refused
                ),
            );
        }
        for (i, fault) in report.faults.iter().enumerate() {
            if let (Some(fault), Some(faulty)) = (fault, BOARD.vms.get(i)) {
                report_vm_fault(
                    i,
                    faulty,
                    format_args!("vsock device needs a reset: {fault}"),
                );
            }
        }
        // virtio-mmio interrupts are edge-triggered: one per batch of used
        // buffers the switch reports, whether or not the driver acks them.
        for (i, other) in BOARD.vms.iter().enumerate() {
            if report.needs_interrupt(i) {
                raise_vsock_irq(i, other);
            }
        }
    }
}

/// One bounded pump of the switch (see `Switch::pump_for`), serving VM
/// `first` (the VM that trapped) first.
pub(super) fn pump(switch: &mut Switch, first: usize) -> PumpReport {
    let mut rams: [arch::VmRam<'static>; MAX_VMS] = core::array::from_fn(|i| {
        arch::VmRam::new(RamWindow::new(BOARD.vms.get(i).map_or(&[], |vm| vm.ram)))
    });
    switch.pump_for(&mut rams[..], Some(first))
}

/// Sends VM `vm_index` its vsock interrupt (an edge: the device has new
/// used buffers for it).
pub(super) fn raise_vsock_irq(vm_index: usize, vm: &Vm<'static>) {
    let Some(slot) = vm.vsock else { return };
    let raised = VMM.raise(vm_index, slot.irq);
    if let Some(target) = raised {
        deliver(vm_index, vm, target);
    }
}
