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

/// Gives console input focus to the secure VM `vm_index` (`take`) or back
/// to the rich VM, in the order `mvmm_core::console::focus_change` gives.
pub(super) fn set_focus(vm_index: usize, vm: &Vm<'static>, take: bool) {
    let change = focus_change(&BOARD, vm_index, take);
    let prefix = if change.trusted {
        TRUSTED_PREFIX
    } else {
        CONSOLE_PREFIXES
            .get(vm_index + 1)
            .copied()
            .unwrap_or("[?] ")
    };
    if take {
        log!("console input goes to vm '{}' (trusted prompt)", vm.name);
        lease_taken();
    }
    if change.route_first
        && let Some(cpu) = change.uart_cpu
    {
        arch::reroute_spi(BOARD.uart.irq, cpu);
    }
    // The keyboard and touch screen follow the same focus.
    set_input_focus(take);
    // What was typed before the switch is for the VM that had focus: it
    // never reaches the other one (type-ahead into a trusted prompt, or the
    // rest of a PIN into the rich VM).
    let discarded = {
        let mut input = INPUT.lock();
        FOCUS.store(change.focus, Ordering::Relaxed);
        input.clear()
    };
    if !change.route_first
        && let Some(cpu) = change.uart_cpu
    {
        arch::reroute_spi(BOARD.uart.irq, cpu);
    }
    if discarded > 0 {
        log!("console: {discarded} typed byte(s) for the previous focus discarded");
    }
    CONSOLE
        .lock()
        .set_prefix(vm_index + 1, prefix, &mut arch::console_write_byte);
    if !take {
        log!(
            "console input goes back to vm '{}'",
            BOARD.vms.get(change.focus).map_or("?", |v| v.name)
        );
        lease_check_free();
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

/// Moves typed input on: everything the physical UART holds into mvmm's
/// input queue (so the UART's interrupt clears and nothing spins), then as
/// much as fits into the receive FIFO of VM `vm_index` if it has focus.
/// Returns the vCPU of `vm_index` to notify of a raised UART interrupt.
pub(super) fn feed_input(vm_index: usize) -> Option<usize> {
    let mut input = INPUT.lock();
    while let Some(byte) = arch::console_read_byte() {
        input.push(byte);
    }
    let dropped = input.take_dropped();
    if dropped > 0 {
        log!(
            "console: input queue full ({} bytes): {dropped} typed byte(s) dropped",
            mvmm_core::console::INPUT_QUEUE
        );
    }
    if FOCUS.load(Ordering::Relaxed) != vm_index {
        return None;
    }
    let mut state = VMS[vm_index].lock();
    while state.uart.input_space() > 0 {
        let Some(byte) = input.pop() else {
            break;
        };
        state.uart.push_input(byte);
    }
    update_uart_irq(&mut state)
}
