// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Router and batch behaviour that needs the in-memory backend: injected failures (refused
//! commits, failed irqfd attaches and detaches), a short GSI range, and the route store's and
//! snapshot's internals. What needs none of these runs on both backends in
//! `tests/routing.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::{
    BatchOutcome, Error, MemoryBackend, MemoryOp, MsiMessage, RouteId, RouteState, Router,
    UserspaceReason,
};

use crate::store::{Record, RouteStore, LAST_GENERATION};

fn msi(v: u32) -> MsiMessage {
    MsiMessage::new(0xfee0_0000 + u64::from(v % 4) * 0x1000, 0x4000 | v)
}

fn irqfd() -> Arc<EventFd> {
    Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())
}

fn setup() -> (MemoryBackend, Router) {
    let backend = MemoryBackend::new();
    let router = Router::new(backend.clone()).unwrap();
    (backend, router)
}

fn committed(router: &Router, id: RouteId) -> u32 {
    match router.route_state(id) {
        Some(RouteState::Routed { gsi }) => gsi,
        other => panic!("route {id:?} is {other:?}, expected Routed"),
    }
}

#[test]
fn router_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Router>();
}

#[test]
fn irqfd_failure_on_one_vector_spares_the_others() {
    let (backend, router) = setup();
    let fds: Vec<_> = (0..8).map(|_| irqfd()).collect();
    // Vector 5 (the sixth attach) fails.
    backend.fail_nth(MemoryOp::AttachIrqfd, 6, libc::ENOSPC);
    let batch = router.batch();
    let ids: Vec<_> = fds
        .iter()
        .zip(0u32..)
        .map(|(fd, v)| router.add_msi_route(msi(v), Some(fd.clone())).unwrap())
        .collect();
    let BatchOutcome::Committed(report) = batch.commit().unwrap() else {
        panic!("outermost batch deferred");
    };
    let failed = RouteState::Userspace(UserspaceReason::IrqfdAttach(libc::ENOSPC));
    assert_eq!(router.route_state(ids[5]), Some(failed));
    assert!(report.routes.contains(&(ids[5], failed)));
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| *i != 5) {
        let gsi = committed(&router, *id);
        assert_eq!(backend.attached_gsi(&fds[i]), Some(gsi));
    }
    assert_eq!(backend.attached_gsi(&fds[5]), None);
    // Vector 5's GSI went back to the allocator.
    assert_eq!(router.gsis_in_use(), 7);
    assert_eq!(router.committed_table().len(), 7);
    // A userspace route can be removed and added again.
    router.remove_route(ids[5]).unwrap();
    let again = router.add_msi_route(msi(5), Some(fds[5].clone())).unwrap();
    committed(&router, again);
    assert_eq!(router.gsis_in_use(), 8);
}

#[test]
fn failed_commit_keeps_the_old_table_and_leaks_nothing() {
    let (backend, router) = setup();
    let kept_fd = irqfd();
    let kept = router.add_msi_route(msi(0), Some(kept_fd.clone())).unwrap();
    let updated_fd = irqfd();
    let updated = router
        .add_msi_route(msi(1), Some(updated_fd.clone()))
        .unwrap();
    let table_before = backend.table();
    let stats_before = router.stats();

    backend.fail_nth(MemoryOp::Commit, 1, libc::ENOMEM);
    let batch = router.batch();
    let added: Vec<_> = (10..14)
        .map(|v| router.add_msi_route(msi(v), Some(irqfd())).unwrap())
        .collect();
    router.update_msi_route(updated, msi(42)).unwrap();
    assert_eq!(router.gsis_in_use(), 6);
    let err = batch.commit().unwrap_err();

    let Error::Commit { undone, source } = err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(source.errno(), libc::ENOMEM);
    assert_eq!(undone.len(), 5);
    assert!(undone.contains(&updated));
    // The backend's table is the one from before the batch.
    assert_eq!(backend.table(), table_before);
    // Staged routes fell back to userspace and hold nothing.
    let failed = RouteState::Userspace(UserspaceReason::CommitFailed(libc::ENOMEM));
    for id in added.iter().chain([&updated]) {
        assert_eq!(router.route_state(*id), Some(failed));
    }
    assert_eq!(router.gsis_in_use(), 1);
    assert_eq!(backend.attached_gsi(&updated_fd), None);
    assert_eq!(backend.attaches(), stats_before.irqfd_attaches);
    // The untouched route still holds its GSI and irqfd.
    let gsi = committed(&router, kept);
    assert_eq!(backend.attached_gsi(&kept_fd), Some(gsi));
    assert_eq!(router.stats().failed_commits, 1);
}

