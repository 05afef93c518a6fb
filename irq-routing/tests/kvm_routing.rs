// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The router on a real KVM VM (in-kernel irqchip).
//!
//! Every test skips with a printed reason where /dev/kvm cannot be opened,
//! and fails instead when `PASSTHROUGH_REQUIRE_KVM=1`.
//!
//! Commit counts come from the router's counters: `KvmBackend` issues exactly
//! one `KVM_SET_GSI_ROUTING` per counted commit and one `KVM_IRQFD` per
//! counted attach or detach.
//!
//! # How delivery is observed
//!
//! KVM has no call to read the routing table back, and `KVM_SIGNAL_MSI` needs
//! a vCPU. So the delivery tests create one vCPU (never run), software-enable
//! its local APIC with `KVM_SET_LAPIC`, and signal a route's irqfd. KVM's
//! irqfd wakeup consumes the eventfd counter (so a non-blocking read of the
//! eventfd then fails with `EAGAIN`: the irqfd is bound), looks up the GSI's
//! route and injects the MSI: the message's vector then shows up in the IRR
//! of the APIC state read back with `KVM_GET_LAPIC`. That proves the route is
//! in KVM's committed table with the message the router gave it, and that
//! the irqfd is bound to its GSI. A route without a KVM route leaves the IRR
//! clear.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use irq_routing::testing::kvm_vm_with_irqchip;
use irq_routing::{
    BatchOutcome, Error, KvmBackend, MsiMessage, RouteEntry, RouteId, RouteState, Router,
    RoutingBackend, UserspaceReason,
};
use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::{VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

const APIC_SVR: usize = 0xf0;
const APIC_IRR: usize = 0x200;
/// Fixed delivery, physical destination APIC ID 0.
const MSI_ADDRESS: u64 = 0xfee0_0000;

fn irqfd() -> Arc<EventFd> {
    Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())
}

/// A message that delivers `vector` (0x20..=0xff) to APIC ID 0.
fn msi(vector: u32) -> MsiMessage {
    MsiMessage::new(MSI_ADDRESS, 0x20 + vector % 0xe0)
}

fn vm_and_router() -> Option<(Arc<VmFd>, Router)> {
    let (_kvm, vm) = kvm_vm_with_irqchip()?;
    let router = Router::new(KvmBackend::new(vm.clone()).unwrap()).unwrap();
    Some((vm, router))
}

fn gsi_of(router: &Router, id: RouteId) -> u32 {
    match router.route_state(id) {
        Some(RouteState::Routed { gsi }) => gsi,
        other => panic!("route {id:?} is {other:?}, expected Routed"),
    }
}

/// vCPU 0 with its local APIC software-enabled and its IRR clear.
struct Apic {
    vcpu: VcpuFd,
}

impl Apic {
    fn new(vm: &VmFd) -> Self {
        let apic = Self {
            vcpu: vm.create_vcpu(0).unwrap(),
        };
        apic.clear();
        apic
    }

    fn reg(state: &kvm_lapic_state, offset: usize) -> u32 {
        let bytes: Vec<u8> = state.regs[offset..offset + 4]
            .iter()
            .map(|b| *b as u8)
            .collect();
        u32::from_le_bytes(bytes.try_into().unwrap())
    }

    fn set_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
        for (dst, src) in state.regs[offset..offset + 4]
            .iter_mut()
            .zip(value.to_le_bytes())
        {
            *dst = src as _;
        }
    }

    /// Enable the APIC (SVR bit 8) and clear every pending request.
    fn clear(&self) {
        let mut state = self.vcpu.get_lapic().unwrap();
        Self::set_reg(&mut state, APIC_SVR, 0x1ff);
        for i in 0..8 {
            Self::set_reg(&mut state, APIC_IRR + 0x10 * i, 0);
        }
        self.vcpu.set_lapic(&state).unwrap();
    }

    fn pending(&self, vector: u32) -> bool {
        let state = self.vcpu.get_lapic().unwrap();
        let word = Self::reg(&state, APIC_IRR + 0x10 * (vector as usize / 32));
        word & (1 << (vector % 32)) != 0
    }

    /// Signal `fd` and report whether KVM consumed it and raised `vector`.
    /// KVM may inject from a work item, so poll a bounded number of times.
    fn delivers(&self, fd: &EventFd, vector: u32) -> bool {
        self.clear();
        fd.write(1).unwrap();
        let mut consumed = false;
        for _ in 0..200 {
            if !consumed {
                consumed = fd.read().is_err();
            }
            if consumed && self.pending(vector) {
                return true;
            }
            sleep(Duration::from_millis(5));
        }
        false
    }
}

fn msi_vector(m: MsiMessage) -> u32 {
    m.data & 0xff
}

