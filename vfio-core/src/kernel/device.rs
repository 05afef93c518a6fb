// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A [`VfioDevice`] over a VFIO device fd: opened through a [`Container`](super::Container), or
//! handed over already open (by a management process, or another VFIO library).
//!
//! The kernel's return conventions are kept: a `VFIO_DEVICE_SET_IRQS` that returns a positive
//! value did not succeed (vfio-pci returns the number of vectors the PCI core could allocate
//! when it could not allocate all, and enables none); a region read or write that moves fewer
//! bytes than asked is an error, and is not retried (a retry would access the device again).
//!
//! An access that does not lie inside its region is refused with EINVAL before the kernel
//! sees it, the trait's rule for both backends. The kernel itself answers differently, which
//! a caller doing its own `pread`/`pwrite` on the device fd ([`AsFd`]) meets: EFAULT for config
//! space (Linux v6.12.117 drivers/vfio/pci/vfio_pci_config.c, vfio_config_do_rw()) and a short
//! count for the part of a BAR access inside the BAR (vfio_pci_rdwr.c, vfio_pci_bar_rw()).
//!
//! `VFIO_DEVICE_RESET` is always issued: the kernel decides. vfio-pci answers EINVAL for a
//! function it could not reset at open (vfio_pci_ioctl_reset()), and mtty resets although it
//! never reports `VFIO_DEVICE_FLAGS_RESET` (samples/vfio-mdev/mtty.c, mtty_reset()).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use vfio_bindings::bindings::vfio as b;

use super::address::Uuid;
use super::caps;
use super::container::Group;
use crate::device::{VfioDevice, VfioMigration};
use crate::error::{errno, Error, Result};
use crate::info::{
    DeviceFlags, DeviceInfo, IrqFlags, IrqInfo, RegionFlags, RegionInfo, VGA_REGION_INDEX,
};
use crate::ioctl;
use crate::irq_set::IrqSet;
use crate::migration::{MigState, MigrationDataFd, MigrationFeatures};

/// Size of the `struct vfio_device_feature` header (argsz, flags).
const FEATURE_HEADER_SIZE: usize = 8;

/// A VFIO device fd and what it reported about itself when opened.
pub struct KernelDevice {
    fd: File,
    info: DeviceInfo,
    /// The group the device was opened through; keeps it attached to its container.
    group: Option<Arc<Group>>,
}

impl std::fmt::Debug for KernelDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelDevice")
            .field("fd", &self.fd.as_raw_fd())
            .field("group", &self.group.as_ref().map(|g| g.id()))
            .field("info", &self.info)
            .finish()
    }
}

/// `VFIO_DEVICE_GET_REGION_INFO` for `index`, with its capability chain; `None` for an index
/// the device answers EINVAL for (vfio-pci does for a VGA region the device lacks).
fn read_region(fd: &File, index: u32) -> Result<Option<RegionInfo>> {
    let mut arg = caps::region_info_arg(index, caps::REGION_INFO_SIZE);
    match ioctl::get_region_info(fd, &mut arg) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(Error::DeviceInfo(e)),
    }
    let wanted = caps::returned_argsz(&arg).map_err(Error::DeviceInfo)?;
    if wanted > arg.len() {
        arg = caps::region_info_arg(index, wanted);
        ioctl::get_region_info(fd, &mut arg).map_err(Error::DeviceInfo)?;
    }
    let raw = caps::parse_region_info(&arg).map_err(Error::DeviceInfo)?;
    if raw.size == 0 && raw.flags == 0 {
        return Ok(None);
    }
    Ok(Some(RegionInfo {
        index,
        flags: RegionFlags::from_bits_retain(raw.flags),
        size: raw.size,
        offset: raw.offset,
        sparse_mmap: raw.sparse_mmap,
        msix_mappable: raw.msix_mappable,
    }))
}

/// Read a device's flags, regions and irq indexes.
fn read_info(fd: &File) -> Result<DeviceInfo> {
    let raw = ioctl::get_device_info(fd).map_err(Error::DeviceInfo)?;
    let num_regions = raw.num_regions.min(VGA_REGION_INDEX + 1);
    let regions = (0..num_regions)
        .map(|index| read_region(fd, index))
        .collect::<Result<Vec<_>>>()?;
    let irqs = (0..raw.num_irqs)
        .map(|index| match ioctl::get_irq_info(fd, index) {
            Ok(i) => Ok(Some(IrqInfo {
                index,
                flags: IrqFlags::from_bits_retain(i.flags),
                count: i.count,
            })),
            // mtty reports five indexes and answers EINVAL for the last three.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(Error::DeviceInfo(e)),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DeviceInfo {
        flags: DeviceFlags::from_bits_retain(raw.flags),
        regions,
        irqs,
    })
}

