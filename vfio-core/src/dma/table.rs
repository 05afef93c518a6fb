// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`DmaTable`]: a container's guest memory regions, the checks made before the kernel sees
//! one, and the mapping, unmapping and dirty reports done through [`Type1`].

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use vm_memory::{GuestMemoryRegion, GuestRegionMmap};

use super::{DirtyOp, DirtyRequest, DmaMapping, IommuInfo, Type1};
use crate::error::{Error, Result};

/// One region of the table.
struct Entry {
    size: u64,
    vaddr: u64,
    /// Keeps the host mapping behind `vaddr` alive while the entry exists.
    _keep: Arc<dyn Any + Send + Sync>,
    live: bool,
}

impl Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("size", &self.size)
            .field("vaddr", &format_args!("{:#x}", self.vaddr))
            .field("live", &self.live)
            .finish()
    }
}

/// The guest regions of one container and the checks made before the kernel sees them.
#[derive(Debug, Default)]
pub struct DmaTable {
    entries: BTreeMap<u64, Entry>,
}

impl DmaTable {
    /// Check `[iova, iova + size)` against the table and, when the IOMMU is set (`info`),
    /// against its smallest page and its IOVA ranges.
    fn check(&self, iova: u64, size: u64, vaddr: u64, info: Option<&IommuInfo>) -> Result<()> {
        let page = info.map_or(4096, IommuInfo::min_page_size);
        let end = iova.checked_add(size);
        if size == 0 || end.is_none() || iova % page != 0 || size % page != 0 || vaddr % page != 0 {
            return Err(Error::DmaUnaligned { iova, size, page });
        }
        let end = end.unwrap_or(u64::MAX);
        let before = self.entries.range(..end).next_back();
        if let Some((&at, e)) = before {
            if at.saturating_add(e.size) > iova {
                return Err(Error::DmaOverlap {
                    iova,
                    size,
                    existing: at,
                });
            }
        }
        if let Some(ranges) = info.and_then(|i| i.iova_ranges.as_ref()) {
            if !ranges.iter().any(|r| r.contains(iova, size)) {
                return Err(Error::DmaOutsideIovaRanges { iova, size });
            }
        }
        Ok(())
    }

    /// Add `region` to the table, mapping it through `iommu` when one is set; nothing changes
    /// on failure.
    pub fn insert(
        &mut self,
        region: &GuestRegionMmap,
        iommu: Option<(&dyn Type1, &IommuInfo)>,
    ) -> Result<()> {
        let iova = region.start_addr().0;
        let size = region.len();
        let mmap = region.get_mmap();
        let vaddr = mmap.as_ptr() as u64;
        self.check(iova, size, vaddr, iommu.map(|(_, info)| info))?;
        let live = match iommu {
            Some((t1, _)) => {
                // SAFETY: the memory is a vm-memory mapping (accessed only through volatile
                // copies), kept alive by the entry until it is unmapped.
                unsafe { t1.map_dma(iova, size, vaddr)? };
                true
            }
            None => false,
        };
        self.entries.insert(
            iova,
            Entry {
                size,
                vaddr,
                _keep: mmap,
                live,
            },
        );
        Ok(())
    }

    /// Remove the region starting at `iova`, unmapping it first if it is live.
    pub fn remove(&mut self, iova: u64, iommu: Option<&dyn Type1>) -> Result<()> {
        let entry = self
            .entries
            .get(&iova)
            .ok_or(Error::DmaNotMapped { iova })?;
        if let (true, Some(t1)) = (entry.live, iommu) {
            let done = t1.unmap_dma(iova, entry.size)?;
            if done != entry.size {
                return Err(Error::DmaUnmapSize {
                    iova,
                    expected: entry.size,
                    unmapped: done,
                });
            }
        }
        self.entries.remove(&iova);
        Ok(())
    }

