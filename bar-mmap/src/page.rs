// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Page size and page arithmetic.

use crate::{Error, Result};

/// A host or guest page size: a power of two of at least 4 KiB.
///
/// It is a parameter everywhere rather than a constant, because 64 KiB pages (aarch64, POWER)
/// are where sub-page BARs and MSI-X tables sharing a page actually happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageSize(u64);

impl PageSize {
    /// 4 KiB pages.
    pub const SIZE_4K: PageSize = PageSize(0x1000);
    /// 64 KiB pages.
    pub const SIZE_64K: PageSize = PageSize(0x1_0000);

    /// Checks and wraps a page size.
    pub fn new(size: u64) -> Result<Self> {
        if size.is_power_of_two() && size >= 0x1000 {
            Ok(PageSize(size))
        } else {
            Err(Error::InvalidPageSize(size))
        }
    }

    /// The page size in bytes.
    pub fn get(self) -> u64 {
        self.0
    }

    /// `addr` rounded down to the start of its page.
    pub fn align_down(self, addr: u64) -> u64 {
        addr & !(self.0 - 1)
    }

    /// `addr` rounded up to a page boundary, or `None` on overflow.
    pub fn align_up(self, addr: u64) -> Option<u64> {
        addr.checked_add(self.0 - 1).map(|a| a & !(self.0 - 1))
    }

    /// Whether `addr` is at the start of a page.
    pub fn is_aligned(self, addr: u64) -> bool {
        addr & (self.0 - 1) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_sizes() {
        assert!(PageSize::new(0).is_err());
        assert!(PageSize::new(0x800).is_err());
        assert!(PageSize::new(0x3000).is_err());
        assert_eq!(PageSize::new(0x1_0000).ok(), Some(PageSize::SIZE_64K));
    }

    #[test]
    fn rounding() {
        let p = PageSize::SIZE_64K;
        assert_eq!(p.align_down(0x1_2345), 0x1_0000);
        assert_eq!(p.align_up(0x1_2345), Some(0x2_0000));
        assert_eq!(p.align_up(0x2_0000), Some(0x2_0000));
        assert_eq!(p.align_up(u64::MAX), None);
        assert!(p.is_aligned(0x30_0000));
        assert!(!PageSize::SIZE_4K.is_aligned(0x1100));
    }
}
