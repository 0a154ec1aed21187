//! The one generator of the board's constants: every image's view of
//! `boards/<board>/board.toml` as Rust source (and the link scripts that
//! place it), for the build scripts to write into `OUT_DIR`.
//!
//! Each image gets what it needs and no more, so that no source file outside
//! `boards/` states an address, IRQ or size of the board:
//!
//! | target | constants | written by |
//! | --- | --- | --- |
//! | [`Target::Mvmm`] | `BOARD` (the whole partition), `CONSOLE_PREFIXES` | `mvmm/build.rs`, plus [`mvmm_memory`], [`mvmm_el2_tables`] |
//! | [`Target::GuestRuntime`] | `UART_BASE`, `RAM_BASE`, `RAM_SIZE`, `GICD_BASE`, `GICR_BASE`, `GICR_STRIDE` | `guest-rt/build.rs`, plus [`vm_link_script`] per VM |
//! | [`Target::Vm`] | the VM's own devices: `VSOCK_*`, `INPUT_*`, `FRAMEBUFFER_*`, `FLASH_*`, `SERVICE_PORTS` | the image's build script (`secure-os/build.rs`) |
//!
//! A device the VM lacks is 0 (the image reports it missing and fails
//! closed). Every function validates the board first: an invalid board
//! generates nothing.

use super::{BoardFile, ConfigError, Image, VmEntry};
use crate::partition::{Board, MemRange, PAGE_SIZE, VmKind};
use std::fmt::Write as _;

/// Whose constants to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// mvmm (EL2): the whole board and partition.
    Mvmm,
    /// The runtime every guest links (`guest-rt`), built once for all VMs:
    /// what every VM sees alike (its virtual UART and GIC, the board's RAM).
    GuestRuntime,
    /// The image of the VM with this name: that VM's own devices.
    Vm(&'a str),
}

/// Rust source of `target`'s constants for `board`.
pub fn constants(board: &BoardFile, target: Target<'_>) -> Result<String, ConfigError> {
    match target {
        Target::Mvmm => board.with_board(mvmm),
        Target::GuestRuntime => {
            board.with_board(|_| ())?;
            Ok(guest_runtime(board))
        }
        Target::Vm(name) => {
            board.with_board(|_| ())?;
            vm(board, board.vm(name)?)
        }
    }
}

fn header(s: &mut String, board: &str, what: &str) {
    let _ = writeln!(
        s,
        "// Generated from board '{board}' by mvmm_core::config::codegen ({what}). Do not edit."
    );
}

/// The facts every guest's runtime needs.
fn guest_runtime(board: &BoardFile) -> String {
    let b = &board.board;
    let mut s = String::new();
    header(&mut s, &b.name, "the guest runtime, every VM alike");
    let _ = write!(
        s,
        "/// Base of every VM's virtual PL011.\n\
         pub const UART_BASE: usize = {uart:#x};\n\
         /// The board's RAM: mapped as normal memory, everything else as device.\n\
         pub const RAM_BASE: u64 = {ram_base:#x};\n\
         /// Size of the board's RAM in bytes.\n\
         pub const RAM_SIZE: u64 = {ram_size:#x};\n\
         /// The distributor of the virtual GIC mvmm emulates.\n\
         pub const GICD_BASE: usize = {gicd:#x};\n\
         /// vCPU 0's redistributor of the virtual GIC, and the distance to the next vCPU's.\n\
         pub const GICR_BASE: usize = {gicr:#x};\n\
         pub const GICR_STRIDE: usize = {gicr_stride:#x};\n",
        uart = b.uart.base,
        ram_base = b.ram.base,
        ram_size = b.ram.size,
        gicd = b.gic.distributor.base,
        gicr = b.gic.redistributors.base,
        gicr_stride = b.gic.redistributor_stride,
    );
    s
}

/// The kind of a VM of a validated board.
fn kind(vm: &VmEntry) -> Result<VmKind, ConfigError> {
    VmKind::from_name(&vm.kind).ok_or_else(|| ConfigError::UnknownValue {
        entry: format!("vm '{}'", vm.name),
        field: "kind",
        value: vm.kind.clone(),
    })
}

