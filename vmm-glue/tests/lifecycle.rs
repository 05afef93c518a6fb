// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Interrupt lifecycle and restore strategies, counted on the in-memory routing backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;

use vfio_core::sim::RaiseOutcome;
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vmm_glue::{restore_all, scripted_guest, StagedRestore, Strategy};

use common::{device, msix_sim, vm};

fn set_mask(dev: &mut vmm_glue::PassthroughDevice, table: u64, bar: u64, v: u16, masked: bool) {
    let off = table - bar + 16 * u64::from(v) + 12;
    dev.mmio_write(MmioAddress(bar), off, &u32::from(masked).to_le_bytes());
}

#[test]
fn mask_keeps_route_moves_only_the_trigger_and_pba_delivers_once() {
    let vm = vm();
    let sim = msix_sim(8);
    let mut dev = device(&vm, &sim, 0, Strategy::PerDevice);
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    let prog = scripted_guest::program_msix(&mut dev, 0, |_| true).unwrap();
    let bar = dev.bar_address(0).unwrap();
    let v = 5u16;
    let route = dev.msix_route(v).unwrap();
    let commits = vm.router.stats().commits;
    let set_irqs = sim.counters().set_irqs;

    // 1,000 mask/unmask cycles: no commit, two trigger moves per cycle, route kept.
    for _ in 0..1000 {
        set_mask(&mut dev, prog.table_address, bar, v, true);
        assert_eq!(
            dev.msix_trigger(v),
            Some(dev.msix_user_eventfd(v).unwrap().as_raw_fd())
        );
        set_mask(&mut dev, prog.table_address, bar, v, false);
        assert_eq!(
            dev.msix_trigger(v),
            Some(dev.msix_irqfd(v).unwrap().as_raw_fd())
        );
    }
    assert_eq!(vm.router.stats().commits, commits);
    assert_eq!(sim.counters().set_irqs - set_irqs, 2000);
    assert_eq!(dev.msix_route(v), Some(route));
    // Masking an already masked vector costs nothing (trigger cache).
    set_mask(&mut dev, prog.table_address, bar, v, true);
    let after = sim.counters().set_irqs;
    set_mask(&mut dev, prog.table_address, bar, v, true);
    assert_eq!(sim.counters().set_irqs, after);

    // Fires while masked: PBA bit, nothing at the irqfd.
    let user = dev.msix_user_eventfd(v).unwrap().as_raw_fd();
    assert_eq!(sim.raise(u32::from(v)), RaiseOutcome::Signalled(user));
    assert_eq!(dev.poll_userspace_interrupts(), 1);
    assert!(dev.msix_table().unwrap().is_pending(v));
    let mut pba = [0u8; 8];
    dev.mmio_read(MmioAddress(bar), prog.pba_address - bar, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 1 << v);
    assert!(dev.msix_irqfd(v).unwrap().read().is_err());
    // Unmask: delivered once through the irqfd, bit cleared.
    set_mask(&mut dev, prog.table_address, bar, v, false);
    assert!(!dev.msix_table().unwrap().is_pending(v));
    assert_eq!(dev.msix_irqfd(v).unwrap().read().unwrap(), 1);
    assert_eq!(dev.stats().pending_delivered, 1);
    assert!(dev.msix_irqfd(v).unwrap().read().is_err());
    assert_eq!(vm.router.stats().commits, commits);
}

#[test]
fn enabled_but_never_unmasked_vectors_hold_no_gsi() {
    let vm = vm();
    let sim = msix_sim(16);
    let mut dev = device(&vm, &sim, 0, Strategy::PerDevice);
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    scripted_guest::program_msix(&mut dev, 0, |v| v < 4).unwrap();
    assert_eq!(vm.router.gsis_in_use(), 4);
    assert_eq!(vm.backend().table().len(), 4);
    // All 16 vectors were bound by the one SET_IRQS of the enable (masked ones to userspace).
    assert_eq!(sim.allocated_vectors(), 16);
}

/// Programs `n` devices with `m` vectors in a source VM, saves them, and restores them into a
/// fresh VM with `strategy`; returns (routing commits, SET_IRQS per device) of the restore.
fn restore_cost(n: usize, m: u16, strategy: Strategy) -> (u64, Vec<u64>) {
    let src = vm();
    let mut states = Vec::new();
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    for i in 0..n {
        let sim = msix_sim(m);
        let mut d = device(&src, &sim, i as u32, Strategy::PerDevice);
        scripted_guest::place_bars(&mut d, &mut mmio, &mut pio, false);
        scripted_guest::program_msix(&mut d, i, |_| true).unwrap();
        states.push(d.save());
    }
    let dst = vm();
    let sims: Vec<_> = (0..n).map(|_| msix_sim(m)).collect();
    let mut devs: Vec<_> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| device(&dst, s, i as u32, strategy))
        .collect();
    let report = restore_all(&dst.router, devs.iter_mut().zip(states.iter()), strategy).unwrap();
    assert_eq!(report.gsi_routing_commits, dst.backend().commits());
    let per_dev: Vec<u64> = sims.iter().map(|s| s.counters().set_irqs).collect();
    assert_eq!(report.set_irqs_per_device, per_dev);
    assert_eq!(dst.backend().table().len(), n * usize::from(m));
    (report.gsi_routing_commits, per_dev)
}

#[test]
fn strategies_share_the_code_path_and_differ_only_in_commits() {
    let (n, m) = (3usize, 5u16);
    let routes = (n * usize::from(m)) as u64;
    assert_eq!(
        restore_cost(n, m, Strategy::PerVector),
        (routes, vec![1; n])
    );
    assert_eq!(
        restore_cost(n, m, Strategy::PerDevice),
        (n as u64, vec![1; n])
    );
    assert_eq!(restore_cost(n, m, Strategy::VmWide), (1, vec![1; n]));
}

#[test]
fn staged_restore_commits_only_the_difference_at_switchover() {
    let (n, m) = (2usize, 6u16);
    let src = vm();
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

    let dst = vm();
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

    // The guest masks vector 2 of device 1 after the precopy: one trigger move, no commit.
    let bar = src_devs[1].bar_address(0).unwrap();
    set_mask(&mut src_devs[1], progs[1].table_address, bar, 2, true);
    let finals: Vec<_> = src_devs.iter().map(|d| d.save()).collect();
    let staged = StagedRestore::stage(&dst.router, devs.iter_mut().zip(precopy.iter())).unwrap();
    assert_eq!(staged.staged_report().gsi_routing_commits, 0);
    let report = staged
        .commit(&dst.router, devs.iter_mut().zip(finals.iter()))
        .unwrap();
    assert_eq!(report.gsi_routing_commits, 0);
    assert_eq!(report.set_irqs_per_device, vec![0, 1]);
    assert_eq!(devs[1].save(), finals[1]);
}

#[test]
fn a_vmm_bus_routes_table_writes_to_the_device() {
    use std::sync::{Arc, Mutex};
    use vm_device::bus::MmioRange;
    use vm_device::device_manager::{IoManager, MmioManager};

    let vm = vm();
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
    let table = vm.backend().table();
    assert_eq!(table.len(), 1);
    assert_eq!(
        (table[0].msi.address, table[0].msi.data),
        (0xfee0_0000, 0x41)
    );
    assert!(shared.lock().unwrap().msix_route(1).is_some());
}
