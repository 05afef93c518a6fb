// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`DirtyTracker`]: the pages of guest memory the VM's passed-through devices may have written,
//! for live migration, through one interface whatever can report them.
//!
//! Two sources can. The type1 container ([`VfioContainer::dirty`]) without hardware dirty
//! tracking cannot see device writes: it reports every page of every DMA mapping while any
//! ordinary device is attached (and nothing for mediated devices that pin no pages). A device
//! with the DMA-logging feature (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`, [`DmaLogging`]) logs the
//! pages it actually wrote. When every device of the VM logs its own DMA the tracker uses their
//! logs only (the container would report everything); otherwise it uses the container. Either
//! way a report ORs into the VMM's own bitmap (its KVM dirty log, say), so the VMM ends up with
//! the union of both.
//!
//! A device whose logging starts may still be unable to report: the kernel's reports go
//! through its `iova_bitmap`, which exists only with `CONFIG_IOMMUFD_DRIVER`; without it
//! `iova_bitmap_for_each()` answers `EOPNOTSUPP` (Linux v6.12.117
//! `include/linux/iova_bitmap.h`, called from `vfio_ioctl_device_feature_logging_report()`),
//! as on the lab's Debian kernel. So once every log started, the tracker asks each for one
//! page; `EOPNOTSUPP` (or `ENOTTY`) stops the logs and falls back to the container. A page a
//! probe found dirty (and so cleared in the device's log) is carried into the next report that
//! covers it, so nothing is lost.

use std::fmt::Debug;
use std::sync::Arc;

use super::{DirtyRequest, VfioContainer};
use crate::error::{Error, Result};

/// A device that logs its own DMA writes (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START`, `_STOP`,
/// `_REPORT`). A device without the feature answers `start` with ENOTTY.
pub trait DmaLogging: Send + Sync + Debug {
    /// Start logging writes to `ranges` (IOVA, length) in pages of `page_size` bytes.
    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<()>;

    /// Stop logging.
    fn dma_logging_stop(&self) -> Result<()>;

    /// The pages of `[iova, iova + length)` written since the last report, in `bitmap` (bit `n`
    /// is page `iova + n * page_size`); reporting clears them.
    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<()>;
}

/// Where a [`DirtyTracker`] gets its dirty pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirtySource {
    /// The container's dirty-page tracking (some device does not log its DMA).
    Container,
    /// The devices' own DMA logs (every device logs).
    DeviceLogs,
}

/// Dirty-page tracking for one VM's passed-through devices. See the module docs.
#[derive(Debug)]
pub struct DirtyTracker {
    container: Arc<dyn VfioContainer>,
    loggers: Vec<Arc<dyn DmaLogging>>,
    source: DirtySource,
    page_size: u64,
    /// Pages (by address) the start's probe found dirty, not yet reported.
    carried: std::sync::Mutex<Vec<u64>>,
}

/// What asking every started log for one page said.
enum Probe {
    /// Every log reports; these pages were dirty (and are now cleared in the logs).
    Reports(Vec<u64>),
    /// Some log cannot report (`EOPNOTSUPP`, `ENOTTY`).
    CannotReport,
}