impl KernelDevice {
    /// A device fd opened elsewhere (passed by a management process, or opened by another VFIO
    /// library): its regions and irq indexes are read once, now. The caller keeps whatever
    /// holds its group in a container alive.
    pub fn from_device_fd(fd: File) -> Result<Self> {
        let info = read_info(&fd)?;
        Ok(KernelDevice {
            fd,
            info,
            group: None,
        })
    }

    pub(crate) fn from_group_fd(fd: File, group: Arc<Group>) -> Result<Self> {
        let info = read_info(&fd)?;
        Ok(KernelDevice {
            fd,
            info,
            group: Some(group),
        })
    }

    /// The group the device was opened through (`None` for [`KernelDevice::from_device_fd`]).
    pub fn group(&self) -> Option<&Arc<Group>> {
        self.group.as_ref()
    }

    /// Set the VF token of an SR-IOV PF bound to vfio-pci (`VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`):
    /// its VFs can then be opened only with this token.
    pub fn set_vf_token(&self, token: Uuid) -> Result<()> {
        let flags = b::VFIO_DEVICE_FEATURE_SET | b::VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
        self.feature(flags, token.as_bytes())
            .map(drop)
            .map_err(Error::VfToken)
    }

    fn feature(&self, flags: u32, payload: &[u8]) -> io::Result<Vec<u8>> {
        let mut arg = encode_feature(flags, payload);
        ioctl::device_feature(&self.fd, &mut arg)?;
        Ok(arg)
    }
}

/// Encode a `struct vfio_device_feature` header followed by `payload`.
fn encode_feature(flags: u32, payload: &[u8]) -> Vec<u8> {
    let argsz = u32::try_from(FEATURE_HEADER_SIZE + payload.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(FEATURE_HEADER_SIZE + payload.len());
    out.extend_from_slice(&argsz.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(payload);
    out
}

/// Encode a `struct vfio_device_feature_mig_state` (data_fd -1 on the way in).
fn encode_mig_state(state: MigState) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&state.to_raw().to_ne_bytes());
    out[4..].copy_from_slice(&(-1i32).to_ne_bytes());
    out
}

fn word_at(bytes: &[u8], at: usize) -> Option<[u8; 4]> {
    bytes.get(at..at + 4).and_then(|s| s.try_into().ok())
}

/// `device_state` of the `vfio_device_feature_mig_state` the kernel wrote back into `arg`.
fn returned_state(arg: &[u8]) -> Option<u32> {
    word_at(arg, FEATURE_HEADER_SIZE).map(u32::from_ne_bytes)
}

/// `data_fd` of the `vfio_device_feature_mig_state` the kernel wrote back into `arg` (-1 when
/// the new state has no data fd).
fn returned_data_fd(arg: &[u8]) -> Option<i32> {
    word_at(arg, FEATURE_HEADER_SIZE + 4).map(i32::from_ne_bytes)
}

