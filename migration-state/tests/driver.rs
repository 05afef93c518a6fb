// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Walking `vfio-core`'s simulated device through migrations, including a failure and QEMU's
//! recovery rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use migration_state::driver::{from_device_state, walk_device, Recovery};
use migration_state::{DeviceState, Error, State};
use vfio_core::sim::{SimDevice, SimDeviceBuilder};
use vfio_core::{MigState, MigrationFeatures, VfioMigration};

fn device(features: MigrationFeatures, blob: &[u8]) -> SimDevice {
    SimDeviceBuilder::new(0x1af4, 0x1041)
        .migration(features, blob.to_vec())
        .build()
        .unwrap()
}

fn state_of(dev: &SimDevice) -> State {
    from_device_state(dev.migration_state().unwrap())
}

#[test]
fn save_and_restore_device_blob_through_the_format() {
    let all = MigrationFeatures::P2P | MigrationFeatures::PRE_COPY;
    let src = device(all, b"source device state");
    // RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY: three arcs with P2P.
    let walked = walk_device(&src, State::StopCopy, Some(State::Running)).unwrap();
    assert_eq!(walked.arcs, 3);
    assert_eq!(state_of(&src), State::StopCopy);
    let mut fd = walked.data_fd.expect("STOP_COPY hands out a data fd");
    let mut stream = Vec::new();
    let (n, end) = fd.read_available(MigState::StopCopy, &mut stream).unwrap();
    assert_eq!(end, vfio_core::DataChunk::End);
    assert_eq!(n, stream.len());
    assert!(n >= b"source device state".len());

    let saved = DeviceState {
        device_data: stream.clone(),
        ..DeviceState::default()
    };
    let wire = saved.encode().unwrap();
    let loaded = DeviceState::decode(&wire).unwrap();

    let dst = device(MigrationFeatures::STOP_COPY, b"something else entirely");
    // Without P2P: RUNNING -> STOP -> RESUMING.
    let walked = walk_device(&dst, State::Resuming, None).unwrap();
    assert_eq!(walked.arcs, 2);
    walked
        .data_fd
        .expect("RESUMING hands out a data fd")
        .write_all(&loaded.device_data)
        .unwrap();
    // RESUMING -> STOP -> RUNNING.
    assert_eq!(walk_device(&dst, State::Running, None).unwrap().arcs, 2);
    assert_eq!(state_of(&dst), State::Running);

    // The destination now saves what the source saved.
    let mut again = Vec::new();
    walk_device(&dst, State::StopCopy, None)
        .unwrap()
        .data_fd
        .unwrap()
        .read_available(MigState::StopCopy, &mut again)
        .unwrap();
    assert_eq!(again, stream);
}

