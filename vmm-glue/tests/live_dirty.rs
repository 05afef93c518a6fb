// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Dirty-page tracking through a live migration (`Outgoing` with a container) and on its own
//! (`DirtyLog`), on the simulated container: started before pre-copy, reported into the VMM's
//! bitmaps every round, stopped after; device logs only when every device logs and the kernel
//! can report them.

#![cfg(feature = "kvm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod live;

use std::sync::Arc;

use live::{guest_boots, kvm_vm, migratable, msix_sim, Event, Journal, Recorded, ALL};
use vfio_core::sim::{lab_iommu_info, SimContainer, SimDevice};
use vfio_core::{DirtyOp, DirtySource, DmaLogging, MigState, Type1, VfioContainer};
use vmm_glue::{DirtyBitmap, DirtyLog, Error, MigrationOptions, Outgoing, PassthroughDevice};

/// Dirty tracking through the migration: started before the first device enters PRE_COPY,
/// reported into the VMM's bitmap every round and at the switchover, stopped after. The
/// container of an ordinary device reports every page of every mapping; pages outside every
/// mapping only ever carry the VMM's own bits.
#[test]
fn dirty_tracking_starts_before_pre_copy_reports_every_round_and_stops_after() {
    let Some(vm) = kvm_vm() else {
        return;
    };
    let journal = Journal::default();
    let sim_container = SimContainer::new(lab_iommu_info());
    let _group = sim_container.join().unwrap();
    // Guest memory: 32 pages at 0 and 16 pages at 64 pages; a gap between, nothing above.
    for (gpa, pages) in [(0u64, 32u64), (64 * 4096, 16)] {
        let region = vfio_core::memfd_guest_region(gpa, pages * 4096).unwrap();
        sim_container.map_guest_region(&region).unwrap();
    }
    let container = Arc::new(live::RecordedContainer {
        sim: sim_container.clone(),
        journal: journal.clone(),
    });
    let rec = Recorded::new(msix_sim(ALL, b"dma"), 1, &journal);
    let mut dev = migratable(&vm, &rec, 1, false);
    dev.set_dma_logging(rec.clone()).unwrap();
    guest_boots(&mut dev);

    let vmm_own = |bits: &mut [u64; 2]| {
        *bits = [1 << 3 | 1 << 40, 1 << (100 - 64)];
    };
    // Pages 0..32 and 64..80 from the IOMMU; 3 (inside), 40 (the gap) and 100 (above) the VMM's.
    let union = [0xffff_ffff | 1 << 40, 0xffff | 1 << (100 - 64)];
    let mut bits = [0u64; 2];
    vmm_own(&mut bits);
    let mut out = Outgoing::start(
        Vec::new(),
        &[&dev],
        Some(container.clone()),
        MigrationOptions::default(),
    )
    .unwrap();
    assert_eq!(
        out.dirty_source(),
        Some(DirtySource::Container),
        "vfio-pci does not log"
    );
    let mut rounds = 0;
    for _ in 0..3 {
        let r = out
            .precopy_round(&mut [DirtyBitmap {
                gpa: 0,
                bits: &mut bits,
            }])
            .unwrap();
        assert_eq!(r.dirty_source, Some(DirtySource::Container));
        assert_eq!(bits, union);
        rounds += 1;
        vmm_own(&mut bits);
    }
    bits = [0; 2];
    out.switchover(
        &[&dev],
        &mut [DirtyBitmap {
            gpa: 0,
            bits: &mut bits,
        }],
    )
    .unwrap();
    assert_eq!(
        bits,
        [0xffff_ffff, 0xffff],
        "the switchover's report: the mappings only"
    );
    let events = journal.events();
    let pos = |e: &Event| events.iter().position(|x| x == e).unwrap();
    let first_precopy = pos(&Event::Arc {
        dev: 1,
        from: MigState::Running,
        to: MigState::PreCopy,
        ok: true,
    });
    assert!(pos(&Event::DirtyStart) < first_precopy, "{events:?}");
    let reports = events.iter().filter(|e| **e == Event::DirtyReport).count();
    assert_eq!(reports, rounds + 1);
    let last_arc = events
        .iter()
        .rposition(|e| matches!(e, Event::Arc { .. }))
        .unwrap();
    assert_eq!(
        events[last_arc],
        Event::Arc {
            dev: 1,
            from: MigState::StopCopy,
            to: MigState::Stop,
            ok: true
        }
    );
    assert_eq!(events.last(), Some(&Event::DirtyStop));
    assert!(pos(&Event::DirtyStop) > last_arc);
    let mut raw = [0u64];
    let stopped = sim_container.dirty_pages(DirtyOp::Bitmap {
        iova: 0,
        size: 32 * 4096,
        page_size: 4096,
        bitmap: &mut raw,
    });
    assert_eq!(
        stopped.unwrap_err().errno(),
        Some(libc::EINVAL),
        "tracking stopped"
    );
}

