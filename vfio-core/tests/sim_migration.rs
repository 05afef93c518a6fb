// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Migration v2 against the simulated device: the state walk and the data fd.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use vfio_core::sim::SimDevice;
use vfio_core::{DataChunk, MigState, MigrationFeatures as F, VfioMigration};

fn device(features: F, blob: &[u8]) -> SimDevice {
    SimDevice::builder(0x15b3, 0x101e)
        .migration(features, blob.to_vec())
        .build()
        .unwrap()
}

#[test]
fn pre_copy_then_stop_copy_then_resume_moves_the_device_state() {
    let src = device(F::P2P | F::PRE_COPY, b"initial state");
    assert_eq!(src.migration_state().unwrap(), MigState::Running);
    let mut fd = src.set_migration_state(MigState::PreCopy).unwrap().unwrap();
    let mut stream = Vec::new();
    // Wait for the precopy frame, then "nothing more for now".
    let mut buf = [0u8; 64];
    loop {
        match fd.read_chunk(&mut buf).unwrap() {
            DataChunk::Bytes(n) => {
                stream.extend_from_slice(&buf[..n]);
                if stream.len() == 4 + b"initial state".len() {
                    break;
                }
            }
            DataChunk::NothingMoreForNow => std::thread::yield_now(),
            DataChunk::End => panic!("PRE_COPY stream ended"),
        }
    }
    assert_eq!(
        fd.read_chunk(&mut buf).unwrap(),
        DataChunk::NothingMoreForNow
    );

    // The device keeps working, then stops: the final state follows on the same fd.
    src.set_device_state_blob(b"final state".to_vec()).unwrap();
    let again = src.set_migration_state(MigState::StopCopy).unwrap();
    assert!(again.is_none(), "PRE_COPY's fd carries on into STOP_COPY");
    assert_eq!(src.migration_state().unwrap(), MigState::StopCopy);
    fd.read_available(&mut stream).unwrap();
    assert_eq!(fd.read_chunk(&mut buf).unwrap(), DataChunk::End);
    assert_eq!(
        stream.len(),
        2 * 4 + b"initial state".len() + b"final state".len()
    );
    src.set_migration_state(MigState::Stop).unwrap();

    let dst = device(F::P2P | F::PRE_COPY, b"");
    dst.set_migration_state(MigState::Stop).unwrap();
    let mut wfd = dst
        .set_migration_state(MigState::Resuming)
        .unwrap()
        .unwrap();
    wfd.write_all(&stream).unwrap();
    dst.set_migration_state(MigState::Running).unwrap();
    assert_eq!(dst.device_state_blob().unwrap(), b"final state");
    assert_eq!(dst.counters().migration_set_state, 3);
}

#[test]
fn stop_copy_without_optional_features_walks_through_stop() {
    let src = device(F::STOP_COPY, b"abc");
    // RUNNING -> STOP -> STOP_COPY: the fd comes from the last arc.
    let mut fd = src
        .set_migration_state(MigState::StopCopy)
        .unwrap()
        .unwrap();
    let mut stream = Vec::new();
    fd.read_available(&mut stream).unwrap();
    assert_eq!(stream, [3, 0, 0, 0, b'a', b'b', b'c']);
    // PRE_COPY is not supported: EINVAL, state unchanged.
    let err = src.set_migration_state(MigState::PreCopy).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(src.migration_state().unwrap(), MigState::StopCopy);
}

#[test]
fn stop_copy_to_pre_copy_is_refused_not_spun_on() {
    let src = device(F::P2P | F::PRE_COPY, b"x");
    let _fd = src.set_migration_state(MigState::StopCopy).unwrap();
    let err = src.set_migration_state(MigState::PreCopy).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(src.migration_state().unwrap(), MigState::StopCopy);
    assert!(src.set_migration_state(MigState::Error).is_err());
}

#[test]
fn a_truncated_resume_stream_puts_the_device_in_error() {
    let dst = device(F::STOP_COPY, b"old");
    dst.set_migration_state(MigState::Stop).unwrap();
    let mut wfd = dst
        .set_migration_state(MigState::Resuming)
        .unwrap()
        .unwrap();
    wfd.write_all(&[10, 0, 0, 0, 1, 2]).unwrap();
    let err = dst.set_migration_state(MigState::Stop).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(dst.migration_state().unwrap(), MigState::Error);
    assert_eq!(dst.device_state_blob().unwrap(), b"old");
    // Reset recovers.
    vfio_core::VfioDevice::reset(&dst).unwrap();
    assert_eq!(dst.migration_state().unwrap(), MigState::Running);
}

#[test]
fn a_device_without_migration_says_so() {
    let dev = SimDevice::builder(1, 2).build().unwrap();
    assert_eq!(dev.migration_features().unwrap(), None);
    let err = dev.set_migration_state(MigState::Stop).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOTTY));
}
