//! PCIe configuration space as mvmm uses it: reaching each function of a
//! host bridge through its ECAM window, and stopping a function's DMA
//! before mvmm rewrites its VM's memory.
//!
//! On a VM's reset mvmm copies fresh boot images into the VM's RAM. A NIC
//! the old kernel left running still owns receive buffers there and would
//! write packets into the fresh kernel. So, once every vCPU has stopped and
//! before the copy, mvmm writes the command register of every function of
//! the VM's PCIe buses to "nothing": no bus mastering (a function that is
//! not a bus master issues no memory requests, PCIe base spec), no memory
//! or I/O decoding, and INTx disabled (no stale level interrupt stays
//! asserted for the next kernel). QEMU's virtio-pci devices also drop
//! DRIVER_OK, so they take up nothing until the new kernel's driver resets
//! them; that kernel enables what it drives.

use crate::partition::{PcieHost, StreamIds};

/// Offset of the vendor id (16 bits; all ones: no function there).
pub const VENDOR_ID: u64 = 0x00;
/// Offset of the command register (16 bits).
pub const COMMAND: u64 = 0x04;
/// Command register: the function may issue memory requests (DMA).
pub const BUS_MASTER_ENABLE: u16 = 1 << 2;
/// Command register: the function raises no INTx.
pub const INTX_DISABLE: u16 = 1 << 10;
/// The command register of a quiesced function.
pub const QUIESCED: u16 = INTX_DISABLE;
/// A vendor id that says "no function here".
pub const NO_FUNCTION: u16 = 0xffff;

/// A function's requester id: bus (8 bits), device (5), function (3): also
/// its SMMU stream id on QEMU virt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rid(pub u16);

impl Rid {
    pub const fn bus(self) -> u64 {
        (self.0 >> 8) as u64
    }

    /// Where this function's configuration register `offset` is in the
    /// ECAM window (1 MiB per bus, 4 KiB per function); `None` outside it.
    pub fn config_address(self, ecam: &PcieHost, offset: u64) -> Option<u64> {
        if offset >= 0x1000 {
            return None;
        }
        let at = u64::from(self.0) << 12 | offset;
        ecam.ecam
            .contains_range(ecam.ecam.base + at, 2)
            .then_some(ecam.ecam.base + at)
    }
}

/// Every requester id a VM's bridge may hold: those its stream ids cover
/// (the board names them for the SMMU), within the buses its ECAM window
/// reaches.
pub fn functions(host: &PcieHost, streams: StreamIds) -> impl Iterator<Item = Rid> + '_ {
    let buses = host.ecam.size >> 20;
    (streams.first..streams.end())
        .filter_map(|id| u16::try_from(id).ok())
        .map(Rid)
        .filter(move |rid| rid.bus() < buses)
}

/// The command register value that quiesces a function whose register
/// reads `command` ([`QUIESCED`]); `None` when it already is.
pub const fn quiesced(command: u16) -> Option<u16> {
    if command == QUIESCED {
        None
    } else {
        Some(QUIESCED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::MemRange;

    const HOST: PcieHost = PcieHost {
        ecam: MemRange::new(0x3f00_0000, 0x0100_0000),
        mmio: MemRange::new(0x1000_0000, 0x2eff_0000),
        io: MemRange::new(0x3eff_0000, 0x1_0000),
    };

    #[test]
    fn config_addresses_follow_ecam() {
        // Bus 0, device 1, function 0: 0x3f00_8000.
        assert_eq!(Rid(0x08).config_address(&HOST, COMMAND), Some(0x3f00_8004));
        assert_eq!(Rid(0x0100).config_address(&HOST, 0), Some(0x3f10_0000));
        assert_eq!(Rid(0x08).config_address(&HOST, 0x1000), None);
        // Bus 16 is past a 16 MiB window.
        assert_eq!(Rid(0x1000).config_address(&HOST, 0), None);
    }

    #[test]
    fn the_functions_are_those_of_the_streams_on_reachable_buses() {
        let all: Vec<Rid> = functions(
            &HOST,
            StreamIds {
                first: 0,
                count: 0x100,
            },
        )
        .collect();
        assert_eq!(all.len(), 256);
        assert_eq!(all[8], Rid(8));
        let wide = functions(
            &HOST,
            StreamIds {
                first: 0xff0,
                count: 0x20,
            },
        )
        .count();
        assert_eq!(wide, 0x10, "bus 16 and up lie outside the ECAM window");
        let huge = functions(
            &HOST,
            StreamIds {
                first: 0xffff,
                count: 10,
            },
        )
        .count();
        assert_eq!(huge, 0);
    }

    #[test]
    fn a_quiesced_function_neither_masters_decodes_nor_interrupts() {
        assert_eq!(quiesced(0x0007), Some(INTX_DISABLE));
        assert_eq!(quiesced(0x0000), Some(INTX_DISABLE));
        assert_eq!(quiesced(INTX_DISABLE), None);
        assert_eq!(QUIESCED & BUS_MASTER_ENABLE, 0);
    }
}
