// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`DirtyTracker`] on the simulated container: which source it picks and what a report holds.
//! Most devices here are test doubles of the DMA-logging feature: of the simulated devices only
//! the mtty profile has it, and as mtty's it logs nothing (the lab checks that real vfio-pci
//! devices answer ENOTTY and the tracker falls back to the container: `tests/lab_iommu.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod iommu_rules;

use std::sync::{Arc, Mutex};

use vfio_core::sim::{lab_iommu_info, SimContainer};
use vfio_core::{DirtyOp, DirtySource, DirtyTracker, DmaLogging, Error, Type1, VfioContainer};

/// A device that logs DMA: `writes` are the pages (by IOVA) it wrote since the last report.
#[derive(Debug, Default)]
struct Logger {
    supported: bool,
    fail_start: Option<i32>,
    fail_report: Option<i32>,
    state: Mutex<(bool, Vec<u64>)>,
}

impl DmaLogging for Logger {
    fn dma_logging_start(&self, _page: u64, _ranges: &[(u64, u64)]) -> vfio_core::Result<()> {
        if !self.supported {
            return Err(Error::DmaLogging(std::io::Error::from_raw_os_error(
                libc::ENOTTY,
            )));
        }
        if let Some(e) = self.fail_start {
            return Err(Error::DmaLogging(std::io::Error::from_raw_os_error(e)));
        }
        self.state.lock().unwrap().0 = true;
        Ok(())
    }

    fn dma_logging_stop(&self) -> vfio_core::Result<()> {
        self.state.lock().unwrap().0 = false;
        Ok(())
    }

    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page: u64,
        bitmap: &mut [u64],
    ) -> vfio_core::Result<()> {
        if let Some(e) = self.fail_report {
            return Err(Error::DmaLogging(std::io::Error::from_raw_os_error(e)));
        }
        let mut s = self.state.lock().unwrap();
        // Reading clears what was read, and only that.
        s.1.retain(|&at| {
            let inside = at >= iova && at < iova + length;
            if inside {
                let n = (at - iova) / page;
                bitmap[(n / 64) as usize] |= 1 << (n % 64);
            }
            !inside
        });
        Ok(())
    }
}

fn logging(writes: &[u64]) -> Arc<Logger> {
    Arc::new(Logger {
        supported: true,
        state: Mutex::new((false, writes.to_vec())),
        ..Logger::default()
    })
}

fn container() -> (Arc<SimContainer>, vfio_core::sim::SimGroup) {
    let c = SimContainer::new(lab_iommu_info());
    let g = c.join().unwrap();
    c.map_guest_region(&iommu_rules::region(0, 64 * 4096))
        .unwrap();
    (c, g)
}

#[test]
fn without_device_logs_the_container_reports_every_mapped_page() {
    let (c, _g) = container();
    let plain: Arc<dyn DmaLogging> = Arc::new(Logger::default());
    let t = DirtyTracker::start(c.clone(), vec![logging(&[0x1000]), plain]).unwrap();
    assert_eq!(t.source(), DirtySource::Container);
    let mut bits = [0u64, 1];
    t.report(0, &mut bits).unwrap();
    assert_eq!(
        bits,
        [u64::MAX, 1],
        "64 mapped pages; the VMM's bit 64 kept"
    );
    t.stop().unwrap();
    let mut raw = [0u64];
    let err = c
        .dirty_pages(DirtyOp::Bitmap {
            iova: 0,
            size: 64 * 4096,
            page_size: 4096,
            bitmap: &mut raw,
        })
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL), "tracking stopped");
}

#[test]
fn when_every_device_logs_the_report_is_their_union_with_the_vmms_bits() {
    let (c, _g) = container();
    let a = logging(&[0x3000, 0x5000]);
    let b = logging(&[0x5000, 0x3f000]);
    let t = DirtyTracker::start(c.clone(), vec![a.clone(), b.clone()]).unwrap();
    assert_eq!(t.source(), DirtySource::DeviceLogs);
    assert!(a.state.lock().unwrap().0 && b.state.lock().unwrap().0);
    let mut bits = [1u64 << 10];
    t.report(0, &mut bits).unwrap();
    assert_eq!(bits[0], (1 << 3) | (1 << 5) | (1 << 63) | (1 << 10));
    // Reported pages are cleared in the logs.
    let mut again = [0u64];
    t.report(0, &mut again).unwrap();
    assert_eq!(again[0], 0);
    // The container's own tracking was never started.
    let mut raw = [0u64];
    assert!(c
        .dirty_pages(DirtyOp::Bitmap {
            iova: 0,
            size: 64 * 4096,
            page_size: 4096,
            bitmap: &mut raw,
        })
        .is_err());
    t.stop().unwrap();
    assert!(!a.state.lock().unwrap().0 && !b.state.lock().unwrap().0);
}

