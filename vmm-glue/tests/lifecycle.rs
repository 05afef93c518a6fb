// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Interrupt lifecycle and restore strategies, on both routing backends from one body:
//! counted by the router and the simulated device, with delivery checked in the VM (KVM: the
//! local APIC; in-memory: the committed table and irqfd bindings). INTx, which the router does
//! not route, is checked once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;

use irq_routing::testing::TestBackend;
use vfio_core::sim::RaiseOutcome;
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vmm_glue::{
    restore_all, scripted_guest, DeviceOptions, IntxEventFds, IrqMode, PassthroughDevice,
    StagedRestore, Strategy,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use common::{device, guest_device, msix_sim, vm_on};

irq_routing::both_backends!(
    mask_parks_only_the_irqfd_and_pba_delivers_once,
    enabled_but_never_unmasked_vectors_hold_no_gsi,
    strategies_share_the_code_path_and_differ_only_in_commits,
    staged_restore_commits_only_the_difference_at_switchover,
    a_vmm_bus_routes_table_writes_to_the_device,
);

fn set_mask(dev: &mut vmm_glue::PassthroughDevice, table: u64, bar: u64, v: u16, masked: bool) {
    let off = table - bar + 16 * u64::from(v) + 12;
    dev.mmio_write(MmioAddress(bar), off, &u32::from(masked).to_le_bytes());
}

fn mask_parks_only_the_irqfd_and_pba_delivers_once(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let (sim, mut dev, prog) = guest_device(&vm, 8, |_| true);
    let bar = dev.bar_address(0).unwrap();
    let v = 5u16;
    let route = dev.msix_route(v).unwrap();
    assert!(vm.delivers(&dev, 0, v));
    let commits = vm.commits();
    let set_irqs = sim.counters().set_irqs;
    let irqfd = dev.msix_irqfd(v).unwrap().as_raw_fd();
    let before = vm.router.stats();

    // 1,000 mask/unmask cycles: no commit, no SET_IRQS, the trigger stays on the irqfd and
    // only the irqfd leaves and rejoins its GSI, route and GSI kept.
    for _ in 0..1000 {
        set_mask(&mut dev, prog.table_address, bar, v, true);
        assert_eq!(dev.msix_trigger(v), Some(irqfd));
        set_mask(&mut dev, prog.table_address, bar, v, false);
        assert_eq!(dev.msix_trigger(v), Some(irqfd));
    }
    let after_storm = vm.router.stats();
    assert_eq!(vm.commits(), commits);
    assert_eq!(sim.counters().set_irqs - set_irqs, 0);
    assert_eq!(after_storm.irqfd_detaches - before.irqfd_detaches, 1000);
    assert_eq!(after_storm.irqfd_attaches - before.irqfd_attaches, 1000);
    assert_eq!(dev.msix_route(v), Some(route));
    assert!(
        vm.delivers(&dev, 0, v),
        "unmasked: the irqfd is back on its GSI"
    );
    // Masking an already masked vector costs nothing.
    set_mask(&mut dev, prog.table_address, bar, v, true);
    let masked = vm.router.stats();
    set_mask(&mut dev, prog.table_address, bar, v, true);
    assert_eq!(vm.router.stats(), masked);

    // Fires while masked: into the parked irqfd, which KVM does not read; the PBA shows it.
    assert_eq!(sim.raise(u32::from(v)), RaiseOutcome::Signalled(irqfd));
    assert_eq!(dev.poll_userspace_interrupts(), 1);
    assert!(dev.msix_table().unwrap().is_pending(v));
    let mut pba = [0u8; 8];
    dev.mmio_read(MmioAddress(bar), prog.pba_address - bar, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 1 << v);
    assert!(vm.received_nothing(&dev, 0, v));
    // Unmask: delivered once through the irqfd (KVM injects the guest's message), bit cleared.
    set_mask(&mut dev, prog.table_address, bar, v, false);
    assert!(!dev.msix_table().unwrap().is_pending(v));
    assert!(vm.received(&dev, 0, v));
    assert_eq!(dev.stats().pending_delivered, 1);
    assert!(vm.received_nothing(&dev, 0, v));
    assert_eq!(vm.commits(), commits);
    // The route survived all of it.
    assert!(vm.delivers(&dev, 0, v));
}

fn enabled_but_never_unmasked_vectors_hold_no_gsi(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let (sim, dev, _) = guest_device(&vm, 16, |v| v < 4);
    assert_eq!(vm.router.gsis_in_use(), 4);
    assert_eq!(vm.table().len(), 4);
    // All 16 vectors were bound by the one SET_IRQS of the enable (masked ones to userspace).
    assert_eq!(sim.allocated_vectors(), 16);
    for v in 0..16u16 {
        assert_eq!(dev.msix_route(v).is_some(), v < 4, "vector {v}");
    }
    assert!(vm.delivers(&dev, 0, 3));
    assert!(vm
        .test_vm
        .unbound(dev.msix_irqfd(4).unwrap(), common::guest_msg(0, 4)));
}

/// Programs `n` devices with `m` vectors in a source VM, saves them, and restores them into a
/// fresh VM with `strategy`; returns (routing commits, SET_IRQS per device) of the restore.
fn restore_cost(backend: TestBackend, n: usize, m: u16, strategy: Strategy) -> (u64, Vec<u64>) {
    let src = vm_on(backend).unwrap();
    let mut states = Vec::new();
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    for i in 0..n {
        let sim = msix_sim(m);
        let mut d = device(&src, &sim, i as u32, Strategy::PerDevice);
        scripted_guest::place_bars(&mut d, &mut mmio, &mut pio, false);
        scripted_guest::program_msix(&mut d, i, |_| true).unwrap();
        states.push(d.save());
    }
    let dst = vm_on(backend).unwrap();
    let sims: Vec<_> = (0..n).map(|_| msix_sim(m)).collect();
    let mut devs: Vec<_> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| device(&dst, s, i as u32, strategy))
        .collect();
    let report = restore_all(&dst.router, devs.iter_mut().zip(states.iter()), strategy).unwrap();
    assert_eq!(report.gsi_routing_commits, dst.commits());
    let per_dev: Vec<u64> = sims.iter().map(|s| s.counters().set_irqs).collect();
    assert_eq!(report.set_irqs_per_device, per_dev);
    assert_eq!(dst.table().len(), n * usize::from(m));
    assert_eq!(dst.bound_irqfds(), n * usize::from(m));
    for (i, d) in devs.iter().enumerate() {
        assert!(dst.delivers(d, i, m - 1), "{strategy}: device {i}");
    }
    (report.gsi_routing_commits, per_dev)
}

