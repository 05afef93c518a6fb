// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A type1 container and the IOMMU groups attached to it.
//!
//! The kernel's rules (Linux v6.12.117 drivers/vfio/container.c and group.c): a group is
//! attached with `VFIO_GROUP_SET_CONTAINER` only when it is viable (every device in it bound to
//! a VFIO driver or none); `VFIO_SET_IOMMU` is accepted only once a group is attached (EINVAL
//! before); the IOMMU is released when the last group leaves, so the next group to join must
//! set it again; `VFIO_GROUP_GET_DEVICE_FD` needs the group attached and its IOMMU set.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use vfio_bindings::bindings::vfio as b;

use super::address::DeviceAddress;
use super::caps;
use super::device::KernelDevice;
use crate::error::{Error, Result};
use crate::ioctl;

/// One range of IO virtual addresses the IOMMU can map (`struct vfio_iova_range`, both ends
/// inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaRange {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
}

impl IovaRange {
    /// Whether `[iova, iova + size)` lies inside this range.
    pub fn contains(&self, iova: u64, size: u64) -> bool {
        size != 0
            && iova >= self.start
            && iova
                .checked_add(size - 1)
                .is_some_and(|last| last <= self.end)
    }
}

/// What `VFIO_IOMMU_GET_INFO` reports for a type1 container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuInfo {
    /// Bitmap of supported IOMMU page sizes (`iova_pgsizes`).
    pub page_sizes: u64,
    /// Usable IOVA ranges (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`); `None` when the kernel does
    /// not report them (any IOVA is then allowed).
    pub iova_ranges: Option<Vec<IovaRange>>,
    /// Dirty-page tracking (`VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`): supported page sizes for the
    /// dirty bitmap and the largest bitmap, in bytes, one `GET_BITMAP` may ask for.
    pub dirty_tracking: Option<DirtyTrackingInfo>,
    /// How many more DMA mappings the container accepts (`VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`).
    pub dma_avail: Option<u32>,
}

/// The type1 IOMMU's dirty-tracking capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyTrackingInfo {
    /// The capability's flags.
    pub flags: u32,
    /// Bitmap of page sizes a dirty bitmap may be asked in.
    pub page_sizes: u64,
    /// Largest dirty bitmap, in bytes, one request may ask for.
    pub max_bitmap_bytes: u64,
}

impl IommuInfo {
    /// The smallest IOMMU page size (the alignment of every DMA mapping).
    pub fn min_page_size(&self) -> u64 {
        if self.page_sizes == 0 {
            4096
        } else {
            1 << self.page_sizes.trailing_zeros()
        }
    }
}

#[derive(Debug, Default)]
struct Groups {
    /// Whether `VFIO_SET_IOMMU` is in effect (a group is attached and the type was set).
    iommu_set: bool,
    by_id: HashMap<u32, Weak<Group>>,
}

/// A VFIO container (`/dev/vfio/vfio`) with the type1v2 IOMMU: the IO address space every
/// device of its groups shares. Share it as `Arc<Container>` among the devices of one VM.
#[derive(Debug)]
pub struct Container {
    file: File,
    groups: Mutex<Groups>,
    dev_dir: PathBuf,
}

impl Container {
    /// Open `/dev/vfio/vfio` and check that it speaks the VFIO API and offers type1v2.
    pub fn new() -> Result<Arc<Self>> {
        Self::open_in(PathBuf::from("/dev/vfio"))
    }

