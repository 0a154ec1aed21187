//! Interrupts: physical ones taken at EL2, the virtual GIC's registers, and
//! delivery of virtual interrupts through the list registers.

use super::*;

/// A physical interrupt while the guest ran.
pub fn guest_irq(_regs: &mut GuestRegs) {
    let Some((vm_index, vcpu, vm)) = current() else {
        drain_interrupts();
        return;
    };
    count_exit(ExitKind::Irq);
    // A kick may be another vCPU resetting this VM: then this vCPU stops
    // (what was pending for it is dropped with it).
    if VMM.at_exit(vm_index, vcpu) == AtExit::Stop {
        // The guest's timers off first: a timer whose condition holds
        // would be pending again after each end of interrupt, and this
        // drain would never end (the vCPU then never reached its wait for
        // the restart: seen as a VM that stayed off after vCPU 1 reset it).
        arch::reset_el1();
        drain_interrupts();
        stop_here(vm_index, vcpu);
    }
    while let Some(intid) = arch::ack_interrupt() {
        let source = VMM.on_irq(vm_index, intid);
        count_irq(source.counted_as());
        if source.forwarded() {
            // The EL1 timers and passed-through devices are forwarded with
            // the HW bit: priority drop only here, the guest's deactivation
            // ends the physical interrupt too.
            if VMM.feeds_watchdog(vm_index, source) {
                lease_watchdog();
            }
            arch::end_of_interrupt(intid, false);
            if arch::inject_virtual(intid, true, FORWARDED_PRIORITY) != arch::Injected::Loaded {
                arch::end_of_interrupt(intid, true);
            }
            continue;
        }
        arch::end_of_interrupt(intid, true);
        match source {
            Physical::Kick => {
                arch::reap_list_registers();
                // A level interrupt still high after the guest's EOI is
                // raised again.
                if let Some(target) = VMM.uart_line(vm_index).filter(|&t| t != vcpu) {
                    deliver(vm_index, vm, target);
                }
                flush(vm_index, vcpu);
            }
            Physical::ConsoleInput => feed_input(VMM.focus()),
            Physical::SmmuEvents => smmu_events(),
            Physical::InputDevice => input_events(),
            Physical::Timer | Physical::Device | Physical::Unexpected => {
                log!("cpu {}: unexpected interrupt {intid}", arch::this_cpu());
            }
        }
    }
}

/// Acknowledges and ends what is pending on this CPU, a bounded number of
/// times: a level-triggered source that is still asserted comes back after
/// its end of interrupt and is left pending.
pub(super) fn drain_interrupts() {
    for _ in 0..DRAIN_LIMIT {
        let Some(intid) = arch::ack_interrupt() else {
            return;
        };
        arch::end_of_interrupt(intid, true);
    }
}

/// Most interrupts [`drain_interrupts`] takes in one go.
const DRAIN_LIMIT: usize = 64;

/// What the hardware holds of interrupt `intid` of vCPU `target` of VM
/// `vm_index` (see `vgic::Live`): this CPU's list registers when `target`
/// runs here; for an interrupt forwarded with the HW bit, the physical GIC;
/// nothing else (another CPU's list registers cannot be read from here).
fn live_state(vm_index: usize, vm: &Vm<'static>, target: usize, intid: u32) -> vgic::Live {
    let here = current().is_some_and(|(v, vcpu, _)| v == vm_index && vcpu == target);
    if here {
        let (pending, active) = arch::list_register_state(intid);
        if pending || active {
            return vgic::Live { pending, active };
        }
    }
    let forwarded = VMM.forwarded(vm_index, intid);
    match vm.cpus.get(target) {
        Some(&cpu) if forwarded => {
            let (pending, active) = arch::physical_state(intid, cpu);
            // On this CPU and in no list register: at most pending in the
            // GIC, not yet taken by mvmm. On another CPU: active there means
            // injected into its list registers, pending or active for the
            // guest (those cannot be read from here).
            vgic::Live {
                pending,
                active: active && !here,
            }
        }
        _ => vgic::Live::default(),
    }
}

/// Makes the physical enable of each passed-through interrupt follow the
/// guest's enable in its virtual distributor.
pub(super) fn sync_device_irqs(vm_index: usize) {
    VMM.device_irq_enables(vm_index, arch::set_spi_enabled);
}

/// Makes vCPU `target` of the VM look at its pending interrupts: at once
/// if it runs here, else by kicking its CPU.
pub(super) fn deliver(vm_index: usize, vm: &Vm<'static>, target: usize) {
    let here = current().is_some_and(|(v, vcpu, _)| v == vm_index && vcpu == target);
    if here {
        flush(vm_index, target);
    } else if let Some(&cpu) = vm.cpus.get(target) {
        arch::kick(cpu);
    }
}

/// Makes the vCPUs of the VM named in `mask` (a bit per vCPU) look at
/// their pending interrupts.
pub(super) fn notify(vm_index: usize, vm: &Vm<'static>, mask: u32) {
    if mask == 0 {
        return;
    }
    for target in (0..vm.cpus.len()).filter(|t| mask & (1 << t) != 0) {
        deliver(vm_index, vm, target);
    }
}

/// Moves this vCPU's pending virtual interrupts into free list registers.
pub(super) fn flush(vm_index: usize, vcpu: usize) {
    VMM.flush(
        vm_index,
        vcpu,
        |intid, priority| match arch::inject_virtual(intid, false, priority) {
            arch::Injected::Loaded => Injected::Loaded,
            arch::Injected::Merged => Injected::Merged,
            arch::Injected::Later => Injected::Later,
        },
    );
}

/// A guest wrote `value` to ICC_SGI1R_EL1 (or a sibling): SGIs to its own
/// vCPUs.
pub(super) fn send_sgi(vm_index: usize, vcpu: usize, vm: &Vm<'static>, value: u64) {
    notify(vm_index, vm, VMM.send_sgi(vm_index, vcpu, value));
}

/// A guest access to its virtual GIC distributor or redistributors.
pub(super) fn gic_access(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    abort: &DataAbort,
    ipa: u64,
    va: u64,
) {
    let access = Access::of(abort, 0, regs.get(abort.register));
    let live = |target, intid| live_state(vm_index, vm, target, intid);
    match VMM.gic_access(vm_index, ipa, access, &live) {
        Ok(done) => {
            if let Some(raw) = done.load {
                regs.set(abort.register, trap::load_value(abort, raw));
            }
            regs.elr += 4;
            if abort.write {
                // An enable may have made queued interrupts deliverable.
                sync_device_irqs(vm_index);
            }
            notify(vm_index, vm, done.notify);
        }
        Err(_) => refuse_access(regs, vm_index, vm, abort, "GIC", ipa, va),
    }
}
