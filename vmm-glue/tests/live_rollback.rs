// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A live migration that fails or is abandoned puts the source's devices back in RUNNING;
//! devices that cannot take part are refused before any moves; what a stream says a device is.

#![cfg(feature = "kvm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod live;

use std::sync::Arc;

use live::{kvm_vm, migratable, msix_sim, recorded_devices, Journal, ALL};
use migration_state::State;
use vfio_core::sim::{lab_iommu_info, ArcFailure, SimContainer, SimDevice};
use vfio_core::{DirtyOp, MigState, Type1, VfioContainer, VfioMigration};
use vmm_glue::{Error, Incoming, MigrationOptions, Outgoing, PassthroughDevice};

const EIO: i32 = 5;

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
    let devs = recorded_devices(&vm, &sims, &journal);
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

/// A paused VM (its devices in STOP) has nothing to pre-copy, and a failed switchover leaves it
/// paused: every device back in STOP, the one whose walk failed reset and stopped again.
#[test]
fn a_paused_vms_failed_migration_leaves_it_paused() {
    let vm = live::memory_vm();
    let journal = Journal::default();
    let sims: Vec<_> = (0..2).map(|_| msix_sim(ALL, b"paused")).collect();
    for s in &sims {
        s.set_migration_state(MigState::Stop).unwrap();
    }
    let devs = recorded_devices(&vm, &sims, &journal);
    let refs: Vec<&PassthroughDevice> = devs.iter().collect();
    let mut out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).unwrap();
    let round = out.precopy_round(&mut []).unwrap();
    assert!(round.devices.is_empty(), "nothing pre-copies in STOP");
    assert!(journal.events().is_empty(), "no arc before the switchover");
    sims[1]
        .fail_migration_arc(
            MigState::Stop,
            MigState::StopCopy,
            EIO,
            ArcFailure::StaysInSource,
        )
        .unwrap();
    let err = out.switchover(&refs, &mut []).unwrap_err();
    let Error::MigrationFailed { rollback, .. } = err else {
        panic!("{err:?}");
    };
    assert_eq!((rollback.resumed, rollback.reset), (vec![1], vec![2]));
    for d in &devs {
        assert_eq!(d.device_migration_state().unwrap(), Some(State::Stop));
    }
    use MigState::{Running, RunningP2p, Stop, StopCopy};
    assert_eq!(
        journal.entered(),
        [
            (1, StopCopy),
            (2, Running), // the failed walk's reset
            (1, Stop),
            (2, RunningP2p),
            (2, Stop)
        ]
    );

    // Abandoned before anything moved: nothing to put back.
    let sims: Vec<_> = (0..2).map(|_| msix_sim(ALL, b"paused")).collect();
    for s in &sims {
        s.set_migration_state(MigState::Stop).unwrap();
    }
    let devs = recorded_devices(&vm, &sims, &Journal::default());
    let refs: Vec<&PassthroughDevice> = devs.iter().collect();
    let out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).unwrap();
    assert_eq!(out.abort().untouched, [1, 2]);
    for d in &devs {
        assert_eq!(d.device_migration_state().unwrap(), Some(State::Stop));
    }
}
