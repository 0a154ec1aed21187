//! Why an image was refused. Every variant names the offending value.

use std::fmt;

/// Which image a message is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// `boot.img` (magic `ANDROID!`).
    Boot,
    /// `vendor_boot.img` (magic `VNDRBOOT`).
    VendorBoot,
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageKind::Boot => "boot image",
            ImageKind::VendorBoot => "vendor_boot image",
        })
    }
}

/// A malformed or unsupported image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its header.
    Truncated {
        kind: ImageKind,
        /// Bytes the header needs.
        need: u64,
        /// Bytes the file has.
        have: u64,
    },
    /// The first 8 bytes are not the image's magic.
    BadMagic { kind: ImageKind, found: [u8; 8] },
    /// A header version this parser does not know.
    UnsupportedVersion { kind: ImageKind, version: u32 },
    /// A page size that is not a power of two in [`crate::MIN_PAGE_SIZE`,
    /// `crate::MAX_PAGE_SIZE`].
    BadPageSize { kind: ImageKind, page_size: u32 },
    /// The header's own size field claims more than the header's pages.
    /// (Smaller or larger values within them are accepted: Android 10's
    /// mkbootimg wrote 1596 for boot v3 and 2108 for vendor_boot v3, where
    /// later ones write 1580 and 2112; the layout never depends on it.)
    BadHeaderSize {
        kind: ImageKind,
        version: u32,
        declared: u32,
        max: u64,
    },
    /// A section (kernel, ramdisk...) runs past the end of the file.
    SectionPastEnd {
        kind: ImageKind,
        section: &'static str,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    /// Offsets or sizes that do not fit in the address space.
    Overflow {
        kind: ImageKind,
        section: &'static str,
    },
    /// A text field (command line, board name) that is not UTF-8.
    NotText {
        kind: ImageKind,
        field: &'static str,
    },
    /// A vendor ramdisk table entry that points outside the vendor ramdisk
    /// section, or a table whose sizes do not add up.
    BadRamdiskTable { index: u32, why: String },
    /// A boot image of this version cannot be paired with a vendor_boot
    /// image (only header v3 and later can), or the two versions differ.
    VendorMismatch { boot: u32, vendor: u32 },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { kind, need, have } => write!(
                f,
                "{kind} truncated: its header needs {need} bytes, the file has {have}"
            ),
            Error::BadMagic { kind, found } => write!(
                f,
                "not a {kind}: magic is {:?}, expected {:?}",
                String::from_utf8_lossy(found),
                match kind {
                    ImageKind::Boot => "ANDROID!",
                    ImageKind::VendorBoot => "VNDRBOOT",
                }
            ),
            Error::UnsupportedVersion { kind, version } => write!(
                f,
                "{kind} header version {version} is not supported (known: {})",
                match kind {
                    ImageKind::Boot => "0 to 4",
                    ImageKind::VendorBoot => "3 and 4",
                }
            ),
            Error::BadPageSize { kind, page_size } => write!(
                f,
                "{kind} page size {page_size} is not a power of two between {} and {}",
                crate::MIN_PAGE_SIZE,
                crate::MAX_PAGE_SIZE
            ),
            Error::BadHeaderSize {
                kind,
                version,
                declared,
                max,
            } => write!(
                f,
                "{kind} header v{version} declares header_size {declared}, more than its header pages ({max} bytes)"
            ),
            Error::SectionPastEnd {
                kind,
                section,
                offset,
                size,
                file_len,
            } => write!(
                f,
                "{kind}: {section} ({size} bytes at offset {offset}) runs past the end of the file ({file_len} bytes)"
            ),
            Error::Overflow { kind, section } => {
                write!(f, "{kind}: the offset of {section} overflows")
            }
            Error::NotText { kind, field } => write!(f, "{kind}: {field} is not UTF-8 text"),
            Error::BadRamdiskTable { index, why } => {
                write!(f, "vendor_boot ramdisk table entry {index}: {why}")
            }
            Error::VendorMismatch { boot, vendor } => write!(
                f,
                "a boot image v{boot} cannot be paired with a vendor_boot image v{vendor} \
                 (vendor_boot goes with boot header v3 or later, of the same version)"
            ),
        }
    }
}

impl std::error::Error for Error {}
