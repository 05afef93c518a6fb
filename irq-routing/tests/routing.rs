// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The router's behaviour that needs no injected failure, on both backends from one body: the
//! in-memory backend (whose committed table and irqfd bindings the checks read) and a real KVM
//! VM (where the same checks signal irqfds and watch the vectors arrive in the local APICs; see
//! `irq_routing::testing`). Counts come from the router's counters; on the in-memory backend
//! they are checked against what the backend itself received.
//!
//! The tests that inject failures (refused commits, failed attaches and detaches, a short GSI
//! range) use the in-memory backend alone, in the crate's unit tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use irq_routing::testing::{TestBackend, TestVm};
use irq_routing::{
    BatchOutcome, Error, KvmBackend, MsiMessage, RouteEntry, RouteId, RouteState, Router,
    RoutingBackend, UserspaceReason,
};
use vmm_sys_util::eventfd::EventFd;

irq_routing::both_backends!(
    unbatched_adds_commit_then_attach_per_route,
    n_vectors_in_one_batch_are_one_commit,
    nested_and_vm_wide_batches_commit_once,
    batch_without_change_issues_nothing,
    update_recommits_without_touching_the_irqfd,
    remove_detaches_then_frees_after_the_commit,
    removed_route_stops_delivering_and_update_retargets,
    attach_failure_on_vector_k_leaves_the_others_routed,
    route_limit_plus_one_is_a_typed_error_and_earlier_routes_deliver,
    snapshot_lags_the_batch_but_not_the_guards,
    staged_update_shows_the_committed_message_until_the_commit,
    a_route_added_in_a_batch_has_no_committed_message_until_the_commit,
    bulk_add_commits_once_outside_a_batch,
    bulk_add_inside_a_batch_is_staged,
    a_reused_slot_gets_a_new_handle_and_old_snapshots_tell_them_apart,
    a_route_removed_and_its_slot_reused_inside_one_batch_settles_once,
    a_device_id_is_kept_where_the_backend_takes_it,
    a_parked_irqfd_leaves_its_gsi_and_comes_back_with_what_waited,
    a_route_parked_before_its_commit_is_not_attached_by_it,
);

/// A message that delivers x86 vector `0x20 + v % 0xe0`, fixed, to APIC ID `v % 4`.
fn msi(v: u32) -> MsiMessage {
    MsiMessage::new(
        0xfee0_0000 + u64::from(v % 4) * 0x1000,
        0x4000 | (0x20 + v % 0xe0),
    )
}

fn irqfd() -> Arc<EventFd> {
    Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())
}

fn setup(backend: TestBackend) -> Option<(TestVm, Router)> {
    let vm = TestVm::new(backend)?;
    let router = vm.router();
    Some((vm, router))
}

fn committed(router: &Router, id: RouteId) -> u32 {
    match router.route_state(id) {
        Some(RouteState::Routed { gsi }) => gsi,
        other => panic!("route {id:?} is {other:?}, expected Routed"),
    }
}

/// (commits, attaches, detaches) the router issued; on the in-memory backend, checked against
/// what the backend received.
fn ops(vm: &TestVm, router: &Router) -> (u64, u64, u64) {
    let s = router.stats();
    let issued = (s.commits, s.irqfd_attaches, s.irqfd_detaches);
    if let Some(m) = vm.memory() {
        assert_eq!((m.commits(), m.attaches(), m.detaches()), issued);
    }
    issued
}

/// The table the router believes is in force; on the in-memory backend, checked against the
/// backend's.
fn table(vm: &TestVm, router: &Router) -> Vec<RouteEntry> {
    let t = router.committed_table();
    if let Some(m) = vm.memory() {
        assert_eq!(m.table(), t);
    }
    t
}