/// One VM's own devices.
fn vm(board: &BoardFile, vm: &VmEntry) -> Result<String, ConfigError> {
    let image = vm.image()?;
    let kind = kind(vm)?;
    let vsock = vm.vsock.map_or((0, 0), |v| (v.base, v.irq));
    let input = vm.input.map_or((0, 0), |v| (v.base, v.irq));
    // Its framebuffer (all 0 when the board has no display: the image then
    // shows text only).
    let (fb_base, fb_width, fb_height) = board.board.display.map_or((0, 0, 0), |d| {
        let d = d.display();
        (d.framebuffer(kind).base, d.width, d.height)
    });
    // Its sealed storage: its `secure-storage` device.
    let flash = vm
        .devices
        .iter()
        .filter_map(|name| board.devices.iter().find(|d| &d.name == name))
        .find(|d| d.class == "secure-storage")
        .map_or((0, 0), |d| (d.base, d.size));
    let ports: Vec<u32> = vm
        .services
        .iter()
        .filter_map(|name| mvmm_abi::vsock::service_port(name))
        .collect();
    let mut s = String::new();
    header(
        &mut s,
        &board.board.name,
        &format!("vm '{}', image '{image}'", vm.name),
    );
    let _ = write!(
        s,
        "/// The VM's vsock device (the VMM channel) and its interrupt (0: none).\n\
         pub const VSOCK_BASE: usize = {vsock_base:#x};\n\
         pub const VSOCK_INTID: u32 = {vsock_irq};\n\
         /// The VM's input device (keyboard and touch as mvmm routes them; 0 when\n\
         /// the board gives it none) and its interrupt.\n\
         pub const INPUT_BASE: usize = {input_base:#x};\n\
         pub const INPUT_INTID: u32 = {input_irq};\n\
         /// The VM's framebuffer (XRGB8888, no row padding; width 0: the board\n\
         /// has no display).\n\
         pub const FRAMEBUFFER_BASE: usize = {fb_base:#x};\n\
         pub const FRAMEBUFFER_WIDTH: u32 = {fb_width};\n\
         pub const FRAMEBUFFER_HEIGHT: u32 = {fb_height};\n\
         /// The VM's storage: a CFI NOR flash bank (0 when the board gives it none).\n\
         pub const FLASH_BASE: usize = {flash_base:#x};\n\
         pub const FLASH_SIZE: usize = {flash_size:#x};\n\
         /// The vsock ports of the services the board says this VM offers.\n\
         pub const SERVICE_PORTS: &[u32] = &{ports:?};\n",
        vsock_base = vsock.0,
        vsock_irq = vsock.1,
        input_base = input.0,
        input_irq = input.1,
        flash_base = flash.0,
        flash_size = flash.1,
    );
    Ok(s)
}

/// The link script of VM `name`'s image (`vm-<name>.ld`): a `MEMORY` block
/// from the VM's entry to the end of that RAM range, the symbols the
/// shared `SECTIONS` check the image against, then `INCLUDE
/// guest-sections.ld`. The image (with its stacks and heap) must end
/// before `__vm_image_limit`: the last page of its RAM (the provisioning
/// page) and its framebuffer, when that lies above the entry in the same
/// range.
pub fn vm_link_script(board: &BoardFile, name: &str) -> Result<String, ConfigError> {
    board.with_board(|_| ())?;
    let vm = board.vm(name)?;
    let Some(ram) = vm
        .ram
        .iter()
        .find(|r| r.base <= vm.entry && vm.entry - r.base < r.size)
    else {
        return Err(ConfigError::Partition(format!(
            "vm '{}': entry {:#x} is not inside any of its RAM ranges",
            vm.name, vm.entry
        )));
    };
    let ram_end = ram.base + ram.size;
    let last_page = ram_end - PAGE_SIZE;
    let kind = kind(vm)?;
    let frame: Option<MemRange> = board
        .board
        .display
        .map(|d| d.display().framebuffer(kind))
        .filter(|f| f.base > vm.entry && f.base < ram_end);
    let limit = frame.map_or(last_page, |f| f.base.min(last_page));
    Ok(format!(
        "/* Generated from board '{board}' by mvmm_core::config::codegen: vm '{name}'. Do not edit. */\n\
         MEMORY\n{{\n    RAM (rwx) : ORIGIN = {origin:#x}, LENGTH = {length:#x}\n}}\n\
         __vm_ram_end = {ram_end:#x};\n\
         __vm_image_limit = {limit:#x};\n\
         INCLUDE guest-sections.ld\n",
        board = board.board.name,
        name = vm.name,
        origin = vm.entry,
        length = ram_end - vm.entry,
    ))
}

