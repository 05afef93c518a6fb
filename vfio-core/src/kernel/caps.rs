// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Decoding what the kernel writes back for `VFIO_DEVICE_GET_REGION_INFO` and
//! `VFIO_IOMMU_GET_INFO`: a fixed structure followed by a chain of capabilities
//! (`struct vfio_info_cap_header { u16 id; u16 version; u32 next; }`, `next` an offset from the
//! start of the structure, 0 at the end). Pure byte parsing with bounds checks: a malformed
//! chain from a device gives an error, never a panic or an endless walk.

use std::io;
use std::mem::{offset_of, size_of};

use vfio_bindings::bindings::vfio as b;

use crate::info::SparseMmapArea;

/// Most capabilities a chain is walked for before it is taken as a loop.
const MAX_CAPS: usize = 64;

fn bad() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> io::Result<u16> {
    bytes
        .get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(bad)
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> io::Result<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(bad)
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> io::Result<u64> {
    bytes
        .get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
        .ok_or_else(bad)
}

/// One capability of a chain: its id, version and offset in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cap {
    pub id: u16,
    pub version: u16,
    pub offset: usize,
}

/// The capabilities of the chain starting at `first` (0: none). Each header must lie inside
/// `bytes` and after the fixed structure (`min_offset`).
pub(crate) fn walk(bytes: &[u8], first: u32, min_offset: usize) -> io::Result<Vec<Cap>> {
    let mut caps = Vec::new();
    let mut next = first as usize;
    while next != 0 {
        if caps.len() == MAX_CAPS || next < min_offset {
            return Err(bad());
        }
        let header = size_of::<b::vfio_info_cap_header>();
        if bytes.len() < next.saturating_add(header) {
            return Err(bad());
        }
        caps.push(Cap {
            id: u16_at(bytes, next)?,
            version: u16_at(bytes, next + 2)?,
            offset: next,
        });
        next = u32_at(bytes, next + 4)? as usize;
    }
    Ok(caps)
}

/// A decoded `struct vfio_region_info` and the capabilities this crate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegionInfoBytes {
    pub flags: u32,
    pub size: u64,
    pub offset: u64,
    pub sparse_mmap: Option<Vec<SparseMmapArea>>,
    pub msix_mappable: bool,
}

/// Size of `struct vfio_region_info` without capabilities.
pub(crate) const REGION_INFO_SIZE: usize = size_of::<b::vfio_region_info>();

/// Encode the `struct vfio_region_info` argument for region `index` in a buffer of `argsz`
/// bytes.
pub(crate) fn region_info_arg(index: u32, argsz: usize) -> Vec<u8> {
    let mut arg = vec![0u8; argsz.max(REGION_INFO_SIZE)];
    let len = u32::try_from(arg.len()).unwrap_or(u32::MAX);
    arg[offset_of!(b::vfio_region_info, argsz)..][..4].copy_from_slice(&len.to_ne_bytes());
    arg[offset_of!(b::vfio_region_info, index)..][..4].copy_from_slice(&index.to_ne_bytes());
    arg
}

/// The `argsz` the kernel asked for (larger than the buffer when capabilities did not fit).
pub(crate) fn returned_argsz(arg: &[u8]) -> io::Result<usize> {
    u32_at(arg, 0).map(|v| v as usize)
}

/// Decode a region info the kernel wrote back (with its capability chain when it fitted).
pub(crate) fn parse_region_info(arg: &[u8]) -> io::Result<RegionInfoBytes> {
    let flags = u32_at(arg, offset_of!(b::vfio_region_info, flags))?;
    let cap_offset = u32_at(arg, offset_of!(b::vfio_region_info, cap_offset))?;
    let mut info = RegionInfoBytes {
        flags,
        size: u64_at(arg, offset_of!(b::vfio_region_info, size))?,
        offset: u64_at(arg, offset_of!(b::vfio_region_info, offset))?,
        sparse_mmap: None,
        msix_mappable: false,
    };
    if flags & b::VFIO_REGION_INFO_FLAG_CAPS == 0 {
        return Ok(info);
    }
    for cap in walk(arg, cap_offset, REGION_INFO_SIZE)? {
        match u32::from(cap.id) {
            b::VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
                let at = cap.offset;
                let nr = u32_at(
                    arg,
                    at + offset_of!(b::vfio_region_info_cap_sparse_mmap, nr_areas),
                )? as usize;
                let areas_at = at + size_of::<b::vfio_region_info_cap_sparse_mmap>();
                let area = size_of::<b::vfio_region_sparse_mmap_area>();
                if arg.len() < areas_at.saturating_add(nr.saturating_mul(area)) {
                    return Err(bad());
                }
                let areas = (0..nr)
                    .map(|i| {
                        let a = areas_at + i * area;
                        Ok(SparseMmapArea {
                            offset: u64_at(arg, a)?,
                            size: u64_at(arg, a + 8)?,
                        })
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                info.sparse_mmap = Some(areas);
            }
            b::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE => info.msix_mappable = true,
            _ => {}
        }
    }
    Ok(info)
}

/// Size of `struct vfio_iommu_type1_info` without capabilities.
pub(crate) const IOMMU_INFO_SIZE: usize = size_of::<b::vfio_iommu_type1_info>();

/// A decoded `struct vfio_iommu_type1_info` and its capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IommuInfoBytes {
    pub iova_pgsizes: u64,
    pub iova_ranges: Option<Vec<(u64, u64)>>,
    /// (flags, pgsize_bitmap, max_dirty_bitmap_size) of the MIGRATION capability.
    pub migration: Option<(u32, u64, u64)>,
    pub dma_avail: Option<u32>,
}

