//! The board and partition model: which VM owns which CPUs, RAM and devices.
//!
//! A board file (`boards/<board>/board.toml`) is parsed and validated on the
//! host at build time (see [`crate::config`]) and turned into a `const`
//! [`Board`] that mvmm links in, so EL2 never parses text. The same types and
//! the same [`Board::validate`] are used on both sides.

use core::fmt;

/// Most VMs a board may declare (VMIDs 1..=MAX_VMS).
pub const MAX_VMS: usize = 4;
/// Most physical CPUs a board may declare.
pub const MAX_CPUS: usize = 8;
/// Granule of every RAM and MMIO range (stage-2 uses 4 KiB pages).
pub const PAGE_SIZE: u64 = 4096;

/// A half-open physical or guest-physical range `[base, base + size)`.
///
/// # Invariants
/// Checked by [`Board::validate`]: `size > 0`, both ends page aligned, no
/// overflow of `base + size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemRange {
    pub base: u64,
    pub size: u64,
}

impl MemRange {
    pub const fn new(base: u64, size: u64) -> Self {
        MemRange { base, size }
    }

    /// One past the last byte, saturating so a malformed range cannot wrap.
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr < self.end()
    }

    /// True when `[addr, addr + len)` lies entirely inside this range.
    pub const fn contains_range(&self, addr: u64, len: u64) -> bool {
        match addr.checked_add(len) {
            Some(end) => addr >= self.base && end <= self.end(),
            None => false,
        }
    }

    pub const fn overlaps(&self, other: &MemRange) -> bool {
        self.base < other.end() && other.base < self.end()
    }

    fn well_formed(&self) -> bool {
        self.size > 0
            && self.base.checked_add(self.size).is_some()
            && self.base.is_multiple_of(PAGE_SIZE)
            && self.size.is_multiple_of(PAGE_SIZE)
    }
}

impl fmt::Display for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.base, self.end())
    }
}

/// What a device is, as far as partition rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceClass {
    /// A network interface. Never allowed in a secure VM.
    Network,
    Rtc,
    Block,
    Input,
    Display,
    Rng,
    /// Persistent storage that holds a secure VM's sealed state (e.g. NOR
    /// flash). Only a secure VM may own it, and it must not be able to DMA.
    SecureStorage,
    /// A PCIe host bridge (ECAM, its MMIO and I/O windows, INTx): whatever
    /// sits on its bus (a NIC among others) masters DMA, so it only goes to
    /// a rich VM and only behind the board's SMMU.
    PcieHost,
    /// Anything else the board wants to hand to a VM as is.
    Other,
}

impl DeviceClass {
    pub fn from_name(name: &str) -> Option<DeviceClass> {
        Some(match name {
            "network" => DeviceClass::Network,
            "rtc" => DeviceClass::Rtc,
            "block" => DeviceClass::Block,
            "input" => DeviceClass::Input,
            "display" => DeviceClass::Display,
            "rng" => DeviceClass::Rng,
            "secure-storage" => DeviceClass::SecureStorage,
            "pcie-host" => DeviceClass::PcieHost,
            "other" => DeviceClass::Other,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            DeviceClass::Network => "network",
            DeviceClass::Rtc => "rtc",
            DeviceClass::Block => "block",
            DeviceClass::Input => "input",
            DeviceClass::Display => "display",
            DeviceClass::Rng => "rng",
            DeviceClass::SecureStorage => "secure-storage",
            DeviceClass::PcieHost => "pcie-host",
            DeviceClass::Other => "other",
        }
    }
}

/// A memory-mapped device of the board that can be passed through to a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device<'a> {
    pub name: &'a str,
    pub class: DeviceClass,
    pub mmio: MemRange,
    /// GIC interrupt ids (INTIDs, SPIs are 32 and up) the device raises.
    pub irqs: &'a [u32],
    /// What memory the device reaches on its own (DMA).
    pub dma: Dma,
    /// The windows of a PCIe host bridge (class [`DeviceClass::PcieHost`]),
    /// all inside `mmio`.
    pub pcie: Option<PcieHost>,
}

/// What memory a device reaches by itself, as a bus master (DMA).
///
/// The DMA rule ([`Board::validate`]): a VM may own a device that does DMA
/// only when the board's IOMMU confines it ([`Dma::Smmu`]); a device that
/// reaches all memory ([`Dma::Unconfined`]: QEMU's virtio-mmio devices take
/// any physical address the guest writes into a descriptor) goes to no VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dma {
    /// Plain registers: it reaches nothing but itself.
    None,
    /// A bus master with no IOMMU in front of it: it reads and writes any
    /// physical address, another VM's and mvmm's included.
    Unconfined,
    /// Behind the board's SMMU: every transaction carries a stream id in
    /// `streams`, which mvmm confines to the owning VM's RAM.
    Smmu { streams: StreamIds },
}

/// A range of SMMU stream ids `[first, first + count)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamIds {
    pub first: u32,
    pub count: u32,
}

impl StreamIds {
    /// One past the last id, saturating.
    pub const fn end(&self) -> u32 {
        self.first.saturating_add(self.count)
    }

    pub const fn contains(&self, id: u32) -> bool {
        id >= self.first && id < self.end()
    }

    const fn overlaps(&self, other: &StreamIds) -> bool {
        self.first < other.end() && other.first < self.end()
    }
}

/// Stream ids mvmm's stream table covers (a linear table of this many
/// entries; QEMU `virt`: the requester ids of PCIe bus 0). Every other
/// stream id is refused by the SMMU itself (`C_BAD_STREAMID`).
pub const MAX_STREAMS: u32 = 256;

/// A PCIe host bridge's windows (ECAM, 32-bit MMIO and I/O, as the board
/// file gives them for QEMU `virt` with `highmem=off`), each inside
/// the device's `mmio` and none overlapping another. The guest programs the
/// BARs of the devices on the bus inside these windows through ECAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcieHost {
    /// Configuration space, 1 MiB per bus.
    pub ecam: MemRange,
    /// 32-bit memory window (PCI address == CPU address).
    pub mmio: MemRange,
    /// I/O port window (PCI I/O address 0 at its base).
    pub io: MemRange,
}

/// An SMMUv3 that only mvmm programs: it confines the DMA of devices given
/// to VMs ([`Dma::Smmu`]). No VM maps its registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Smmu {
    /// Its register pages (page 0 and page 1).
    pub mmio: MemRange,
    /// The event queue's interrupt (an SPI INTID), taken by mvmm.
    pub event_irq: u32,
}

/// The role of a VM. The rules differ: a secure VM may not own a network
/// device, and the rich VM owns the power of the whole machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmKind {
    Rich,
    Secure,
}

impl VmKind {
    pub fn from_name(name: &str) -> Option<VmKind> {
        match name {
            "rich" => Some(VmKind::Rich),
            "secure" => Some(VmKind::Secure),
            _ => None,
        }
    }
}

/// One VM of the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vm<'a> {
    pub name: &'a str,
    pub kind: VmKind,
    /// Stage-2 VMID; assigned 1, 2, ... in declaration order.
    pub vmid: u16,
    /// Physical CPUs this VM runs on; its vCPU `i` runs on `cpus[i]`.
    pub cpus: &'a [usize],
    /// Guest RAM, mapped at the same address in the guest (IPA == PA).
    pub ram: &'a [MemRange],
    /// Names of board devices passed through to this VM.
    pub devices: &'a [&'a str],
    /// Where vCPU 0 starts, a guest-physical address inside `ram`.
    pub entry: u64,
    /// x0 at entry: the guest-physical address of its device tree, or 0.
    pub boot_arg: u64,
    /// The VMM channel device mvmm emulates in this VM, if any.
    pub vsock: Option<VsockSlot>,
    /// The virtio-input device mvmm emulates in this VM, if any: the
    /// keyboard and touch events mvmm routes to it (see [`crate::input`]).
    pub input: Option<VirtioSlot>,
}

/// One virtio-mmio register window (0x200 bytes) and its interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioSlot {
    /// The register window.
    pub mmio: MemRange,
    /// Its interrupt (an SPI INTID).
    pub irq: u32,
}

impl VirtioSlot {
    /// One virtio-mmio slot at a slot-aligned address, with an SPI.
    pub fn well_formed(&self) -> bool {
        self.mmio.size == VIRTIO_MMIO_SLOT
            && self.mmio.base.is_multiple_of(VIRTIO_MMIO_SLOT)
            && self.mmio.base.checked_add(self.mmio.size).is_some()
            && (32..1020).contains(&self.irq)
    }
}

