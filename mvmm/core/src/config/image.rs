//! The images a board's VMs boot: `image = "…"` of a `[[vm]]`, and the
//! rules an image sets on the VM that runs it.
//!
//! The board names each VM's image; the tooling builds, signs and loads what
//! the board names instead of keeping a list of its own (`cargo xtask build`
//! builds the crate of each named image, signs the one mvmm verifies, and
//! fetches Linux where a VM boots it).

use crate::partition::VmKind;

/// What a VM boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// Our secure OS with the payment app: the workspace crate `secure-os`,
    /// linked at its VM's entry, signed by the boot authority and carried
    /// in the image store (mvmm verifies it before the VM runs).
    SecureOs,
    /// A Linux arm64 `Image` with an initramfs and a device tree written
    /// from the board (in emulation Debian's kernel; on a handset Android).
    /// Not built here: `cargo xtask build` fetches it. Its VM states where
    /// the loader puts the device tree and the initramfs (`dtb`, `initrd`).
    Linux,
}

impl Image {
    /// Every image a board may name.
    pub const ALL: [Image; 2] = [Image::SecureOs, Image::Linux];

    /// Its name in a board file (for a built image, also its crate's name).
    pub const fn name(self) -> &'static str {
        match self {
            Image::SecureOs => "secure-os",
            Image::Linux => "linux",
        }
    }

    pub fn from_name(name: &str) -> Option<Image> {
        Image::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The kind of VM it is made for: secure-os holds the payment
    /// credentials and is verified by mvmm; Linux is the rich OS.
    pub const fn kind(self) -> VmKind {
        match self {
            Image::SecureOs => VmKind::Secure,
            Image::Linux => VmKind::Rich,
        }
    }

    /// The workspace crate that builds it for the guests' target, if it is
    /// built here.
    pub const fn crate_name(self) -> Option<&'static str> {
        match self {
            Image::SecureOs => Some("secure-os"),
            Image::Linux => None,
        }
    }

    /// The services (`mvmm_abi::vsock::SERVICES`) it can offer: a board's
    /// `services` of a VM are a subset.
    pub const fn services(self) -> &'static [&'static str] {
        match self {
            Image::SecureOs => &["payment", "echo"],
            Image::Linux => &[],
        }
    }

    /// The known names, for an error message.
    pub fn known() -> String {
        let names: Vec<&str> = Image::ALL.iter().map(|i| i.name()).collect();
        names.join(", ")
    }
}

impl std::fmt::Display for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_services_are_the_abis() {
        for image in Image::ALL {
            assert_eq!(Image::from_name(image.name()), Some(image));
            for service in image.services() {
                assert!(
                    mvmm_abi::vsock::service_port(service).is_some(),
                    "{image}: {service}"
                );
            }
        }
        assert_eq!(Image::from_name("Linux"), None);
        assert_eq!(Image::known(), "secure-os, linux");
    }
}
