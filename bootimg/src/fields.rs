//! Reading a header's little-endian fields, and laying out page-aligned
//! sections with every offset checked.

use crate::{Error, ImageKind, MAX_PAGE_SIZE, MIN_PAGE_SIZE};

/// A cursor over a header whose length was checked beforehand; reads past
/// its end give zeros (never a panic), which the caller's length check
/// rules out.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, at: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.at.min(self.bytes.len());
        let end = self.at.saturating_add(n).min(self.bytes.len());
        self.at = self.at.saturating_add(n);
        &self.bytes[start..end]
    }

    pub(crate) fn u32(&mut self) -> u32 {
        let mut word = [0u8; 4];
        let bytes = self.take(4);
        word[..bytes.len()].copy_from_slice(bytes);
        u32::from_le_bytes(word)
    }

    pub(crate) fn u64(&mut self) -> u64 {
        let mut word = [0u8; 8];
        let bytes = self.take(8);
        word[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(word)
    }

    pub(crate) fn skip(&mut self, n: usize) {
        self.take(n);
    }
}

/// The text of a NUL-padded field: up to the first NUL (or all of it).
pub(crate) fn text(kind: ImageKind, field: &'static str, bytes: &[u8]) -> Result<String, Error> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end])
        .map(str::to_string)
        .map_err(|_| Error::NotText { kind, field })
}

pub(crate) fn check_page_size(kind: ImageKind, page_size: u32) -> Result<u64, Error> {
    if page_size.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size) {
        Ok(u64::from(page_size))
    } else {
        Err(Error::BadPageSize { kind, page_size })
    }
}

/// Sections placed one after another, each starting on a page boundary.
pub(crate) struct Sections<'a> {
    kind: ImageKind,
    file: &'a [u8],
    page: u64,
    next: u64,
}

impl<'a> Sections<'a> {
    /// The first section starts at `first` (the header's pages).
    pub(crate) fn new(kind: ImageKind, file: &'a [u8], page: u64, first: u64) -> Self {
        Sections {
            kind,
            file,
            page,
            next: first,
        }
    }

    /// The next section of `size` bytes.
    pub(crate) fn take(&mut self, section: &'static str, size: u64) -> Result<&'a [u8], Error> {
        let (kind, file_len) = (self.kind, self.file.len() as u64);
        let offset = self.next;
        let overflow = Error::Overflow { kind, section };
        let end = offset.checked_add(size).ok_or(overflow.clone())?;
        if end > file_len {
            return Err(Error::SectionPastEnd {
                kind,
                section,
                offset,
                size,
                file_len,
            });
        }
        self.next = align_up(end, self.page).ok_or(overflow.clone())?;
        let start = usize::try_from(offset).map_err(|_| overflow.clone())?;
        let end = usize::try_from(end).map_err(|_| overflow)?;
        Ok(&self.file[start..end])
    }
}

/// `value` rounded up to a multiple of `page` (a power of two).
pub(crate) fn align_up(value: u64, page: u64) -> Option<u64> {
    Some(value.checked_add(page - 1)? & !(page - 1))
}