/// A virtio-mmio vsock device mvmm emulates in a VM: the VM's end of the
/// VMM channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsockSlot {
    /// The VM's vsock context id (3 and up; 2 is the host, which does not
    /// exist here).
    pub cid: u32,
    /// Guest-physical register window (one virtio-mmio slot, 0x200 bytes).
    pub mmio: MemRange,
    /// Its interrupt (an SPI INTID).
    pub irq: u32,
}

/// Size of one virtio-mmio register window.
pub use mvmm_abi::VIRTIO_MMIO_SLOT;

/// A connection the vsock switch lets through: a stream from VM `from` to
/// port `port` of VM `to` (and its replies). Everything else is reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsockRule<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub port: u32,
}

/// The generic interrupt controller of the board (GICv3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    pub distributor: MemRange,
    /// All redistributor frames, one `redistributor_stride` per CPU.
    pub redistributors: MemRange,
    pub redistributor_stride: u64,
}

/// The physical UART that mvmm owns and multiplexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uart {
    pub mmio: MemRange,
    pub irq: u32,
}

/// A whole board: the hardware facts and the partition on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board<'a> {
    pub name: &'a str,
    pub cpu_count: usize,
    /// All RAM of the machine.
    pub ram: MemRange,
    /// RAM reserved for mvmm itself (its image, stacks, tables, the
    /// firmware's DTB); no VM may own any of it.
    pub mvmm: MemRange,
    pub uart: Uart,
    pub gic: Gic,
    pub devices: &'a [Device<'a>],
    pub vms: &'a [Vm<'a>],
    pub vsock_rules: &'a [VsockRule<'a>],
    /// RAM only mvmm reaches that holds pristine boot images of the VMs
    /// (see [`crate::image_store`]), if the board has one.
    pub image_store: Option<MemRange>,
    /// The virtio-mmio slot of mvmm's own disk (the secure VM's rollback
    /// counter, see [`crate::rpmb`]), if the board has one: in a page no VM
    /// maps.
    pub rpmb: Option<MemRange>,
    /// The virtio-mmio slot of mvmm's entropy device (a virtio-rng it
    /// drives and serves to the secure VM through the TRNG calls, see
    /// [`crate::trng`]), if the board has one: in a page no VM maps, since
    /// the device does DMA.
    pub entropy: Option<MemRange>,
    /// The scan-out mvmm drives and the framebuffers it switches between
    /// (see [`Display`]), if the board has a display.
    pub display: Option<Display>,
    /// The IOMMU that confines the DMA of devices given to VMs, if any.
    pub smmu: Option<Smmu>,
    /// mvmm's physical input devices (virtio-input keyboard and tablet in
    /// slots no VM maps): only mvmm reads them, and routes each event to
    /// one VM's emulated input device (see [`crate::input`]).
    pub input: &'a [VirtioSlot],
}

/// The display: one scan-out that only mvmm programs (QEMU: `ramfb`,
/// configured through fw_cfg), and one framebuffer in the RAM of the rich
/// VM and one in the RAM of the secure VM, both `width` x `height` pixels of
/// XRGB8888 (fourcc `XR24`), `4 * width` bytes a row.
///
/// # Invariants
/// Checked by [`Board::validate`]: no VM can reach the fw_cfg page (fw_cfg
/// DMA reaches all memory); each framebuffer lies, page aligned, inside the
/// RAM of a VM of its kind and covers neither its entry nor its device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Display {
    /// fw_cfg's register page (data, selector, DMA address).
    pub fw_cfg: MemRange,
    pub width: u32,
    pub height: u32,
    /// Guest-physical (== physical) base of the rich VM's framebuffer.
    pub rich_framebuffer: u64,
    /// Base of the secure VM's private framebuffer.
    pub secure_framebuffer: u64,
}

/// Largest width or height of a [`Display`] in pixels.
pub const DISPLAY_MAX_SIDE: u32 = 4096;

impl Display {
    /// Bytes per row (4 bytes per XRGB8888 pixel).
    pub const fn stride(&self) -> u32 {
        self.width.saturating_mul(4)
    }

    /// Bytes of one framebuffer, rounded up to whole pages.
    pub const fn frame_size(&self) -> u64 {
        let bytes = self.stride() as u64 * self.height as u64;
        bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    /// The framebuffer of a VM of kind `kind`.
    pub const fn framebuffer(&self, kind: VmKind) -> MemRange {
        let base = match kind {
            VmKind::Rich => self.rich_framebuffer,
            VmKind::Secure => self.secure_framebuffer,
        };
        MemRange::new(base, self.frame_size())
    }
}

/// A reason a board description is refused. Every variant names the
/// offending entry so the build error points at the line to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionError<'a> {
    NoVms,
    TooManyVms {
        count: usize,
    },
    CpuCountOutOfRange {
        count: usize,
    },
    BadRange {
        what: &'a str,
        index: usize,
        range: MemRange,
    },
    MvmmOutsideRam {
        range: MemRange,
    },
    DuplicateVmName {
        name: &'a str,
    },
    DuplicateDeviceName {
        name: &'a str,
    },
    VmWithoutCpus {
        vm: &'a str,
    },
    VmWithoutRam {
        vm: &'a str,
    },
    CpuOutOfRange {
        vm: &'a str,
        cpu: usize,
    },
    CpuGivenTwice {
        cpu: usize,
        first: &'a str,
        second: &'a str,
    },
    RamOutsideBoard {
        vm: &'a str,
        index: usize,
        range: MemRange,
    },
    RamOverlapsMvmm {
        vm: &'a str,
        index: usize,
        range: MemRange,
    },
    RamOverlap {
        vm: &'a str,
        index: usize,
        other_vm: &'a str,
        other_index: usize,
        range: MemRange,
    },
    EntryOutsideRam {
        vm: &'a str,
        entry: u64,
    },
    DtbOutsideRam {
        vm: &'a str,
        dtb: u64,
    },
    VsockSlotInvalid {
        vm: &'a str,
    },
    VsockCidInvalid {
        vm: &'a str,
        cid: u32,
    },
    VsockShared {
        vm: &'a str,
        other: &'a str,
    },
    /// A VM's emulated input slot is not one virtio-mmio window with an
    /// SPI of its own, or lies where the VM has RAM or a device.
    InputSlotInvalid {
        vm: &'a str,
    },
    /// One of mvmm's input devices is not a slot no VM can reach, or its
    /// interrupt is taken by something else.
    InputDeviceReachable {
        slot: VirtioSlot,
    },
    /// A device mvmm drives itself (`name`: rpmb, entropy) is not one
    /// virtio-mmio slot, or lies in RAM or in a page a VM may map.
    MvmmSlotReachable {
        name: &'static str,
        range: MemRange,
    },
    ImageStoreInvalid {
        range: MemRange,
    },
    /// The board's display breaks a rule (`why` says which).
    /// A VM's emulated devices cannot form its device bus (they overlap
    /// each other or its RAM).
    BusInvalid {
        vm: &'a str,
        why: crate::bus::BusError,
    },
    DisplayInvalid {
        why: &'static str,
    },
    VsockRuleVm {
        rule: usize,
        vm: &'a str,
    },
    UnknownDevice {
        vm: &'a str,
        device: &'a str,
    },
    DeviceGivenTwice {
        device: &'a str,
        first: &'a str,
        second: &'a str,
    },
    NetworkInSecureVm {
        vm: &'a str,
        device: &'a str,
    },
    SecureStorageInRichVm {
        vm: &'a str,
        device: &'a str,
    },
    DeviceOverlap {
        device: &'a str,
        other: &'a str,
    },
    DeviceInRam {
        device: &'a str,
    },
    DeviceHidesUart {
        device: &'a str,
    },
    IrqOutOfRange {
        device: &'a str,
        irq: u32,
    },
    /// The DMA rule: a VM would own a device whose DMA no IOMMU confines.
    UnconfinedDma {
        vm: &'a str,
        device: &'a str,
    },
    /// A device is declared behind an SMMU the board does not have.
    DmaWithoutSmmu {
        device: &'a str,
    },
    /// A device's stream ids are empty, beyond [`MAX_STREAMS`] or shared.
    StreamIdsInvalid {
        device: &'a str,
        streams: StreamIds,
    },
    /// The SMMU's registers or interrupt are within a VM's reach.
    SmmuReachable {
        range: MemRange,
    },
    /// A PCIe host bridge's windows break a rule (`why` says which).
    PcieInvalid {
        device: &'a str,
        why: &'static str,
    },
    /// A secure VM would own a PCIe host bridge (a NIC can sit on it).
    PcieInSecureVm {
        vm: &'a str,
        device: &'a str,
    },
}

