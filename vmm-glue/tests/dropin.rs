// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What a VMM needs to drop a passthrough device in, on the real /dev/kvm with simulated
//! devices (their BARs are memfd-backed, so they mmap like a VFIO region): BAR mappings
//! installed as KVM memory slots as the guest places and moves BARs, BAR moves reported from
//! the config write, INTx through a resample irqfd, reset, and hot-unplug cycles that leave
//! the VM exactly as it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::sync::Arc;

use bar_mmap::{GuestMappings, HostResourceSpace, KvmMemorySlots, Mapping, MemorySlots, PageSize};
use irq_routing::testing::{kvm_vm_with_irqchip, route_ioapic_pin, LocalApic};
use irq_routing::{KvmBackend, Router};
use kvm_ioctls::VmFd;
use pci_config::BarKind;
use vfio_core::info::BAR0_REGION_INDEX;
use vfio_core::sim::{MsixPlacement, SimDevice};
use vfio_core::VfioDevice;
use vmm_glue::{scripted_guest, DeviceOptions, IrqMode, PassthroughDevice, VmResources};

const PAGE: u64 = 4096;
/// Memory slots the VM gives BAR mappings (guest RAM would use the others).
const SLOTS: std::ops::Range<u32> = 100..132;
const HOST_BASE: u64 = 0xe000_0000;

struct Vm {
    vm: Arc<VmFd>,
    router: Arc<Router>,
    res: VmResources,
}

fn vm() -> Option<Vm> {
    let (_kvm, vm) = kvm_vm_with_irqchip()?;
    let router = Arc::new(Router::new(KvmBackend::new(vm.clone()).unwrap()).unwrap());
    let host = HostResourceSpace::new(HOST_BASE, 0x1000_0000)
        .unwrap()
        .into_shared();
    let maps = GuestMappings::new(Box::new(KvmMemorySlots::new(vm.clone())), SLOTS);
    let res = VmResources::new(router.clone(), host, PageSize::SIZE_4K).with_guest_mappings(maps);
    Some(Vm { vm, router, res })
}

/// A device with MSI-X (8 vectors) in a 16 KiB 64-bit BAR 0, a 256-byte BAR 2 (sub-page,
/// mmappable when its host page is its own, as Linux v6.12.117's `vfio_pci_probe_mmaps()`
/// allows) and an INTx pin.
fn sim() -> Arc<SimDevice> {
    Arc::new(
        SimDevice::builder(0x8086, 0x1521)
            .bar(0, BarKind::Mem64, 0x4000, false)
            .bar(2, BarKind::Mem32, 0x100, false)
            .msix(MsixPlacement::in_bar(8, 0))
            .sub_page_mmap(true)
            .build()
            .unwrap(),
    )
}

fn opts(id: u32) -> DeviceOptions {
    let mut host_bar_addresses = [0; 6];
    // The sub-page BAR's host address, so its page can be reserved.
    host_bar_addresses[2] = HOST_BASE + 0x10_0000 + u64::from(id) * PAGE;
    DeviceOptions {
        id,
        intx_gsi: Some(5),
        host_bar_addresses,
        ..DeviceOptions::default()
    }
}

fn maps(vm: &Vm) -> std::sync::MutexGuard<'_, GuestMappings> {
    vm.res.guest_mappings.as_ref().unwrap().lock().unwrap()
}

/// Whether KVM already has a memory slot over guest page `gpa`: it refuses an overlapping one.
fn kvm_slot_over(vm: &Vm, gpa: u64) -> bool {
    let scratch = memfd();
    let mut probe = KvmMemorySlots::new(vm.vm.clone());
    let m = Mapping::map_shared(std::os::fd::AsFd::as_fd(&scratch), 0, PAGE as usize).unwrap();
    match probe.install(SLOTS.end + 5, gpa, m) {
        Ok(()) => {
            probe.remove(SLOTS.end + 5).unwrap();
            false
        }
        Err(_) => true,
    }
}

