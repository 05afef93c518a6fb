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
    /// `VFIO_MIG_GET_PRECOPY_INFO` on the migration data fd failed (EINVAL outside the
    /// pre-copy states, ENODEV for a stale fd).
    #[error("VFIO_MIG_GET_PRECOPY_INFO failed")]
    PrecopyInfo(#[source] io::Error),
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` failed.
    #[error("failed to read the device's stop-copy data size")]
    MigrationDataSize(#[source] io::Error),
    /// `VFIO_DEVICE_SET_IRQS` returned a positive value: the PCI core could allocate only
    /// `available` of the MSI/MSI-X vectors asked for, and vfio-pci enabled none of them.
    #[error("VFIO_DEVICE_SET_IRQS on irq index {index} enabled nothing: only {available} vectors available")]
    SetIrqsIncomplete {
        /// The irq index of the request.
        index: u32,
        /// The vector count the kernel returned.
        available: u32,
    },
    /// A region read or write moved fewer bytes than asked (it is not retried: a second access
    /// would reach the device again).
    #[error("short region {}: {done} of {len} bytes at {offset:#x} of region {index}", if *write { "write" } else { "read" })]
    RegionShort {
        /// Region index.
        index: u32,
        /// Offset inside the region.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// Bytes moved.
        done: usize,
        /// Whether it was a write.
        write: bool,
    },
    /// A device address (PCI address, UUID, sysfs path) could not be parsed.
    #[error("invalid device address: {0}")]
    InvalidAddress(String),
    /// The device has no IOMMU group (no `iommu_group` link in sysfs: no such device, or no
    /// IOMMU in front of it).
    #[error("device {device} has no IOMMU group")]
    NoIommuGroup {
        /// The device's name.
        device: String,
        /// Why the link could not be read.
        #[source]
        source: io::Error,
    },
    /// Opening or querying the container (`/dev/vfio/vfio`) failed: no VFIO in this kernel, or
    /// no permission.
    #[error("failed to open the VFIO container")]
    OpenContainer(#[source] io::Error),
    /// The container speaks another VFIO API version than `VFIO_API_VERSION` (0).
    #[error("VFIO API version {found} is not supported")]
    ApiVersion {
        /// The version the kernel reported.
        found: u32,
    },
    /// The container does not offer the type1v2 IOMMU.
    #[error("the VFIO container does not support the type1v2 IOMMU")]
    NoType1v2,
    /// Opening a group's device node (`/dev/vfio/N`) or reading its status failed (ENOENT: no
    /// device of the group is bound to a VFIO driver; EBUSY: another process has it open).
    #[error("failed to open VFIO group {group}")]
    OpenGroup {
        /// The group number.
        group: u32,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The group is not viable: some device in it is bound to a host driver other than VFIO.
    #[error("VFIO group {group} is not viable (a device in it is bound to a host driver)")]
    GroupNotViable {
        /// The group number.
        group: u32,
    },
    /// `VFIO_GROUP_SET_CONTAINER` failed.
    #[error("failed to attach VFIO group {group} to the container")]
    SetContainer {
        /// The group number.
        group: u32,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// `VFIO_SET_IOMMU` (type1v2) failed.
    #[error("failed to set the container's IOMMU to type1v2")]
    SetIommu(#[source] io::Error),
    /// `VFIO_IOMMU_GET_INFO` failed or its answer did not decode.
    #[error("failed to read the container's IOMMU info")]
    IommuInfo(#[source] io::Error),
    /// No device of this name is in the group (`VFIO_GROUP_GET_DEVICE_FD` gave ENODEV).
    #[error("no device {device} in VFIO group {group}")]
    DeviceNotFound {
        /// The device's name.
        device: String,
        /// The group number.
        group: u32,
    },
    /// The device needs a VF token and none, or another one, was presented (EACCES): a VF of
    /// a PF bound to vfio-pci, or such a PF while its VFs are in use.
    #[error("device {device} refused the VF token (missing or wrong)")]
    VfTokenRefused {
        /// The device's name.
        device: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A VF token was presented for a device that uses none (EINVAL): not a PF or VF, or a VF
    /// whose PF is not bound to vfio-pci.
    #[error("device {device} does not take a VF token")]
    VfTokenUnexpected {
        /// The device's name.
        device: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// `VFIO_GROUP_GET_DEVICE_FD` failed for another reason.
    #[error("failed to open VFIO device {device}")]
    OpenDevice {
        /// The device's name.
        device: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// Setting a PF's VF token (`VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`) failed.
    #[error("failed to set the VF token")]
    VfToken(#[source] io::Error),
    /// A DMA region is empty, wraps, or its IOVA, size or host address is not aligned to the
    /// IOMMU's smallest page (the kernel would answer EINVAL).
    #[error("DMA region {iova:#x}+{size:#x} is not aligned to {page:#x}-byte IOMMU pages")]
    DmaUnaligned {
        /// IO virtual address.
        iova: u64,
        /// Size.
        size: u64,
        /// The smallest IOMMU page.
        page: u64,
    },
    /// A DMA region overlaps one already in the container (the kernel would answer EEXIST).
    #[error("DMA region {iova:#x}+{size:#x} overlaps the region at {existing:#x}")]
    DmaOverlap {
        /// IO virtual address.
        iova: u64,
        /// Size.
        size: u64,
        /// Start of the region it overlaps.
        existing: u64,
    },
    /// A DMA region is not inside any IOVA range the IOMMU reports (the kernel would answer
    /// EINVAL): for example the x86 MSI window at 0xfee00000.
    #[error("DMA region {iova:#x}+{size:#x} is outside the IOMMU's IOVA ranges")]
    DmaOutsideIovaRanges {
        /// IO virtual address.
        iova: u64,
        /// Size.
        size: u64,
    },
    /// `VFIO_IOMMU_MAP_DMA` failed (EEXIST: overlap; ENOSPC: no mappings left; EINVAL: refused
    /// range; ENOMEM/EFAULT: the memory could not be pinned).
    #[error("VFIO_IOMMU_MAP_DMA of {iova:#x}+{size:#x} failed")]
    DmaMap {
        /// IO virtual address.
        iova: u64,
        /// Size.
        size: u64,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// `VFIO_IOMMU_UNMAP_DMA` failed (EINVAL: the range starts or ends inside a mapping).
    #[error("VFIO_IOMMU_UNMAP_DMA of {iova:#x}+{size:#x} failed")]
    DmaUnmap {
        /// IO virtual address.
        iova: u64,
        /// Size.
        size: u64,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// `VFIO_IOMMU_DIRTY_PAGES` failed (EINVAL: not tracking, a bad range or page size; EACCES:
    /// a type1 (v1) container).
    #[error("VFIO_IOMMU_DIRTY_PAGES failed")]
    DirtyPages(#[source] io::Error),
    /// A device DMA-logging request failed (ENOTTY: the device does not log its DMA).
    #[error("device DMA logging failed")]
    DmaLogging(#[source] io::Error),
    /// No region of the container's table starts at this address.
    #[error("no DMA region starts at {iova:#x}")]
    DmaNotMapped {
        /// The address asked for.
        iova: u64,
    },
    /// The kernel unmapped another size than the region's.
    #[error(
        "unmapping the DMA region at {iova:#x} removed {unmapped:#x} bytes, not {expected:#x}"
    )]
    DmaUnmapSize {
        /// Start of the region.
        iova: u64,
        /// Its size.
        expected: u64,
        /// What the kernel reported.
        unmapped: u64,
    },
    /// Guest memory for DMA could not be created (memfd, size or mapping).
    #[error("failed to create guest memory")]
    GuestMemory(#[source] io::Error),
    /// The kernel's random source failed.
    #[error("failed to read random bytes")]
    Random(#[source] io::Error),
    /// A device description handed to the simulated device was inconsistent.
    #[error("invalid simulated device description: {0}")]
    SimConfig(&'static str),
    /// The simulated device's BAR memory file could not be made or sized.
    #[error("failed to set up the simulated device's BAR memory")]
    SimMemory(#[source] io::Error),
}

impl Error {
    /// The errno carried by this error, if it wraps one.
    pub fn errno(&self) -> Option<i32> {
        let source = match self {
            Error::DeviceInfo(e)
            | Error::Reset(e)
            | Error::MigrationQuery(e)
            | Error::GetMigrationState(e)
            | Error::MigrationData(e)
            | Error::PrecopyInfo(e)
            | Error::MigrationDataSize(e)
            | Error::OpenContainer(e)
            | Error::SetIommu(e)
            | Error::IommuInfo(e)
            | Error::VfToken(e)
            | Error::Random(e)
            | Error::SimMemory(e)
            | Error::GuestMemory(e)
            | Error::DirtyPages(e)
            | Error::DmaLogging(e) => e,
            Error::RegionRead { source, .. }
            | Error::RegionWrite { source, .. }
            | Error::SetIrqs { source, .. }
            | Error::SetMigrationState { source, .. }
            | Error::NoIommuGroup { source, .. }
            | Error::OpenGroup { source, .. }
            | Error::SetContainer { source, .. }
            | Error::VfTokenRefused { source, .. }
            | Error::VfTokenUnexpected { source, .. }
            | Error::OpenDevice { source, .. }
            | Error::DmaMap { source, .. }
            | Error::DmaUnmap { source, .. } => source,
            Error::DeviceNotFound { .. } => return Some(libc::ENODEV),
            Error::SimConfig(_)
            | Error::SetIrqsIncomplete { .. }
            | Error::RegionShort { .. }
            | Error::InvalidAddress(_)
            | Error::ApiVersion { .. }
            | Error::NoType1v2
            | Error::GroupNotViable { .. }
            | Error::DmaUnaligned { .. }
            | Error::DmaOverlap { .. }
            | Error::DmaOutsideIovaRanges { .. }
            | Error::DmaNotMapped { .. }
            | Error::DmaUnmapSize { .. } => return None,
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
