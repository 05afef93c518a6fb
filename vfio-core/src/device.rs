// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device boundary: what the workspace needs from a VFIO device, and nothing more.

use std::fmt::Debug;
use std::os::fd::AsFd;

use crate::error::Result;
use crate::info::DeviceInfo;
use crate::irq_set::IrqSet;
use crate::migration::{MigState, MigrationDataFd, MigrationFeatures};

/// A VFIO device as the workspace uses it.
///
/// Implemented by the kernel backend (`KernelDevice`, feature `kernel`) and the simulated
/// vfio-pci device (`SimDevice`, feature `sim`). Methods take `&self` so one device can be
/// shared as `Arc<dyn VfioDevice>` between, say, an MMIO handler and a config handler;
/// implementations synchronise internally.
///
/// The [`AsFd`] supertrait is the fd the device's regions are read, written and mmapped
/// through, each at its [`RegionInfo::offset`](crate::RegionInfo::offset): the VFIO device fd
/// for `KernelDevice`; for `SimDevice` the memory file its BARs live in (config space is not
/// in it there: read it with [`VfioDevice::region_read`]). Mapping a region mmappable
/// ([`RegionFlags::MMAP`](crate::info::RegionFlags::MMAP)) at that offset maps the BAR.
pub trait VfioDevice: AsFd + Send + Sync + Debug {
    /// The device's description: flags, regions, irq indexes. Fixed while the device is open.
    fn info(&self) -> &DeviceInfo;

    /// Read `buf.len()` bytes at `offset` of region `index`. Fails (EINVAL) on an unknown
    /// region or an access past its end; device errors are returned, never swallowed.
    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// Write `data` at `offset` of region `index`. Fails (EINVAL) on an unknown or read-only
    /// region or an access past its end.
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<()>;

    /// Issue one `VFIO_DEVICE_SET_IRQS` with the kernel's full semantics. A request the kernel
    /// rejects up front (see [`IrqSet::validate`]) fails with EINVAL and changes nothing.
    fn set_irqs(&self, set: &IrqSet) -> Result<()>;

    /// `VFIO_DEVICE_RESET`, whatever the RESET flag of [`VfioDevice::info`] says (vfio-pci
    /// answers EINVAL for a function it cannot reset; some mdevs reset without the flag).
    fn reset(&self) -> Result<()>;
}

/// Migration v2 of a VFIO device (`VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`).
pub trait VfioMigration: VfioDevice {
    /// The migration features the device supports, or `None` when it cannot migrate.
    fn migration_features(&self) -> Result<Option<MigrationFeatures>>;

    /// Move the device to `state`, walking intermediate states as the kernel does (one driver
    /// call: the driver takes the arcs of `vfio_mig_get_next_state()`, see
    /// [`crate::migration::fsm`]). Entering a saving state (STOP_COPY, PRE_COPY, PRE_COPY_P2P)
    /// from a non-saving one, or RESUMING, returns a new data fd; other transitions return
    /// `None` (a PRE_COPY to STOP_COPY move keeps using the fd PRE_COPY returned). A refused
    /// request changes nothing; an arc that fails leaves the device where its driver leaves it
    /// (mtty: in the state before that arc).
    fn set_migration_state(&self, state: MigState) -> Result<Option<MigrationDataFd>>;

    /// The current device state.
    fn migration_state(&self) -> Result<MigState>;

    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`: the device's estimate of the bytes it needs to
    /// complete STOP_COPY, in any state.
    fn migration_data_size(&self) -> Result<u64>;
}
