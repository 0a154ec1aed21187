//! mvmm's input devices: the board's virtio keyboard and tablet, in
//! virtio-mmio slots no VM maps, driven at EL2 with `virtio-drivers`. Their
//! events go to `mvmm_core::input::Router`, which decides which VM sees each.
//!
//! Its registers are reached through `virtio-drivers`' `MmioTransport`,
//! which is built on `safe-mmio`; the one `unsafe` here is the promise
//! that transport's constructor asks for.

use super::dma::El2Hal;
use core::ptr::NonNull;
use mvmm_core::input::Event;
use mvmm_core::partition::MemRange;
use virtio_drivers::device::input::VirtIOInput;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

/// One physical input device.
pub struct InputDevice(VirtIOInput<El2Hal, MmioTransport<'static>>);

impl InputDevice {
    /// Starts the virtio-input device in `window`; `None` when the slot
    /// holds none or it does not start.
    pub fn open(window: MemRange) -> Option<InputDevice> {
        let header = NonNull::new(window.base as usize as *mut VirtIOHeader)?;
        // SAFETY: `window` is one of the board's input slots: device memory
        // mapped at EL2 (the identity map's device block), reachable by no
        // VM (board validation), and only this driver touches it.
        let transport = unsafe { MmioTransport::new(header, window.size as usize) }.ok()?;
        if transport.device_type() != DeviceType::Input {
            return None;
        }
        VirtIOInput::new(transport).ok().map(InputDevice)
    }

    /// Acknowledges the device's interrupt (it lowers the line).
    pub fn ack(&mut self) {
        let _ = self.0.ack_interrupt();
    }

    /// The next event the device reported, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.0
            .pop_pending_event()
            .map(|e| Event::new(e.event_type, e.code, e.value))
    }
}
