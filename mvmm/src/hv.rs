//! The hypervisor proper: bring-up, the run loop of each vCPU, and what
//! mvmm does with every guest exit.
//!
//! The decisions come from `mvmm_core` (trap decoding, PSCI, the virtual
//! UART, the console multiplexer, stage-2 planning); hardware access goes
//! through `crate::arch`. No guest action reaches a panic: anything
//! unexpected is logged with the VM's name and answered with an exception
//! injected into that guest.

use crate::arch::{self, GuestRegs};
use crate::board::{BOARD, CONSOLE_PREFIXES};
use crate::log;
use core::sync::atomic::{AtomicUsize, Ordering};
use mvmm_core::console::ConsoleMux;
use mvmm_core::hypercall::{self, Hypercall};
use mvmm_core::image_store::{self, Manifest, ManifestError};
use mvmm_core::partition::{MAX_CPUS, MAX_VMS, Vm, VmKind};
use mvmm_core::psci::{self, Call, Outcome, VcpuPower};
use mvmm_core::stage2::{ENTRIES, Stage2Builder, Table};
use mvmm_core::trap::{self, DataAbort, Exit, Fault, GuestPosition, SysRegAccess, sysreg};
use mvmm_core::vgic::{self, Vgic};
use mvmm_core::virtio::switch::{PumpReport, Refusal, Rule, Switch};
use mvmm_core::virtio::{RamWindow, WriteEffect};
use mvmm_core::vuart::VirtualPl011;
use spin::Mutex;

/// Console writer 0 is mvmm; VM `i` writes as `i + 1`.
pub const MVMM_SOURCE: usize = 0;
/// Stage-2 tables per VM: root, two level-2 tables and level-3 tables for
/// device windows and unaligned RAM edges.
const TABLES_PER_VM: usize = 16;
/// Priority of interrupts forwarded with the HW bit (timer, devices).
const FORWARDED_PRIORITY: u8 = 0xa0;
/// Faults logged per VM before mvmm only counts them (a guest must not be
/// able to flood the console).
const FAULT_LOG_LIMIT: u32 = 32;

/// What mvmm keeps per VM.
struct VmState {
    uart: VirtualPl011,
    vgic: Vgic,
    power: [VcpuPower; MAX_CPUS],
    stage2_root: u64,
    faults: u32,
    off: bool,
    /// vCPUs asked to stop because another vCPU reset the VM.
    stop: [bool; MAX_CPUS],
}

impl VmState {
    const fn new() -> Self {
        VmState {
            uart: VirtualPl011::new(),
            vgic: Vgic::new(1),
            power: [VcpuPower::Off; MAX_CPUS],
            stage2_root: 0,
            faults: 0,
            off: false,
            stop: [false; MAX_CPUS],
        }
    }
}

#[repr(C, align(4096))]
struct Stage2Pool([Table; TABLES_PER_VM]);

static VMS: [Mutex<VmState>; MAX_VMS] = [const { Mutex::new(VmState::new()) }; MAX_VMS];
static STAGE2: [Mutex<Stage2Pool>; MAX_VMS] =
    [const { Mutex::new(Stage2Pool([[0; ENTRIES]; TABLES_PER_VM])) }; MAX_VMS];
static CONSOLE: Mutex<ConsoleMux<'static>> = Mutex::new(ConsoleMux::new(CONSOLE_PREFIXES));
/// The VMM channel: every VM's vsock device and the switch between them.
static SWITCH: Mutex<Switch> = Mutex::new(Switch::new());
/// The VM whose vUART receives what is typed on the physical console.
static FOCUS: AtomicUsize = AtomicUsize::new(0);

/// Writes bytes from console writer `source` (see [`MVMM_SOURCE`]).
pub fn console_write(source: usize, bytes: &[u8]) {
    let mut mux = CONSOLE.lock();
    for &b in bytes {
        mux.write(source, b, &mut arch::console_write_byte);
    }
}

/// Shows the incomplete line console writer `source` holds (a prompt).
fn console_flush(source: usize) {
    CONSOLE.lock().flush(source, &mut arch::console_write_byte);
}

