//! The device tree a VM boots with, written from the board file.
//!
//! It lists only what the VM owns or what mvmm emulates for it: its RAM, its
//! vCPUs (started with PSCI), the virtual GICv3, the architected timer, its
//! virtual PL011, its passed-through devices, and `/chosen` (command line,
//! initrd). Nothing of another VM appears in it. Built on the host by xtask
//! (feature `config`).

use crate::config::{BoardFile, ConfigError, DeviceEntry, PcieEntry, VmEntry};
use vm_fdt::{Error as FdtError, FdtWriter};

/// How a VM is booted: its kernel command line and initial ramdisk.
#[derive(Clone, Debug)]
pub struct BootParams<'a> {
    pub cmdline: &'a str,
    /// Size in bytes of the initrd loaded at the VM's `initrd` address.
    pub initrd_size: Option<u64>,
    /// `compatible` of each vCPU node, e.g. "arm,cortex-a57".
    pub cpu_compatible: &'a str,
}

const GIC_PHANDLE: u32 = 1;
const CLOCK_PHANDLE: u32 = 2;
/// Interrupt specifier types: GIC_SPI / GIC_PPI, and trigger flags.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
const IRQ_EDGE_RISING: u32 = 1;
const IRQ_LEVEL_HIGH: u32 = 4;
/// Timer PPIs: secure physical, non-secure physical, virtual, hypervisor;
/// the CPU mask bits (all CPUs) with level-low polarity.
const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
const PPI_ALL_CPUS_LEVEL: u32 = 0xf08;

fn fdt_err(e: FdtError) -> ConfigError {
    ConfigError::Partition(format!("device tree: {e}"))
}

fn reg(base: u64, size: u64) -> [u64; 2] {
    [base, size]
}

/// Writes the device tree of VM `vm_name` of `board`.
pub fn vm_device_tree(
    board: &BoardFile,
    vm_name: &str,
    boot: &BootParams<'_>,
) -> Result<Vec<u8>, ConfigError> {
    // Only a board that passes every partition rule gets a device tree.
    board.with_board(|_| ())?;
    let vm = board
        .vms
        .iter()
        .find(|v| v.name == vm_name)
        .ok_or_else(|| ConfigError::UnknownValue {
            entry: "device tree".into(),
            field: "vm",
            value: vm_name.into(),
        })?;
    write_tree(board, vm, boot).map_err(fdt_err)
}