fn unbatched_adds_commit_then_attach_per_route(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fds: Vec<_> = (0..3).map(|_| irqfd()).collect();
    let ids: Vec<_> = (0u32..)
        .zip(&fds)
        .map(|(v, fd)| router.add_msi_route(msi(v), Some(fd.clone())).unwrap())
        .collect();
    assert_eq!(ops(&vm, &router), (3, 3, 0));
    let t = table(&vm, &router);
    assert_eq!(t.len(), 3);
    for ((id, fd), v) in ids.iter().zip(&fds).zip(0u32..) {
        let gsi = committed(&router, *id);
        assert!(t.contains(&RouteEntry { gsi, msi: msi(v) }));
        assert!(vm.delivers(fd, msi(v)), "vector {v}");
    }
    // GSIs for MSI start above the irqchip routes.
    assert!(t.iter().all(|e| e.gsi >= 24));
}

fn n_vectors_in_one_batch_are_one_commit(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fds: Vec<_> = (0..65).map(|_| irqfd()).collect();
    let batch = router.batch();
    let ids: Vec<_> = (0u32..)
        .zip(&fds)
        .map(|(v, fd)| router.add_msi_route(msi(v), Some(fd.clone())).unwrap())
        .collect();
    assert_eq!(ops(&vm, &router), (0, 0, 0));
    assert!(ids
        .iter()
        .all(|id| router.route_state(*id) == Some(RouteState::Staged)));
    // Staged: nothing is bound yet.
    assert!(vm.unbound(&fds[7], msi(7)));
    let BatchOutcome::Committed(report) = batch.commit().unwrap() else {
        panic!("outermost batch deferred");
    };
    assert!(report.committed);
    assert_eq!(report.routes.len(), 65);
    assert_eq!(ops(&vm, &router), (1, 65, 0));
    assert_eq!(router.stats().failed_irqfd_attaches, 0);
    assert_eq!(table(&vm, &router).len(), 65);
    for id in &ids {
        let gsi = committed(&router, *id);
        assert!(report.routes.contains(&(*id, RouteState::Routed { gsi })));
    }
    for v in [0u32, 7, 31, 64] {
        assert!(vm.delivers(&fds[v as usize], msi(v)), "vector {v}");
    }
    // The check discriminates: vector 0's irqfd delivers its own message only.
    if vm.is_kvm() {
        assert!(!vm.delivers(&fds[0], msi(1)));
    }

    // For contrast, outside a batch every vector is its own commit.
    for v in 65..70 {
        router.add_msi_route(msi(v), Some(irqfd())).unwrap();
    }
    assert_eq!(ops(&vm, &router).0, 1 + 5);
}

fn nested_and_vm_wide_batches_commit_once(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let router = Arc::new(router);
    let mut routes = Vec::new();
    let vm_wide = router.batch();
    // Eight devices restore on their own threads, each in its own batch.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u32)
            .map(|device| {
                let router = router.clone();
                s.spawn(move || {
                    let batch = router.batch();
                    let routes: Vec<_> = (0..65u32)
                        .map(|v| {
                            let fd = irqfd();
                            let m = msi(device * 65 + v);
                            let id = router.add_msi_route(m, Some(fd.clone())).unwrap();
                            (id, fd, m)
                        })
                        .collect();
                    assert_eq!(batch.commit().unwrap(), BatchOutcome::Deferred);
                    routes
                })
            })
            .collect();
        for h in handles {
            routes.extend(h.join().unwrap());
        }
    });
    assert_eq!(ops(&vm, &router), (0, 0, 0));
    assert!(routes
        .iter()
        .all(|(id, _, _)| router.route_state(*id) == Some(RouteState::Staged)));
    drop(vm_wide);
    assert_eq!(ops(&vm, &router), (1, 8 * 65, 0));
    assert_eq!(table(&vm, &router).len(), 8 * 65);
    for (id, fd, m) in routes.iter().step_by(97) {
        committed(&router, *id);
        assert!(vm.delivers(fd, *m));
    }
}

