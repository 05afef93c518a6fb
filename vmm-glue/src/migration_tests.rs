// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every path that ends a route batch leaves each vector's trigger where its route's final
//! state says, success or error: a refused commit (VM-wide restore, staged switchover, a
//! batch held by the VMM, a device's own batch on a guest write) moves the undone vectors to
//! their userspace eventfds and delivers what the device had already signalled to their
//! irqfds.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use irq_routing::{MemoryOp, RouteState, UserspaceReason};
use migration_state::DeviceState;
use vfio_core::info::CONFIG_REGION_INDEX;
use vfio_core::sim::{RaiseOutcome, SimDevice};
use vfio_core::VfioDevice;
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;

use crate::{
    restore_all, scripted_guest, Error, IrqMode, PassthroughDevice, StagedRestore, Strategy,
};

// The integration tests' rig, shared (it names this crate `vmm_glue`, see lib.rs).
#[path = "../tests/common/mod.rs"]
mod common;

use common::{msix_sim, placed_device, vm, Vm};
use irq_routing::testing::TestBackend;
use irq_routing::MsiMessage;

irq_routing::both_backends!(
    restore_all_inside_a_vmm_batch_defers_commit_and_reconciliation,
    switchover_leaves_the_commit_for_later_and_delivers_changed_vectors_through_userspace,
    switchover_and_deferred_commit_cost_nothing_when_nothing_changed,
    dropped_deferred_commit_commits_and_keeps_the_current_message,
    switchover_with_a_bad_state_changes_nothing_and_ends_the_batch,
);

const VECTORS: [u16; 2] = [4, 3];
const EIO: i32 = libc::EIO;

/// A simulated device whose config writes can be made to fail (EIO).
#[derive(Debug)]
struct FlakyConfig {
    sim: Arc<SimDevice>,
    fail_writes: AtomicBool,
}

impl AsFd for FlakyConfig {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sim.as_fd()
    }
}

impl VfioDevice for FlakyConfig {
    fn info(&self) -> &vfio_core::DeviceInfo {
        self.sim.info()
    }
    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> vfio_core::Result<()> {
        self.sim.region_read(index, offset, buf)
    }
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> vfio_core::Result<()> {
        if index == CONFIG_REGION_INDEX && self.fail_writes.load(Ordering::SeqCst) {
            return Err(vfio_core::Error::RegionWrite {
                index,
                offset,
                len: data.len(),
                source: std::io::Error::from_raw_os_error(EIO),
            });
        }
        self.sim.region_write(index, offset, data)
    }
    fn set_irqs(&self, set: &vfio_core::IrqSet) -> vfio_core::Result<()> {
        self.sim.set_irqs(set)
    }
    fn reset(&self) -> vfio_core::Result<()> {
        self.sim.reset()
    }
}

fn device(vm: &Vm, sim: &Arc<SimDevice>, id: u32) -> PassthroughDevice {
    placed_device(vm, sim.clone(), id)
}

/// Saved states of devices whose guest programmed and unmasked every MSI-X vector.
fn source_states() -> Vec<DeviceState> {
    common::programmed_states(&VECTORS)
}

/// A destination VM with fresh devices.
fn destination() -> (Vm, Vec<Arc<SimDevice>>, Vec<PassthroughDevice>) {
    common::fresh_devices(&VECTORS)
}

/// [`destination`] on `backend` (`None`: KVM unusable, skipped).
fn destination_on(
    backend: TestBackend,
) -> Option<(Vm, Vec<Arc<SimDevice>>, Vec<PassthroughDevice>)> {
    common::fresh_devices_on(backend, &VECTORS)
}

fn message((address, data): (u64, u32)) -> MsiMessage {
    MsiMessage::new(address, data)
}

fn fd(e: Option<&vmm_sys_util::eventfd::EventFd>) -> Option<RawFd> {
    e.map(AsRawFd::as_raw_fd)
}

fn route_state(vm: &Vm, d: &PassthroughDevice, v: u16) -> Option<RouteState> {
    d.msix_route(v).and_then(|id| vm.router.route_state(id))
}

