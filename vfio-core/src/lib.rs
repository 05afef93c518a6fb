// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VFIO device boundary of the workspace.
//!
//! * [`VfioDevice`] and [`VfioMigration`] ([`device`]): the narrow trait the rest of the
//!   workspace programs against: info, region access that reports errors, one
//!   `VFIO_DEVICE_SET_IRQS` with its full semantics, reset, migration v2.
//! * [`IrqSet`] ([`irq_set`]): a typed SET_IRQS request, the kernel's argument checks and the
//!   `struct vfio_irq_set` bytes.
//! * [`MsixTriggers`] ([`msix`]): enable every MSI-X vector with one call, and a per-vector
//!   trigger cache so an unchanged fd costs no ioctl.
//! * `KernelDevice`, `Container`, `DeviceAddress` (feature `kernel`, default): the Linux
//!   backend: a type1 container, IOMMU groups, devices opened by PCI address, sysfs path, VF
//!   token or mdev UUID.
//! * `sim::SimDevice` (feature `sim`): a simulated vfio-pci device with Linux's semantics,
//!   counters and fault injection, for tests and benchmarks.
//!
//! ```
//! # #[cfg(feature = "sim")]
//! # {
//! use std::sync::Arc;
//! use vfio_core::sim::{MsixPlacement, SimDevice};
//! use vfio_core::{MsixTriggers, VfioDevice};
//! use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
//! use std::os::fd::AsRawFd;
//!
//! let sim = Arc::new(
//!     SimDevice::builder(0x1af4, 0x1041)
//!         .bar(1, pci_config::BarKind::Mem32, 0x4000, false)
//!         .msix(MsixPlacement::in_bar(4, 1))
//!         .build()?,
//! );
//! let device: Arc<dyn VfioDevice> = sim.clone();
//! let fds: Vec<EventFd> = (0..4).map(|_| EventFd::new(EFD_NONBLOCK)).collect::<Result<_, _>>()?;
//! let mut msix = MsixTriggers::for_device(device.as_ref()).unwrap();
//! msix.enable_all(device.as_ref(), &fds.iter().map(|f| Some(f.as_raw_fd())).collect::<Vec<_>>())?;
//! assert_eq!(sim.counters().set_irqs, 1);
//! sim.raise(2);
//! assert_eq!(fds[2].read()?, 1);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "sim")]
pub mod conformance;
pub mod device;
pub mod dma;
mod error;
pub mod info;
mod ioctl;
pub mod irq_set;
#[cfg(feature = "kernel")]
mod kernel;
#[cfg(feature = "lab")]
pub mod lab;
pub mod migration;
pub mod msix;
#[cfg(feature = "sim")]
pub mod sim;

pub use device::{VfioDevice, VfioMigration};
pub use dma::{
    memfd_guest_region, DirtyOp, DirtyRequest, DirtySource, DirtyTracker, DirtyTrackingInfo,
    DmaLogging, DmaMapping, DmaTable, IommuInfo, IovaRange, Type1, VfioContainer,
};
pub use error::{Error, Result};
pub use info::{DeviceInfo, IrqInfo, RegionInfo};
pub use irq_set::{IrqAction, IrqData, IrqSet};
#[cfg(feature = "kernel")]
pub use kernel::{Container, DeviceAddress, Group, KernelDevice, Uuid};
pub use migration::{DataChunk, MigState, MigrationDataFd, MigrationFeatures, PrecopyInfo};
pub use msix::{MsixTriggers, TriggerUpdate};
