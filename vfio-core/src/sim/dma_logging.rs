// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulated device's DMA logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START/STOP/REPORT`).
//!
//! The vfio core checks each request before the driver sees it (Linux v6.12.117
//! `drivers/vfio/vfio_main.c`, `vfio_ioctl_device_feature_logging_start()`,
//! `_logging_stop()`, `_logging_report()`): `ENOTTY` without `log_ops`; at start no ranges is
//! `EINVAL`, more than `LOG_MAX_RANGES` (a page of 16-byte ranges: 256) `E2BIG`, a range not
//! aligned to the page size `EINVAL`, one that wraps `EOVERFLOW`, overlapping ranges `EINVAL`;
//! a report with a page size below 4 KiB or not a power of two is `EINVAL`, a range that wraps
//! `EOVERFLOW`.
//!
//! vfio-pci has no `log_ops` (only variant drivers such as mlx5 do), so the generic profile
//! answers `ENOTTY`. mtty has them and they do nothing (Linux v6.12.117
//! `samples/vfio-mdev/mtty.c`, `mtty_log_start()`, `mtty_log_stop()`,
//! `mtty_log_read_and_clear()` all return 0): the mtty profile accepts what the core accepts
//! and never reports a page, leaving the caller's bitmap as it was.
//!
//! A report also needs the kernel's `iova_bitmap`, which is built only with
//! `CONFIG_IOMMUFD_DRIVER`: without it `iova_bitmap_for_each()` is a stub answering
//! `EOPNOTSUPP` (Linux v6.12.117 `include/linux/iova_bitmap.h`), so every report fails after
//! the core's checks while start and stop succeed. The lab's Debian kernel is built so (no
//! IOMMUFD at all), and that is the mtty profile's default;
//! [`SimDevice::set_kernel_reports_dma_logs`] models a kernel with it.

use crate::dma::DmaLogging;
use crate::error::{errno, Error, Result};

use super::SimDevice;

/// `LOG_MAX_RANGES`: the ranges that fit in a 4 KiB page.
const LOG_MAX_RANGES: usize = 4096 / 16;

fn fail(e: i32) -> Error {
    Error::DmaLogging(errno(e))
}

impl SimDevice {
    /// Whether the profile has `log_ops` (mtty does, vfio-pci does not).
    fn has_log_ops(&self) -> bool {
        self.lock().mtty.is_some()
    }

    /// Whether the simulated kernel has `CONFIG_IOMMUFD_DRIVER`, which DMA-logging reports
    /// need (see the module docs): `false` (the lab's kernel) until set. Only the mtty profile
    /// has DMA logging; for others this does nothing.
    pub fn set_kernel_reports_dma_logs(&self, reports: bool) {
        if let Some(m) = self.lock().mtty.as_mut() {
            m.reports_dma_logs = reports;
        }
    }

    fn reports_dma_logs(&self) -> bool {
        self.lock()
            .mtty
            .as_ref()
            .is_some_and(|m| m.reports_dma_logs)
    }
}

/// `IS_ALIGNED(x, a)` as the kernel computes it (`(x & (a - 1)) == 0`, wrapping).
fn is_aligned(x: u64, a: u64) -> bool {
    x & a.wrapping_sub(1) == 0
}

impl DmaLogging for SimDevice {
    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<()> {
        if !self.has_log_ops() {
            return Err(fail(libc::ENOTTY));
        }
        if ranges.is_empty() {
            return Err(fail(libc::EINVAL));
        }
        if ranges.len() > LOG_MAX_RANGES {
            return Err(fail(libc::E2BIG));
        }
        let mut seen: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(iova, length) in ranges {
            if !is_aligned(iova, page_size) || !is_aligned(length, page_size) {
                return Err(fail(libc::EINVAL));
            }
            iova.checked_add(length)
                .ok_or_else(|| fail(libc::EOVERFLOW))?;
            // The interval tree's nodes are [start, last]; a zero-length range wraps `last`
            // to below `start` and overlaps nothing.
            let last = (iova + length).wrapping_sub(1);
            if seen.iter().any(|&(s, l)| iova <= l && s <= last) {
                return Err(fail(libc::EINVAL));
            }
            seen.push((iova, last));
        }
        Ok(())
    }

    fn dma_logging_stop(&self) -> Result<()> {
        if !self.has_log_ops() {
            return Err(fail(libc::ENOTTY));
        }
        Ok(())
    }

    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        _bitmap: &mut [u64],
    ) -> Result<()> {
        if !self.has_log_ops() {
            return Err(fail(libc::ENOTTY));
        }
        if page_size < 4096 || !page_size.is_power_of_two() {
            return Err(fail(libc::EINVAL));
        }
        iova.checked_add(length)
            .ok_or_else(|| fail(libc::EOVERFLOW))?;
        if !self.reports_dma_logs() {
            return Err(fail(libc::EOPNOTSUPP));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vfio_pci_has_no_dma_logging_and_mtty_logs_nothing() {
        let pci = SimDevice::builder(0x8086, 0x10d3).build().unwrap();
        for r in [
            pci.dma_logging_start(4096, &[(0, 4096)]),
            pci.dma_logging_stop(),
            pci.dma_logging_report(0, 4096, 4096, &mut [0]),
        ] {
            assert_eq!(r.unwrap_err().errno(), Some(libc::ENOTTY));
        }
        let mtty = SimDevice::mtty(2).unwrap();
        mtty.dma_logging_start(4096, &[(0, 0x10000), (0x20000, 0x1000)])
            .unwrap();
        let mut bits = [0x8000_0000_0000_0001u64, 2];
        // The lab's kernel has no iova_bitmap: the report fails after the core's checks.
        let err = mtty.dma_logging_report(0, 128 * 4096, 4096, &mut bits);
        assert_eq!(err.unwrap_err().errno(), Some(libc::EOPNOTSUPP));
        mtty.set_kernel_reports_dma_logs(true);
        mtty.dma_logging_report(0, 128 * 4096, 4096, &mut bits)
            .unwrap();
        assert_eq!(bits, [0x8000_0000_0000_0001, 2], "nothing reported");
        mtty.dma_logging_stop().unwrap();
    }

    #[test]
    fn the_cores_checks_come_first() {
        let d = SimDevice::mtty(2).unwrap();
        let errno = |r: Result<()>| r.unwrap_err().errno();
        assert_eq!(errno(d.dma_logging_start(4096, &[])), Some(libc::EINVAL));
        let many = vec![(0u64, 4096u64); LOG_MAX_RANGES + 1];
        assert_eq!(errno(d.dma_logging_start(4096, &many)), Some(libc::E2BIG));
        assert_eq!(
            errno(d.dma_logging_start(4096, &[(0x800, 4096)])),
            Some(libc::EINVAL)
        );
        assert_eq!(
            errno(d.dma_logging_start(4096, &[(u64::MAX - 4095, 8192)])),
            Some(libc::EOVERFLOW)
        );
        assert_eq!(
            errno(d.dma_logging_start(4096, &[(0, 0x2000), (0x1000, 0x1000)])),
            Some(libc::EINVAL)
        );
        assert_eq!(
            errno(d.dma_logging_report(0, 4096, 2048, &mut [0])),
            Some(libc::EINVAL)
        );
        assert_eq!(
            errno(d.dma_logging_report(0, 4096, 12288, &mut [0])),
            Some(libc::EINVAL)
        );
        assert_eq!(
            errno(d.dma_logging_report(u64::MAX, 2, 4096, &mut [0])),
            Some(libc::EOVERFLOW)
        );
    }
}
