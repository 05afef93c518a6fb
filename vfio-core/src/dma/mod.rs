// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! DMA: guest memory mapped into a VM's IO address space so its passed-through devices can
//! reach it.
//!
//! A VM has one container ([`VfioContainer`]): the kernel's type1v2 `Container`
//! (feature `kernel`) or the simulator's `SimContainer` (feature `sim`). The VMM hands it
//! guest memory regions (vm-memory's [`GuestRegionMmap`], IOVA = guest physical address); the
//! container keeps them in a table, maps them whenever its IOMMU is set (the kernel sets it
//! when the first group joins and drops it, with every mapping, when the last group leaves:
//! the table is mapped again on the next join) and checks each against the rules the kernel
//! would apply before asking it, so a refusal is a typed error that names the reason.
//!
//! The raw type1 operations underneath ([`Type1`]) are what both backends implement with the
//! kernel's semantics (Linux v6.12.117 drivers/vfio/vfio_iommu_type1.c): any overlap with a
//! mapping is EEXIST, an IOVA, size or address not aligned to the smallest IOMMU page is
//! EINVAL, an IOVA outside every reported range is EINVAL, and a type1v2 unmap that starts or
//! ends inside a mapping is EINVAL (mappings are never split).

use std::fmt::Debug;

use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap, MmapRegion};

use crate::error::{Error, Result};

mod dirty;
mod table;

pub use dirty::{DirtySource, DirtyTracker, DmaLogging};
pub use table::DmaTable;

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

/// One guest memory region in a container's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaMapping {
    /// IO virtual address (the region's guest physical address).
    pub iova: u64,
    /// Size in bytes.
    pub size: u64,
    /// Whether the IOMMU holds it now (false while no group is attached).
    pub live: bool,
}

/// A VM's IO address space, as the VMM uses it. Implemented by the kernel's `Container` and
/// the simulator's `SimContainer`.
pub trait VfioContainer: Send + Sync + Debug {
    /// What the IOMMU reports (`VFIO_IOMMU_GET_INFO`); EINVAL while no group is attached.
    fn iommu_info(&self) -> Result<IommuInfo>;

    /// Add a guest memory region at its guest physical address: checked against every region
    /// already in the table and, once the IOMMU is set, against its page size and IOVA ranges,
    /// then mapped read/write if a group is attached. The container keeps the region's
    /// mapping alive until it is removed. A refused region leaves the table as it was.
    fn map_guest_region(&self, region: &GuestRegionMmap) -> Result<()>;

    /// Remove the region that starts at `gpa` (memory hot-unplug): unmapped from the IOMMU if
    /// it is live, then dropped from the table.
    fn unmap_guest_region(&self, gpa: u64) -> Result<()>;

    /// The table, in IOVA order.
    fn dma_mappings(&self) -> Vec<DmaMapping>;

    /// Dirty-page tracking of the container's guest memory (see [`DirtyRequest`]).
    fn dirty(&self, request: DirtyRequest<'_>) -> Result<()>;
}

/// The raw type1 operations (the kernel's `VFIO_IOMMU_MAP_DMA` and `UNMAP_DMA`), with the
/// kernel's rules and errnos, for conformance checks and for [`DmaTable`].
pub trait Type1: Send + Sync + Debug {
    /// `VFIO_IOMMU_MAP_DMA` of `[iova, iova + size)` to the process memory at `vaddr`, read and
    /// write.
    ///
    /// # Safety
    ///
    /// The device may read and write `[vaddr, vaddr + size)` at any time until it is unmapped:
    /// the range must be memory of this process that no Rust reference points into (only
    /// volatile access, as vm-memory does, or none), and it must stay mapped until then.
    unsafe fn map_dma(&self, iova: u64, size: u64, vaddr: u64) -> Result<()>;

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`: returns the bytes unmapped (whole
    /// mappings only).
    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64>;

    /// `VFIO_IOMMU_DIRTY_PAGES`: start or stop dirty-page tracking, or get the bitmap of a
    /// range. The kernel's rules (`vfio_iommu_type1_dirty_pages()`, `vfio_iova_dirty_bitmap()`,
    /// `update_user_bitmap()`): start and stop are idempotent; a bitmap is refused (EINVAL)
    /// while not tracking, for another page size than the IOMMU's smallest, for an unaligned
    /// or empty range, for a range that bisects a mapping, or for a buffer too small. Only the
    /// 64-bit words a mapping covers are written (a mapping's first word keeps the bits before
    /// it, its last word's bits after it are cleared); the words of gaps between mappings are
    /// left as they were. While a group of ordinary (non-pinning) devices is attached every
    /// page of every mapping in the range is reported, at every call: the IOMMU cannot see
    /// device writes. With only mediated devices attached, only the pages they pinned are.
    fn dirty_pages(&self, op: DirtyOp<'_>) -> Result<()>;
}

/// One `VFIO_IOMMU_DIRTY_PAGES` request.
#[derive(Debug)]
pub enum DirtyOp<'a> {
    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START`.
    Start,
    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP`.
    Stop,
    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP` of `[iova, iova + size)` in pages of
    /// `page_size` bytes: bit `n` of `bitmap` (word `n / 64`, bit `n % 64`) is page
    /// `iova + n * page_size`.
    Bitmap {
        /// First IO virtual address.
        iova: u64,
        /// Size of the range.
        size: u64,
        /// Page size of the bitmap.
        page_size: u64,
        /// The bitmap the kernel writes.
        bitmap: &'a mut [u64],
    },
}

/// What a VMM asks of a container's dirty-page tracking ([`VfioContainer::dirty`]).
#[derive(Debug)]
pub enum DirtyRequest<'a> {
    /// Start tracking.
    Start,
    /// Stop tracking.
    Stop,
    /// OR into `bitmap` the pages of guest memory `[gpa, gpa + bitmap.len() * 64 pages)` the
    /// IOMMU reports dirty (pages of the IOMMU's smallest size; bit `n` is page
    /// `gpa + n * page`). Pages outside every DMA mapping are never set; bits already set are
    /// kept, so the VMM's own dirty log and the IOMMU's end up as their union.
    Report {
        /// First guest physical address (page aligned).
        gpa: u64,
        /// The VMM's dirty bitmap for that memory.
        bitmap: &'a mut [u64],
    },
}

/// Guest memory for DMA: `size` bytes at guest physical address `gpa`, backed by a memfd (so
/// the VMM can share it, for example with a migration helper) and mapped shared into this
/// process with vm-memory. Hand it to [`VfioContainer::map_guest_region`].
pub fn memfd_guest_region(gpa: u64, size: u64) -> Result<GuestRegionMmap> {
    let bad = |e: std::io::Error| Error::GuestMemory(e);
    let file = crate::ioctl::memfd(c"guest-memory").map_err(bad)?;
    file.set_len(size).map_err(bad)?;
    let len =
        usize::try_from(size).map_err(|_| bad(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    let region = MmapRegion::from_file(FileOffset::new(file, 0), len)
        .map_err(|e| bad(std::io::Error::other(e.to_string())))?;
    GuestRegionMmap::new(region, GuestAddress(gpa))
        .ok_or_else(|| bad(std::io::Error::from_raw_os_error(libc::EOVERFLOW)))
}