/// Encode the `struct vfio_iommu_type1_info` argument in a buffer of `argsz` bytes.
pub(crate) fn iommu_info_arg(argsz: usize) -> Vec<u8> {
    let mut arg = vec![0u8; argsz.max(IOMMU_INFO_SIZE)];
    let len = u32::try_from(arg.len()).unwrap_or(u32::MAX);
    arg[..4].copy_from_slice(&len.to_ne_bytes());
    arg
}

/// Decode an IOMMU info the kernel wrote back.
pub(crate) fn parse_iommu_info(arg: &[u8]) -> io::Result<IommuInfoBytes> {
    let flags = u32_at(arg, offset_of!(b::vfio_iommu_type1_info, flags))?;
    let mut info = IommuInfoBytes::default();
    if flags & b::VFIO_IOMMU_INFO_PGSIZES != 0 {
        info.iova_pgsizes = u64_at(arg, offset_of!(b::vfio_iommu_type1_info, iova_pgsizes))?;
    }
    if flags & b::VFIO_IOMMU_INFO_CAPS == 0 {
        return Ok(info);
    }
    let first = u32_at(arg, offset_of!(b::vfio_iommu_type1_info, cap_offset))?;
    for cap in walk(arg, first, IOMMU_INFO_SIZE)? {
        let at = cap.offset;
        match u32::from(cap.id) {
            b::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                let nr = u32_at(
                    arg,
                    at + offset_of!(b::vfio_iommu_type1_info_cap_iova_range, nr_iovas),
                )? as usize;
                let ranges_at = at + size_of::<b::vfio_iommu_type1_info_cap_iova_range>();
                let range = size_of::<b::vfio_iova_range>();
                if arg.len() < ranges_at.saturating_add(nr.saturating_mul(range)) {
                    return Err(bad());
                }
                let ranges = (0..nr)
                    .map(|i| {
                        let r = ranges_at + i * range;
                        Ok((u64_at(arg, r)?, u64_at(arg, r + 8)?))
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                info.iova_ranges = Some(ranges);
            }
            b::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION => {
                type M = b::vfio_iommu_type1_info_cap_migration;
                info.migration = Some((
                    u32_at(arg, at + offset_of!(M, flags))?,
                    u64_at(arg, at + offset_of!(M, pgsize_bitmap))?,
                    u64_at(arg, at + offset_of!(M, max_dirty_bitmap_size))?,
                ));
            }
            b::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => {
                info.dma_avail = Some(u32_at(
                    arg,
                    at + offset_of!(b::vfio_iommu_type1_info_dma_avail, avail),
                )?);
            }
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put32(buf: &mut [u8], at: usize, v: u32) {
        buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put64(buf: &mut [u8], at: usize, v: u64) {
        buf[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }

    fn header(buf: &mut [u8], at: usize, id: u16, next: u32) {
        buf[at..at + 2].copy_from_slice(&id.to_ne_bytes());
        buf[at + 2..at + 4].copy_from_slice(&1u16.to_ne_bytes());
        put32(buf, at + 4, next);
    }

    /// The layouts the decoders read, as include/uapi/linux/vfio.h (v6.12.117) defines them.
    #[test]
    fn layouts_match_the_uapi() {
        assert_eq!(REGION_INFO_SIZE, 32);
        assert_eq!(offset_of!(b::vfio_region_info, cap_offset), 12);
        assert_eq!(offset_of!(b::vfio_region_info, size), 16);
        assert_eq!(offset_of!(b::vfio_region_info, offset), 24);
        assert_eq!(size_of::<b::vfio_region_info_cap_sparse_mmap>(), 16);
        assert_eq!(IOMMU_INFO_SIZE, 24);
        assert_eq!(offset_of!(b::vfio_iommu_type1_info, cap_offset), 16);
        assert_eq!(size_of::<b::vfio_iommu_type1_info_cap_iova_range>(), 16);
        assert_eq!(
            offset_of!(b::vfio_iommu_type1_info_cap_migration, pgsize_bitmap),
            16
        );
        assert_eq!(
            (
                b::VFIO_REGION_INFO_CAP_SPARSE_MMAP,
                b::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE,
                b::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                b::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
                b::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL
            ),
            (1, 3, 1, 2, 3)
        );
    }

    #[test]
    fn region_caps_decode_sparse_areas_and_msix_mappable() {
        let mut arg = region_info_arg(2, 32 + 16 + 32 + 8);
        let flags = b::VFIO_REGION_INFO_FLAG_READ | b::VFIO_REGION_INFO_FLAG_CAPS;
        put32(&mut arg, 4, flags);
        put32(&mut arg, 12, 32);
        put64(&mut arg, 16, 0x4000);
        put64(&mut arg, 24, 2 << 40);
        header(&mut arg, 32, 1, 80);
        put32(&mut arg, 40, 2);
        put64(&mut arg, 48, 0);
        put64(&mut arg, 56, 0x1000);
        put64(&mut arg, 64, 0x3000);
        put64(&mut arg, 72, 0x1000);
        header(&mut arg, 80, 3, 0);
        let info = parse_region_info(&arg).unwrap();
        assert_eq!(info.size, 0x4000);
        assert_eq!(info.offset, 2 << 40);
        assert!(info.msix_mappable);
        assert_eq!(
            info.sparse_mmap.unwrap(),
            [
                SparseMmapArea {
                    offset: 0,
                    size: 0x1000
                },
                SparseMmapArea {
                    offset: 0x3000,
                    size: 0x1000
                }
            ]
        );
    }

    #[test]
    fn malformed_chains_are_errors_not_hangs() {
        let mut arg = region_info_arg(0, 64);
        put32(&mut arg, 4, b::VFIO_REGION_INFO_FLAG_CAPS);
        // A capability that points at itself.
        put32(&mut arg, 12, 32);
        header(&mut arg, 32, 7, 32);
        assert!(parse_region_info(&arg).is_err());
        // Into the fixed structure.
        header(&mut arg, 32, 7, 8);
        assert!(parse_region_info(&arg).is_err());
        // Past the end.
        header(&mut arg, 32, 7, 60);
        assert!(parse_region_info(&arg).is_err());
        // A sparse capability with more areas than fit.
        header(&mut arg, 32, 1, 0);
        put32(&mut arg, 40, 1000);
        assert!(parse_region_info(&arg).is_err());
        // Without the CAPS flag the chain is not read.
        put32(&mut arg, 4, 0);
        assert_eq!(parse_region_info(&arg).unwrap().sparse_mmap, None);
        assert!(parse_region_info(&arg[..20]).is_err());
    }

    #[test]
    fn iommu_info_decodes_ranges_migration_and_dma_avail() {
        let mut arg = iommu_info_arg(24 + 48 + 32 + 12);
        put32(
            &mut arg,
            4,
            b::VFIO_IOMMU_INFO_PGSIZES | b::VFIO_IOMMU_INFO_CAPS,
        );
        put64(&mut arg, 8, 0x4020_1000);
        put32(&mut arg, 16, 24);
        header(&mut arg, 24, 1, 72);
        put32(&mut arg, 32, 2);
        put64(&mut arg, 40, 0);
        put64(&mut arg, 48, 0xfedf_ffff);
        put64(&mut arg, 56, 0xfef0_0000);
        put64(&mut arg, 64, 0x7f_ffff_ffff);
        header(&mut arg, 72, 2, 104);
        put32(&mut arg, 80, 1);
        put64(&mut arg, 88, 0x1000);
        put64(&mut arg, 96, 0x1000_0000);
        header(&mut arg, 104, 3, 0);
        put32(&mut arg, 112, 65535);
        let info = parse_iommu_info(&arg).unwrap();
        assert_eq!(info.iova_pgsizes, 0x4020_1000);
        assert_eq!(
            info.iova_ranges.unwrap(),
            [(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)]
        );
        assert_eq!(info.migration, Some((1, 0x1000, 0x1000_0000)));
        assert_eq!(info.dma_avail, Some(65535));
    }
}