/// Ask every log for the page at `iova`.
fn probe(loggers: &[Arc<dyn DmaLogging>], iova: u64, page: u64) -> Result<Probe> {
    let mut dirty = false;
    for l in loggers {
        let mut word = [0u64; 1];
        match l.dma_logging_report(iova, page, page, &mut word) {
            Ok(()) => dirty |= word[0] & 1 != 0,
            Err(e) if matches!(e.errno(), Some(libc::EOPNOTSUPP | libc::ENOTTY)) => {
                return Ok(Probe::CannotReport)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Probe::Reports(if dirty { vec![iova] } else { Vec::new() }))
}

impl DirtyTracker {
    /// Start tracking the guest memory of `container` for `devices` (every device of the VM):
    /// their DMA logs if all of them log, else the container's tracking. A device that fails
    /// to start logging other than with ENOTTY is an error, and nothing is left started.
    pub fn start(
        container: Arc<dyn VfioContainer>,
        devices: Vec<Arc<dyn DmaLogging>>,
    ) -> Result<Self> {
        let page_size = container.iommu_info()?.min_page_size();
        let ranges: Vec<(u64, u64)> = container
            .dma_mappings()
            .iter()
            .map(|m| (m.iova, m.size))
            .collect();
        let mut started: Vec<Arc<dyn DmaLogging>> = Vec::new();
        let mut all_log = !devices.is_empty() && !ranges.is_empty();
        for d in &devices {
            if !all_log {
                break;
            }
            match d.dma_logging_start(page_size, &ranges) {
                Ok(()) => started.push(d.clone()),
                Err(e) if e.errno() == Some(libc::ENOTTY) => all_log = false,
                Err(e) => {
                    stop_all(&started);
                    return Err(e);
                }
            }
        }
        if all_log {
            let first = ranges.first().map_or(0, |r| r.0);
            match probe(&started, first, page_size) {
                Ok(Probe::Reports(carried)) => {
                    return Ok(DirtyTracker {
                        container,
                        loggers: started,
                        source: DirtySource::DeviceLogs,
                        page_size,
                        carried: std::sync::Mutex::new(carried),
                    })
                }
                Ok(Probe::CannotReport) => {}
                Err(e) => {
                    stop_all(&started);
                    return Err(e);
                }
            }
        }
        stop_all(&started);
        container.dirty(DirtyRequest::Start)?;
        Ok(DirtyTracker {
            container,
            loggers: Vec::new(),
            source: DirtySource::Container,
            page_size,
            carried: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Which source the tracker uses.
    pub fn source(&self) -> DirtySource {
        self.source
    }

    /// The page size of the bitmaps (the IOMMU's smallest page).
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// OR into `bitmap` the pages of guest memory from `gpa` (bit `n` is page
    /// `gpa + n * page_size`) the devices may have written since the last report.
    pub fn report(&self, gpa: u64, bitmap: &mut [u64]) -> Result<()> {
        match self.source {
            DirtySource::Container => self.container.dirty(DirtyRequest::Report { gpa, bitmap }),
            DirtySource::DeviceLogs => {
                let page = self.page_size;
                let len =
                    (bitmap.len() as u64)
                        .checked_mul(64 * page)
                        .ok_or(Error::DmaUnaligned {
                            iova: gpa,
                            size: u64::MAX,
                            page,
                        })?;
                let mut got = vec![0u64; bitmap.len()];
                for l in &self.loggers {
                    got.iter_mut().for_each(|w| *w = 0);
                    l.dma_logging_report(gpa, len, page, &mut got)?;
                    for (dst, src) in bitmap.iter_mut().zip(&got) {
                        *dst |= *src;
                    }
                }
                let mut carried = self.carried.lock().unwrap_or_else(|e| e.into_inner());
                carried.retain(|&at| {
                    let inside = at >= gpa && at - gpa < len;
                    if inside {
                        let n = (at - gpa) / page;
                        if let Some(w) = bitmap.get_mut((n / 64) as usize) {
                            *w |= 1 << (n % 64);
                        }
                    }
                    !inside
                });
                Ok(())
            }
        }
    }

    /// Stop tracking.
    pub fn stop(self) -> Result<()> {
        match self.source {
            DirtySource::Container => self.container.dirty(DirtyRequest::Stop),
            DirtySource::DeviceLogs => {
                let mut first = Ok(());
                for l in &self.loggers {
                    if let Err(e) = l.dma_logging_stop() {
                        if first.is_ok() {
                            first = Err(e);
                        }
                    }
                }
                first
            }
        }
    }
}

fn stop_all(loggers: &[Arc<dyn DmaLogging>]) {
    for l in loggers {
        let _ = l.dma_logging_stop();
    }
}
