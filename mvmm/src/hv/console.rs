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
    let change = VMM.focus_change(vm_index, take);
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
    let discarded = VMM.move_focus(change.focus);
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

/// Moves typed input on (`Vmm::feed_input`): everything the physical UART
/// holds into mvmm's input queue (so the UART's interrupt clears and
/// nothing spins), then as much as fits into the receive FIFO of VM
/// `vm_index` if it has focus, whose vCPU is told of a raised interrupt.
pub(super) fn feed_input(vm_index: usize) {
    let fed = VMM.feed_input(vm_index, core::iter::from_fn(arch::console_read_byte));
    if fed.dropped > 0 {
        log!(
            "console: input queue full ({} bytes): {} typed byte(s) dropped",
            mvmm_core::console::INPUT_QUEUE,
            fed.dropped
        );
    }
    if let (Some(target), Some(vm)) = (fed.notify, BOARD.vms.get(vm_index)) {
        deliver(vm_index, vm, target);
    }
}
