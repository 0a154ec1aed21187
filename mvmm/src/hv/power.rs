//! Power calls (PSCI and mvmm's hypercalls), VM reset, and the boot image
//! store that a reset copies from.

use super::*;
use mvmm_core::virtio::mmio;

/// A power or vendor call from a guest, through SMC or HVC: what
/// `Vmm::on_call` makes of it, carried out.
pub(super) fn power_call(regs: &mut GuestRegs, vm_index: usize, vcpu: usize, vm: &Vm<'static>) {
    let x = [regs.x[0], regs.x[1], regs.x[2], regs.x[3]];
    let outcome = match VMM.on_call(vm_index, vcpu, x) {
        CallAction::Hypercall(call) => {
            regs.x[0] = match call {
                Hypercall::ConsoleFocus(take) => {
                    set_focus(vm_index, vm, take);
                    if !take {
                        // The prompt is over: the trusted screen goes too.
                        secure_display_ends();
                    }
                    hypercall::SUCCESS
                }
                Hypercall::Display(take) => display_call(vm, take),
                Hypercall::Rpmb { frame } => rpmb_call(vm, frame),
                Hypercall::Invalid => hypercall::INVALID_PARAMETERS,
            };
            return;
        }
        CallAction::Refused(refusal) => {
            if let hypercall::Refusal::NotSecure(what) = refusal {
                report(
                    vm_index,
                    vm,
                    regs,
                    format_args!("asked for {what}; denied (only a secure VM may)"),
                );
            }
            regs.x[0] = refusal.code();
            return;
        }
        CallAction::Trng(call) => {
            regs.x[..4].copy_from_slice(&trng_call(call));
            return;
        }
        CallAction::Answer(answer) => {
            regs.x[..4].copy_from_slice(&answer);
            return;
        }
        CallAction::Psci(outcome) => outcome,
    };
    match outcome {
        Outcome::Return(value) => regs.x[0] = value,
        Outcome::StartVcpu { vcpu: target } => {
            regs.x[0] = psci::ret::SUCCESS as u64;
            // The target's CPU waits in WFI for a start (`wait_for_cpu_on`).
            if let Some(&cpu) = vm.cpus.get(target) {
                arch::kick(cpu);
            }
            arch::send_event();
        }
        Outcome::StopCaller => stop_here(vm_index, vcpu),
        Outcome::SystemOff => {
            let after = VMM.system_off(vm_index);
            log!("vm '{}': PSCI SYSTEM_OFF", vm.name);
            if vm.kind == VmKind::Secure {
                secure_path_ends(vm_index, vm);
            }
            if after == AfterSystemOff::Machine {
                for vm in BOARD.vms {
                    log_exits(vm, false);
                }
                log!("powering off");
                arch::system_off();
            }
            park();
        }
        Outcome::SystemReset => reset_vm(vm_index, vcpu, vm),
    }
}

/// Restarts VM `vm_index` for its vCPU `vcpu`, which asked (see the reset
/// protocol in `mvmm_core::power`): its other vCPUs are stopped, then its
/// virtual devices reset, its boot images copied again from the image
/// store, and vCPU 0's entry runs on this CPU. The wait for the other vCPUs
/// has no deadline: a vCPU that is slow to stop is late, not lost.
pub(super) fn reset_vm(vm_index: usize, vcpu: usize, vm: &Vm<'static>) -> ! {
    let request = VMM.vm(vm_index).power.request_reset(vcpu);
    let ResetRequest::Owner { kick } = request else {
        // Another vCPU resets the VM: this one stops like the others.
        stop_here(vm_index, vcpu);
    };
    kick_vcpus(vm, kick);
    let since = arch::counter();
    let mut warned = false;
    loop {
        let waiting = {
            let state = VMM.vm(vm_index);
            if state.power.ready_to_reset() {
                break;
            }
            state.power.waiting_for()
        };
        match Overdue::judge(since, arch::counter(), arch::counter_frequency()) {
            Overdue::No => {}
            Overdue::Warn if !warned => {
                warned = true;
                log!(
                    "vm '{}': PSCI SYSTEM_RESET still waits for vCPUs {waiting:#b} to stop after {} s; kicking them again",
                    vm.name,
                    Overdue::WARN_SECONDS
                );
                kick_vcpus(vm, waiting);
            }
            Overdue::Warn => {}
            Overdue::Wedged => {
                log!(
                    "vm '{}': PSCI SYSTEM_RESET: vCPUs {waiting:#b} never stopped in {} s: mvmm is wedged; powering the machine off",
                    vm.name,
                    Overdue::WEDGED_SECONDS
                );
                arch::system_off();
            }
        }
        // Each stopping vCPU signals an event; the EL2 event stream wakes
        // this wait now and then too.
        arch::wait_for_event();
    }
    // No vCPU of the VM runs now: what it cost ends with it.
    log_exits(vm, true);
    // Quiesce its devices before its RAM is rewritten, so that nothing the
    // peer sends lands in the fresh images.
    if vm.vsock.is_some() {
        // Writing 0 to the virtio-mmio Status register resets the device;
        // the switch resets the VM's connections on the peer's side too.
        let _ = SWITCH.lock().mmio_write(vm_index, mmio::reg::STATUS, 4, 0);
    }
    reset_input(vm_index);
    let stopped = quiesce_pcie(vm);
    if stopped > 0 {
        log!(
            "vm '{}': SYSTEM_RESET: {stopped} PCIe function(s) quiesced (no DMA, no INTx) before the copy",
            vm.name
        );
    }
    let copied = match load_images(vm_index, vm) {
        Ok(loaded) => loaded.copied,
        Err(why) => {
            VMM.vm(vm_index).off = true;
            log!(
                "vm '{}': SYSTEM_RESET: boot image refused: {why}; the VM stays off",
                vm.name
            );
            park();
        }
    };
    seed_device_tree(vm);
    if vm.kind == VmKind::Secure {
        write_handover(vm);
        // A trusted screen does not outlive the secure VM that drew it.
        secure_path_ends(vm_index, vm);
    }
    let restart = {
        let mut state = VMM.vm(vm_index);
        let restart = state.power.finish_reset(vcpu, vm.entry, vm.boot_arg);
        state.reset_devices(vm.cpus.len());
        restart
    };
    arch::clear_list_registers();
    log!(
        "vm '{}': SYSTEM_RESET: restarting at {:#x}{}",
        vm.name,
        vm.entry,
        if copied > 0 {
            " with fresh boot images"
        } else {
            ""
        }
    );
    if restart == Some(Restart::BootVcpu) {
        // The VM restarts on vCPU 0, as it boots: wake it (it waits for a
        // start since it stopped for this reset); this vCPU is off now.
        if let Some(&cpu) = vm.cpus.first() {
            arch::kick(cpu);
        }
        stop_here(vm_index, vcpu);
    }
    start_guest(arch::this_cpu(), vm.entry, vm.boot_arg)
}

