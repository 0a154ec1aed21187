//! `dma-attack`: what a compromised rich kernel can do with the NIC it owns.
//!
//! The virtio-net-pci device's driver must be unbound first (the tool then
//! owns the device through sysfs). For each target physical address it
//! drives the device's DMA twice, from userspace through the BAR mapping:
//!
//! 1. **read**: a TX descriptor whose buffer is the target, so the device
//!    would send the target's bytes on the wire;
//! 2. **write**: a legitimate TX packet whose *used ring* is the target, so
//!    the device would write its completion into the target.
//!
//! With the SMMU confining the NIC to the rich VM's RAM, both DMAs fault:
//! nothing is sent, nothing written, mvmm logs the faults. The tool prints
//! what the device reported (`dma-attack: <target> <kind>: used <n>,
//! status <s>`); the QEMU test checks memory, the wire and mvmm's log.
//!
//! Usage: `dma-attack <pci-device, e.g. 0000:00:01.0> <addr>...`

#[cfg(target_os = "linux")]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dev, targets)) = args.split_first() else {
        eprintln!("usage: dma-attack <pci-device> <physical-address>...");
        std::process::exit(2);
    };
    let mut targets_parsed = Vec::new();
    for t in targets {
        match u64::from_str_radix(t.trim_start_matches("0x"), 16) {
            Ok(v) => targets_parsed.push(v),
            Err(e) => {
                eprintln!("dma-attack: bad address {t}: {e}");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = linux::run(dev, &targets_parsed) {
        eprintln!("dma-attack: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("dma-attack runs in the rich VM (Linux)");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::{File, OpenOptions};
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    use std::thread::sleep;
    use std::time::Duration;

    type Result<T> = std::result::Result<T, String>;

    // virtio-pci common configuration (virtio 1.x, 4.1.4.3).
    const DEVICE_FEATURE_SELECT: usize = 0x00;
    const DRIVER_FEATURE_SELECT: usize = 0x08;
    const DRIVER_FEATURE: usize = 0x0c;
    const DEVICE_STATUS: usize = 0x14;
    const QUEUE_SELECT: usize = 0x16;
    const QUEUE_SIZE: usize = 0x18;
    const QUEUE_ENABLE: usize = 0x1c;
    const QUEUE_NOTIFY_OFF: usize = 0x1e;
    const QUEUE_DESC: usize = 0x20;
    const QUEUE_DRIVER: usize = 0x28;
    const QUEUE_DEVICE: usize = 0x30;
    const ACKNOWLEDGE: u8 = 1;
    const DRIVER: u8 = 2;
    const DRIVER_OK: u8 = 4;
    const FEATURES_OK: u8 = 8;
    const TX_QUEUE: u16 = 1;
    const QUEUE_LEN: u16 = 8;
    /// virtio_net_hdr with VIRTIO_F_VERSION_1.
    const NET_HDR: usize = 12;

    /// A mapping of a BAR through sysfs, or of locked anonymous memory.
    struct Map {
        ptr: *mut u8,
        len: usize,
    }

    impl Map {
        fn bar(dev: &str, bar: u8) -> Result<Map> {
            let path = format!("/sys/bus/pci/devices/{dev}/resource{bar}");
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| format!("{path}: {e}"))?;
            let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
            // SAFETY: a fresh shared mapping of the BAR file; the kernel
            // checks the length and our rights.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(format!("mmap {path}: {}", std::io::Error::last_os_error()));
            }
            Ok(Map {
                ptr: ptr.cast(),
                len,
            })
        }

        /// One locked, zeroed page of our own RAM.
        fn page() -> Result<Map> {
            let len = 4096;
            // SAFETY: a fresh private anonymous mapping.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_LOCKED | libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(format!("mmap: {}", std::io::Error::last_os_error()));
            }
            Ok(Map {
                ptr: ptr.cast(),
                len,
            })
        }

        fn write<T: Copy>(&self, offset: usize, value: T) {
            assert!(offset + size_of::<T>() <= self.len);
            // SAFETY: inside the mapping (checked), aligned by the callers'
            // fixed offsets; volatile because a device reads it.
            unsafe { std::ptr::write_volatile(self.ptr.add(offset).cast::<T>(), value) }
        }

        fn read<T: Copy>(&self, offset: usize) -> T {
            assert!(offset + size_of::<T>() <= self.len);
            // SAFETY: as in `write`.
            unsafe { std::ptr::read_volatile(self.ptr.add(offset).cast::<T>()) }
        }

        /// The physical address of the start of a [`Map::page`].
        fn physical(&self) -> Result<u64> {
            let mut pagemap = File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
            pagemap
                .seek(SeekFrom::Start((self.ptr as u64 / 4096) * 8))
                .map_err(|e| e.to_string())?;
            let mut entry = [0u8; 8];
            pagemap.read_exact(&mut entry).map_err(|e| e.to_string())?;
            let entry = u64::from_le_bytes(entry);
            let pfn = entry & ((1 << 55) - 1);
            if entry >> 63 == 0 || pfn == 0 {
                return Err("no physical address for our page (not root?)".into());
            }
            Ok(pfn * 4096)
        }
    }

    /// Where the virtio structures sit (from the PCI capabilities).
    struct Layout {
        bar: u8,
        common: usize,
        notify: usize,
        multiplier: usize,
    }

    fn layout(dev: &str) -> Result<Layout> {
        let path = format!("/sys/bus/pci/devices/{dev}/config");
        let config = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
        let byte = |i: usize| config.get(i).copied().unwrap_or(0);
        let word = |i: usize| u32::from_le_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)]);
        let (mut common, mut notify) = (None, None);
        let mut cap = byte(0x34) as usize;
        for _ in 0..48 {
            if cap == 0 {
                break;
            }
            if byte(cap) == 0x09 {
                let (kind, bar, offset) = (byte(cap + 3), byte(cap + 4), word(cap + 8) as usize);
                match kind {
                    1 => common = Some((bar, offset)),
                    2 => notify = Some((bar, offset, word(cap + 16) as usize)),
                    _ => {}
                }
            }
            cap = byte(cap + 1) as usize;
        }
        match (common, notify) {
            (Some((bar, common)), Some((nbar, notify, multiplier))) if bar == nbar => Ok(Layout {
                bar,
                common,
                notify,
                multiplier,
            }),
            _ => Err(format!(
                "{dev}: no virtio common/notify capabilities in one BAR"
            )),
        }
    }

    /// Resets the device and offers it features 32 and up in `high`
    /// (bit 0: VIRTIO_F_VERSION_1, bit 1: VIRTIO_F_ACCESS_PLATFORM); true
    /// when the device accepts them (FEATURES_OK stays set).
    fn negotiate(bar: &Map, l: &Layout, high: u32) -> bool {
        let c = l.common;
        bar.write::<u8>(c + DEVICE_STATUS, 0);
        for _ in 0..100 {
            if bar.read::<u8>(c + DEVICE_STATUS) == 0 {
                break;
            }
            sleep(Duration::from_millis(1));
        }
        bar.write::<u8>(c + DEVICE_STATUS, ACKNOWLEDGE | DRIVER);
        bar.write::<u32>(c + DEVICE_FEATURE_SELECT, 0);
        bar.write::<u32>(c + DRIVER_FEATURE_SELECT, 0);
        bar.write::<u32>(c + DRIVER_FEATURE, 0);
        bar.write::<u32>(c + DRIVER_FEATURE_SELECT, 1);
        bar.write::<u32>(c + DRIVER_FEATURE, high);
        bar.write::<u8>(c + DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        bar.read::<u8>(c + DEVICE_STATUS) & FEATURES_OK != 0
    }

    /// Resets the device and brings it to DRIVER_OK with one TX queue whose
    /// descriptor table, avail and used rings are at the given addresses.
    fn start_tx(bar: &Map, l: &Layout, desc: u64, avail: u64, used: u64) -> Result<usize> {
        let c = l.common;
        // A device that offers ACCESS_PLATFORM must be accepted with it;
        // one that does not (its DMA bypasses any IOMMU) takes VERSION_1.
        if !negotiate(bar, l, 0b11) && !negotiate(bar, l, 0b01) {
            return Err("the device refused our features".into());
        }
        bar.write::<u16>(c + QUEUE_SELECT, TX_QUEUE);
        bar.write::<u16>(c + QUEUE_SIZE, QUEUE_LEN);
        bar.write::<u64>(c + QUEUE_DESC, desc);
        bar.write::<u64>(c + QUEUE_DRIVER, avail);
        bar.write::<u64>(c + QUEUE_DEVICE, used);
        let notify_off = bar.read::<u16>(c + QUEUE_NOTIFY_OFF) as usize;
        bar.write::<u16>(c + QUEUE_ENABLE, 1);
        bar.write::<u8>(
            c + DEVICE_STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
        Ok(l.notify + notify_off * l.multiplier)
    }

    /// A broadcast UDP frame (virtio-net header first) carrying `marker`.
    fn frame(marker: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; NET_HDR];
        f.extend([0xff; 6]); // broadcast
        f.extend([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        f.extend([0x88, 0xb5]); // local experimental ethertype
        f.extend(marker);
        f.resize(NET_HDR + 60, 0);
        f
    }

    /// Turns on memory decoding and bus mastering in the PCI command
    /// register (the driver's unbind turned mastering off): the device may
    /// DMA again, as far as PCI is concerned.
    fn enable_bus_master(dev: &str) -> Result<()> {
        use std::io::Write;
        let path = format!("/sys/bus/pci/devices/{dev}/config");
        let mut config = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{path}: {e}"))?;
        let mut command = [0u8; 2];
        config.seek(SeekFrom::Start(4)).map_err(|e| e.to_string())?;
        config.read_exact(&mut command).map_err(|e| e.to_string())?;
        let command = u16::from_le_bytes(command) | 0x6;
        config.seek(SeekFrom::Start(4)).map_err(|e| e.to_string())?;
        config
            .write_all(&command.to_le_bytes())
            .map_err(|e| format!("{path}: {e}"))
    }

    pub fn run(dev: &str, targets: &[u64]) -> Result<()> {
        enable_bus_master(dev)?;
        let l = layout(dev)?;
        let bar = Map::bar(dev, l.bar)?;
        let page = Map::page()?;
        let pa = page.physical()?;
        // Our page: descriptors at 0, avail at 0x200, used at 0x400, a
        // legitimate frame at 0x800.
        let (desc, avail, used, data) = (pa, pa + 0x200, pa + 0x400, 0x800usize);
        println!("dma-attack: {dev}: BAR {} page at {pa:#x}", l.bar);
        // Can a driver make the device's DMA bypass the IOMMU by not
        // accepting ACCESS_PLATFORM?
        let bypass = negotiate(&bar, &l, 0b01);
        println!(
            "dma-attack: without ACCESS_PLATFORM: {}",
            if bypass { "accepted" } else { "refused" }
        );
        for &target in targets {
            for kind in ["read", "write"] {
                for off in (0..0x800).step_by(8) {
                    page.write::<u64>(off, 0);
                }
                let marker = format!("mvmm-dma-attack-{kind}-{target:x}");
                let f = frame(marker.as_bytes());
                for (i, b) in f.iter().enumerate() {
                    page.write::<u8>(data + i, *b);
                }
                // Descriptor 0: read → the buffer is the target; write →
                // our frame, with the used ring at the target.
                let (buffer, used_ring) = match kind {
                    "read" => (target, used),
                    _ => (pa + data as u64, target),
                };
                page.write::<u64>(0, buffer);
                page.write::<u32>(8, f.len() as u32);
                page.write::<u16>(12, 0);
                page.write::<u16>(14, 0);
                // avail: flags 0, idx 1, ring[0] = descriptor 0.
                page.write::<u16>(0x200, 0);
                page.write::<u16>(0x204, 0);
                page.write::<u16>(0x202, 1);
                let notify = start_tx(&bar, &l, desc, avail, used_ring)?;
                bar.write::<u16>(notify, TX_QUEUE);
                sleep(Duration::from_millis(300));
                let used_idx = page.read::<u16>(0x402);
                let status = bar.read::<u8>(l.common + DEVICE_STATUS);
                println!("dma-attack: {target:#x} {kind}: used {used_idx}, status {status:#x}");
            }
        }
        // Leave the device reset for its driver.
        bar.write::<u8>(l.common + DEVICE_STATUS, 0);
        Ok(())
    }
}