    /// [`Container::new`] with the VFIO device nodes in `dev_dir` instead of `/dev/vfio`.
    pub fn open_in(dev_dir: PathBuf) -> Result<Arc<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev_dir.join("vfio"))
            .map_err(Error::OpenContainer)?;
        let version = ioctl::get_api_version(&file).map_err(Error::OpenContainer)?;
        if version != b::VFIO_API_VERSION {
            return Err(Error::ApiVersion { found: version });
        }
        let has_type1v2 =
            ioctl::check_extension(&file, b::VFIO_TYPE1v2_IOMMU).map_err(Error::OpenContainer)?;
        if has_type1v2 == 0 {
            return Err(Error::NoType1v2);
        }
        Ok(Arc::new(Container {
            file,
            groups: Mutex::new(Groups::default()),
            dev_dir,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the kernel answers 1 to `VFIO_CHECK_EXTENSION(extension)`.
    pub fn has_extension(&self, extension: u32) -> Result<bool> {
        ioctl::check_extension(&self.file, extension)
            .map(|v| v == 1)
            .map_err(Error::OpenContainer)
    }

    /// The group `id`, attached to this container: the one already open, or opened now
    /// (`/dev/vfio/<id>`), checked viable and attached, the IOMMU set to type1v2 if it is the
    /// first group.
    pub fn group(self: &Arc<Self>, id: u32) -> Result<Arc<Group>> {
        let mut groups = self.lock();
        if let Some(group) = groups.by_id.get(&id).and_then(Weak::upgrade) {
            return Ok(group);
        }
        let open_err = |source| Error::OpenGroup { group: id, source };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dev_dir.join(id.to_string()))
            .map_err(open_err)?;
        let status = ioctl::group_status(&file).map_err(open_err)?;
        if status & b::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::GroupNotViable { group: id });
        }
        ioctl::group_set_container(&file, &self.file)
            .map_err(|source| Error::SetContainer { group: id, source })?;
        if !groups.iommu_set {
            if let Err(source) = ioctl::set_iommu(&self.file, b::VFIO_TYPE1v2_IOMMU) {
                // Leave nothing attached: the group goes back to how it was found.
                let _ = ioctl::group_unset_container(&file);
                return Err(Error::SetIommu(source));
            }
            groups.iommu_set = true;
        }
        let group = Arc::new(Group {
            id,
            file,
            container: Arc::clone(self),
        });
        groups.by_id.insert(id, Arc::downgrade(&group));
        Ok(group)
    }

    /// Open the device at `address`: its group joins this container (or is shared with the
    /// devices of that group already open), then the device fd is taken from the group.
    pub fn open_device(self: &Arc<Self>, address: &DeviceAddress) -> Result<KernelDevice> {
        self.group(address.iommu_group()?)?.open_device(address)
    }

    /// `VFIO_IOMMU_GET_INFO`: page sizes, IOVA ranges, dirty tracking, mappings left. Needs the
    /// IOMMU set (a group attached): EINVAL before.
    pub fn iommu_info(&self) -> Result<IommuInfo> {
        let mut arg = caps::iommu_info_arg(caps::IOMMU_INFO_SIZE);
        ioctl::iommu_get_info(&self.file, &mut arg).map_err(Error::IommuInfo)?;
        let wanted = caps::returned_argsz(&arg).map_err(Error::IommuInfo)?;
        if wanted > arg.len() {
            arg = caps::iommu_info_arg(wanted);
            ioctl::iommu_get_info(&self.file, &mut arg).map_err(Error::IommuInfo)?;
        }
        let raw = caps::parse_iommu_info(&arg).map_err(Error::IommuInfo)?;
        Ok(IommuInfo {
            page_sizes: raw.iova_pgsizes,
            iova_ranges: raw.iova_ranges.map(|r| {
                r.into_iter()
                    .map(|(start, end)| IovaRange { start, end })
                    .collect()
            }),
            dirty_tracking: raw.migration.map(|(flags, page_sizes, max_bitmap_bytes)| {
                DirtyTrackingInfo {
                    flags,
                    page_sizes,
                    max_bitmap_bytes,
                }
            }),
            dma_avail: raw.dma_avail,
        })
    }

    /// The ids of the groups attached now.
    pub fn group_ids(&self) -> Vec<u32> {
        let groups = self.lock();
        let mut ids: Vec<u32> = groups
            .by_id
            .iter()
            .filter(|(_, g)| g.strong_count() > 0)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The container fd (for the KVM-VFIO device and the DMA ioctls).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn release(&self, group: &Group) {
        let mut groups = self.lock();
        if groups
            .by_id
            .get(&group.id)
            .is_some_and(|w| w.strong_count() == 0)
        {
            groups.by_id.remove(&group.id);
        }
        // The kernel drops the IOMMU when the last group leaves (container.c,
        // __vfio_group_unset_container), whether or not the unset below reports an error.
        let _ = ioctl::group_unset_container(&group.file);
        if groups.by_id.is_empty() {
            groups.iommu_set = false;
        }
    }
}

