// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The crate's error type.

use std::io;

use crate::migration::MigState;

/// Errors returned by VFIO devices and the helpers built on them.
///
/// Every variant that corresponds to a failed kernel operation keeps the errno as its
/// `#[source]`, so callers can match on it with [`Error::errno`]. The simulated device returns
/// the same variants with the errno Linux would have returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the device's info (`VFIO_DEVICE_GET_INFO` and friends) failed.
    #[error("failed to read VFIO device info")]
    DeviceInfo(#[source] io::Error),
    /// A region read failed or was out of the region's bounds.
    #[error("failed to read {len} bytes at {offset:#x} of region {index}")]
    RegionRead {
        /// Region index.
        index: u32,
        /// Offset inside the region.
        offset: u64,
        /// Length of the access.
        len: usize,
        /// The errno (EINVAL for an unknown region or out-of-bounds access).
        #[source]
        source: io::Error,
    },
    /// A region write failed or was out of the region's bounds.
    #[error("failed to write {len} bytes at {offset:#x} of region {index}")]
    RegionWrite {
        /// Region index.
        index: u32,
        /// Offset inside the region.
        offset: u64,
        /// Length of the access.
        len: usize,
        /// The errno (EINVAL for an unknown or read-only region or out-of-bounds access).
        #[source]
        source: io::Error,
    },
    /// `VFIO_DEVICE_SET_IRQS` failed (EINVAL for malformed arguments, which change nothing).
    #[error("VFIO_DEVICE_SET_IRQS on irq index {index} failed")]
    SetIrqs {
        /// The irq index of the request.
        index: u32,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// `VFIO_DEVICE_RESET` failed or the device does not support reset.
    #[error("VFIO_DEVICE_RESET failed")]
    Reset(#[source] io::Error),
    /// Querying the device's migration support failed.
    #[error("failed to query VFIO migration support")]
    MigrationQuery(#[source] io::Error),
    /// Setting the migration v2 device state failed.
    #[error("failed to set VFIO migration state {requested:?}")]
    SetMigrationState {
        /// The state that was requested.
        requested: MigState,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// Reading the migration v2 device state failed.
    #[error("failed to get VFIO migration state")]
    GetMigrationState(#[source] io::Error),
    /// Reading or writing the migration data fd failed.
    #[error("migration data fd i/o failed")]
    MigrationData(#[source] io::Error),
    /// A device description handed to the simulated device was inconsistent.
    #[error("invalid simulated device description: {0}")]
    SimConfig(&'static str),
}

impl Error {
    /// The errno carried by this error, if it wraps one.
    pub fn errno(&self) -> Option<i32> {
        let source = match self {
            Error::DeviceInfo(e)
            | Error::Reset(e)
            | Error::MigrationQuery(e)
            | Error::GetMigrationState(e)
            | Error::MigrationData(e) => e,
            Error::RegionRead { source, .. }
            | Error::RegionWrite { source, .. }
            | Error::SetIrqs { source, .. }
            | Error::SetMigrationState { source, .. } => source,
            Error::SimConfig(_) => return None,
        };
        source.raw_os_error()
    }
}

#[cfg(any(feature = "kernel", feature = "sim"))]
impl Error {
    /// [`Error::RegionRead`] of `len` bytes at `offset` of region `index`, from its errno.
    pub(crate) fn region_read(
        index: u32,
        offset: u64,
        len: usize,
    ) -> impl Fn(io::Error) -> Error + Copy {
        move |source| Error::RegionRead {
            index,
            offset,
            len,
            source,
        }
    }

    /// [`Error::RegionWrite`] of `len` bytes at `offset` of region `index`, from its errno.
    pub(crate) fn region_write(
        index: u32,
        offset: u64,
        len: usize,
    ) -> impl Fn(io::Error) -> Error + Copy {
        move |source| Error::RegionWrite {
            index,
            offset,
            len,
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// An `io::Error` carrying `errno`.
pub(crate) fn errno(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}
