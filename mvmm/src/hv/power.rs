//! Power calls (PSCI and mvmm's hypercalls), VM reset, and the boot image
//! store that a reset copies from.

use super::*;
use mvmm_core::virtio::mmio;

/// PSCI / SMCCC from a guest, through SMC or HVC.
pub(super) fn power_call(regs: &mut GuestRegs, vm_index: usize, vcpu: usize, vm: &Vm<'static>) {
    if let Some(call) = hypercall::decode(regs.x[0], regs.x[1]) {
        regs.x[0] = match call {
            Hypercall::Invalid => hypercall::INVALID_PARAMETERS,
            Hypercall::ConsoleFocus(_) if vm.kind != VmKind::Secure => {
                report(
                    vm_index,
                    vm,
                    regs,
                    format_args!("asked for console focus; denied (only a secure VM may)"),
                );
                hypercall::DENIED
            }
            Hypercall::ConsoleFocus(take) => {
                set_focus(vm_index, vm, take);
                hypercall::SUCCESS
            }
        };
        return;
    }
    let call = Call::decode([regs.x[0], regs.x[1], regs.x[2], regs.x[3]]);
    let mut state = VMS[vm_index].lock();
    let vcpus = vm.cpus.len();
    match psci::handle(call, vcpu, &mut state.power[..vcpus], vm.ram) {
        Outcome::Return(value) => regs.x[0] = value,
        Outcome::StartVcpu { .. } => {
            regs.x[0] = psci::ret::SUCCESS as u64;
            drop(state);
            arch::send_event();
        }
        Outcome::StopCaller => {
            drop(state);
            wait_for_cpu_on(arch::this_cpu(), vm_index, vcpu);
        }
        Outcome::SystemOff => {
            state.off = true;
            drop(state);
            log!("vm '{}': PSCI SYSTEM_OFF", vm.name);
            let all_off = VMS.iter().take(BOARD.vms.len()).all(|s| s.lock().off);
            if vm.kind == VmKind::Rich || all_off {
                log!("powering off");
                arch::system_off();
            }
            park();
        }
        Outcome::SystemReset => {
            drop(state);
            reset_vm(vm_index, vcpu, vm);
        }
    }
}

/// Restarts VM `vm_index` on its vCPU `vcpu` (the one that asked): its
/// other vCPUs are stopped, its boot images copied again from the image
/// store, its virtual devices reset; vCPU 0's entry runs on this CPU.
pub(super) fn reset_vm(vm_index: usize, vcpu: usize, vm: &Vm<'static>) -> ! {
    let vcpus = vm.cpus.len();
    {
        let mut state = VMS[vm_index].lock();
        for other in (0..vcpus).filter(|&i| i != vcpu) {
            if state.power[other] != VcpuPower::Off {
                state.stop[other] = true;
                arch::kick(vm.cpus[other]);
            }
        }
    }
    // Each stopped vCPU marks itself Off from its own CPU (see
    // `stop_if_asked`); nothing is rewritten while one still runs. A vCPU
    // that does not stop within a second (mvmm parked it) stops the VM.
    let deadline = arch::counter().saturating_add(arch::counter_frequency());
    loop {
        let state = VMS[vm_index].lock();
        if (0..vcpus).all(|i| i == vcpu || state.power[i] == VcpuPower::Off) {
            break;
        }
        drop(state);
        if arch::counter() > deadline {
            VMS[vm_index].lock().off = true;
            log!(
                "vm '{}': PSCI SYSTEM_RESET: a vCPU did not stop; the VM stays stopped",
                vm.name
            );
            park();
        }
        core::hint::spin_loop();
    }
    let copied = load_images(vm_index, vm);
    {
        let mut state = VMS[vm_index].lock();
        state.power[..vcpus].fill(VcpuPower::Off);
        state.power[vcpu] = VcpuPower::On;
        state.uart = VirtualPl011::new();
        state.vgic = Vgic::new(vcpus);
    }
    if vm.vsock.is_some() {
        // Writing 0 to the virtio-mmio Status register resets the device;
        // the switch resets the VM's connections on the peer's side too.
        let _ = SWITCH.lock().mmio_write(vm_index, mmio::reg::STATUS, 4, 0);
    }
    arch::clear_list_registers();
    log!(
        "vm '{}': PSCI SYSTEM_RESET: restarting the VM at {:#x}{}",
        vm.name,
        vm.entry,
        if copied > 0 {
            " with fresh boot images"
        } else {
            ""
        }
    );
    start_guest(arch::this_cpu(), vm.entry, vm.boot_arg)
}

/// On a vCPU whose VM is being reset by another vCPU: stops here (Off,
/// no virtual interrupts) and waits for a CPU_ON like any powered-off vCPU.
pub(super) fn stop_if_asked(vm_index: usize, vcpu: usize) {
    let mut state = VMS[vm_index].lock();
    if !core::mem::take(&mut state.stop[vcpu]) {
        return;
    }
    state.power[vcpu] = VcpuPower::Off;
    drop(state);
    arch::clear_list_registers();
    arch::reset_el1();
    wait_for_cpu_on(arch::this_cpu(), vm_index, vcpu);
}

/// Copies VM `vm_index`'s boot images from the image store into its RAM;
/// returns how many were copied. A missing or refused manifest is logged
/// once at boot and leaves the RAM as the loader filled it.
pub(super) fn load_images(vm_index: usize, vm: &Vm<'static>) -> usize {
    let Some(store) = BOARD.image_store else {
        return 0;
    };
    let mut bytes = [0u8; image_store::MANIFEST_SIZE as usize];
    if !arch::read_store(store, 0, &mut bytes) {
        return 0;
    }
    let Ok(manifest) = Manifest::parse(&bytes, store.size, &BOARD) else {
        return 0;
    };
    let mut copied = 0;
    for entry in manifest.for_vm(vm_index) {
        if arch::copy_image(store, entry, vm.ram) {
            copied += 1;
        } else {
            log!(
                "vm '{}': boot image {:#x}+{:#x} refused",
                vm.name,
                entry.destination,
                entry.size
            );
        }
    }
    copied
}