fn memfd() -> File {
    let f = tempfile_like();
    f.set_len(PAGE).unwrap();
    f
}

fn tempfile_like() -> File {
    let dir = std::env::temp_dir().join(format!("vmm-glue-dropin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{:?}", std::thread::current().id()).replace(['(', ')'], ""));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

#[test]
fn placed_bars_are_kvm_slots_that_reach_device_memory_and_follow_moves() {
    let Some(vm) = vm() else {
        return;
    };
    let sim = sim();
    let mut dev = PassthroughDevice::new(sim.clone(), &vm.res, opts(1)).unwrap();
    // The VMM learns the BARs' shape.
    let bars = dev.bars();
    assert_eq!(bars.len(), 2);
    assert_eq!(
        (bars[0].index, bars[0].kind, bars[0].size),
        (0, BarKind::Mem64, 0x4000)
    );
    assert!(bars[0].mappable && bars[1].mappable);
    // It places BAR 0 itself; decode is off, so nothing moves yet.
    let events = dev.assign_bar(0, 0x8000_0000).unwrap();
    assert!(events.bar_moves.is_empty());
    assert!(
        dev.assign_bar(0, 0x8000_1000).is_err(),
        "not aligned to its size"
    );
    dev.assign_bar(2, 0x9000_0000).unwrap();
    assert!(maps(&vm).installed().is_empty());
    // The guest turns memory decode on: both BARs appear, reported by that write.
    let events = dev.config_write(0x04, &0x0006u16.to_le_bytes());
    let moved: Vec<_> = events.bar_moves.iter().map(|m| (m.index, m.new)).collect();
    assert_eq!(moved, [(0, Some(0x8000_0000)), (2, Some(0x9000_0000))]);
    // BAR 0: the MSI-X table and PBA page trap, the other three pages are slots; BAR 2 is one
    // page (the rest of its host page is reserved).
    let installed = maps(&vm).installed();
    let gpas: Vec<u64> = installed.iter().map(|s| s.gpa).collect();
    let layout_mapped = dev.bar_layout(0).unwrap().mapped().count();
    assert_eq!(installed.len(), layout_mapped + 1, "{installed:?}");
    assert!(gpas.contains(&0x9000_0000));
    for s in &installed {
        assert!(kvm_slot_over(&vm, s.gpa), "KVM holds slot {s:?}");
    }
    // A guest access through a slot reaches the device's memory, and the other way round.
    let mapped = *installed
        .iter()
        .find(|s| s.gpa >= 0x8000_0000 && s.gpa < 0x9000_0000)
        .unwrap();
    let offset = mapped.gpa - 0x8000_0000 + 0x10;
    sim.region_write(BAR0_REGION_INDEX, offset, b"device")
        .unwrap();
    let guard = maps(&vm);
    let (m, at) = guard.mapping_at(mapped.gpa + 0x10).unwrap();
    let mut got = [0u8; 6];
    m.read_bytes(at, &mut got).unwrap();
    assert_eq!(&got, b"device");
    m.write_bytes(at, b"guest!").unwrap();
    drop(guard);
    let mut back = [0u8; 6];
    sim.region_read(BAR0_REGION_INDEX, offset, &mut back)
        .unwrap();
    assert_eq!(&back, b"guest!");
    // The guest moves BAR 2: reported, its slot moves, KVM's old range is free.
    let events = dev.config_write(0x18, &0xa000_0000u32.to_le_bytes());
    assert_eq!(events.bar_moves.len(), 1);
    assert_eq!(
        (events.bar_moves[0].old, events.bar_moves[0].new),
        (Some(0x9000_0000), Some(0xa000_0000))
    );
    assert!(!kvm_slot_over(&vm, 0x9000_0000));
    assert!(kvm_slot_over(&vm, 0xa000_0000));
    // Decode off: every slot goes.
    dev.config_write(0x04, &0u16.to_le_bytes());
    assert!(maps(&vm).installed().is_empty());
    assert_eq!(maps(&vm).free_slots(), SLOTS.len());
}

#[test]
fn intx_goes_through_a_resample_irqfd_and_the_resample_unmasks_the_device() {
    let Some(vm) = vm() else {
        return;
    };
    let apic = LocalApic::new(&vm.vm, 0).unwrap();
    route_ioapic_pin(&vm.vm, 5, 0x51).unwrap();
    let sim = sim();
    let dev = PassthroughDevice::new(sim.clone(), &vm.res, opts(2)).unwrap();
    // After reset INTx is live: trigger and unmask eventfds bound, from the INTx line.
    assert_eq!(dev.irq_mode(), IrqMode::Intx);
    assert_eq!(vm.router.stats().irqfd_attaches, 1);
    let line = dev.intx_line().unwrap();
    assert_eq!(line.gsi(), 5);
    sim.assert_intx();
    assert_eq!(sim.counters().signals, 1);
    assert!(
        apic.wait_pending(0x51),
        "KVM asserted pin 5 through the IOAPIC"
    );
    assert!(line.trigger().read().is_err(), "KVM consumed the trigger");
    assert!(sim.is_intx_masked(), "VFIO masks INTx when it fires");
    // No vCPU runs here, so nothing sends the EOI that makes KVM signal the resample
    // eventfd; signal it as KVM would. VFIO reads it as the INTx unmask eventfd. The device
    // still asserts its line: unmasking fires again, and masks again.
    line.resample().write(1).unwrap();
    assert!(sim.is_intx_masked());
    assert_eq!(sim.counters().signals, 2, "level-triggered: fired again");
    // The device drops its line (the driver cleared the cause); the next resample unmasks.
    sim.deassert_intx();
    line.resample().write(1).unwrap();
    assert!(!sim.is_intx_masked(), "the resample unmasked INTx");
    assert_eq!(sim.counters().signals, 2);
    drop(dev);
    assert_eq!(
        vm.router.stats().irqfd_detaches,
        1,
        "the line left with the device"
    );
}

#[test]
fn reset_puts_interrupts_config_and_mappings_back_as_built() {
    let Some(vm) = vm() else {
        return;
    };
    let sim = sim();
    let mut dev = PassthroughDevice::new(sim.clone(), &vm.res, opts(3)).unwrap();
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    scripted_guest::program_msix(&mut dev, 0, |_| true).unwrap();
    assert_eq!(dev.irq_mode(), IrqMode::Msix);
    assert_eq!(vm.router.gsis_in_use(), 8);
    assert!(!maps(&vm).installed().is_empty());
    let table = dev.msix_table().unwrap().entry(3).copied().unwrap();
    assert_ne!(table.data, 0);
    dev.reset().unwrap();
    assert_eq!(sim.counters().resets, 1);
    assert_eq!(vm.router.gsis_in_use(), 0, "routes released");
    assert!(dev.bar_address(0).is_none(), "BARs unassigned");
    assert!(maps(&vm).installed().is_empty(), "their slots removed");
    assert_eq!(dev.msix_table().unwrap().entry(3).copied().unwrap().data, 0);
    assert_eq!(
        dev.irq_mode(),
        IrqMode::Intx,
        "INTx live again, as after power-on"
    );
    assert_eq!(scripted_guest::config_read_u16(&dev, 0x04) & 0x6, 0);
    assert_eq!(dev.stats().resets, 1);
    // The guest can bring it up again.
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    scripted_guest::program_msix(&mut dev, 0, |_| true).unwrap();
    assert_eq!(vm.router.gsis_in_use(), 8);
}

#[test]
fn a_thousand_plug_and_unplug_cycles_leave_the_vm_as_it_was() {
    let Some(vm) = vm() else {
        return;
    };
    let host_before: Vec<_> = vm.res.host_space.lock().unwrap().taken().collect();
    let table_before = vm.router.committed_table();
    let mut probe_at = None;
    for cycle in 0..1000u32 {
        let sim = sim();
        let mut dev = PassthroughDevice::new(sim.clone(), &vm.res, opts(cycle % 7)).unwrap();
        let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
        scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
        scripted_guest::program_msix(&mut dev, 0, |v| v % 2 == 0).unwrap();
        assert_eq!(vm.router.gsis_in_use(), 4);
        let installed = maps(&vm).installed();
        let slots = installed.len();
        assert!(slots >= 2);
        if cycle == 0 {
            probe_at = Some(installed[0].gpa);
            assert!(kvm_slot_over(&vm, installed[0].gpa));
        }
        let report = dev.unplug();
        assert_eq!(report.gsis_released, 4, "cycle {cycle}");
        assert_eq!(
            report.irqfds_detached,
            4 + 1,
            "4 MSI-X irqfds and the INTx line"
        );
        assert_eq!(report.routing_commits, 1, "one commit removes every route");
        assert_eq!(report.slots_removed, slots as u64);
        assert_eq!(report.reservations_released, 1, "BAR 2's page");
        assert_eq!(report.set_irqs_calls, 1, "MSI-X disabled");
        assert_eq!(sim.active_irq_index(), None);
    }
    let stats = vm.router.stats();
    assert_eq!(vm.router.gsis_in_use(), 0);
    assert_eq!(vm.router.committed_table(), table_before);
    assert_eq!(stats.irqfd_attaches, stats.irqfd_detaches);
    let host_after: Vec<_> = vm.res.host_space.lock().unwrap().taken().collect();
    assert_eq!(host_after, host_before);
    assert!(maps(&vm).installed().is_empty());
    assert_eq!(maps(&vm).free_slots(), SLOTS.len());
    assert_eq!(maps(&vm).registered(), 0);
    assert!(vm
        .res
        .guest_pages
        .lock()
        .unwrap()
        .mappings()
        .next()
        .is_none());
    assert!(
        !kvm_slot_over(&vm, probe_at.unwrap()),
        "KVM has no slot left there"
    );
}

/// The lab's e1000e, as its physical config space reads (it has a PCI Express capability).
fn e1000e_sim() -> Arc<SimDevice> {
    let text = include_str!("../../fixtures/lab/e1000e.sysfs.lspci-x");
    let entry = pci_config::lspci::parse_dump(text).unwrap().remove(0);
    Arc::new(
        SimDevice::from_config_space_builder(entry.space)
            // BAR sizes as the lab's kernel reported them (the dump has none).
            .bar(0, BarKind::Mem32, 0x2_0000, false)
            .bar(1, BarKind::Mem32, 0x2_0000, false)
            .bar(2, BarKind::Io, 0x20, false)
            .bar(3, BarKind::Mem32, 0x4000, false)
            .build()
            .unwrap(),
    )
}

#[test]
fn a_guest_function_level_reset_resets_the_emulated_state() {
    let Some(vm) = vm() else {
        return;
    };
    let sim = e1000e_sim();
    let mut dev = PassthroughDevice::new(sim.clone(), &vm.res, opts(4)).unwrap();
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    scripted_guest::program_msix(&mut dev, 0, |_| true).unwrap();
    assert_eq!(vm.router.gsis_in_use(), 5);
    let exp = scripted_guest::find_capability(&dev, 0x10).unwrap();
    let devctl = scripted_guest::config_read_u16(&dev, exp + 8);
    // A write that does not set Initiate FLR is no reset.
    let events = dev.config_write(exp + 8, &devctl.to_le_bytes());
    assert!(!events.reset);
    let events = dev.config_write(exp + 8, &(devctl | 0x8000).to_le_bytes());
    assert!(events.reset);
    assert_eq!(dev.stats().resets, 1);
    assert_eq!(vm.router.gsis_in_use(), 0);
    assert!(dev.bar_address(0).is_none());
    assert!(maps(&vm).installed().is_empty());
    assert_eq!(scripted_guest::config_read_u16(&dev, 0x04) & 0x7, 0);
}
