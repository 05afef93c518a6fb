// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A type1 container and the IOMMU groups attached to it.
//!
//! The kernel's rules (Linux v6.12.117 drivers/vfio/container.c and group.c): a group is
//! attached with `VFIO_GROUP_SET_CONTAINER` only when it is viable (every device in it bound to
//! a VFIO driver or none); `VFIO_SET_IOMMU` is accepted only once a group is attached (EINVAL
//! before); the IOMMU is released when the last group leaves, so the next group to join must
//! set it again; `VFIO_GROUP_GET_DEVICE_FD` needs the group attached and its IOMMU set.
//!
//! The container keeps the VM's guest memory table ([`DmaTable`]): regions added before any
//! group joins are mapped when the first one does, and mapped again when a group joins after
//! the last one left.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use vfio_bindings::bindings::vfio as b;

use vm_memory::GuestRegionMmap;

use super::address::DeviceAddress;
use super::caps;
use super::device::KernelDevice;
use crate::dma::{
    DirtyOp, DirtyRequest, DirtyTrackingInfo, DmaMapping, DmaTable, IommuInfo, IovaRange, Type1,
    VfioContainer,
};
use crate::error::{Error, Result};
use crate::ioctl;

#[derive(Debug, Default)]
struct Groups {
    /// What `VFIO_IOMMU_GET_INFO` said when `VFIO_SET_IOMMU` took effect; `None` while no
    /// group is attached (the kernel has no IOMMU for the container then).
    iommu: Option<IommuInfo>,
    by_id: HashMap<u32, Weak<Group>>,
    table: DmaTable,
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

    /// The first group just joined: set the IOMMU, read what it offers and map the table.
    fn set_iommu(&self, groups: &mut Groups) -> Result<()> {
        ioctl::set_iommu(&self.file, b::VFIO_TYPE1v2_IOMMU).map_err(Error::SetIommu)?;
        let info = self.read_iommu_info()?;
        groups.table.map_all(self, &info)?;
        groups.iommu = Some(info);
        Ok(())
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
        if groups.iommu.is_none() {
            if let Err(e) = self.set_iommu(&mut groups) {
                // Leave nothing attached: the group goes back to how it was found (and the
                // kernel releases the IOMMU with its only group).
                let _ = ioctl::group_unset_container(&file);
                return Err(e);
            }
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

    fn read_iommu_info(&self) -> Result<IommuInfo> {
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
            groups.iommu = None;
            groups.table.dropped_all();
        }
    }
}

impl Type1 for Container {
    unsafe fn map_dma(&self, iova: u64, size: u64, vaddr: u64) -> Result<()> {
        // SAFETY: the caller upholds `Type1::map_dma`'s contract, which is the ioctl's.
        unsafe { ioctl::iommu_map_dma(&self.file, iova, size, vaddr) }
            .map_err(|source| Error::DmaMap { iova, size, source })
    }

    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        ioctl::iommu_unmap_dma(&self.file, iova, size).map_err(|source| Error::DmaUnmap {
            iova,
            size,
            source,
        })
    }

    fn dirty_pages(&self, op: DirtyOp<'_>) -> Result<()> {
        let result = match op {
            DirtyOp::Start => {
                ioctl::iommu_dirty_pages(&self.file, b::VFIO_IOMMU_DIRTY_PAGES_FLAG_START, None)
            }
            DirtyOp::Stop => {
                ioctl::iommu_dirty_pages(&self.file, b::VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP, None)
            }
            DirtyOp::Bitmap {
                iova,
                size,
                page_size,
                bitmap,
            } => ioctl::iommu_dirty_pages(
                &self.file,
                b::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
                Some((iova, size, page_size, bitmap)),
            ),
        };
        result.map_err(Error::DirtyPages)
    }
}

impl VfioContainer for Container {
    /// `VFIO_IOMMU_GET_INFO`: page sizes, IOVA ranges, dirty tracking, mappings left. Needs the
    /// IOMMU set (a group attached): EINVAL before.
    fn iommu_info(&self) -> Result<IommuInfo> {
        self.read_iommu_info()
    }

    fn map_guest_region(&self, region: &GuestRegionMmap) -> Result<()> {
        let mut groups = self.lock();
        let groups = &mut *groups;
        let iommu = groups.iommu.as_ref().map(|info| (self as &dyn Type1, info));
        groups.table.insert(region, iommu)
    }

    fn unmap_guest_region(&self, gpa: u64) -> Result<()> {
        let mut groups = self.lock();
        let groups = &mut *groups;
        let iommu = groups.iommu.as_ref().map(|_| self as &dyn Type1);
        groups.table.remove(gpa, iommu)
    }

    fn dma_mappings(&self) -> Vec<DmaMapping> {
        self.lock().table.mappings()
    }

    fn dirty(&self, request: DirtyRequest<'_>) -> Result<()> {
        let groups = self.lock();
        if groups.iommu.is_none() {
            return Err(Error::DirtyPages(crate::error::errno(libc::EINVAL)));
        }
        groups.table.dirty(self, groups.iommu.as_ref(), request)
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