impl fmt::Display for PartitionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PartitionError::*;
        match *self {
            NoVms => write!(f, "the board declares no [[vm]]"),
            TooManyVms { count } => write!(
                f,
                "the board declares {count} VMs; at most {MAX_VMS} are supported"
            ),
            CpuCountOutOfRange { count } => {
                write!(f, "board cpus = {count}: must be between 1 and {MAX_CPUS}")
            }
            BadRange { what, index, range } => write!(
                f,
                "{what} range {index} ({range}) is empty, overflows, or is not {PAGE_SIZE}-byte aligned"
            ),
            MvmmOutsideRam { range } => {
                write!(f, "board mvmm range {range} is not inside board RAM")
            }
            DuplicateVmName { name } => write!(f, "vm '{name}' is declared twice"),
            DuplicateDeviceName { name } => write!(f, "device '{name}' is declared twice"),
            VmWithoutCpus { vm } => write!(f, "vm '{vm}' has no cpus"),
            VmWithoutRam { vm } => write!(f, "vm '{vm}' has no ram"),
            CpuOutOfRange { vm, cpu } => {
                write!(f, "vm '{vm}': cpu {cpu} does not exist on this board")
            }
            CpuGivenTwice { cpu, first, second } => {
                write!(
                    f,
                    "cpu {cpu} is given twice: to vm '{first}' and to vm '{second}'"
                )
            }
            RamOutsideBoard { vm, index, range } => {
                write!(
                    f,
                    "vm '{vm}' ram[{index}] {range} is outside the board's RAM"
                )
            }
            RamOverlapsMvmm { vm, index, range } => {
                write!(
                    f,
                    "vm '{vm}' ram[{index}] {range} overlaps the RAM reserved for mvmm"
                )
            }
            RamOverlap {
                vm,
                index,
                other_vm,
                other_index,
                range,
            } => write!(
                f,
                "vm '{vm}' ram[{index}] {range} overlaps vm '{other_vm}' ram[{other_index}]"
            ),
            EntryOutsideRam { vm, entry } => {
                write!(f, "vm '{vm}': entry {entry:#x} is not inside its ram")
            }
            DtbOutsideRam { vm, dtb } => {
                write!(f, "vm '{vm}': dtb {dtb:#x} is not inside its ram")
            }
            VsockSlotInvalid { vm } => write!(
                f,
                "vm '{vm}': its vsock slot must be one 0x200-byte virtio-mmio window with an SPI, \
                 away from RAM, the UART, the GIC and every passed-through device"
            ),
            VsockCidInvalid { vm, cid } => {
                write!(
                    f,
                    "vm '{vm}': vsock cid {cid} is reserved (cids 0..=2 are not VMs)"
                )
            }
            VsockShared { vm, other } => {
                write!(f, "vm '{vm}' and vm '{other}' have the same vsock cid")
            }
            InputSlotInvalid { vm } => write!(
                f,
                "vm '{vm}': its input slot must be one 0x200-byte virtio-mmio window with an SPI no other \
                 device of the board uses, away from RAM, the UART, the GIC and every passed-through device"
            ),
            InputDeviceReachable { slot } => write!(
                f,
                "board input device {} (irq {}) must be one virtio-mmio slot (0x200 bytes) outside RAM and every \
                 page a VM owns, with an SPI no other device uses (only mvmm may read the user's input)",
                slot.mmio, slot.irq
            ),
            MvmmSlotReachable { name, range } => write!(
                f,
                "board {name} {range} must be one virtio-mmio slot (0x200 bytes) outside RAM and outside every page a VM owns (the device is mvmm's own: no VM may reach it)"
            ),
            ImageStoreInvalid { range } => write!(
                f,
                "board image_store {range} must be aligned board RAM that neither mvmm's image nor any VM uses"
            ),
            DisplayInvalid { why } => write!(f, "board display: {why}"),
            BusInvalid { vm, why } => write!(f, "vm '{vm}': {why}"),
            VsockRuleVm { rule, vm } => write!(
                f,
                "vsock rule {rule} names vm '{vm}', which does not exist or has no vsock"
            ),
            UnknownDevice { vm, device } => {
                write!(
                    f,
                    "vm '{vm}' names device '{device}', which the board does not declare"
                )
            }
            DeviceGivenTwice {
                device,
                first,
                second,
            } => write!(
                f,
                "device '{device}' is given to two VMs: '{first}' and '{second}'"
            ),
            NetworkInSecureVm { vm, device } => write!(
                f,
                "vm '{vm}' is a secure VM and must not own network device '{device}'"
            ),
            SecureStorageInRichVm { vm, device } => write!(
                f,
                "vm '{vm}' is not a secure VM and must not own secure-storage device '{device}'"
            ),
            DeviceOverlap { device, other } => {
                write!(f, "device '{device}' overlaps device '{other}'")
            }
            DeviceInRam { device } => write!(f, "device '{device}' overlaps board RAM"),
            DeviceHidesUart { device } => write!(
                f,
                "device '{device}' overlaps the UART or GIC, which mvmm owns and no VM may be given"
            ),
            IrqOutOfRange { device, irq } => write!(
                f,
                "device '{device}': irq {irq} is not a shared peripheral interrupt (32..1020)"
            ),
            UnconfinedDma { vm, device } => write!(
                f,
                "vm '{vm}' must not own device '{device}': it does DMA that no IOMMU of the board confines \
                 (it could read and write every VM's and mvmm's memory); put it behind the board's smmu or give it to no VM"
            ),
            DmaWithoutSmmu { device } => write!(
                f,
                "device '{device}' declares SMMU stream ids but the board declares no smmu"
            ),
            StreamIdsInvalid { device, streams } => write!(
                f,
                "device '{device}': stream ids {}..{} must be a non-empty range below {MAX_STREAMS} that no other device uses",
                streams.first,
                streams.end()
            ),
            SmmuReachable { range } => write!(
                f,
                "board smmu {range} must be page aligned, outside RAM, the UART, the GIC and every device and vsock slot \
                 (no VM may map it), with an SPI event_irq that no device uses"
            ),
            PcieInvalid { device, why } => write!(f, "device '{device}': {why}"),
            PcieInSecureVm { vm, device } => write!(
                f,
                "vm '{vm}' is a secure VM and must not own PCIe host bridge '{device}' (a network card can sit on its bus)"
            ),
        }
    }
}

impl<'a> Board<'a> {
    /// Looks a board device up by name.
    pub fn device(&self, name: &str) -> Option<&Device<'a>> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// The VM that runs on physical CPU `cpu`, and its vCPU index there.
    pub fn vm_of_cpu(&self, cpu: usize) -> Option<(usize, usize)> {
        self.vms.iter().enumerate().find_map(|(vm_index, vm)| {
            vm.cpus
                .iter()
                .position(|&c| c == cpu)
                .map(|vcpu| (vm_index, vcpu))
        })
    }

