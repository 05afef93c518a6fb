// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Live migration through `Outgoing` and `Incoming` on simulated devices and real KVM VMs:
//! pre-copy iterated with PRECOPY_INFO, stop-copy estimates against the bytes read, the P2P
//! order across devices on both ends (observed by a journal of the devices' own calls), a
//! device without P2P, dirty tracking into the VMM's bitmaps, rollbacks, and the guest notice
//! alongside.

#![cfg(feature = "kvm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod live;

use std::sync::Arc;
use std::time::Duration;

use live::{guest_boots, kvm_vm, migratable, msix_sim, Event, Journal, Recorded};
use migration_state::{path, MigrationFlags, NoticeStatus, ProceedReason, State};
use vfio_core::sim::{lab_iommu_info, ArcFailure, SimContainer, SimDevice};
use vfio_core::{
    DirtyOp, DirtySource, DmaLogging, MigState, MigrationFeatures as F, PrecopyInfo, Type1,
    VfioContainer, VfioMigration,
};
use vmm_glue::live_migration::{p2p_order_holds, RoundEnd};
use vmm_glue::{
    scripted_guest, DirtyBitmap, DirtyLog, Error, Incoming, MigrationOptions, NoticeDelivery,
    Outgoing, PassthroughDevice, Raised, Strategy,
};

const ALL: F = F::STOP_COPY.union(F::P2P).union(F::PRE_COPY);
const EIO: i32 = 5;

fn info(initial_bytes: u64, dirty_bytes: u64) -> PrecopyInfo {
    PrecopyInfo {
        initial_bytes,
        dirty_bytes,
    }
}

/// The simulator's generic stream: a frame is a u32 length and the blob.
fn frame_len(blob: &[u8]) -> u64 {
    4 + blob.len() as u64
}

/// Each device's successful arcs in the journal as the library's log saw them, in order.
fn log_matches_journal(log: &vmm_glue::TransitionLog, journal: &Journal) {
    let from_log: Vec<(u32, MigState)> = log
        .entries()
        .iter()
        .filter_map(|c| c.entered().map(|s| (c.device, s.to_device_state())))
        .collect();
    assert_eq!(from_log, journal.entered(), "the log is the devices' order");
}