/// Run a pread/pwrite, again if a signal interrupted it before it moved anything.
fn retry_eintr(mut op: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A region access that moved `done` of `len` bytes: all, or [`Error::RegionShort`].
fn short_access(index: u32, offset: u64, len: usize, done: usize, write: bool) -> Result<()> {
    if done == len {
        return Ok(());
    }
    Err(Error::RegionShort {
        index,
        offset,
        len,
        done,
        write,
    })
}

/// The VFIO device fd: regions are read, written and mmapped through it at their
/// `RegionInfo::offset`; also for calls this crate does not wrap.
impl AsFd for KernelDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl VfioDevice for KernelDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let err = Error::region_read(index, offset, buf.len());
        let base = self
            .info
            .region_for_access(index, offset, buf.len())
            .map_err(err)?
            .offset;
        let done = retry_eintr(|| self.fd.read_at(buf, base + offset)).map_err(err)?;
        short_access(index, offset, buf.len(), done, false)
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        let err = Error::region_write(index, offset, data.len());
        let region = self
            .info
            .region_for_access(index, offset, data.len())
            .map_err(err)?;
        if !region.flags.contains(RegionFlags::WRITE) {
            return Err(err(errno(libc::EINVAL)));
        }
        let done = retry_eintr(|| self.fd.write_at(data, region.offset + offset)).map_err(err)?;
        short_access(index, offset, data.len(), done, true)
    }

    fn set_irqs(&self, set: &IrqSet) -> Result<()> {
        match ioctl::set_irqs(&self.fd, &set.to_bytes()) {
            Ok(0) => Ok(()),
            Ok(available) => Err(Error::SetIrqsIncomplete {
                index: set.index,
                available,
            }),
            Err(source) => Err(Error::SetIrqs {
                index: set.index,
                source,
            }),
        }
    }

    /// Issued whatever `VFIO_DEVICE_FLAGS_RESET` says: the flag is not the rule. mtty has no
    /// RESET flag and resets (Linux v6.12.117 `samples/vfio-mdev/mtty.c`, `mtty_reset()`);
    /// vfio-pci without a working reset answers EINVAL itself (`vfio_pci_ioctl_reset()`).
    fn reset(&self) -> Result<()> {
        ioctl::reset(&self.fd).map_err(Error::Reset)
    }
}

impl crate::dma::DmaLogging for KernelDevice {
    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<()> {
        ioctl::dma_logging_start(&self.fd, page_size, ranges).map_err(Error::DmaLogging)
    }

    fn dma_logging_stop(&self) -> Result<()> {
        ioctl::dma_logging_stop(&self.fd).map_err(Error::DmaLogging)
    }

    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> Result<()> {
        ioctl::dma_logging_report(&self.fd, iova, length, page_size, bitmap)
            .map_err(Error::DmaLogging)
    }
}

