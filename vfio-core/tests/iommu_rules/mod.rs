// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Type1 container scenarios, written once and run against the simulated container on the host
//! (`tests/iommu.rs`) and the kernel's container in the lab (`tests/lab_iommu.rs`), with the
//! same assertions. The expected errnos are Linux v6.12.117's
//! (drivers/vfio/vfio_iommu_type1.c, `vfio_dma_do_map()`, `vfio_dma_do_unmap()`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::any::Any;

use vfio_core::{DirtyOp, DirtyRequest, Error, Type1, VfioContainer};
use vm_memory::{GuestAddress, GuestMemoryRegion, GuestRegionMmap, MmapRegion};

/// A container under test and a way to attach a group to it.
pub trait Rig {
    /// The container, as a VMM uses it.
    fn container(&self) -> &dyn VfioContainer;
    /// Its raw type1 operations.
    fn raw(&self) -> &dyn Type1;
    /// Attach a group (the first sets the IOMMU); detached when the token drops.
    fn join(&self) -> Box<dyn Any>;
}

const KIB: u64 = 1024;

/// Anonymous memory for a guest region at `gpa`.
pub fn region(gpa: u64, size: u64) -> GuestRegionMmap {
    GuestRegionMmap::new(MmapRegion::new(size as usize).unwrap(), GuestAddress(gpa)).unwrap()
}

fn errno_of<T: std::fmt::Debug>(r: vfio_core::Result<T>) -> Option<i32> {
    r.unwrap_err().errno()
}

fn mappings_left(rig: &dyn Rig) -> u32 {
    rig.container().iommu_info().unwrap().dma_avail.unwrap()
}

/// MAP_DMA and UNMAP_DMA with the kernel's rules: overlaps, alignment, IOVA ranges, no split.
pub fn raw_map_and_unmap_rules(rig: &dyn Rig) {
    let _group = rig.join();
    let raw = rig.raw();
    let mem = region(0, 64 * KIB);
    let vaddr = mem.as_ptr() as u64;
    let avail = mappings_left(rig);
    // SAFETY: `mem` is anonymous memory no reference points into, alive for the whole test.
    let map = |iova, size, vaddr| unsafe { raw.map_dma(iova, size, vaddr) };
    map(0x10_0000, 16 * KIB, vaddr).unwrap();
    assert_eq!(mappings_left(rig), avail - 1);
    assert_eq!(
        errno_of(map(0x10_0000, 16 * KIB, vaddr)),
        Some(libc::EEXIST)
    );
    assert_eq!(
        errno_of(map(0x10_2000, 16 * KIB, vaddr + 16 * KIB)),
        Some(libc::EEXIST)
    );
    assert_eq!(errno_of(map(0x10_0800, 4 * KIB, vaddr)), Some(libc::EINVAL));
    assert_eq!(errno_of(map(0x20_0000, 0, vaddr)), Some(libc::EINVAL));
    assert_eq!(
        errno_of(map(0x20_0000, 4 * KIB, vaddr + 0x10)),
        Some(libc::EINVAL)
    );
    // The x86 MSI window and the end of the IOVA space are outside every IOVA range.
    assert_eq!(
        errno_of(map(0xfee0_0000, 4 * KIB, vaddr)),
        Some(libc::EINVAL)
    );
    assert_eq!(
        errno_of(map(0x80_0000_0000, 4 * KIB, vaddr)),
        Some(libc::EINVAL)
    );
    assert_eq!(mappings_left(rig), avail - 1, "refusals take no mapping");
    map(0x10_4000, 16 * KIB, vaddr + 16 * KIB).unwrap();
    // type1v2 never splits a mapping.
    assert_eq!(
        errno_of(raw.unmap_dma(0x10_2000, 4 * KIB)),
        Some(libc::EINVAL)
    );
    assert_eq!(
        errno_of(raw.unmap_dma(0x10_0000, 8 * KIB)),
        Some(libc::EINVAL)
    );
    assert_eq!(raw.unmap_dma(0x10_0000, 32 * KIB).unwrap(), 32 * KIB);
    assert_eq!(
        raw.unmap_dma(0x10_0000, 32 * KIB).unwrap(),
        0,
        "nothing left there"
    );
    assert_eq!(mappings_left(rig), avail);
}

