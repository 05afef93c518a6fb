// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`DirtyLog`]: the guest pages a VM's passthrough devices may have written, for a VMM that
//! migrates guest memory: `vfio-core`'s [`DirtyTracker`] over the VM's container and the DMA
//! logs of its devices, ORed into the VMM's own bitmaps.

use std::sync::Arc;

use vfio_core::{DirtySource, DirtyTracker, DmaLogging, VfioContainer};

use crate::{Error, PassthroughDevice, Result};

/// The VMM's dirty bitmap of one guest memory region: bit `n` (word `n / 64`, bit `n % 64`) is
/// the page at `gpa + n * page_size` ([`DirtyLog::page_size`]).
#[derive(Debug)]
pub struct DirtyBitmap<'a> {
    /// The region's first guest physical address (page aligned).
    pub gpa: u64,
    /// The VMM's bitmap of it (its own dirty log, KVM's for instance).
    pub bits: &'a mut [u64],
}

/// A device the VMM gave no DMA log: it answers as a device without the feature (ENOTTY),
/// which makes the tracker fall back to the container.
#[derive(Debug)]
struct NoDmaLogging;

fn enotty() -> vfio_core::Error {
    vfio_core::Error::DmaLogging(std::io::Error::from_raw_os_error(libc::ENOTTY))
}

impl DmaLogging for NoDmaLogging {
    fn dma_logging_start(&self, _: u64, _: &[(u64, u64)]) -> vfio_core::Result<()> {
        Err(enotty())
    }
    fn dma_logging_stop(&self) -> vfio_core::Result<()> {
        Err(enotty())
    }
    fn dma_logging_report(&self, _: u64, _: u64, _: u64, _: &mut [u64]) -> vfio_core::Result<()> {
        Err(enotty())
    }
}

impl PassthroughDevice {
    /// Attaches the DMA logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`) of the VFIO device this
    /// one was built from (the same object; a `KernelDevice` has it, and answers ENOTTY when
    /// its driver does not log). A different object is refused with [`Error::NotSameDevice`].
    /// Without it [`DirtyLog`] counts the device as one that does not log.
    pub fn set_dma_logging(&mut self, log: Arc<dyn DmaLogging>) -> Result<()> {
        if !crate::device::same_object(&self.dev, &log) {
            return Err(Error::NotSameDevice);
        }
        self.dma_logging = Some(log);
        Ok(())
    }
}

/// Dirty-page tracking of a VM's guest memory for its passthrough devices.
///
/// Started over the VM's container and every passthrough device of the VM: when every device
/// logs its own DMA (its DMA logging attached with [`PassthroughDevice::set_dma_logging`] and
/// supported by its driver) their logs are used, otherwise the container's tracking, which
/// without hardware dirty tracking reports every page of every DMA mapping while an ordinary
/// (non-pinning) device is attached (Linux v6.12.117 `drivers/vfio/vfio_iommu_type1.c`,
/// `update_user_bitmap()`, `vfio_dma_populate_bitmap()`). Reports OR into the VMM's bitmaps,
/// so a bit the VMM set stays set and the result is the union of both; pages outside every DMA
/// mapping are never set by the container.
#[derive(Debug)]
pub struct DirtyLog {
    tracker: DirtyTracker,
}

impl DirtyLog {
    /// Start tracking `container`'s guest memory for `devices`, every passthrough device of
    /// the VM.
    ///
    /// # Errors
    /// [`Error::DirtyTracking`] when the container cannot track or a device fails to start
    /// logging (other than with ENOTTY); nothing is left started.
    pub fn start(
        container: Arc<dyn VfioContainer>,
        devices: &[&PassthroughDevice],
    ) -> Result<Self> {
        let loggers = devices
            .iter()
            .map(|d| match &d.dma_logging {
                Some(l) => l.clone(),
                None => Arc::new(NoDmaLogging) as Arc<dyn DmaLogging>,
            })
            .collect();
        let tracker = DirtyTracker::start(container, loggers).map_err(Error::DirtyTracking)?;
        Ok(DirtyLog { tracker })
    }

    /// Where the pages come from: the devices' logs or the container.
    pub fn source(&self) -> DirtySource {
        self.tracker.source()
    }

    /// The page size of the bitmaps.
    pub fn page_size(&self) -> u64 {
        self.tracker.page_size()
    }

    /// OR into `bitmap` the pages of guest memory from `gpa` the devices may have written
    /// since the last report.
    ///
    /// # Errors
    /// [`Error::DirtyTracking`].
    pub fn report(&self, gpa: u64, bitmap: &mut [u64]) -> Result<()> {
        self.tracker
            .report(gpa, bitmap)
            .map_err(Error::DirtyTracking)
    }

    /// [`DirtyLog::report`] for each of the VMM's bitmaps.
    ///
    /// # Errors
    /// [`Error::DirtyTracking`] at the first region that fails.
    pub fn report_all(&self, bitmaps: &mut [DirtyBitmap<'_>]) -> Result<()> {
        for b in bitmaps.iter_mut() {
            self.report(b.gpa, b.bits)?;
        }
        Ok(())
    }

    /// Stop tracking.
    ///
    /// # Errors
    /// [`Error::DirtyTracking`].
    pub fn stop(self) -> Result<()> {
        self.tracker.stop().map_err(Error::DirtyTracking)
    }
}