#[test]
fn n_vectors_in_one_batch_are_one_set_gsi_routing() {
    let Some((vm, router)) = vm_and_router() else {
        return;
    };
    let apic = Apic::new(&vm);
    let fds: Vec<_> = (0..65).map(|_| irqfd()).collect();
    let batch = router.batch();
    let ids: Vec<_> = fds
        .iter()
        .zip(0u32..)
        .map(|(fd, v)| router.add_msi_route(msi(v), Some(fd.clone())).unwrap())
        .collect();
    assert_eq!(router.stats().commits, 0);
    let BatchOutcome::Committed(report) = batch.commit().unwrap() else {
        panic!("outermost batch deferred");
    };
    assert!(report.committed);
    let stats = router.stats();
    assert_eq!(stats.commits, 1);
    assert_eq!(stats.failed_commits, 0);
    assert_eq!(stats.irqfd_attaches, 65);
    assert_eq!(stats.failed_irqfd_attaches, 0);
    for id in &ids {
        let gsi = gsi_of(&router, *id);
        assert!(report.routes.contains(&(*id, RouteState::Routed { gsi })));
    }
    // The check discriminates: vector 0's irqfd raises its own vector only.
    assert!(!apic.delivers(&fds[0], msi_vector(msi(1))));
    for v in [0u32, 31, 64] {
        let i = v as usize;
        assert!(
            apic.delivers(&fds[i], msi_vector(msi(v))),
            "vector {v} not delivered"
        );
    }

    // For contrast, outside a batch every vector is its own commit.
    for v in 65..70 {
        router.add_msi_route(msi(v), Some(irqfd())).unwrap();
    }
    assert_eq!(router.stats().commits, 1 + 5);
}

#[test]
fn nested_and_vm_wide_batches_commit_once() {
    let Some((vm, router)) = vm_and_router() else {
        return;
    };
    let apic = Apic::new(&vm);
    let router = Arc::new(router);
    let mut fds = Vec::new();
    let vm_wide = router.batch();
    // Eight devices restore on their own threads, each in its own batch.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u32)
            .map(|device| {
                let router = router.clone();
                s.spawn(move || {
                    let batch = router.batch();
                    let fds: Vec<_> = (0..65u32)
                        .map(|v| {
                            let fd = irqfd();
                            let m = msi(device * 65 + v);
                            let id = router.add_msi_route(m, Some(fd.clone())).unwrap();
                            (id, fd, m)
                        })
                        .collect();
                    assert_eq!(batch.commit().unwrap(), BatchOutcome::Deferred);
                    fds
                })
            })
            .collect();
        for h in handles {
            fds.extend(h.join().unwrap());
        }
    });
    assert_eq!(router.stats().commits, 0);
    assert!(fds
        .iter()
        .all(|(id, _, _)| router.route_state(*id) == Some(RouteState::Staged)));
    drop(vm_wide);
    let stats = router.stats();
    assert_eq!(stats.commits, 1);
    assert_eq!(stats.irqfd_attaches, 8 * 65);
    assert_eq!(router.committed_table().len(), 8 * 65);
    for (id, fd, m) in fds.iter().step_by(97) {
        gsi_of(&router, *id);
        assert!(apic.delivers(fd, msi_vector(*m)));
    }
}

#[test]
fn batch_without_change_commits_zero_times() {
    let Some((_vm, router)) = vm_and_router() else {
        return;
    };
    let id = router.add_msi_route(msi(0), Some(irqfd())).unwrap();
    let before = router.stats();
    assert_eq!(before.commits, 1);

    drop(router.batch());
    let batch = router.batch();
    let inner = router.batch();
    router.update_msi_route(id, msi(0)).unwrap();
    let temp = router.add_msi_route(msi(1), Some(irqfd())).unwrap();
    router.remove_route(temp).unwrap();
    inner.commit().unwrap();
    let BatchOutcome::Committed(report) = batch.commit().unwrap() else {
        panic!("outermost batch deferred");
    };
    assert!(!report.committed);
    assert_eq!(router.stats(), before);
    assert_eq!(router.gsis_in_use(), 1);
}

