// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest-side decision: which BARs may be mapped where the guest has placed them.
//!
//! The host reservation only protects the host page. The guest places BARs itself, and may
//! put another BAR (of this device, of another passed-through device, or of an emulated one)
//! in the same guest page as a sub-page BAR. Mapping the sub-page BAR's host page there would
//! hide the other BAR behind it, so such a BAR is trapped until the conflict goes away.
//!
//! [`GuestPageMap`] tracks every memory BAR the guest has placed, re-decides the regions a
//! placement, move or removal can affect, and returns the [`MapChange`]s that take the VMM's
//! guest mappings from the old state to the new one: all unmaps first, then all maps, so that
//! two mappings never overlap in between.
//!
//! A region is mapped when:
//! - the host plan says its BAR is mappable,
//! - its guest address is page-aligned (a mapping starts on a page boundary and the BAR's
//!   first byte is the mapping's first byte), and
//! - no other region overlaps the pages it covers, its size rounded up to a page (the mapping
//!   is expanded to whole pages, so for a sub-page BAR the rest of its page must be free).
//!
//! Register every guest MMIO BAR here, emulated devices' included (with `host_mappable`
//! false); a BAR this map does not know about cannot be protected.
//!
//! A region's decision depends only on its own placement and on the regions that overlap its
//! pages, so a change re-decides the changed region and the regions whose pages its old or new
//! placement overlaps: one pass over the regions, then one per region re-decided (a VM's
//! restore places every BAR in turn, and most placements touch no other region). That is
//! cheaper for the few hundred BARs a VM has than maintaining an interval index.

use std::collections::BTreeMap;

use crate::{Error, PageSize, Result};

/// One BAR of one device, as the VMM names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionId {
    /// VMM-chosen device identifier (for example its PCI BDF).
    pub device: u32,
    /// BAR index.
    pub bar: u8,
}

/// Where the guest has placed a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestBar {
    /// Guest physical address of the BAR.
    pub gpa: u64,
    /// BAR size in bytes.
    pub size: u64,
    /// Whether the host lets this BAR be mmapped
    /// ([`HostMmapPlan::is_mappable`](crate::HostMmapPlan::is_mappable)).
    pub host_mappable: bool,
}

/// A guest mapping of a region: its host mmap, placed at `gpa` for `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestMapping {
    /// The region mapped.
    pub region: RegionId,
    /// Guest physical address of the mapping (the BAR's address).
    pub gpa: u64,
    /// Length of the mapping: the BAR size rounded up to a page.
    pub len: u64,
}

/// A change the VMM must apply to its guest mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapChange {
    /// Remove this mapping; the region's accesses trap from now on.
    Unmap(GuestMapping),
    /// Install this mapping.
    Map(GuestMapping),
}

/// Why a placed region is trapped in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestTrap {
    /// The host plan does not allow mmapping the BAR (or it is empty).
    HostRefused,
    /// The guest placed the BAR off a page boundary.
    UnalignedGuestAddress,
    /// Another region overlaps the pages the mapping would cover.
    PageShared,
}

/// The guest BAR placements of all devices and which of them are mapped.
#[derive(Debug, Clone)]
pub struct GuestPageMap {
    page: PageSize,
    regions: BTreeMap<RegionId, GuestBar>,
    mapped: BTreeMap<RegionId, GuestMapping>,
}

impl GuestPageMap {
    /// An empty map for guests with pages of `page` bytes (the host page size: that is the
    /// granularity of the mappings).
    pub fn new(page: PageSize) -> Self {
        GuestPageMap {
            page,
            regions: BTreeMap::new(),
            mapped: BTreeMap::new(),
        }
    }

    /// Places `region` at `bar.gpa`, or moves it there, and returns the mapping changes this
    /// causes for every region. A placement that wraps the address space is refused and
    /// changes nothing.
    pub fn place(&mut self, region: RegionId, bar: GuestBar) -> Result<Vec<MapChange>> {
        let wraps = bar
            .gpa
            .checked_add(bar.size)
            .and_then(|end| self.page.align_up(end))
            .is_none();
        if wraps {
            return Err(Error::GuestOverflow {
                gpa: bar.gpa,
                size: bar.size,
            });
        }
        let old = self.regions.insert(region, bar);
        if old == Some(bar) {
            // Placed where it was: no decision can change.
            return Ok(Vec::new());
        }
        Ok(self.recompute_around(region, old, Some(bar)))
    }

