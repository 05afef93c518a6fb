// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A simulated type1v2 container: groups join and leave, the IOMMU is set with the first and
//! released with the last (dropping every mapping), and `MAP_DMA`/`UNMAP_DMA` follow the
//! kernel's rules (Linux v6.12.117 drivers/vfio/vfio_iommu_type1.c, `vfio_dma_do_map()` and
//! `vfio_dma_do_unmap()`): EINVAL for an empty, wrapping or unaligned range or one outside
//! every IOVA range, EEXIST for any overlap, ENOSPC when `dma_avail` is used up, EINVAL for an
//! unmap that starts or ends inside a mapping; dirty-page tracking as the kernel does it without
//! hardware dirty tracking (`vfio_iova_dirty_bitmap()`, `update_user_bitmap()`: every page of
//! every mapping for ordinary devices, none for mediated devices that pin nothing). Nothing is
//! pinned or accessed: the simulated devices do not DMA.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vm_memory::GuestRegionMmap;

use crate::dma::{
    DirtyOp, DirtyRequest, DmaMapping, DmaTable, IommuInfo, IovaRange, Type1, VfioContainer,
};
use crate::error::{errno, Error, Result};

/// What the simulated container was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimIommuCounters {
    /// `VFIO_IOMMU_MAP_DMA` calls, refused ones included.
    pub map_calls: u64,
    /// `VFIO_IOMMU_UNMAP_DMA` calls, refused ones included.
    pub unmap_calls: u64,
    /// Times the IOMMU was set (a first group joined).
    pub iommu_sets: u64,
}

#[derive(Debug)]
struct State {
    groups: usize,
    /// Mappings the IOMMU holds now: IOVA -> size.
    iommu: BTreeMap<u64, u64>,
    dma_avail: u32,
    /// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START` in effect.
    tracking: bool,
    counters: SimIommuCounters,
}

/// A simulated VFIO container with the type1v2 IOMMU. Share it as `Arc<SimContainer>`.
#[derive(Debug)]
pub struct SimContainer {
    info: IommuInfo,
    /// Whether its groups are mediated devices that pin what they touch (the kernel's
    /// `pinned_page_dirty_scope`: then only pinned pages are dirty, and these devices pin
    /// nothing); otherwise ordinary devices, for which every mapped page is dirty.
    pinned_scope: bool,
    /// Locked before `state` when both are needed ([`Type1`] calls lock `state` alone).
    table: Mutex<DmaTable>,
    state: Mutex<State>,
}

/// A group attached to a [`SimContainer`]; it leaves when dropped.
#[derive(Debug)]
pub struct SimGroup {
    container: Arc<SimContainer>,
}

impl Drop for SimGroup {
    fn drop(&mut self) {
        let mut table = self.container.lock_table();
        let mut s = self.container.lock();
        s.groups = s.groups.saturating_sub(1);
        if s.groups == 0 {
            // The kernel releases the IOMMU with the last group, and its mappings with it.
            s.iommu.clear();
            s.dma_avail = self.container.info.dma_avail.unwrap_or(u32::MAX);
            s.tracking = false;
            table.dropped_all();
        }
    }
}

/// The x86 lab's answer to `VFIO_IOMMU_GET_INFO` (intel-iommu under QEMU: 4 KiB, 2 MiB and
/// 1 GiB pages; everything below 512 GiB but the MSI window; 65535 mappings).
pub fn lab_iommu_info() -> IommuInfo {
    IommuInfo {
        page_sizes: 0x4020_1000,
        iova_ranges: Some(vec![
            IovaRange {
                start: 0,
                end: 0xfedf_ffff,
            },
            IovaRange {
                start: 0xfef0_0000,
                end: 0x7f_ffff_ffff,
            },
        ]),
        dirty_tracking: Some(crate::dma::DirtyTrackingInfo {
            flags: 0,
            page_sizes: 0x1000,
            max_bitmap_bytes: 0x1000_0000,
        }),
        dma_avail: Some(65535),
    }
}

/// What `VFIO_IOMMU_GET_INFO` reports for a container that holds only mediated devices
/// (vfio_iommu_type1.c: every page size the kernel can map, no IOVA ranges; dirty tracking in
/// 4 KiB pages; 65535 mappings).
pub fn mediated_iommu_info() -> IommuInfo {
    IommuInfo {
        page_sizes: !0xfff,
        iova_ranges: None,
        dirty_tracking: Some(crate::dma::DirtyTrackingInfo {
            flags: 0,
            page_sizes: 0x1000,
            max_bitmap_bytes: 0x1000_0000,
        }),
        dma_avail: Some(65535),
    }
}