#[test]
fn irqfd_failure_on_vector_k_leaves_the_others_routed() {
    let Some((vm, router)) = vm_and_router() else {
        return;
    };
    let apic = Apic::new(&vm);
    let fds: Vec<_> = (0..8).map(|_| irqfd()).collect();
    // Vector 5 reuses vector 2's eventfd: KVM refuses an eventfd already
    // bound to an irqfd of the VM (EBUSY), a real attach failure.
    let k = 5;
    let batch = router.batch();
    let ids: Vec<_> = (0..8u32)
        .map(|v| {
            let fd = if v == k {
                fds[2].clone()
            } else {
                fds[v as usize].clone()
            };
            router.add_msi_route(msi(v), Some(fd)).unwrap()
        })
        .collect();
    let BatchOutcome::Committed(report) = batch.commit().unwrap() else {
        panic!("outermost batch deferred");
    };
    let failed = RouteState::Userspace(UserspaceReason::IrqfdAttach(libc::EBUSY));
    assert_eq!(router.route_state(ids[k as usize]), Some(failed));
    assert!(report.routes.contains(&(ids[k as usize], failed)));
    let stats = router.stats();
    assert_eq!(stats.commits, 1);
    assert_eq!(stats.irqfd_attaches, 8);
    assert_eq!(stats.failed_irqfd_attaches, 1);
    // No GSI leaked: vector k gave its GSI back.
    assert_eq!(router.gsis_in_use(), 7);
    assert_eq!(router.committed_table().len(), 7);
    for (v, id) in (0u32..).zip(&ids) {
        if v == k {
            continue;
        }
        gsi_of(&router, *id);
        assert!(
            apic.delivers(&fds[v as usize], msi_vector(msi(v))),
            "vector {v}"
        );
    }
    // The freed GSI is the next one handed out.
    let freed = router.add_msi_route(msi(k), Some(irqfd())).unwrap();
    assert_eq!(router.gsis_in_use(), 8);
    gsi_of(&router, freed);
}

#[test]
fn route_limit_plus_one_is_a_typed_error_and_earlier_routes_deliver() {
    let Some((vm, router)) = vm_and_router() else {
        return;
    };
    let apic = Apic::new(&vm);
    let limit = router.route_limit();
    // KVM_CAP_IRQ_ROUTING entries, minus the 40 x86 irqchip routes.
    assert!(limit > 0);
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
    assert_eq!(router.stats().commits, 1);
    assert_eq!(router.gsis_in_use(), limit);

    let err = router.add_msi_route(msi(0), Some(irqfd())).unwrap_err();
    assert!(matches!(err, Error::RouteLimit { limit: l } if l == limit));
    // The refused addition issued nothing and changed nothing.
    assert_eq!(router.stats().commits, 1);
    assert_eq!(router.gsis_in_use(), limit);
    assert_eq!(router.snapshot().len(), limit as usize);

    // The limit is KVM's. One more entry makes a table longer than
    // KVM_CAP_IRQ_ROUTING, which cannot be passed to KVM (E2BIG); a GSI at
    // the limit is refused by KVM_SET_GSI_ROUTING itself (EINVAL). Neither
    // refused table changes what is in force.
    let probe_backend = KvmBackend::new(vm.clone()).unwrap();
    let range = probe_backend.msi_gsi_range();
    let too_many: Vec<_> = (range.start..range.start + limit + 1)
        .map(|gsi| RouteEntry { gsi, msi: msi(0) })
        .collect();
    assert_eq!(
        probe_backend.irqchip_route_count() + too_many.len(),
        probe_backend.max_kvm_routes() as usize + 1
    );
    assert_eq!(
        probe_backend.commit_table(&too_many).unwrap_err().errno(),
        libc::E2BIG
    );
    let gsi_too_high = [RouteEntry {
        gsi: probe_backend.max_kvm_routes(),
        msi: msi(0),
    }];
    assert_eq!(
        probe_backend
            .commit_table(&gsi_too_high)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );

    for (i, fd, m) in &probes {
        gsi_of(&router, ids[*i]);
        assert!(
            apic.delivers(fd, msi_vector(*m)),
            "route {i} stopped delivering"
        );
    }
}

#[test]
fn removed_route_stops_delivering_and_update_retargets() {
    let Some((vm, router)) = vm_and_router() else {
        return;
    };
    let apic = Apic::new(&vm);
    let fd = irqfd();
    let id = router.add_msi_route(msi(0x10), Some(fd.clone())).unwrap();
    assert!(apic.delivers(&fd, 0x30));
    router.update_msi_route(id, msi(0x11)).unwrap();
    assert_eq!(router.stats().irqfd_attaches, 1);
    assert!(apic.delivers(&fd, 0x31));
    assert!(!apic.pending(0x30), "the old message is still routed");
    router.remove_route(id).unwrap();
    assert_eq!(router.stats().irqfd_detaches, 1);
    assert_eq!(router.gsis_in_use(), 0);
    // Unbound: KVM no longer consumes the eventfd, so nothing is injected.
    apic.clear();
    fd.write(1).unwrap();
    sleep(Duration::from_millis(20));
    assert_eq!(fd.read().unwrap(), 1);
    assert!(!apic.pending(0x31));
}
