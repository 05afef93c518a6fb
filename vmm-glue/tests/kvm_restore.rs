// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Eight simulated VFs x 65 MSI-X vectors on one VM: a scripted guest programs MSI-X, every
//! device is saved, and all are restored into a fresh VM in one VM-wide batch, or staged and
//! switched over. On both routing backends from one body; on KVM the interrupts raised are
//! seen arriving in the vCPUs' local APICs.

#![cfg(feature = "kvm")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;

use irq_routing::testing::TestBackend;
use irq_routing::{MsiMessage, RouteState};
use vfio_core::sim::{MsixPlacement, RaiseOutcome, SimDevice};
use vmm_glue::{
    restore_all, scripted_guest, DeviceOptions, PassthroughDevice, StagedRestore, Strategy,
};

use common::{vm_on, Vm};

irq_routing::both_backends!(
    eight_vfs_restore_with_one_routing_commit,
    staged_switchover_defers_the_routing_commit_past_the_resume,
);

const VFS: usize = 8;
const VECTORS: u16 = 65;

fn vf() -> Arc<SimDevice> {
    Arc::new(
        SimDevice::builder(0x8086, 0x154c)
            .bar(0, pci_config::BarKind::Mem64, 0x4000, false)
            .bar(3, pci_config::BarKind::Mem64, 0x4000, false)
            .msix(MsixPlacement::in_bar(VECTORS, 3))
            .build()
            .unwrap(),
    )
}

/// Vector 7 of every device stays masked, to check the PBA path after restore.
fn unmask(v: u16) -> bool {
    v != 7
}

fn eight_vfs_restore_with_one_routing_commit(backend: TestBackend) {
    let Some(src) = vm_on(backend) else {
        return;
    };
    let router = src.router.clone();
    let (_sims, mut devs) = devices(&src);
    for prog in guest_programs(&mut devs) {
        assert_eq!(prog.vectors, VECTORS);
    }
    // Lazy rule: the masked vector holds no route.
    let routed_per_dev = usize::from(VECTORS) - 1;
    assert_eq!(router.committed_table().len(), VFS * routed_per_dev);
    let states: Vec<_> = devs.iter().map(|d| d.save()).collect();
    let src_table = router.committed_table();

    // Fresh VM, fresh devices over the same (simulated) hardware.
    let dst = vm_on(backend).unwrap();
    let router2 = dst.router.clone();
    let (sims2, mut devs2) = devices(&dst);
    let before_set_irqs: Vec<u64> = sims2.iter().map(|s| s.counters().set_irqs).collect();
    assert_eq!(router2.stats().commits, 0);

    let report = restore_all(
        &router2,
        devs2.iter_mut().zip(states.iter()),
        Strategy::VmWide,
    )
    .unwrap();

    // Exactly one KVM_SET_GSI_ROUTING for the whole VM.
    assert_eq!(router2.stats().commits, 1);
    assert_eq!(report.gsi_routing_commits, 1);
    assert_eq!(
        router2.stats().irqfd_attaches,
        (VFS * routed_per_dev) as u64
    );
    // One SET_IRQS per device, counted by the simulated device itself.
    for (s, b) in sims2.iter().zip(&before_set_irqs) {
        assert_eq!(s.counters().set_irqs - b, 1);
        assert_eq!(s.allocated_vectors(), u32::from(VECTORS));
    }
    // Identical routes: the same messages, in the same GSI order.
    let dst_table = router2.committed_table();
    assert_eq!(dst_table.len(), src_table.len());
    let msgs = |t: &[irq_routing::RouteEntry]| t.iter().map(|e| e.msi).collect::<Vec<_>>();
    assert_eq!(msgs(&dst_table), msgs(&src_table));
    for (d, s) in devs2.iter().zip(states.iter()) {
        assert_eq!(&d.save(), s);
    }

    // A raised unmasked vector signals exactly the irqfd bound to its GSI in the committed
    // table, and the guest gets the vector's message: on KVM, KVM consumed the irqfd's counter
    // and the vector is pending in its destination's local APIC.
    let dev = &devs2[3];
    let sim = &sims2[3];
    let v = 12u16;
    let irqfd = dev.msix_irqfd(v).unwrap();
    let out = sim.raise(u32::from(v));
    assert_eq!(out, RaiseOutcome::Signalled(irqfd.as_raw_fd()));
    let route = dev.msix_route(v).unwrap();
    let view = router2.route(route).unwrap();
    let RouteState::Routed { gsi } = view.state else {
        panic!("vector not routed: {:?}", view.state);
    };
    assert!(view.irqfd_attached);
    let entry = dst_table.iter().find(|e| e.gsi == gsi).unwrap();
    let (addr, data) = scripted_guest::message_for(3, v);
    assert_eq!((entry.msi.address, entry.msi.data), (addr, data));
    assert!(
        dst.test_vm.received(irqfd, MsiMessage::new(addr, data)),
        "the guest did not get vector {v} of device 3"
    );

    // The masked vector: it fires into its userspace eventfd and lands in the PBA.
    let mut dev = devs2.remove(3);
    let masked = 7u16;
    let user = dev.msix_user_eventfd(masked).unwrap().as_raw_fd();
    assert_eq!(sim.raise(u32::from(masked)), RaiseOutcome::Signalled(user));
    assert_eq!(dev.poll_userspace_interrupts(), 1);
    assert!(dev.msix_table().unwrap().is_pending(masked));
    assert!(dev.msix_route(masked).is_none());
}