    /// Checks every partition rule; the first violation is returned.
    pub fn validate(&self) -> Result<(), PartitionError<'a>> {
        use PartitionError::*;
        if self.cpu_count == 0 || self.cpu_count > MAX_CPUS {
            return Err(CpuCountOutOfRange {
                count: self.cpu_count,
            });
        }
        for (what, range) in [("board ram", self.ram), ("board mvmm", self.mvmm)] {
            if !range.well_formed() {
                return Err(BadRange {
                    what,
                    index: 0,
                    range,
                });
            }
        }
        if !self.ram.contains_range(self.mvmm.base, self.mvmm.size) {
            return Err(MvmmOutsideRam { range: self.mvmm });
        }
        self.validate_devices()?;
        if self.vms.is_empty() {
            return Err(NoVms);
        }
        if self.vms.len() > MAX_VMS {
            return Err(TooManyVms {
                count: self.vms.len(),
            });
        }
        for (i, vm) in self.vms.iter().enumerate() {
            self.validate_vm(vm)?;
            for earlier in &self.vms[..i] {
                self.validate_pair(earlier, vm)?;
            }
        }
        if let Some(store) = self.image_store {
            let used = self
                .vms
                .iter()
                .flat_map(|vm| vm.ram.iter())
                .any(|r| r.overlaps(&store));
            if !store.well_formed()
                || !self.ram.contains_range(store.base, store.size)
                || store.overlaps(&self.mvmm)
                || used
            {
                return Err(ImageStoreInvalid { range: store });
            }
        }
        self.validate_vsock()?;
        let own = [("rpmb", self.rpmb), ("entropy", self.entropy)];
        for (name, slot) in own {
            let Some(range) = slot else { continue };
            let page = MemRange::new(range.base & !0xfff, 0x1000);
            let reachable = self.ram.overlaps(&range)
                || self.devices.iter().any(|d| d.mmio.overlaps(&page))
                || self
                    .vms
                    .iter()
                    .any(|vm| vm.vsock.is_some_and(|v| v.mmio.overlaps(&range)))
                || own
                    .iter()
                    .any(|&(other, r)| other != name && r.is_some_and(|r| r.overlaps(&range)));
            let is_slot = range.size == 0x200
                && range.base.is_multiple_of(0x200)
                && range.base.checked_add(range.size).is_some();
            if !is_slot || reachable {
                return Err(MvmmSlotReachable { name, range });
            }
        }
        self.validate_input()?;
        if let Some(smmu) = self.smmu {
            self.validate_smmu(&smmu)?;
        }
        if let Some(display) = self.display {
            self.validate_display(&display)
                .map_err(|why| DisplayInvalid { why })?;
        }
        for vm in self.vms {
            crate::bus::Bus::for_vm(self, vm).map_err(|why| BusInvalid { vm: vm.name, why })?;
        }
        Ok(())
    }

    /// The SMMU: registers no VM can map, an interrupt no device raises.
    fn validate_smmu(&self, smmu: &Smmu) -> Result<(), PartitionError<'a>> {
        let m = smmu.mmio;
        let reachable = self.ram.overlaps(&m)
            || [
                self.uart.mmio,
                self.gic.distributor,
                self.gic.redistributors,
            ]
            .iter()
            .any(|r| r.overlaps(&m))
            || self.devices.iter().any(|d| d.mmio.overlaps(&m))
            || self.vms.iter().any(|vm| {
                vm.vsock
                    .is_some_and(|v| v.mmio.overlaps(&m) || v.irq == smmu.event_irq)
            })
            || self.rpmb.is_some_and(|r| r.overlaps(&m))
            || self.display.is_some_and(|d| d.fw_cfg.overlaps(&m));
        let irq_clash = !(32..1020).contains(&smmu.event_irq)
            || smmu.event_irq == self.uart.irq
            || self
                .devices
                .iter()
                .any(|d| d.irqs.contains(&smmu.event_irq));
        if !m.well_formed() || reachable || irq_clash {
            return Err(PartitionError::SmmuReachable { range: m });
        }
        Ok(())
    }

    /// The VM that owns the device whose DMA carries stream id `stream`,
    /// and that device.
    pub fn stream_owner(&self, stream: u32) -> Option<(usize, &Device<'a>)> {
        self.vms.iter().enumerate().find_map(|(i, vm)| {
            vm.devices
                .iter()
                .filter_map(|name| self.device(name))
                .find(|d| matches!(d.dma, Dma::Smmu { streams } if streams.contains(stream)))
                .map(|d| (i, d))
        })
    }

    /// The display: fw_cfg out of every VM's reach, each framebuffer inside
    /// the RAM of a VM of its kind.
    fn validate_display(&self, display: &Display) -> Result<(), &'static str> {
        let fw_cfg = display.fw_cfg;
        if !fw_cfg.well_formed() {
            return Err("fw_cfg must be a page-aligned range");
        }
        let reachable = self.ram.overlaps(&fw_cfg)
            || [
                self.uart.mmio,
                self.gic.distributor,
                self.gic.redistributors,
            ]
            .iter()
            .any(|r| r.overlaps(&fw_cfg))
            || self.devices.iter().any(|d| d.mmio.overlaps(&fw_cfg))
            || self
                .vms
                .iter()
                .any(|vm| vm.vsock.is_some_and(|v| v.mmio.overlaps(&fw_cfg)))
            || self.rpmb.is_some_and(|r| r.overlaps(&fw_cfg))
            || self.entropy.is_some_and(|r| r.overlaps(&fw_cfg));
        if reachable {
            return Err(
                "fw_cfg must lie outside RAM and every device (its DMA reaches all memory: no VM may own it)",
            );
        }
        if !(1..=DISPLAY_MAX_SIDE).contains(&display.width)
            || !(1..=DISPLAY_MAX_SIDE).contains(&display.height)
        {
            return Err("width and height must be 1..=4096 pixels");
        }
        for (kind, what) in [
            (
                VmKind::Rich,
                "the rich framebuffer must lie in the rich VM's RAM, page aligned, clear of its entry and device tree",
            ),
            (
                VmKind::Secure,
                "the secure framebuffer must lie in the secure VM's RAM, page aligned, clear of its entry and device tree",
            ),
        ] {
            let frame = display.framebuffer(kind);
            let placed = frame.base.is_multiple_of(PAGE_SIZE)
                && self.vms.iter().any(|vm| {
                    vm.kind == kind
                        && vm
                            .ram
                            .iter()
                            .any(|r| r.contains_range(frame.base, frame.size))
                        && !frame.contains(vm.entry)
                        && !(vm.boot_arg != 0 && frame.contains(vm.boot_arg))
                });
            if !placed {
                return Err(what);
            }
        }
        Ok(())
    }

    /// The trusted path's input: mvmm's devices are slots no VM can reach
    /// with interrupts of their own; each VM's emulated device is a slot of
    /// its own away from everything it owns.
    fn validate_input(&self) -> Result<(), PartitionError<'a>> {
        use PartitionError::*;
        let device_irq = |irq: u32| {
            irq == self.uart.irq
                || self.devices.iter().any(|d| d.irqs.contains(&irq))
                || self.smmu.is_some_and(|s| s.event_irq == irq)
        };
        let vm_irq = |irq: u32| {
            self.vms.iter().any(|vm| {
                vm.vsock.is_some_and(|v| v.irq == irq) || vm.input.is_some_and(|v| v.irq == irq)
            })
        };
        for (i, slot) in self.input.iter().enumerate() {
            let m = slot.mmio;
            let page = MemRange::new(m.base & !0xfff, 0x1000);
            let reachable = self.ram.overlaps(&m)
                || self.devices.iter().any(|d| d.mmio.overlaps(&page))
                || self.vms.iter().any(|vm| {
                    vm.vsock.is_some_and(|v| v.mmio.overlaps(&m))
                        || vm.input.is_some_and(|v| v.mmio.overlaps(&m))
                })
                || [self.rpmb, self.entropy]
                    .iter()
                    .flatten()
                    .any(|r| r.overlaps(&m))
                || self.input[..i]
                    .iter()
                    .any(|o| o.mmio.overlaps(&m) || o.irq == slot.irq);
            if !slot.well_formed() || reachable || device_irq(slot.irq) || vm_irq(slot.irq) {
                return Err(InputDeviceReachable { slot: *slot });
            }
        }
        for vm in self.vms {
            let Some(slot) = vm.input else { continue };
            let m = slot.mmio;
            let clashes = [
                self.ram,
                self.uart.mmio,
                self.gic.distributor,
                self.gic.redistributors,
            ]
            .iter()
            .any(|r| r.overlaps(&m))
                || self.devices.iter().any(|d| d.mmio.overlaps(&m))
                || vm
                    .vsock
                    .is_some_and(|v| v.mmio.overlaps(&m) || v.irq == slot.irq);
            if !slot.well_formed() || clashes || device_irq(slot.irq) {
                return Err(InputSlotInvalid { vm: vm.name });
            }
        }
        Ok(())
    }

    /// The VMM channel: well-placed slots, distinct cids, rules that name
    /// VMs with a slot.
    fn validate_vsock(&self) -> Result<(), PartitionError<'a>> {
        use PartitionError::*;
        let owned = [
            self.ram,
            self.uart.mmio,
            self.gic.distributor,
            self.gic.redistributors,
        ];
        for (i, vm) in self.vms.iter().enumerate() {
            let Some(slot) = vm.vsock else { continue };
            let m = slot.mmio;
            let well_formed = m.size == VIRTIO_MMIO_SLOT
                && m.base % VIRTIO_MMIO_SLOT == 0
                && m.base.checked_add(m.size).is_some()
                && (32..1020).contains(&slot.irq);
            let clashes = owned.iter().any(|r| r.overlaps(&m))
                || self.devices.iter().any(|d| d.mmio.overlaps(&m));
            if !well_formed || clashes {
                return Err(VsockSlotInvalid { vm: vm.name });
            }
            if slot.cid <= mvmm_abi::vsock::HOST_CID {
                return Err(VsockCidInvalid {
                    vm: vm.name,
                    cid: slot.cid,
                });
            }
            if let Some(other) = self.vms[..i]
                .iter()
                .find(|o| o.vsock.is_some_and(|o| o.cid == slot.cid))
            {
                return Err(VsockShared {
                    vm: vm.name,
                    other: other.name,
                });
            }
            let device_irq = self.devices.iter().any(|d| d.irqs.contains(&slot.irq));
            if device_irq || slot.irq == self.uart.irq {
                return Err(VsockSlotInvalid { vm: vm.name });
            }
        }
        for (rule, r) in self.vsock_rules.iter().enumerate() {
            for name in [r.from, r.to] {
                if !self
                    .vms
                    .iter()
                    .any(|vm| vm.name == name && vm.vsock.is_some())
                {
                    return Err(VsockRuleVm { rule, vm: name });
                }
            }
        }
        Ok(())
    }

    fn validate_devices(&self) -> Result<(), PartitionError<'a>> {
        use PartitionError::*;
        let owned_by_mvmm = [
            self.uart.mmio,
            self.gic.distributor,
            self.gic.redistributors,
        ];
        for (i, dev) in self.devices.iter().enumerate() {
            if !dev.mmio.well_formed() {
                return Err(BadRange {
                    what: dev.name,
                    index: 0,
                    range: dev.mmio,
                });
            }
            if dev.mmio.overlaps(&self.ram) {
                return Err(DeviceInRam { device: dev.name });
            }
            if owned_by_mvmm.iter().any(|r| r.overlaps(&dev.mmio)) {
                return Err(DeviceHidesUart { device: dev.name });
            }
            if let Some(&irq) = dev.irqs.iter().find(|&&irq| !(32..1020).contains(&irq)) {
                return Err(IrqOutOfRange {
                    device: dev.name,
                    irq,
                });
            }
            if let Some(why) = pcie_problem(dev) {
                return Err(PcieInvalid {
                    device: dev.name,
                    why,
                });
            }
            if let Dma::Smmu { streams } = dev.dma {
                if self.smmu.is_none() {
                    return Err(DmaWithoutSmmu { device: dev.name });
                }
                let shared = self.devices[..i].iter().any(
                    |o| matches!(o.dma, Dma::Smmu { streams: other } if other.overlaps(&streams)),
                );
                if streams.count == 0 || streams.end() > MAX_STREAMS || shared {
                    return Err(StreamIdsInvalid {
                        device: dev.name,
                        streams,
                    });
                }
            }
            for other in &self.devices[..i] {
                if other.name == dev.name {
                    return Err(DuplicateDeviceName { name: dev.name });
                }
                if other.mmio.overlaps(&dev.mmio) {
                    return Err(DeviceOverlap {
                        device: dev.name,
                        other: other.name,
                    });
                }
            }
        }
        Ok(())
    }

    fn validate_vm(&self, vm: &Vm<'a>) -> Result<(), PartitionError<'a>> {
        use PartitionError::*;
        if vm.cpus.is_empty() {
            return Err(VmWithoutCpus { vm: vm.name });
        }
        if vm.ram.is_empty() {
            return Err(VmWithoutRam { vm: vm.name });
        }
        for (j, &cpu) in vm.cpus.iter().enumerate() {
            if cpu >= self.cpu_count {
                return Err(CpuOutOfRange { vm: vm.name, cpu });
            }
            if vm.cpus[..j].contains(&cpu) {
                return Err(CpuGivenTwice {
                    cpu,
                    first: vm.name,
                    second: vm.name,
                });
            }
        }
        for (index, range) in vm.ram.iter().enumerate() {
            if !range.well_formed() {
                return Err(BadRange {
                    what: vm.name,
                    index,
                    range: *range,
                });
            }
            if !self.ram.contains_range(range.base, range.size) {
                return Err(RamOutsideBoard {
                    vm: vm.name,
                    index,
                    range: *range,
                });
            }
            if range.overlaps(&self.mvmm) {
                return Err(RamOverlapsMvmm {
                    vm: vm.name,
                    index,
                    range: *range,
                });
            }
            if let Some(other_index) = vm.ram[..index].iter().position(|r| r.overlaps(range)) {
                return Err(RamOverlap {
                    vm: vm.name,
                    index,
                    other_vm: vm.name,
                    other_index,
                    range: *range,
                });
            }
        }
        if !vm.ram.iter().any(|r| r.contains(vm.entry)) {
            return Err(EntryOutsideRam {
                vm: vm.name,
                entry: vm.entry,
            });
        }
        for (j, &name) in vm.devices.iter().enumerate() {
            let Some(dev) = self.device(name) else {
                return Err(UnknownDevice {
                    vm: vm.name,
                    device: name,
                });
            };
            if vm.devices[..j].contains(&name) {
                return Err(DeviceGivenTwice {
                    device: name,
                    first: vm.name,
                    second: vm.name,
                });
            }
            if vm.kind == VmKind::Secure && dev.class == DeviceClass::Network {
                return Err(NetworkInSecureVm {
                    vm: vm.name,
                    device: name,
                });
            }
            if vm.kind == VmKind::Secure && dev.class == DeviceClass::PcieHost {
                return Err(PcieInSecureVm {
                    vm: vm.name,
                    device: name,
                });
            }
            // The DMA rule: no exemptions.
            if dev.dma == Dma::Unconfined {
                return Err(UnconfinedDma {
                    vm: vm.name,
                    device: name,
                });
            }
            if vm.kind != VmKind::Secure && dev.class == DeviceClass::SecureStorage {
                return Err(SecureStorageInRichVm {
                    vm: vm.name,
                    device: name,
                });
            }
        }
        Ok(())
    }

    /// Rules between two distinct VMs: nothing may be shared.
    fn validate_pair(&self, first: &Vm<'a>, second: &Vm<'a>) -> Result<(), PartitionError<'a>> {
        use PartitionError::*;
        if first.name == second.name {
            return Err(DuplicateVmName { name: second.name });
        }
        if let Some(&cpu) = second.cpus.iter().find(|c| first.cpus.contains(c)) {
            return Err(CpuGivenTwice {
                cpu,
                first: first.name,
                second: second.name,
            });
        }
        for (index, range) in second.ram.iter().enumerate() {
            if let Some(other_index) = first.ram.iter().position(|r| r.overlaps(range)) {
                return Err(RamOverlap {
                    vm: second.name,
                    index,
                    other_vm: first.name,
                    other_index,
                    range: *range,
                });
            }
        }
        if let Some(&device) = second.devices.iter().find(|d| first.devices.contains(d)) {
            return Err(DeviceGivenTwice {
                device,
                first: first.name,
                second: second.name,
            });
        }
        Ok(())
    }
}

