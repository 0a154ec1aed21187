//! Board files: TOML in `boards/<board>/board.toml`, parsed, validated and
//! turned into Rust constants on the host.
//!
//! A board states the hardware, the partition, what each VM boots
//! ([`image`]) and which services it offers; [`codegen`] is the one
//! generator that turns it into each image's constants and link scripts.
//!
//! Only built with the `config` feature (the build scripts and xtask use
//! it); the images link the generated constants, never this parser.

use crate::partition::{
    Board, Device, DeviceClass, Display, Dma, Gic, MemRange, PartitionError, PcieHost, Smmu,
    StreamIds, Uart, VIRTIO_MMIO_SLOT, VirtioSlot, Vm, VmKind, VsockRule, VsockSlot,
};
use serde::Deserialize;

pub mod codegen;
pub mod image;

pub use codegen::{Target, constants};
pub use image::Image;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardFile {
    pub board: BoardSection,
    #[serde(default)]
    pub qemu: Option<QemuSection>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceEntry>,
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmEntry>,
    /// Connections the vsock switch lets through.
    #[serde(default, rename = "vsock_allow")]
    pub vsock_rules: Vec<VsockRuleEntry>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockEntry {
    /// The VM's CID comes from its kind (`mvmm_abi::vsock`): a board may
    /// state it, but only as that value.
    #[serde(default)]
    pub cid: Option<u32>,
    pub base: u64,
    pub irq: u32,
}

/// `input = { base, irq }` of a VM: the virtio-mmio slot (0x200 bytes) of
/// the input device mvmm emulates in it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputEntry {
    pub base: u64,
    pub irq: u32,
}

