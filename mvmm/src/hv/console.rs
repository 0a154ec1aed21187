//! The console: writers multiplexed onto the physical UART, each VM's virtual
//! PL011 interrupt line, and input focus (the trusted prompt).

use super::*;

/// Writes bytes from console writer `source` (see [`MVMM_SOURCE`]).
pub fn console_write(source: usize, bytes: &[u8]) {
    let mut mux = CONSOLE.lock();
    for &b in bytes {
        mux.write(source, b, &mut arch::console_write_byte);
    }
}

/// Shows the incomplete line console writer `source` holds (a prompt).
pub(super) fn console_flush(source: usize) {
    CONSOLE.lock().flush(source, &mut arch::console_write_byte);
}

/// Prefix of the secure VM's lines while it holds console focus: the
/// trusted prompt. No guest can print it (see `ConsoleMux`).
pub(super) const TRUSTED_PREFIX: &str = "[TRUSTED secure] ";

/// Gives console input focus to the secure VM `vm_index` (`take`) or back
/// to the rich VM.
pub(super) fn set_focus(vm_index: usize, vm: &Vm<'static>, take: bool) {
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

/// Re-evaluates the vUART's interrupt line; returns the vCPU to tell when
/// it is raised.
pub(super) fn update_uart_irq(state: &mut VmState) -> Option<usize> {
    if state.uart.interrupt_pending() {
        state.vgic.raise(0, BOARD.uart.irq)
    } else {
        state.vgic.lower(0, BOARD.uart.irq);
        None
    }
}