/// `DirtyLog` alone: a VM of mttys (which log their DMA, and report none) gets only the VMM's
/// own bits where the kernel can report DMA logs; an ordinary device among them brings the
/// container's every mapped page back; a device whose DMA logging was never attached counts as
/// one that does not log.
#[test]
fn the_dirty_log_uses_device_logs_only_when_every_device_logs() {
    let vm = live::memory_vm();
    let container = SimContainer::new(lab_iommu_info());
    let _group = container.join().unwrap();
    container
        .map_guest_region(&vfio_core::memfd_guest_region(0, 64 * 4096).unwrap())
        .unwrap();
    let mttys: Vec<Arc<SimDevice>> = (0..2)
        .map(|_| Arc::new(SimDevice::mtty(2).unwrap()))
        .collect();
    let mut devs: Vec<PassthroughDevice> = mttys
        .iter()
        .zip(1u32..)
        .map(|(s, id)| migratable(&vm, s, id, false))
        .collect();
    for (d, s) in devs.iter_mut().zip(&mttys) {
        d.set_dma_logging(s.clone()).unwrap();
    }
    let other = Arc::new(SimDevice::mtty(2).unwrap());
    assert!(matches!(
        devs[0].set_dma_logging(other.clone()),
        Err(Error::NotSameDevice)
    ));
    let refs: Vec<&PassthroughDevice> = devs.iter().collect();
    // On the lab's kernel (the profile's default) an mtty's log cannot report: the container.
    let log = DirtyLog::start(container.clone(), &refs).unwrap();
    assert_eq!(log.source(), DirtySource::Container);
    log.stop().unwrap();
    for s in &mttys {
        s.set_kernel_reports_dma_logs(true);
    }
    let log = DirtyLog::start(container.clone(), &refs).unwrap();
    assert_eq!(log.source(), DirtySource::DeviceLogs);
    let mut bits = [1u64 << 7];
    log.report(0, &mut bits).unwrap();
    assert_eq!(bits, [1 << 7], "mtty's log reports nothing");
    log.stop().unwrap();

    let plain = msix_sim(ALL, b"");
    let mut third = migratable(&vm, &plain, 3, false);
    plain.dma_logging_start(4096, &[(0, 4096)]).unwrap_err();
    third.set_dma_logging(plain.clone()).unwrap();
    let unattached = migratable(&vm, &other, 4, false);
    for odd in [&third, &unattached] {
        let log = DirtyLog::start(container.clone(), &[&devs[0], &devs[1], odd]).unwrap();
        assert_eq!(log.source(), DirtySource::Container);
        let mut bits = [0u64, 1 << 1];
        log.report_all(&mut [DirtyBitmap {
            gpa: 0,
            bits: &mut bits,
        }])
        .unwrap();
        assert_eq!(bits, [u64::MAX, 1 << 1]);
        log.stop().unwrap();
    }
}