/// Every vector of every device: routed ones trigger their irqfd, the others their
/// userspace eventfd, on the device and in the cache alike. Returns how many are routed.
fn assert_triggers_follow_routes(
    vm: &Vm,
    sims: &[Arc<SimDevice>],
    devs: &[PassthroughDevice],
) -> usize {
    let mut routed = 0;
    for (i, d) in devs.iter().enumerate() {
        for v in 0..VECTORS[i] {
            let want = match route_state(vm, d, v) {
                Some(RouteState::Routed { .. }) => {
                    routed += 1;
                    fd(d.msix_irqfd(v))
                }
                _ => fd(d.msix_user_eventfd(v)),
            };
            assert_eq!(
                sims[i].msix_trigger(u32::from(v)),
                want,
                "device {i} vector {v}"
            );
            assert_eq!(d.msix_trigger(v), want, "device {i} vector {v}: cache");
        }
    }
    routed
}

/// The device fires `v`; it must reach the VMM as the guest's message through userspace.
fn assert_userspace_delivery(sim: &SimDevice, d: &mut PassthroughDevice, v: u16, want: (u64, u32)) {
    assert!(
        matches!(sim.raise(u32::from(v)), RaiseOutcome::Signalled(f) if Some(f) == fd(d.msix_user_eventfd(v)))
    );
    assert_eq!(d.poll_userspace_interrupts(), 1);
    let msgs: Vec<_> = d
        .take_userspace_messages()
        .iter()
        .map(|m| (m.address, m.data))
        .collect();
    assert_eq!(msgs, vec![want], "vector {v}");
}

#[test]
fn restore_all_refused_commit_reconciles_before_returning() {
    let mut states = source_states();
    // Vector 1 of device 0 fired while masked on the source: its PBA bit travels with the
    // state, and the restore delivers it once (to its irqfd, the route being staged).
    states[0].msix.as_mut().unwrap().pba[0] |= 1 << 1;
    let (vm, sims, mut devs) = destination();
    vm.backend().fail_nth(MemoryOp::Commit, 1, EIO);
    let err = restore_all(&vm.router, devs.iter_mut().zip(&states), Strategy::VmWide).unwrap_err();
    assert!(matches!(err, Error::Route(_)), "{err:?}");
    assert_eq!(vm.router.stats().failed_commits, 1);

    // Every route was undone by the router; every trigger followed.
    for (i, d) in devs.iter().enumerate() {
        assert_eq!(d.irq_mode(), IrqMode::Msix);
        for v in 0..VECTORS[i] {
            assert_eq!(
                route_state(&vm, d, v),
                Some(RouteState::Userspace(UserspaceReason::CommitFailed(EIO)))
            );
        }
    }
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), 0);
    assert_eq!(vm.router.gsis_in_use(), 0);
    assert!(vm.backend().attached_irqfds().is_empty());
    // The pending interrupt kicked into the dead irqfd was delivered through userspace.
    assert_eq!(devs[0].stats().stranded_signals, 1);
    let (a, d) = scripted_guest::message_for(0, 1);
    let msgs: Vec<_> = devs[0]
        .take_userspace_messages()
        .iter()
        .map(|m| (m.address, m.data))
        .collect();
    assert_eq!(msgs, vec![(a, d)]);
    assert_eq!(
        devs[0].msix_irqfd(1).unwrap().read().ok(),
        None,
        "irqfd drained"
    );
    // Interrupts keep flowing through the VMM.
    for (i, (s, d)) in sims.iter().zip(devs.iter_mut()).enumerate() {
        assert_userspace_delivery(s, d, 0, scripted_guest::message_for(i, 0));
    }

    // A retry routes everything.
    let report = restore_all(&vm.router, devs.iter_mut().zip(&states), Strategy::VmWide).unwrap();
    assert_eq!(report.gsi_routing_commits, 1);
    let total: usize = VECTORS.iter().map(|n| usize::from(*n)).sum();
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total);
    assert_eq!(vm.backend().attached_irqfds().len(), total);
}