fn strategies_share_the_code_path_and_differ_only_in_commits(backend: TestBackend) {
    if vm_on(backend).is_none() {
        return;
    }
    let (n, m) = (3usize, 5u16);
    let routes = (n * usize::from(m)) as u64;
    let cost = |s| restore_cost(backend, n, m, s);
    assert_eq!(cost(Strategy::PerVector), (routes, vec![1; n]));
    assert_eq!(cost(Strategy::PerDevice), (n as u64, vec![1; n]));
    assert_eq!(cost(Strategy::VmWide), (1, vec![1; n]));
}

fn staged_restore_commits_only_the_difference_at_switchover(backend: TestBackend) {
    let (n, m) = (2usize, 6u16);
    let Some(src) = vm_on(backend) else {
        return;
    };
    let sims_src: Vec<_> = (0..n).map(|_| msix_sim(m)).collect();
    let mut src_devs: Vec<_> = sims_src
        .iter()
        .enumerate()
        .map(|(i, s)| device(&src, s, i as u32, Strategy::PerDevice))
        .collect();
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    let mut progs = Vec::new();
    for (i, d) in src_devs.iter_mut().enumerate() {
        scripted_guest::place_bars(d, &mut mmio, &mut pio, false);
        progs.push(scripted_guest::program_msix(d, i, |_| true).unwrap());
    }
    let precopy: Vec<_> = src_devs.iter().map(|d| d.save()).collect();

    let dst = vm_on(backend).unwrap();
    let sims: Vec<_> = (0..n).map(|_| msix_sim(m)).collect();
    let mut devs: Vec<_> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| device(&dst, s, i as u32, Strategy::Staged))
        .collect();
    let staged = StagedRestore::stage(&dst.router, devs.iter_mut().zip(precopy.iter())).unwrap();
    assert_eq!(staged.staged_report().gsi_routing_commits, 1);
    assert_eq!(staged.staged_report().set_irqs_calls(), n as u64);

    // Nothing changed on the source: the switchover costs nothing.
    let report = staged
        .commit(&dst.router, devs.iter_mut().zip(precopy.iter()))
        .unwrap();
    assert_eq!(report.gsi_routing_commits, 0);
    assert_eq!(report.set_irqs_calls(), 0);

    // The guest masks vector 2 of device 1 after the precopy: its irqfd parks, no SET_IRQS,
    // no commit.
    let bar = src_devs[1].bar_address(0).unwrap();
    set_mask(&mut src_devs[1], progs[1].table_address, bar, 2, true);
    let finals: Vec<_> = src_devs.iter().map(|d| d.save()).collect();
    let staged = StagedRestore::stage(&dst.router, devs.iter_mut().zip(precopy.iter())).unwrap();
    assert_eq!(staged.staged_report().gsi_routing_commits, 0);
    let report = staged
        .commit(&dst.router, devs.iter_mut().zip(finals.iter()))
        .unwrap();
    assert_eq!(report.gsi_routing_commits, 0);
    assert_eq!(report.set_irqs_per_device, vec![0, 0]);
    assert_eq!(devs[1].save(), finals[1]);
    // The masked vector kept its route and its trigger; its irqfd is off the GSI, so a
    // signal from the device lands in the PBA, not in the guest.
    assert!(dst.delivers(&devs[1], 1, 3));
    assert!(devs[1].msix_route(2).is_some());
    let irqfd = devs[1].msix_irqfd(2).unwrap().as_raw_fd();
    assert_eq!(sims[1].raise(2), RaiseOutcome::Signalled(irqfd));
    assert_eq!(devs[1].poll_userspace_interrupts(), 1);
    assert!(devs[1].msix_table().unwrap().is_pending(2));
    assert!(dst.received_nothing(&devs[1], 1, 2));
}