/// An IOMMU group attached to a [`Container`]. It stays attached while any device opened
/// through it is open.
#[derive(Debug)]
pub struct Group {
    id: u32,
    file: File,
    container: Arc<Container>,
}

impl Group {
    /// The group's number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The container the group is attached to.
    pub fn container(&self) -> &Arc<Container> {
        &self.container
    }

    /// The group fd (for the KVM-VFIO device).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Open the device `address` names in this group (its sysfs group link is not consulted).
    pub fn open_device(self: &Arc<Self>, address: &DeviceAddress) -> Result<KernelDevice> {
        let fd = self.device_fd(address)?;
        KernelDevice::from_group_fd(fd, Arc::clone(self))
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for `address`, its errno turned into what it means there.
    fn device_fd(&self, address: &DeviceAddress) -> Result<File> {
        let name = address.device_fd_name()?;
        ioctl::group_get_device_fd(&self.file, &name).map_err(|source| {
            let device = address.name().to_owned();
            match (source.raw_os_error(), address.vf_token()) {
                // vfio_device_get_from_name: no device of that name in the group.
                (Some(libc::ENODEV), _) => Error::DeviceNotFound {
                    device,
                    group: self.id,
                },
                // vfio_pci_validate_vf_token: a VF of a vfio-pci PF (or a PF whose VFs are in
                // use) without the token, or with another one.
                (Some(libc::EACCES), _) => Error::VfTokenRefused { device, source },
                // A token given where none is used (not a PF or VF, or the PF not vfio-pci).
                (Some(libc::EINVAL), Some(_)) => Error::VfTokenUnexpected { device, source },
                _ => Error::OpenDevice { device, source },
            }
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.container.release(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_ranges_are_inclusive() {
        let r = IovaRange {
            start: 0,
            end: 0xfedf_ffff,
        };
        assert!(r.contains(0, 0x1000));
        assert!(r.contains(0xfedf_f000, 0x1000));
        assert!(!r.contains(0xfedf_f000, 0x1001));
        assert!(!r.contains(0x1000, 0));
        assert!(!IovaRange {
            start: 0x10,
            end: u64::MAX
        }
        .contains(u64::MAX, 2));
        assert!(IovaRange {
            start: 0x10,
            end: u64::MAX
        }
        .contains(u64::MAX, 1));
    }

    #[test]
    fn the_smallest_page_size_is_the_lowest_bit() {
        let info = IommuInfo {
            page_sizes: 0x4020_1000,
            iova_ranges: None,
            dirty_tracking: None,
            dma_avail: None,
        };
        assert_eq!(info.min_page_size(), 0x1000);
    }

    /// Without VFIO in the kernel (the machines the host tests run on), opening the container
    /// is a typed error carrying the errno, not a panic.
    #[test]
    fn a_missing_vfio_is_a_typed_error() {
        let dir = std::env::temp_dir().join(format!("vfio-core-nodev-{}", std::process::id()));
        let err = Container::open_in(dir).unwrap_err();
        assert!(matches!(err, Error::OpenContainer(_)), "{err:?}");
        assert_eq!(err.errno(), Some(libc::ENOENT));
        // A file that is not a VFIO container answers the version ioctl with ENOTTY.
        let dir = std::env::temp_dir().join(format!("vfio-core-notvfio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vfio"), b"").unwrap();
        let err = Container::open_in(dir.clone()).unwrap_err();
        assert!(matches!(err, Error::OpenContainer(_)), "{err:?}");
        assert_eq!(err.errno(), Some(libc::ENOTTY));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