/// Prefix of the secure VM's lines while it holds console focus: the
/// trusted prompt. No guest can print it (see `ConsoleMux`).
const TRUSTED_PREFIX: &str = "[TRUSTED secure] ";

/// Gives console input focus to the secure VM `vm_index` (`take`) or back
/// to the rich VM.
fn set_focus(vm_index: usize, vm: &Vm<'static>, take: bool) {
    let rich = BOARD
        .vms
        .iter()
        .position(|v| v.kind == VmKind::Rich)
        .unwrap_or(0);
    let (focus, prefix) = if take {
        (vm_index, TRUSTED_PREFIX)
    } else {
        (
            rich,
            CONSOLE_PREFIXES
                .get(vm_index + 1)
                .copied()
                .unwrap_or("[?] "),
        )
    };
    if take {
        log!("console input goes to vm '{}' (trusted prompt)", vm.name);
    }
    FOCUS.store(focus, Ordering::Relaxed);
    CONSOLE
        .lock()
        .set_prefix(vm_index + 1, prefix, &mut arch::console_write_byte);
    if !take {
        log!(
            "console input goes back to vm '{}'",
            BOARD.vms.get(rich).map_or("?", |v| v.name)
        );
    }
}

/// First code of every CPU after the boot assembly.
pub fn cpu_main(cpu: usize, dtb: u64) -> ! {
    if cpu == 0 {
        boot(dtb);
    }
    arch::init_cpu_interface(cpu);
    match BOARD.vm_of_cpu(cpu) {
        Some((vm, vcpu)) => run_vcpu(cpu, vm, vcpu),
        None => {
            log!("cpu {cpu}: not given to any VM; idle");
            loop {
                arch::wait_for_interrupt();
            }
        }
    }
}

/// Boot CPU only: stage-2 tables for every VM, the GIC, the other CPUs.
fn boot(dtb: u64) {
    log!(
        "mVMM {} on board '{}': {} CPUs{}",
        env!("CARGO_PKG_VERSION"),
        BOARD.name,
        BOARD.cpu_count,
        // QEMU passes no DTB pointer to an ELF image; a Linux-style boot does.
        if dtb != 0 {
            " (firmware DTB given)"
        } else {
            ""
        }
    );
    let rich = BOARD
        .vms
        .iter()
        .position(|vm| vm.kind == VmKind::Rich)
        .unwrap_or(0);
    FOCUS.store(rich, Ordering::Relaxed);
    for (i, vm) in BOARD.vms.iter().enumerate() {
        VMS[i].lock().vgic = Vgic::new(vm.cpus.len());
        let mut pool = STAGE2[i].lock();
        let pool_pa = (&raw const pool.0) as u64;
        let built = Stage2Builder::new(&mut pool.0, pool_pa).and_then(|mut b| {
            b.map_vm(&BOARD, vm)?;
            Ok((b.root_pa(), b.tables_used()))
        });
        match built {
            Ok((root, tables)) => {
                VMS[i].lock().stage2_root = root;
                log!(
                    "vm '{}' (VMID {}): cpus {:?}, ram {}, devices {:?}, {} stage-2 tables",
                    vm.name,
                    vm.vmid,
                    vm.cpus,
                    vm.ram[0],
                    vm.devices,
                    tables
                );
            }
            Err(e) => {
                // Validated at build time, so this is an mvmm bug: the VM
                // stays off rather than running with a partial map.
                VMS[i].lock().off = true;
                log!(
                    "vm '{}': cannot build stage-2 tables ({e:?}); it will not run",
                    vm.name
                );
            }
        }
    }
    if let Some(store) = BOARD.image_store {
        let mut bytes = [0u8; image_store::MANIFEST_SIZE as usize];
        match arch::read_store(store, 0, &mut bytes)
            .then(|| Manifest::parse(&bytes, store.size, &BOARD))
        {
            Some(Ok(_)) => {
                for (i, vm) in BOARD.vms.iter().enumerate() {
                    let n = load_images(i, vm);
                    if n > 0 {
                        log!(
                            "vm '{}': {n} boot image(s) copied from the image store",
                            vm.name
                        );
                    }
                }
            }
            Some(Err(ManifestError::Empty)) | None => {}
            Some(Err(e)) => log!(
                "image store at {store}: manifest refused ({e:?}); VMs start with their RAM as loaded"
            ),
        }
    }
    configure_switch();
    arch::init_distributor();
    // Typed input interrupts the CPU of the VM with focus.
    if let Some(&cpu) = BOARD.vms.get(rich).and_then(|vm| vm.cpus.first()) {
        arch::route_spi(BOARD.uart.irq, cpu, true);
        arch::enable_rx_interrupt();
    }
    // Passed-through device interrupts go to the CPU of the owner's vCPU 0,
    // disabled until the guest enables them in its virtual GIC.
    for vm in BOARD.vms {
        for (irq, _) in device_irqs(vm) {
            arch::route_spi(irq, vm.cpus[0], false);
        }
    }
    for cpu in 1..BOARD.cpu_count {
        if let Err(code) = arch::cpu_start(cpu) {
            log!("cpu {cpu}: firmware refused CPU_ON ({code})");
        }
    }
}