    /// Forgets `region` (its device was unplugged or stopped decoding memory) and returns the
    /// mapping changes this causes.
    pub fn remove(&mut self, region: RegionId) -> Vec<MapChange> {
        match self.regions.remove(&region) {
            Some(old) => self.recompute_around(region, Some(old), None),
            None => Vec::new(),
        }
    }

    /// Forgets every region of `device` and returns the mapping changes this causes.
    pub fn remove_device(&mut self, device: u32) -> Vec<MapChange> {
        let before = self.regions.len();
        self.regions.retain(|id, _| id.device != device);
        if self.regions.len() == before {
            return Vec::new();
        }
        self.recompute()
    }

    /// The current mapping of `region`, if it is mapped.
    pub fn mapping(&self, region: RegionId) -> Option<GuestMapping> {
        self.mapped.get(&region).copied()
    }

    /// Whether `region` is currently mapped.
    pub fn is_mapped(&self, region: RegionId) -> bool {
        self.mapped.contains_key(&region)
    }

    /// Why `region` is trapped, or `None` if it is mapped or unknown.
    pub fn trap_reason(&self, region: RegionId) -> Option<GuestTrap> {
        let bar = self.regions.get(&region)?;
        self.decide(region, bar).err()
    }

    /// Every current mapping, by region.
    pub fn mappings(&self) -> impl Iterator<Item = &GuestMapping> + '_ {
        self.mapped.values()
    }

    /// The placement of `region`, if placed.
    pub fn placement(&self, region: RegionId) -> Option<GuestBar> {
        self.regions.get(&region).copied()
    }

    fn decide(
        &self,
        region: RegionId,
        bar: &GuestBar,
    ) -> std::result::Result<GuestMapping, GuestTrap> {
        decide(self.page, &self.regions, region, bar)
    }

    /// Re-decides `changed` and every region whose pages the changed region's placement
    /// `before` or `after` the change overlaps: no other region's decision can have changed.
    fn recompute_around(
        &mut self,
        changed: RegionId,
        before: Option<GuestBar>,
        after: Option<GuestBar>,
    ) -> Vec<MapChange> {
        let page = self.page;
        let touched = |id: &RegionId, bar: &GuestBar| {
            // `place` refused wrapping placements; a region whose end still does not compute
            // is re-decided rather than assumed unchanged.
            *id == changed
                || bar
                    .gpa
                    .checked_add(bar.size)
                    .and_then(|e| page.align_up(e))
                    .is_none_or(|end| {
                        [before, after]
                            .iter()
                            .flatten()
                            .any(|s| covers(s, bar.gpa, end))
                    })
        };
        let mut unmaps = Vec::new();
        let mut maps = Vec::new();
        // A removed region is not among the placed ones any more: its mapping goes.
        if after.is_none() {
            unmaps.extend(self.mapped.remove(&changed).map(MapChange::Unmap));
        }
        for (id, bar) in &self.regions {
            if !touched(id, bar) {
                continue;
            }
            let next = decide(page, &self.regions, *id, bar).ok();
            let prev = self.mapped.get(id).copied();
            if next == prev {
                continue;
            }
            unmaps.extend(prev.map(MapChange::Unmap));
            maps.extend(next.map(MapChange::Map));
            match next {
                Some(m) => self.mapped.insert(*id, m),
                None => self.mapped.remove(id),
            };
        }
        unmaps.extend(maps);
        unmaps
    }

    fn recompute(&mut self) -> Vec<MapChange> {
        let next: BTreeMap<RegionId, GuestMapping> = self
            .regions
            .iter()
            .filter_map(|(id, bar)| self.decide(*id, bar).ok().map(|m| (*id, m)))
            .collect();
        let mut changes: Vec<MapChange> = self
            .mapped
            .iter()
            .filter(|(id, m)| next.get(id) != Some(m))
            .map(|(_, m)| MapChange::Unmap(*m))
            .collect();
        changes.extend(
            next.iter()
                .filter(|(id, m)| self.mapped.get(id) != Some(m))
                .map(|(_, m)| MapChange::Map(*m)),
        );
        self.mapped = next;
        changes
    }
}