#[test]
fn unbatched_commit_failure_removes_the_new_route() {
    let (backend, router) = setup();
    backend.fail_nth(MemoryOp::Commit, 1, libc::EINVAL);
    let fd = irqfd();
    let err = router.add_msi_route(msi(0), Some(fd.clone())).unwrap_err();
    assert!(matches!(err, Error::Commit { .. }));
    assert_eq!(router.gsis_in_use(), 0);
    assert!(router.snapshot().is_empty());
    assert_eq!(backend.attaches(), 0);
}

#[test]
fn route_limit_is_a_typed_error_and_keeps_existing_routes() {
    let backend = MemoryBackend::with_msi_gsis(100..104);
    let router = Router::new(backend.clone()).unwrap();
    assert_eq!(router.route_limit(), 4);
    let ids: Vec<_> = (0..4)
        .map(|v| router.add_msi_route(msi(v), Some(irqfd())).unwrap())
        .collect();
    let commits = backend.commits();
    let err = router.add_msi_route(msi(4), Some(irqfd())).unwrap_err();
    assert!(matches!(err, Error::RouteLimit { limit: 4 }));
    assert_eq!(backend.commits(), commits);
    assert_eq!(backend.table().len(), 4);
    let gsis: Vec<_> = ids.iter().map(|id| committed(&router, *id)).collect();
    assert_eq!(gsis, vec![100, 101, 102, 103]);
    // Freeing one makes room again.
    router.remove_route(ids[2]).unwrap();
    let again = router.add_msi_route(msi(9), None).unwrap();
    assert_eq!(committed(&router, again), 102);
}

#[test]
fn failed_detach_keeps_the_gsi_reserved() {
    let (backend, router) = setup();
    let fd = irqfd();
    let id = router.add_msi_route(msi(0), Some(fd)).unwrap();
    backend.fail_nth(MemoryOp::DetachIrqfd, 1, libc::EBADF);
    let err = router.remove_route(id).unwrap_err();
    assert!(matches!(err, Error::IrqfdDetach { .. }));
    assert_eq!(router.gsis_in_use(), 1);
    assert_eq!(router.route_state(id), None);
}

#[test]
fn snapshot_follows_routes_across_chunks() {
    let (backend, router) = setup();
    let batch = router.batch();
    let ids: Vec<RouteId> = (0..200)
        .map(|v| router.add_msi_route(msi(v), None).unwrap())
        .collect();
    drop(batch);
    assert_eq!(backend.commits(), 1);
    let snap = router.snapshot();
    assert_eq!(snap.len(), 200);
    assert!(snap.iter().map(|(id, _)| id).eq(ids.iter().copied()));
    assert_eq!(snap.get(ids[150]).unwrap().msi, msi(150));

    // Empty the first two chunks and more, and one route further on.
    for id in &ids[..130] {
        router.remove_route(*id).unwrap();
    }
    router.remove_route(ids[150]).unwrap();
    let old = snap;
    let snap = router.snapshot();
    assert_eq!(snap.len(), 69);
    assert_eq!(snap.iter().count(), 69);
    assert_eq!(snap.state(ids[0]), None);
    assert_eq!(snap.state(ids[129]), None);
    assert_eq!(snap.state(ids[150]), None);
    assert!(matches!(
        snap.state(ids[130]),
        Some(RouteState::Routed { .. })
    ));
    assert!(matches!(
        snap.state(ids[199]),
        Some(RouteState::Routed { .. })
    ));
    // The chunks of the store's 200 slots are kept (their generations tell removed handles
    // from later ones).
    assert_eq!(snap.chunks.len(), 4);
    // An earlier snapshot is untouched by later publications.
    assert_eq!(old.len(), 200);
    assert!(old.get(ids[0]).is_some());
    assert_ne!(*old, *snap);

    // A route added now reuses a freed slot under a new handle, and is found by it; the
    // old handle of that slot still names nothing.
    let new = router.add_msi_route(msi(7), None).unwrap();
    assert!(!ids.contains(&new));
    assert_eq!(router.route(new).unwrap().msi, msi(7));
    assert_eq!(router.snapshot().chunks.len(), 4);
    assert!(ids[..130]
        .iter()
        .chain(std::iter::once(&ids[150]))
        .all(|&id| router.route(id).is_none() && router.route_state(id).is_none()));
    assert_eq!(router.snapshot().len(), 70);
    for id in &ids[130..] {
        let _ = router.remove_route(*id);
    }
    router.remove_route(new).unwrap();
    let snap = router.snapshot();
    assert!(snap.is_empty());
    assert_eq!(snap.iter().count(), 0);
    assert_eq!(snap.state(new), None);
}