#[test]
fn batch_held_by_the_vmm_refused_then_sync_after_commit() {
    let states = source_states();
    let (vm, sims, mut devs) = destination();
    let outer = vm.router.batch();
    restore_all(&vm.router, devs.iter_mut().zip(&states), Strategy::VmWide).unwrap();
    // Inside the batch the routes are staged and the triggers already on the irqfds: a device
    // that fires now signals an irqfd no GSI has yet.
    for (i, d) in devs.iter().enumerate() {
        assert!(matches!(route_state(&vm, d, 0), Some(RouteState::Staged)));
        assert!(
            matches!(sims[i].raise(2), RaiseOutcome::Signalled(f) if Some(f) == fd(d.msix_irqfd(2)))
        );
    }
    vm.backend().fail_nth(MemoryOp::Commit, 1, EIO);
    assert!(outer.commit().is_err());
    for d in &mut devs {
        d.sync_after_commit();
    }
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), 0);
    for (i, d) in devs.iter_mut().enumerate() {
        assert_eq!(d.stats().stranded_signals, 1, "device {i}");
        let (a, m) = scripted_guest::message_for(i, 2);
        let msgs: Vec<_> = d
            .take_userspace_messages()
            .iter()
            .map(|m| (m.address, m.data))
            .collect();
        assert_eq!(msgs, vec![(a, m)], "device {i}");
    }
}

#[test]
fn staged_commit_refused_moves_only_the_changed_vectors() {
    let precopy = source_states();
    // Between the precopy and the switchover the guest reprogrammed vectors 0 and 2 of
    // device 0.
    let mut last = precopy.clone();
    let entries = &mut last[0].msix.as_mut().unwrap().entries;
    for v in [0usize, 2] {
        entries[v].data ^= 0x80;
    }
    let (vm, sims, mut devs) = destination();
    let staged = StagedRestore::stage(&vm.router, devs.iter_mut().zip(&precopy)).unwrap();
    assert_eq!(staged.staged_report().gsi_routing_commits, 1);
    let total: usize = VECTORS.iter().map(|n| usize::from(*n)).sum();
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total);

    let commits = vm.router.stats().commits;
    vm.backend().fail_nth(MemoryOp::Commit, 1, EIO);
    let err = staged
        .commit(&vm.router, devs.iter_mut().zip(&last))
        .unwrap_err();
    assert!(matches!(err, Error::Route(_)), "{err:?}");
    assert_eq!(vm.router.stats().commits - commits, 1);
    // The two updated routes were undone; the others still hold their GSI.
    for (i, d) in devs.iter().enumerate() {
        for v in 0..VECTORS[i] {
            let undone = i == 0 && (v == 0 || v == 2);
            let st = route_state(&vm, d, v);
            assert_eq!(
                matches!(st, Some(RouteState::Userspace(_))),
                undone,
                "device {i} vector {v}: {st:?}"
            );
        }
    }
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total - 2);
    assert_eq!(vm.backend().attached_irqfds().len(), total - 2);
    // The undone vectors deliver the guest's new message through the VMM.
    for v in [0u16, 2] {
        let e = last[0].msix.as_ref().unwrap().entries[usize::from(v)];
        assert_userspace_delivery(&sims[0], &mut devs[0], v, (e.address, e.data));
    }

    // The retry with the final states routes them again.
    restore_all(&vm.router, devs.iter_mut().zip(&last), Strategy::Staged).unwrap();
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total);
    assert_eq!(vm.backend().attached_irqfds().len(), total);
}