fn batch_without_change_issues_nothing(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let id = router.add_msi_route(msi(1), Some(fd.clone())).unwrap();
    let before = ops(&vm, &router);
    assert_eq!(before, (1, 1, 0));

    let BatchOutcome::Committed(report) = router.batch().commit().unwrap() else {
        panic!("outermost batch deferred");
    };
    assert!(!report.committed);
    drop(router.batch());

    // Same message again, a route added then removed inside one batch, a nested guard, and
    // a message changed and changed back.
    let batch = router.batch();
    let inner = router.batch();
    router.update_msi_route(id, msi(1)).unwrap();
    let temp = router.add_msi_route(msi(2), Some(irqfd())).unwrap();
    router.remove_route(temp).unwrap();
    inner.commit().unwrap();
    router.update_msi_route(id, msi(3)).unwrap();
    router.update_msi_route(id, msi(1)).unwrap();
    let BatchOutcome::Committed(report) = batch.commit().unwrap() else {
        panic!("outermost batch deferred");
    };
    assert!(!report.committed);

    assert_eq!(ops(&vm, &router), before);
    assert_eq!(router.gsis_in_use(), 1);
    committed(&router, id);
    assert!(vm.delivers(&fd, msi(1)));
}

fn update_recommits_without_touching_the_irqfd(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let id = router.add_msi_route(msi(1), Some(fd.clone())).unwrap();
    let gsi = committed(&router, id);
    router.update_msi_route(id, msi(7)).unwrap();
    assert_eq!(ops(&vm, &router), (2, 1, 0));
    assert_eq!(table(&vm, &router), vec![RouteEntry { gsi, msi: msi(7) }]);
    assert_eq!(router.route(id).unwrap().msi, msi(7));
    assert_eq!(committed(&router, id), gsi);
    assert!(vm.delivers(&fd, msi(7)));
}

fn remove_detaches_then_frees_after_the_commit(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let id = router.add_msi_route(msi(0), Some(fd.clone())).unwrap();
    committed(&router, id);

    let batch = router.batch();
    router.remove_route(id).unwrap();
    // Staged: the GSI is still reserved and the irqfd still bound and routed.
    assert_eq!(router.gsis_in_use(), 1);
    assert!(vm.delivers(&fd, msi(0)));
    assert!(matches!(
        router.update_msi_route(id, msi(1)),
        Err(Error::UnknownRoute(_))
    ));
    drop(batch);

    assert_eq!(ops(&vm, &router), (2, 1, 1));
    assert!(vm.unbound(&fd, msi(0)));
    assert!(table(&vm, &router).is_empty());
    assert_eq!(router.gsis_in_use(), 0);
    assert_eq!(router.route_state(id), None);
}

fn removed_route_stops_delivering_and_update_retargets(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let id = router.add_msi_route(msi(0x10), Some(fd.clone())).unwrap();
    assert!(vm.delivers(&fd, msi(0x10)));
    router.update_msi_route(id, msi(0x11)).unwrap();
    assert_eq!(router.stats().irqfd_attaches, 1);
    assert!(vm.delivers(&fd, msi(0x11)));
    if vm.is_kvm() {
        // The old message is routed no more.
        assert!(!vm.delivers(&fd, msi(0x10)));
    }
    router.remove_route(id).unwrap();
    assert_eq!(router.stats().irqfd_detaches, 1);
    assert_eq!(router.gsis_in_use(), 0);
    // Unbound: KVM no longer consumes the eventfd, so nothing is injected.
    assert!(vm.unbound(&fd, msi(0x11)));
}