/// Whether `region`, placed as `bar` among `regions` (pages of `page` bytes), is mapped, or why
/// it is trapped.
fn decide(
    page: PageSize,
    regions: &BTreeMap<RegionId, GuestBar>,
    region: RegionId,
    bar: &GuestBar,
) -> std::result::Result<GuestMapping, GuestTrap> {
    if !bar.host_mappable || bar.size == 0 {
        return Err(GuestTrap::HostRefused);
    }
    if !page.is_aligned(bar.gpa) {
        return Err(GuestTrap::UnalignedGuestAddress);
    }
    // `place` refused wrapping placements.
    let end = bar
        .gpa
        .checked_add(bar.size)
        .and_then(|e| page.align_up(e))
        .ok_or(GuestTrap::HostRefused)?;
    let shared = regions
        .iter()
        .any(|(other_id, other)| *other_id != region && covers(other, bar.gpa, end));
    if shared {
        return Err(GuestTrap::PageShared);
    }
    Ok(GuestMapping {
        region,
        gpa: bar.gpa,
        len: end - bar.gpa,
    })
}

/// Whether `other`, a placed region, overlaps the guest range `[start, end)`.
fn covers(other: &GuestBar, start: u64, end: u64) -> bool {
    other.size != 0 && other.gpa < end && other.gpa.saturating_add(other.size) > start
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: RegionId = RegionId { device: 1, bar: 0 };
    const B: RegionId = RegionId { device: 2, bar: 0 };

    fn bar(gpa: u64, size: u64) -> GuestBar {
        GuestBar {
            gpa,
            size,
            host_mappable: true,
        }
    }

    #[test]
    fn sub_page_bar_traps_while_its_page_is_shared() {
        let mut map = GuestPageMap::new(PageSize::SIZE_4K);
        let c = map.place(A, bar(0x1000, 0x100)).unwrap();
        assert_eq!(
            c,
            vec![MapChange::Map(GuestMapping {
                region: A,
                gpa: 0x1000,
                len: 0x1000
            })]
        );
        // Another device's BAR lands in the rest of A's page.
        let c = map.place(B, bar(0x1800, 0x100)).unwrap();
        assert_eq!(c.len(), 1);
        assert!(matches!(c.first(), Some(MapChange::Unmap(m)) if m.region == A));
        assert_eq!(map.trap_reason(A), Some(GuestTrap::PageShared));
        assert_eq!(map.trap_reason(B), Some(GuestTrap::UnalignedGuestAddress));
        // B moves away: A is mapped again, B too now that it is page-aligned and alone.
        let c = map.place(B, bar(0x3000, 0x100)).unwrap();
        assert_eq!(c.len(), 2);
        assert!(map.is_mapped(A) && map.is_mapped(B));
        // Unplugging B changes nothing for A.
        let c = map.remove_device(2);
        assert_eq!(c.len(), 1);
        assert!(map.is_mapped(A));
    }

    #[test]
    fn move_emits_unmap_before_map() {
        let mut map = GuestPageMap::new(PageSize::SIZE_64K);
        map.place(A, bar(0x10_0000, 0x2_0000)).unwrap();
        let c = map.place(A, bar(0x20_0000, 0x2_0000)).unwrap();
        assert!(
            matches!(c.as_slice(), [MapChange::Unmap(old), MapChange::Map(new)]
            if old.gpa == 0x10_0000 && new.gpa == 0x20_0000 && new.len == 0x2_0000)
        );
    }

    #[test]
    fn wrapping_placement_is_refused_and_changes_nothing() {
        let mut map = GuestPageMap::new(PageSize::SIZE_4K);
        map.place(A, bar(0x1000, 0x1000)).unwrap();
        assert!(matches!(
            map.place(A, bar(u64::MAX - 0xff, 0x100)),
            Err(Error::GuestOverflow { .. })
        ));
        assert_eq!(map.placement(A).map(|b| b.gpa), Some(0x1000));
        assert!(map.is_mapped(A));
    }

    #[test]
    fn host_refusal_is_respected() {
        let mut map = GuestPageMap::new(PageSize::SIZE_4K);
        let c = map
            .place(
                A,
                GuestBar {
                    gpa: 0x4000,
                    size: 0x4000,
                    host_mappable: false,
                },
            )
            .unwrap();
        assert!(c.is_empty());
        assert_eq!(map.trap_reason(A), Some(GuestTrap::HostRefused));
    }
}