#[test]
fn restore_all_config_write_failure_reconciles_earlier_devices() {
    let states = source_states();
    let vm = vm();
    let sims: Vec<_> = VECTORS.iter().map(|n| msix_sim(*n)).collect();
    let flaky = Arc::new(FlakyConfig {
        sim: sims[1].clone(),
        fail_writes: AtomicBool::new(false),
    });
    let mut devs = [
        device(&vm, &sims[0], 0),
        placed_device(&vm, flaky.clone(), 1),
    ];
    // Device 1's COMMAND write fails: device 0 is restored and its routes end with the batch
    // (committed, but the first irqfd attach fails), device 1 keeps its config and strategy.
    let before = devs[1].save();
    let mode = devs[1].irq_mode();
    flaky.fail_writes.store(true, Ordering::SeqCst);
    vm.backend().fail_nth(MemoryOp::AttachIrqfd, 1, EIO);
    let err = restore_all(&vm.router, devs.iter_mut().zip(&states), Strategy::VmWide).unwrap_err();
    assert!(matches!(err, Error::ConfigWrite(_)), "{err:?}");
    assert_eq!(devs[1].save(), before);
    assert_eq!(devs[1].strategy(), Strategy::PerDevice);
    assert_eq!(devs[1].irq_mode(), mode);
    assert_eq!(vm.router.stats().commits, 1);
    // Vector 0 lost its irqfd attach: userspace; the others are routed. Triggers follow.
    for v in 0..VECTORS[0] {
        let st = route_state(&vm, &devs[0], v);
        let want = if v == 0 {
            assert_eq!(
                st,
                Some(RouteState::Userspace(UserspaceReason::IrqfdAttach(EIO)))
            );
            fd(devs[0].msix_user_eventfd(v))
        } else {
            assert!(
                matches!(st, Some(RouteState::Routed { .. })),
                "vector {v}: {st:?}"
            );
            fd(devs[0].msix_irqfd(v))
        };
        assert_eq!(sims[0].msix_trigger(u32::from(v)), want, "vector {v}");
    }
    assert_userspace_delivery(&sims[0], &mut devs[0], 0, scripted_guest::message_for(0, 0));
}

/// The guest reprograms an unmasked vector; the device's own batch is refused. The vector
/// falls back to userspace, and a signal that reached its irqfd (here left there before the
/// write; on KVM, one sent between the router detaching the irqfd and the trigger moving) is
/// delivered by the VMM.
#[test]
fn guest_message_change_with_refused_commit_rescues_the_irqfd_signal() {
    let vm = vm();
    let s = msix_sim(VECTORS[0]);
    let mut d = device(&vm, &s, 0);
    let prog = scripted_guest::program_msix(&mut d, 0, |_| true).unwrap();
    assert!(matches!(
        route_state(&vm, &d, 1),
        Some(RouteState::Routed { .. })
    ));
    assert!(matches!(s.raise(1), RaiseOutcome::Signalled(f) if Some(f) == fd(d.msix_irqfd(1))));

    vm.backend().fail_nth(MemoryOp::Commit, 1, EIO);
    let bar = u64::from(scripted_guest::config_read_u32(&d, 0x10) & !0xf)
        | (u64::from(scripted_guest::config_read_u32(&d, 0x14)) << 32);
    let (_, data) = scripted_guest::message_for(0, 1);
    let new_data = data ^ 0x80;
    let entry = prog.table_address + 16 + 8 - bar;
    d.mmio_write(MmioAddress(bar), entry, &new_data.to_le_bytes());

    assert_eq!(
        route_state(&vm, &d, 1),
        Some(RouteState::Userspace(UserspaceReason::CommitFailed(EIO)))
    );
    assert_eq!(s.msix_trigger(1), fd(d.msix_user_eventfd(1)));
    assert_eq!(d.stats().stranded_signals, 1);
    let (addr, _) = scripted_guest::message_for(0, 1);
    let msgs: Vec<_> = d
        .take_userspace_messages()
        .iter()
        .map(|m| (m.address, m.data))
        .collect();
    assert_eq!(msgs, vec![(addr, new_data)]);
    // The other vectors kept their routes and triggers.
    for v in [0u16, 2, 3] {
        assert!(matches!(
            route_state(&vm, &d, v),
            Some(RouteState::Routed { .. })
        ));
        assert_eq!(s.msix_trigger(u32::from(v)), fd(d.msix_irqfd(v)));
    }
}

