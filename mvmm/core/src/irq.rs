//! Where a physical interrupt taken at EL2 comes from, and so what mvmm
//! does with it. One decision for `hv::interrupts`, tested on the host: the
//! EL2 code acknowledges the interrupt, asks [`classify`], and carries out
//! what the answer names.

use crate::exits::IrqSource;
use crate::partition::{Board, Vm};
use crate::vgic::{FORWARDED_TIMERS, MAINTENANCE_INTID};

/// The SGI mvmm sends to another CPU to make it look at its queue (a
/// vCPU's pending interrupts, a CPU_ON, a reset).
pub const KICK_INTID: u32 = 1;

/// What a physical interrupt on a CPU that runs a vCPU of VM `vm` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Physical {
    /// An EL1 timer of the running vCPU: forwarded with the HW bit.
    Timer,
    /// An interrupt of a device passed through to this VM: forwarded with
    /// the HW bit.
    Device,
    /// mvmm's kick, or the vGIC's maintenance interrupt (a list register
    /// freed): look at this vCPU's pending interrupts again.
    Kick,
    /// The physical UART: typed input, for the VM with focus.
    ConsoleInput,
    /// The SMMU's event queue (a DMA fault to log).
    SmmuEvents,
    /// One of mvmm's input devices (keyboard, touch): events to route.
    InputDevice,
    /// Nothing mvmm expects here: logged and ended.
    Unexpected,
}

impl Physical {
    /// The exit-accounting category (`crate::exits`).
    pub fn counted_as(self) -> IrqSource {
        match self {
            Physical::Timer => IrqSource::Timer,
            Physical::Device => IrqSource::Device,
            Physical::Kick => IrqSource::Kick,
            Physical::ConsoleInput => IrqSource::Uart,
            Physical::SmmuEvents | Physical::InputDevice | Physical::Unexpected => IrqSource::Mvmm,
        }
    }

    /// Forwarded to the guest with the HW bit (the guest's deactivation
    /// ends the physical interrupt too).
    pub fn forwarded(self) -> bool {
        matches!(self, Physical::Timer | Physical::Device)
    }
}

/// Classifies `intid`, taken while a vCPU of `vm` runs. The common cases
/// come first: the timer, then the kick.
pub fn classify(board: &Board<'_>, vm: &Vm<'_>, intid: u32) -> Physical {
    if FORWARDED_TIMERS.contains(&intid) {
        Physical::Timer
    } else if intid == KICK_INTID || intid == MAINTENANCE_INTID {
        Physical::Kick
    } else if vm
        .devices
        .iter()
        .filter_map(|name| board.device(name))
        .any(|d| d.irqs.contains(&intid))
    {
        Physical::Device
    } else if intid == board.uart.irq {
        Physical::ConsoleInput
    } else if board.smmu.is_some_and(|s| s.event_irq == intid) {
        Physical::SmmuEvents
    } else if board.input.iter().any(|slot| slot.irq == intid) {
        Physical::InputDevice
    } else {
        Physical::Unexpected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::tests::BOARD;

    #[test]
    fn each_source_is_named_and_a_device_only_for_its_owner() {
        let (rich, secure) = (&BOARD.vms[0], &BOARD.vms[1]);
        for timer in FORWARDED_TIMERS {
            assert_eq!(classify(&BOARD, rich, timer), Physical::Timer);
            assert!(classify(&BOARD, secure, timer).forwarded());
        }
        assert_eq!(classify(&BOARD, rich, KICK_INTID), Physical::Kick);
        assert_eq!(classify(&BOARD, secure, MAINTENANCE_INTID), Physical::Kick);
        // The rich VM's network device (SPI 79 on the test board) is
        // forwarded to the rich VM only; on the secure VM's CPU it is
        // nothing mvmm expects.
        assert_eq!(classify(&BOARD, rich, 79), Physical::Device);
        assert_eq!(classify(&BOARD, secure, 79), Physical::Unexpected);
        assert_eq!(
            classify(&BOARD, rich, BOARD.uart.irq),
            Physical::ConsoleInput
        );
        assert_eq!(classify(&BOARD, secure, 106), Physical::SmmuEvents);
        assert_eq!(classify(&BOARD, rich, 1019), Physical::Unexpected);
        assert_eq!(Physical::ConsoleInput.counted_as(), IrqSource::Uart);
        assert!(!Physical::Kick.forwarded());
    }
}
