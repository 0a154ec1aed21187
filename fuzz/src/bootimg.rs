//! Fuzzes the Android boot image parser (`boot.img`, `vendor_boot.img`):
//! never panics, every section it returns lies inside the input, and
//! assembling a payload from what parsed never panics either.

use bootimg::{BootPayload, parse_boot, parse_vendor_boot};

fn inside(file: &[u8], section: &[u8]) -> bool {
    let (start, end) = (file.as_ptr() as usize, file.as_ptr() as usize + file.len());
    let at = section.as_ptr() as usize;
    section.is_empty() || (at >= start && at + section.len() <= end)
}

/// The check: panics on a violation.
pub fn check(data: &[u8]) {
    let boot = parse_boot(data);
    if let Ok(image) = &boot {
        for section in [
            image.kernel,
            image.ramdisk,
            image.second,
            image.recovery_dtbo,
            image.dtb,
            image.signature,
        ] {
            assert!(inside(data, section));
        }
    }
    let vendor = parse_vendor_boot(data);
    if let Ok(image) = &vendor {
        assert!(
            inside(data, image.vendor_ramdisk)
                && inside(data, image.dtb)
                && inside(data, image.bootconfig)
        );
        assert!(
            image
                .fragments
                .iter()
                .all(|f| inside(image.vendor_ramdisk, f.bytes))
        );
    }
    if let Ok(image) = &boot {
        let _ = BootPayload::assemble(image, vendor.as_ref().ok());
    }
}
