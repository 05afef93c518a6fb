// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Sparse areas: which pages of one BAR are mapped and which are trapped.
//!
//! A BAR that the host lets us mmap still has bytes that must reach the VMM: the MSI-X table
//! and PBA, which the VMM emulates. KVM maps guest memory a page at a time, so the trap covers
//! every page that holds one byte of either, whatever the region capabilities say
//! (`MSIX_MAPPABLE` only lifts the kernel's refusal to mmap those pages; it does not make it
//! possible to trap less than a page). A `SPARSE_MMAP` capability further limits the mappable
//! part of the BAR to the areas it lists.
//!
//! [`SparseLayout`] splits a BAR into areas such that every byte lies in exactly one area and
//! every area is either mapped or trapped.

use crate::{Error, PageSize, Result};

/// A byte range inside a BAR: `offset .. offset + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// First byte, relative to the start of the BAR.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl ByteRange {
    /// A range of `len` bytes at `offset`.
    pub fn new(offset: u64, len: u64) -> Self {
        ByteRange { offset, len }
    }

    /// One past the last byte, checked against a BAR of `bar_size` bytes.
    fn end_within(&self, bar_size: u64) -> Result<u64> {
        self.offset
            .checked_add(self.len)
            .filter(|end| *end <= bar_size)
            .ok_or(Error::RangeOutsideBar {
                offset: self.offset,
                len: self.len,
                bar_size,
            })
    }
}

/// What the VFIO region info says about mmapping a BAR region that has the MMAP flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegionMmapCaps {
    /// No capability: the whole region may be mmapped.
    #[default]
    WholeRegion,
    /// `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`: the whole region, MSI-X table included, may be
    /// mmapped.
    MsixMappable,
    /// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: only these areas may be mmapped.
    SparseAreas(Vec<ByteRange>),
}

/// Where a device's MSI-X table and PBA live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsixLocation {
    /// BAR holding the table.
    pub table_bar: u8,
    /// Table bytes inside that BAR.
    pub table: ByteRange,
    /// BAR holding the pending bit array.
    pub pba_bar: u8,
    /// PBA bytes inside that BAR.
    pub pba: ByteRange,
}

impl MsixLocation {
    /// The location of a table of `vectors` entries (16 bytes each) and its PBA (one bit per
    /// vector, in 8-byte words), as the MSI-X capability's Table/PBA BIR and offsets give it.
    pub fn from_capability(
        table_bar: u8,
        table_offset: u64,
        pba_bar: u8,
        pba_offset: u64,
        vectors: u16,
    ) -> Self {
        let n = u64::from(vectors);
        MsixLocation {
            table_bar,
            table: ByteRange::new(table_offset, n * 16),
            pba_bar,
            pba: ByteRange::new(pba_offset, n.div_ceil(64) * 8),
        }
    }

    /// The MSI-X byte ranges that lie in BAR `index` and must therefore be trapped.
    pub fn trapped_in(&self, index: u8) -> Vec<ByteRange> {
        let mut out = Vec::new();
        if self.table_bar == index {
            out.push(self.table);
        }
        if self.pba_bar == index {
            out.push(self.pba);
        }
        out
    }
}

/// Whether an area of a BAR is mmapped or trapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AreaKind {
    /// Mmapped: guest accesses go straight to the device.
    Mapped,
    /// Trapped: guest accesses exit to the VMM, which forwards or emulates them.
    Trapped,
}

/// One area of a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Area {
    /// First byte of the area, relative to the BAR. Page-aligned for mapped areas.
    pub offset: u64,
    /// Number of BAR bytes in the area.
    pub len: u64,
    /// Mapped or trapped.
    pub kind: AreaKind,
    /// Length of the mmap for a mapped area: `len` rounded up to a page when the area ends at
    /// the end of a BAR that ends inside a page (the host has reserved the rest of that page).
    /// Zero for trapped areas.
    pub mmap_len: u64,
}

/// The areas of one BAR, in offset order, covering every byte exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseLayout {
    bar_size: u64,
    areas: Vec<Area>,
}

impl SparseLayout {
    /// Splits a BAR of `bar_size` bytes into mapped and trapped areas.
    ///
    /// `host_mappable` is the host plan's decision for the BAR; `caps` is what the region info
    /// reported; `must_trap` lists bytes the VMM emulates (normally
    /// [`MsixLocation::trapped_in`]). Ranges outside the BAR are an error.
    pub fn compute(
        bar_size: u64,
        page: PageSize,
        host_mappable: bool,
        caps: &RegionMmapCaps,
        must_trap: &[ByteRange],
    ) -> Result<Self> {
        // Validate all input before deciding anything.
        let mut traps = Vec::with_capacity(must_trap.len());
        for t in must_trap {
            let end = t.end_within(bar_size)?;
            if t.len != 0 {
                // Trap whole pages: KVM cannot trap less.
                let start = page.align_down(t.offset);
                let end = page.align_up(end).unwrap_or(u64::MAX);
                traps.push((start, end));
            }
        }
        let mut candidates = Vec::new();
        match caps {
            RegionMmapCaps::WholeRegion | RegionMmapCaps::MsixMappable => {
                candidates.push((0, bar_size));
            }
            RegionMmapCaps::SparseAreas(areas) => {
                for a in areas {
                    let end = a.end_within(bar_size)?;
                    candidates.push((a.offset, end));
                }
            }
        }

        let mut mapped = Vec::new();
        if host_mappable {
            for (s, e) in merge(candidates) {
                // Mappings start on a page boundary and end on one, except at the end of a BAR
                // whose last page the host has reserved in full.
                let Some(start) = page.align_up(s) else {
                    continue;
                };
                let end = if e == bar_size { e } else { page.align_down(e) };
                if start < end {
                    mapped.extend(subtract((start, end), &traps));
                }
            }
        }

        let mut areas = Vec::new();
        let mut cursor = 0;
        for (s, e) in mapped {
            if s > cursor {
                areas.push(trapped(cursor, s));
            }
            let mmap_len = page.align_up(e).unwrap_or(e) - s;
            areas.push(Area {
                offset: s,
                len: e - s,
                kind: AreaKind::Mapped,
                mmap_len,
            });
            cursor = e;
        }
        if cursor < bar_size {
            areas.push(trapped(cursor, bar_size));
        }
        Ok(SparseLayout { bar_size, areas })
    }