impl InputEntry {
    fn slot(&self) -> VirtioSlot {
        VirtioSlot {
            mmio: MemRange::new(self.base, VIRTIO_MMIO_SLOT),
            irq: self.irq,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockRuleEntry {
    pub from: String,
    pub to: String,
    /// A service of `mvmm_abi::vsock::SERVICES` (`payment`, `echo`): the
    /// ports are part of the ABI, not of the board.
    pub service: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardSection {
    pub name: String,
    pub cpus: usize,
    pub ram: RangeEntry,
    pub mvmm: RangeEntry,
    pub uart: UartEntry,
    pub gic: GicEntry,
    /// RAM only mvmm uses, holding pristine boot images of the VMs.
    #[serde(default)]
    pub image_store: Option<RangeEntry>,
    /// The virtio-mmio slot of mvmm's own disk (a virtio-blk that holds the
    /// secure VM's rollback counter).
    #[serde(default)]
    pub rpmb: Option<RangeEntry>,
    /// mvmm's entropy device (a virtio-rng in a virtio-mmio slot no VM
    /// maps), served to the secure VM through the TRNG calls.
    #[serde(default)]
    pub entropy: Option<RangeEntry>,
    /// The scan-out mvmm drives and the two framebuffers it shows.
    #[serde(default)]
    pub display: Option<DisplayEntry>,
    /// The SMMUv3 that confines the DMA of devices given to VMs.
    #[serde(default)]
    pub smmu: Option<SmmuEntry>,
    /// mvmm's physical input devices (virtio-input keyboard and tablet in
    /// virtio-mmio slots no VM maps).
    #[serde(default)]
    pub input: Vec<InputEntry>,
}

/// `smmu = { base, size, event_irq }` of `[board]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmmuEntry {
    pub base: u64,
    pub size: u64,
    pub event_irq: u32,
}

/// `pcie = { ... }` of a `pcie-host` device: its windows and the SMMU
/// stream ids of the devices on its bus (stream id == requester id).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcieEntry {
    pub ecam: RangeEntry,
    pub mmio: RangeEntry,
    pub io: RangeEntry,
    /// The stream ids the board's SMMU sees from this bridge; without it
    /// its DMA is unconfined.
    #[serde(default)]
    pub smmu_streams: Option<StreamsEntry>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsEntry {
    pub first: u32,
    pub count: u32,
}

/// `display = { ... }` of `[board]`: QEMU's ramfb, configured through the
/// fw_cfg registers at `fw_cfg` (mvmm's alone), showing the rich VM's or the
/// secure VM's framebuffer (XRGB8888, `width` x `height`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayEntry {
    pub fw_cfg: RangeEntry,
    pub width: u32,
    pub height: u32,
    pub rich_framebuffer: u64,
    pub secure_framebuffer: u64,
}

impl DisplayEntry {
    /// The partition model's view.
    pub fn display(&self) -> Display {
        Display {
            fw_cfg: range(&self.fw_cfg),
            width: self.width,
            height: self.height,
            rich_framebuffer: self.rich_framebuffer,
            secure_framebuffer: self.secure_framebuffer,
        }
    }
}

/// How to start this board under QEMU (only for emulated boards).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSection {
    /// Value of `-M`.
    pub machine: String,
    /// Value of `-cpu`.
    pub cpu: String,
    /// Value of `-m`.
    pub memory: String,
    /// Extra arguments, e.g. devices that fill virtio-mmio slots.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// The QEMU bus of mvmm's disk (the board's `rpmb` slot), e.g.
    /// `virtio-mmio-bus.1`; the harness attaches the disk image there.
    #[serde(default)]
    pub rpmb_bus: Option<String>,
    /// The QEMU drive behind the secure VM's storage device.
    #[serde(default)]
    pub storage: Option<QemuStorage>,
}

/// The drive QEMU backs a `secure-storage` device with. The board names the
/// device and the `-drive` options; whoever starts QEMU (xtask, the tests)
/// supplies the file: `-drive <drive>,file=<image>`. The image is exactly
/// the device's size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuStorage {
    /// The `[[device]]` (class `secure-storage`) this drive backs.
    pub device: String,
    /// `-drive` options without `file=`, e.g. `if=pflash,unit=1,format=raw`.
    pub drive: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeEntry {
    pub base: u64,
    pub size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UartEntry {
    pub base: u64,
    pub size: u64,
    pub irq: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GicEntry {
    pub distributor: RangeEntry,
    pub redistributors: RangeEntry,
    pub redistributor_stride: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    pub name: String,
    pub class: String,
    pub base: u64,
    pub size: u64,
    #[serde(default)]
    pub irqs: Vec<u32>,
    /// Device-tree `compatible` strings, for the guest's device tree.
    #[serde(default)]
    pub compatible: Vec<String>,
    /// The range holds several devices of this size (virtio-mmio slots),
    /// one per entry of `irqs`.
    #[serde(default)]
    pub slot_size: Option<u64>,
    /// A PCIe host bridge's windows (class `pcie-host`).
    #[serde(default)]
    pub pcie: Option<PcieEntry>,
}

impl DeviceEntry {
    /// What the device reaches by DMA, from what it is: a virtio-mmio
    /// device takes any physical address (QEMU puts no IOMMU in front of
    /// the virtio-mmio bus); a PCIe bus is confined when the board names its
    /// stream ids.
    pub fn dma(&self) -> Dma {
        let unconfined = Dma::Unconfined;
        if let Some(p) = &self.pcie {
            return match p.smmu_streams {
                Some(s) => Dma::Smmu {
                    streams: StreamIds {
                        first: s.first,
                        count: s.count,
                    },
                },
                None => unconfined,
            };
        }
        if self.compatible.iter().any(|c| c == "virtio,mmio") {
            return unconfined;
        }
        Dma::None
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmEntry {
    pub name: String,
    pub kind: String,
    pub cpus: Vec<usize>,
    pub ram: Vec<RangeEntry>,
    #[serde(default)]
    pub devices: Vec<String>,
    pub entry: u64,
    /// Where the guest's device tree is loaded (x0 at entry).
    #[serde(default)]
    pub dtb: Option<u64>,
    /// Where an initial ramdisk is loaded, if the VM boots one.
    #[serde(default)]
    pub initrd: Option<u64>,
    /// The VMM channel device mvmm emulates in this VM.
    #[serde(default)]
    pub vsock: Option<VsockEntry>,
    /// The input device mvmm emulates in this VM (the trusted path's
    /// keyboard and touch, routed by mvmm).
    #[serde(default)]
    pub input: Option<InputEntry>,
    /// Where the loader puts the VM's provisioning page (device secret).
    #[serde(default)]
    pub provision: Option<u64>,
    /// What the VM boots: a name of [`Image`] (`"secure-os"`, `"linux"`).
    /// Required; an `Option` only so that its absence gets a clear error.
    #[serde(default)]
    pub image: Option<String>,
    /// The services (`mvmm_abi::vsock::SERVICES`) the VM offers on its
    /// vsock device; a `[[vsock_allow]]` rule to this VM names one of them.
    #[serde(default)]
    pub services: Vec<String>,
}

impl VmEntry {
    /// The image the VM boots; the error says what to write.
    pub fn image(&self) -> Result<Image, ConfigError> {
        let Some(name) = &self.image else {
            return Err(ConfigError::Partition(format!(
                "vm '{}' names no image: add `image = \"…\"` (known: {})",
                self.name,
                Image::known()
            )));
        };
        Image::from_name(name).ok_or_else(|| ConfigError::Unknown {
            entry: format!("vm '{}'", self.name),
            field: "image",
            value: name.clone(),
            known: Image::known(),
        })
    }
}

/// Why a board file was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Not TOML, or not the shape of a board file (the message has the line).
    Syntax(String),
    /// A name field holds an unknown value.
    UnknownValue {
        entry: String,
        field: &'static str,
        value: String,
    },
    /// A name field holds a value that is none of the `known` ones.
    Unknown {
        entry: String,
        field: &'static str,
        value: String,
        known: String,
    },
    /// A field states what the ABI fixes (`mvmm_abi`), differently.
    NotTheAbi {
        entry: String,
        field: &'static str,
        stated: u32,
        abi: u32,
    },
    /// The description breaks a partition rule.
    Partition(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Syntax(msg) => write!(f, "{msg}"),
            ConfigError::UnknownValue {
                entry,
                field,
                value,
            } => {
                write!(f, "{entry}: unknown {field} '{value}'")
            }
            ConfigError::Unknown {
                entry,
                field,
                value,
                known,
            } => write!(f, "{entry}: unknown {field} '{value}' (known: {known})"),
            ConfigError::NotTheAbi {
                entry,
                field,
                stated,
                abi,
            } => write!(
                f,
                "{entry}: {field} {stated}, but mvmm's ABI fixes it at {abi} on every board (mvmm_abi); leave `{field}` out"
            ),
            ConfigError::Partition(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<PartitionError<'_>> for ConfigError {
    fn from(e: PartitionError<'_>) -> Self {
        ConfigError::Partition(e.to_string())
    }
}

/// The port of service `name`, or an error naming `entry` and the services
/// there are.
fn service_port(name: &str, entry: impl FnOnce() -> String) -> Result<u32, ConfigError> {
    mvmm_abi::vsock::service_port(name).ok_or_else(|| {
        let known: Vec<&str> = mvmm_abi::vsock::SERVICES.iter().map(|(n, _)| *n).collect();
        ConfigError::Unknown {
            entry: entry(),
            field: "service",
            value: name.into(),
            known: known.join(", "),
        }
    })
}

fn range(r: &RangeEntry) -> MemRange {
    MemRange::new(r.base, r.size)
}

impl BoardFile {
    pub fn parse(text: &str) -> Result<BoardFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))
    }

    /// Builds the [`Board`] view of this file, validates it, and hands it
    /// to `f`.
    pub fn with_board<R>(&self, f: impl FnOnce(&Board<'_>) -> R) -> Result<R, ConfigError> {
        let mut devices = Vec::new();
        for d in &self.devices {
            let class =
                DeviceClass::from_name(&d.class).ok_or_else(|| ConfigError::UnknownValue {
                    entry: format!("device '{}'", d.name),
                    field: "class",
                    value: d.class.clone(),
                })?;
            let dma = d.dma();
            devices.push(Device {
                name: &d.name,
                class,
                mmio: MemRange::new(d.base, d.size),
                irqs: &d.irqs,
                dma,
                pcie: d.pcie.map(|p| PcieHost {
                    ecam: range(&p.ecam),
                    mmio: range(&p.mmio),
                    io: range(&p.io),
                }),
            });
        }
        let rams: Vec<Vec<MemRange>> = self
            .vms
            .iter()
            .map(|v| v.ram.iter().map(range).collect())
            .collect();
        let names: Vec<Vec<&str>> = self
            .vms
            .iter()
            .map(|v| v.devices.iter().map(String::as_str).collect())
            .collect();
        let mut vms = Vec::new();
        for (i, v) in self.vms.iter().enumerate() {
            let kind = VmKind::from_name(&v.kind).ok_or_else(|| ConfigError::UnknownValue {
                entry: format!("vm '{}'", v.name),
                field: "kind",
                value: v.kind.clone(),
            })?;
            let vsock = match v.vsock {
                Some(e) => {
                    let cid = match kind {
                        VmKind::Rich => mvmm_abi::vsock::RICH_VM_CID,
                        VmKind::Secure => mvmm_abi::vsock::SECURE_VM_CID,
                    };
                    if let Some(stated) = e.cid.filter(|&c| c != cid) {
                        return Err(ConfigError::NotTheAbi {
                            entry: format!("vm '{}' vsock", v.name),
                            field: "cid",
                            stated,
                            abi: cid,
                        });
                    }
                    Some(VsockSlot {
                        cid,
                        mmio: MemRange::new(e.base, VIRTIO_MMIO_SLOT),
                        irq: e.irq,
                    })
                }
                None => None,
            };
            vms.push(Vm {
                name: &v.name,
                kind,
                vmid: u16::try_from(i + 1).unwrap_or(u16::MAX),
                cpus: &v.cpus,
                ram: &rams[i],
                devices: &names[i],
                entry: v.entry,
                boot_arg: v.dtb.unwrap_or(0),
                vsock,
                input: v.input.as_ref().map(InputEntry::slot),
            });
        }
        let rules = self
            .vsock_rules
            .iter()
            .map(|r| {
                let port = service_port(&r.service, || {
                    format!("vsock_allow from '{}' to '{}'", r.from, r.to)
                })?;
                Ok(VsockRule {
                    from: &r.from,
                    to: &r.to,
                    port,
                })
            })
            .collect::<Result<Vec<VsockRule<'_>>, ConfigError>>()?;
        let b = &self.board;
        let input: Vec<VirtioSlot> = b.input.iter().map(InputEntry::slot).collect();
        let board = Board {
            name: &b.name,
            cpu_count: b.cpus,
            ram: range(&b.ram),
            mvmm: range(&b.mvmm),
            uart: Uart {
                mmio: MemRange::new(b.uart.base, b.uart.size),
                irq: b.uart.irq,
            },
            gic: Gic {
                distributor: range(&b.gic.distributor),
                redistributors: range(&b.gic.redistributors),
                redistributor_stride: b.gic.redistributor_stride,
            },
            devices: &devices,
            vms: &vms,
            vsock_rules: &rules,
            image_store: b.image_store.as_ref().map(range),
            rpmb: b.rpmb.as_ref().map(range),
            entropy: b.entropy.as_ref().map(range),
            display: b.display.as_ref().map(DisplayEntry::display),
            smmu: b.smmu.map(|m| Smmu {
                mmio: MemRange::new(m.base, m.size),
                event_irq: m.event_irq,
            }),
            input: &input,
        };
        board.validate()?;
        if let Some(storage) = self.qemu.as_ref().and_then(|q| q.storage.as_ref()) {
            let class = board.device(&storage.device).map(|d| d.class);
            if class != Some(DeviceClass::SecureStorage) {
                return Err(ConfigError::Partition(format!(
                    "qemu storage names device '{}', which is not a secure-storage device of the board",
                    storage.device
                )));
            }
            if storage.drive.split(',').any(|o| o.starts_with("file=")) {
                return Err(ConfigError::Partition(format!(
                    "qemu storage for '{}': drive must not name a file (the harness supplies it)",
                    storage.device
                )));
            }
        }
        if let Some(qemu) = &self.qemu
            && let Some(device) = qemu_dma_bypass(&qemu.extra_args)
        {
            return Err(ConfigError::Partition(format!(
                "qemu device '{device}': a virtio PCI device needs iommu_platform=on, \
                 or QEMU sends its DMA past the SMMU straight to memory"
            )));
        }
        if let Some(display) = board.display {
            // What the loader puts into a VM must not land in a framebuffer.
            for (v, vm) in self.vms.iter().zip(&vms) {
                let frame = display.framebuffer(vm.kind);
                for (what, at) in [("initrd", v.initrd), ("provision", v.provision)] {
                    if at.is_some_and(|a| frame.contains(a)) {
                        return Err(ConfigError::Partition(format!(
                            "vm '{}': {what} lies in its framebuffer {frame}",
                            v.name
                        )));
                    }
                }
            }
        }
        self.check_images(&vms)?;
        Ok(f(&board))
    }

    /// The rules of `image` and `services` (after the partition's: `vms`
    /// are valid, every rule names VMs with a vsock device).
    fn check_images(&self, vms: &[Vm<'_>]) -> Result<(), ConfigError> {
        let mut images: Vec<(Image, &str)> = Vec::new();
        for (v, vm) in self.vms.iter().zip(vms) {
            let image = v.image()?;
            if let Some((_, other)) = images.iter().find(|(i, _)| *i == image) {
                return Err(ConfigError::Partition(format!(
                    "image '{image}' is named by two VMs: '{other}' and '{}' (an image is linked and loaded for one VM)",
                    v.name
                )));
            }
            images.push((image, &v.name));
            if image.kind() != vm.kind {
                return Err(ConfigError::Partition(format!(
                    "vm '{}': image '{image}' runs only in a {} VM, and this VM's kind is '{}'",
                    v.name,
                    kind_name(image.kind()),
                    v.kind
                )));
            }
            if image == Image::Linux {
                for (field, at, what) in [
                    ("dtb", v.dtb, "device tree"),
                    ("initrd", v.initrd, "initramfs"),
                ] {
                    if at.is_none() {
                        return Err(ConfigError::Partition(format!(
                            "vm '{}': image '{image}' needs `{field} = 0x…`, where the loader puts its {what}",
                            v.name
                        )));
                    }
                }
            }
            if image == Image::SecureOs
                && let Some(at) = v.provision
            {
                // secure-os reads its provisioning page at the last page of
                // the RAM range it is linked in.
                let last_page = v
                    .ram
                    .iter()
                    .find(|r| r.base <= v.entry && v.entry - r.base < r.size)
                    .map_or(0, |r| r.base + r.size - crate::partition::PAGE_SIZE);
                if at != last_page {
                    return Err(ConfigError::Partition(format!(
                        "vm '{}': provision = {at:#x}, but secure-os reads its provisioning page at the last page of its RAM ({last_page:#x})",
                        v.name
                    )));
                }
            }
            for (i, service) in v.services.iter().enumerate() {
                service_port(service, || format!("vm '{}' services", v.name))?;
                if v.services[..i].contains(service) {
                    return Err(ConfigError::Partition(format!(
                        "vm '{}': service '{service}' is listed twice",
                        v.name
                    )));
                }
                if !image.services().contains(&service.as_str()) {
                    let serves = image.services();
                    return Err(ConfigError::Partition(format!(
                        "vm '{}': image '{image}' does not serve '{service}' (it serves: {})",
                        v.name,
                        if serves.is_empty() {
                            "nothing".to_string()
                        } else {
                            serves.join(", ")
                        }
                    )));
                }
                if v.vsock.is_none() {
                    return Err(ConfigError::Partition(format!(
                        "vm '{}' offers service '{service}' but has no vsock device to offer it on",
                        v.name
                    )));
                }
            }
        }
        for rule in &self.vsock_rules {
            let offered = self
                .vms
                .iter()
                .find(|v| v.name == rule.to)
                .map_or(&[][..], |v| v.services.as_slice());
            if !offered.contains(&rule.service) {
                return Err(ConfigError::Partition(format!(
                    "vsock_allow from '{}' to '{}': vm '{}' does not offer service '{}' (its services: {}); add it to the VM's `services`",
                    rule.from,
                    rule.to,
                    rule.to,
                    rule.service,
                    if offered.is_empty() {
                        "none".to_string()
                    } else {
                        offered.join(", ")
                    }
                )));
            }
        }
        Ok(())
    }

    /// The VM that boots `image`; the error says how to name it.
    pub fn vm_running(&self, image: Image) -> Result<&VmEntry, ConfigError> {
        self.vms
            .iter()
            .find(|v| v.image.as_deref() == Some(image.name()))
            .ok_or_else(|| {
                ConfigError::Partition(format!(
                    "no VM of the board boots image '{image}': add `image = \"{image}\"` to its [[vm]]"
                ))
            })
    }

    /// The VM called `name`; the error lists the board's VMs.
    pub fn vm(&self, name: &str) -> Result<&VmEntry, ConfigError> {
        self.vms
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| ConfigError::Unknown {
                entry: format!("board '{}'", self.board.name),
                field: "vm",
                value: name.into(),
                known: self
                    .vms
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The name of a VM kind in a board file.
fn kind_name(kind: VmKind) -> &'static str {
    match kind {
        VmKind::Rich => "rich",
        VmKind::Secure => "secure",
    }
}

/// The first `-device virtio-…-pci` of a QEMU command line that lacks
/// `iommu_platform=on`: QEMU sends such a device's DMA to memory directly,
/// past the SMMU (no real PCIe device can do that).
fn qemu_dma_bypass(args: &[String]) -> Option<&str> {
    args.windows(2)
        .filter(|w| w[0] == "-device")
        .map(|w| w[1].as_str())
        .find(|d| {
            let mut options = d.split(',');
            let driver = options.next().unwrap_or("");
            driver.starts_with("virtio-")
                && driver.contains("-pci")
                && !options.any(|o| o == "iommu_platform=on" || o == "iommu_platform=true")
        })
}

/// The board of every build and command that is given none.
pub const DEFAULT_BOARD: &str = "qemu-virt";

/// For build scripts: the board file to build for (`MVMM_BOARD_FILE`, else
/// `boards/<MVMM_BOARD or qemu-virt>/board.toml` under `repo_root`), with
/// cargo told to rerun when it or those variables change, and its text.
/// The error names the file.
pub fn board_for_build(
    repo_root: &std::path::Path,
) -> Result<(std::path::PathBuf, String), String> {
    let path = match std::env::var("MVMM_BOARD_FILE") {
        Ok(path) => std::path::PathBuf::from(path),
        Err(_) => {
            let board = std::env::var("MVMM_BOARD").unwrap_or_else(|_| DEFAULT_BOARD.into());
            repo_root.join("boards").join(board).join("board.toml")
        }
    };
    println!("cargo:rerun-if-env-changed=MVMM_BOARD");
    println!("cargo:rerun-if-env-changed=MVMM_BOARD_FILE");
    println!("cargo:rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("error: board file {}: cannot read it: {e}", path.display()))?;
    Ok((path, text))
}

/// For a build script: [`board_for_build`], then the file parsed and
/// checked against every partition rule. The error names the file and the
/// offending entry, ready to print before the build stops.
pub fn load_for_build(
    repo_root: &std::path::Path,
) -> Result<(std::path::PathBuf, String, BoardFile), String> {
    let (path, text) = board_for_build(repo_root)?;
    let board = check_file(&path, &text)?;
    Ok((path, text, board))
}

/// `text`, the contents of board file `path`, parsed and checked against
/// every rule; the error names the file and the offending entry.
pub fn check_file(path: &std::path::Path, text: &str) -> Result<BoardFile, String> {
    let refused = |e: ConfigError| format!("error: board file {}: {e}", path.display());
    let board = BoardFile::parse(text).map_err(refused)?;
    board.with_board(|_| ()).map_err(refused)?;
    Ok(board)
}

/// Parses and validates a board file; on success returns Rust source that
/// defines `pub const BOARD: mvmm_core::partition::Board<'static>`.
pub fn generate(text: &str) -> Result<String, ConfigError> {
    constants(&BoardFile::parse(text)?, Target::Mvmm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid board (the generator's tests use it too).
    pub(super) const GOOD: &str = r#"
[board]
name = "t"
cpus = 3
ram = { base = 0x4000_0000, size = 0x4000_0000 }
mvmm = { base = 0x4000_0000, size = 0x100_0000 }
uart = { base = 0x0900_0000, size = 0x1000, irq = 33 }
gic = { distributor = { base = 0x0800_0000, size = 0x1_0000 }, redistributors = { base = 0x080a_0000, size = 0x6_0000 }, redistributor_stride = 0x2_0000 }

[[device]]
name = "net0"
class = "network"
base = 0x0a00_3e00
size = 0x1000
irqs = [79]

[[vm]]
name = "rich"
kind = "rich"
image = "linux"
cpus = [0, 1]
ram = [{ base = 0x5000_0000, size = 0x3000_0000 }]
devices = ["net0"]
entry = 0x5000_0000
dtb = 0x5600_0000
initrd = 0x5800_0000

[[vm]]
name = "secure"
kind = "secure"
image = "secure-os"
cpus = [2]
ram = [{ base = 0x4100_0000, size = 0x200_0000 }]
entry = 0x4100_0000
"#;

    #[test]
    fn a_good_file_generates_constants() {
        let src = generate(&GOOD.replace("0x0a00_3e00", "0x0a00_3000")).unwrap();
        assert!(src.contains("pub const BOARD: Board<'static>"));
        assert!(
            src.contains(r#"Vm { name: "secure", kind: VmKind::Secure, vmid: 2, cpus: &[2]"#),
            "{src}"
        );
        assert!(src.contains("DeviceClass::Network"));
        assert!(
            src.contains(r#"CONSOLE_PREFIXES: &[&str] = &["[mvmm] ", "[rich] ", "[secure] "]"#),
            "{src}"
        );
    }

    #[test]
    fn cids_and_ports_come_from_the_abi() {
        let good = GOOD.replace("0x0a00_3e00", "0x0a00_3000").replace(
            "entry = 0x5000_0000",
            "entry = 0x5000_0000\nvsock = { base = 0x0a00_0000, irq = 48 }",
        );
        let good = good.replace(
            "entry = 0x4100_0000",
            "entry = 0x4100_0000\nvsock = { base = 0x0a00_0000, irq = 48 }\nservices = [\"echo\"]",
        ) + "\n[[vsock_allow]]\nfrom = \"rich\"\nto = \"secure\"\nservice = \"echo\"\n";
        let src = generate(&good).unwrap();
        assert!(
            src.contains(&format!(
                "VsockSlot {{ cid: {}, ",
                mvmm_abi::vsock::SECURE_VM_CID
            )),
            "{src}"
        );
        assert!(
            src.contains(&format!("port: {} }}", mvmm_abi::vsock::ECHO_PORT)),
            "{src}"
        );
        // A board may state the CID, but only as the ABI has it.
        let stated = good.replacen("vsock = { base", "vsock = { cid = 3, base", 1);
        generate(&stated).unwrap();
        let wrong = good.replacen("vsock = { base", "vsock = { cid = 5, base", 1);
        assert_eq!(
            generate(&wrong).unwrap_err().to_string(),
            "vm 'rich' vsock: cid 5, but mvmm's ABI fixes it at 3 on every board (mvmm_abi); leave `cid` out"
        );
        let unknown = good.replace("service = \"echo\"", "service = \"ssh\"");
        assert_eq!(
            generate(&unknown).unwrap_err().to_string(),
            "vsock_allow from 'rich' to 'secure': unknown service 'ssh' (known: payment, echo)"
        );
        let numbered = good.replace("service = \"echo\"", "port = 7101");
        assert!(generate(&numbered).is_err(), "a rule by port number");
    }

    #[test]
    fn misaligned_device_names_the_device() {
        assert_eq!(
            generate(GOOD).unwrap_err().to_string(),
            "net0 range 0 (0xa003e00..0xa004e00) is empty, overflows, or is not 4096-byte aligned"
        );
    }

    #[test]
    fn network_device_in_secure_vm_fails_with_the_vm_and_device() {
        let good = GOOD.replace("0x0a00_3e00", "0x0a00_3000");
        let bad = good.replace(
            "entry = 0x4100_0000",
            "entry = 0x4100_0000\ndevices = [\"net0\"]",
        );
        let err = generate(&bad).unwrap_err().to_string();
        assert_eq!(
            err,
            "vm 'secure' is a secure VM and must not own network device 'net0'"
        );
        let bad = bad.replace("class = \"network\"", "class = \"rtc\"");
        let err = generate(&bad).unwrap_err().to_string();
        assert_eq!(
            err,
            "device 'net0' is given to two VMs: 'rich' and 'secure'"
        );
    }

    #[test]
    fn the_qemu_storage_drive_must_back_a_secure_storage_device() {
        let good = GOOD.replace("0x0a00_3e00", "0x0a00_3000").replace(
            "[[device]]",
            "[qemu]\nmachine = \"virt\"\ncpu = \"cortex-a57\"\nmemory = \"1G\"\n\
             storage = { device = \"flash1\", drive = \"if=pflash,unit=1,format=raw\" }\n\n\
             [[device]]\nname = \"flash1\"\nclass = \"secure-storage\"\nbase = 0x0400_0000\nsize = 0x0400_0000\n\n\
             [[device]]",
        );
        let good = good.replace(
            "entry = 0x4100_0000",
            "entry = 0x4100_0000\ndevices = [\"flash1\"]",
        );
        generate(&good).unwrap();
        let err = generate(&good.replace("device = \"flash1\"", "device = \"net0\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "qemu storage names device 'net0', which is not a secure-storage device of the board"
        );
        let err = generate(&good.replace("format=raw", "format=raw,file=x.img"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not name a file"), "{err}");
        let err =
            generate(&good.replace("devices = [\"net0\"]", "devices = [\"net0\", \"flash1\"]"))
                .unwrap_err()
                .to_string();
        assert_eq!(
            err,
            "vm 'rich' is not a secure VM and must not own secure-storage device 'flash1'"
        );
    }

    #[test]
    fn unknown_fields_kinds_and_classes_are_errors() {
        let err = generate(&GOOD.replace("kind = \"secure\"", "kind = \"trusted\"")).unwrap_err();
        assert_eq!(err.to_string(), "vm 'secure': unknown kind 'trusted'");
        let err = generate(&GOOD.replace("class = \"network\"", "class = \"modem\"")).unwrap_err();
        assert_eq!(err.to_string(), "device 'net0': unknown class 'modem'");
        let err = generate(&GOOD.replace("cpus = [2]", "cpu = [2]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `cpu`"), "{err}");
        let err = generate("this is not toml").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn the_dma_rule_names_the_device_and_the_vm() {
        // net0 as the board had it: a virtio-mmio page passed through.
        let good = GOOD.replace("0x0a00_3e00", "0x0a00_3000");
        let virtio = good.replace(
            "irqs = [79]",
            "irqs = [79]\ncompatible = [\"virtio,mmio\"]\nslot_size = 0x200",
        );
        let err = generate(&virtio).unwrap_err().to_string();
        assert!(
            err.starts_with("vm 'rich' must not own device 'net0': it does DMA that no IOMMU of the board confines"),
            "{err}"
        );
    }

    #[test]
    fn a_pcie_host_is_confined_by_the_boards_smmu() {
        let pcie = GOOD
            .replace(
                "gic = {",
                "smmu = { base = 0x0905_0000, size = 0x2_0000, event_irq = 106 }\ngic = {",
            )
            .replace(
                "name = \"net0\"\nclass = \"network\"\nbase = 0x0a00_3e00\nsize = 0x1000\nirqs = [79]",
                "name = \"pcie0\"\nclass = \"pcie-host\"\nbase = 0x1000_0000\nsize = 0x3000_0000\n\
                 irqs = [35, 36, 37, 38]\n\
                 pcie = { ecam = { base = 0x3f00_0000, size = 0x0100_0000 }, mmio = { base = 0x1000_0000, size = 0x2eff_0000 }, \
                 io = { base = 0x3eff_0000, size = 0x1_0000 }, smmu_streams = { first = 0, count = 0x100 } }",
            )
            .replace("devices = [\"net0\"]", "devices = [\"pcie0\"]");
        let src = generate(&pcie).unwrap();
        assert!(
            src.contains("dma: Dma::Smmu { streams: StreamIds { first: 0, count: 256 } }, pcie: Some(PcieHost { ecam: MemRange::new(0x3f000000, 0x1000000)"),
            "{src}"
        );
        assert!(src.contains(
            "smmu: Some(Smmu { mmio: MemRange::new(0x9050000, 0x20000), event_irq: 106 })"
        ));
        // Without its stream ids the bridge's DMA is unconfined.
        let err = generate(&pcie.replace(", smmu_streams = { first = 0, count = 0x100 }", ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("vm 'rich' must not own device 'pcie0'"),
            "{err}"
        );
        // Without the SMMU, the stream ids mean nothing.
        let err = generate(&pcie.replace(
            "smmu = { base = 0x0905_0000, size = 0x2_0000, event_irq = 106 }\n",
            "",
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "device 'pcie0' declares SMMU stream ids but the board declares no smmu"
        );
        // A virtio PCI device in QEMU must send its DMA through the SMMU.
        let qemu = |device: &str| {
            pcie.replace(
                "[[device]]",
                &format!(
                    "[qemu]\nmachine = \"virt\"\ncpu = \"cortex-a57\"\nmemory = \"1G\"\n\
                     extra_args = [\"-device\", \"{device}\"]\n\n[[device]]"
                ),
            )
        };
        generate(&qemu("virtio-net-pci,netdev=n,iommu_platform=on")).unwrap();
        generate(&qemu("virtio-rng-device,bus=virtio-mmio-bus.16")).unwrap();
        let err = generate(&qemu("virtio-net-pci,netdev=n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "qemu device 'virtio-net-pci,netdev=n': a virtio PCI device needs iommu_platform=on, \
             or QEMU sends its DMA past the SMMU straight to memory"
        );
    }

    /// The path of the reference board from this file.
    pub(super) const QEMU_VIRT: &str = include_str!("../../../boards/qemu-virt/board.toml");

    /// [`GOOD`] with its device aligned: a board that passes every rule.
    pub(super) fn valid() -> String {
        GOOD.replace("0x0a00_3e00", "0x0a00_3000")
    }

    fn refused(text: &str) -> String {
        generate(text).unwrap_err().to_string()
    }

    #[test]
    fn the_reference_board_names_its_images_and_services() {
        let board = BoardFile::parse(QEMU_VIRT).unwrap();
        board.with_board(|_| ()).unwrap();
        let secure = board.vm_running(Image::SecureOs).unwrap();
        assert_eq!(secure.kind, "secure");
        assert_eq!(secure.services, ["payment", "echo"]);
        assert_eq!(board.vm_running(Image::Linux).unwrap().kind, "rich");
        // Every rule names a service its VM offers.
        for rule in &board.vsock_rules {
            assert!(board.vm(&rule.to).unwrap().services.contains(&rule.service));
        }
    }

    #[test]
    fn each_vm_names_a_known_image_of_its_kind_once() {
        let err = refused(&valid().replace("image = \"linux\"\n", ""));
        assert_eq!(
            err,
            "vm 'rich' names no image: add `image = \"…\"` (known: secure-os, linux)"
        );
        let err = refused(&valid().replace("image = \"secure-os\"", "image = \"securos\""));
        assert_eq!(
            err,
            "vm 'secure': unknown image 'securos' (known: secure-os, linux)"
        );
        let swapped = valid()
            .replace("image = \"linux\"", "image = \"x\"")
            .replace("image = \"secure-os\"", "image = \"linux\"")
            .replace("image = \"x\"", "image = \"secure-os\"");
        assert_eq!(
            refused(&swapped),
            "vm 'rich': image 'secure-os' runs only in a secure VM, and this VM's kind is 'rich'"
        );
        let twice = valid().replace("image = \"secure-os\"", "image = \"linux\"");
        assert_eq!(
            refused(&twice),
            "image 'linux' is named by two VMs: 'rich' and 'secure' (an image is linked and loaded for one VM)"
        );
        let board = BoardFile::parse(&valid().replace("image = \"secure-os\"\n", "")).unwrap();
        assert_eq!(
            board.vm_running(Image::SecureOs).unwrap_err().to_string(),
            "no VM of the board boots image 'secure-os': add `image = \"secure-os\"` to its [[vm]]"
        );
    }

    #[test]
    fn an_images_boot_addresses_are_stated() {
        assert_eq!(
            refused(&valid().replace("dtb = 0x5600_0000\n", "")),
            "vm 'rich': image 'linux' needs `dtb = 0x…`, where the loader puts its device tree"
        );
        assert_eq!(
            refused(&valid().replace("initrd = 0x5800_0000\n", "")),
            "vm 'rich': image 'linux' needs `initrd = 0x…`, where the loader puts its initramfs"
        );
        // secure-os reads its provisioning page at the end of its RAM.
        let at = |page: &str| {
            valid().replace(
                "entry = 0x4100_0000",
                &format!("entry = 0x4100_0000\nprovision = {page}"),
            )
        };
        generate(&at("0x42ff_f000")).unwrap();
        assert_eq!(
            refused(&at("0x42ff_e000")),
            "vm 'secure': provision = 0x42ffe000, but secure-os reads its provisioning page at the last page of its RAM (0x42fff000)"
        );
    }

    #[test]
    fn services_are_the_abis_the_images_and_offered_on_a_vsock() {
        let vsock = valid().replace(
            "entry = 0x4100_0000",
            "entry = 0x4100_0000\nvsock = { base = 0x0a00_0000, irq = 48 }\nservices = [\"payment\", \"echo\"]",
        );
        generate(&vsock).unwrap();
        let with = |services: &str| vsock.replace("[\"payment\", \"echo\"]", services);
        assert_eq!(
            refused(&with("[\"payment\", \"ssh\"]")),
            "vm 'secure' services: unknown service 'ssh' (known: payment, echo)"
        );
        assert_eq!(
            refused(&with("[\"echo\", \"echo\"]")),
            "vm 'secure': service 'echo' is listed twice"
        );
        let rich = vsock.replace(
            "entry = 0x5000_0000",
            "entry = 0x5000_0000\nvsock = { base = 0x0a00_0000, irq = 48 }\nservices = [\"payment\"]",
        );
        assert_eq!(
            refused(&rich),
            "vm 'rich': image 'linux' does not serve 'payment' (it serves: nothing)"
        );
        let no_vsock = vsock.replace("vsock = { base = 0x0a00_0000, irq = 48 }\n", "");
        assert_eq!(
            refused(&no_vsock),
            "vm 'secure' offers service 'payment' but has no vsock device to offer it on"
        );
        // A rule opens only what the VM offers.
        let rule = |services: &str, service: &str| {
            with(services).replace(
                "entry = 0x5000_0000",
                "entry = 0x5000_0000\nvsock = { base = 0x0a00_0000, irq = 48 }",
            ) + &format!(
                "\n[[vsock_allow]]\nfrom = \"rich\"\nto = \"secure\"\nservice = \"{service}\"\n"
            )
        };
        generate(&rule("[\"payment\", \"echo\"]", "echo")).unwrap();
        assert_eq!(
            refused(&rule("[\"payment\"]", "echo")),
            "vsock_allow from 'rich' to 'secure': vm 'secure' does not offer service 'echo' (its services: payment); add it to the VM's `services`"
        );
        assert_eq!(
            refused(&rule("[]", "echo")),
            "vsock_allow from 'rich' to 'secure': vm 'secure' does not offer service 'echo' (its services: none); add it to the VM's `services`"
        );
    }

    #[test]
    fn a_build_scripts_error_names_the_file_and_the_entry() {
        let path = std::path::Path::new("boards/x/board.toml");
        let err = check_file(path, &valid().replace("\"secure-os\"", "\"securos\"")).unwrap_err();
        assert_eq!(
            err,
            "error: board file boards/x/board.toml: vm 'secure': unknown image 'securos' (known: secure-os, linux)"
        );
        check_file(path, QEMU_VIRT).unwrap();
    }
}