/// One device with PRE_COPY whose state changes while it runs: every round reads what
/// PRECOPY_INFO announced, up to "nothing more for now", until PRECOPY_INFO reports nothing
/// left; the switchover reads what MIG_DATA_SIZE estimated; the destination takes the last
/// state and its VMM-side state equals the source's.
#[test]
fn pre_copy_iterates_until_precopy_info_reports_nothing_left() {
    let (Some(src_vm), Some(dst_vm)) = (kvm_vm(), kvm_vm()) else {
        return;
    };
    let journal = Journal::default();
    let src_sim = msix_sim(ALL, b"state-v1");
    let src_dev = Recorded::new(src_sim.clone(), 1, &journal);
    let mut src = migratable(&src_vm, &src_dev, 1, false);
    guest_boots(&mut src);

    let mut out = Outgoing::start(Vec::new(), &[&src], None, MigrationOptions::default()).unwrap();
    assert_eq!(src.device_migration_state().unwrap(), Some(State::PreCopy));
    let r1 = out.precopy_round(&mut []).unwrap();
    let d = r1.devices[0];
    assert_eq!(
        d.before,
        info(frame_len(b"state-v1"), 0),
        "the initial data"
    );
    assert_eq!(
        (d.read, d.end),
        (frame_len(b"state-v1"), RoundEnd::NothingMoreForNow)
    );
    assert_eq!(d.after, info(0, 0));
    assert_eq!(d.stop_copy_estimate, frame_len(b"state-v1"));
    assert!(r1.converged());

    // The device works on: its new state is dirty data.
    src_sim
        .set_device_state_blob(b"state-v2-longer".to_vec())
        .unwrap();
    let r2 = out.precopy_round(&mut []).unwrap();
    let d = r2.devices[0];
    assert_eq!(d.before, info(0, frame_len(b"state-v2-longer")));
    assert_eq!(d.read, frame_len(b"state-v2-longer"));
    assert_eq!(d.after, info(0, 0));
    assert_eq!(r2.stop_copy_estimate(), frame_len(b"state-v2-longer"));

    // Two changes between rounds, and a round with nothing new.
    src_sim.set_device_state_blob(b"v3".to_vec()).unwrap();
    src_sim.set_device_state_blob(b"v4!".to_vec()).unwrap();
    let rounds = out.precopy_until_converged(5, &mut [], |_| {}).unwrap();
    assert_eq!(rounds.len(), 1);
    assert_eq!(
        rounds[0].devices[0].before,
        info(0, frame_len(b"v3") + frame_len(b"v4!"))
    );
    let idle = out.precopy_round(&mut []).unwrap();
    assert_eq!(
        (idle.devices[0].before, idle.devices[0].read),
        (info(0, 0), 0)
    );
    assert!(idle.converged());

    // A change after the last round is not pre-copied: it goes with the stop-copy data, where
    // the device appends its final state too. MIG_DATA_SIZE counts only the final state.
    src_sim.set_device_state_blob(b"final".to_vec()).unwrap();
    assert_eq!(out.stop_copy_estimate().unwrap(), [frame_len(b"final")]);
    let report = out.switchover(&[&src], &mut []).unwrap();
    let precopied = frame_len(b"state-v1")
        + frame_len(b"state-v2-longer")
        + frame_len(b"v3")
        + frame_len(b"v4!");
    let t = report.devices[0];
    assert_eq!(t.precopy_bytes, precopied);
    assert_eq!(t.stop_copy_estimate, frame_len(b"final"));
    assert_eq!(t.stop_copy_bytes, 2 * frame_len(b"final"));
    assert_eq!(report.rounds, 4);
    assert_eq!(report.stream_bytes, report.writer.len() as u64);
    assert_eq!(src.device_migration_state().unwrap(), Some(State::Stop));
    // The kernel's path: RUNNING -> PRE_COPY, then PRE_COPY -> PRE_COPY_P2P -> STOP_COPY, then
    // STOP; the pre-copy fd carried on into STOP_COPY.
    let arcs: Vec<_> = src_sim
        .migration_arcs()
        .iter()
        .map(|a| (a.from, a.to))
        .collect();
    use MigState::{PreCopy, PreCopyP2p, Resuming, Running, RunningP2p, Stop, StopCopy};
    assert_eq!(
        arcs,
        [
            (Running, PreCopy),
            (PreCopy, PreCopyP2p),
            (PreCopyP2p, StopCopy),
            (StopCopy, Stop)
        ]
    );
    log_matches_journal(&report.log, &journal);

    let dst_sim = msix_sim(ALL, b"fresh device");
    let mut dst = migratable(&dst_vm, &dst_sim, 1, false);
    let incoming =
        Incoming::start(&report.writer[..], &[&dst], MigrationOptions::default()).unwrap();
    assert_eq!(dst.device_migration_state().unwrap(), Some(State::Resuming));
    let received = incoming.receive().unwrap();
    let r = received.receipts()[0];
    assert_eq!(
        (r.precopy_bytes, r.stop_copy_bytes),
        (precopied, 2 * frame_len(b"final"))
    );
    let done = received.resume(&mut [&mut dst], Strategy::VmWide).unwrap();
    assert_eq!(dst_sim.device_state_blob().unwrap(), b"final");
    assert_eq!(dst.device_migration_state().unwrap(), Some(State::Running));
    assert_eq!(dst.save(), src.save());
    // The whole config space reads the same, COMMAND (the device's) included, so the BARs
    // decode where the guest put them.
    let view = |d: &PassthroughDevice| -> Vec<u32> {
        (0..64)
            .map(|i| scripted_guest::config_read_u32(d, 4 * i))
            .collect()
    };
    assert_eq!(view(&dst), view(&src));
    assert_eq!(scripted_guest::config_read_u16(&dst, 4) & 7, 7);
    assert_eq!(dst.bar_address(0), src.bar_address(0));
    assert!(dst.bar_address(0).is_some());
    let restore = done.restore.unwrap();
    assert_eq!(restore.gsi_routing_commits, 1);
    assert_eq!(restore.set_irqs_per_device, [1]);
    let arcs: Vec<_> = dst_sim
        .migration_arcs()
        .iter()
        .map(|a| (a.from, a.to))
        .collect();
    assert_eq!(
        arcs,
        [
            (Running, RunningP2p),
            (RunningP2p, Stop),
            (Stop, Resuming),
            (Resuming, Stop),
            (Stop, RunningP2p),
            (RunningP2p, Running)
        ]
    );
    // The frames: one pre-copy frame per round that read data (3), one stop-copy frame, the
    // state and the end.
    assert_eq!(done.frames, 3 + 1 + 1 + 1);
}