#[test]
fn failed_arc_resets_when_recovery_state_is_unreachable() {
    let dst = device(MigrationFeatures::STOP_COPY, b"blob");
    let mut fd = walk_device(&dst, State::Resuming, None)
        .unwrap()
        .data_fd
        .unwrap();
    // Not a valid stream: leaving RESUMING fails and, as mtty does, the device stays in
    // RESUMING.
    fd.write_all(&[0xff, 0xff, 0xff]).unwrap();
    drop(fd);
    let err = walk_device(&dst, State::Running, Some(State::Stop)).unwrap_err();
    match err {
        Error::Transition {
            requested,
            failed_at,
            completed_arcs,
            recovery,
            ..
        } => {
            assert_eq!(requested, State::Running);
            assert_eq!(failed_at, State::Stop);
            assert_eq!(completed_arcs, 0);
            // RESUMING -> STOP is the arc that failed, and fails again: the rule falls back
            // to a reset.
            assert_eq!(recovery, Recovery::Reset);
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(dst.migration_state().unwrap(), MigState::Running);
}

#[test]
fn failed_arc_without_recovery_state_resets() {
    let dst = device(MigrationFeatures::P2P, b"blob");
    let mut fd = walk_device(&dst, State::Resuming, None)
        .unwrap()
        .data_fd
        .unwrap();
    fd.write_all(&[1]).unwrap();
    drop(fd);
    let err = walk_device(&dst, State::Running, None).unwrap_err();
    assert!(matches!(
        err,
        Error::Transition {
            recovery: Recovery::Reset,
            ..
        }
    ));
    assert_eq!(state_of(&dst), State::Running);
}

#[test]
fn blocked_request_never_touches_the_device() {
    let dev = device(MigrationFeatures::P2P | MigrationFeatures::PRE_COPY, b"x");
    walk_device(&dev, State::StopCopy, None).unwrap();
    let err = walk_device(&dev, State::PreCopy, Some(State::Running)).unwrap_err();
    assert!(matches!(
        err,
        Error::BlockedArc {
            from: State::StopCopy,
            to: State::PreCopy
        }
    ));
    assert_eq!(state_of(&dev), State::StopCopy);
    // Unsupported request on a device without P2P.
    let plain = device(MigrationFeatures::STOP_COPY, b"x");
    assert!(matches!(
        walk_device(&plain, State::RunningP2p, None),
        Err(Error::UnsupportedState {
            state: State::RunningP2p,
            ..
        })
    ));
    assert_eq!(state_of(&plain), State::Running);
}

#[test]
fn device_without_migration_is_refused() {
    let dev = SimDeviceBuilder::new(0x1af4, 0x1041).build().unwrap();
    assert!(matches!(
        walk_device(&dev, State::Stop, None),
        Err(Error::NotMigratable)
    ));
}

#[test]
fn walks_take_the_kernels_pre_copy_arcs_on_the_simulated_device() {
    use vfio_core::sim::MigrationArc;
    use vfio_core::MigState as M;
    let arcs = |dev: &SimDevice| -> Vec<(M, M)> {
        dev.migration_arcs()
            .iter()
            .map(|a: &MigrationArc| {
                assert!(a.succeeded);
                (a.from, a.to)
            })
            .collect()
    };
    let all = MigrationFeatures::P2P | MigrationFeatures::PRE_COPY;

    // RUNNING -> PRE_COPY_P2P goes through RUNNING_P2P (vfio_from_fsm_table[RUNNING]
    // [PRE_COPY_P2P] is RUNNING_P2P), and the data fd comes from its last arc.
    let src = device(all, b"saved by the source");
    let walked = walk_device(&src, State::PreCopyP2p, None).unwrap();
    assert_eq!(walked.arcs, 2);
    assert!(walked.data_fd.is_some());
    assert_eq!(
        arcs(&src),
        [(M::Running, M::RunningP2p), (M::RunningP2p, M::PreCopyP2p)]
    );
    // PRE_COPY_P2P -> STOP_COPY is one arc; the stream continues on the PRE_COPY fd.
    let mut fd = walked.data_fd.unwrap();
    assert_eq!(walk_device(&src, State::StopCopy, None).unwrap().arcs, 1);
    let mut stream = Vec::new();
    fd.read_available(MigState::StopCopy, &mut stream).unwrap();

    // RESUMING -> PRE_COPY is walked, not refused: STOP, RUNNING_P2P, RUNNING, PRE_COPY.
    let dst = device(all, b"something else");
    walk_device(&dst, State::Resuming, None)
        .unwrap()
        .data_fd
        .unwrap()
        .write_all(&stream)
        .unwrap();
    let before = arcs(&dst).len();
    let walked = walk_device(&dst, State::PreCopy, None).unwrap();
    assert_eq!(walked.arcs, 4);
    assert_eq!(
        arcs(&dst).get(before..).unwrap(),
        [
            (M::Resuming, M::Stop),
            (M::Stop, M::RunningP2p),
            (M::RunningP2p, M::Running),
            (M::Running, M::PreCopy),
        ]
    );
    assert_eq!(state_of(&dst), State::PreCopy);
}