fn a_vmm_bus_routes_table_writes_to_the_device(backend: TestBackend) {
    use std::sync::Mutex;
    use vm_device::bus::MmioRange;
    use vm_device::device_manager::{IoManager, MmioManager};

    let Some(vm) = vm_on(backend) else {
        return;
    };
    let sim = msix_sim(4);
    let mut dev = device(&vm, &sim, 0, Strategy::PerDevice);
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    let placed = scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    let bar = placed[0];
    let cap = scripted_guest::find_capability(&dev, scripted_guest::CAP_ID_MSIX).unwrap();
    dev.config_write(cap + 2, &0x8000u16.to_le_bytes());
    let shared = Arc::new(Mutex::new(dev));
    let mut bus = IoManager::new();
    bus.register_mmio(
        MmioRange::new(MmioAddress(bar.address), bar.size).unwrap(),
        shared.clone(),
    )
    .unwrap();
    // Program vector 1 and unmask it, through the bus.
    let entry = bar.address + 16;
    bus.mmio_write(MmioAddress(entry), &0xfee0_0000u32.to_le_bytes())
        .unwrap();
    bus.mmio_write(MmioAddress(entry + 8), &0x41u32.to_le_bytes())
        .unwrap();
    bus.mmio_write(MmioAddress(entry + 12), &0u32.to_le_bytes())
        .unwrap();
    let mut data = [0u8; 4];
    bus.mmio_read(MmioAddress(entry + 8), &mut data).unwrap();
    assert_eq!(u32::from_le_bytes(data), 0x41);
    let table = vm.table();
    assert_eq!(table.len(), 1);
    assert_eq!(
        (table[0].msi.address, table[0].msi.data),
        (0xfee0_0000, 0x41)
    );
    let dev = shared.lock().unwrap();
    assert!(dev.msix_route(1).is_some());
    let msg = irq_routing::MsiMessage::new(0xfee0_0000, 0x41);
    assert!(vm.test_vm.delivers(dev.msix_irqfd(1).unwrap(), msg));
}

