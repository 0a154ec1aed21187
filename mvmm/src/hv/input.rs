//! The trusted path's input: mvmm reads the board's keyboard and tablet
//! (interrupts taken on the secure VM's CPU, never a rich-VM CPU), the
//! router (`mvmm_core::input::Router`) decides which VM each event is for,
//! and each VM's emulated virtio-input device (`mvmm_core::virtio::input`)
//! hands the VM its events.
//!
//! Lock order: `INPUT_PATH` is never held while another lock is taken; the
//! virtual interrupts it asks for are raised after it is dropped.

use super::*;
use mvmm_core::input::{Router, Side};
use mvmm_core::virtio::input::{InputDevice, InputEffect};

/// Physical input devices mvmm drives, at most.
const MAX_DEVICES: usize = 4;

struct InputPath {
    devices: [Option<arch::InputDevice>; MAX_DEVICES],
    router: Router,
    /// Each VM's emulated device (indexed like `BOARD.vms`).
    emulated: [InputDevice; MAX_VMS],
}

static INPUT_PATH: Mutex<InputPath> = Mutex::new(InputPath {
    devices: [const { None }; MAX_DEVICES],
    router: Router::new(),
    emulated: [const { InputDevice::new(mvmm_core::input::RICH_INPUT) }; MAX_VMS],
});

/// The VM input of `side` goes to.
fn vm_of(side: Side) -> Option<usize> {
    let kind = match side {
        Side::Rich => VmKind::Rich,
        Side::Secure => VmKind::Secure,
    };
    BOARD
        .vms
        .iter()
        .position(|vm| vm.kind == kind && vm.input.is_some())
}

fn side_of(vm_index: usize) -> Option<Side> {
    match BOARD.vms.get(vm_index)?.kind {
        VmKind::Rich => Some(Side::Rich),
        VmKind::Secure => Some(Side::Secure),
    }
}

/// Starts the board's input devices; their interrupts go to the secure
/// VM's CPU.
pub(super) fn start_input() {
    let secure_cpu = BOARD
        .vms
        .iter()
        .find(|vm| vm.kind == VmKind::Secure)
        .and_then(|vm| vm.cpus.first().copied());
    let mut path = INPUT_PATH.lock();
    for (i, vm) in BOARD.vms.iter().enumerate() {
        if vm.kind == VmKind::Secure
            && let Some(device) = path.emulated.get_mut(i)
        {
            *device = InputDevice::new(mvmm_core::input::SECURE_INPUT);
        }
    }
    let Some(cpu) = secure_cpu else {
        if !BOARD.input.is_empty() {
            log!("input: no secure VM to take the input interrupts: input devices left off");
        }
        return;
    };
    for (slot, place) in BOARD.input.iter().zip(path.devices.iter_mut()) {
        match arch::InputDevice::open(slot.mmio) {
            Some(device) => {
                *place = Some(device);
                arch::route_spi(slot.irq, cpu, true);
                log!(
                    "input: virtio-input at {} (irq {}), its interrupt on cpu {cpu}",
                    slot.mmio,
                    slot.irq
                );
            }
            None => log!("input: no virtio-input device at {}", slot.mmio),
        }
    }
}

/// An input device interrupted: route what it reported.
pub(super) fn input_events() {
    let raised = {
        let mut path = INPUT_PATH.lock();
        let InputPath {
            devices, router, ..
        } = &mut *path;
        for device in devices.iter_mut().flatten() {
            device.ack();
            while let Some(event) = device.next_event() {
                router.route(event);
            }
        }
        deliver_all(&mut path)
    };
    raise_input_irqs(raised);
}

/// Hands every VM what waits for it; returns which VMs to interrupt.
fn deliver_all(path: &mut InputPath) -> [bool; MAX_VMS] {
    let mut raised = [false; MAX_VMS];
    for side in [Side::Rich, Side::Secure] {
        if let Some(vm_index) = vm_of(side) {
            raised[vm_index] = deliver(path, vm_index, side);
        }
    }
    raised
}

/// Moves events for `side` into VM `vm_index`'s device; true when the VM
/// is to be interrupted.
fn deliver(path: &mut InputPath, vm_index: usize, side: Side) -> bool {
    let Some(vm) = BOARD.vms.get(vm_index) else {
        return false;
    };
    let InputPath {
        router, emulated, ..
    } = path;
    let Some(device) = emulated.get_mut(vm_index) else {
        return false;
    };
    let mut ram = arch::VmRam::new(RamWindow::new(vm.ram));
    if let Err(e) = device.deliver(&mut ram, router.queue(side)) {
        report_vm_fault(
            vm_index,
            vm,
            format_args!("input device needs a reset: {e}"),
        );
    }
    device.take_raised()
}

fn raise_input_irqs(raised: [bool; MAX_VMS]) {
    for (vm_index, vm) in BOARD.vms.iter().enumerate() {
        if raised.get(vm_index).copied().unwrap_or(false)
            && let Some(slot) = vm.input
        {
            let target = VMM.raise(vm_index, slot.irq);
            if let Some(target) = target {
                super::deliver(vm_index, vm, target);
            }
        }
    }
}

/// The trusted path's focus moved: input goes to the secure VM (`secure`)
/// or back to the rich VM. The rich VM gets the releases of what it held.
pub(super) fn set_input_focus(secure: bool) {
    let raised = {
        let mut path = INPUT_PATH.lock();
        path.router
            .set_focus(if secure { Side::Secure } else { Side::Rich });
        deliver_all(&mut path)
    };
    raise_input_irqs(raised);
}

/// VM `vm_index` was reset: its device is back at power-on, and what
/// waited for it is gone.
pub(super) fn reset_input(vm_index: usize) {
    let mut path = INPUT_PATH.lock();
    if let Some(device) = path.emulated.get_mut(vm_index) {
        device.reset();
    }
    if let Some(side) = side_of(vm_index) {
        path.router.queue(side).clear();
    }
}

/// A guest access to its input device's registers.
pub(super) fn input_access(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    abort: &DataAbort,
    offset: u64,
    va: u64,
) {
    let (result, raised) = {
        let mut path = INPUT_PATH.lock();
        let Some(device) = path.emulated.get_mut(vm_index) else {
            drop(path);
            refuse_access(regs, vm_index, vm, abort, "input device", offset, va);
            return;
        };
        let result = if abort.write {
            let mut ram = arch::VmRam::new(RamWindow::new(vm.ram));
            device.write(&mut ram, offset, abort.size, regs.get(abort.register))
        } else {
            device.read(offset, abort.size).map(|v| {
                regs.set(abort.register, trap::load_value(abort, v));
                InputEffect::None
            })
        };
        let mut raised = [false; MAX_VMS];
        if let Some(side) = side_of(vm_index) {
            match result {
                Ok(InputEffect::Buffers) => raised[vm_index] = deliver(&mut path, vm_index, side),
                Ok(InputEffect::Reset) => path.router.queue(side).clear(),
                _ => {
                    if let Some(device) = path.emulated.get_mut(vm_index) {
                        raised[vm_index] = device.take_raised();
                    }
                }
            }
        }
        (result, raised)
    };
    match result {
        Ok(InputEffect::Failed(e)) => {
            report(
                vm_index,
                vm,
                regs,
                format_args!("input device needs a reset: {e}"),
            );
            regs.elr += 4;
        }
        Ok(_) => regs.elr += 4,
        Err(_) => {
            refuse_access(regs, vm_index, vm, abort, "input device", offset, va);
            return;
        }
    }
    raise_input_irqs(raised);
}