/// The link script of the image that VM boots, by image: the same text as
/// [`vm_link_script`] for the VM that boots `image`. A test guest that
/// stands in for an image links with `-Timage-<image>.ld` and needs no VM
/// name of its own (the probe guest takes Linux's place).
pub fn image_link_script(board: &BoardFile, image: Image) -> Result<String, ConfigError> {
    vm_link_script(board, &board.vm_running(image)?.name)
}

/// mvmm's `MEMORY` and stack symbols (`memory.ld`): the image is linked
/// [`IMAGE_OFFSET`](crate::boot_options::IMAGE_OFFSET) into mvmm's
/// reservation (QEMU puts its DTB at the start of RAM when the image leaves
/// room; the boot options page lies below the image), with `stack_size`
/// bytes of stack for each of [`MAX_CPUS`](crate::partition::MAX_CPUS).
pub fn mvmm_memory(board: &BoardFile, stack_size: u64) -> Result<String, ConfigError> {
    board.with_board(|_| ())?;
    let mvmm = &board.board.mvmm;
    let image = mvmm.base + crate::boot_options::IMAGE_OFFSET;
    let length = (mvmm.base + mvmm.size).checked_sub(image).ok_or_else(|| {
        ConfigError::Partition(format!(
            "board mvmm {:#x}+{:#x} is smaller than the {:#x} bytes below mvmm's image",
            mvmm.base,
            mvmm.size,
            crate::boot_options::IMAGE_OFFSET
        ))
    })?;
    Ok(format!(
        "/* Generated from board '{board}' by mvmm_core::config::codegen: mvmm. Do not edit. */\n\
         MEMORY {{ RAM : ORIGIN = {image:#x}, LENGTH = {length:#x} }}\n\
         STACK_SIZE = {stack_size:#x};\nMAX_CPUS = {max_cpus};\n",
        board = board.board.name,
        max_cpus = crate::partition::MAX_CPUS,
    ))
}

/// mvmm's EL2 page tables as linker data (`el2_tables.ld`, see
/// [`crate::el2_map`]): its reservation, the image store and every VM's RAM.
pub fn mvmm_el2_tables(board: &BoardFile) -> Result<String, ConfigError> {
    board.with_board(|_| ())?;
    let range = |r: &super::RangeEntry| MemRange::new(r.base, r.size);
    let layout = crate::el2_map::El2Layout {
        mvmm: range(&board.board.mvmm),
        image_store: board.board.image_store.as_ref().map(range),
        vm_ram: board
            .vms
            .iter()
            .flat_map(|vm| vm.ram.iter().map(range))
            .collect(),
    };
    layout
        .linker_tables()
        .map_err(|e| ConfigError::Partition(e.to_string()))
}

