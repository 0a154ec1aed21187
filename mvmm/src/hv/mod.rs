//! The hypervisor proper: bring-up, the run loop of each vCPU, and what
//! mvmm does with every guest exit (`traps`, `interrupts`, `power`), the
//! console (`console`) and the VMM channel (`channel`).
//!
//! The decisions come from `mvmm_core` (trap decoding, PSCI, the virtual
//! UART, the console multiplexer, stage-2 planning); hardware access goes
//! through `crate::arch`. No guest action reaches a panic: anything
//! unexpected is logged with the VM's name and answered with an exception
//! injected into that guest.

use crate::arch::{self, GuestRegs};
use crate::board::{BOARD, CONSOLE_PREFIXES};
use crate::log;
use mvmm_core::boot_options::BootOptions;
use mvmm_core::bus::Emulated;
use mvmm_core::console::{ConsoleMux, TRUSTED_PREFIX};
use mvmm_core::dice;
use mvmm_core::exits::{ExitCounters, ExitCounts, ExitKind, IrqSource};
use mvmm_core::hypercall::{self, Hypercall};
use mvmm_core::image_store::{self, Manifest, ManifestError};
use mvmm_core::irq::Physical;
use mvmm_core::partition;
use mvmm_core::partition::{MAX_VMS, Vm, VmKind};
use mvmm_core::power::{AfterSystemOff, AtExit, Overdue, ResetRequest, Restart};
use mvmm_core::psci::{self, Outcome};
use mvmm_core::stage2::{ENTRIES, Stage2Builder, Table};
use mvmm_core::trap::{self, DataAbort, Exit, Fault, GuestPosition};
use mvmm_core::vgic;
use mvmm_core::virtio::switch::{PumpReport, Refusal, Rule, Switch, TRAP_PUMPS};
use mvmm_core::virtio::{RamWindow, WriteEffect};
use mvmm_core::vmm::{Access, CallAction, Cause, ExitAction, FaultLog, Injected, OnBoard, Vmm};

/// mvmm's locks: spin locks whose waiters yield (see `arch::Yield`).
type Mutex<T> = spin::mutex::Mutex<T, arch::Yield>;
type TicketMutex<T> = spin::mutex::TicketMutex<T, arch::Yield>;

mod channel;
mod console;
mod display;
mod dma;
mod entropy;
mod handover;
mod input;
mod interrupts;
mod power;
mod rpmb;
mod traps;

pub use console::console_write;
pub use interrupts::guest_irq;
pub use traps::{guest_sync, guest_unexpected};
// What the submodules call of each other (they see this module's items).
use channel::{configure_switch, vsock_access};
use console::{console_flush, feed_input, set_focus};
use display::{
    display_call, lease_check_free, lease_taken, lease_watchdog, secure_display_ends, start_display,
};
use dma::{route_smmu_irq, smmu_events, start_smmu};
use entropy::{seed_device_tree, start_entropy, trng_call};
use handover::{prepare_handover, write_handover};
use input::{input_access, input_events, reset_input, set_input_focus, start_input};
use interrupts::{deliver, gic_access, notify, send_sgi};
use power::{load_images, power_call, secure_path_ends, stop_here, stop_if_asked};
use rpmb::{rpmb_call, start_rpmb};
use traps::{refuse_access, report, report_vm_fault};

/// Console writer 0 is mvmm; VM `i` writes as `i + 1`.
pub const MVMM_SOURCE: usize = 0;
/// Stage-2 tables per VM: root, two level-2 tables and level-3 tables for
/// device windows and unaligned RAM edges.
const TABLES_PER_VM: usize = 16;
/// Priority of interrupts forwarded with the HW bit (timer, devices).
const FORWARDED_PRIORITY: u8 = 0xa0;

#[repr(C, align(4096))]
struct Stage2Pool([Table; TABLES_PER_VM]);