/// Two P2P devices: on the source both reach PRE_COPY_P2P before either reaches STOP_COPY; on
/// the destination both reach RUNNING_P2P before either reaches RUNNING. The VMM-side states
/// come back with one routing commit for the whole VM.
#[test]
fn two_devices_follow_the_p2p_order_on_both_ends() {
    let (Some(src_vm), Some(dst_vm)) = (kvm_vm(), kvm_vm()) else {
        return;
    };
    let journal = Journal::default();
    let sims: Vec<_> = [b"one", b"two"].iter().map(|b| msix_sim(ALL, *b)).collect();
    let recs: Vec<_> = sims
        .iter()
        .zip([1, 2])
        .map(|(s, id)| Recorded::new(s.clone(), id, &journal))
        .collect();
    let mut srcs: Vec<_> = recs
        .iter()
        .map(|r| migratable(&src_vm, r, r.id, false))
        .collect();
    for d in &mut srcs {
        guest_boots(d);
    }
    let refs: Vec<&PassthroughDevice> = srcs.iter().collect();
    let mut out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).unwrap();
    assert!(out.precopy_round(&mut []).unwrap().converged());
    journal.clear();
    let report = out.switchover(&refs, &mut []).unwrap();
    use MigState::{PreCopyP2p, Running, RunningP2p, Stop, StopCopy};
    assert_eq!(
        journal.entered(),
        [
            (1, PreCopyP2p),
            (2, PreCopyP2p),
            (1, StopCopy),
            (2, StopCopy),
            (1, Stop),
            (2, Stop)
        ]
    );
    assert!(
        journal.last(&[RunningP2p, PreCopyP2p]).unwrap()
            < journal.first(&[Stop, StopCopy]).unwrap()
    );
    // The library's own log records the same order (after the two PRE_COPY entries).
    let tail: Vec<_> = report
        .log
        .entries()
        .iter()
        .skip(2)
        .filter_map(|c| c.entered().map(|s| (c.device, s.to_device_state())))
        .collect();
    assert_eq!(tail, journal.entered());

    let dst_journal = Journal::default();
    let dst_sims: Vec<_> = (0..2).map(|_| msix_sim(ALL, b"blank")).collect();
    let dst_recs: Vec<_> = dst_sims
        .iter()
        .zip([1, 2])
        .map(|(s, id)| Recorded::new(s.clone(), id, &dst_journal))
        .collect();
    let mut dsts: Vec<_> = dst_recs
        .iter()
        .map(|r| migratable(&dst_vm, r, r.id, false))
        .collect();
    let dst_refs: Vec<&PassthroughDevice> = dsts.iter().collect();
    let incoming =
        Incoming::start(&report.writer[..], &dst_refs, MigrationOptions::default()).unwrap();
    let received = incoming.receive().unwrap();
    dst_journal.clear();
    let mut muts: Vec<&mut PassthroughDevice> = dsts.iter_mut().collect();
    let done = received.resume(&mut muts, Strategy::VmWide).unwrap();
    assert_eq!(
        dst_journal.entered(),
        [
            (1, Stop),
            (2, Stop),
            (1, RunningP2p),
            (2, RunningP2p),
            (1, Running),
            (2, Running)
        ]
    );
    let restore = done.restore.unwrap();
    assert_eq!(restore.gsi_routing_commits, 1, "one commit for the VM");
    assert_eq!(restore.set_irqs_per_device, [1, 1]);
    for ((dst, src), (dsim, blob)) in dsts
        .iter()
        .zip(&srcs)
        .zip(dst_sims.iter().zip([b"one", b"two"]))
    {
        assert_eq!(dst.save(), src.save());
        assert_eq!(dsim.device_state_blob().unwrap(), blob);
    }
    // The log's order (resume part) is the journal's.
    let resumed: Vec<_> = done
        .log
        .entries()
        .iter()
        .filter_map(|c| c.entered().map(|s| (c.device, s.to_device_state())))
        .skip(6)
        .collect();
    assert_eq!(resumed, dst_journal.entered());
}

