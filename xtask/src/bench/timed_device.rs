// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A [`VfioDevice`] wrapper that adds up the time spent inside the device, so the report can
//! tell the library's own cost from the simulated device's (the simulator validates every
//! eventfd it is handed, which a real VFIO device does in the kernel instead).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_core::{DeviceInfo, IrqSet, VfioDevice};

/// Forwards every call to `inner` and counts the nanoseconds spent in it.
#[derive(Debug)]
pub struct TimedDevice {
    inner: Arc<dyn VfioDevice>,
    nanos: Arc<AtomicU64>,
}

impl TimedDevice {
    /// Wraps `inner`, adding to `nanos`.
    pub fn new(inner: Arc<dyn VfioDevice>, nanos: Arc<AtomicU64>) -> Self {
        TimedDevice { inner, nanos }
    }

    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(spent, Ordering::Relaxed);
        out
    }
}

/// Reads a shared nanosecond counter as a duration.
pub fn spent(nanos: &AtomicU64) -> Duration {
    Duration::from_nanos(nanos.load(Ordering::Relaxed))
}

impl AsFd for TimedDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl VfioDevice for TimedDevice {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> vfio_core::Result<()> {
        self.timed(|| self.inner.region_read(index, offset, buf))
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> vfio_core::Result<()> {
        self.timed(|| self.inner.region_write(index, offset, data))
    }

    fn set_irqs(&self, set: &IrqSet) -> vfio_core::Result<()> {
        self.timed(|| self.inner.set_irqs(set))
    }

    fn reset(&self) -> vfio_core::Result<()> {
        self.timed(|| self.inner.reset())
    }
}