/// MSI: a guest that changes the message data while enabled; the device's own batch is
/// refused. Every vector falls back to userspace, triggers follow, and a signal left on an
/// irqfd is delivered with the guest's new message.
#[test]
fn guest_msi_data_change_with_refused_commit_reconciles() {
    let vm = vm();
    let s = msix_sim(VECTORS[0]);
    let mut d = device(&vm, &s, 0);
    let cap = scripted_guest::program_msi(&mut d, 0, 2, 0).unwrap();
    assert_eq!(d.irq_mode(), IrqMode::Msi);
    let vs = d.msi_vectors.as_ref().unwrap();
    for v in 0..4u16 {
        assert!(vs.kvm_path(&vm.router, v));
        assert_eq!(vs.trigger(v), fd(vs.irqfd(v)));
    }
    d.msi_irqfd(3).unwrap().write(1).unwrap();

    vm.backend().fail_nth(MemoryOp::Commit, 1, EIO);
    let ctrl = scripted_guest::config_read_u16(&d, cap + 2);
    let data_off = if ctrl & 0x80 != 0 { cap + 12 } else { cap + 8 };
    let data = scripted_guest::config_read_u16(&d, data_off) ^ 0x40;
    d.config_write(data_off, &data.to_le_bytes());

    assert_eq!(vm.router.stats().failed_commits, 1);
    assert_eq!(vm.router.gsis_in_use(), 0);
    let vs = d.msi_vectors.as_ref().unwrap();
    for v in 0..4u16 {
        assert!(!vs.kvm_path(&vm.router, v), "vector {v}");
        assert_eq!(vs.trigger(v), fd(vs.user_eventfd(v)), "vector {v}");
    }
    assert_eq!(d.stats().stranded_signals, 1);
    let msgs: Vec<_> = d.take_userspace_messages().iter().map(|m| m.data).collect();
    assert_eq!(msgs, vec![u32::from(data) | 3]);
}

fn restore_all_inside_a_vmm_batch_defers_commit_and_reconciliation(backend: TestBackend) {
    let states = source_states();
    let Some((vm, sims, mut devs)) = destination_on(backend) else {
        return;
    };
    let total: usize = VECTORS.iter().map(|n| usize::from(*n)).sum();
    let outer = vm.router.batch();
    for (d, s) in devs.iter_mut().zip(&states) {
        let report = restore_all(&vm.router, std::iter::once((d, s)), Strategy::VmWide).unwrap();
        assert_eq!(report.gsi_routing_commits, 0);
        assert_eq!(report.set_irqs_per_device, vec![1]);
    }
    assert_eq!(vm.commits(), 0);
    assert_eq!(vm.bound_irqfds(), 0);
    outer.commit().unwrap();
    assert_eq!(vm.commits(), 1);
    let set_irqs: u64 = sims.iter().map(|s| s.counters().set_irqs).sum();
    for d in &mut devs {
        d.sync_after_commit();
    }
    // Every route committed and attached: reconciling moves no trigger.
    assert_eq!(
        sims.iter().map(|s| s.counters().set_irqs).sum::<u64>(),
        set_irqs
    );
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total);
    assert_eq!(vm.bound_irqfds(), total);
}

/// Final states whose messages changed after the precopy: device 0 vector 1 (data) and
/// device 1 vector 0 (address: an IRQ balancer's retarget).
fn changed_after_precopy(precopy: &[DeviceState]) -> Vec<DeviceState> {
    let mut last = precopy.to_vec();
    last[0].msix.as_mut().unwrap().entries[1].data ^= 0x80;
    last[1].msix.as_mut().unwrap().entries[0].address += 0x1000;
    last
}

const CHANGED: [(usize, u16); 2] = [(0, 1), (1, 0)];

fn set_irqs(sims: &[Arc<SimDevice>]) -> Vec<u64> {
    sims.iter().map(|s| s.counters().set_irqs).collect()
}