#[test]
fn a_device_that_fails_to_start_logging_leaves_nothing_started() {
    let (c, _g) = container();
    let a = logging(&[]);
    let broken = Arc::new(Logger {
        supported: true,
        fail_start: Some(libc::EIO),
        ..Logger::default()
    });
    let err = DirtyTracker::start(c, vec![a.clone(), broken]).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EIO));
    assert!(
        !a.state.lock().unwrap().0,
        "the first device's logging was stopped again"
    );
}

/// The simulated devices: an mtty logs (and reports nothing), a vfio-pci device does not. On
/// the lab's kernel (no iova_bitmap, the mtty profile's default) an mtty's log starts but
/// cannot report, so even a VM of mttys gets the container; on a kernel that reports, a VM of
/// mttys gets their empty logs, and a vfio-pci device among them brings the container back.
#[test]
fn simulated_mttys_log_nothing_and_a_vfio_pci_device_brings_the_container_back() {
    use vfio_core::sim::SimDevice;
    let (c, _g) = container();
    let sims = [SimDevice::mtty(2).unwrap(), SimDevice::mtty(2).unwrap()].map(Arc::new);
    let mttys: Vec<Arc<dyn DmaLogging>> = sims.iter().map(|s| s.clone() as _).collect();
    let t = DirtyTracker::start(c.clone(), mttys.clone()).unwrap();
    assert_eq!(t.source(), DirtySource::Container, "the lab's kernel");
    t.stop().unwrap();

    for s in &sims {
        s.set_kernel_reports_dma_logs(true);
    }
    let t = DirtyTracker::start(c.clone(), mttys.clone()).unwrap();
    assert_eq!(t.source(), DirtySource::DeviceLogs);
    let mut bits = [1u64 << 9];
    t.report(0, &mut bits).unwrap();
    assert_eq!(bits, [1 << 9], "only the VMM's own page");
    t.stop().unwrap();

    let pci: Arc<dyn DmaLogging> = Arc::new(SimDevice::builder(0x8086, 0x10d3).build().unwrap());
    let t = DirtyTracker::start(c, vec![mttys[0].clone(), pci]).unwrap();
    assert_eq!(t.source(), DirtySource::Container);
    let mut bits = [0u64, 1 << 3];
    t.report(0, &mut bits).unwrap();
    assert_eq!(
        bits,
        [u64::MAX, 1 << 3],
        "64 mapped pages, and the VMM's page 67"
    );
    t.stop().unwrap();
}

/// A log that starts but cannot report (the lab's kernel: no CONFIG_IOMMUFD_DRIVER, so
/// DMA_LOGGING_REPORT is EOPNOTSUPP) is found out at start: the logs stop and the container
/// tracks. A page the start's probe read from a working log reaches the first report once.
#[test]
fn logs_that_cannot_report_fall_back_to_the_container_and_probed_pages_are_kept() {
    let (c, _g) = container();
    let mute = Arc::new(Logger {
        supported: true,
        fail_report: Some(libc::EOPNOTSUPP),
        ..Logger::default()
    });
    let a = logging(&[0x2000]);
    let t = DirtyTracker::start(c.clone(), vec![a.clone(), mute.clone()]).unwrap();
    assert_eq!(t.source(), DirtySource::Container);
    assert!(!a.state.lock().unwrap().0 && !mute.state.lock().unwrap().0);
    let mut bits = [0u64];
    t.report(0, &mut bits).unwrap();
    assert_eq!(bits, [u64::MAX]);
    t.stop().unwrap();

    // Page 0 (the probe's) and page 9 were written before the first report.
    let b = logging(&[0x0, 0x9000]);
    let t = DirtyTracker::start(c, vec![b.clone()]).unwrap();
    assert_eq!(t.source(), DirtySource::DeviceLogs);
    assert_eq!(
        b.state.lock().unwrap().1,
        [0x9000],
        "the probe read page 0 only"
    );
    let mut bits = [0u64];
    t.report(0, &mut bits).unwrap();
    assert_eq!(bits, [1 | 1 << 9]);
    let mut again = [0u64];
    t.report(0, &mut again).unwrap();
    assert_eq!(again, [0], "reported once");
    t.stop().unwrap();
}
