// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! QEMU's recovery rule in `walk_device`, against `vfio-core`'s simulated device with an
//! injected arc failure: a device left in a usable state is walked to the recovery state; one
//! left in ERROR is reset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use migration_state::driver::{walk_device, walk_device_observed, Recovery, WalkEvent};
use migration_state::{Error, State};
use vfio_core::sim::{ArcFailure, MigrationArc, SimDevice};
use vfio_core::MigState::{Running, RunningP2p, Stop, StopCopy};
use vfio_core::{MigState, MigrationFeatures, VfioMigration};

/// The errno the injected failures report (EIO; this crate does not depend on libc).
const EIO: i32 = 5;

fn device() -> SimDevice {
    SimDevice::builder(0x15b3, 0x101e)
        .migration(MigrationFeatures::P2P, b"device state".to_vec())
        .build()
        .unwrap()
}

fn arc(from: MigState, to: MigState, succeeded: bool) -> MigrationArc {
    MigrationArc {
        from,
        to,
        succeeded,
    }
}

#[test]
fn a_failed_arc_left_in_its_source_state_is_walked_to_the_recovery_state() {
    let dev = device();
    // STOP -> STOP_COPY fails; the driver leaves the device in STOP, as mlx5 does.
    dev.fail_migration_arc(Stop, StopCopy, EIO, ArcFailure::StaysInSource)
        .unwrap();
    let err = walk_device(&dev, State::StopCopy, Some(State::Running)).unwrap_err();
    let Error::Transition {
        requested,
        failed_at,
        completed_arcs,
        recovery,
        source,
    } = err
    else {
        panic!("expected a transition error, got {err}");
    };
    assert_eq!(requested, State::StopCopy);
    assert_eq!(failed_at, State::StopCopy);
    assert_eq!(completed_arcs, 2);
    assert_eq!(recovery, Recovery::RecoveredTo(State::Running));
    assert_eq!(source.errno(), Some(EIO));

    // Forward RUNNING -> RUNNING_P2P -> STOP, the failed STOP -> STOP_COPY, then the recovery
    // walk STOP -> RUNNING_P2P -> RUNNING; one single arc per call, no reset.
    assert_eq!(
        dev.migration_arcs(),
        [
            arc(Running, RunningP2p, true),
            arc(RunningP2p, Stop, true),
            arc(Stop, StopCopy, false),
            arc(Stop, RunningP2p, true),
            arc(RunningP2p, Running, true),
        ]
    );
    assert_eq!(dev.migration_state().unwrap(), Running);
    let c = dev.counters();
    assert_eq!(c.migration_set_state, 5);
    assert_eq!(c.resets, 0);
}

#[test]
fn a_failed_arc_into_error_falls_back_to_reset() {
    let dev = device();
    dev.fail_migration_arc(RunningP2p, Stop, EIO, ArcFailure::EntersError)
        .unwrap();
    let err = walk_device(&dev, State::Stop, Some(State::Running)).unwrap_err();
    assert!(matches!(
        err,
        Error::Transition {
            failed_at: State::Stop,
            completed_arcs: 1,
            recovery: Recovery::Reset,
            ..
        }
    ));
    // ERROR has no path to RUNNING, so no recovery arc was asked for.
    assert_eq!(
        dev.migration_arcs(),
        [arc(Running, RunningP2p, true), arc(RunningP2p, Stop, false)]
    );
    assert_eq!(dev.counters().resets, 1);
    assert_eq!(dev.migration_state().unwrap(), Running);
}

/// The observer sees every request the walk makes, in the device's order: the forward arcs,
/// the failed one, the recovery arcs, and a reset when the recovery state is out of reach.
#[test]
fn the_observer_sees_every_arc_and_reset_the_device_saw() {
    let as_event = |a: &MigrationArc| WalkEvent::Arc {
        from: State::from_device_state(a.from),
        to: State::from_device_state(a.to),
        succeeded: a.succeeded,
    };
    let dev = device();
    dev.fail_migration_arc(Stop, StopCopy, EIO, ArcFailure::StaysInSource)
        .unwrap();
    let mut seen = Vec::new();
    walk_device_observed(&dev, State::StopCopy, Some(State::Running), &mut |e| {
        seen.push(e)
    })
    .unwrap_err();
    let want: Vec<WalkEvent> = dev.migration_arcs().iter().map(as_event).collect();
    assert_eq!(want.len(), 5);
    assert_eq!(seen, want);

    let dev = device();
    dev.fail_migration_arc(RunningP2p, Stop, EIO, ArcFailure::EntersError)
        .unwrap();
    let mut seen = Vec::new();
    walk_device_observed(&dev, State::Stop, Some(State::Running), &mut |e| {
        seen.push(e)
    })
    .unwrap_err();
    let mut want: Vec<WalkEvent> = dev.migration_arcs().iter().map(as_event).collect();
    want.push(WalkEvent::Reset { succeeded: true });
    assert_eq!(seen, want);
    assert_eq!(dev.counters().resets, 1);

    // A walk that succeeds reports its arcs only.
    let dev = device();
    let mut seen = Vec::new();
    walk_device_observed(&dev, State::StopCopy, None, &mut |e| seen.push(e)).unwrap();
    assert_eq!(
        seen,
        [
            WalkEvent::Arc {
                from: State::Running,
                to: State::RunningP2p,
                succeeded: true
            },
            WalkEvent::Arc {
                from: State::RunningP2p,
                to: State::Stop,
                succeeded: true
            },
            WalkEvent::Arc {
                from: State::Stop,
                to: State::StopCopy,
                succeeded: true
            },
        ]
    );
}
