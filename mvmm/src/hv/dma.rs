//! DMA confinement: mvmm turns the board's SMMU on before any VM runs
//! (decisions in `mvmm_core::smmu`, registers in `arch::Smmu`) and logs
//! every fault its event queue reports, with the stream id, the VM and
//! device it belongs to, and the address. See docs/dma.md.

use super::*;
use mvmm_core::smmu::{self, EVENT_LOG_LIMIT, Event, EventLog};

/// The running SMMU and how many events it reported.
static SMMU: Mutex<Option<(arch::Smmu, EventLog)>> = Mutex::new(None);

/// Boot CPU, before any VM runs: programs and enables the SMMU. If that
/// fails, every VM whose devices it should confine stays off: a device
/// whose DMA is not confined must not be driven by a guest.
pub(super) fn start_smmu() {
    let Some(info) = BOARD.smmu else {
        return;
    };
    match arch::Smmu::start(&BOARD, info.mmio) {
        Ok(smmu) => {
            *SMMU.lock() = Some((smmu, EventLog::new()));
            for vm in BOARD
                .vms
                .iter()
                .filter(|vm| smmu::vm_has_streams(&BOARD, vm))
            {
                log!(
                    "smmu at {}: on; DMA of vm '{}' confined to its RAM {}, every other stream aborts",
                    info.mmio,
                    vm.name,
                    vm.ram[0]
                );
            }
        }
        Err(why) => {
            log!("smmu at {}: {why}", info.mmio);
            for (i, vm) in BOARD.vms.iter().enumerate() {
                if smmu::vm_has_streams(&BOARD, vm) {
                    VMM.vm(i).off = true;
                    log!(
                        "vm '{}': its devices' DMA cannot be confined; it will not run",
                        vm.name
                    );
                }
            }
        }
    }
}

/// Routes the SMMU's event interrupt (a pulse) to the first CPU of the VM
/// at `rich`, after the distributor is on.
pub(super) fn route_smmu_irq(cpu: usize) {
    if let Some(info) = BOARD.smmu {
        arch::set_spi_edge(info.event_irq);
        arch::route_spi(info.event_irq, cpu, true);
    }
}

/// Drains the event queue: each new fault logged (repeats and everything
/// past [`EVENT_LOG_LIMIT`] only counted) with its stream id, owner and
/// address.
pub(super) fn smmu_events() {
    let mut guard = SMMU.lock();
    let Some((smmu, events)) = guard.as_mut() else {
        return;
    };
    let (overflow, errors) = smmu.drain_events(|record| {
        let event = Event::decode(record);
        let was_full = events.full();
        if events.record(&event) {
            match BOARD.stream_owner(event.stream) {
                Some((vm, dev)) => log!(
                    "smmu: DMA refused: {event} (vm '{}', device '{}'); nothing reached memory",
                    BOARD.vms[vm].name,
                    dev.name
                ),
                None => log!("smmu: DMA refused: {event} (no VM owns this stream)"),
            }
        } else if events.full() && !was_full {
            log!("smmu: {EVENT_LOG_LIMIT} events logged; further ones are counted, not logged");
        }
    });
    if overflow && !events.full() {
        log!("smmu: the event queue overflowed; some events were lost");
    }
    if errors != 0 {
        log!("smmu: global error {errors:#x}");
    }
}