    /// Size of the BAR.
    pub fn bar_size(&self) -> u64 {
        self.bar_size
    }

    /// All areas, in offset order.
    pub fn areas(&self) -> &[Area] {
        &self.areas
    }

    /// The mapped areas, in offset order.
    pub fn mapped(&self) -> impl Iterator<Item = &Area> + '_ {
        self.areas.iter().filter(|a| a.kind == AreaKind::Mapped)
    }

    /// The trapped areas, in offset order.
    pub fn trapped(&self) -> impl Iterator<Item = &Area> + '_ {
        self.areas.iter().filter(|a| a.kind == AreaKind::Trapped)
    }

    /// The kind of the area holding byte `offset`, or `None` past the end of the BAR.
    pub fn kind_at(&self, offset: u64) -> Option<AreaKind> {
        let i = self.areas.partition_point(|a| a.offset + a.len <= offset);
        self.areas.get(i).map(|a| a.kind)
    }
}

fn trapped(start: u64, end: u64) -> Area {
    Area {
        offset: start,
        len: end - start,
        kind: AreaKind::Trapped,
        mmap_len: 0,
    }
}

/// Sorts half-open ranges and merges those that overlap or touch; drops empty ones.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|(s, e)| s < e);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// `range` minus every range in `holes`, in order.
fn subtract(range: (u64, u64), holes: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut pieces = vec![range];
    for &(hs, he) in holes {
        let mut next = Vec::with_capacity(pieces.len() + 1);
        for (s, e) in pieces {
            if he <= s || hs >= e {
                next.push((s, e));
                continue;
            }
            if s < hs {
                next.push((s, hs));
            }
            if he < e {
                next.push((he, e));
            }
        }
        pieces = next;
    }
    pieces.sort_unstable();
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const P4: PageSize = PageSize::SIZE_4K;

    #[test]
    fn msix_table_page_is_trapped_in_a_large_bar() {
        let msix = MsixLocation::from_capability(0, 0x2000, 0, 0x3000, 64);
        let l = SparseLayout::compute(
            0x4000,
            P4,
            true,
            &RegionMmapCaps::MsixMappable,
            &msix.trapped_in(0),
        )
        .unwrap();
        let kinds: Vec<_> = l
            .areas()
            .iter()
            .map(|a| (a.offset, a.len, a.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (0, 0x2000, AreaKind::Mapped),
                (0x2000, 0x2000, AreaKind::Trapped)
            ]
        );
    }

    #[test]
    fn table_and_pba_share_a_64k_page_with_registers() {
        // A 16 KiB-page-sized layout on a 64 KiB-page host: the whole BAR is one page.
        let msix = MsixLocation::from_capability(2, 0x1000, 2, 0x1800, 8);
        let l = SparseLayout::compute(
            0x1_0000,
            PageSize::SIZE_64K,
            true,
            &RegionMmapCaps::MsixMappable,
            &msix.trapped_in(2),
        )
        .unwrap();
        assert_eq!(l.mapped().count(), 0);
        assert_eq!(l.trapped().map(|a| a.len).sum::<u64>(), 0x1_0000);
    }

    #[test]
    fn sub_page_bar_maps_whole_page() {
        let l = SparseLayout::compute(0x100, P4, true, &RegionMmapCaps::WholeRegion, &[]).unwrap();
        assert_eq!(l.areas().len(), 1);
        let a = l.areas().first().copied().unwrap();
        assert_eq!(
            (a.len, a.mmap_len, a.kind),
            (0x100, 0x1000, AreaKind::Mapped)
        );
    }

    #[test]
    fn sparse_areas_are_shrunk_to_pages() {
        let caps = RegionMmapCaps::SparseAreas(vec![ByteRange::new(0x800, 0x2000)]);
        let l = SparseLayout::compute(0x4000, P4, true, &caps, &[]).unwrap();
        let mapped: Vec<_> = l.mapped().map(|a| (a.offset, a.len)).collect();
        assert_eq!(mapped, vec![(0x1000, 0x1000)]);
        assert_eq!(l.kind_at(0x7ff), Some(AreaKind::Trapped));
        assert_eq!(l.kind_at(0x1000), Some(AreaKind::Mapped));
        assert_eq!(l.kind_at(0x4000), None);
    }

    #[test]
    fn out_of_bar_ranges_are_errors() {
        let bad = [ByteRange::new(0xf00, 0x200)];
        assert!(matches!(
            SparseLayout::compute(0x1000, P4, true, &RegionMmapCaps::WholeRegion, &bad),
            Err(Error::RangeOutsideBar { .. })
        ));
    }

    #[test]
    fn host_refusal_traps_everything() {
        let l =
            SparseLayout::compute(0x2000, P4, false, &RegionMmapCaps::WholeRegion, &[]).unwrap();
        assert_eq!(l.mapped().count(), 0);
        assert_eq!(l.trapped().map(|a| a.len).sum::<u64>(), 0x2000);
    }
}
