// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fault injection: for every host operation issued while a guest enables MSI or MSI-X and
//! while a VMM restores devices, a run where exactly that operation fails.
//!
//! The operations are the ones the simulated device and the in-memory routing backend count:
//! `VFIO_DEVICE_SET_IRQS` (simulated device), `KVM_SET_GSI_ROUTING` commits and `KVM_IRQFD`
//! attaches/detaches (in-memory backend), plus the kernel's per-vector `request_irq` inside
//! SET_IRQS. A clean run of each phase is counted first; `matrix_covers_every_operation`
//! checks that the tests below name exactly one failure point per counted operation, and that
//! the counts are the ones the design promises.
//!
//! After each failing run the test asserts:
//! * no leak: every attached irqfd belongs to a vector whose route is installed at that GSI,
//!   every installed GSI belongs to such a vector, the router's GSI count matches, and the
//!   router and the backend agree on the table;
//! * consistency: for every vector, what the device's trigger points at is what the VMM's
//!   cache says, a vector the guest masked points at its userspace eventfd, and a vector the
//!   guest unmasked is delivered with the guest's message (through KVM or through userspace),
//!   or is latched pending by the device when the index could not be enabled at all;
//! * a retry succeeds: with the fault cleared, the guest (or the VMM, for restore) does the
//!   same thing again and every unmasked vector ends up on its KVM route, delivering, with
//!   nothing leaked.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use irq_routing::{MemoryOp, MsiMessage, RouteState};
use vfio_core::sim::{MsixPlacement, RaiseOutcome, SimDevice};
use vmm_glue::scripted_guest::{self, CAP_ID_MSI, CAP_ID_MSIX};
use vmm_glue::{restore_all, IrqMode, PassthroughDevice, Strategy};

mod common;

use common::{fresh_devices, msix_sim, placed_device, programmed_states, vm, Vm};

/// Vectors of the MSI-X devices.
const MSIX_VECTORS: [u16; 2] = [4, 3];
/// MSI vectors (multiple message enable = 2: four vectors; `common::msix_sim` devices have
/// four).
const MSI_VECTORS: u32 = 4;
const ERRNO: i32 = libc::EIO;

/// What a clean run of a phase issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    SetIrqs,
    Commit,
    Attach,
    Detach,
}

const OPS: [Op; 4] = [Op::SetIrqs, Op::Commit, Op::Attach, Op::Detach];

/// Where the fault goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// The k-th operation of this kind in the phase (1 = first).
    Nth(Op, u64),
    /// The kernel's `request_irq` of this vector (of the first device) fails.
    RequestIrq(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// The guest enables MSI-X on one device and unmasks every vector.
    MsixEnable,
    /// The guest enables MSI (four vectors) on one device.
    MsiEnable,
    /// The VMM restores two MSI-X devices with one VM-wide batch.
    Restore,
}

/// One phase's world: the VM, its devices and their simulated hardware.
struct World {
    vm: Vm,
    sims: Vec<Arc<SimDevice>>,
    devs: Vec<PassthroughDevice>,
    /// For `Restore`: the saved states.
    states: Vec<migration_state::DeviceState>,
}

/// Builds the world up to the start of `phase`.
fn prepare(phase: Phase) -> World {
    match phase {
        Phase::MsixEnable | Phase::MsiEnable => {
            let vm = vm();
            let s = msix_sim(MSIX_VECTORS[0]);
            let d = placed_device(&vm, s.clone(), 0);
            World {
                vm,
                sims: vec![s],
                devs: vec![d],
                states: Vec::new(),
            }
        }
        Phase::Restore => {
            // Source VM: program both devices, save them; destination VM: fresh devices,
            // nothing enabled yet.
            let states = programmed_states(&MSIX_VECTORS);
            let (vm, sims, devs) = fresh_devices(&MSIX_VECTORS);
            World {
                vm,
                sims,
                devs,
                states,
            }
        }
    }
}

/// Enables MSI on `dev` (device 0's message, all four vectors unmasked) the way a guest
/// driver does: message address and data first, then Multiple Message Enable and MSI Enable
/// in one control write.
fn guest_enable_msi(dev: &mut PassthroughDevice) {
    scripted_guest::program_msi(dev, 0, 2, 0).expect("MSI capability");
}

