//! The device bus: which emulated device answers a guest's access to an
//! address it has no stage-2 mapping for.
//!
//! Each VM gets a table of emulated MMIO regions built from the board (its
//! virtual GIC distributor and redistributors, its virtual PL011, its end of
//! the VMM channel), checked for overlaps once, and looked up on every
//! stage-2 data abort. An address in no region is outside the VM's
//! partition: mvmm reports it and injects an abort. Adding an emulated
//! device is one [`Emulated`] variant, one region in [`Bus::for_vm`], and
//! the device's own module.

use crate::partition::{Board, MemRange, Vm};
use core::fmt;

/// The emulated devices a VM may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulated {
    /// The virtual GIC distributor (`crate::vgic`).
    GicDistributor,
    /// The virtual GIC redistributors, one frame pair per vCPU.
    GicRedistributors,
    /// The virtual PL011 (`crate::vuart`).
    Uart,
    /// The VM's virtio-mmio vsock device, its end of the VMM channel
    /// (`crate::virtio`).
    Vsock,
    /// The VM's virtio-mmio input device: the keyboard and touch events
    /// mvmm routes to it (`crate::input`, `crate::virtio::input`).
    Input,
}

/// Most emulated regions a VM has.
pub const MAX_REGIONS: usize = 8;

/// One emulated region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub range: MemRange,
    pub device: Emulated,
}

/// Why a bus cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// Two emulated regions overlap.
    Overlap { first: Region, second: Region },
    /// An emulated region overlaps the VM's own RAM (it would never trap).
    InRam { region: Region },
    /// More regions than [`MAX_REGIONS`].
    Full,
    /// A region is empty or wraps.
    Empty { region: Region },
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Overlap { first, second } => write!(
                f,
                "emulated {:?} {} overlaps emulated {:?} {}",
                second.device, second.range, first.device, first.range
            ),
            BusError::InRam { region } => write!(
                f,
                "emulated {:?} {} lies in the VM's RAM, where no access traps",
                region.device, region.range
            ),
            BusError::Full => write!(f, "more than {MAX_REGIONS} emulated regions"),
            BusError::Empty { region } => {
                write!(
                    f,
                    "emulated {:?} {} is empty or wraps",
                    region.device, region.range
                )
            }
        }
    }
}

/// A VM's emulated regions, non-overlapping.
#[derive(Clone, Copy, Debug)]
pub struct Bus {
    regions: [Option<Region>; MAX_REGIONS],
}

impl Bus {
    /// An empty bus.
    pub const fn new() -> Bus {
        Bus {
            regions: [None; MAX_REGIONS],
        }
    }

    /// The bus of `vm` on `board`: its GIC distributor, the redistributor
    /// frames of its vCPUs, the UART, and its vsock slot.
    pub fn for_vm(board: &Board<'_>, vm: &Vm<'_>) -> Result<Bus, BusError> {
        let mut bus = Bus::new();
        let gic = board.gic;
        bus.add(gic.distributor, Emulated::GicDistributor, vm)?;
        let redist = MemRange::new(
            gic.redistributors.base,
            gic.redistributor_stride
                .saturating_mul(vm.cpus.len() as u64),
        );
        bus.add(redist, Emulated::GicRedistributors, vm)?;
        bus.add(board.uart.mmio, Emulated::Uart, vm)?;
        if let Some(slot) = vm.vsock {
            bus.add(slot.mmio, Emulated::Vsock, vm)?;
        }
        if let Some(slot) = vm.input {
            bus.add(slot.mmio, Emulated::Input, vm)?;
        }
        Ok(bus)
    }

    /// Adds a region, refusing overlaps with the others and with the VM's
    /// RAM.
    pub fn add(&mut self, range: MemRange, device: Emulated, vm: &Vm<'_>) -> Result<(), BusError> {
        let region = Region { range, device };
        if range.size == 0 || range.base.checked_add(range.size).is_none() {
            return Err(BusError::Empty { region });
        }
        if vm.ram.iter().any(|r| r.overlaps(&range)) {
            return Err(BusError::InRam { region });
        }
        if let Some(first) = self.regions().find(|r| r.range.overlaps(&range)) {
            return Err(BusError::Overlap {
                first,
                second: region,
            });
        }
        let slot = self
            .regions
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(BusError::Full)?;
        *slot = Some(region);
        Ok(())
    }

