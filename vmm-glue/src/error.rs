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
    /// The devices given to a VM-wide restore do not all use the router given.
    #[error("device {id} does not use the router of the restore")]
    RouterMismatch {
        /// The device's id.
        id: u32,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