/// A device without P2P takes the kernel's path (no RUNNING_P2P, PRE_COPY straight to
/// STOP_COPY); it stops first once the P2P devices are quiesced, and runs first once they are
/// in RUNNING_P2P.
#[test]
fn a_device_without_p2p_follows_the_kernels_rules_inside_the_p2p_order() {
    let (Some(src_vm), Some(dst_vm)) = (kvm_vm(), kvm_vm()) else {
        return;
    };
    let features = [ALL, F::STOP_COPY | F::PRE_COPY, F::STOP_COPY | F::P2P];
    let flags: Vec<MigrationFlags> = features
        .iter()
        .map(|f| MigrationFlags::from_bits(f.bits()).unwrap())
        .collect();
    assert!(p2p_order_holds(&flags));
    let journal = Journal::default();
    let recs: Vec<_> = features
        .iter()
        .zip(1u32..)
        .map(|(f, id)| Recorded::new(msix_sim(*f, &[id as u8; 5]), id, &journal))
        .collect();
    let mut srcs: Vec<_> = recs
        .iter()
        .map(|r| migratable(&src_vm, r, r.id, false))
        .collect();
    for d in &mut srcs {
        guest_boots(d);
    }
    let refs: Vec<&PassthroughDevice> = srcs.iter().collect();
    let mut out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).unwrap();
    use MigState::{PreCopy, PreCopyP2p, Resuming, Running, RunningP2p, Stop, StopCopy};
    assert_eq!(
        journal.entered(),
        [(1, PreCopy), (2, PreCopy)],
        "3 has no PRE_COPY"
    );
    let round = out.precopy_round(&mut []).unwrap();
    assert_eq!(
        round.devices.iter().map(|d| d.id).collect::<Vec<_>>(),
        [1, 2]
    );
    journal.clear();
    let report = out.switchover(&refs, &mut []).unwrap();
    assert_eq!(
        journal.entered(),
        [
            (1, PreCopyP2p),
            (3, RunningP2p),
            // Device 2 has no P2P: the kernel's table takes PRE_COPY straight to STOP_COPY,
            // and it goes first.
            (2, StopCopy),
            (1, StopCopy),
            (3, Stop),
            (3, StopCopy),
            (1, Stop),
            (2, Stop),
            (3, Stop)
        ]
    );
    assert_eq!(
        path(flags[1], State::PreCopy, State::StopCopy).unwrap(),
        [State::StopCopy]
    );
    assert_eq!(report.devices.len(), 3);
    assert_eq!(report.devices[2].precopy_bytes, 0);

    let dst_journal = Journal::default();
    let dst_sims: Vec<_> = features.iter().map(|f| msix_sim(*f, b"")).collect();
    let dst_recs: Vec<_> = dst_sims
        .iter()
        .zip(1u32..)
        .map(|(s, id)| Recorded::new(s.clone(), id, &dst_journal))
        .collect();
    let mut dsts: Vec<_> = dst_recs
        .iter()
        .map(|r| migratable(&dst_vm, r, r.id, false))
        .collect();
    let dst_refs: Vec<&PassthroughDevice> = dsts.iter().collect();
    let incoming =
        Incoming::start(&report.writer[..], &dst_refs, MigrationOptions::default()).unwrap();
    assert_eq!(
        dst_journal.entered(),
        [
            (1, RunningP2p),
            (1, Stop),
            (1, Resuming),
            (2, Stop),
            (2, Resuming),
            (3, RunningP2p),
            (3, Stop),
            (3, Resuming)
        ]
    );
    let received = incoming.receive().unwrap();
    dst_journal.clear();
    let mut muts: Vec<&mut PassthroughDevice> = dsts.iter_mut().collect();
    received.resume(&mut muts, Strategy::VmWide).unwrap();
    assert_eq!(
        dst_journal.entered(),
        [
            (1, Stop),
            (2, Stop),
            (3, Stop),
            (1, RunningP2p),
            (3, RunningP2p),
            (2, Running),
            (1, Running),
            (3, Running)
        ]
    );
    for (i, s) in dst_sims.iter().enumerate() {
        assert_eq!(s.device_state_blob().unwrap(), [i as u8 + 1; 5]);
    }
}

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