fn write_tree(board: &BoardFile, vm: &VmEntry, boot: &BootParams<'_>) -> Result<Vec<u8>, FdtError> {
    let b = &board.board;
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", &format!("mVMM {} VM on {}", vm.name, b.name))?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", boot.cmdline)?;
    fdt.property_string("stdout-path", &format!("/pl011@{:x}", b.uart.base))?;
    if let (Some(start), Some(size)) = (vm.initrd, boot.initrd_size) {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", start + size)?;
    }
    // Zeros here; mvmm writes fresh entropy into it each time the VM
    // (re)starts (`crate::rng_seed`).
    fdt.property("rng-seed", &[0u8; crate::rng_seed::SEED_LEN])?;
    fdt.end_node(chosen)?;

    for ram in &vm.ram {
        let node = fdt.begin_node(&format!("memory@{:x}", ram.base))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &reg(ram.base, ram.size))?;
        fdt.end_node(node)?;
    }

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for index in 0..vm.cpus.len() {
        let cpu = fdt.begin_node(&format!("cpu@{index}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", boot.cpu_compatible)?;
        // vCPU i has MPIDR Aff0 = i (VMPIDR_EL2).
        fdt.property_u32("reg", index as u32)?;
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
    )?;
    fdt.property_string("method", "smc")?;
    fdt.end_node(psci)?;

    let gic = &b.gic;
    let intc = fdt.begin_node(&format!("intc@{:x}", gic.distributor.base))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#redistributor-regions", 1)?;
    let redist_size = gic.redistributor_stride * vm.cpus.len() as u64;
    let mut regs = reg(gic.distributor.base, gic.distributor.size).to_vec();
    regs.extend(reg(gic.redistributors.base, redist_size));
    fdt.property_array_u64("reg", &regs)?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.end_node(intc)?;

    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    let cells: Vec<u32> = TIMER_PPIS
        .iter()
        .flat_map(|&ppi| [GIC_PPI, ppi, PPI_ALL_CPUS_LEVEL])
        .collect();
    fdt.property_array_u32("interrupts", &cells)?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    let clock = fdt.begin_node("apb-pclk")?;
    fdt.property_string("compatible", "fixed-clock")?;
    fdt.property_u32("#clock-cells", 0)?;
    fdt.property_u32("clock-frequency", 24_000_000)?;
    fdt.property_string("clock-output-names", "clk24mhz")?;
    fdt.property_phandle(CLOCK_PHANDLE)?;
    fdt.end_node(clock)?;

    // The virtual PL011 mvmm emulates at the physical UART's address.
    let uart = fdt.begin_node(&format!("pl011@{:x}", b.uart.base))?;
    fdt.property_string_list(
        "compatible",
        vec!["arm,pl011".into(), "arm,primecell".into()],
    )?;
    fdt.property_array_u64("reg", &reg(b.uart.base, b.uart.size))?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, b.uart.irq - 32, IRQ_LEVEL_HIGH])?;
    fdt.property_array_u32("clocks", &[CLOCK_PHANDLE, CLOCK_PHANDLE])?;
    fdt.property_string_list("clock-names", vec!["uartclk".into(), "apb_pclk".into()])?;
    fdt.end_node(uart)?;

    for name in &vm.devices {
        if let Some(dev) = board.devices.iter().find(|d| &d.name == name) {
            device_nodes(&mut fdt, dev)?;
        }
    }
    if let Some(display) = b.display.filter(|_| vm.kind == "rich") {
        framebuffer_nodes(&mut fdt, &display.display())?;
    }
    if let Some(vsock) = vm.vsock {
        // The VMM channel, emulated by mvmm (a modern virtio-mmio device).
        let node = fdt.begin_node(&format!("virtio_mmio@{:x}", vsock.base))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.property_array_u64("reg", &reg(vsock.base, crate::partition::VIRTIO_MMIO_SLOT))?;
        fdt.property_array_u32("interrupts", &[GIC_SPI, vsock.irq - 32, IRQ_EDGE_RISING])?;
        fdt.property_null("dma-coherent")?;
        fdt.end_node(node)?;
    }
    if let Some(input) = vm.input {
        // The keyboard and touch screen, emulated by mvmm (a modern
        // virtio-mmio virtio-input device).
        let node = fdt.begin_node(&format!("virtio_mmio@{:x}", input.base))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.property_array_u64("reg", &reg(input.base, crate::partition::VIRTIO_MMIO_SLOT))?;
        fdt.property_array_u32("interrupts", &[GIC_SPI, input.irq - 32, IRQ_EDGE_RISING])?;
        fdt.property_null("dma-coherent")?;
        fdt.end_node(node)?;
    }
    fdt.end_node(root)?;
    fdt.finish()
}

/// The rich VM's framebuffer: memory taken out of its RAM map (`no-map`,
/// so Linux maps it as a framebuffer, not as RAM) and a
/// `simple-framebuffer` that Linux's simplefb drives. mvmm scans it out
/// whenever the secure VM does not hold the display.
fn framebuffer_nodes(
    fdt: &mut FdtWriter,
    display: &crate::partition::Display,
) -> Result<(), FdtError> {
    let frame = display.framebuffer(crate::partition::VmKind::Rich);
    let reserved = fdt.begin_node("reserved-memory")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    let region = fdt.begin_node(&format!("framebuffer@{:x}", frame.base))?;
    fdt.property_array_u64("reg", &reg(frame.base, frame.size))?;
    fdt.property_null("no-map")?;
    fdt.end_node(region)?;
    fdt.end_node(reserved)?;
    let node = fdt.begin_node(&format!("framebuffer@{:x}", frame.base))?;
    fdt.property_string("compatible", "simple-framebuffer")?;
    fdt.property_array_u64("reg", &reg(frame.base, frame.size))?;
    fdt.property_u32("width", display.width)?;
    fdt.property_u32("height", display.height)?;
    fdt.property_u32("stride", display.stride())?;
    fdt.property_string("format", "x8r8g8b8")?;
    fdt.end_node(node)
}

/// PCI address-space codes of `ranges` (first cell of a PCI address).
const PCI_SPACE_IO: u32 = 0x0100_0000;
const PCI_SPACE_MEM32: u32 = 0x0200_0000;
/// Bytes of ECAM per bus.
const ECAM_BUS_SIZE: u64 = 1 << 20;

