// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Migration v2 against the simulated device's generic profile: the state walk, the data fd's
//! answers in each state, `VFIO_MIG_GET_PRECOPY_INFO`, `MIG_DATA_SIZE`, failed resumes and
//! stale fds. (The mtty profile, and the same scenarios against the real device, are in the
//! conformance suite.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};

use vfio_core::sim::{ArcFailure, PreCopyEnd, SimDevice};
use vfio_core::{
    DataChunk, MigState, MigrationFeatures as F, PrecopyInfo, VfioDevice, VfioMigration,
};

fn device(features: F, blob: &[u8]) -> SimDevice {
    SimDevice::builder(0x15b3, 0x101e)
        .migration(features, blob.to_vec())
        .build()
        .unwrap()
}

fn frame(blob: &[u8]) -> Vec<u8> {
    let mut f = (blob.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(blob);
    f
}

fn info(initial_bytes: u64, dirty_bytes: u64) -> PrecopyInfo {
    PrecopyInfo {
        initial_bytes,
        dirty_bytes,
    }
}

#[test]
fn pre_copy_then_stop_copy_then_resume_moves_the_device_state() {
    let src = device(F::P2P | F::PRE_COPY, b"initial state");
    assert_eq!(src.migration_state().unwrap(), MigState::Running);
    let mut fd = src.set_migration_state(MigState::PreCopy).unwrap().unwrap();
    let first = frame(b"initial state");
    assert_eq!(fd.precopy_info().unwrap(), info(first.len() as u64, 0));
    let mut stream = Vec::new();
    let (n, end) = fd.read_available(MigState::PreCopy, &mut stream).unwrap();
    assert_eq!((n, end), (first.len(), DataChunk::NothingMoreForNow));
    assert_eq!(stream, first);
    assert_eq!(fd.precopy_info().unwrap(), info(0, 0));
    // The generic profile ends PRE_COPY data with ENOMSG, as the uAPI asks.
    let err = fd.read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOMSG));

    // The device keeps working: its new state is dirty pre-copy data.
    src.set_device_state_blob(b"changed".to_vec()).unwrap();
    assert_eq!(
        fd.precopy_info().unwrap(),
        info(0, frame(b"changed").len() as u64)
    );
    fd.read_available(MigState::PreCopy, &mut stream).unwrap();
    assert_eq!(fd.precopy_info().unwrap(), info(0, 0));

    // More work, not read before the stop: dirty data too. Then it stops: the final state
    // follows on the same fd, which ends with read() == 0.
    src.set_device_state_blob(b"final state".to_vec()).unwrap();
    assert_eq!(
        src.migration_data_size().unwrap(),
        frame(b"final state").len() as u64
    );
    let again = src.set_migration_state(MigState::StopCopy).unwrap();
    assert!(again.is_none(), "PRE_COPY's fd carries on into STOP_COPY");
    assert_eq!(src.migration_state().unwrap(), MigState::StopCopy);
    let err = fd.precopy_info().unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL), "not in a pre-copy state");
    let (_, end) = fd.read_available(MigState::StopCopy, &mut stream).unwrap();
    assert_eq!(end, DataChunk::End);
    assert_eq!(fd.read(&mut [0u8; 8]).unwrap(), 0);
    assert_eq!(
        stream.len(),
        4 * 4 + b"initial state".len() + b"changed".len() + 2 * b"final state".len()
    );
    src.set_migration_state(MigState::Stop).unwrap();
    // STOP_COPY -> STOP closed the file.
    assert_eq!(
        fd.read(&mut [0u8; 8]).unwrap_err().raw_os_error(),
        Some(libc::ENODEV)
    );

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
    // The resume file was closed by RESUMING -> STOP.
    assert_eq!(
        wfd.write(&[0]).unwrap_err().raw_os_error(),
        Some(libc::ENODEV)
    );
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
    fd.read_available(MigState::StopCopy, &mut stream).unwrap();
    assert_eq!(stream, [3, 0, 0, 0, b'a', b'b', b'c']);
    // PRE_COPY is not supported: EINVAL, state unchanged.
    let err = src.set_migration_state(MigState::PreCopy).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(src.migration_state().unwrap(), MigState::StopCopy);
    // A saving fd is read-only, and it has no PRECOPY_INFO outside PRE_COPY.
    assert_eq!(
        fd.write(&[1]).unwrap_err().raw_os_error(),
        Some(libc::EBADF)
    );
    assert_eq!(fd.precopy_info().unwrap_err().errno(), Some(libc::EINVAL));
}