    /// The IOMMU was just set: check and map every region. On failure the regions mapped by
    /// this call are unmapped again and the error names the first refused one.
    pub fn map_all(&mut self, t1: &dyn Type1, info: &IommuInfo) -> Result<usize> {
        let keys: Vec<u64> = self.entries.keys().copied().collect();
        let mut done = Vec::new();
        let mut result = Ok(());
        for iova in keys {
            let Some(e) = self.entries.get(&iova) else {
                continue;
            };
            let (size, vaddr) = (e.size, e.vaddr);
            let mapped = self.check_range_only(iova, size, info).and_then(|()| {
                // SAFETY: as in `insert`: the entry keeps the vm-memory mapping alive.
                unsafe { t1.map_dma(iova, size, vaddr) }
            });
            match mapped {
                Ok(()) => done.push(iova),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            for iova in done {
                if let Some(entry) = self.entries.get(&iova) {
                    let _ = t1.unmap_dma(iova, entry.size);
                }
            }
            return Err(e);
        }
        for e in self.entries.values_mut() {
            e.live = true;
        }
        Ok(self.entries.len())
    }

    fn check_range_only(&self, iova: u64, size: u64, info: &IommuInfo) -> Result<()> {
        let page = info.min_page_size();
        if iova % page != 0 || size % page != 0 {
            return Err(Error::DmaUnaligned { iova, size, page });
        }
        match &info.iova_ranges {
            Some(r) if !r.iter().any(|r| r.contains(iova, size)) => {
                Err(Error::DmaOutsideIovaRanges { iova, size })
            }
            _ => Ok(()),
        }
    }

    /// [`DirtyRequest`] on this table's regions through `t1` (the IOMMU must be set for a
    /// report). A report asks the kernel for each live region that meets the range, whole (a
    /// request never bisects a mapping), into a zeroed buffer, and ORs the bits inside the
    /// range into the caller's bitmap.
    pub fn dirty(
        &self,
        t1: &dyn Type1,
        info: Option<&IommuInfo>,
        request: DirtyRequest<'_>,
    ) -> Result<()> {
        match request {
            DirtyRequest::Start => t1.dirty_pages(DirtyOp::Start),
            DirtyRequest::Stop => t1.dirty_pages(DirtyOp::Stop),
            DirtyRequest::Report { gpa, bitmap } => {
                let page = info
                    .ok_or(Error::IommuInfo(crate::error::errno(libc::EINVAL)))?
                    .min_page_size();
                let pages = (bitmap.len() as u64).saturating_mul(64);
                let end = gpa.saturating_add(pages.saturating_mul(page));
                for (&iova, e) in self.entries.iter().filter(|(_, e)| e.live) {
                    let e_end = iova.saturating_add(e.size);
                    if e_end <= gpa || iova >= end {
                        continue;
                    }
                    let npages = e.size / page;
                    let mut got = vec![0u64; npages.div_ceil(64) as usize];
                    t1.dirty_pages(DirtyOp::Bitmap {
                        iova,
                        size: e.size,
                        page_size: page,
                        bitmap: &mut got,
                    })?;
                    for n in 0..npages {
                        let at = iova + n * page;
                        if at < gpa || at >= end {
                            continue;
                        }
                        let dirty = got
                            .get((n / 64) as usize)
                            .is_some_and(|w| w & (1 << (n % 64)) != 0);
                        if dirty {
                            let bit = (at - gpa) / page;
                            if let Some(w) = bitmap.get_mut((bit / 64) as usize) {
                                *w |= 1 << (bit % 64);
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The IOMMU was released (its last group left): the kernel dropped every mapping.
    pub fn dropped_all(&mut self) {
        for e in self.entries.values_mut() {
            e.live = false;
        }
    }

    /// The table, in IOVA order.
    pub fn mappings(&self) -> Vec<DmaMapping> {
        self.entries
            .iter()
            .map(|(&iova, e)| DmaMapping {
                iova,
                size: e.size,
                live: e.live,
            })
            .collect()
    }
}