fn attach_failure_on_vector_k_leaves_the_others_routed(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fds: Vec<_> = (0..8).map(|_| irqfd()).collect();
    // Vector 5 reuses vector 2's eventfd: KVM refuses an eventfd already bound to an irqfd of
    // the VM (EBUSY), and so does the in-memory backend: a real attach failure, no injection.
    let k = 5;
    let batch = router.batch();
    let ids: Vec<_> = (0..8u32)
        .map(|v| {
            let fd = if v == k { &fds[2] } else { &fds[v as usize] };
            router.add_msi_route(msi(v), Some(fd.clone())).unwrap()
        })
        .collect();
    let BatchOutcome::Committed(report) = batch.commit().unwrap() else {
        panic!("outermost batch deferred");
    };
    let failed = RouteState::Userspace(UserspaceReason::IrqfdAttach(libc::EBUSY));
    assert_eq!(router.route_state(ids[k as usize]), Some(failed));
    assert!(report.routes.contains(&(ids[k as usize], failed)));
    assert_eq!(ops(&vm, &router), (1, 8, 0));
    assert_eq!(router.stats().failed_irqfd_attaches, 1);
    // No GSI leaked: vector k gave its GSI back, and the router no longer counts on its entry
    // (the backend's table keeps it until the next commit; no irqfd can raise it).
    assert_eq!(router.gsis_in_use(), 7);
    assert_eq!(router.committed_table().len(), 7);
    let mut gsis = Vec::new();
    for (v, id) in (0u32..).zip(&ids) {
        if v == k {
            continue;
        }
        gsis.push(committed(&router, *id));
        assert!(vm.delivers(&fds[v as usize], msi(v)), "vector {v}");
    }
    // The eight GSIs handed out were the first eight of the range; vector k's is the one the
    // others do not hold, and it is the next one handed out.
    let first = *gsis.iter().min().unwrap();
    let freed: Vec<u32> = (first..first + 8).filter(|g| !gsis.contains(g)).collect();
    assert_eq!(freed.len(), 1);
    let fresh = irqfd();
    let again = router.add_msi_route(msi(k), Some(fresh.clone())).unwrap();
    assert_eq!(committed(&router, again), freed[0]);
    assert_eq!(router.gsis_in_use(), 8);
    assert!(vm.delivers(&fresh, msi(k)));
}

fn route_limit_plus_one_is_a_typed_error_and_earlier_routes_deliver(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let limit = router.route_limit();
    // KVM_CAP_IRQ_ROUTING entries (4096 on x86), minus the 40 x86 irqchip routes; the
    // in-memory backend is shaped the same.
    assert_eq!(limit, 4096 - 40);
    let sampled = [0, 1, limit / 2, limit - 1];
    let mut probes = Vec::new();
    let batch = router.batch();
    let mut ids = Vec::new();
    for i in 0..limit {
        let m = msi(i);
        let fd = sampled.contains(&i).then(irqfd);
        ids.push(router.add_msi_route(m, fd.clone()).unwrap());
        if let Some(fd) = fd {
            probes.push((ids.len() - 1, fd, m));
        }
    }
    drop(batch);
    assert_eq!(ops(&vm, &router), (1, 4, 0));
    assert_eq!(router.gsis_in_use(), limit);

    let err = router.add_msi_route(msi(0), Some(irqfd())).unwrap_err();
    assert!(matches!(err, Error::RouteLimit { limit: l } if l == limit));
    let err = router
        .add_msi_routes([(msi(0), Some(irqfd()))])
        .unwrap_err();
    assert!(matches!(err, Error::RouteLimit { .. }));
    // The refused additions issued nothing and changed nothing.
    assert_eq!(ops(&vm, &router), (1, 4, 0));
    assert_eq!(router.gsis_in_use(), limit);
    assert_eq!(router.snapshot().len(), limit as usize);
    assert_eq!(table(&vm, &router).len(), limit as usize);

    if let Some(kvm) = vm.kvm_vm() {
        // The limit is KVM's. One more entry makes a table longer than KVM_CAP_IRQ_ROUTING,
        // which cannot be passed to KVM (E2BIG); a GSI at the limit is refused by
        // KVM_SET_GSI_ROUTING itself (EINVAL). Neither refused table changes what is in force.
        let probe = KvmBackend::new(kvm.clone()).unwrap();
        let range = probe.msi_gsi_range();
        let too_many: Vec<_> = (range.start..range.start + limit + 1)
            .map(|gsi| RouteEntry { gsi, msi: msi(0) })
            .collect();
        assert_eq!(
            probe.irqchip_route_count() + too_many.len(),
            probe.max_kvm_routes() as usize + 1
        );
        assert_eq!(
            probe.commit_table(&too_many).unwrap_err().errno(),
            libc::E2BIG
        );
        let gsi_too_high = [RouteEntry {
            gsi: probe.max_kvm_routes(),
            msi: msi(0),
        }];
        assert_eq!(
            probe.commit_table(&gsi_too_high).unwrap_err().errno(),
            libc::EINVAL
        );
    }
    for (i, fd, m) in &probes {
        committed(&router, ids[*i]);
        assert!(vm.delivers(fd, *m), "route {i} stopped delivering");
    }
}