impl SimContainer {
    /// A container whose IOMMU reports `info` once set, for ordinary (vfio-pci) devices.
    pub fn new(info: IommuInfo) -> Arc<Self> {
        Self::build(info, false)
    }

    /// A container for mediated devices that pin nothing (like the lab's mtty): the IOMMU
    /// reports no dirty pages.
    pub fn new_mediated(info: IommuInfo) -> Arc<Self> {
        Self::build(info, true)
    }

    fn build(info: IommuInfo, pinned_scope: bool) -> Arc<Self> {
        let dma_avail = info.dma_avail.unwrap_or(u32::MAX);
        Arc::new(SimContainer {
            info,
            pinned_scope,
            table: Mutex::new(DmaTable::default()),
            state: Mutex::new(State {
                groups: 0,
                iommu: BTreeMap::new(),
                dma_avail,
                tracking: false,
                counters: SimIommuCounters::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_table(&self) -> MutexGuard<'_, DmaTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A group joins: the first sets the IOMMU and maps the table.
    pub fn join(self: &Arc<Self>) -> Result<SimGroup> {
        let mut table = self.lock_table();
        let first = {
            let mut s = self.lock();
            s.groups += 1;
            if s.groups == 1 {
                s.counters.iommu_sets += 1;
            }
            s.groups == 1
        };
        if first {
            if let Err(e) = table.map_all(self.as_ref(), &self.info) {
                let mut s = self.lock();
                s.groups = 0;
                s.iommu.clear();
                return Err(e);
            }
        }
        Ok(SimGroup {
            container: Arc::clone(self),
        })
    }

    /// Groups attached now.
    pub fn groups(&self) -> usize {
        self.lock().groups
    }

    /// The mappings the IOMMU holds now (IOVA, size).
    pub fn iommu_mappings(&self) -> Vec<(u64, u64)> {
        self.lock().iommu.iter().map(|(&a, &s)| (a, s)).collect()
    }

    /// What the container was asked to do.
    pub fn counters(&self) -> SimIommuCounters {
        self.lock().counters
    }

    fn map_locked(&self, s: &mut State, iova: u64, size: u64, vaddr: u64) -> Result<()> {
        s.counters.map_calls += 1;
        let refuse = |e| {
            Err(Error::DmaMap {
                iova,
                size,
                source: errno(e),
            })
        };
        if s.groups == 0 {
            return refuse(libc::EINVAL);
        }
        let page = self.info.min_page_size();
        let Some(end) = iova.checked_add(size) else {
            return refuse(libc::EINVAL);
        };
        if size == 0 || iova % page != 0 || size % page != 0 || vaddr % page != 0 {
            return refuse(libc::EINVAL);
        }
        if let Some((&at, &len)) = s.iommu.range(..end).next_back() {
            if at + len > iova {
                return refuse(libc::EEXIST);
            }
        }
        if s.dma_avail == 0 {
            return refuse(libc::ENOSPC);
        }
        if let Some(ranges) = &self.info.iova_ranges {
            if !ranges.iter().any(|r| r.contains(iova, size)) {
                return refuse(libc::EINVAL);
            }
        }
        s.iommu.insert(iova, size);
        s.dma_avail -= 1;
        Ok(())
    }

    fn unmap_locked(&self, s: &mut State, iova: u64, size: u64) -> Result<u64> {
        s.counters.unmap_calls += 1;
        let refuse = |e| {
            Err(Error::DmaUnmap {
                iova,
                size,
                source: errno(e),
            })
        };
        let page = self.info.min_page_size();
        let Some(end) = iova.checked_add(size) else {
            return refuse(libc::EINVAL);
        };
        if s.groups == 0 || size == 0 || iova % page != 0 || size % page != 0 {
            return refuse(libc::EINVAL);
        }
        // type1v2 never splits a mapping: a range starting or ending inside one is refused.
        let inside = |at: u64| {
            s.iommu
                .range(..at)
                .next_back()
                .is_some_and(|(&a, &l)| a < at && at < a + l)
        };
        if inside(iova) || inside(end) {
            return refuse(libc::EINVAL);
        }
        let gone: Vec<u64> = s.iommu.range(iova..end).map(|(&a, _)| a).collect();
        let mut unmapped = 0;
        for a in gone {
            unmapped += s.iommu.remove(&a).unwrap_or(0);
            s.dma_avail = s.dma_avail.saturating_add(1);
        }
        Ok(unmapped)
    }
}

/// `DIRTY_BITMAP_BYTES(n)`: bytes of a bitmap of `n` pages, in whole 64-bit words.
fn bitmap_words(npages: u64) -> u64 {
    npages.div_ceil(64)
}

impl SimContainer {
    fn dirty_locked(&self, s: &mut State, op: DirtyOp<'_>) -> Result<()> {
        let refuse = |e| Err(Error::DirtyPages(errno(e)));
        if s.groups == 0 {
            return refuse(libc::EINVAL);
        }
        let (iova, size, page_size, bitmap) = match op {
            DirtyOp::Start => {
                s.tracking = true;
                return Ok(());
            }
            DirtyOp::Stop => {
                s.tracking = false;
                return Ok(());
            }
            DirtyOp::Bitmap {
                iova,
                size,
                page_size,
                bitmap,
            } => (iova, size, page_size, bitmap),
        };
        let page = self.info.min_page_size();
        let Some(end) = iova.checked_add(size) else {
            return refuse(libc::EINVAL);
        };
        let pgshift = page_size.trailing_zeros();
        let npages = size >> pgshift;
        if npages == 0 || (bitmap.len() as u64) < bitmap_words(npages) {
            return refuse(libc::EINVAL);
        }
        if page_size != page || iova % page != 0 || size == 0 || size % page != 0 {
            return refuse(libc::EINVAL);
        }
        if !s.tracking {
            return refuse(libc::EINVAL);
        }
        // The range must not bisect a mapping at either end.
        let holding = |at: u64| {
            s.iommu
                .range(..=at)
                .next_back()
                .filter(|(&a, &l)| at < a + l)
                .map(|(&a, &l)| (a, l))
        };
        if holding(iova).is_some_and(|(a, _)| a != iova)
            || holding(end - 1).is_some_and(|(a, l)| a + l != end)
        {
            return refuse(libc::EINVAL);
        }
        for (&at, &len) in s.iommu.range(iova..end) {
            let nbits = len >> pgshift;
            let bit_offset = (at - iova) >> pgshift;
            let first_word = (bit_offset / 64) as usize;
            let shift = bit_offset % 64;
            // Non-pinned devices: every page is dirty; pinned scope: none (nothing pinned).
            let dirty = !self.pinned_scope;
            let words = bitmap_words(nbits + shift) as usize;
            for w in 0..words {
                let lo = (w as u64) * 64;
                let mut word = 0u64;
                if dirty {
                    for b in 0..64u64 {
                        let bit = lo + b;
                        if bit >= shift && bit < shift + nbits {
                            word |= 1 << b;
                        }
                    }
                }
                if w == 0 && shift != 0 {
                    // The caller's bits before this mapping in its first word are kept.
                    let leftover = bitmap.get(first_word).copied().unwrap_or(0);
                    word |= leftover & ((1u64 << shift) - 1);
                }
                if let Some(dst) = bitmap.get_mut(first_word + w) {
                    *dst = word;
                }
            }
        }
        Ok(())
    }
}

impl Type1 for SimContainer {
    unsafe fn map_dma(&self, iova: u64, size: u64, vaddr: u64) -> Result<()> {
        let mut s = self.lock();
        self.map_locked(&mut s, iova, size, vaddr)
    }

    fn unmap_dma(&self, iova: u64, size: u64) -> Result<u64> {
        let mut s = self.lock();
        self.unmap_locked(&mut s, iova, size)
    }

    fn dirty_pages(&self, op: DirtyOp<'_>) -> Result<()> {
        let mut s = self.lock();
        self.dirty_locked(&mut s, op)
    }
}

impl VfioContainer for SimContainer {
    fn iommu_info(&self) -> Result<IommuInfo> {
        let s = self.lock();
        if s.groups == 0 {
            return Err(Error::IommuInfo(errno(libc::EINVAL)));
        }
        let mut info = self.info.clone();
        info.dma_avail = info.dma_avail.map(|_| s.dma_avail);
        Ok(info)
    }

    fn map_guest_region(&self, region: &GuestRegionMmap) -> Result<()> {
        let mut table = self.lock_table();
        let live = self.lock().groups > 0;
        table.insert(region, live.then_some((self as &dyn Type1, &self.info)))
    }

    fn unmap_guest_region(&self, gpa: u64) -> Result<()> {
        let mut table = self.lock_table();
        let live = self.lock().groups > 0;
        table.remove(gpa, live.then_some(self as &dyn Type1))
    }

    fn dma_mappings(&self) -> Vec<DmaMapping> {
        self.lock_table().mappings()
    }

    fn dirty(&self, request: DirtyRequest<'_>) -> Result<()> {
        let table = self.lock_table();
        if self.lock().groups == 0 {
            return Err(Error::DirtyPages(errno(libc::EINVAL)));
        }
        table.dirty(self, Some(&self.info), request)
    }
}
