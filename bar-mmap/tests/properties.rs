// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests for the invariants, each run with 4 KiB and 64 KiB pages:
//! - no host plan maps a page shared with a foreign resource;
//! - every byte of every BAR is mapped or trapped, exactly once;
//! - MSI-X table and PBA bytes are always trapped;
//! - guest moves switch mappability correctly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use bar_mmap::{
    AreaKind, BarInfo, BarKind, ByteRange, GuestBar, GuestMapping, GuestPageMap, HostMmapPlan,
    HostResourceSpace, MapChange, MsixLocation, PageSize, RegionId, RegionMmapCaps, SparseLayout,
};
use proptest::prelude::*;

fn page_size() -> impl Strategy<Value = PageSize> {
    prop_oneof![Just(PageSize::SIZE_4K), Just(PageSize::SIZE_64K)]
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// A resource described in page units so that it scales with the page size:
/// (page index, offset in 1/16ths of a page, size as a power-of-two fraction or multiple of a page).
type Placement = (u64, u64, i32);

fn place(page: PageSize, (idx, sixteenth, log): Placement) -> (u64, u64) {
    let p = page.get();
    let addr = idx * p + sixteenth * (p / 16);
    let size = if log >= 0 { p << log } else { p >> (-log) };
    (addr, size)
}

const SPACE_PAGES: u64 = 64;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 192,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn host_plan_never_maps_a_page_shared_with_a_foreign_resource(
        page in page_size(),
        foreign in prop::collection::vec((0..SPACE_PAGES, 0..16u64, -8..2i32), 0..10),
        device in prop::collection::vec(
            ((0..SPACE_PAGES, prop_oneof![Just(0u64), 0..16u64], -8..3i32), any::<bool>(), any::<bool>()),
            1..7,
        ),
    ) {
        let p = page.get();
        let space = HostResourceSpace::new(0, SPACE_PAGES * p).unwrap().into_shared();
        let mut foreign_ranges = Vec::new();
        for f in foreign {
            let (addr, size) = place(page, f);
            if space.lock().unwrap().reserve_exact(addr, size).is_ok() {
                foreign_ranges.push((addr, addr + size));
            }
        }
        let mut bars: Vec<BarInfo> = Vec::new();
        for (i, (pl, is_io, registered)) in device.into_iter().enumerate() {
            let (addr, size) = place(page, pl);
            let index = u8::try_from(i).unwrap();
            if is_io {
                bars.push(BarInfo::io(index, addr, size));
                continue;
            }
            // The host PCI core never assigns a BAR over another resource or another BAR.
            let clash = foreign_ranges.iter().any(|&f| overlaps(f, (addr, addr + size)))
                || bars.iter().any(|b| b.kind == BarKind::Memory
                    && overlaps((b.host_addr, b.host_addr + b.size), (addr, addr + size)));
            if clash || addr + size > SPACE_PAGES * p {
                continue;
            }
            // Most BARs are in the resource tree, as the PCI core would have them; some are not,
            // to exercise the plan's own check of the device's other BARs.
            if registered {
                let _ = space.lock().unwrap().reserve_exact(addr, size);
            }
            bars.push(BarInfo::memory(index, addr, size));
        }
        let before: Vec<_> = space.lock().unwrap().taken().collect();

        let plan = HostMmapPlan::probe_and_reserve(&bars, page, &space).unwrap();

        let reserved: Vec<_> = plan.reservations().to_vec();
        for bar in &bars {
            let mappable = plan.is_mappable(bar.index);
            if bar.kind == BarKind::Io || bar.size == 0 {
                prop_assert!(!mappable);
                continue;
            }
            let end = bar.host_addr + bar.size;
            let page_end = page.align_up(end).unwrap();
            let aligned = page.is_aligned(bar.host_addr);
            let own_in_tail = bars.iter().any(|o| {
                o.index != bar.index && o.kind == BarKind::Memory && o.size != 0
                    && overlaps((o.host_addr, o.host_addr + o.size), (end, page_end))
            });
            let tail_foreign = before.iter().any(|&(s, e)| overlaps((s, e + 1), (end, page_end)));
            if !mappable {
                // Never refused without a reason the kernel rule gives.
                prop_assert!(!aligned || own_in_tail || tail_foreign || page_end > SPACE_PAGES * p
                    || reserved.iter().any(|r| overlaps((r.start(), r.end() + 1), (end, page_end))));
                continue;
            }
            prop_assert!(aligned);
            let range = plan.mappable_range(bar.index).unwrap();
            prop_assert_eq!(range.clone(), bar.host_addr..page_end);
            prop_assert_eq!(plan.mmap_len(bar.index), Some(page_end - bar.host_addr));
            // The mapped pages hold no foreign resource and no other BAR of the device.
            for &f in &foreign_ranges {
                prop_assert!(!overlaps(f, (range.start, range.end)), "foreign {:x?} in {:x?}", f, range);
            }
            for o in &bars {
                if o.index != bar.index && o.kind == BarKind::Memory && o.size != 0 {
                    prop_assert!(!overlaps((o.host_addr, o.host_addr + o.size), (range.start, range.end)));
                }
            }
            // The tail of the last page is exactly one of our reservations.
            if end != page_end {
                prop_assert!(reserved.iter().any(|r| r.start() == end && r.end() == page_end - 1));
            }
        }
        prop_assert_eq!(reserved.len(), bars.iter().filter(|b| {
            b.kind == BarKind::Memory && b.size % p != 0 && plan.is_mappable(b.index)
        }).count());

        drop(plan);
        let after: Vec<_> = space.lock().unwrap().taken().collect();
        prop_assert_eq!(before, after);
    }

    #[test]
    fn every_bar_byte_is_mapped_or_trapped_once_and_msix_is_trapped(
        page in page_size(),
        log_size in 4..21u32,
        host_mappable in any::<bool>(),
        caps_kind in 0..3u8,
        sparse in prop::collection::vec((0..1024u64, 0..1024u64), 0..4),
        msix in prop::option::of((0..1024u64, 1..2049u16, 0..1024u64)),
    ) {
        let bar_size = 1u64 << log_size;
        let frac = |x: u64| (bar_size * x / 1024) & !7;
        let caps = match caps_kind {
            0 => RegionMmapCaps::WholeRegion,
            1 => RegionMmapCaps::MsixMappable,
            _ => RegionMmapCaps::SparseAreas(sparse.iter().map(|&(a, b)| {
                let (s, e) = (frac(a.min(b)), frac(a.max(b)));
                ByteRange::new(s, e - s)
            }).collect()),
        };
        let must_trap = match msix {
            Some((t, vectors, pba)) => {
                let table_len = u64::from(vectors) * 16;
                let pba_len = u64::from(vectors).div_ceil(64) * 8;
                let t_off = frac(t).min(bar_size.saturating_sub(table_len));
                let p_off = frac(pba).min(bar_size.saturating_sub(pba_len));
                if table_len > bar_size || pba_len > bar_size {
                    Vec::new()
                } else {
                    MsixLocation::from_capability(3, t_off, 3, p_off, vectors).trapped_in(3)
                }
            }
            None => Vec::new(),
        };

        let layout = SparseLayout::compute(bar_size, page, host_mappable, &caps, &must_trap).unwrap();

        // Exactly-once coverage: areas are non-empty, in order, back to back, from 0 to the end.
        let mut cursor = 0;
        for a in layout.areas() {
            prop_assert_eq!(a.offset, cursor);
            prop_assert!(a.len > 0);
            cursor += a.len;
        }
        prop_assert_eq!(cursor, bar_size);
        let mapped: u64 = layout.mapped().map(|a| a.len).sum();
        let trapped: u64 = layout.trapped().map(|a| a.len).sum();
        prop_assert_eq!(mapped + trapped, bar_size);

        for a in layout.mapped() {
            prop_assert!(host_mappable);
            prop_assert!(page.is_aligned(a.offset));
            prop_assert!(page.is_aligned(a.offset + a.mmap_len));
            // The mmap only runs past the area at the end of a BAR that ends inside a page.
            if a.mmap_len != a.len {
                prop_assert_eq!(a.offset + a.len, bar_size);
                prop_assert!(a.mmap_len - a.len < page.get());
            }
            // Every page the mmap covers is free of MSI-X bytes.
            for t in &must_trap {
                prop_assert!(!overlaps((t.offset, t.offset + t.len), (a.offset, a.offset + a.mmap_len)));
            }
            if let RegionMmapCaps::SparseAreas(areas) = &caps {
                // Every mapped byte lies in some sparse area (areas may touch or overlap, so
                // check coverage rather than containment in a single one).
                let mut at = a.offset;
                while at < a.offset + a.len {
                    let next = areas.iter()
                        .filter(|s| s.offset <= at && at < s.offset + s.len)
                        .map(|s| s.offset + s.len)
                        .max();
                    prop_assert!(next.is_some(), "byte {:#x} mapped outside the sparse areas", at);
                    at = next.unwrap();
                }
            }
        }
        // And byte by byte at the edges of each MSI-X structure.
        for t in must_trap.iter().filter(|t| t.len > 0) {
            prop_assert_eq!(layout.kind_at(t.offset), Some(AreaKind::Trapped));
            prop_assert_eq!(layout.kind_at(t.offset + t.len - 1), Some(AreaKind::Trapped));
        }
    }

    #[test]
    fn guest_moves_switch_mappability_correctly(
        page in page_size(),
        ops in prop::collection::vec(
            (0..3u32, 0..2u8, prop::option::of((0..8u64, prop_oneof![Just(0u64), 0..16u64], -6..2i32, any::<bool>()))),
            1..40,
        ),
    ) {
        let mut map = GuestPageMap::new(page);
        let mut placed: BTreeMap<RegionId, GuestBar> = BTreeMap::new();
        let mut model: BTreeMap<RegionId, GuestMapping> = BTreeMap::new();
        for (device, bar, op) in ops {
            let id = RegionId { device, bar };
            let changes = match op {
                Some((idx, sixteenth, log, host_mappable)) => {
                    let (gpa, size) = place(page, (idx, sixteenth, log));
                    let g = GuestBar { gpa, size, host_mappable };
                    placed.insert(id, g);
                    map.place(id, g).unwrap()
                }
                None => {
                    placed.remove(&id);
                    map.remove(id)
                }
            };
            // Apply the notifications to a model of the VMM's mappings: unmaps first, each
            // removing a live mapping; maps after, each onto a region not mapped.
            let mut seen_map = false;
            for c in changes {
                match c {
                    MapChange::Unmap(m) => {
                        prop_assert!(!seen_map, "unmap after map");
                        prop_assert_eq!(model.remove(&m.region), Some(m));
                    }
                    MapChange::Map(m) => {
                        seen_map = true;
                        prop_assert!(model.insert(m.region, m).is_none());
                    }
                }
            }
            let current: BTreeMap<_, _> = map.mappings().map(|m| (m.region, *m)).collect();
            prop_assert_eq!(&model, &current);

            // Oracle, written from the rule rather than from the implementation.
            for (rid, g) in &placed {
                let end = page.align_up(g.gpa + g.size).unwrap();
                let alone = placed.iter().all(|(o, og)| {
                    o == rid || !overlaps((og.gpa, og.gpa + og.size), (g.gpa, end))
                });
                let expect = g.host_mappable && page.is_aligned(g.gpa) && alone;
                prop_assert_eq!(map.is_mapped(*rid), expect, "region {:?}", rid);
                if expect {
                    prop_assert_eq!(map.mapping(*rid), Some(GuestMapping { region: *rid, gpa: g.gpa, len: end - g.gpa }));
                }
            }
            prop_assert!(model.keys().all(|k| placed.contains_key(k)));
            // No two live mappings overlap.
            let live: Vec<_> = model.values().collect();
            for (i, a) in live.iter().enumerate() {
                for b in live.iter().skip(i + 1) {
                    prop_assert!(!overlaps((a.gpa, a.gpa + a.len), (b.gpa, b.gpa + b.len)));
                }
            }
        }
    }
}
