// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The crate's error type.

/// Errors of the passthrough device.
///
/// Guest accesses (config space and MMIO) never return errors: the guest gets the defined
/// behaviour documented on each entry point, and device-side failures are counted in
/// [`crate::DeviceStats`]. These errors come from VMM-side operations: building the device,
/// saving and restoring it, and the interrupt setup those run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A KVM-VFIO device operation failed (EBUSY: the VM has one already; EINVAL: not a VFIO
    /// group; EEXIST: added already; ENOENT: not added).
    #[error("KVM-VFIO device operation failed")]
    KvmVfio(#[source] std::io::Error),
    /// The device has no REQ irq index (it cannot be asked for back).
    #[error("the device has no REQ irq index")]
    NoRequestIndex,
    /// The device has no BAR with this index.
    #[error("the device has no BAR {0}")]
    NoSuchBar(u8),
    /// A BAR cannot hold this address (not aligned to its size, or above 4 GiB for a 32-bit
    /// BAR).
    #[error("BAR {index} cannot be placed at {address:#x}")]
    BarAddress {
        /// BAR index.
        index: u8,
        /// The address asked for.
        address: u64,
    },
    /// `VFIO_DEVICE_RESET` failed (the interrupts were disabled; the emulated state is kept).
    #[error("resetting the device failed")]
    Reset(#[source] vfio_core::Error),
    /// The device has no readable PCI configuration region.
    #[error("the device has no PCI configuration region")]
    NoConfigRegion,
    /// Reading the device's configuration space failed.
    #[error("reading the device's configuration space failed")]
    ConfigRead(#[source] vfio_core::Error),
    /// The device's configuration space could not be modelled (bad size, malformed
    /// capabilities, inconsistent BARs).
    #[error("modelling the device's configuration space failed")]
    ConfigModel(#[source] pci_config::Error),
    /// Probing the BARs for mmap (host side) failed.
    #[error("probing the device's BARs for mmap failed")]
    BarProbe(#[source] bar_mmap::Error),
    /// A lock shared with other devices (the guest page map) was poisoned.
    #[error("a lock shared between devices was poisoned")]
    Poisoned,
    /// Creating an eventfd for an interrupt vector failed.
    #[error("creating an eventfd failed")]
    EventFd(#[source] std::io::Error),
    /// `VFIO_DEVICE_SET_IRQS` (or the trigger cache on top of it) failed.
    #[error("VFIO_DEVICE_SET_IRQS failed")]
    SetIrqs(#[source] vfio_core::Error),
    /// A route operation on the VM's router failed.
    #[error("a route operation failed")]
    Route(#[source] irq_routing::Error),
    /// Writing the device's configuration space (restoring COMMAND) failed.
    #[error("writing the device's configuration space failed")]
    ConfigWrite(#[source] vfio_core::Error),
    /// A saved state does not fit this device (other vector count, config size or BARs).
    #[error("the saved state does not match this device: {0}")]
    StateMismatch(&'static str),
    /// A saved state failed migration-state's validation.
    #[error("the saved state is invalid")]
    InvalidState(#[source] migration_state::Error),
    /// The number of devices and of states given to a VM-wide restore differ.
    #[error("{devices} devices but {states} states")]
    CountMismatch {
        /// Devices given.
        devices: usize,
        /// States given.
        states: usize,
    },
    /// The guest migration notice capability could not be inserted or updated.
    #[error("the guest migration notice failed")]
    Notice(#[source] migration_state::Error),
    /// The device was built without the guest migration notice
    /// ([`crate::DeviceOptions::guest_notice`]).
    #[error("the device has no guest migration notice")]
    NoticeDisabled,
    /// The migration v2 handle given is not the VFIO device the passthrough device uses.
    #[error("the migration handle is not this device's VFIO device")]
    NotSameDevice,
    /// Walking the device through the VFIO migration v2 states failed (the source says where
    /// the walk stopped and how the device was recovered).
    #[error("moving the device to migration state {to:?} failed")]
    MigrationWalk {
        /// The state asked for.
        to: migration_state::State,
        /// The walk's error (path refused, device error, failed arc with its recovery).
        #[source]
        source: migration_state::Error,
    },
    /// Reading or writing the migration data fd failed (the device was then moved back, see
    /// the method's docs).
    #[error("transferring device-internal state through the migration data fd failed")]
    MigrationData(#[source] vfio_core::Error),
    /// Asking the device for its migration state failed.
    #[error("reading the device's migration state failed")]
    MigrationState(#[source] vfio_core::Error),
    /// The device handed out no data fd for a saving or resuming state.
    #[error("the device gave no migration data fd")]
    NoDataFd,
    /// The device-internal state read through the data fd exceeds the caller's limit.
    #[error("the device-internal state exceeds {limit} bytes")]
    DeviceDataTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A device given to a live migration has no migration v2 handle
    /// ([`crate::PassthroughDevice::new_migratable`]): its internal state cannot move.
    #[error("device {id} cannot migrate (no VFIO migration v2 handle)")]
    NotMigratable {
        /// The device's id.
        id: u32,
    },
    /// Two devices given to a live migration have the same id.
    #[error("two devices of the migration have id {id}")]
    DuplicateDevice {
        /// The id.
        id: u32,
    },
    /// A device is in a migration state a live migration cannot start from (source: RUNNING,
    /// RUNNING_P2P or STOP; destination: RUNNING or STOP).
    #[error("device {id} is in migration state {state}")]
    DeviceNotReady {
        /// The device's id.
        id: u32,
        /// Its state.
        state: migration_state::State,
    },
    /// The devices given to a later step of a live migration are not the ones it started
    /// with, in the same order.
    #[error("device {index} is not the device the migration started with")]
    DeviceMismatch {
        /// Position of the first device that differs (or the shorter list's length).
        index: usize,
    },
    /// Writing or reading the migration stream failed (the stream's own typed error: i/o,
    /// truncation, wrong device, version skew, corruption, order, size).
    #[error("the migration stream failed")]
    MigrationStream(#[source] migration_state::Error),
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` failed.
    #[error("reading the device's stop-copy size estimate failed")]
    MigrationDataSize(#[source] vfio_core::Error),
    /// `VFIO_MIG_GET_PRECOPY_INFO` failed.
    #[error("reading the device's pre-copy info failed")]
    PrecopyInfo(#[source] vfio_core::Error),
    /// A device in STOP_COPY answered "nothing more for now" before the end of its data: its
    /// stream cannot be completed.
    #[error("device {id} stopped streaming before the end of its STOP_COPY data")]
    StopCopyStalled {
        /// The device's id.
        id: u32,
    },
    /// Dirty-page tracking (the container's or the devices' DMA logs) failed.
    #[error("dirty-page tracking failed")]
    DirtyTracking(#[source] vfio_core::Error),
    /// A live migration step failed; the devices were put back as `rollback` says (source:
    /// walked back to the state they started in, RUNNING normally; destination: reset to
    /// RUNNING, as the kernel requires after a failed RESUMING) and dirty tracking was stopped.
    #[error("live migration failed; {rollback}")]
    MigrationFailed {
        /// What failed.
        #[source]
        source: Box<Error>,
        /// Where each device was left.
        rollback: crate::live_migration::Rollback,
    },
    /// The devices given to a VM-wide restore do not all use the router given.
    #[error("device {id} does not use the router of the restore")]
    RouterMismatch {
        /// The device's id.
        id: u32,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
