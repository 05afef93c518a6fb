// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Live migration through `Outgoing` and `Incoming` on simulated devices and real KVM VMs:
//! pre-copy iterated with PRECOPY_INFO, stop-copy estimates against the bytes read, the P2P
//! order across devices on both ends (observed by a journal of the devices' own calls), a
//! device without P2P, and the guest notice alongside. Dirty tracking is in `live_dirty.rs`,
//! rollbacks in `live_rollback.rs`, bad streams in `live_streams.rs`, a migration between two
//! processes in `live_process.rs`.

#![cfg(feature = "kvm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod live;

use std::time::Duration;

use live::{
    entered_order, guest_boots, kvm_vm, migratable, msix_sim, recorded_devices, Journal, Recorded,
    ALL,
};
use migration_state::{path, MigrationFlags, NoticeStatus, ProceedReason, State};
use vfio_core::{MigState, MigrationFeatures as F, PrecopyInfo};
use vmm_glue::live_migration::{p2p_order_holds, RoundEnd};
use vmm_glue::{
    scripted_guest, Incoming, MigrationOptions, NoticeDelivery, Outgoing, PassthroughDevice,
    Raised, Strategy,
};

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
    assert_eq!(
        entered_order(log),
        journal.entered(),
        "the log is the devices' order"
    );
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
    let arcs = live::arcs(&src_sim);
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
    let arcs = live::arcs(&dst_sim);
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
    let mut srcs = recorded_devices(&src_vm, &sims, &journal);
    for d in &mut srcs {
        guest_boots(d);
    }
    let refs: Vec<&PassthroughDevice> = srcs.iter().collect();
    let mut out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).unwrap();
    assert!(out.precopy_round(&mut []).unwrap().converged());
    journal.clear();
    let report = out.switchover(&refs, &mut []).unwrap();
    use MigState::{PreCopyP2p, RunningP2p, Stop, StopCopy};
    assert_eq!(journal.entered(), live::TWO_P2P_SWITCHOVER);
    assert!(
        journal.last(&[RunningP2p, PreCopyP2p]).unwrap()
            < journal.first(&[Stop, StopCopy]).unwrap()
    );
    // The library's own log records the same order (after the two PRE_COPY entries).
    assert_eq!(entered_order(&report.log)[2..], journal.entered());

    let dst_journal = Journal::default();
    let dst_sims: Vec<_> = (0..2).map(|_| msix_sim(ALL, b"blank")).collect();
    let mut dsts = recorded_devices(&dst_vm, &dst_sims, &dst_journal);
    let dst_refs: Vec<&PassthroughDevice> = dsts.iter().collect();
    let incoming =
        Incoming::start(&report.writer[..], &dst_refs, MigrationOptions::default()).unwrap();
    let received = incoming.receive().unwrap();
    dst_journal.clear();
    let mut muts: Vec<&mut PassthroughDevice> = dsts.iter_mut().collect();
    let done = received.resume(&mut muts, Strategy::VmWide).unwrap();
    assert_eq!(dst_journal.entered(), live::TWO_P2P_RESUME);
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
    assert_eq!(entered_order(&done.log)[6..], dst_journal.entered());
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
    let sims: Vec<_> = features
        .iter()
        .zip(1u8..)
        .map(|(f, id)| msix_sim(*f, &[id; 5]))
        .collect();
    let mut srcs = recorded_devices(&src_vm, &sims, &journal);
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
    let mut dsts = recorded_devices(&dst_vm, &dst_sims, &dst_journal);
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
