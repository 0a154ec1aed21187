//! What the QEMU tests expect of the board they run on, read from its board
//! file (`MVMM_BOARD`, default `qemu-virt`), so that no test states an
//! address, a CPU or a device of the board itself: a second board needs no
//! change in the tests.

use crate::load_test_board;
use mvmm_core::config::{BoardFile, DeviceEntry, VmEntry};

/// The board under test.
pub struct Facts {
    pub file: BoardFile,
}

impl Facts {
    /// Reads the board under test; panics with the reason if it cannot (a
    /// test cannot run without it).
    pub fn load() -> Facts {
        let (file, _) = load_test_board().unwrap_or_else(|e| panic!("board under test: {e}"));
        Facts { file }
    }

    /// The first VM of `kind` (`"rich"` or `"secure"`), with its VMID
    /// (1, 2, ... in the board's order).
    pub fn vm(&self, kind: &str) -> (u16, &VmEntry) {
        self.file
            .vms
            .iter()
            .enumerate()
            .find(|(_, vm)| vm.kind == kind)
            .map(|(i, vm)| (i as u16 + 1, vm))
            .unwrap_or_else(|| panic!("the board has no {kind} VM"))
    }

    /// The start of the first RAM range of the VM of `kind`.
    pub fn ram_base(&self, kind: &str) -> u64 {
        self.vm(kind).1.ram[0].base
    }

    /// Where the VM of `kind` starts (vCPU 0's entry).
    pub fn entry(&self, kind: &str) -> u64 {
        self.vm(kind).1.entry
    }

    /// mvmm's boot line for the VM of `kind`, up to its stage-2 table
    /// count: `vm 'secure' (VMID 2): cpus [2], ram 0x..0x.., devices [..]`.
    pub fn vm_line(&self, kind: &str) -> String {
        let (vmid, vm) = self.vm(kind);
        let ram = &vm.ram[0];
        format!(
            "vm '{}' (VMID {vmid}): cpus {:?}, ram {:#x}..{:#x}, devices {:?}",
            vm.name,
            vm.cpus,
            ram.base,
            ram.base + ram.size,
            vm.devices
        )
    }

    /// The board device named `name`.
    pub fn device(&self, name: &str) -> &DeviceEntry {
        self.file
            .devices
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("the board has no device '{name}'"))
    }

    /// The first device of `class` given to the VM of `kind`.
    pub fn device_of(&self, kind: &str, class: &str) -> &DeviceEntry {
        let (_, vm) = self.vm(kind);
        vm.devices
            .iter()
            .map(|name| self.device(name))
            .find(|d| d.class == class)
            .unwrap_or_else(|| panic!("the {kind} VM has no {class} device"))
    }

    /// Where mvmm's image is loaded (its RAM reservation's base plus the
    /// image offset).
    pub fn mvmm_image(&self) -> u64 {
        self.file.board.mvmm.base + mvmm_core::boot_options::IMAGE_OFFSET
    }

    /// The virtual GIC distributor's base (as every VM sees it).
    pub fn gicd(&self) -> u64 {
        self.file.board.gic.distributor.base
    }

    /// The UART's base (the virtual PL011 of every VM).
    pub fn uart(&self) -> u64 {
        self.file.board.uart.base
    }
}