/// A source device fails its STOP_COPY arc at the switchover: the error says so, and every
/// device is back in RUNNING (the one whose walk failed by the walk's reset), dirty tracking
/// stopped; the stream written so far is cut short for the destination.
#[test]
fn a_failed_arc_at_the_switchover_rolls_every_source_device_back_to_running() {
    let (Some(vm), Some(dst_vm)) = (kvm_vm(), kvm_vm()) else {
        return;
    };
    let journal = Journal::default();
    let sims: Vec<_> = (0..2).map(|_| msix_sim(ALL, b"abc")).collect();
    let recs: Vec<_> = sims
        .iter()
        .zip([1, 2])
        .map(|(s, id)| Recorded::new(s.clone(), id, &journal))
        .collect();
    let devs: Vec<_> = recs
        .iter()
        .map(|r| migratable(&vm, r, r.id, false))
        .collect();
    let refs: Vec<&PassthroughDevice> = devs.iter().collect();
    let container = SimContainer::new(lab_iommu_info());
    let _group = container.join().unwrap();
    container
        .map_guest_region(&vfio_core::memfd_guest_region(0, 4096).unwrap())
        .unwrap();
    let mut stream = Vec::new();
    let mut out = Outgoing::start(
        &mut stream,
        &refs,
        Some(container.clone()),
        MigrationOptions::default(),
    )
    .unwrap();
    out.precopy_round(&mut []).unwrap();
    sims[1]
        .fail_migration_arc(
            MigState::PreCopyP2p,
            MigState::StopCopy,
            EIO,
            ArcFailure::StaysInSource,
        )
        .unwrap();
    journal.clear();
    let err = out.switchover(&refs, &mut []).unwrap_err();
    let Error::MigrationFailed { source, rollback } = err else {
        panic!("{err:?}");
    };
    assert!(
        matches!(
            *source,
            Error::MigrationWalk {
                to: State::StopCopy,
                ..
            }
        ),
        "{source:?}"
    );
    assert_eq!(rollback.resumed, [1]);
    assert_eq!(
        rollback.reset,
        [2],
        "QEMU's rule reset the device whose walk failed"
    );
    for d in &devs {
        assert_eq!(d.device_migration_state().unwrap(), Some(State::Running));
    }
    use MigState::{PreCopyP2p, Running, RunningP2p, Stop, StopCopy};
    assert_eq!(
        journal.entered(),
        [
            (1, PreCopyP2p),
            (2, PreCopyP2p),
            (1, StopCopy),
            (2, Running), // the failed walk's reset
            (1, Stop),
            (1, RunningP2p),
            (1, Running)
        ]
    );
    assert_eq!(sims[1].counters().resets, 1);
    let mut raw = [0u64];
    assert!(container
        .dirty_pages(DirtyOp::Bitmap {
            iova: 0,
            size: 4096,
            page_size: 4096,
            bitmap: &mut raw
        })
        .is_err());
    // The destination sees a stream that ends early, and resets its devices.
    let dst_sims: Vec<_> = (0..2).map(|_| msix_sim(ALL, b"")).collect();
    let dsts: Vec<_> = dst_sims
        .iter()
        .zip([1, 2])
        .map(|(s, id)| migratable(&dst_vm, s, id, false))
        .collect();
    let dst_refs: Vec<&PassthroughDevice> = dsts.iter().collect();
    let err = Incoming::start(&stream[..], &dst_refs, MigrationOptions::default())
        .unwrap()
        .receive()
        .unwrap_err();
    let Error::MigrationFailed { source, rollback } = err else {
        panic!("{err:?}");
    };
    assert!(matches!(
        *source,
        Error::MigrationStream(migration_state::Error::StreamTruncated { .. })
    ));
    assert_eq!(rollback.reset, [1, 2]);
    for (d, s) in dsts.iter().zip(&dst_sims) {
        assert_eq!(d.device_migration_state().unwrap(), Some(State::Running));
        assert_eq!(s.counters().resets, 1);
    }
}