/// The guest memory table: checked before the kernel sees a region, mapped while a group is
/// attached, mapped again when a group joins after the last one left.
pub fn guest_regions_follow_the_groups(rig: &dyn Rig) {
    let c = rig.container();
    // Before any group: recorded, not live; the IOMMU cannot be asked.
    let low = region(0, 64 * KIB);
    c.map_guest_region(&low).unwrap();
    assert!(matches!(c.iommu_info(), Err(Error::IommuInfo(_))));
    assert_eq!(c.dma_mappings().len(), 1);
    assert!(!c.dma_mappings()[0].live);
    let group = rig.join();
    let avail = mappings_left(rig);
    assert!(
        c.dma_mappings()[0].live,
        "mapped when the first group joined"
    );
    // Another region while attached: live at once, one more kernel mapping.
    let high = region(0x1_0000_0000, 128 * KIB);
    c.map_guest_region(&high).unwrap();
    assert_eq!(mappings_left(rig), avail - 1);
    // Refused before the kernel is asked, and nothing changes.
    let overlap = region(0x1_0001_0000, 64 * KIB);
    assert!(matches!(
        c.map_guest_region(&overlap),
        Err(Error::DmaOverlap {
            existing: 0x1_0000_0000,
            ..
        })
    ));
    let msi = region(0xfee0_0000, 64 * KIB);
    assert!(matches!(
        c.map_guest_region(&msi),
        Err(Error::DmaOutsideIovaRanges { .. })
    ));
    let odd = region(0x2_0000_0800, 4 * KIB);
    assert!(matches!(
        c.map_guest_region(&odd),
        Err(Error::DmaUnaligned { .. })
    ));
    assert_eq!(mappings_left(rig), avail - 1);
    assert_eq!(c.dma_mappings().len(), 2);
    assert!(matches!(
        c.unmap_guest_region(0x1234_0000),
        Err(Error::DmaNotMapped { .. })
    ));
    // The last group leaves: the kernel dropped the mappings; the table keeps them.
    drop(group);
    assert!(c.dma_mappings().iter().all(|m| !m.live));
    let _group = rig.join();
    assert!(c.dma_mappings().iter().all(|m| m.live), "mapped again");
    let avail = mappings_left(rig);
    c.unmap_guest_region(high.start_addr().0).unwrap();
    assert_eq!(mappings_left(rig), avail + 1);
    c.unmap_guest_region(0).unwrap();
    assert!(c.dma_mappings().is_empty());
    assert_eq!(mappings_left(rig), avail + 2);
}

fn bitmap(
    raw: &dyn Type1,
    iova: u64,
    size: u64,
    page_size: u64,
    bitmap: &mut [u64],
) -> vfio_core::Result<()> {
    raw.dirty_pages(DirtyOp::Bitmap {
        iova,
        size,
        page_size,
        bitmap,
    })
}