/// Every VM's state and the decisions on its exits (`mvmm_core::vmm`): one
/// lock per VM, the typed-input queue, console focus, the device buses
/// (built from the board at boot, `Vmm::start`).
static VMM: Vmm<ThisBoard, arch::Yield> = Vmm::new();

/// The board mvmm was built for, as the type `Vmm` takes it.
struct ThisBoard;
impl OnBoard for ThisBoard {
    const BOARD: partition::Board<'static> = BOARD;
}
static STAGE2: [Mutex<Stage2Pool>; MAX_VMS] =
    [const { Mutex::new(Stage2Pool([[0; ENTRIES]; TABLES_PER_VM])) }; MAX_VMS];
/// The physical console's writers. Lock order: after `VMM`'s locks.
static CONSOLE: Mutex<ConsoleMux<'static>> = Mutex::new(ConsoleMux::new(CONSOLE_PREFIXES));
/// The VMM channel: every VM's vsock device and the switch between them
/// (never held with `VMM`'s typed-input queue).
/// A ticket lock: traps take it in arrival order, so two rich vCPUs
/// notifying in a loop cannot keep the secure VM's trap out (each holds it
/// for one bounded pump; see `channel::vsock_access`).
static SWITCH: TicketMutex<Switch> = TicketMutex::new(Switch::new());
/// Exit accounting (`mvmm_core::exits`), per physical CPU: each CPU runs
/// one vCPU of one VM, so each set of counters has one writer.
static EXITS: [ExitCounters; partition::MAX_CPUS] =
    [const { ExitCounters::new() }; partition::MAX_CPUS];

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
    VMM.start(|i, e| {
        // The build validated the board: unreachable, and then fail closed
        // (the VM stays off; every access it makes would fault).
        log!(
            "vm '{}': no device bus: {e}; it will not run",
            BOARD.vms[i].name
        );
    });
    let options = BootOptions::decode(arch::read_boot_options(BOARD.mvmm));
    CONSOLE.lock().set_level(options.console_level);
    // The rich VM has focus at boot.
    let rich = VMM.focus();
    for (i, vm) in BOARD.vms.iter().enumerate() {
        let mut pool = STAGE2[i].lock();
        let pool_pa = (&raw const pool.0) as u64;
        let built = Stage2Builder::new(&mut pool.0, pool_pa).and_then(|mut b| {
            b.map_vm(&BOARD, vm)?;
            Ok((b.root_pa(), b.tables_used()))
        });
        match built {
            Ok((root, tables)) => {
                VMM.vm(i).stage2_root = root;
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
                VMM.vm(i).off = true;
                log!(
                    "vm '{}': cannot build stage-2 tables ({e:?}); it will not run",
                    vm.name
                );
            }
        }
    }
    if let Some(store) = BOARD.image_store {
        let mut bytes = [0u8; image_store::MANIFEST_SIZE as usize];
        if let Some(Err(e)) = arch::read_store(store, 0, &mut bytes)
            .then(|| Manifest::parse(&bytes, store.size, &BOARD))
            .filter(|r| *r != Err(ManifestError::Empty))
        {
            log!("image store at {store}: manifest refused ({e:?})");
        }
    }
    // The device secret is read and wiped before any VM runs; only the
    // CDIs derived from it reach the secure VM.
    let uds = arch::take_uds(BOARD.mvmm);
    let mvmm_hash: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(arch::measured_image()).into()
    };
    for (i, vm) in BOARD.vms.iter().enumerate() {
        match load_images(i, vm) {
            Ok(loaded) => {
                if loaded.copied > 0 {
                    log!(
                        "vm '{}': {} boot image(s) copied from the image store{}",
                        vm.name,
                        loaded.copied,
                        if loaded.verified.is_some() {
                            ", signature verified"
                        } else {
                            ""
                        }
                    );
                }
                if let (Some((image_hash, security_version)), Some(uds)) = (loaded.verified, &uds)
                    && vm.kind == VmKind::Secure
                {
                    prepare_handover(uds, mvmm_hash, image_hash, security_version);
                    write_handover(vm);
                } else if vm.kind == VmKind::Secure && uds.is_none() {
                    log!(
                        "vm '{}': no device secret provisioned: it gets no CDI",
                        vm.name
                    );
                }
            }
            Err(why) => {
                VMM.vm(i).off = true;
                log!(
                    "vm '{}': boot image refused: {why}; the VM will not run",
                    vm.name
                );
            }
        }
    }
    drop(uds);
    // Before any VM runs: QEMU 7.2's SMMU lets DMA through until enabled.
    start_smmu();
    start_display();
    start_entropy();
    for (i, vm) in BOARD.vms.iter().enumerate() {
        if !VMM.vm(i).off {
            seed_device_tree(vm);
        }
    }
    configure_switch();
    arch::init_distributor();
    // Typed input interrupts the CPU of the VM with focus.
    if let Some(&cpu) = BOARD.vms.get(rich).and_then(|vm| vm.cpus.first()) {
        arch::route_spi(BOARD.uart.irq, cpu, true);
        arch::enable_rx_interrupt();
        route_smmu_irq(cpu);
    }
    // The keyboard and touch interrupt the secure VM's CPU.
    start_input();
    // Passed-through device interrupts go to the CPU of the owner's vCPU 0,
    // disabled until the guest enables them in its virtual GIC.
    for (i, vm) in BOARD.vms.iter().enumerate() {
        for (irq, _) in VMM.device_irqs(i) {
            arch::route_spi(irq, vm.cpus[0], false);
        }
    }
    for cpu in 1..BOARD.cpu_count {
        if let Err(code) = arch::cpu_start(cpu) {
            log!("cpu {cpu}: firmware refused CPU_ON ({code:?})");
        }
    }
}