/// Kicks the vCPUs of `vm` named in `mask` (a bit per vCPU) into an exit.
fn kick_vcpus(vm: &Vm<'static>, mask: u32) {
    for (i, &cpu) in vm.cpus.iter().enumerate() {
        if mask & (1 << i) != 0 {
            arch::kick(cpu);
        }
    }
}

/// At every exit of this vCPU, first: stops it here when another vCPU
/// resets its VM.
pub(super) fn stop_if_asked(vm_index: usize, vcpu: usize) {
    if VMM.at_exit(vm_index, vcpu) == AtExit::Stop {
        stop_here(vm_index, vcpu);
    }
}

/// This vCPU is Off: no virtual interrupts, its EL1 state cleared, the
/// reset's owner told; it waits for a CPU_ON like any powered-off vCPU.
pub(super) fn stop_here(vm_index: usize, vcpu: usize) -> ! {
    arch::clear_list_registers();
    arch::reset_el1();
    arch::send_event();
    wait_for_cpu_on(arch::this_cpu(), vm_index, vcpu)
}

/// What [`load_images`] copied into a VM.
pub(super) struct Loaded {
    pub copied: usize,
    /// The SHA-256 and security version of the VM's signed image, when its
    /// signature verified.
    pub verified: Option<([u8; 32], u32)>,
}

/// Copies VM `vm_index`'s boot images from the image store into its RAM,
/// once `mvmm_core::image_store::verify_for_vm` has accepted them (signed
/// images verified against the boot authority built into mvmm; a secure VM
/// only from signed images). On a refusal nothing is copied and the reason
/// is returned. A missing manifest leaves a rich VM's RAM as the loader
/// filled it.
pub(super) fn load_images(vm_index: usize, vm: &Vm<'static>) -> Result<Loaded, &'static str> {
    let manifest = BOARD.image_store.and_then(|store| {
        let mut bytes = [0u8; image_store::MANIFEST_SIZE as usize];
        arch::read_store(store, 0, &mut bytes)
            .then(|| Manifest::parse(&bytes, store.size, &BOARD).ok())
            .flatten()
            .map(|m| (store, m))
    });
    let verified = image_store::verify_for_vm(
        manifest.as_ref().map(|(_, m)| m),
        vm_index,
        vm.kind,
        &crate::board::BOOT_AUTHORITY,
        &mut |offset, buf| {
            manifest
                .as_ref()
                .is_some_and(|&(store, _)| arch::read_store(store, offset, buf))
        },
    )?;
    let mut loaded = Loaded {
        copied: 0,
        verified,
    };
    if let Some((store, manifest)) = &manifest {
        for entry in manifest.for_vm(vm_index) {
            if arch::copy_image(*store, entry, vm.ram) {
                loaded.copied += 1;
            } else {
                log!(
                    "vm '{}': boot image {:#x}+{:#x} refused",
                    vm.name,
                    entry.destination,
                    entry.size
                );
            }
        }
    }
    Ok(loaded)
}

/// Quiesces every PCIe function of `vm`'s host bridges (see
/// `mvmm_core::pcie`). Returns how many functions there are.
fn quiesce_pcie(vm: &Vm<'static>) -> usize {
    vm.devices
        .iter()
        .filter_map(|name| BOARD.device(name))
        .map(|device| match (device.pcie, device.dma) {
            (Some(host), partition::Dma::Smmu { streams }) => {
                arch::quiesce_functions(&host, streams)
            }
            _ => 0,
        })
        .sum()
}

/// The secure VM `vm_index` stopped (off, or reset): the trusted path it
/// held (console and input focus, the display) goes back to the rich VM.
pub(super) fn secure_path_ends(vm_index: usize, vm: &Vm<'static>) {
    if VMM.focus() == vm_index {
        set_focus(vm_index, vm, false);
    }
    secure_display_ends();
}
