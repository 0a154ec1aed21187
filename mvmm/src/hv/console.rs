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
        lease_taken();
    }
    // What was typed before the switch is for the VM that had focus: it
    // never reaches the other one (type-ahead into a trusted prompt, or the
    // rest of a PIN into the rich VM).
    //
    // The UART's interrupt follows the focus, so a key typed at a trusted
    // prompt never interrupts a rich-VM CPU (which would tell the rich VM
    // when and how many keys the user typed). Taking: route first, then
    // switch; releasing: switch first, then route. Either way a key in
    // between interrupts the secure VM's CPU, never the rich VM's while the
    // key is the secure VM's.
    let uart_cpu = |index: usize| BOARD.vms.get(index).and_then(|v| v.cpus.first()).copied();
    if take && let Some(cpu) = uart_cpu(focus) {
        arch::reroute_spi(BOARD.uart.irq, cpu);
    }
    // The keyboard and touch screen follow the same focus.
    set_input_focus(take);
    let discarded = {
        let mut input = INPUT.lock();
        FOCUS.store(focus, Ordering::Relaxed);
        input.clear()
    };
    if !take && let Some(cpu) = uart_cpu(focus) {
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
            BOARD.vms.get(rich).map_or("?", |v| v.name)
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