    /// The device that answers `ipa`, and the offset into its region.
    pub fn lookup(&self, ipa: u64) -> Option<(Emulated, u64)> {
        self.regions()
            .find(|r| r.range.contains(ipa))
            .map(|r| (r.device, ipa - r.range.base))
    }

    /// The regions, in the order they were added.
    pub fn regions(&self) -> impl Iterator<Item = Region> + '_ {
        self.regions.iter().flatten().copied()
    }
}

impl Default for Bus {
    fn default() -> Bus {
        Bus::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::tests::BOARD;

    #[test]
    fn each_vm_gets_its_gic_uart_and_vsock_and_nothing_else() {
        for vm in BOARD.vms {
            let bus = Bus::for_vm(&BOARD, vm).unwrap();
            assert_eq!(bus.lookup(0x0800_0004), Some((Emulated::GicDistributor, 4)));
            assert_eq!(bus.lookup(0x0900_0018), Some((Emulated::Uart, 0x18)));
            let stride = BOARD.gic.redistributor_stride;
            let last = BOARD.gic.redistributors.base + stride * vm.cpus.len() as u64;
            assert_eq!(
                bus.lookup(last - 4),
                Some((
                    Emulated::GicRedistributors,
                    stride * vm.cpus.len() as u64 - 4
                ))
            );
            // Another vCPU's frames than this VM has: not emulated.
            assert_eq!(bus.lookup(last), None, "vm '{}'", vm.name);
            if let Some(slot) = vm.vsock {
                assert_eq!(
                    bus.lookup(slot.mmio.base + 0x70),
                    Some((Emulated::Vsock, 0x70))
                );
                assert_eq!(bus.lookup(slot.mmio.end()), None);
            }
            // RAM of the VM and memory of others: not on the bus.
            assert_eq!(bus.lookup(vm.ram[0].base), None);
            assert_eq!(bus.lookup(0x4020_0000), None);
        }
    }

    #[test]
    fn overlaps_and_ram_are_refused_with_both_regions_named() {
        let vm = &BOARD.vms[0];
        let mut bus = Bus::for_vm(&BOARD, vm).unwrap();
        let err = bus
            .add(MemRange::new(0x0900_0800, 0x200), Emulated::Vsock, vm)
            .unwrap_err();
        assert!(matches!(err, BusError::Overlap { .. }));
        let text = err.to_string();
        assert!(
            text.contains("Vsock 0x9000800..0x9000a00")
                && text.contains("Uart 0x9000000..0x9001000"),
            "{text}"
        );
        let err = bus
            .add(MemRange::new(vm.ram[0].base, 0x1000), Emulated::Uart, vm)
            .unwrap_err();
        assert!(matches!(err, BusError::InRam { .. }), "{err}");
        assert!(matches!(
            bus.add(MemRange::new(u64::MAX - 1, 0x10), Emulated::Uart, vm),
            Err(BusError::Empty { .. })
        ));
        assert!(matches!(
            bus.add(MemRange::new(0x1000, 0), Emulated::Uart, vm),
            Err(BusError::Empty { .. })
        ));
    }

    #[test]
    fn a_full_bus_says_so() {
        let vm = &BOARD.vms[0];
        let mut bus = Bus::new();
        for i in 0..MAX_REGIONS as u64 {
            bus.add(
                MemRange::new(0x0a00_0000 + i * 0x200, 0x200),
                Emulated::Vsock,
                vm,
            )
            .unwrap();
        }
        assert_eq!(
            bus.add(MemRange::new(0x0b00_0000, 0x200), Emulated::Vsock, vm),
            Err(BusError::Full)
        );
    }
}
