// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The scenario from the Linux review of sub-page BAR mmap: a 0x100-byte BAR at a page-aligned
//! host address is mappable because the rest of its page is reserved; a hot-added device whose
//! BAR tries to land in that rest is refused; once the plan is disabled the range is free.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bar_mmap::{
    BarInfo, Error, HostDecision, HostMmapPlan, HostResourceSpace, NotMappable, PageSize,
};

const BASE: u64 = 0xfe00_0000;

fn scenario(page: PageSize) {
    let p = page.get();
    let space = HostResourceSpace::new(BASE, 16 * p).unwrap().into_shared();
    let bar_addr = BASE + 4 * p;
    // The device's own BAR is a resource in the host tree, as the PCI core would have it.
    let own = space
        .lock()
        .unwrap()
        .reserve_exact(bar_addr, 0x100)
        .unwrap();

    let plan =
        HostMmapPlan::probe_and_reserve(&[BarInfo::memory(0, bar_addr, 0x100)], page, &space)
            .unwrap();
    let Some(HostDecision::Mappable {
        mmap_len,
        dummy: Some(dummy),
    }) = plan.decision(0)
    else {
        panic!("sub-page BAR at a page-aligned address must be mappable with a dummy");
    };
    assert_eq!(mmap_len, p);
    assert_eq!(
        (dummy.start(), dummy.end()),
        (bar_addr + 0x100, bar_addr + p - 1)
    );
    assert_eq!(plan.reservations().len(), 1);
    assert_eq!(plan.mappable_range(0), Some(bar_addr..bar_addr + p));

    // Queries do not reserve anything more, however often they are asked.
    for _ in 0..3 {
        assert!(plan.is_mappable(0));
    }
    assert_eq!(space.lock().unwrap().taken().count(), 2);

    // The hot-added device's 0x100-byte BAR tries every 0x100-aligned slot of the rest of the
    // page: each one is refused.
    let mut refused = 0;
    for slot in (bar_addr + 0x100..bar_addr + p).step_by(0x100) {
        let r = space.lock().unwrap().reserve_exact(slot, 0x100);
        assert!(matches!(r, Err(Error::RangeBusy { .. })), "slot {slot:#x}");
        refused += 1;
    }
    assert_eq!(refused, (p - 0x100) / 0x100);
    // A first-fit allocation skips the reserved page as well.
    let hot = space.lock().unwrap().allocate(0x100, 0x100).unwrap();
    assert!(hot.end() < bar_addr || hot.start() >= bar_addr + p);
    space.lock().unwrap().release(&hot).unwrap();

    plan.disable().unwrap();
    assert!(space.lock().unwrap().is_free(bar_addr + 0x100, p - 0x100));
    let hot = space
        .lock()
        .unwrap()
        .reserve_exact(bar_addr + 0x100, 0x100)
        .unwrap();
    assert_eq!(hot.start(), bar_addr + 0x100);

    // Now the page is shared: probing again finds the rest of the page taken.
    let plan =
        HostMmapPlan::probe_and_reserve(&[BarInfo::memory(0, bar_addr, 0x100)], page, &space)
            .unwrap();
    assert_eq!(
        plan.decision(0),
        Some(HostDecision::NotMappable(NotMappable::RestOfPageTaken))
    );
    assert!(plan.reservations().is_empty());
    drop(plan);
    let mut s = space.lock().unwrap();
    s.release(&hot).unwrap();
    s.release(&own).unwrap();
    assert_eq!(s.taken().count(), 0);
}

#[test]
fn seed_004_scenario_4k() {
    scenario(PageSize::SIZE_4K);
}

#[test]
fn seed_004_scenario_64k() {
    scenario(PageSize::SIZE_64K);
}

#[test]
fn dropping_the_plan_releases_like_disable() {
    for page in [PageSize::SIZE_4K, PageSize::SIZE_64K] {
        let p = page.get();
        let space = HostResourceSpace::new(0, 8 * p).unwrap().into_shared();
        {
            let plan = HostMmapPlan::probe_and_reserve(
                &[
                    BarInfo::memory(0, p, 0x800),
                    BarInfo::memory(2, 3 * p, 0x80),
                ],
                page,
                &space,
            )
            .unwrap();
            assert_eq!(plan.reservations().len(), 2);
            assert_eq!(space.lock().unwrap().taken().count(), 2);
        }
        assert_eq!(space.lock().unwrap().taken().count(), 0);
    }
}