fn snapshot_lags_the_batch_but_not_the_guards(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let old = router.add_msi_route(msi(0), Some(fd.clone())).unwrap();
    let gsi = committed(&router, old);
    let outer = router.batch();
    let inner = router.batch();
    router.update_msi_route(old, msi(5)).unwrap();
    let new = router.add_msi_route(msi(1), None).unwrap();
    // Until the commit, readers see the committed message, and the irqfd delivers it.
    assert_eq!(router.route(old).unwrap().msi, msi(0));
    assert_eq!(router.route_state(new), Some(RouteState::Staged));
    inner.commit().unwrap();
    assert_eq!(router.route_state(old), Some(RouteState::Staged));
    assert!(router.route(new).is_some());
    assert!(vm.delivers(&fd, msi(0)));
    drop(outer);
    assert_eq!(router.route_state(old), Some(RouteState::Routed { gsi }));
    assert_eq!(router.route(old).unwrap().msi, msi(5));
    assert!(vm.delivers(&fd, msi(5)));
}

fn staged_update_shows_the_committed_message_until_the_commit(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let id = router.add_msi_route(msi(1), Some(fd.clone())).unwrap();
    let view = router.route(id).unwrap();
    assert_eq!(view.committed_msi, Some(msi(1)));
    let batch = router.batch();
    router.update_msi_route(id, msi(2)).unwrap();
    // A nested guard's end publishes: the update is visible, still uncommitted, and the
    // irqfd still injects the committed message.
    router.batch().commit().unwrap();
    let view = router.route(id).unwrap();
    assert_eq!(view.state, RouteState::Staged);
    assert_eq!(view.msi, msi(2));
    assert_eq!(view.committed_msi, Some(msi(1)));
    assert_eq!(ops(&vm, &router).0, 1);
    assert!(vm.delivers(&fd, msi(1)));
    batch.commit().unwrap();
    let view = router.route(id).unwrap();
    assert!(matches!(view.state, RouteState::Routed { .. }));
    assert_eq!((view.msi, view.committed_msi), (msi(2), Some(msi(2))));
    assert_eq!(ops(&vm, &router).0, 2);
    assert!(vm.delivers(&fd, msi(2)));
}

fn a_route_added_in_a_batch_has_no_committed_message_until_the_commit(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let batch = router.batch();
    let id = router.add_msi_route(msi(3), Some(fd.clone())).unwrap();
    // A nested guard's end publishes no addition: the snapshot does not know the route yet,
    // and its handle reads as staged.
    router.batch().commit().unwrap();
    assert_eq!(router.route(id), None);
    assert_eq!(router.route_state(id), Some(RouteState::Staged));
    // An update in the same batch is published when a guard ends, the addition with it,
    // still with no committed message.
    let other = router.add_msi_route(msi(4), None).unwrap();
    drop(router.batch());
    router.update_msi_route(other, msi(5)).unwrap();
    router.batch().commit().unwrap();
    assert_eq!(router.route(id).unwrap().committed_msi, None);
    assert_eq!(router.route(id).unwrap().state, RouteState::Staged);
    assert_eq!(ops(&vm, &router), (0, 0, 0));
    // Nothing is bound to inject a signal yet; one sent now waits in the irqfd.
    assert!(vm.unbound(&fd, msi(3)));
    fd.write(1).unwrap();
    batch.commit().unwrap();
    assert_eq!(router.route(id).unwrap().committed_msi, Some(msi(3)));
    // Once attached, the waiting signal is injected (KVM) or still there to inject (memory).
    assert!(vm.received(&fd, msi(3)));
}