impl VfioMigration for KernelDevice {
    fn migration_features(&self) -> Result<Option<MigrationFeatures>> {
        let flags = b::VFIO_DEVICE_FEATURE_GET | b::VFIO_DEVICE_FEATURE_MIGRATION;
        match self.feature(flags, &[0u8; 8]) {
            Ok(arg) => {
                let raw = arg
                    .get(FEATURE_HEADER_SIZE..FEATURE_HEADER_SIZE + 8)
                    .and_then(|s| <[u8; 8]>::try_from(s).ok())
                    .map(u64::from_ne_bytes)
                    .ok_or_else(|| Error::MigrationQuery(errno(libc::EIO)))?;
                Ok(Some(MigrationFeatures::from_bits_retain(raw)))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => Ok(None),
            Err(e) => Err(Error::MigrationQuery(e)),
        }
    }

    fn set_migration_state(&self, state: MigState) -> Result<Option<MigrationDataFd>> {
        let err = |source| Error::SetMigrationState {
            requested: state,
            source,
        };
        let flags = b::VFIO_DEVICE_FEATURE_SET | b::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
        let arg = self.feature(flags, &encode_mig_state(state)).map_err(err)?;
        let fd = returned_data_fd(&arg).ok_or_else(|| err(errno(libc::EIO)))?;
        if fd < 0 {
            return Ok(None);
        }
        let file = ioctl::file_from_returned_fd(fd).map_err(err)?;
        Ok(Some(MigrationDataFd::new(file)))
    }

    fn migration_data_size(&self) -> Result<u64> {
        let flags = b::VFIO_DEVICE_FEATURE_GET | b::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE;
        let arg = self
            .feature(flags, &[0u8; 8])
            .map_err(Error::MigrationDataSize)?;
        arg.get(FEATURE_HEADER_SIZE..FEATURE_HEADER_SIZE + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_ne_bytes)
            .ok_or_else(|| Error::MigrationDataSize(errno(libc::EIO)))
    }

    fn migration_state(&self) -> Result<MigState> {
        let flags = b::VFIO_DEVICE_FEATURE_GET | b::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
        let arg = self
            .feature(flags, &encode_mig_state(MigState::Error))
            .map_err(Error::GetMigrationState)?;
        returned_state(&arg)
            .and_then(MigState::from_raw)
            .ok_or_else(|| Error::GetMigrationState(errno(libc::EIO)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn feature_header_matches_the_kernel_struct() {
        assert_eq!(size_of::<b::vfio_device_feature>(), FEATURE_HEADER_SIZE);
        assert_eq!(
            offset_of!(b::vfio_device_feature, data),
            FEATURE_HEADER_SIZE
        );
        let flags = b::VFIO_DEVICE_FEATURE_SET | b::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
        let arg = encode_feature(flags, &encode_mig_state(MigState::StopCopy));
        assert_eq!(arg.len(), 16);
        assert_eq!(u32::from_ne_bytes(arg[0..4].try_into().unwrap()), 16);
        assert_eq!(u32::from_ne_bytes(arg[4..8].try_into().unwrap()), flags);
        // vfio_device_feature_mig_state { device_state, data_fd }
        let state_at =
            FEATURE_HEADER_SIZE + offset_of!(b::vfio_device_feature_mig_state, device_state);
        let fd_at = FEATURE_HEADER_SIZE + offset_of!(b::vfio_device_feature_mig_state, data_fd);
        assert_eq!(size_of::<b::vfio_device_feature_mig_state>(), 8);
        assert_eq!(
            u32::from_ne_bytes(arg[state_at..state_at + 4].try_into().unwrap()),
            3
        );
        assert_eq!(
            i32::from_ne_bytes(arg[fd_at..fd_at + 4].try_into().unwrap()),
            -1
        );
    }

    /// GET is bit 16, SET bit 17, the feature number in bits 0..16 (include/uapi/linux/vfio.h);
    /// MIG_DEVICE_STATE is feature 2, MIGRATION feature 1.
    #[test]
    fn feature_flags_match_the_uapi_numbers() {
        let set = b::VFIO_DEVICE_FEATURE_SET | b::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
        let get = b::VFIO_DEVICE_FEATURE_GET | b::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
        assert_eq!(set, 0x2_0002);
        assert_eq!(get, 0x1_0002);
        assert_eq!(b::VFIO_DEVICE_FEATURE_MASK, 0xffff);
        // The uAPI state numbers, which the payload carries.
        let raw: Vec<u32> = MigState::ALL.iter().map(|s| s.to_raw()).collect();
        assert_eq!(raw, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    /// What the kernel writes back: `vfio_ioct_mig_return_fd` fills `data_fd` with the new fd;
    /// on a state without one, and on GET, it is -1 and `device_state` carries the state.
    #[test]
    fn the_returned_mig_state_is_read_from_the_kernel_offsets() {
        let flags = b::VFIO_DEVICE_FEATURE_SET | b::VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE;
        let mut arg = encode_feature(flags, &encode_mig_state(MigState::StopCopy));
        let state_at =
            FEATURE_HEADER_SIZE + offset_of!(b::vfio_device_feature_mig_state, device_state);
        let fd_at = FEATURE_HEADER_SIZE + offset_of!(b::vfio_device_feature_mig_state, data_fd);
        assert_eq!(returned_data_fd(&arg), Some(-1));
        arg[fd_at..fd_at + 4].copy_from_slice(&42i32.to_ne_bytes());
        arg[state_at..state_at + 4].copy_from_slice(&6u32.to_ne_bytes());
        assert_eq!(returned_data_fd(&arg), Some(42));
        assert_eq!(
            returned_state(&arg).and_then(MigState::from_raw),
            Some(MigState::PreCopy)
        );
        // A truncated buffer is not read past its end.
        assert_eq!(returned_data_fd(&arg[..15]), None);
        assert_eq!(returned_state(&arg[..11]), None);
    }

    #[test]
    fn mig_data_size_payload_is_one_u64() {
        assert_eq!(size_of::<b::vfio_device_feature_mig_data_size>(), 8);
        let flags = b::VFIO_DEVICE_FEATURE_GET | b::VFIO_DEVICE_FEATURE_MIG_DATA_SIZE;
        // Feature 9 (include/uapi/linux/vfio.h), GET.
        assert_eq!(flags, 0x1_0009);
        assert_eq!(encode_feature(flags, &[0u8; 8]).len(), 16);
    }

    #[test]
    fn migration_query_payload_is_one_u64() {
        assert_eq!(size_of::<b::vfio_device_feature_migration>(), 8);
        let flags = b::VFIO_DEVICE_FEATURE_GET | b::VFIO_DEVICE_FEATURE_MIGRATION;
        let arg = encode_feature(flags, &[0u8; 8]);
        assert_eq!(arg.len(), 16);
        assert_eq!(u32::from_ne_bytes(arg[0..4].try_into().unwrap()), 16);
        assert_eq!(u32::from_ne_bytes(arg[4..8].try_into().unwrap()), 0x10001);
    }
}