#[test]
fn stop_copy_to_pre_copy_is_refused_and_resuming_to_pre_copy_is_walked() {
    let src = device(F::P2P | F::PRE_COPY, b"x");
    let mut fd = src
        .set_migration_state(MigState::StopCopy)
        .unwrap()
        .unwrap();
    let err = src.set_migration_state(MigState::PreCopy).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(src.migration_state().unwrap(), MigState::StopCopy);
    assert!(src.set_migration_state(MigState::Error).is_err());
    let mut stream = Vec::new();
    fd.read_available(MigState::StopCopy, &mut stream).unwrap();

    // RESUMING -> PRE_COPY is a legal walk: STOP, RUNNING_P2P, RUNNING, PRE_COPY.
    let dst = device(F::P2P | F::PRE_COPY, b"");
    let mut wfd = dst
        .set_migration_state(MigState::Resuming)
        .unwrap()
        .unwrap();
    wfd.write_all(&stream).unwrap();
    let before = dst.migration_arcs().len();
    let pre = dst.set_migration_state(MigState::PreCopy).unwrap();
    assert!(pre.is_some(), "RUNNING -> PRE_COPY hands out a saving fd");
    let walked: Vec<_> = dst.migration_arcs()[before..]
        .iter()
        .map(|a| a.to)
        .collect();
    assert_eq!(
        walked,
        [
            MigState::Stop,
            MigState::RunningP2p,
            MigState::Running,
            MigState::PreCopy
        ]
    );
}

#[test]
fn a_truncated_resume_stream_leaves_the_device_resuming_and_writable() {
    let dst = device(F::STOP_COPY, b"old");
    dst.set_migration_state(MigState::Stop).unwrap();
    let mut wfd = dst
        .set_migration_state(MigState::Resuming)
        .unwrap()
        .unwrap();
    let whole = frame(b"new");
    wfd.write_all(&whole[..5]).unwrap();
    let err = dst.set_migration_state(MigState::Stop).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(dst.migration_state().unwrap(), MigState::Resuming);
    assert_eq!(dst.device_state_blob().unwrap(), b"old");
    // The rest of the stream, then the same arc again.
    wfd.write_all(&whole[5..]).unwrap();
    dst.set_migration_state(MigState::Stop).unwrap();
    assert_eq!(dst.device_state_blob().unwrap(), b"new");
}

#[test]
fn a_refused_resume_can_enter_error_where_the_profile_says_so_and_reset_recovers() {
    let dst = SimDevice::builder(0x15b3, 0x101e)
        .migration(F::STOP_COPY, b"old".to_vec())
        .resume_failure(ArcFailure::EntersError)
        .build()
        .unwrap();
    let mut wfd = dst
        .set_migration_state(MigState::Resuming)
        .unwrap()
        .unwrap();
    wfd.write_all(&[10, 0, 0, 0, 1, 2]).unwrap();
    let err = dst.set_migration_state(MigState::Stop).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(dst.migration_state().unwrap(), MigState::Error);
    assert_eq!(
        wfd.write(&[0]).unwrap_err().raw_os_error(),
        Some(libc::ENODEV)
    );
    // ERROR -> ERROR: the drivers' loop does not run.
    assert!(dst.set_migration_state(MigState::Error).unwrap().is_none());
    dst.reset().unwrap();
    assert_eq!(dst.migration_state().unwrap(), MigState::Running);
}

#[test]
fn a_reset_makes_every_data_fd_stale() {
    let src = device(F::P2P | F::PRE_COPY, b"abc");
    let mut fd = src.set_migration_state(MigState::PreCopy).unwrap().unwrap();
    src.reset().unwrap();
    assert_eq!(src.migration_state().unwrap(), MigState::Running);
    assert_eq!(
        fd.read(&mut [0u8; 4]).unwrap_err().raw_os_error(),
        Some(libc::ENODEV)
    );
    // In RUNNING the state check comes first: EINVAL, not ENODEV.
    assert_eq!(fd.precopy_info().unwrap_err().errno(), Some(libc::EINVAL));
    // A new pre-copy: the old fd is stale, the new one reads.
    let mut new = src.set_migration_state(MigState::PreCopy).unwrap().unwrap();
    assert_eq!(fd.precopy_info().unwrap_err().errno(), Some(libc::ENODEV));
    assert_eq!(new.precopy_info().unwrap(), info(7, 0));
    assert_eq!(new.read(&mut [0u8; 64]).unwrap(), 7);
}

#[test]
fn mtty_s_end_style_reads_zero_in_pre_copy() {
    let src = SimDevice::builder(0x15b3, 0x101e)
        .migration(F::P2P | F::PRE_COPY, b"abc".to_vec())
        .pre_copy_end(PreCopyEnd::ZeroRead)
        .build()
        .unwrap();
    let mut fd = src.set_migration_state(MigState::PreCopy).unwrap().unwrap();
    assert_eq!(fd.read(&mut [0u8; 64]).unwrap(), 7);
    assert_eq!(fd.read(&mut [0u8; 64]).unwrap(), 0);
    assert_eq!(
        fd.read_chunk(MigState::PreCopy, &mut [0u8; 64]).unwrap(),
        DataChunk::NothingMoreForNow
    );
}

#[test]
fn a_device_without_migration_says_so() {
    let dev = SimDevice::builder(1, 2).build().unwrap();
    assert_eq!(dev.migration_features().unwrap(), None);
    let err = dev.set_migration_state(MigState::Stop).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOTTY));
    assert_eq!(
        dev.migration_data_size().unwrap_err().errno(),
        Some(libc::ENOTTY)
    );
}

#[test]
fn a_device_without_reset_answers_einval_as_vfio_pci_does() {
    let dev = SimDevice::builder(1, 2).reset(false).build().unwrap();
    assert_eq!(dev.reset().unwrap_err().errno(), Some(libc::EINVAL));
}