fn bulk_add_commits_once_outside_a_batch(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fds: Vec<_> = (0..5).map(|_| irqfd()).collect();
    let ids = router
        .add_msi_routes((0u32..).zip(&fds).map(|(v, fd)| (msi(v), Some(fd.clone()))))
        .unwrap();
    assert_eq!(ids.len(), 5);
    assert_eq!(ops(&vm, &router), (1, 5, 0));
    let t = table(&vm, &router);
    for ((v, id), fd) in (0u32..).zip(&ids).zip(&fds) {
        let gsi = committed(&router, *id);
        assert!(t.contains(&RouteEntry { gsi, msi: msi(v) }));
        assert!(vm.delivers(fd, msi(v)));
    }
    assert_eq!(router.gsis_in_use(), 5);
    // Nothing asked: nothing issued.
    assert!(router
        .add_msi_routes(std::iter::empty())
        .unwrap()
        .is_empty());
    assert_eq!(ops(&vm, &router), (1, 5, 0));
}

fn bulk_add_inside_a_batch_is_staged(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fds: Vec<_> = (0..3).map(|_| irqfd()).collect();
    let batch = router.batch();
    let ids = router
        .add_msi_routes((0u32..).zip(&fds).map(|(v, fd)| (msi(v), Some(fd.clone()))))
        .unwrap();
    let single = router.add_msi_route(msi(3), None).unwrap();
    assert_eq!(ops(&vm, &router), (0, 0, 0));
    assert!(ids
        .iter()
        .all(|id| router.route_state(*id) == Some(RouteState::Staged)));
    batch.commit().unwrap();
    assert_eq!(ops(&vm, &router), (1, 3, 0));
    for id in ids.iter().chain([&single]) {
        committed(&router, *id);
    }
    for (v, fd) in (0u32..).zip(&fds) {
        assert!(vm.delivers(fd, msi(v)));
    }
}

fn a_reused_slot_gets_a_new_handle_and_old_snapshots_tell_them_apart(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let old = router.add_msi_route(msi(1), Some(irqfd())).unwrap();
    let before = router.snapshot();
    router.remove_route(old).unwrap();
    let fd = irqfd();
    let new = router.add_msi_route(msi(2), Some(fd.clone())).unwrap();
    assert_ne!(old, new);
    // The old handle names nothing, in the router and in every later snapshot.
    assert_eq!(router.route_state(old), None);
    assert!(matches!(
        router.update_msi_route(old, msi(3)),
        Err(Error::UnknownRoute(id)) if id == old
    ));
    assert_eq!(router.route(new).unwrap().msi, msi(2));
    // The snapshot published before the new route existed reads its handle as issued later.
    assert_eq!(before.state(new), Some(RouteState::Staged));
    assert_eq!(before.get(new), None);
    assert!(matches!(before.state(old), Some(RouteState::Routed { .. })));
    // Removing the old handle again changes nothing.
    assert!(matches!(router.remove_route(old), Err(Error::UnknownRoute(id)) if id == old));
    assert_eq!(table(&vm, &router).len(), 1);
    assert_eq!(router.snapshot().len(), 1);
    assert!(vm.delivers(&fd, msi(2)));
}

fn a_route_removed_and_its_slot_reused_inside_one_batch_settles_once(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let (fa, fb) = (irqfd(), irqfd());
    let batch = router.batch();
    let a = router.add_msi_route(msi(1), Some(fa.clone())).unwrap();
    router.remove_route(a).unwrap();
    let b = router.add_msi_route(msi(2), Some(fb.clone())).unwrap();
    let BatchOutcome::Committed(report) = batch.commit().unwrap() else {
        panic!("outermost guard");
    };
    assert_eq!(report.routes.len(), 1);
    assert_eq!(report.routes[0].0, b);
    assert_eq!(ops(&vm, &router), (1, 1, 0));
    assert_eq!(router.route_state(a), None);
    assert!(vm.unbound(&fa, msi(1)));
    assert!(vm.delivers(&fb, msi(2)));
}

