//! Glue for `virtio-drivers`: the DMA/HAL contract for this identity-mapped
//! guest, and a careful probe of virtio-mmio slots.
//!
//! # DMA
//! Stage 1 is an identity map and mvmm's stage 2 maps the VM's RAM at IPA ==
//! PA, so a buffer's virtual address is also the address a device (mvmm's
//! emulated vsock, a QEMU device passed through) uses. DMA memory comes from
//! the heap (normal write-back memory; the devices here are cache-coherent:
//! mvmm reads guest memory through its own cacheable mapping, and QEMU has no
//! caches to speak of). No bounce buffers, no IOMMU.

use alloc::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use core::fmt;
use core::ptr::NonNull;
use guest_rt::arch::probe;
use spin::Mutex;
use virtio_drivers::device::socket::{VirtIOSocket, VsockConnectionManager};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// The `Hal` of an identity-mapped guest whose DMA memory is its heap.
pub struct IdentityHal;

fn dma_layout(pages: usize) -> Layout {
    match Layout::from_size_align(pages.max(1) * PAGE_SIZE, PAGE_SIZE) {
        Ok(layout) => layout,
        // Only for absurd page counts from the driver itself.
        Err(_) => handle_alloc_error(Layout::new::<u8>()),
    }
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory that nothing
// else references until `dma_dealloc`; its physical address is its virtual
// address (identity map, IPA == PA). `share` hands out the address of memory
// the caller owns; nothing needs copying back in `unshare` because the
// device accesses the original buffer coherently.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = dma_layout(pages);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            handle_alloc_error(layout)
        };
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: the caller passes back a `dma_alloc` result with the same
        // page count, so `vaddr` was allocated with this very layout.
        unsafe { dealloc(vaddr.as_ptr(), dma_layout(pages)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Identity map: the virtual address is the physical one (only used
        // by the PCI transport, which this guest does not have).
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// A virtio-mmio transport over a slot this guest owns for good.
pub type Transport = MmioTransport<'static>;
/// Bytes of each vsock RX buffer, header (44 bytes) included: the largest
/// packet mvmm may put in one buffer.
pub const VSOCK_RX_BUFFER: usize = 4096;
/// The vsock driver with connection tracking.
pub type Vsock = VsockConnectionManager<IdentityHal, Transport, VSOCK_RX_BUFFER>;
/// The input device (the trusted path's keyboard and touch screen).
pub type Input = virtio_drivers::device::input::VirtIOInput<IdentityHal, Transport>;
/// The raw vsock driver.
pub type VsockDriver = VirtIOSocket<IdentityHal, Transport, VSOCK_RX_BUFFER>;
pub use virtio_drivers::device::socket::{SocketError, VsockAddr, VsockEventType};
pub use virtio_drivers::{Error, transport::DeviceType as Kind};

/// Why a slot gave no transport.
#[derive(Clone, Copy, Debug)]
pub enum ProbeError {
    /// Reading the slot aborted (not mapped for this VM).
    Unmapped,
    /// No virtio magic at the slot.
    NoMagic(u32),
    /// A virtio-mmio slot with device id 0: no device behind it.
    Empty,
    /// Another kind of device.
    WrongDevice(u32),
    /// The slot was already taken.
    InUse,
    /// The transport refused the header.
    Transport,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Unmapped => f.write_str("not mapped (access aborted)"),
            ProbeError::NoMagic(m) => write!(f, "no virtio magic (read {m:#010x})"),
            ProbeError::Empty => f.write_str("empty slot (device id 0)"),
            ProbeError::WrongDevice(id) => write!(f, "unexpected device id {id}"),
            ProbeError::InUse => f.write_str("already in use"),
            ProbeError::Transport => f.write_str("unsupported virtio-mmio header"),
        }
    }
}

const MAGIC: u32 = 0x7472_6976;
static CLAIMED: Mutex<heapless::Vec<usize, 8>> = Mutex::new(heapless::Vec::new());

/// Probes the virtio-mmio slot at `base` (`size` bytes) for a device of
/// `kind` and takes it for the rest of the program. Reads that abort (a slot
/// mvmm does not map for this VM) are caught, so a missing device is an
/// error, not a crash.
pub fn probe_mmio(base: usize, size: usize, kind: DeviceType) -> Result<Transport, ProbeError> {
    let read =
        |offset: usize| probe::read32((base + offset) as u64).map_err(|_| ProbeError::Unmapped);
    let magic = read(0x000)?;
    if magic != MAGIC {
        return Err(ProbeError::NoMagic(magic));
    }
    let id = read(0x008)?;
    if id == 0 {
        return Err(ProbeError::Empty);
    }
    if id != kind as u32 {
        return Err(ProbeError::WrongDevice(id));
    }
    let mut claimed = CLAIMED.lock();
    if claimed.contains(&base) || claimed.push(base).is_err() {
        return Err(ProbeError::InUse);
    }
    let Some(header) = NonNull::new(base as *mut VirtIOHeader) else {
        return Err(ProbeError::Transport);
    };
    // SAFETY: `base..base + size` is a virtio-mmio slot (magic checked)
    // identity-mapped as device memory for the whole program; CLAIMED makes
    // this the only transport over it, so nothing else aliases it for
    // 'static.
    unsafe { MmioTransport::new(header, size) }.map_err(|_| ProbeError::Transport)
}