/// A PCIe host bridge (`pci-host-ecam-generic`) as QEMU's virt describes
/// it: ECAM as `reg`, the I/O and 32-bit memory windows as `ranges`, the
/// INTx swizzle as `interrupt-map`. The buses are those whose requester ids
/// the SMMU's stream table covers; the guest learns nothing of the SMMU.
fn pcie_node(fdt: &mut FdtWriter, dev: &DeviceEntry, pcie: &PcieEntry) -> Result<(), FdtError> {
    let node = fdt.begin_node(&format!("pcie@{:x}", dev.base))?;
    fdt.property_string("compatible", "pci-host-ecam-generic")?;
    fdt.property_string("device_type", "pci")?;
    fdt.property_u32("#address-cells", 3)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("linux,pci-domain", 0)?;
    let ecam_buses = (pcie.ecam.size / ECAM_BUS_SIZE).max(1);
    let buses = pcie
        .smmu_streams
        .map_or(ecam_buses, |s| {
            (u64::from(s.first) + u64::from(s.count)) / 256
        })
        .clamp(1, ecam_buses);
    fdt.property_array_u32("bus-range", &[0, (buses - 1) as u32])?;
    fdt.property_null("dma-coherent")?;
    fdt.property_array_u64("reg", &reg(pcie.ecam.base, pcie.ecam.size))?;
    let hi = |v: u64| (v >> 32) as u32;
    let lo = |v: u64| v as u32;
    let (io, mem) = (pcie.io, pcie.mmio);
    fdt.property_array_u32(
        "ranges",
        &[
            PCI_SPACE_IO,
            0,
            0,
            hi(io.base),
            lo(io.base),
            hi(io.size),
            lo(io.size),
            PCI_SPACE_MEM32,
            hi(mem.base),
            lo(mem.base),
            hi(mem.base),
            lo(mem.base),
            hi(mem.size),
            lo(mem.size),
        ],
    )?;
    // INTx: slot s, pin p (1..4) raises irqs[(s + p - 1) % 4] (the standard
    // swizzle QEMU's virt wires).
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.property_array_u32("interrupt-map-mask", &[0x1800, 0, 0, 7])?;
    let mut map = Vec::new();
    if dev.irqs.len() == 4 {
        for slot in 0..4u32 {
            for pin in 0..4u32 {
                let irq = dev.irqs[((slot + pin) % 4) as usize];
                map.extend([slot << 11, 0, 0, pin + 1, GIC_PHANDLE]);
                map.extend([GIC_SPI, irq - 32, IRQ_LEVEL_HIGH]);
            }
        }
    }
    fdt.property_array_u32("interrupt-map", &map)?;
    fdt.end_node(node)
}