/// `VFS` fresh devices (default options: per-device strategy) in `vm`.
fn devices(vm: &Vm) -> (Vec<Arc<SimDevice>>, Vec<PassthroughDevice>) {
    let res = &vm.res;
    let sims: Vec<_> = (0..VFS).map(|_| vf()).collect();
    let devs = sims
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let opts = DeviceOptions {
                id: i as u32,
                ..DeviceOptions::default()
            };
            PassthroughDevice::new(s.clone(), res, opts).unwrap()
        })
        .collect();
    (sims, devs)
}

/// The staged switchover on real KVM: one vector per VF retargeted after the precopy. The
/// switchover issues no KVM_SET_GSI_ROUTING and one SET_IRQS per VF (the changed vector's
/// trigger moves to userspace, where the VMM delivers its new message); the deferred commit
/// after the resume issues one KVM_SET_GSI_ROUTING and moves the triggers back to the irqfds,
/// which KVM then consumes.
fn staged_switchover_defers_the_routing_commit_past_the_resume(backend: TestBackend) {
    let Some(src) = vm_on(backend) else {
        return;
    };
    let (_src_sims, mut src_devs) = devices(&src);
    guest_programs(&mut src_devs);
    let precopy: Vec<_> = src_devs.iter().map(|d| d.save()).collect();
    let mut last = precopy.clone();
    for s in &mut last {
        s.msix.as_mut().unwrap().entries[0].address += 0x1000;
    }

    let dst = vm_on(backend).unwrap();
    let router = dst.router.clone();
    let (sims, mut devs) = devices(&dst);
    let staged = StagedRestore::stage(&router, devs.iter_mut().zip(&precopy)).unwrap();
    assert_eq!(router.stats().commits, 1);
    let set_irqs =
        |sims: &[Arc<SimDevice>]| -> u64 { sims.iter().map(|s| s.counters().set_irqs).sum() };
    let before = set_irqs(&sims);

    let deferred = staged
        .switchover(&router, devs.iter_mut().zip(&last))
        .unwrap();
    assert_eq!(
        router.stats().commits,
        1,
        "no KVM_SET_GSI_ROUTING at the switchover"
    );
    assert_eq!(set_irqs(&sims) - before, VFS as u64);
    assert_eq!(deferred.switchover_report().set_irqs_calls(), VFS as u64);
    let (dev, sim) = (&mut devs[5], &sims[5]);
    let user = dev.msix_user_eventfd(0).unwrap().as_raw_fd();
    assert_eq!(sim.raise(0), RaiseOutcome::Signalled(user));
    let old = precopy[5].msix.as_ref().unwrap().entries[0];
    assert!(dst.test_vm.received_nothing(
        dev.msix_irqfd(0).unwrap(),
        MsiMessage::new(old.address, old.data)
    ));
    assert_eq!(dev.poll_userspace_interrupts(), 1);
    let e = last[5].msix.as_ref().unwrap().entries[0];
    let msgs: Vec<_> = dev
        .take_userspace_messages()
        .iter()
        .map(|m| (m.address, m.data))
        .collect();
    assert_eq!(msgs, vec![(e.address, e.data)]);

    let before = set_irqs(&sims);
    let report = deferred.commit(devs.iter_mut()).unwrap();
    assert_eq!(router.stats().commits, 2);
    assert_eq!(report.gsi_routing_commits, 1);
    assert_eq!(set_irqs(&sims) - before, VFS as u64);
    let (dev, sim) = (&mut devs[5], &sims[5]);
    let irqfd = dev.msix_irqfd(0).unwrap();
    assert_eq!(sim.raise(0), RaiseOutcome::Signalled(irqfd.as_raw_fd()));
    let view = router.route(dev.msix_route(0).unwrap()).unwrap();
    assert!(matches!(view.state, RouteState::Routed { .. }));
    let c = view.committed_msi.unwrap();
    assert_eq!((c.address, c.data), (e.address, e.data));
    assert!(
        dst.test_vm
            .received(irqfd, MsiMessage::new(e.address, e.data)),
        "the guest did not get the new message"
    );
    assert_eq!(
        router.committed_table().len(),
        VFS * (usize::from(VECTORS) - 1)
    );
}

/// The guest places every device's BARs one after the other and programs MSI-X with every
/// vector but 7 unmasked.
fn guest_programs(devs: &mut [PassthroughDevice]) -> Vec<scripted_guest::MsixProgram> {
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    devs.iter_mut()
        .enumerate()
        .map(|(i, d)| {
            scripted_guest::place_bars(d, &mut mmio, &mut pio, false);
            scripted_guest::program_msix(d, i, unmask).unwrap()
        })
        .collect()
}