/// INTx, which the router does not route: the scripted guest leaves Interrupt Disable clear
/// after reset, so the device binds its trigger and its unmask (resample) eventfd at once; the
/// device's INTx signals the trigger and stays masked until the VMM's resample signal; setting
/// Interrupt Disable releases it, and enabling MSI-X moves off INTx for good.
#[test]
fn intx_binds_trigger_and_unmask_and_follows_interrupt_disable() {
    let vm = common::vm();
    let sim = msix_sim(4);
    let trigger = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let unmask = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let opts = DeviceOptions {
        intx: Some(IntxEventFds {
            trigger: trigger.clone(),
            unmask: Some(unmask.clone()),
        }),
        ..DeviceOptions::default()
    };
    let mut dev = PassthroughDevice::new(sim.clone(), &vm.res, opts).unwrap();
    assert_eq!(dev.irq_mode(), IrqMode::Intx);
    // Trigger, then unmask: two SET_IRQS.
    assert_eq!(sim.counters().set_irqs, 2);
    assert_eq!(
        sim.active_irq_index(),
        Some(vfio_core::info::INTX_IRQ_INDEX)
    );
    assert_eq!(
        sim.assert_intx(),
        RaiseOutcome::Signalled(trigger.as_raw_fd())
    );
    assert_eq!(trigger.read().unwrap(), 1);
    // Level-triggered: masked once it fired. The resample eventfd unmasks: with the line still
    // asserted the interrupt is sent again and INTx stays masked; once the device drops the
    // line the next resample unmasks it.
    assert!(sim.is_intx_masked());
    assert!(trigger.read().is_err());
    unmask.write(1).unwrap();
    assert!(sim.is_intx_masked());
    assert_eq!(trigger.read().unwrap(), 1);
    sim.deassert_intx();
    unmask.write(1).unwrap();
    assert!(!sim.is_intx_masked());
    assert!(trigger.read().is_err());
    assert_eq!(
        sim.assert_intx(),
        RaiseOutcome::Signalled(trigger.as_raw_fd())
    );
    assert_eq!(trigger.read().unwrap(), 1);
    sim.deassert_intx();
    unmask.write(1).unwrap();

    // The guest sets Interrupt Disable: INTx is released (one SET_IRQS), nothing fires.
    let command = scripted_guest::config_read_u16(&dev, 0x04);
    dev.config_write(0x04, &(command | 1 << 10).to_le_bytes());
    assert_eq!(dev.irq_mode(), IrqMode::None);
    assert_eq!(sim.counters().set_irqs, 3);
    assert_eq!(sim.active_irq_index(), None);
    assert!(!matches!(sim.assert_intx(), RaiseOutcome::Signalled(_)));
    sim.deassert_intx();
    assert!(trigger.read().is_err());
    // Cleared again: bound again, trigger and unmask.
    dev.config_write(0x04, &command.to_le_bytes());
    assert_eq!(dev.irq_mode(), IrqMode::Intx);
    assert_eq!(sim.counters().set_irqs, 5);
    assert_eq!(
        sim.assert_intx(),
        RaiseOutcome::Signalled(trigger.as_raw_fd())
    );
    assert_eq!(trigger.read().unwrap(), 1);
    sim.deassert_intx();

    // The guest driver switches to MSI-X: INTx is released first, and the device signals it
    // no more.
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    scripted_guest::program_msix(&mut dev, 0, |_| true).unwrap();
    assert_eq!(dev.irq_mode(), IrqMode::Msix);
    assert_eq!(
        sim.active_irq_index(),
        Some(vfio_core::info::MSIX_IRQ_INDEX)
    );
    unmask.write(1).unwrap();
    assert!(!matches!(sim.assert_intx(), RaiseOutcome::Signalled(_)));
    sim.deassert_intx();
    assert!(trigger.read().is_err());
}