/// Nodes of one passed-through device (one per slot for slotted ranges).
fn device_nodes(fdt: &mut FdtWriter, dev: &DeviceEntry) -> Result<(), FdtError> {
    if let Some(pcie) = &dev.pcie {
        return pcie_node(fdt, dev, pcie);
    }
    let Some(first) = dev.compatible.first() else {
        return Ok(());
    };
    let node_name = first.rsplit(',').next().unwrap_or(first);
    let slots: Vec<(u64, u64, Option<u32>)> = match dev.slot_size {
        Some(slot) if slot > 0 => (0..dev.size / slot)
            .map(|i| (dev.base + i * slot, slot, dev.irqs.get(i as usize).copied()))
            .collect(),
        _ => vec![(dev.base, dev.size, dev.irqs.first().copied())],
    };
    let virtio = first == "virtio,mmio";
    for (base, size, irq) in slots {
        let node = fdt.begin_node(&format!("{}@{base:x}", node_name.replace(['_', ' '], "-")))?;
        fdt.property_string_list("compatible", dev.compatible.clone())?;
        fdt.property_array_u64("reg", &reg(base, size))?;
        if let Some(irq) = irq.filter(|&i| i >= 32) {
            let trigger = if virtio {
                IRQ_EDGE_RISING
            } else {
                IRQ_LEVEL_HIGH
            };
            fdt.property_array_u32("interrupts", &[GIC_SPI, irq - 32, trigger])?;
        }
        if virtio {
            fdt.property_null("dma-coherent")?;
        }
        if dev.compatible.iter().any(|c| c == "arm,primecell") {
            fdt.property_u32("clocks", CLOCK_PHANDLE)?;
            fdt.property_string("clock-names", "apb_pclk")?;
        }
        fdt.end_node(node)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board() -> BoardFile {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../boards/qemu-virt/board.toml"
        ))
        .expect("the qemu-virt board file");
        BoardFile::parse(&text).expect("it parses")
    }

    const BOOT: BootParams<'static> = BootParams {
        cmdline: "console=ttyAMA0 nokaslr",
        initrd_size: Some(0x10_0000),
        cpu_compatible: "arm,cortex-a57",
    };

    /// The raw structure block as text, to look for names and values.
    fn strings(dtb: &[u8]) -> String {
        String::from_utf8_lossy(dtb).into_owned()
    }

    #[test]
    fn the_rich_vm_tree_has_its_own_resources_only() {
        let b = board();
        let dtb = vm_device_tree(&b, "rich", &BOOT).unwrap();
        assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed], "FDT magic");
        let text = strings(&dtb);
        for needle in [
            "memory@50000000",
            "cpu@0",
            "cpu@1",
            "arm,gic-v3",
            "arm,armv8-timer",
            "pl011@9000000",
            "pl031@9010000",
            "pcie@10000000",
            "pci-host-ecam-generic",
            "interrupt-map",
            "virtio_mmio@a000000",
            "console=ttyAMA0 nokaslr",
            "linux,initrd-start",
            "psci",
            // Its framebuffer, kept out of its RAM map; never fw_cfg.
            "reserved-memory",
            "framebuffer@7f000000",
            "simple-framebuffer",
            "x8r8g8b8",
        ] {
            assert!(text.contains(needle), "{needle} missing");
        }
        // Nothing of the secure VM: not its RAM, not a third CPU.
        assert!(!text.contains("memory@41000000"));
        assert!(!text.contains("cpu@2"));
        assert!(!text.contains("fw-cfg") && !text.contains("9020000"));
        assert!(!text.contains("framebuffer@42e00000"));
        // Neither the SMMU (mvmm's) nor a virtio-mmio NIC.
        assert!(!text.contains("9050000") && !text.contains("smmu") && !text.contains("iommu"));
        assert!(!text.contains("mmio@a003"));
        // The bridge's windows: ECAM reg, then I/O and 32-bit memory ranges.
        let cells = |v: &[u32]| v.iter().flat_map(|c| c.to_be_bytes()).collect::<Vec<u8>>();
        let ranges = cells(&[
            0x0100_0000,
            0,
            0,
            0,
            0x3eff_0000,
            0,
            0x1_0000,
            0x0200_0000,
            0,
            0x1000_0000,
            0,
            0x1000_0000,
            0,
            0x2eff_0000,
        ]);
        assert!(
            dtb.windows(ranges.len()).any(|w| w == ranges),
            "pcie ranges"
        );
        assert!(
            dtb.windows(16)
                .any(|w| w == cells(&[0, 0x3f00_0000, 0, 0x0100_0000])),
            "ecam"
        );
        // Slot 1, INTB is wired to the third irq (SPI 5), level high.
        let intx = cells(&[1 << 11, 0, 0, 2, GIC_PHANDLE, GIC_SPI, 5, IRQ_LEVEL_HIGH]);
        assert!(dtb.windows(intx.len()).any(|w| w == intx), "interrupt-map");
        assert!(
            dtb.windows(8).any(|w| w == cells(&[0, 0])),
            "bus-range 0..0"
        );
        let initrd_end = 0x5800_0000u64 + 0x10_0000;
        assert!(
            dtb.windows(8).any(|w| w == initrd_end.to_be_bytes()),
            "initrd end"
        );
    }

    #[test]
    fn the_tree_has_an_rng_seed_for_mvmm_to_fill() {
        let dtb = vm_device_tree(&board(), "rich", &BOOT).unwrap();
        let mut ram = crate::virtio::mem::testing::TestRam::new(0, dtb.len());
        ram.bytes.copy_from_slice(&dtb);
        let at = crate::rng_seed::find(&ram, 0).expect("a seed to fill") as usize;
        assert_eq!(&dtb[at..at + crate::rng_seed::SEED_LEN], &[0; 32]);
    }

    #[test]
    fn the_secure_vm_tree_has_no_rich_devices() {
        let dtb = vm_device_tree(
            &board(),
            "secure",
            &BootParams {
                initrd_size: None,
                ..BOOT
            },
        )
        .unwrap();
        let text = strings(&dtb);
        assert!(text.contains("memory@41000000"));
        assert!(!text.contains("pl031") && !text.contains("cpu@1") && !text.contains("pcie"));
        // No virtio-rng either: mvmm owns it (the secure VM asks for
        // entropy through the TRNG calls).
        assert!(!text.contains("mmio@a002000"), "mvmm's entropy device");
        assert!(!text.contains("linux,initrd-start"));
        assert!(!text.contains("framebuffer"), "secure-os knows its own");
    }

    #[test]
    fn unknown_vms_and_broken_boards_get_no_tree() {
        assert_eq!(
            vm_device_tree(&board(), "tablet", &BOOT)
                .unwrap_err()
                .to_string(),
            "device tree: unknown vm 'tablet'"
        );
        let mut b = board();
        b.vms[1].cpus = vec![0];
        assert!(
            vm_device_tree(&b, "rich", &BOOT)
                .unwrap_err()
                .to_string()
                .contains("cpu 0 is given twice")
        );
    }
}