/// What is wrong with a device's PCIe windows, if anything: a PCIe host
/// has them (and only it), each inside the device's range, page aligned,
/// none overlapping another, ECAM a whole number of 1 MiB buses.
fn pcie_problem(dev: &Device<'_>) -> Option<&'static str> {
    match (dev.class, dev.pcie) {
        (DeviceClass::PcieHost, None) => {
            Some("a pcie-host device needs its pcie windows (ecam, mmio, io)")
        }
        (DeviceClass::PcieHost, Some(p)) => {
            let windows = [p.ecam, p.mmio, p.io];
            if windows
                .iter()
                .any(|w| !w.well_formed() || !dev.mmio.contains_range(w.base, w.size))
            {
                return Some("its pcie windows must be page aligned and inside the device's range");
            }
            if p.ecam.overlaps(&p.mmio) || p.ecam.overlaps(&p.io) || p.mmio.overlaps(&p.io) {
                return Some("its pcie windows (ecam, mmio, io) overlap");
            }
            if !p.ecam.size.is_multiple_of(1 << 20) {
                return Some("its ecam window must be a whole number of 1 MiB buses");
            }
            if dev.irqs.len() != 4 {
                return Some(
                    "a pcie host raises four INTx interrupts (INTA..INTD): give four irqs",
                );
            }
            if dev.dma == Dma::None {
                return Some("the devices on a PCIe bus do DMA: declare its stream ids");
            }
            None
        }
        (_, Some(_)) => Some("only a pcie-host device has pcie windows"),
        (_, None) => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const DEVICES: &[Device<'static>] = &[
        Device {
            name: "rtc",
            class: DeviceClass::Rtc,
            mmio: MemRange::new(0x0901_0000, 0x1000),
            irqs: &[34],
            dma: Dma::None,
            pcie: None,
        },
        // A NIC whose DMA the SMMU confines (stream ids 8..16).
        Device {
            name: "net0",
            class: DeviceClass::Network,
            mmio: MemRange::new(0x0a00_3000, 0x1000),
            irqs: &[79],
            dma: Dma::Smmu {
                streams: StreamIds { first: 8, count: 8 },
            },
            pcie: None,
        },
    ];

    pub const VMS: &[Vm<'static>] = &[
        Vm {
            name: "rich",
            kind: VmKind::Rich,
            vmid: 1,
            cpus: &[0, 1],
            ram: &[MemRange::new(0x5000_0000, 0x3000_0000)],
            devices: &["rtc", "net0"],
            entry: 0x5000_0000,
            boot_arg: 0x5600_0000,
            vsock: Some(VsockSlot {
                cid: mvmm_abi::vsock::RICH_VM_CID,
                mmio: MemRange::new(0x0a00_0000, 0x200),
                irq: 48,
            }),
            input: None,
        },
        Vm {
            name: "secure",
            kind: VmKind::Secure,
            vmid: 2,
            cpus: &[2],
            ram: &[MemRange::new(0x4100_0000, 0x0200_0000)],
            devices: &[],
            entry: 0x4100_0000,
            boot_arg: 0,
            vsock: Some(VsockSlot {
                cid: mvmm_abi::vsock::SECURE_VM_CID,
                mmio: MemRange::new(0x0a00_0000, 0x200),
                irq: 48,
            }),
            input: None,
        },
    ];

    pub const BOARD: Board<'static> = Board {
        name: "test",
        cpu_count: 3,
        ram: MemRange::new(0x4000_0000, 0x4000_0000),
        mvmm: MemRange::new(0x4000_0000, 0x0100_0000),
        uart: Uart {
            mmio: MemRange::new(0x0900_0000, 0x1000),
            irq: 33,
        },
        gic: Gic {
            distributor: MemRange::new(0x0800_0000, 0x1_0000),
            redistributors: MemRange::new(0x080a_0000, 0x6_0000),
            redistributor_stride: 0x2_0000,
        },
        devices: DEVICES,
        vms: VMS,
        vsock_rules: &[VsockRule {
            from: "rich",
            to: "secure",
            port: mvmm_abi::vsock::PAYMENT_PORT,
        }],
        image_store: Some(MemRange::new(0x4300_0000, 0x0d00_0000)),
        rpmb: Some(MemRange::new(0x0a00_0200, 0x200)),
        entropy: None,
        display: Some(Display {
            fw_cfg: MemRange::new(0x0902_0000, 0x1000),
            width: 800,
            height: 480,
            rich_framebuffer: 0x7f00_0000,
            secure_framebuffer: 0x42e0_0000,
        }),
        smmu: Some(Smmu {
            mmio: MemRange::new(0x0905_0000, 0x2_0000),
            event_irq: 106,
        }),
        input: &[],
    };

    fn with_vms<'a>(vms: &'a [Vm<'a>]) -> Result<(), String> {
        Board { vms, ..BOARD }.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn the_reference_board_is_valid() {
        assert_eq!(BOARD.validate(), Ok(()));
        assert_eq!(BOARD.vm_of_cpu(1), Some((0, 1)));
        assert_eq!(BOARD.vm_of_cpu(2), Some((1, 0)));
        assert_eq!(BOARD.vm_of_cpu(7), None);
    }

    #[test]
    fn overlapping_ram_names_both_vms() {
        let secure = Vm {
            ram: &[MemRange::new(0x5100_0000, 0x1000)],
            entry: 0x5100_0000,
            ..VMS[1]
        };
        let err = with_vms(&[VMS[0], secure]).unwrap_err();
        assert_eq!(
            err,
            "vm 'secure' ram[0] 0x51000000..0x51001000 overlaps vm 'rich' ram[0]"
        );
    }

    #[test]
    fn ram_over_mvmm_or_outside_the_board_is_refused() {
        let over = Vm {
            ram: &[MemRange::new(0x40f0_0000, 0x20_0000)],
            entry: 0x4100_0000,
            ..VMS[1]
        };
        assert!(
            with_vms(&[VMS[0], over])
                .unwrap_err()
                .contains("overlaps the RAM reserved for mvmm")
        );
        let outside = Vm {
            ram: &[MemRange::new(0x8000_0000, 0x1000)],
            entry: 0x8000_0000,
            ..VMS[1]
        };
        assert!(
            with_vms(&[VMS[0], outside])
                .unwrap_err()
                .contains("'secure' ram[0] 0x80000000..0x80001000 is outside")
        );
    }

    #[test]
    fn unaligned_empty_and_wrapping_ranges_are_refused() {
        for range in [
            MemRange::new(0x4100_0800, 0x1000),
            MemRange::new(0x4100_0000, 0),
            MemRange::new(0x4100_0000, 0x1800),
            MemRange::new(u64::MAX - 0xfff, 0x2000),
        ] {
            let vm = Vm {
                ram: core::slice::from_ref(Box::leak(Box::new(range))),
                ..VMS[1]
            };
            let err = with_vms(&[VMS[0], vm]).unwrap_err();
            assert!(err.starts_with("secure range 0"), "{err}");
        }
    }

    #[test]
    fn a_device_given_to_two_vms_is_refused() {
        let secure = Vm {
            devices: &["rtc"],
            ..VMS[1]
        };
        assert_eq!(
            with_vms(&[VMS[0], secure]).unwrap_err(),
            "device 'rtc' is given to two VMs: 'rich' and 'secure'"
        );
    }

    #[test]
    fn a_network_device_in_the_secure_vm_is_refused() {
        let rich = Vm {
            devices: &["rtc"],
            ..VMS[0]
        };
        let secure = Vm {
            devices: &["net0"],
            ..VMS[1]
        };
        assert_eq!(
            with_vms(&[rich, secure]).unwrap_err(),
            "vm 'secure' is a secure VM and must not own network device 'net0'"
        );
    }

    #[test]
    fn secure_storage_belongs_to_a_secure_vm_only() {
        let devices: &'static [Device<'static>] = Box::leak(Box::new([
            DEVICES[0],
            DEVICES[1],
            Device {
                name: "flash1",
                class: DeviceClass::SecureStorage,
                mmio: MemRange::new(0x0400_0000, 0x0400_0000),
                irqs: &[],
                dma: Dma::None,
                pcie: None,
            },
        ]));
        let with = |rich: &'static [&'static str], secure: &'static [&'static str]| {
            let vms: &'static [Vm<'static>] = Box::leak(Box::new([
                Vm {
                    devices: rich,
                    ..VMS[0]
                },
                Vm {
                    devices: secure,
                    ..VMS[1]
                },
            ]));
            Board {
                devices,
                vms,
                ..BOARD
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        assert_eq!(with(&["rtc", "net0"], &["flash1"]), Ok(()));
        assert_eq!(
            with(&["rtc", "net0", "flash1"], &[]).unwrap_err(),
            "vm 'rich' is not a secure VM and must not own secure-storage device 'flash1'"
        );
        assert_eq!(
            DeviceClass::from_name("secure-storage"),
            Some(DeviceClass::SecureStorage)
        );
        assert_eq!(DeviceClass::SecureStorage.name(), "secure-storage");
    }

    #[test]
    fn a_cpu_given_twice_is_refused() {
        let secure = Vm {
            cpus: &[1],
            ..VMS[1]
        };
        assert_eq!(
            with_vms(&[VMS[0], secure]).unwrap_err(),
            "cpu 1 is given twice: to vm 'rich' and to vm 'secure'"
        );
        let twice_in_one = Vm {
            cpus: &[2, 2],
            ..VMS[1]
        };
        assert!(
            with_vms(&[VMS[0], twice_in_one])
                .unwrap_err()
                .starts_with("cpu 2 is given twice")
        );
        let missing = Vm {
            cpus: &[5],
            ..VMS[1]
        };
        assert_eq!(
            with_vms(&[VMS[0], missing]).unwrap_err(),
            "vm 'secure': cpu 5 does not exist on this board"
        );
        let none = Vm {
            cpus: &[],
            ..VMS[1]
        };
        assert_eq!(
            with_vms(&[VMS[0], none]).unwrap_err(),
            "vm 'secure' has no cpus"
        );
    }

    #[test]
    fn unknown_devices_entries_and_names_are_refused() {
        let secure = Vm {
            devices: &["gpu9"],
            ..VMS[1]
        };
        assert_eq!(
            with_vms(&[VMS[0], secure]).unwrap_err(),
            "vm 'secure' names device 'gpu9', which the board does not declare"
        );
        let secure = Vm {
            entry: 0x5000_0000,
            ..VMS[1]
        };
        assert_eq!(
            with_vms(&[VMS[0], secure]).unwrap_err(),
            "vm 'secure': entry 0x50000000 is not inside its ram"
        );
        let again = Vm {
            name: "rich",
            ..VMS[1]
        };
        assert_eq!(
            with_vms(&[VMS[0], again]).unwrap_err(),
            "vm 'rich' is declared twice"
        );
        assert_eq!(with_vms(&[]).unwrap_err(), "the board declares no [[vm]]");
    }

    #[test]
    fn the_image_store_must_be_ram_nobody_else_uses() {
        let with = |store| {
            Board {
                image_store: Some(store),
                ..BOARD
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        assert_eq!(with(MemRange::new(0x4300_0000, 0x0d00_0000)), Ok(()));
        for bad in [
            MemRange::new(0x4200_0000, 0x0200_0000), // the secure VM's RAM
            MemRange::new(0x4080_0000, 0x0100_0000), // mvmm's image
            MemRange::new(0x7f00_0000, 0x0200_0000), // past board RAM (and rich RAM)
            MemRange::new(0x4300_0800, 0x1000),      // unaligned
        ] {
            assert!(with(bad).unwrap_err().contains("image_store"), "{bad}");
        }
    }

    #[test]
    fn fw_cfg_and_the_framebuffers_are_checked() {
        let good = BOARD.display.unwrap();
        let with = |display: Display| {
            Board {
                display: Some(display),
                ..BOARD
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        assert_eq!(with(good), Ok(()));
        assert_eq!(good.frame_size(), 0x17_7000);
        let bad = [
            // fw_cfg in a page a VM owns, in RAM, unaligned.
            Display {
                fw_cfg: MemRange::new(0x0901_0000, 0x1000),
                ..good
            },
            Display {
                fw_cfg: MemRange::new(0x4200_0000, 0x1000),
                ..good
            },
            Display {
                fw_cfg: MemRange::new(0x0902_0008, 0x1000),
                ..good
            },
            // The secure framebuffer in the rich VM's RAM, and the reverse.
            Display {
                secure_framebuffer: 0x7e00_0000,
                ..good
            },
            Display {
                rich_framebuffer: 0x42e0_0000,
                ..good
            },
            // Past the end of the secure VM's RAM; over its entry.
            Display {
                secure_framebuffer: 0x42f0_0000,
                ..good
            },
            Display {
                secure_framebuffer: 0x4100_0000,
                ..good
            },
            Display {
                secure_framebuffer: 0x42e0_0800,
                ..good
            },
            Display { width: 0, ..good },
            Display {
                height: 5000,
                ..good
            },
        ];
        for display in bad {
            let err = with(display).unwrap_err();
            assert!(err.starts_with("board display: "), "{display:?}: {err}");
        }
    }

    #[test]
    fn mvmms_disk_must_be_unreachable_from_every_vm() {
        let with = |rpmb| {
            Board {
                rpmb: Some(rpmb),
                ..BOARD
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        assert_eq!(with(MemRange::new(0x0a00_0200, 0x200)), Ok(()));
        for bad in [
            // The vsock slot a VM talks to, a page a VM owns, RAM, not a slot.
            MemRange::new(0x0a00_0000, 0x200),
            MemRange::new(0x0a00_3000, 0x200),
            MemRange::new(0x4100_0000, 0x200),
            MemRange::new(0x0a00_0200, 0x100),
        ] {
            assert!(with(bad).unwrap_err().contains("board rpmb"), "{bad}");
        }
    }

    #[test]
    fn input_devices_are_mvmms_alone_and_each_vms_input_slot_is_its_own() {
        let slot = |base, irq| VirtioSlot {
            mmio: MemRange::new(base, 0x200),
            irq,
        };
        let physical = |input: &'static [VirtioSlot]| {
            Board { input, ..BOARD }
                .validate()
                .map_err(|e| e.to_string())
        };
        static GOOD: [VirtioSlot; 2] = [
            VirtioSlot {
                mmio: MemRange::new(0x0a00_2200, 0x200),
                irq: 65,
            },
            VirtioSlot {
                mmio: MemRange::new(0x0a00_2400, 0x200),
                irq: 66,
            },
        ];
        assert_eq!(physical(&GOOD), Ok(()));
        let bad: [&'static [VirtioSlot]; 7] = [
            // The vsock slot, a page a VM owns (rtc's), RAM, not a slot,
            // the UART's interrupt, the vsock interrupt, two slots sharing
            // one interrupt.
            Box::leak(Box::new([slot(0x0a00_0000, 65)])),
            Box::leak(Box::new([slot(0x0901_0200, 65)])),
            Box::leak(Box::new([slot(0x4100_0000, 65)])),
            Box::leak(Box::new([VirtioSlot {
                mmio: MemRange::new(0x0a00_2200, 0x1000),
                irq: 65,
            }])),
            Box::leak(Box::new([slot(0x0a00_2200, 33)])),
            Box::leak(Box::new([slot(0x0a00_2200, 48)])),
            Box::leak(Box::new([slot(0x0a00_2200, 65), slot(0x0a00_2400, 65)])),
        ];
        for input in bad {
            let err = physical(input).unwrap_err();
            assert!(err.contains("board input device"), "{input:?}: {err}");
        }
        // A VM's own slot: fine away from its vsock slot; refused on it, in
        // its RAM, or on a passed-through device's interrupt.
        let emulated = |input| {
            let vms: &'static [Vm<'static>] = Box::leak(Box::new([Vm { input, ..VMS[0] }, VMS[1]]));
            Board { vms, ..BOARD }.validate().map_err(|e| e.to_string())
        };
        assert_eq!(emulated(Some(slot(0x0a00_0400, 50))), Ok(()));
        for bad in [
            slot(0x0a00_0000, 50),
            slot(0x5000_0000, 50),
            slot(0x0a00_0400, 48),
            slot(0x0a00_0400, 34),
        ] {
            let err = emulated(Some(bad)).unwrap_err();
            assert!(err.contains("its input slot"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn mvmms_entropy_device_must_be_unreachable_from_every_vm() {
        let with = |entropy| {
            Board {
                entropy: Some(entropy),
                ..BOARD
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        assert_eq!(with(MemRange::new(0x0a00_0400, 0x200)), Ok(()));
        for bad in [
            // mvmm's disk, the vsock slot, a page a VM owns, RAM, not a slot.
            MemRange::new(0x0a00_0200, 0x200),
            MemRange::new(0x0a00_0000, 0x200),
            MemRange::new(0x0a00_3000, 0x200),
            MemRange::new(0x4100_0000, 0x200),
            MemRange::new(0x0a00_0400, 0x1000),
        ] {
            let err = with(bad).unwrap_err();
            assert!(
                err.contains("board entropy") || err.contains("board rpmb"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn vsock_slots_and_rules_are_checked() {
        let slot = |cid, base, irq| {
            Some(VsockSlot {
                cid,
                mmio: MemRange::new(base, 0x200),
                irq,
            })
        };
        let with = |rich: Option<VsockSlot>, rules: &'static [VsockRule<'static>]| {
            let vms: &'static [Vm<'static>] = Box::leak(Box::new([
                Vm {
                    vsock: rich,
                    ..VMS[0]
                },
                VMS[1],
            ]));
            Board {
                vms,
                vsock_rules: rules,
                ..BOARD
            }
            .validate()
            .map_err(|e| e.to_string())
        };
        assert_eq!(with(slot(3, 0x0a00_0000, 48), BOARD.vsock_rules), Ok(()));
        assert_eq!(
            with(slot(4, 0x0a00_0000, 48), BOARD.vsock_rules).unwrap_err(),
            "vm 'secure' and vm 'rich' have the same vsock cid"
        );
        assert!(
            with(slot(2, 0x0a00_0000, 48), &[])
                .unwrap_err()
                .contains("vsock cid 2 is reserved")
        );
        for bad in [
            slot(3, 0x0a00_3000, 48),
            slot(3, 0x0a00_0100, 48),
            slot(3, 0x0a00_0000, 20),
            slot(3, 0x0a00_0000, 79),
        ] {
            assert!(
                with(bad, &[]).unwrap_err().contains("vsock slot must be"),
                "{bad:?}"
            );
        }
        assert_eq!(
            with(None, BOARD.vsock_rules).unwrap_err(),
            "vsock rule 0 names vm 'rich', which does not exist or has no vsock"
        );
        assert!(
            with(
                slot(3, 0x0a00_0000, 48),
                &[VsockRule {
                    from: "rich",
                    to: "tee",
                    port: 1
                }]
            )
            .unwrap_err()
            .contains("'tee'")
        );
    }

    #[test]
    fn devices_must_not_overlap_ram_mvmm_hardware_or_each_other() {
        let bad = |dev: Device<'static>| {
            let devices: &'static [Device<'static>] = Box::leak(Box::new([DEVICES[0], dev]));
            Board { devices, ..BOARD }
                .validate()
                .map_err(|e| e.to_string())
                .unwrap_err()
        };
        let d = |base: u64| Device {
            name: "x",
            class: DeviceClass::Other,
            mmio: MemRange::new(base, 0x1000),
            irqs: &[],
            dma: Dma::None,
            pcie: None,
        };
        assert_eq!(bad(d(0x4000_0000)), "device 'x' overlaps board RAM");
        assert!(bad(d(0x0900_0000)).starts_with("device 'x' overlaps the UART or GIC"));
        assert!(bad(d(0x0800_0000)).starts_with("device 'x' overlaps the UART or GIC"));
        assert_eq!(bad(d(0x0901_0000)), "device 'x' overlaps device 'rtc'");
        assert_eq!(
            bad(Device {
                name: "rtc",
                ..d(0x0a00_0000)
            }),
            "device 'rtc' is declared twice"
        );
        assert_eq!(
            bad(Device {
                irqs: &[27],
                ..d(0x0a00_0000)
            }),
            "device 'x': irq 27 is not a shared peripheral interrupt (32..1020)"
        );
    }

    /// The board of [`BOARD`] with `devices`, the rich VM owning `rich` and
    /// the secure VM `secure`; the error text when it is refused.
    fn board_with(
        devices: &[Device<'static>],
        rich: &'static [&'static str],
        secure: &'static [&'static str],
        smmu: Option<Smmu>,
    ) -> Result<(), String> {
        let devices: &'static [Device<'static>] = Box::leak(devices.to_vec().into_boxed_slice());
        let vms: &'static [Vm<'static>] = Box::leak(Box::new([
            Vm {
                devices: rich,
                ..VMS[0]
            },
            Vm {
                devices: secure,
                ..VMS[1]
            },
        ]));
        Board {
            devices,
            vms,
            smmu,
            ..BOARD
        }
        .validate()
        .map_err(|e| e.to_string())
    }

    const PCIE: Device<'static> = Device {
        name: "pcie0",
        class: DeviceClass::PcieHost,
        mmio: MemRange::new(0x1000_0000, 0x3000_0000),
        irqs: &[35, 36, 37, 38],
        dma: Dma::Smmu {
            streams: StreamIds {
                first: 0,
                count: 256,
            },
        },
        pcie: Some(PcieHost {
            ecam: MemRange::new(0x3f00_0000, 0x0100_0000),
            mmio: MemRange::new(0x1000_0000, 0x2eff_0000),
            io: MemRange::new(0x3eff_0000, 0x1_0000),
        }),
    };

    #[test]
    fn a_vm_gets_a_dma_device_only_behind_the_smmu() {
        let virtio_net = Device {
            name: "vnet",
            class: DeviceClass::Network,
            mmio: MemRange::new(0x0a00_3000, 0x1000),
            irqs: &[72],
            dma: Dma::Unconfined,
            pcie: None,
        };
        let rng = Device {
            name: "rng0",
            class: DeviceClass::Rng,
            mmio: MemRange::new(0x0a00_2000, 0x1000),
            irqs: &[64],
            dma: Dma::Unconfined,
            pcie: None,
        };
        assert_eq!(
            board_with(&[DEVICES[0], virtio_net], &["rtc", "vnet"], &[], BOARD.smmu).unwrap_err(),
            "vm 'rich' must not own device 'vnet': it does DMA that no IOMMU of the board confines \
             (it could read and write every VM's and mvmm's memory); put it behind the board's smmu or give it to no VM"
        );
        // The secure VM is not exempt.
        assert!(
            board_with(&[DEVICES[0], rng], &["rtc"], &["rng0"], BOARD.smmu)
                .unwrap_err()
                .starts_with("vm 'secure' must not own device 'rng0': it does DMA")
        );
        // Declared on the board but given to no VM: fine.
        assert_eq!(
            board_with(&[DEVICES[0], rng], &["rtc"], &[], BOARD.smmu),
            Ok(())
        );
        // Behind the SMMU: fine, but only if the board has one.
        assert_eq!(
            board_with(&[DEVICES[0], PCIE], &["rtc", "pcie0"], &[], BOARD.smmu),
            Ok(())
        );
        assert_eq!(
            board_with(&[DEVICES[0], PCIE], &["rtc", "pcie0"], &[], None).unwrap_err(),
            "device 'pcie0' declares SMMU stream ids but the board declares no smmu"
        );
    }

    #[test]
    fn stream_ids_are_bounded_and_never_shared() {
        let streams = |first, count| Device {
            dma: Dma::Smmu {
                streams: StreamIds { first, count },
            },
            ..PCIE
        };
        for (first, count) in [(0, 0), (200, 57), (u32::MAX, 2)] {
            let err = board_with(
                &[DEVICES[0], streams(first, count)],
                &["pcie0"],
                &[],
                BOARD.smmu,
            )
            .unwrap_err();
            assert!(err.starts_with("device 'pcie0': stream ids"), "{err}");
        }
        // net0 (ids 8..16) and a bridge on 0..256 would share ids 8..16.
        let err = board_with(&[DEVICES[1], PCIE], &["net0", "pcie0"], &[], BOARD.smmu).unwrap_err();
        assert_eq!(
            err,
            "device 'pcie0': stream ids 0..256 must be a non-empty range below 256 that no other device uses"
        );
        let board = Board {
            devices: &[DEVICES[0], PCIE],
            vms: &[
                Vm {
                    devices: &["rtc", "pcie0"],
                    ..VMS[0]
                },
                VMS[1],
            ],
            ..BOARD
        };
        assert_eq!(board.validate(), Ok(()));
        assert_eq!(
            board.stream_owner(0x08).map(|(vm, d)| (vm, d.name)),
            Some((0, "pcie0"))
        );
        assert_eq!(board.stream_owner(0x100), None);
    }

    #[test]
    fn pcie_windows_and_the_secure_vm_rule() {
        assert_eq!(
            board_with(&[PCIE], &[], &["pcie0"], BOARD.smmu).unwrap_err(),
            "vm 'secure' is a secure VM and must not own PCIe host bridge 'pcie0' (a network card can sit on its bus)"
        );
        let with_windows = |ecam: MemRange, io: MemRange| Device {
            pcie: Some(PcieHost {
                ecam,
                io,
                ..PCIE.pcie.unwrap()
            }),
            ..PCIE
        };
        let check = |d: Device<'static>| board_with(&[d], &["pcie0"], &[], BOARD.smmu).unwrap_err();
        let io = MemRange::new(0x3eff_0000, 0x1_0000);
        assert_eq!(
            check(with_windows(MemRange::new(0x3f00_0000, 0x0200_0000), io)),
            "device 'pcie0': its pcie windows must be page aligned and inside the device's range"
        );
        assert_eq!(
            check(with_windows(MemRange::new(0x3ef0_0000, 0x0100_0000), io)),
            "device 'pcie0': its pcie windows (ecam, mmio, io) overlap"
        );
        assert_eq!(
            check(with_windows(MemRange::new(0x3f00_0000, 0x8_0000), io)),
            "device 'pcie0': its ecam window must be a whole number of 1 MiB buses"
        );
        assert!(check(Device { pcie: None, ..PCIE }).contains("needs its pcie windows"));
        assert!(
            check(Device {
                irqs: &[35],
                ..PCIE
            })
            .contains("four INTx")
        );
        assert!(
            check(Device {
                dma: Dma::None,
                ..PCIE
            })
            .contains("declare its stream ids")
        );
    }

    #[test]
    fn the_smmu_is_out_of_every_vms_reach() {
        let smmu = |base, event_irq| {
            Some(Smmu {
                mmio: MemRange::new(base, 0x2_0000),
                event_irq,
            })
        };
        let ok = board_with(DEVICES, &["rtc", "net0"], &[], smmu(0x0905_0000, 106));
        assert_eq!(ok, Ok(()));
        for (base, irq) in [
            (0x0901_0000, 106), // over the rtc
            (0x0900_0000, 106), // over the UART
            (0x5000_0000, 106), // in RAM
            (0x0905_0800, 106), // unaligned
            (0x0905_0000, 34),  // the rtc's interrupt
            (0x0905_0000, 48),  // the vsock's
            (0x0905_0000, 20),  // not an SPI
        ] {
            let err = board_with(DEVICES, &["rtc", "net0"], &[], smmu(base, irq)).unwrap_err();
            assert!(err.starts_with("board smmu "), "{base:#x} {irq}: {err}");
        }
    }
}