fn guest_disable_msi(dev: &mut PassthroughDevice) {
    let cap = scripted_guest::find_capability(dev, CAP_ID_MSI).expect("MSI capability");
    let ctrl = scripted_guest::config_read_u16(dev, cap + 2);
    dev.config_write(cap + 2, &(ctrl & !1).to_le_bytes());
}

fn msix_cap(dev: &PassthroughDevice) -> u16 {
    scripted_guest::find_capability(dev, CAP_ID_MSIX).expect("MSI-X capability")
}

/// Runs the phase's action once. Returns the restore error, if any (guest writes cannot fail).
fn act(phase: Phase, w: &mut World) -> Option<vmm_glue::Error> {
    match phase {
        Phase::MsixEnable => {
            scripted_guest::program_msix(&mut w.devs[0], 0, |_| true).unwrap();
            None
        }
        Phase::MsiEnable => {
            guest_enable_msi(&mut w.devs[0]);
            None
        }
        Phase::Restore => {
            let pairs = w.devs.iter_mut().zip(w.states.iter());
            restore_all(&w.vm.router, pairs, Strategy::VmWide).err()
        }
    }
}

/// The retry after a failure, with the fault cleared.
fn retry(phase: Phase, w: &mut World) {
    match phase {
        Phase::MsixEnable => {
            let dev = &mut w.devs[0];
            let cap = msix_cap(dev);
            dev.config_write(cap + 2, &0u16.to_le_bytes());
            scripted_guest::program_msix(dev, 0, |_| true).unwrap();
        }
        Phase::MsiEnable => {
            guest_disable_msi(&mut w.devs[0]);
            guest_enable_msi(&mut w.devs[0]);
        }
        Phase::Restore => {
            if let Some(e) = act(phase, w) {
                panic!("restore retry failed: {e:?}");
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    set_irqs: u64,
    request_irq: u64,
    commit: u64,
    attach: u64,
    detach: u64,
}

fn counts(w: &World) -> Counts {
    let mut c = Counts {
        commit: w.vm.backend().count(MemoryOp::Commit),
        attach: w.vm.backend().count(MemoryOp::AttachIrqfd),
        detach: w.vm.backend().count(MemoryOp::DetachIrqfd),
        ..Counts::default()
    };
    for s in &w.sims {
        let sc = s.counters();
        c.set_irqs += sc.set_irqs;
        c.request_irq += sc.request_irq;
    }
    c
}

impl Counts {
    fn minus(self, o: Counts) -> Counts {
        Counts {
            set_irqs: self.set_irqs - o.set_irqs,
            request_irq: self.request_irq - o.request_irq,
            commit: self.commit - o.commit,
            attach: self.attach - o.attach,
            detach: self.detach - o.detach,
        }
    }

    fn of(&self, op: Op) -> u64 {
        match op {
            Op::SetIrqs => self.set_irqs,
            Op::Commit => self.commit,
            Op::Attach => self.attach,
            Op::Detach => self.detach,
        }
    }
}

/// What a clean run of `phase` issues.
fn clean_counts(phase: Phase) -> Counts {
    let mut w = prepare(phase);
    let before = counts(&w);
    assert!(act(phase, &mut w).is_none(), "clean {phase:?} failed");
    let c = counts(&w).minus(before);
    check_healthy(phase, &w, &format!("clean {phase:?}"));
    c
}

/// Arms `fault` on the world (the set_irqs fault goes to the device that issues the k-th call
/// of the phase; the clean run tells which one).
fn arm(w: &World, fault: Fault) {
    match fault {
        Fault::Nth(Op::SetIrqs, k) => {
            // SET_IRQS calls are counted per device: find the device and its local index.
            // Devices are driven in order, so the first device's calls come first.
            let mut k = k;
            for (i, per_dev) in clean_set_irqs_per_device(w).iter().enumerate() {
                if k <= *per_dev {
                    w.sims[i].fail_nth_set_irqs(k, ERRNO);
                    return;
                }
                k -= per_dev;
            }
            panic!("no SET_IRQS call {k} in this phase");
        }
        Fault::Nth(Op::Commit, k) => w.vm.backend().fail_nth(MemoryOp::Commit, k, ERRNO),
        Fault::Nth(Op::Attach, k) => w.vm.backend().fail_nth(MemoryOp::AttachIrqfd, k, ERRNO),
        Fault::Nth(Op::Detach, k) => w.vm.backend().fail_nth(MemoryOp::DetachIrqfd, k, ERRNO),
        Fault::RequestIrq(v) => w.sims[0].fail_request_irq(v, ERRNO),
    }
}

/// SET_IRQS calls per device in a clean run of the world's phase (one entry per device).
fn clean_set_irqs_per_device(w: &World) -> Vec<u64> {
    let phase = if w.states.is_empty() {
        // MSI or MSI-X enable: a single device; the split does not matter.
        return vec![u64::MAX];
    } else {
        Phase::Restore
    };
    let mut clean = prepare(phase);
    let before: Vec<u64> = clean.sims.iter().map(|s| s.counters().set_irqs).collect();
    assert!(act(phase, &mut clean).is_none());
    clean
        .sims
        .iter()
        .zip(before)
        .map(|(s, b)| s.counters().set_irqs - b)
        .collect()
}

/// No GSI or irqfd leaked, and the router and backend agree.
///
/// With `strict` false (right after a failure), the backend's table may still hold entries
/// the router already released after a failed irqfd attach: the router drops such a route
/// from its table at once, but KVM's table keeps the stale entry until the next commit. Such
/// an entry must sit at a GSI no route holds (free for reuse, no irqfd attached).
fn check_no_leak(w: &World, ctx: &str, strict: bool) {
    let in_force = w.vm.router.committed_table();
    let mut table = w.vm.backend().table();
    if strict {
        assert_eq!(
            table, in_force,
            "{ctx}: router and backend disagree on the table"
        );
    } else {
        for e in &in_force {
            assert!(
                table.contains(e),
                "{ctx}: router believes {e:?} is in force, the backend does not have it"
            );
        }
        table.retain(|e| in_force.contains(e));
    }
    let snapshot = w.vm.router.snapshot();
    // Every route installed at a GSI, by GSI.
    let mut routed: BTreeMap<u32, (irq_routing::RouteId, MsiMessage)> = BTreeMap::new();
    for (id, view) in snapshot.iter() {
        if let RouteState::Routed { gsi } = view.state {
            assert!(
                view.irqfd_attached,
                "{ctx}: route at GSI {gsi} has no irqfd attached"
            );
            assert!(
                routed.insert(gsi, (id, view.msi)).is_none(),
                "{ctx}: GSI {gsi} held by two routes"
            );
        }
    }
    let attached: BTreeMap<u32, i32> =
        w.vm.backend()
            .attached_irqfds()
            .into_iter()
            .map(|(fd, gsi)| (gsi, fd))
            .collect();
    assert_eq!(
        attached.len(),
        w.vm.backend().attached_irqfds().len(),
        "{ctx}: two irqfds on one GSI"
    );
    assert_eq!(
        attached.keys().collect::<Vec<_>>(),
        routed.keys().collect::<Vec<_>>(),
        "{ctx}: attached irqfds and installed routes differ"
    );
    assert_eq!(
        table.iter().map(|e| (e.gsi, e.msi)).collect::<Vec<_>>(),
        routed
            .iter()
            .map(|(g, (_, m))| (*g, *m))
            .collect::<Vec<_>>(),
        "{ctx}: committed table and installed routes differ"
    );
    assert_eq!(
        w.vm.router.gsis_in_use() as usize,
        routed.len(),
        "{ctx}: GSIs reserved without an installed route"
    );
    // MSI-X: every route belongs to one vector, and its irqfd is the one attached.
    if w.devs.iter().all(|d| d.irq_mode() == IrqMode::Msix) {
        let mut owners = BTreeMap::new();
        for (i, d) in w.devs.iter().enumerate() {
            for v in 0..d.msix_table().map_or(0, |t| t.vector_count()) {
                let Some(id) = d.msix_route(v) else { continue };
                assert!(
                    owners.insert(id, (i, v)).is_none(),
                    "{ctx}: one route for two vectors"
                );
                if let Some(RouteState::Routed { gsi }) = w.vm.router.route_state(id) {
                    assert_eq!(
                        attached.get(&gsi).copied(),
                        d.msix_irqfd(v).map(AsRawFd::as_raw_fd),
                        "{ctx}: device {i} vector {v}: another fd is attached at its GSI {gsi}"
                    );
                }
            }
        }
        for (id, view) in snapshot.iter() {
            assert!(
                owners.contains_key(&id),
                "{ctx}: route {id:?} ({:?}) belongs to no vector",
                view.state
            );
        }
    } else {
        assert!(
            snapshot.len() <= MSI_VECTORS as usize,
            "{ctx}: more routes than MSI vectors"
        );
    }
}

/// How many vectors of the current mode are on their KVM route.
fn routed_vectors(w: &World) -> usize {
    w.vm.router
        .snapshot()
        .iter()
        .filter(|(_, v)| matches!(v.state, RouteState::Routed { .. }))
        .count()
}

/// What the guest sees and what is routed agree, vector by vector, and every unmasked vector
/// is delivered with the guest's message (or latched when the index is not enabled).
fn check_consistent(w: &mut World, ctx: &str) {
    for (i, d) in w.devs.iter_mut().enumerate() {
        let sim = &w.sims[i];
        if d.irq_mode() != IrqMode::Msix {
            continue;
        }
        let table = d.msix_table().expect("MSI-X table").clone();
        for v in 0..table.vector_count() {
            let dev_trigger = sim.msix_trigger(u32::from(v));
            // After a failed SET_IRQS the cache forgets every vector (reads as None), which
            // makes the next sync rebind them all; otherwise it must know the truth.
            let cached = d.msix_trigger(v);
            assert!(
                cached.is_none() || cached == dev_trigger,
                "{ctx}: device {i} vector {v}: VMM trigger cache says {cached:?}, the device has {dev_trigger:?}"
            );
            let user = d.msix_user_eventfd(v).map(AsRawFd::as_raw_fd);
            let kvm = d.msix_irqfd(v).map(AsRawFd::as_raw_fd);
            if table.is_masked(v) {
                assert!(
                    dev_trigger.is_none() || dev_trigger == user,
                    "{ctx}: device {i} masked vector {v} triggers {dev_trigger:?}, not its userspace eventfd"
                );
                continue;
            }
            let e = table.entry(v).copied().unwrap();
            let guest_msg = MsiMessage::new(e.address(), e.data);
            // Drain, raise, see where it went.
            if let Some(fd) = d.msix_irqfd(v) {
                let _ = fd.read();
            }
            match sim.raise(u32::from(v)) {
                RaiseOutcome::Signalled(fd) if Some(fd) == kvm => {
                    let id = d.msix_route(v).expect("irqfd trigger without route");
                    let st = w.vm.router.route_state(id);
                    assert!(
                        matches!(st, Some(RouteState::Routed { .. })),
                        "{ctx}: device {i} vector {v} triggers its irqfd but its route is {st:?}"
                    );
                    let msi = w.vm.router.route(id).unwrap().msi;
                    assert_eq!(
                        (msi.address, msi.data),
                        (guest_msg.address, guest_msg.data),
                        "{ctx}: device {i} vector {v}: KVM would inject a message the guest did not program"
                    );
                    assert_eq!(d.msix_irqfd(v).unwrap().read().ok(), Some(1));
                }
                RaiseOutcome::Signalled(fd) if Some(fd) == user => {
                    assert!(
                        d.poll_userspace_interrupts() >= 1,
                        "{ctx}: userspace vector {v} not polled"
                    );
                    let msgs = d.take_userspace_messages();
                    // Either the VMM injects the message itself, or (the vector has a KVM
                    // route but its trigger could not be moved) it kicks the irqfd.
                    let kicked = d.msix_irqfd(v).and_then(|fd| fd.read().ok()) == Some(1);
                    let routed_msg = d
                        .msix_route(v)
                        .filter(|id| {
                            matches!(
                                w.vm.router.route_state(*id),
                                Some(RouteState::Routed { .. })
                            )
                        })
                        .and_then(|id| w.vm.router.route(id))
                        .map(|r| (r.msi.address, r.msi.data));
                    let want = (guest_msg.address, guest_msg.data);
                    assert!(
                        msgs.iter().any(|m| (m.address, m.data) == want)
                            || (kicked && routed_msg == Some(want)),
                        "{ctx}: device {i} vector {v}: userspace delivered {msgs:?}, kicked {kicked}, route {routed_msg:?}; the guest programmed {want:?}"
                    );
                }
                RaiseOutcome::Latched => {
                    assert_eq!(
                        dev_trigger, None,
                        "{ctx}: device {i} vector {v} latched though a trigger is bound"
                    );
                    assert!(sim.is_pending(u32::from(v)));
                }
                // A device whose MSI-X index is disabled (the failed enable was undone) sends
                // no MSI-X message at all.
                RaiseOutcome::Dropped => {
                    assert_ne!(
                        sim.active_irq_index(),
                        Some(vfio_core::info::MSIX_IRQ_INDEX),
                        "{ctx}: device {i} vector {v} dropped with MSI-X enabled"
                    );
                    assert_eq!(dev_trigger, None);
                }
                other => panic!("{ctx}: device {i} vector {v}: raise went to {other:?}"),
            }
        }
    }
}

/// After a clean run or a retry: every unmasked vector on its KVM route, nothing leaked.
fn check_healthy(phase: Phase, w: &World, ctx: &str) {
    check_no_leak(w, ctx, true);
    let want = match phase {
        Phase::MsiEnable => IrqMode::Msi,
        _ => IrqMode::Msix,
    };
    for (i, d) in w.devs.iter().enumerate() {
        assert_eq!(d.irq_mode(), want, "{ctx}: device {i} mode");
        if want != IrqMode::Msix {
            continue;
        }
        for v in 0..d.msix_table().map_or(0, |t| t.vector_count()) {
            let st = d.msix_route(v).and_then(|id| w.vm.router.route_state(id));
            assert!(
                matches!(st, Some(RouteState::Routed { .. })),
                "{ctx}: device {i} vector {v} not on its KVM route: {st:?}"
            );
            assert_eq!(
                w.sims[i].msix_trigger(u32::from(v)),
                d.msix_irqfd(v).map(AsRawFd::as_raw_fd),
                "{ctx}: device {i} vector {v} trigger is not its irqfd"
            );
        }
    }
    let expected: usize = match phase {
        Phase::MsiEnable => MSI_VECTORS as usize,
        Phase::MsixEnable => usize::from(MSIX_VECTORS[0]),
        Phase::Restore => MSIX_VECTORS.iter().map(|n| usize::from(*n)).sum(),
    };
    assert_eq!(routed_vectors(w), expected, "{ctx}: vectors on a KVM route");
    assert_eq!(
        w.vm.backend().attached_irqfds().len(),
        expected,
        "{ctx}: attached irqfds"
    );
}

/// One failure point: fail, check, retry, check.
fn run_point(phase: Phase, fault: Fault) {
    let ctx = format!("{phase:?} with {fault:?} failing");
    let clean = clean_counts(phase);
    if let Fault::Nth(op, k) = fault {
        assert!(
            k >= 1 && k <= clean.of(op),
            "{ctx}: a clean run issues only {} {op:?}",
            clean.of(op)
        );
    }
    let mut w = prepare(phase);
    let before = counts(&w);
    arm(&w, fault);
    let err = act(phase, &mut w);
    let during = counts(&w).minus(before);
    // The fault fired: the failing run reached the armed operation.
    match fault {
        Fault::Nth(Op::SetIrqs, _) => {
            let failed: u64 = w.sims.iter().map(|s| s.counters().set_irqs_failed).sum();
            assert_eq!(failed, 1, "{ctx}: SET_IRQS failures");
        }
        Fault::Nth(Op::Commit, _) => assert_eq!(
            w.vm.router.stats().failed_commits,
            1,
            "{ctx}: failed commits"
        ),
        Fault::Nth(Op::Attach, _) => assert_eq!(
            w.vm.router.stats().failed_irqfd_attaches,
            1,
            "{ctx}: failed attaches"
        ),
        Fault::Nth(op, k) => assert!(during.of(op) >= k, "{ctx}: {op:?} count {during:?}"),
        Fault::RequestIrq(_) => {
            let failed: u64 = w.sims.iter().map(|s| s.counters().set_irqs_failed).sum();
            assert!(failed >= 1, "{ctx}: no SET_IRQS failed");
        }
    }
    if let Some(e) = &err {
        assert_eq!(phase, Phase::Restore, "{ctx}: unexpected error {e:?}");
    }
    check_no_leak(&w, &format!("{ctx}, after the failure"), false);
    check_consistent(&mut w, &format!("{ctx}, after the failure"));

    for s in &w.sims {
        s.clear_faults();
    }
    retry(phase, &mut w);
    let rctx = format!("{ctx}, after the retry");
    check_healthy(phase, &w, &rctx);
    // Vectors latched while nothing was bound were delivered when the retry bound them.
    for (i, s) in w.sims.iter().enumerate() {
        for v in 0..w.devs[i].msix_table().map_or(0, |t| t.vector_count()) {
            assert!(
                !s.is_pending(u32::from(v)),
                "{rctx}: device {i} vector {v} still latched"
            );
        }
    }
    check_consistent(&mut w, &rctx);
}

/// The failure points, one test each.
macro_rules! fault_matrix {
    ($( $(#[$attr:meta])* $name:ident: $phase:ident, $fault:expr; )*) => {
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                run_point(Phase::$phase, $fault);
            }
        )*

        /// Every failure point the tests name, for the completeness check.
        fn declared_points() -> Vec<(Phase, Fault)> {
            vec![$( (Phase::$phase, $fault) ),*]
        }
    };
}

use Fault::{Nth, RequestIrq};
use Op::{Attach, Commit, SetIrqs};

fault_matrix! {
    // MSI-X enable, 4 vectors: one SET_IRQS enables the index (all vectors masked, on their
    // userspace eventfds); then each unmask routes the vector (one commit), attaches its
    // irqfd and moves its trigger (one per-vector SET_IRQS).
    msix_enable_set_irqs_1: MsixEnable, Nth(SetIrqs, 1);
    msix_enable_set_irqs_2: MsixEnable, Nth(SetIrqs, 2);
    msix_enable_set_irqs_3: MsixEnable, Nth(SetIrqs, 3);
    msix_enable_set_irqs_4: MsixEnable, Nth(SetIrqs, 4);
    msix_enable_set_irqs_5: MsixEnable, Nth(SetIrqs, 5);
    msix_enable_commit_1: MsixEnable, Nth(Commit, 1);
    msix_enable_commit_2: MsixEnable, Nth(Commit, 2);
    msix_enable_commit_3: MsixEnable, Nth(Commit, 3);
    msix_enable_commit_4: MsixEnable, Nth(Commit, 4);
    msix_enable_attach_1: MsixEnable, Nth(Attach, 1);
    msix_enable_attach_2: MsixEnable, Nth(Attach, 2);
    msix_enable_attach_3: MsixEnable, Nth(Attach, 3);
    msix_enable_attach_4: MsixEnable, Nth(Attach, 4);
    msix_enable_request_irq_0: MsixEnable, RequestIrq(0);
    msix_enable_request_irq_1: MsixEnable, RequestIrq(1);
    msix_enable_request_irq_2: MsixEnable, RequestIrq(2);
    msix_enable_request_irq_3: MsixEnable, RequestIrq(3);
    // MSI enable, 4 vectors: one batch (one commit), four irqfds, one SET_IRQS.
    msi_enable_set_irqs_1: MsiEnable, Nth(SetIrqs, 1);
    msi_enable_commit_1: MsiEnable, Nth(Commit, 1);
    msi_enable_attach_1: MsiEnable, Nth(Attach, 1);
    msi_enable_attach_2: MsiEnable, Nth(Attach, 2);
    msi_enable_attach_3: MsiEnable, Nth(Attach, 3);
    msi_enable_attach_4: MsiEnable, Nth(Attach, 4);
    // Restore of two MSI-X devices (4 + 3 vectors), VM-wide: one commit, seven irqfds, one
    // SET_IRQS per device.
    restore_set_irqs_1: Restore, Nth(SetIrqs, 1);
    restore_set_irqs_2: Restore, Nth(SetIrqs, 2);
    restore_commit_1: Restore, Nth(Commit, 1);
    restore_attach_1: Restore, Nth(Attach, 1);
    restore_attach_2: Restore, Nth(Attach, 2);
    restore_attach_3: Restore, Nth(Attach, 3);
    restore_attach_4: Restore, Nth(Attach, 4);
    restore_attach_5: Restore, Nth(Attach, 5);
    restore_attach_6: Restore, Nth(Attach, 6);
    restore_attach_7: Restore, Nth(Attach, 7);
    restore_request_irq_0: Restore, RequestIrq(0);
    restore_request_irq_3: Restore, RequestIrq(3);
}

/// The matrix names exactly one test per operation a clean run issues, and the clean runs
/// issue what the design promises.
#[test]
fn matrix_covers_every_operation() {
    let n = u64::from(MSIX_VECTORS[0]);
    let total: u64 = MSIX_VECTORS.iter().map(|v| u64::from(*v)).sum();
    let expected = [
        (
            Phase::MsixEnable,
            // One enabling SET_IRQS, then per unmasked vector: a commit, an attach, a
            // per-vector SET_IRQS.
            Counts {
                set_irqs: 1 + n,
                commit: n,
                attach: n,
                ..Counts::default()
            },
        ),
        (
            Phase::MsiEnable,
            Counts {
                set_irqs: 1,
                commit: 1,
                attach: u64::from(MSI_VECTORS),
                ..Counts::default()
            },
        ),
        (
            Phase::Restore,
            Counts {
                set_irqs: MSIX_VECTORS.len() as u64,
                commit: 1,
                attach: total,
                ..Counts::default()
            },
        ),
    ];
    let declared = declared_points();
    for (phase, want) in expected {
        let got = clean_counts(phase);
        for op in OPS {
            assert_eq!(got.of(op), want.of(op), "{phase:?}: clean {op:?} count");
            let named: Vec<u64> = declared
                .iter()
                .filter_map(|(p, f)| match f {
                    Nth(o, k) if *p == phase && *o == op => Some(*k),
                    _ => None,
                })
                .collect();
            let all: Vec<u64> = (1..=got.of(op)).collect();
            assert_eq!(named, all, "{phase:?}: failure points named for {op:?}");
        }
        // request_irq happens inside SET_IRQS once per bound vector.
        assert!(got.request_irq >= 1, "{phase:?}: no request_irq counted");
    }
}

/// Programs every MSI-X vector of `dev` unmasked while the function is masked, then clears the
/// function mask: the device routes all its vectors in one batch.
fn program_msix_all_at_once(dev: &mut PassthroughDevice, device: usize) -> u16 {
    use vm_device::bus::MmioAddress;
    use vm_device::MutDeviceMmio;

    let cap = msix_cap(dev);
    let ctrl = scripted_guest::config_read_u16(dev, cap + 2);
    let vectors = (ctrl & 0x7ff) + 1;
    let table = scripted_guest::config_read_u32(dev, cap + 4);
    let bir = u16::try_from(table & 7).unwrap();
    let lo = scripted_guest::config_read_u32(dev, 0x10 + 4 * bir);
    let hi = scripted_guest::config_read_u32(dev, 0x14 + 4 * bir);
    let bar = (u64::from(hi) << 32) | u64::from(lo & !0xf);
    let base = u64::from(table & !7);
    dev.config_write(cap + 2, &0xc000u16.to_le_bytes()); // enable + function mask
    for v in 0..vectors {
        let (addr, data) = scripted_guest::message_for(device, v);
        let entry = base + 16 * u64::from(v);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&addr.to_le_bytes());
        bytes[8..12].copy_from_slice(&data.to_le_bytes());
        // Vector Control 0: unmasked.
        dev.mmio_write(MmioAddress(bar), entry, &bytes[..8]);
        dev.mmio_write(MmioAddress(bar), entry + 8, &bytes[8..]);
    }
    dev.config_write(cap + 2, &0x8000u16.to_le_bytes()); // clear the function mask
    vectors
}

/// More vectors than KVM has routes, on a real VM: the vectors past the limit get the
/// userspace path, and the routes committed earlier keep delivering through KVM.
#[test]
fn kvm_route_limit_over_4096_vectors() {
    let Some(w_vm) = common::vm_on(irq_routing::testing::TestBackend::Kvm) else {
        return;
    };
    let router = w_vm.router.clone();
    let limit = router.route_limit() as usize;

    let sizes = [2048u16, 2048, 512];
    let total: usize = sizes.iter().map(|n| usize::from(*n)).sum();
    assert!(
        total > 4096 && limit < total,
        "limit {limit} is not below {total} vectors"
    );
    let mut devs = Vec::new();
    let mut sims = Vec::new();
    for (i, n) in sizes.iter().enumerate() {
        let s = Arc::new(
            SimDevice::builder(0x8086, 0x1520)
                .bar(0, pci_config::BarKind::Mem64, 0x10000, false)
                .msix(MsixPlacement::in_bar(*n, 0))
                .build()
                .unwrap(),
        );
        let mut d = placed_device(&w_vm, s.clone(), i as u32);
        let commits_before = router.stats().commits;
        assert_eq!(program_msix_all_at_once(&mut d, i), *n);
        let commits = router.stats().commits - commits_before;
        // One commit for all its vectors; none once no GSI is left to give.
        assert!(commits <= 1, "device {i}: {commits} commits");
        if i == 0 {
            assert_eq!(commits, 1, "device 0: one commit for all its vectors");
        }
        devs.push(d);
        sims.push(s);
    }

    // Exactly `limit` vectors hold a GSI; every other unmasked vector is on the userspace path.
    let mut kvm_vectors = Vec::new();
    let mut user_vectors = Vec::new();
    for (i, d) in devs.iter().enumerate() {
        for v in 0..sizes[i] {
            let st = d.msix_route(v).and_then(|id| router.route_state(id));
            match st {
                Some(RouteState::Routed { .. }) => kvm_vectors.push((i, v)),
                _ => user_vectors.push((i, v)),
            }
        }
    }
    assert_eq!(kvm_vectors.len(), limit, "vectors on a KVM route");
    assert_eq!(
        user_vectors.len(),
        total - limit,
        "vectors on the userspace path"
    );
    assert_eq!(router.gsis_in_use() as usize, limit, "GSIs in use");
    // Each vector over the limit got a typed error from the router, counted by its device.
    let failures: u64 = devs.iter().map(|d| d.stats().route_failures).sum();
    assert_eq!(failures as usize, total - limit, "route failures");
    assert_eq!(
        router.committed_table().len(),
        limit,
        "committed table size"
    );
    // The first two devices fit whole only if the limit allows; the earliest vectors always
    // got their routes first.
    assert!(kvm_vectors.contains(&(0, 0)) && kvm_vectors.contains(&(0, 2047)));

    // Earlier routes keep delivering through KVM: the device signals the irqfd and KVM
    // consumes it (an irqfd KVM holds is read by the kernel, so it reads back empty) and injects
    // the guest's message (its vector pending in the destination's APIC, where KVM shows it).
    for &(i, v) in [
        kvm_vectors[0],
        kvm_vectors[kvm_vectors.len() / 2],
        kvm_vectors[limit - 1],
    ]
    .iter()
    {
        let d = &devs[i];
        assert_eq!(
            sims[i].msix_trigger(u32::from(v)),
            d.msix_irqfd(v).map(AsRawFd::as_raw_fd),
            "device {i} vector {v} trigger"
        );
        match sims[i].raise(u32::from(v)) {
            RaiseOutcome::Signalled(fd) => {
                assert_eq!(Some(fd), d.msix_irqfd(v).map(AsRawFd::as_raw_fd))
            }
            other => panic!("device {i} vector {v}: {other:?}"),
        }
        assert!(
            w_vm.received(d, i, v),
            "device {i} vector {v}: KVM did not take the irqfd signal"
        );
    }
    // Vectors over the limit are delivered by the VMM with the guest's message.
    for &(i, v) in [user_vectors[0], user_vectors[user_vectors.len() - 1]].iter() {
        let d = &mut devs[i];
        assert_eq!(
            sims[i].msix_trigger(u32::from(v)),
            d.msix_user_eventfd(v).map(AsRawFd::as_raw_fd),
            "device {i} vector {v} over the limit: trigger"
        );
        assert!(matches!(
            sims[i].raise(u32::from(v)),
            RaiseOutcome::Signalled(_)
        ));
        assert_eq!(d.poll_userspace_interrupts(), 1);
        let (addr, data) = scripted_guest::message_for(i, v);
        let msgs = d.take_userspace_messages();
        assert!(
            msgs.iter().any(|m| m.address == addr && m.data == data),
            "device {i} vector {v}: {msgs:?}"
        );
    }
}