#[test]
fn unaligned_io_empty_and_shared_bars_are_not_mappable() {
    let page = PageSize::SIZE_4K;
    let space = HostResourceSpace::new(0, 0x10_0000).unwrap().into_shared();
    let bars = [
        BarInfo::memory(0, 0x1100, 0x100), // sub-page, not page-aligned
        BarInfo::io(1, 0x2000, 0x1000),
        BarInfo::memory(2, 0x3000, 0),
        BarInfo::memory(3, 0x4000, 0x100), // shares its page with BAR 4
        BarInfo::memory(4, 0x4800, 0x100),
        BarInfo::memory(5, 0x8000, 0x4000), // whole pages
    ];
    let plan = HostMmapPlan::probe_and_reserve(&bars, page, &space).unwrap();
    let d = |i| plan.decision(i).unwrap();
    assert_eq!(d(0), HostDecision::NotMappable(NotMappable::UnalignedStart));
    assert_eq!(d(1), HostDecision::NotMappable(NotMappable::Io));
    assert_eq!(d(2), HostDecision::NotMappable(NotMappable::Empty));
    assert_eq!(
        d(3),
        HostDecision::NotMappable(NotMappable::PageSharedWithOwnBar)
    );
    assert_eq!(d(4), HostDecision::NotMappable(NotMappable::UnalignedStart));
    assert_eq!(
        d(5),
        HostDecision::Mappable {
            mmap_len: 0x4000,
            dummy: None
        }
    );
    assert!(plan.reservations().is_empty());
    assert_eq!(plan.decision(6), None);
}

#[test]
fn bad_input_reserves_nothing() {
    let space = HostResourceSpace::new(0, 0x10_0000).unwrap().into_shared();
    let dup = [
        BarInfo::memory(0, 0x1000, 0x100),
        BarInfo::memory(0, 0x3000, 0x100),
    ];
    assert!(matches!(
        HostMmapPlan::probe_and_reserve(&dup, PageSize::SIZE_4K, &space),
        Err(Error::DuplicateBar(0))
    ));
    let wrap = [
        BarInfo::memory(0, 0x1000, 0x100),
        BarInfo::memory(1, u64::MAX - 0xff, 0x100),
    ];
    assert!(matches!(
        HostMmapPlan::probe_and_reserve(&wrap, PageSize::SIZE_4K, &space),
        Err(Error::BarOverflow { index: 1, .. })
    ));
    assert_eq!(space.lock().unwrap().taken().count(), 0);
}

#[test]
fn plan_layout_traps_msix_pages_and_refused_bars() {
    use bar_mmap::{AreaKind, MsixLocation, RegionMmapCaps};
    for page in [PageSize::SIZE_4K, PageSize::SIZE_64K] {
        let p = page.get();
        let space = HostResourceSpace::new(0, 64 * p).unwrap().into_shared();
        let bars = [
            BarInfo::memory(0, 8 * p, 8 * p),
            BarInfo::memory(1, 20 * p + 0x80, 0x80),
        ];
        let plan = HostMmapPlan::probe_and_reserve(&bars, page, &space).unwrap();
        // 32 vectors: table at the start of page 2, PBA at the start of page 5.
        let msix = MsixLocation::from_capability(0, 2 * p, 0, 5 * p, 32);
        let l = plan
            .sparse_layout(0, &RegionMmapCaps::MsixMappable, Some(&msix))
            .unwrap();
        let areas: Vec<_> = l
            .areas()
            .iter()
            .map(|a| (a.offset / p, a.len / p, a.kind))
            .collect();
        assert_eq!(
            areas,
            vec![
                (0, 2, AreaKind::Mapped),
                (2, 1, AreaKind::Trapped),
                (3, 2, AreaKind::Mapped),
                (5, 1, AreaKind::Trapped),
                (6, 2, AreaKind::Mapped),
            ]
        );
        let l = plan
            .sparse_layout(1, &RegionMmapCaps::WholeRegion, None)
            .unwrap();
        assert_eq!(l.mapped().count(), 0);
        assert!(matches!(
            plan.sparse_layout(4, &RegionMmapCaps::WholeRegion, None),
            Err(Error::UnknownBar(4))
        ));
    }
}