/// mvmm's constants: the whole board and partition as a `Board`.
fn mvmm(board: &Board<'_>) -> String {
    let r = |m: MemRange| format!("MemRange::new({:#x}, {:#x})", m.base, m.size);
    let optional =
        |m: Option<MemRange>| m.map_or("None".to_string(), |m| format!("Some({})", r(m)));
    let mut s = String::new();
    header(&mut s, board.name, "mvmm: the board and its partition");
    let _ = writeln!(s, "use mvmm_core::partition::*;");
    let _ = writeln!(s, "pub const BOARD: Board<'static> = Board {{");
    let _ = writeln!(s, "    name: {:?},", board.name);
    let _ = writeln!(s, "    cpu_count: {},", board.cpu_count);
    let _ = writeln!(s, "    ram: {},", r(board.ram));
    let _ = writeln!(s, "    mvmm: {},", r(board.mvmm));
    let _ = writeln!(
        s,
        "    uart: Uart {{ mmio: {}, irq: {} }},",
        r(board.uart.mmio),
        board.uart.irq
    );
    let _ = writeln!(
        s,
        "    gic: Gic {{ distributor: {}, redistributors: {}, redistributor_stride: {:#x} }},",
        r(board.gic.distributor),
        r(board.gic.redistributors),
        board.gic.redistributor_stride
    );
    let _ = writeln!(s, "    devices: &[");
    for d in board.devices {
        let _ = writeln!(
            s,
            "        Device {{ name: {:?}, class: DeviceClass::{:?}, mmio: {}, irqs: &{:?}, dma: Dma::{:?}, pcie: {} }},",
            d.name,
            d.class,
            r(d.mmio),
            d.irqs,
            d.dma,
            d.pcie.map_or("None".to_string(), |p| format!(
                "Some(PcieHost {{ ecam: {}, mmio: {}, io: {} }})",
                r(p.ecam),
                r(p.mmio),
                r(p.io)
            ))
        );
    }
    let _ = writeln!(s, "    ],");
    let _ = writeln!(s, "    vms: &[");
    for vm in board.vms {
        let rams: Vec<String> = vm.ram.iter().map(|m| r(*m)).collect();
        let _ = writeln!(
            s,
            "        Vm {{ name: {:?}, kind: VmKind::{:?}, vmid: {}, cpus: &{:?}, ram: &[{}], devices: &{:?}, entry: {:#x}, boot_arg: {:#x}, vsock: {}, input: {} }},",
            vm.name,
            vm.kind,
            vm.vmid,
            vm.cpus,
            rams.join(", "),
            vm.devices,
            vm.entry,
            vm.boot_arg,
            match vm.vsock {
                Some(v) => format!(
                    "Some(VsockSlot {{ cid: {}, mmio: {}, irq: {} }})",
                    v.cid,
                    r(v.mmio),
                    v.irq
                ),
                None => "None".into(),
            },
            vm.input.map_or("None".to_string(), |v| format!(
                "Some(VirtioSlot {{ mmio: {}, irq: {} }})",
                r(v.mmio),
                v.irq
            ))
        );
    }
    let _ = writeln!(s, "    ],");
    let _ = writeln!(s, "    vsock_rules: &[");
    for rule in board.vsock_rules {
        let _ = writeln!(
            s,
            "        VsockRule {{ from: {:?}, to: {:?}, port: {} }},",
            rule.from, rule.to, rule.port
        );
    }
    let _ = writeln!(s, "    ],");
    let _ = writeln!(s, "    image_store: {},", optional(board.image_store));
    let _ = writeln!(s, "    entropy: {},", optional(board.entropy));
    let _ = writeln!(s, "    rpmb: {},", optional(board.rpmb));
    let _ = writeln!(
        s,
        "    display: {},",
        board.display.map_or("None".to_string(), |d| format!(
            "Some(Display {{ fw_cfg: {}, width: {}, height: {}, rich_framebuffer: {:#x}, secure_framebuffer: {:#x} }})",
            r(d.fw_cfg),
            d.width,
            d.height,
            d.rich_framebuffer,
            d.secure_framebuffer
        ))
    );
    let _ = writeln!(
        s,
        "    smmu: {},",
        board.smmu.map_or("None".to_string(), |m| format!(
            "Some(Smmu {{ mmio: {}, event_irq: {} }})",
            r(m.mmio),
            m.event_irq
        ))
    );
    let inputs: Vec<String> = board
        .input
        .iter()
        .map(|v| format!("VirtioSlot {{ mmio: {}, irq: {} }}", r(v.mmio), v.irq))
        .collect();
    let _ = writeln!(s, "    input: &[{}],", inputs.join(", "));
    let _ = writeln!(s, "}};");
    let prefixes: Vec<String> = std::iter::once("mvmm")
        .chain(board.vms.iter().map(|vm| vm.name))
        .map(|n| format!("[{n}] "))
        .collect();
    let _ = writeln!(s, "/// Console line prefixes: mvmm, then each VM in order.");
    let _ = writeln!(s, "pub const CONSOLE_PREFIXES: &[&str] = &{prefixes:?};");
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::{GOOD, QEMU_VIRT, valid};
    use super::*;
    use std::collections::BTreeMap;

    /// The integer constants of generated source: name -> value.
    fn values(source: &str) -> BTreeMap<String, u64> {
        source
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("pub const ")?.split_once(':')?;
                let value = rest.split_once(" = ")?.1.strip_suffix(';')?;
                let value = match value.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16).ok()?,
                    None => value.parse().ok()?,
                };
                Some((name.to_string(), value))
            })
            .collect()
    }

    fn qemu_virt() -> BoardFile {
        BoardFile::parse(QEMU_VIRT).unwrap()
    }

    #[test]
    fn the_guest_runtime_gets_the_uart_ram_and_gic() {
        let board = qemu_virt();
        let b = &board.board;
        let source = constants(&board, Target::GuestRuntime).unwrap();
        assert!(source.starts_with("// Generated from board 'qemu-virt'"));
        let expected = [
            ("UART_BASE", b.uart.base),
            ("RAM_BASE", b.ram.base),
            ("RAM_SIZE", b.ram.size),
            ("GICD_BASE", b.gic.distributor.base),
            ("GICR_BASE", b.gic.redistributors.base),
            ("GICR_STRIDE", b.gic.redistributor_stride),
        ];
        assert_eq!(
            values(&source),
            expected.map(|(n, v)| (n.to_string(), v)).into(),
            "{source}"
        );
    }

    #[test]
    fn the_secure_vm_gets_its_own_devices() {
        let board = qemu_virt();
        let vm = board.vm_running(Image::SecureOs).unwrap();
        let source = constants(&board, Target::Vm(&vm.name)).unwrap();
        assert!(
            source.starts_with(
                "// Generated from board 'qemu-virt' by mvmm_core::config::codegen (vm 'secure', image 'secure-os')"
            ),
            "{source}"
        );
        let got = values(&source);
        let display = board.board.display.unwrap();
        let flash = board.devices.iter().find(|d| d.name == "flash1").unwrap();
        let (vsock, input) = (vm.vsock.unwrap(), vm.input.unwrap());
        for (name, value) in [
            ("VSOCK_BASE", vsock.base),
            ("VSOCK_INTID", vsock.irq.into()),
            ("INPUT_BASE", input.base),
            ("INPUT_INTID", input.irq.into()),
            ("FRAMEBUFFER_BASE", display.secure_framebuffer),
            ("FRAMEBUFFER_WIDTH", display.width.into()),
            ("FRAMEBUFFER_HEIGHT", display.height.into()),
            ("FLASH_BASE", flash.base),
            ("FLASH_SIZE", flash.size),
        ] {
            assert_eq!(got.get(name), Some(&value), "{name} in\n{source}");
        }
        assert_eq!(got.len(), 9, "{source}");
        let ports = [mvmm_abi::vsock::PAYMENT_PORT, mvmm_abi::vsock::ECHO_PORT];
        assert!(
            source.contains(&format!("pub const SERVICE_PORTS: &[u32] = &{ports:?};")),
            "{source}"
        );
    }

    #[test]
    fn a_vm_without_a_device_gets_zeros() {
        // The rich VM of qemu-virt has no flash and offers no service; its
        // framebuffer is the rich one.
        let board = qemu_virt();
        let source = constants(&board, Target::Vm("rich")).unwrap();
        let got = values(&source);
        assert_eq!(got["FLASH_BASE"], 0);
        assert_eq!(got["FLASH_SIZE"], 0);
        assert_eq!(
            got["FRAMEBUFFER_BASE"],
            board.board.display.unwrap().rich_framebuffer
        );
        assert!(source.contains("pub const SERVICE_PORTS: &[u32] = &[];"));
        // A VM with nothing at all, on a board without a display.
        let bare = BoardFile::parse(&valid()).unwrap();
        let source = constants(&bare, Target::Vm("secure")).unwrap();
        let got = values(&source);
        assert_eq!(got.len(), 9, "{source}");
        assert!(got.values().all(|&v| v == 0), "{source}");
    }

    #[test]
    fn errors_name_the_vm_or_the_broken_entry() {
        let board = qemu_virt();
        assert_eq!(
            constants(&board, Target::Vm("trusted"))
                .unwrap_err()
                .to_string(),
            "board 'qemu-virt': unknown vm 'trusted' (known: rich, secure)"
        );
        assert_eq!(
            vm_link_script(&board, "trusted").unwrap_err().to_string(),
            "board 'qemu-virt': unknown vm 'trusted' (known: rich, secure)"
        );
        // An invalid board generates nothing, for any target.
        let broken = BoardFile::parse(GOOD).unwrap();
        for target in [Target::Mvmm, Target::GuestRuntime, Target::Vm("secure")] {
            assert_eq!(
                constants(&broken, target).unwrap_err().to_string(),
                "net0 range 0 (0xa003e00..0xa004e00) is empty, overflows, or is not 4096-byte aligned"
            );
        }
        assert!(vm_link_script(&broken, "secure").is_err());
        assert!(mvmm_memory(&broken, 0x8000).is_err());
        assert!(mvmm_el2_tables(&broken).is_err());
    }

    #[test]
    fn link_scripts_place_each_image_below_its_framebuffer_and_provisioning_page() {
        let board = qemu_virt();
        let display = board.board.display.unwrap();
        for (image, frame) in [
            (Image::SecureOs, display.secure_framebuffer),
            (Image::Linux, display.rich_framebuffer),
        ] {
            let vm = board.vm_running(image).unwrap();
            let ram = vm.ram[0];
            let end = ram.base + ram.size;
            let script = vm_link_script(&board, &vm.name).unwrap();
            assert!(
                script.contains(&format!(
                    "RAM (rwx) : ORIGIN = {:#x}, LENGTH = {:#x}",
                    vm.entry,
                    end - vm.entry
                )),
                "{script}"
            );
            assert!(script.contains(&format!("__vm_ram_end = {end:#x};")));
            // Both framebuffers lie above their VM's entry, below its last page.
            assert!(frame > vm.entry && frame < end - PAGE_SIZE);
            assert!(
                script.contains(&format!("__vm_image_limit = {frame:#x};")),
                "{script}"
            );
            assert!(script.ends_with("INCLUDE guest-sections.ld\n"));
            assert_eq!(image_link_script(&board, image).unwrap(), script);
        }
        // Without a display the last page (the provisioning page) bounds it.
        let bare = BoardFile::parse(&valid()).unwrap();
        let script = vm_link_script(&bare, "secure").unwrap();
        assert!(
            script.contains("__vm_image_limit = 0x42fff000;"),
            "{script}"
        );
    }

    #[test]
    fn mvmm_is_linked_above_the_dtb_with_stacks_for_every_cpu() {
        let board = qemu_virt();
        let memory = mvmm_memory(&board, 0x8000).unwrap();
        let mvmm = &board.board.mvmm;
        let image = mvmm.base + crate::boot_options::IMAGE_OFFSET;
        let length = mvmm.base + mvmm.size - image;
        assert!(
            memory.contains(&format!("ORIGIN = {image:#x}, LENGTH = {length:#x}")),
            "{memory}"
        );
        assert!(memory.contains(&format!(
            "STACK_SIZE = 0x8000;\nMAX_CPUS = {};",
            crate::partition::MAX_CPUS
        )));
        assert!(!mvmm_el2_tables(&board).unwrap().is_empty());
        let source = constants(&board, Target::Mvmm).unwrap();
        assert!(source.contains("pub const BOARD: Board<'static> = Board {"));
        assert!(source.contains("image_store: Some(MemRange::new("));
    }
}