/// Dirty-page tracking as the kernel does it without hardware dirty tracking
/// (`vfio_iova_dirty_bitmap()`, `update_user_bitmap()`): for ordinary devices (`mediated`
/// false) every page of every mapping is dirty at every read; for mediated devices that pin
/// nothing, none is. Words of gaps between mappings are left as the caller filled them.
pub fn dirty_pages_follow_the_kernel(rig: &dyn Rig, mediated: bool) {
    let _group = rig.join();
    let raw = rig.raw();
    let mem = region(0, 64 * KIB);
    let vaddr = mem.as_ptr() as u64;
    let mut buf = [0u64; 5];
    // Not tracking yet.
    assert_eq!(
        bitmap(raw, 0x10_0000, 16 * KIB, 4096, &mut buf)
            .unwrap_err()
            .errno(),
        Some(libc::EINVAL)
    );
    raw.dirty_pages(DirtyOp::Start).unwrap();
    raw.dirty_pages(DirtyOp::Start).unwrap();
    // SAFETY: `mem` is anonymous memory no reference points into, alive for the whole test.
    unsafe {
        raw.map_dma(0x10_0000, 16 * KIB, vaddr).unwrap();
        raw.map_dma(0x20_0000, 8 * KIB, vaddr + 16 * KIB).unwrap();
    }
    // 258 pages from 0x100000: A is bits 0-3 (word 0), C bits 256-257 (word 4).
    let range = 0x10_2000;
    for _ in 0..2 {
        let mut buf = [0xaaaa_aaaa_aaaa_aaaa_u64; 5];
        bitmap(raw, 0x10_0000, range, 4096, &mut buf).unwrap();
        let gap = 0xaaaa_aaaa_aaaa_aaaa_u64;
        let (a, c) = if mediated { (0, 0) } else { (0xf, 0x3) };
        assert_eq!(buf, [a, gap, gap, gap, c], "mediated: {mediated}");
    }
    // Another page size, a range that bisects a mapping, a buffer too small.
    let mut buf = [0u64; 5];
    assert_eq!(
        bitmap(raw, 0x10_0000, range, 8192, &mut buf)
            .unwrap_err()
            .errno(),
        Some(libc::EINVAL)
    );
    assert_eq!(
        bitmap(raw, 0x10_1000, 0x10_1000, 4096, &mut buf)
            .unwrap_err()
            .errno(),
        Some(libc::EINVAL)
    );
    assert_eq!(
        bitmap(raw, 0x10_0000, range, 4096, &mut buf[..4])
            .unwrap_err()
            .errno(),
        Some(libc::EINVAL)
    );
    raw.dirty_pages(DirtyOp::Stop).unwrap();
    raw.dirty_pages(DirtyOp::Stop).unwrap();
    assert_eq!(
        bitmap(raw, 0x10_0000, range, 4096, &mut buf)
            .unwrap_err()
            .errno(),
        Some(libc::EINVAL)
    );
    assert_eq!(raw.unmap_dma(0x10_0000, 0x10_2000).unwrap(), 24 * KIB);
}

/// The VMM's view: [`DirtyRequest::Report`] ORs what the IOMMU reports for guest memory into
/// the VMM's own bitmap, never reports a page outside every mapping, and keeps the VMM's bits.
pub fn the_vmm_bitmap_is_the_union_with_the_iommus(rig: &dyn Rig, mediated: bool) {
    let c = rig.container();
    let _group = rig.join();
    // Guest memory: 16 pages at 0 and 8 pages at 64 KiB + 16 KiB, a hole between.
    let low = region(0, 64 * KIB);
    let high = region(80 * KIB, 32 * KIB);
    c.map_guest_region(&low).unwrap();
    c.map_guest_region(&high).unwrap();
    c.dirty(DirtyRequest::Start).unwrap();
    // 64 pages from gpa 0; the VMM's own log has pages 17 (the hole) and 40 (unmapped).
    let vmm_own = (1u64 << 17) | (1u64 << 40);
    let mut bits = [vmm_own];
    c.dirty(DirtyRequest::Report {
        gpa: 0,
        bitmap: &mut bits,
    })
    .unwrap();
    let iommu = if mediated { 0 } else { 0xffff | (0xff << 20) };
    assert_eq!(bits[0], iommu | vmm_own, "{:#x}", bits[0]);
    // A report of a window that starts inside a region: only the window's pages.
    let mut window = [0u64];
    c.dirty(DirtyRequest::Report {
        gpa: 8 * 4096,
        bitmap: &mut window,
    })
    .unwrap();
    let expect = if mediated { 0 } else { 0xff | (0xff << 12) };
    assert_eq!(window[0], expect, "{:#x}", window[0]);
    c.dirty(DirtyRequest::Stop).unwrap();
    assert!(c
        .dirty(DirtyRequest::Report {
            gpa: 0,
            bitmap: &mut bits,
        })
        .is_err());
    c.unmap_guest_region(0).unwrap();
    c.unmap_guest_region(80 * KIB).unwrap();
}