fn delta(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

fn final_msg(last: &[DeviceState], i: usize, v: u16) -> (u64, u32) {
    let e = last[i].msix.as_ref().unwrap().entries[usize::from(v)];
    (e.address, e.data)
}

fn switchover_leaves_the_commit_for_later_and_delivers_changed_vectors_through_userspace(
    backend: TestBackend,
) {
    let precopy = source_states();
    let last = changed_after_precopy(&precopy);
    let Some((vm, sims, mut devs)) = destination_on(backend) else {
        return;
    };
    let staged = StagedRestore::stage(&vm.router, devs.iter_mut().zip(&precopy)).unwrap();
    let total: usize = VECTORS.iter().map(|n| usize::from(*n)).sum();
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total);
    let commits = vm.commits();
    let before = set_irqs(&sims);

    let deferred = staged
        .switchover(&vm.router, devs.iter_mut().zip(&last))
        .unwrap();
    // The downtime: no routing commit, one SET_IRQS per changed vector.
    assert_eq!(vm.commits(), commits);
    assert_eq!(deferred.switchover_report().gsi_routing_commits, 0);
    assert_eq!(deferred.switchover_report().set_irqs_per_device, vec![1, 1]);
    assert_eq!(delta(&set_irqs(&sims), &before), vec![1, 1]);
    for (i, d) in devs.iter().enumerate() {
        for v in 0..VECTORS[i] {
            let changed = CHANGED.contains(&(i, v));
            let view = vm.router.route(d.msix_route(v).unwrap()).unwrap();
            let want = if changed {
                // The GSI still holds the precopied message.
                assert_eq!(view.state, RouteState::Staged);
                let old = precopy[i].msix.as_ref().unwrap().entries[usize::from(v)];
                let c = view.committed_msi.unwrap();
                assert_eq!((c.address, c.data), (old.address, old.data));
                fd(d.msix_user_eventfd(v))
            } else {
                fd(d.msix_irqfd(v))
            };
            assert_eq!(sims[i].msix_trigger(u32::from(v)), want, "{i}/{v}");
            assert_eq!(d.msix_trigger(v), want, "{i}/{v}: cache");
        }
    }
    // The VM runs again. A changed vector fires: the VMM delivers its new message, and its
    // irqfd (which would inject the old one) sees nothing.
    for (i, v) in CHANGED {
        assert_userspace_delivery(&sims[i], &mut devs[i], v, final_msg(&last, i, v));
        let old = precopy[i].msix.as_ref().unwrap().entries[usize::from(v)];
        let irqfd = devs[i].msix_irqfd(v).unwrap();
        assert!(
            vm.test_vm
                .received_nothing(irqfd, message((old.address, old.data))),
            "{i}/{v}"
        );
    }

    // After the resume: the deferred commit, then the triggers move back.
    let before = set_irqs(&sims);
    let report = deferred.commit(devs.iter_mut()).unwrap();
    assert_eq!(vm.commits(), commits + 1);
    assert_eq!(report.gsi_routing_commits, 1);
    assert_eq!(report.set_irqs_per_device, vec![1, 1]);
    assert_eq!(delta(&set_irqs(&sims), &before), vec![1, 1]);
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total);
    let table = vm.table();
    for (i, v) in CHANGED {
        let d = &mut devs[i];
        let gsi = match route_state(&vm, d, v) {
            Some(RouteState::Routed { gsi }) => gsi,
            other => panic!("{i}/{v}: {other:?}"),
        };
        let e = table.iter().find(|e| e.gsi == gsi).unwrap();
        assert_eq!((e.msi.address, e.msi.data), final_msg(&last, i, v));
        // From now on the vector goes through its irqfd, nothing through the VMM.
        let irqfd = fd(d.msix_irqfd(v));
        assert!(
            matches!(sims[i].raise(u32::from(v)), RaiseOutcome::Signalled(f) if Some(f) == irqfd)
        );
        let irqfd = d.msix_irqfd(v).unwrap();
        assert!(vm.test_vm.received(irqfd, message(final_msg(&last, i, v))));
        assert_eq!(d.poll_userspace_interrupts(), 0);
        assert!(d.take_userspace_messages().is_empty());
    }
    for (d, s) in devs.iter().zip(&last) {
        assert_eq!(&d.save(), s);
    }
}

fn switchover_and_deferred_commit_cost_nothing_when_nothing_changed(backend: TestBackend) {
    let precopy = source_states();
    let Some((vm, sims, mut devs)) = destination_on(backend) else {
        return;
    };
    let staged = StagedRestore::stage(&vm.router, devs.iter_mut().zip(&precopy)).unwrap();
    let commits = vm.commits();
    let before = set_irqs(&sims);
    let deferred = staged
        .switchover(&vm.router, devs.iter_mut().zip(&precopy))
        .unwrap();
    assert_eq!(deferred.switchover_report().set_irqs_calls(), 0);
    let report = deferred.commit(devs.iter_mut()).unwrap();
    assert_eq!(report.gsi_routing_commits, 0);
    assert_eq!(report.set_irqs_calls(), 0);
    assert_eq!(vm.commits(), commits);
    assert_eq!(delta(&set_irqs(&sims), &before), vec![0, 0]);
}