/// Abandoning a migration (abort, or dropping it) runs every device again; the devices given
/// to the switchover must be the ones it started with.
#[test]
fn an_abandoned_migration_runs_the_devices_again() {
    let vm = live::memory_vm();
    let sims: Vec<_> = (0..2).map(|_| msix_sim(ALL, b"abc")).collect();
    let devs: Vec<_> = sims
        .iter()
        .zip([1, 2])
        .map(|(s, id)| migratable(&vm, s, id, false))
        .collect();
    let refs: Vec<&PassthroughDevice> = devs.iter().collect();
    let out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).unwrap();
    let rollback = out.abort();
    assert_eq!(rollback.resumed, [1, 2]);
    for s in &sims {
        let last = s.migration_arcs().last().copied().unwrap();
        assert_eq!((last.from, last.to), (MigState::PreCopy, MigState::Running));
    }

    let mut out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).unwrap();
    out.precopy_round(&mut []).unwrap();
    let swapped = [refs[1], refs[0]];
    let err = out.switchover(&swapped, &mut []).unwrap_err();
    let Error::MigrationFailed { source, rollback } = err else {
        panic!("{err:?}");
    };
    assert!(matches!(*source, Error::DeviceMismatch { index: 0 }));
    assert_eq!(rollback.resumed, [1, 2]);
    for d in &devs {
        assert_eq!(d.device_migration_state().unwrap(), Some(State::Running));
    }
    let out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).unwrap();
    drop(out);
    for d in &devs {
        assert_eq!(d.device_migration_state().unwrap(), Some(State::Running));
    }
    // Devices that cannot take part are refused before anything moves.
    let plain = live::memory_vm();
    let unmigratable = PassthroughDevice::new(
        msix_sim(ALL, b""),
        &plain.res,
        vmm_glue::DeviceOptions {
            id: 9,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        Outgoing::start(
            Vec::new(),
            &[&devs[0], &unmigratable],
            None,
            MigrationOptions::default()
        ),
        Err(Error::NotMigratable { id: 9 })
    ));
    assert!(matches!(
        Outgoing::start(
            Vec::new(),
            &[&devs[0], &devs[0]],
            None,
            MigrationOptions::default()
        ),
        Err(Error::DuplicateDevice { id: 1 })
    ));
    sims[0].set_migration_state(MigState::StopCopy).unwrap();
    assert!(matches!(
        Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()),
        Err(Error::DeviceNotReady {
            id: 1,
            state: State::StopCopy
        })
    ));
    assert_eq!(
        sims[1].migration_arcs().len(),
        6,
        "device 2 was not touched"
    );
}

/// Seed-003: nothing in the migration waits on the guest. The guest opted in to the notice and
/// never acknowledges; the migration runs to its end anyway, the notice still waiting on its
/// deadline; its state travels with the device and the destination tells the guest after
/// resume. A guest that acknowledges lets the VMM proceed at once, the same way.
#[test]
fn nothing_waits_on_the_guest_and_the_notice_works_alongside() {
    for acknowledges in [false, true] {
        let (Some(src_vm), Some(dst_vm)) = (kvm_vm(), kvm_vm()) else {
            return;
        };
        let src_sim = msix_sim(ALL, b"notice");
        let mut src = migratable(&src_vm, &src_sim, 3, true);
        guest_boots(&mut src);
        scripted_guest::opt_in_notice(&mut src, 4).unwrap();
        let now = Duration::from_secs(1000);
        let hour = Duration::from_secs(3600);
        let delivery = src.request_migration_notice(now, hour).unwrap();
        assert!(matches!(
            delivery,
            NoticeDelivery::Announced { vector: 4, .. }
        ));
        if acknowledges {
            scripted_guest::ack_notice(&mut src).unwrap();
            assert_eq!(
                src.poll_migration_notice(now),
                NoticeStatus::Proceed(ProceedReason::Acknowledged)
            );
        }
        let mut out =
            Outgoing::start(Vec::new(), &[&src], None, MigrationOptions::default()).unwrap();
        out.precopy_until_converged(3, &mut [], |_| {}).unwrap();
        let report = out.switchover(&[&src], &mut []).unwrap();
        if !acknowledges {
            assert_eq!(
                src.poll_migration_notice(now),
                NoticeStatus::Waiting {
                    deadline: now + hour
                },
                "the migration did not wait for the guest"
            );
        }
        let dst_sim = msix_sim(ALL, b"");
        let mut dst = migratable(&dst_vm, &dst_sim, 3, true);
        let received = Incoming::start(&report.writer[..], &[&dst], MigrationOptions::default())
            .unwrap()
            .receive()
            .unwrap();
        assert_eq!(received.states()[0].notice, src.save().notice);
        received.resume(&mut [&mut dst], Strategy::VmWide).unwrap();
        assert_eq!(dst.save(), src.save());
        let told = dst.notify_guest_resumed().unwrap();
        assert_eq!(
            told,
            NoticeDelivery::Announced {
                vector: 4,
                raised: Raised::Delivered
            }
        );
    }
}

/// What a stream says a device is.
#[test]
fn an_mttys_identity_is_its_ids_and_features() {
    let vm = live::memory_vm();
    let sim = Arc::new(SimDevice::mtty(2).unwrap());
    let dev = migratable(&vm, &sim, 5, false);
    let id = dev.migration_identity().unwrap();
    assert_eq!(
        (
            id.id,
            id.vendor,
            id.device,
            id.subsystem_vendor,
            id.subsystem
        ),
        (5, 0x4348, 0x3253, 0x4348, 0x3253)
    );
    assert_eq!(id.migration_flags, 7);
}