/// Runs vCPU `vcpu` of VM `vm` on this CPU, for ever.
fn run_vcpu(cpu: usize, vm_index: usize, vcpu: usize) -> ! {
    let vm = &BOARD.vms[vm_index];
    let (root, off) = {
        let state = VMM.vm(vm_index);
        (state.stage2_root, state.off)
    };
    if root == 0 || off {
        park();
    }
    arch::install_vm(vm.vmid, root, vcpu);
    if vcpu == 0 {
        VMM.vm(vm_index).power.boot();
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
        // What is pending here first, then the check: a kick that comes
        // after the check is still pending at the WFI and ends it.
        interrupts::drain_interrupts();
        {
            let started = VMM.vm(vm_index).power.take_start(vcpu);
            if let Some((entry, context)) = started {
                log!(
                    "vm '{}': vcpu {vcpu} starts at {entry:#x} on cpu {cpu} (PSCI CPU_ON)",
                    BOARD.vms[vm_index].name
                );
                start_guest(cpu, entry, context);
            }
        }
        // Whoever starts this vCPU kicks its CPU (CPU_ON, the end of a
        // reset). WFI, not WFE: QEMU runs WFE as a yield, so a CPU whose
        // vCPU is off spun at full speed and took host time (and, under
        // -icount, whole time slices) from the CPUs that run; a kick that
        // came before the WFI is still pending and ends it at once.
        arch::wait_for_interrupt();
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

/// Counts an exit of this CPU's vCPU.
fn count_exit(kind: ExitKind) {
    if let Some(counters) = EXITS.get(arch::this_cpu()) {
        counters.exit(kind);
    }
}

/// Counts a physical interrupt taken on this CPU.
fn count_irq(source: IrqSource) {
    if let Some(counters) = EXITS.get(arch::this_cpu()) {
        counters.irq(source);
    }
}

/// Logs the exit counts of `vm` (the sum over its CPUs), and zeroes them
/// when `clear` (the VM restarts).
fn log_exits(vm: &Vm<'static>, clear: bool) {
    let mut counts = ExitCounts::default();
    for counters in vm.cpus.iter().filter_map(|&cpu| EXITS.get(cpu)) {
        counters.add_to(&mut counts);
        if clear {
            counters.clear();
        }
    }
    log!("vm '{}' exits: {counts}", vm.name);
}