#[test]
fn a_refused_commit_leaves_no_committed_message() {
    let (backend, router) = setup();
    let batch = router.batch();
    let id = router.add_msi_route(msi(4), Some(irqfd())).unwrap();
    backend.fail_nth(MemoryOp::Commit, 1, libc::EINVAL);
    assert!(batch.commit().is_err());
    let view = router.route(id).unwrap();
    assert!(matches!(view.state, RouteState::Userspace(_)));
    assert_eq!(view.committed_msi, None);
}

#[test]
fn finish_ends_a_guard_like_commit_without_a_report() {
    let (backend, router) = setup();
    let outer = router.batch();
    let inner = router.batch();
    let ids: Vec<_> = (0..3)
        .map(|v| router.add_msi_route(msi(v), Some(irqfd())).unwrap())
        .collect();
    assert!(!inner.finish().unwrap());
    assert_eq!(backend.commits(), 0);
    assert!(outer.finish().unwrap());
    assert_eq!((backend.commits(), backend.attaches()), (1, 3));
    for id in ids {
        committed(&router, id);
    }
    // Nothing staged: the outermost guard still reports that it ended, and issues nothing.
    assert!(router.batch().finish().unwrap());
    assert_eq!(backend.commits(), 1);
    // A refused commit is an error, as with `commit`.
    let batch = router.batch();
    router.add_msi_route(msi(9), None).unwrap();
    backend.fail_nth(MemoryOp::Commit, 1, libc::EINVAL);
    assert!(matches!(batch.finish(), Err(Error::Commit { .. })));
}

#[test]
fn bulk_add_at_the_route_limit_adds_nothing() {
    let backend = MemoryBackend::with_msi_gsis(100..104);
    let router = Router::new(backend.clone()).unwrap();
    let first = router.add_msi_route(msi(0), Some(irqfd())).unwrap();
    let batch = router.batch();
    let err = router
        .add_msi_routes((1..5).map(|v| (msi(v), Some(irqfd()))))
        .unwrap_err();
    assert!(matches!(err, Error::RouteLimit { limit: 4 }));
    assert_eq!(router.gsis_in_use(), 1);
    batch.commit().unwrap();
    assert_eq!(backend.commits(), 1);
    assert_eq!(backend.table().len(), 1);
    assert_eq!(router.snapshot().len(), 1);
    committed(&router, first);
    // The three GSIs left are all still there.
    let ids = router
        .add_msi_routes((1..4).map(|v| (msi(v), None)))
        .unwrap();
    let mut gsis: Vec<_> = ids.iter().map(|id| committed(&router, *id)).collect();
    gsis.sort_unstable();
    assert_eq!(gsis, vec![101, 102, 103]);
}

#[test]
fn bulk_add_with_a_refused_commit_keeps_none() {
    let (backend, router) = setup();
    backend.fail_nth(MemoryOp::Commit, 1, libc::EINVAL);
    let err = router
        .add_msi_routes((0..3).map(|v| (msi(v), Some(irqfd()))))
        .unwrap_err();
    assert!(matches!(err, Error::Commit { .. }));
    assert_eq!(router.gsis_in_use(), 0);
    assert!(router.snapshot().is_empty());
    assert_eq!(backend.attaches(), 0);
}

#[test]
fn a_slot_whose_generations_run_out_is_retired() {
    let mut store = RouteStore::default();
    let record = || Record::staged(msi(1), 24, None);
    let first = store.insert(record());
    store.slot_of(first).unwrap().generation = LAST_GENERATION;
    let last = RouteId::new(first.slot() as u32, LAST_GENERATION);
    assert!(store.remove(first).is_none());
    assert!(store.remove(last).is_some());
    // The slot is not reused: the next route gets a fresh one.
    let next = store.insert(record());
    assert_ne!(next.slot(), first.slot());
    assert!(store.get(last).is_none());
    assert_eq!(store.len, 1);
}