fn dropped_deferred_commit_commits_and_keeps_the_current_message(backend: TestBackend) {
    let precopy = source_states();
    let last = changed_after_precopy(&precopy);
    let Some((vm, sims, mut devs)) = destination_on(backend) else {
        return;
    };
    let staged = StagedRestore::stage(&vm.router, devs.iter_mut().zip(&precopy)).unwrap();
    let commits = vm.commits();
    drop(
        staged
            .switchover(&vm.router, devs.iter_mut().zip(&last))
            .unwrap(),
    );
    assert_eq!(vm.commits(), commits + 1);
    let (i, v) = CHANGED[0];
    // The trigger stayed on userspace; the route now injects the current message, so the
    // VMM forwards the signal to the irqfd instead of queueing a message.
    assert_eq!(
        sims[i].msix_trigger(u32::from(v)),
        fd(devs[i].msix_user_eventfd(v))
    );
    assert!(matches!(
        sims[i].raise(u32::from(v)),
        RaiseOutcome::Signalled(_)
    ));
    assert_eq!(devs[i].poll_userspace_interrupts(), 1);
    assert!(devs[i].take_userspace_messages().is_empty());
    let irqfd = devs[i].msix_irqfd(v).unwrap();
    assert!(vm.test_vm.received(irqfd, message(final_msg(&last, i, v))));
    // The next reconciliation moves it back.
    let before = sims[i].counters().set_irqs;
    devs[i].sync_after_commit();
    assert_eq!(sims[i].counters().set_irqs - before, 1);
    assert_eq!(
        sims[i].msix_trigger(u32::from(v)),
        fd(devs[i].msix_irqfd(v))
    );
}

#[test]
fn refused_deferred_commit_keeps_changed_vectors_on_userspace_until_a_retry() {
    let precopy = source_states();
    let last = changed_after_precopy(&precopy);
    let (vm, sims, mut devs) = destination();
    let staged = StagedRestore::stage(&vm.router, devs.iter_mut().zip(&precopy)).unwrap();
    let deferred = staged
        .switchover(&vm.router, devs.iter_mut().zip(&last))
        .unwrap();
    vm.backend().fail_nth(MemoryOp::Commit, 1, EIO);
    let err = deferred.commit(devs.iter_mut()).unwrap_err();
    assert!(matches!(err, Error::Route(_)), "{err:?}");
    let total: usize = VECTORS.iter().map(|n| usize::from(*n)).sum();
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total - 2);
    for (i, v) in CHANGED {
        assert_eq!(
            route_state(&vm, &devs[i], v),
            Some(RouteState::Userspace(UserspaceReason::CommitFailed(EIO)))
        );
        assert_userspace_delivery(&sims[i], &mut devs[i], v, final_msg(&last, i, v));
    }
    restore_all(&vm.router, devs.iter_mut().zip(&last), Strategy::Staged).unwrap();
    assert_eq!(assert_triggers_follow_routes(&vm, &sims, &devs), total);
}

fn switchover_with_a_bad_state_changes_nothing_and_ends_the_batch(backend: TestBackend) {
    let precopy = source_states();
    let Some((vm, sims, mut devs)) = destination_on(backend) else {
        return;
    };
    let staged = StagedRestore::stage(&vm.router, devs.iter_mut().zip(&precopy)).unwrap();
    let mut bad = changed_after_precopy(&precopy);
    bad[1].config.bytes.pop();
    let before = set_irqs(&sims);
    let err = staged
        .switchover(&vm.router, devs.iter_mut().zip(&bad))
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidState(_) | Error::StateMismatch(_)),
        "{err:?}"
    );
    assert_eq!(delta(&set_irqs(&sims), &before), vec![0, 0]);
    // The batch ended: a route change commits at once again.
    let commits = vm.commits();
    restore_all(
        &vm.router,
        devs.iter_mut().zip(&bad[..1]),
        Strategy::PerDevice,
    )
    .unwrap();
    assert_eq!(vm.commits(), commits + 1);
}