/// Gives the vsock switch each VM's cid and the board's policy.
fn configure_switch() {
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

/// Runs vCPU `vcpu` of VM `vm` on this CPU, for ever.
fn run_vcpu(cpu: usize, vm_index: usize, vcpu: usize) -> ! {
    let vm = &BOARD.vms[vm_index];
    let root = VMS[vm_index].lock().stage2_root;
    if root == 0 {
        park();
    }
    arch::install_vm(vm.vmid, root, vcpu);
    if vcpu == 0 {
        VMS[vm_index].lock().power[0] = VcpuPower::On;
        log!(
            "vm '{}': vcpu 0 starts at {:#x} on cpu {cpu}",
            vm.name,
            vm.entry
        );
        start_guest(cpu, vm.entry, vm.boot_arg)
    } else {
        wait_for_cpu_on(cpu, vm_index, vcpu)
    }
}

fn start_guest(cpu: usize, entry: u64, arg: u64) -> ! {
    arch::reset_el1();
    arch::enter_guest(&GuestRegs::at_entry(entry, arg), cpu)
}

/// Waits until the VM's PSCI CPU_ON names this vCPU, then starts it.
fn wait_for_cpu_on(cpu: usize, vm_index: usize, vcpu: usize) -> ! {
    loop {
        {
            let mut state = VMS[vm_index].lock();
            if let VcpuPower::OnPending { entry, context } = state.power[vcpu] {
                state.power[vcpu] = VcpuPower::On;
                drop(state);
                log!(
                    "vm '{}': vcpu {vcpu} starts at {entry:#x} on cpu {cpu} (PSCI CPU_ON)",
                    BOARD.vms[vm_index].name
                );
                start_guest(cpu, entry, context);
            }
        }
        arch::wait_for_event();
    }
}

/// Stops this CPU for good.
fn park() -> ! {
    loop {
        arch::wait_for_interrupt();
    }
}

/// The VM and vCPU running on this CPU.
fn current() -> Option<(usize, usize, &'static Vm<'static>)> {
    let (vm, vcpu) = BOARD.vm_of_cpu(arch::this_cpu())?;
    Some((vm, vcpu, &BOARD.vms[vm]))
}

/// A synchronous exception from the guest on this CPU.
pub fn guest_sync(regs: &mut GuestRegs, esr: u64) {
    let Some((vm_index, vcpu, vm)) = current() else {
        park()
    };
    match Exit::decode(esr) {
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
        Exit::SysReg(access) if access.encoding() == sysreg::ACTLR_EL1 => {
            // Implementation-defined: reads as zero, writes ignored.
            if access.read {
                regs.set(access.rt, 0);
            }
            regs.elr += 4;
        }
        Exit::SysReg(access)
            if matches!(
                access.encoding(),
                vgic::ICC_SGI1R_EL1 | vgic::ICC_ASGI1R_EL1 | vgic::ICC_SGI0R_EL1
            ) =>
        {
            send_sgi(regs, vm_index, vcpu, vm, &access);
            regs.elr += 4;
        }
        Exit::SysReg(access) if access.op0 == 1 => {
            // DC ISW/CSW/CISW (set/way maintenance, trapped by HCR.TSW):
            // a guest must not clean or invalidate caches by set/way on a
            // shared cache hierarchy. Ignored: QEMU models no caches and
            // stage-2 memory is write-back coherent.
            regs.elr += 4;
        }
        Exit::SysReg(access) => {
            report(
                vm_index,
                vm,
                regs,
                format_args!("trapped system register access {access:?}; undefined"),
            );
            inject(regs, vm_index, vm, Fault::Undefined, None);
        }
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

/// PSCI / SMCCC from a guest, through SMC or HVC.
fn power_call(regs: &mut GuestRegs, vm_index: usize, vcpu: usize, vm: &Vm<'static>) {
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
fn reset_vm(vm_index: usize, vcpu: usize, vm: &Vm<'static>) -> ! {
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
        let _ = SWITCH.lock().mmio_write(vm_index, VIRTIO_MMIO_STATUS, 4, 0);
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

/// Register offset of virtio-mmio's device Status.
const VIRTIO_MMIO_STATUS: u64 = 0x070;

/// On a vCPU whose VM is being reset by another vCPU: stops here (Off,
/// no virtual interrupts) and waits for a CPU_ON like any powered-off vCPU.
fn stop_if_asked(vm_index: usize, vcpu: usize) {
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
fn load_images(vm_index: usize, vm: &Vm<'static>) -> usize {
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

/// A stage-2 data abort: the virtual UART, or an access outside the VM.
fn data_abort(regs: &mut GuestRegs, vm_index: usize, vm: &Vm<'static>, abort: &DataAbort) {
    let (ipa, va) = arch::fault_address();
    let uart = BOARD.uart.mmio;
    let gic = BOARD.gic;
    let emulable = abort.syndrome_valid && !abort.stage1_walk;
    let redist_span = gic.redistributor_stride * vm.cpus.len() as u64;
    if emulable
        && (gic.distributor.contains(ipa)
            || (ipa >= gic.redistributors.base && ipa - gic.redistributors.base < redist_span))
    {
        gic_access(regs, vm_index, vm, abort, ipa, va);
        return;
    }
    if let Some(slot) = vm.vsock.filter(|s| s.mmio.contains(ipa))
        && emulable
    {
        vsock_access(regs, vm_index, vm, abort, ipa - slot.mmio.base, va);
        return;
    }
    if uart.contains(ipa) && emulable {
        let offset = ipa - uart.base;
        let mut state = VMS[vm_index].lock();
        let result = if abort.write {
            state
                .uart
                .write(offset, abort.size, regs.get(abort.register) as u32)
        } else {
            if offset == 0 {
                // Reading input: show the prompt it answers first.
                console_flush(vm_index + 1);
            }
            if FOCUS.load(Ordering::Relaxed) == vm_index {
                while state.uart.input_space() > 0 {
                    let Some(byte) = arch::console_read_byte() else {
                        break;
                    };
                    state.uart.push_input(byte);
                }
            }
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
        return;
    }
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

/// A guest access to an emulated device that the device refuses (bad size
/// or offset): logged, and an abort injected, as hardware would.
fn refuse_access(
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
fn report_vm_fault(vm_index: usize, vm: &Vm<'static>, what: core::fmt::Arguments<'_>) {
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
fn report(vm_index: usize, vm: &Vm<'static>, regs: &GuestRegs, what: core::fmt::Arguments<'_>) {
    report_vm_fault(vm_index, vm, format_args!("{} (pc {:#x})", what, regs.elr));
}

/// Delivers `fault` to the guest's EL1 vectors. A guest whose vectors are
/// not inside its own RAM could only fault again, for ever: it is stopped.
fn inject(regs: &mut GuestRegs, vm_index: usize, vm: &Vm<'static>, fault: Fault, far: Option<u64>) {
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

/// A physical interrupt while the guest ran.
pub fn guest_irq(_regs: &mut GuestRegs) {
    let Some((vm_index, vcpu, vm)) = current() else {
        while let Some(intid) = arch::ack_interrupt() {
            arch::end_of_interrupt(intid, true);
        }
        return;
    };
    // A kick may be another vCPU resetting this VM.
    let stopping = VMS[vm_index].lock().stop[vcpu];
    if stopping {
        while let Some(intid) = arch::ack_interrupt() {
            arch::end_of_interrupt(intid, true);
        }
        stop_if_asked(vm_index, vcpu);
    }
    while let Some(intid) = arch::ack_interrupt() {
        // The virtual timer and passed-through devices are forwarded with
        // the HW bit: priority drop only here, the guest's deactivation
        // ends the physical interrupt too.
        if intid == vgic::VTIMER_INTID || device_irqs(vm).any(|(irq, _)| irq == intid) {
            arch::end_of_interrupt(intid, false);
            if arch::inject_virtual(intid, true, FORWARDED_PRIORITY) != arch::Injected::Loaded {
                arch::end_of_interrupt(intid, true);
            }
            continue;
        }
        arch::end_of_interrupt(intid, true);
        if intid == arch::KICK_INTID || intid == vgic::MAINTENANCE_INTID {
            arch::reap_list_registers();
            // A level interrupt still high after the guest's EOI is raised
            // again.
            let raised = update_uart_irq(&mut VMS[vm_index].lock());
            if let Some(target) = raised.filter(|&t| t != vcpu) {
                deliver(vm_index, vm, target);
            }
            flush(vm_index, vcpu);
        } else if intid == BOARD.uart.irq {
            let focus = FOCUS.load(Ordering::Relaxed);
            let raised = {
                let mut state = VMS[focus].lock();
                while state.uart.input_space() > 0 {
                    let Some(byte) = arch::console_read_byte() else {
                        break;
                    };
                    state.uart.push_input(byte);
                }
                update_uart_irq(&mut state)
            };
            if let (Some(target), Some(focus_vm)) = (raised, BOARD.vms.get(focus)) {
                deliver(focus, focus_vm, target);
            }
        } else {
            log!("cpu {}: unexpected interrupt {intid}", arch::this_cpu());
        }
    }
}

/// The physical interrupts of the devices passed through to `vm`.
fn device_irqs<'v>(vm: &'v Vm<'static>) -> impl Iterator<Item = (u32, &'static str)> + 'v {
    vm.devices
        .iter()
        .filter_map(|name| BOARD.device(name))
        .flat_map(|d| d.irqs.iter().map(move |&irq| (irq, d.name)))
}

/// Makes the physical enable of each passed-through interrupt follow the
/// guest's enable in its virtual distributor.
fn sync_device_irqs(vm_index: usize, vm: &Vm<'static>) {
    let state = VMS[vm_index].lock();
    for (irq, _) in device_irqs(vm) {
        arch::set_spi_enabled(irq, state.vgic.is_enabled(0, irq));
    }
}

/// A guest access to its vsock device's registers; a notify moves packets
/// between the VMs.
fn vsock_access(
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
            let report = pump(&mut switch);
            drop(switch);
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

/// Moves packets between VMs until the switch has nothing left it can do.
fn pump(switch: &mut Switch) -> PumpReport {
    let mut rams: [arch::VmRam<'static>; MAX_VMS] = core::array::from_fn(|i| {
        arch::VmRam::new(RamWindow::new(BOARD.vms.get(i).map_or(&[], |vm| vm.ram)))
    });
    let mut report = switch.pump(&mut rams[..]);
    let mut rounds = 0;
    while report.more && rounds < 8 {
        let next = switch.pump(&mut rams[..]);
        report.interrupts |= next.interrupts;
        for (slot, fault) in report.faults.iter_mut().zip(next.faults) {
            *slot = slot.or(fault);
        }
        report.more = next.more;
        rounds += 1;
    }
    report
}

/// Sends VM `vm_index` its vsock interrupt (an edge: the device has new
/// used buffers for it).
fn raise_vsock_irq(vm_index: usize, vm: &Vm<'static>) {
    let Some(slot) = vm.vsock else { return };
    let raised = VMS[vm_index].lock().vgic.raise(0, slot.irq);
    if let Some(target) = raised {
        deliver(vm_index, vm, target);
    }
}

/// Re-evaluates the vUART's interrupt line; returns the vCPU to tell when
/// it is raised.
fn update_uart_irq(state: &mut VmState) -> Option<usize> {
    if state.uart.interrupt_pending() {
        state.vgic.raise(0, BOARD.uart.irq)
    } else {
        state.vgic.lower(0, BOARD.uart.irq);
        None
    }
}

/// Makes vCPU `target` of the VM look at its pending interrupts: at once
/// if it runs here, else by kicking its CPU.
fn deliver(vm_index: usize, vm: &Vm<'static>, target: usize) {
    let here = current().is_some_and(|(v, vcpu, _)| v == vm_index && vcpu == target);
    if here {
        flush(vm_index, target);
    } else if let Some(&cpu) = vm.cpus.get(target) {
        arch::kick(cpu);
    }
}

/// Moves this vCPU's pending virtual interrupts into free list registers.
fn flush(vm_index: usize, vcpu: usize) {
    let mut state = VMS[vm_index].lock();
    while let Some((intid, priority)) = state.vgic.next_pending(vcpu) {
        match arch::inject_virtual(intid, false, priority) {
            arch::Injected::Loaded | arch::Injected::Merged => state.vgic.delivered(vcpu, intid),
            // Retried on the next EOI maintenance interrupt.
            arch::Injected::Later => break,
        }
    }
}

/// A guest wrote ICC_SGI1R_EL1 (or a sibling): SGIs to its own vCPUs.
fn send_sgi(
    regs: &GuestRegs,
    vm_index: usize,
    vcpu: usize,
    vm: &Vm<'static>,
    access: &SysRegAccess,
) {
    if access.read {
        return;
    }
    let (intid, targets) = {
        let mut state = VMS[vm_index].lock();
        let (intid, mask) = state.vgic.sgi_targets(vcpu, regs.get(access.rt));
        let mut wake = 0u32;
        for target in (0..vm.cpus.len()).filter(|t| mask & (1 << t) != 0) {
            if state.vgic.raise(target, intid).is_some() {
                wake |= 1 << target;
            }
        }
        (intid, wake)
    };
    let _ = intid;
    for target in (0..vm.cpus.len()).filter(|t| targets & (1 << t) != 0) {
        deliver(vm_index, vm, target);
    }
}

/// A guest access to its virtual GIC distributor or redistributors.
fn gic_access(
    regs: &mut GuestRegs,
    vm_index: usize,
    vm: &Vm<'static>,
    abort: &DataAbort,
    ipa: u64,
    va: u64,
) {
    let gic = BOARD.gic;
    let mut state = VMS[vm_index].lock();
    let result = if gic.distributor.contains(ipa) {
        let offset = ipa - gic.distributor.base;
        if abort.write {
            state
                .vgic
                .dist_write(offset, abort.size, regs.get(abort.register))
        } else {
            state
                .vgic
                .dist_read(offset, abort.size)
                .map(|v| regs.set(abort.register, trap::load_value(abort, v)))
        }
    } else {
        let rel = ipa - gic.redistributors.base;
        let (target, offset) = (
            (rel / gic.redistributor_stride) as usize,
            rel % gic.redistributor_stride,
        );
        if abort.write {
            state
                .vgic
                .redist_write(target, offset, abort.size, regs.get(abort.register))
        } else {
            state
                .vgic
                .redist_read(target, offset, abort.size)
                .map(|v| regs.set(abort.register, trap::load_value(abort, v)))
        }
    };
    drop(state);
    match result {
        Ok(()) => {
            regs.elr += 4;
            if abort.write {
                // An enable may have made queued interrupts deliverable.
                sync_device_irqs(vm_index, vm);
                for target in 0..vm.cpus.len() {
                    deliver(vm_index, vm, target);
                }
            }
        }
        Err(_) => {
            refuse_access(regs, vm_index, vm, abort, "GIC", ipa, va);
        }
    }
}

/// An FIQ or SError from the guest: logged; the guest continues.
pub fn guest_unexpected(regs: &mut GuestRegs, kind: &str) {
    if let Some((vm_index, _, vm)) = current() {
        report(vm_index, vm, regs, format_args!("unexpected {kind}"));
    }
}