fn a_device_id_is_kept_where_the_backend_takes_it(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let m = msi(3).with_devid(0x0810);
    router.add_msi_route(m, Some(fd.clone())).unwrap();
    // The router keeps the device ID; the in-memory backend stores it, and KVM on x86 (no
    // KVM_CAP_MSI_DEVID) is given the route without it and still injects the message.
    assert_eq!(router.committed_table()[0].msi.devid, Some(0x0810));
    if let Some(m) = vm.memory() {
        assert_eq!(m.table()[0].msi.devid, Some(0x0810));
    }
    if let Some(kvm) = vm.kvm_vm() {
        assert!(!KvmBackend::new(kvm.clone()).unwrap().msi_devid_supported());
    }
    assert!(vm.delivers(&fd, m));
}

/// Parking takes the irqfd off its GSI (one detach, no commit): a signal then waits in the
/// eventfd instead of reaching the VM. Unparking puts it back (one attach, no commit), and KVM
/// injects a signal that waited (on the in-memory backend it stays in the eventfd, bound again).
fn a_parked_irqfd_leaves_its_gsi_and_comes_back_with_what_waited(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let m = msi(7);
    let id = router.add_msi_route(m, Some(fd.clone())).unwrap();
    let gsi = committed(&router, id);
    assert!(vm.delivers(&fd, m));
    let before = ops(&vm, &router);
    router.park_irqfd(id).unwrap();
    router.park_irqfd(id).unwrap();
    assert!(router.is_parked(id));
    assert_eq!(
        ops(&vm, &router),
        (before.0, before.1, before.2 + 1),
        "one detach"
    );
    assert_eq!(router.route_state(id), Some(RouteState::Routed { gsi }));
    assert!(!router.route(id).unwrap().irqfd_attached);
    assert_eq!(router.gsis_in_use(), 1);
    // Nothing takes a signal now (`unbound` sends one and finds it waiting).
    assert!(vm.unbound(&fd, m));
    fd.write(1).unwrap();
    router.unpark_irqfd(id).unwrap();
    assert!(!router.is_parked(id));
    assert_eq!(
        ops(&vm, &router),
        (before.0, before.1 + 1, before.2 + 1),
        "one attach"
    );
    assert!(
        vm.received(&fd, m),
        "what waited is delivered once the irqfd is back"
    );
    assert!(vm.delivers(&fd, m));
    router.remove_route(id).unwrap();
}

/// A route parked while staged (its first commit not made yet) is committed without its
/// irqfd; unparking attaches it.
fn a_route_parked_before_its_commit_is_not_attached_by_it(backend: TestBackend) {
    let Some((vm, router)) = setup(backend) else {
        return;
    };
    let fd = irqfd();
    let m = msi(9);
    let batch = router.batch();
    let id = router.add_msi_route(m, Some(fd.clone())).unwrap();
    router.park_irqfd(id).unwrap();
    drop(batch);
    let gsi = committed(&router, id);
    assert_eq!(router.stats().irqfd_attaches, 0);
    assert!(vm.unbound(&fd, m));
    router.unpark_irqfd(id).unwrap();
    assert_eq!(router.stats().irqfd_attaches, 1);
    assert_eq!(router.route_state(id), Some(RouteState::Routed { gsi }));
    assert!(vm.delivers(&fd, m));
    // Removing a parked route detaches nothing.
    router.park_irqfd(id).unwrap();
    let detaches = router.stats().irqfd_detaches;
    router.remove_route(id).unwrap();
    assert_eq!(router.stats().irqfd_detaches, detaches);
    assert_eq!(router.gsis_in_use(), 0);
}
