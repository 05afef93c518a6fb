// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest-hostile input: each case has a defined outcome, asserted here. The cases that reach
//! interrupt routing run on both routing backends from one body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;

use irq_routing::testing::TestBackend;
use vfio_core::sim::{RaiseOutcome, SimDevice};
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vmm_glue::scripted_guest::{self, config_read_u16, config_read_u32, find_capability};
use vmm_glue::{DeviceOptions, IrqMode, PassthroughDevice, Strategy};

use common::{device, guest_device, msix_sim, vm, vm_on};

irq_routing::both_backends!(
    misaligned_odd_sized_and_out_of_range_table_writes_are_ignored,
    pba_writes_change_no_pending_bit,
    msi_and_msix_enabled_together_refuses_the_second,
    an_unmasked_vector_the_guest_never_programmed_injects_nothing,
);

fn misaligned_odd_sized_and_out_of_range_table_writes_are_ignored(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let (sim, mut dev, prog) = guest_device(&vm, 4, |_| true);
    let bar = dev.bar_address(0).unwrap();
    let table = dev.msix_table().unwrap().clone();
    let commits = vm.router.stats().commits;
    let set_irqs = sim.counters().set_irqs;
    let ignored = dev.stats().ignored_mmio;
    let t = prog.table_address - bar;
    let hostile: &[(u64, usize)] = &[
        (t + 1, 4),          // misaligned dword
        (t + 4, 8),          // misaligned qword
        (t + 2, 2),          // word access
        (t + 12, 1),         // byte access to vector control
        (t + 4 * 16 - 4, 8), // straddles the end of the table
    ];
    for &(off, len) in hostile {
        dev.mmio_write(MmioAddress(bar), off, &vec![0u8; len]);
        let mut buf = vec![0xaau8; len];
        dev.mmio_read(MmioAddress(bar), off, &mut buf);
        assert!(buf.iter().all(|b| *b == 0), "read at {off:#x}/{len}");
    }
    assert_eq!(dev.msix_table().unwrap(), &table);
    assert_eq!(vm.commits(), commits);
    assert_eq!(sim.counters().set_irqs, set_irqs);
    assert_eq!(dev.stats().ignored_mmio, ignored + hostile.len() as u64);
    // Every vector still delivers its own message.
    for v in 0..4 {
        assert!(vm.delivers(&dev, 0, v), "vector {v}");
    }
    // An access outside every BAR of the device is dropped and reads zero.
    let mut buf = [0xaa; 4];
    dev.mmio_read(MmioAddress(0x1000), 0, &mut buf);
    assert_eq!(buf, [0; 4]);
}

/// The PBA is read-only: with a pending bit set (a masked vector fired), guest writes of
/// zeros and of ones, DWORD and QWORD, clear no bit and set none, issue nothing, and are
/// counted; the pending interrupt is still delivered once on unmask.
fn pba_writes_change_no_pending_bit(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let masked = 2u16;
    let (sim, mut dev, prog) = guest_device(&vm, 4, |v| v != masked);
    let bar = dev.bar_address(0).unwrap();
    let user = dev.msix_user_eventfd(masked).unwrap().as_raw_fd();
    assert_eq!(sim.raise(u32::from(masked)), RaiseOutcome::Signalled(user));
    assert_eq!(dev.poll_userspace_interrupts(), 1);
    let pba = prog.pba_address - bar;
    let read_pba = |dev: &mut PassthroughDevice| {
        let mut q = [0u8; 8];
        dev.mmio_read(MmioAddress(bar), pba, &mut q);
        u64::from_le_bytes(q)
    };
    assert_eq!(read_pba(&mut dev), 1 << masked);
    let (commits, set_irqs, ignored) = (
        vm.commits(),
        sim.counters().set_irqs,
        dev.stats().ignored_mmio,
    );
    let writes: &[(u64, &[u8])] = &[
        (0, &[0; 8]),
        (0, &[0xff; 8]),
        (0, &[0; 4]),
        (0, &[0xff; 4]),
        (4, &[0xff; 4]),
    ];
    for (off, data) in writes {
        dev.mmio_write(MmioAddress(bar), pba + off, data);
        assert_eq!(
            read_pba(&mut dev),
            1 << masked,
            "after writing {data:?} at +{off}"
        );
    }
    assert_eq!(dev.stats().ignored_mmio, ignored + writes.len() as u64);
    assert_eq!((vm.commits(), sim.counters().set_irqs), (commits, set_irqs));
    for v in 0..4 {
        assert_eq!(
            dev.msix_table().unwrap().is_pending(v),
            v == masked,
            "vector {v}"
        );
    }
    // Unmasking delivers the pending interrupt once and clears the bit.
    let ctrl = prog.table_address - bar + 16 * u64::from(masked) + 12;
    dev.mmio_write(MmioAddress(bar), ctrl, &0u32.to_le_bytes());
    assert_eq!(read_pba(&mut dev), 0);
    assert_eq!(dev.stats().pending_delivered, 1);
    assert!(vm.received(&dev, 0, masked));
}

#[test]
fn read_only_and_emulated_config_bits_do_not_change() {
    let vm = vm();
    let sim = msix_sim(4);
    let mut dev = device(&vm, &sim, 0, Strategy::PerDevice);
    assert_eq!(dev.irq_mode(), IrqMode::Intx);
    let vendor = config_read_u32(&dev, 0);
    dev.config_write(0, &0xdead_beefu32.to_le_bytes());
    assert_eq!(config_read_u32(&dev, 0), vendor);
    let cap = find_capability(&dev, scripted_guest::CAP_ID_MSIX).unwrap();
    let ctrl = config_read_u16(&dev, cap + 2);
    let table = config_read_u32(&dev, cap + 4);
    let pba = config_read_u32(&dev, cap + 8);
    // Table size, table BIR/offset and PBA BIR/offset are read-only.
    dev.config_write(cap + 2, &0x07ffu16.to_le_bytes());
    dev.config_write(cap + 4, &0xffff_ffffu32.to_le_bytes());
    dev.config_write(cap + 8, &0u32.to_le_bytes());
    assert_eq!(config_read_u16(&dev, cap + 2) & 0x7ff, ctrl & 0x7ff);
    assert_eq!(config_read_u32(&dev, cap + 4), table);
    assert_eq!(config_read_u32(&dev, cap + 8), pba);
    // The capability pointer cannot be redirected.
    let ptr = config_read_u16(&dev, 0x34);
    dev.config_write(0x34, &[0x80]);
    assert_eq!(config_read_u16(&dev, 0x34), ptr);
    // Ill-formed config accesses are ignored and read as all ones.
    dev.config_write(cap + 1, &[0u8; 4]);
    dev.config_write(0x1000, &[0u8; 1]);
    assert_eq!(dev.stats().ignored_config_accesses, 2);
    let mut b = [0u8; 4];
    dev.config_read(2, &mut b);
    assert_eq!(b, [0xff; 4]);
    // Nothing of the emulated MSI-X capability reached the device's interrupts.
    assert_eq!(sim.counters().set_irqs, 0);
    assert_eq!(dev.irq_mode(), IrqMode::Intx);
}

fn msi_and_msix_enabled_together_refuses_the_second(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let sim = msix_sim(4);
    let mut dev = device(&vm, &sim, 0, Strategy::PerDevice);
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    scripted_guest::program_msix(&mut dev, 0, |_| true).unwrap();
    assert_eq!(dev.irq_mode(), IrqMode::Msix);
    let set_irqs = sim.counters().set_irqs;
    let msi = find_capability(&dev, scripted_guest::CAP_ID_MSI).unwrap();
    dev.config_write(msi + 2, &1u16.to_le_bytes());
    assert_eq!(
        config_read_u16(&dev, msi + 2) & 1,
        0,
        "MSI enable must read back 0"
    );
    assert_eq!(dev.irq_mode(), IrqMode::Msix);
    assert_eq!(dev.stats().refused_enables, 1);
    assert_eq!(sim.counters().set_irqs, set_irqs);
    assert_eq!(
        sim.active_irq_index(),
        Some(vfio_core::info::MSIX_IRQ_INDEX)
    );
    // MSI-X keeps delivering through its routes.
    assert!(vm.delivers(&dev, 0, 1));

    // The other way round: MSI first, then MSI-X is refused.
    let sim2 = msix_sim(4);
    let mut dev2 = device(&vm, &sim2, 1, Strategy::PerDevice);
    dev2.config_write(msi + 4, &0xfee0_0000u32.to_le_bytes());
    dev2.config_write(msi + 2, &1u16.to_le_bytes());
    assert_eq!(dev2.irq_mode(), IrqMode::Msi);
    let msix = find_capability(&dev2, scripted_guest::CAP_ID_MSIX).unwrap();
    dev2.config_write(msix + 2, &0x8000u16.to_le_bytes());
    assert_eq!(config_read_u16(&dev2, msix + 2) & 0x8000, 0);
    assert_eq!(dev2.irq_mode(), IrqMode::Msi);
    assert_eq!(
        sim2.active_irq_index(),
        Some(vfio_core::info::MSI_IRQ_INDEX)
    );
    assert!(dev2.msix_route(0).is_none());
    let msi_msg = irq_routing::MsiMessage::new(0xfee0_0000, 0);
    assert!(vm.test_vm.delivers(dev2.msi_irqfd(0).unwrap(), msi_msg));
}

fn sub_page_sim() -> Arc<SimDevice> {
    Arc::new(
        SimDevice::builder(0x1af4, 0x1041)
            .bar(0, pci_config::BarKind::Mem32, 0x100, false)
            .sub_page_mmap(true)
            .build()
            .unwrap(),
    )
}

#[test]
fn bar_moved_onto_another_devices_page_traps_both_until_it_leaves() {
    let vm = vm();
    let mk = |id: u32, host: u64| {
        let opts = DeviceOptions {
            id,
            host_bar_addresses: [host, 0, 0, 0, 0, 0],
            ..DeviceOptions::default()
        };
        PassthroughDevice::new(sub_page_sim(), &vm.res, opts).unwrap()
    };
    let mut a = mk(1, 0xe000_0000);
    let mut b = mk(2, 0xe000_1000);
    let (mut pio, mut mmio_a, mut mmio_b) = (0x1000u64, 0xc000_0000u64, 0xc000_1000u64);
    scripted_guest::place_bars(&mut a, &mut mmio_a, &mut pio, false);
    scripted_guest::place_bars(&mut b, &mut mmio_b, &mut pio, false);
    assert!(a.is_bar_mapped(0) && b.is_bar_mapped(0));

    // B's BAR moves into the rest of A's page.
    b.config_write(0x10, &0xc000_0800u32.to_le_bytes());
    assert_eq!(b.bar_address(0), Some(0xc000_0800));
    assert!(!a.is_bar_mapped(0), "A's page is shared now");
    assert!(!b.is_bar_mapped(0));
    let unmaps = b
        .take_map_changes()
        .into_iter()
        .filter(|c| matches!(c, bar_mmap::MapChange::Unmap(_)))
        .count();
    assert_eq!(unmaps, 2);
    // Trapped accesses still reach the right device.
    a.mmio_write(
        MmioAddress(0xc000_0000),
        0x10,
        &0x1234_5678u32.to_le_bytes(),
    );
    b.mmio_write(
        MmioAddress(0xc000_0800),
        0x10,
        &0x9abc_def0u32.to_le_bytes(),
    );
    let mut buf = [0u8; 4];
    a.mmio_read(MmioAddress(0xc000_0000), 0x10, &mut buf);
    assert_eq!(u32::from_le_bytes(buf), 0x1234_5678);
    b.mmio_read(MmioAddress(0xc000_0800), 0x10, &mut buf);
    assert_eq!(u32::from_le_bytes(buf), 0x9abc_def0);

    // B moves away: both pages are exclusive again.
    b.config_write(0x10, &0xc000_2000u32.to_le_bytes());
    assert!(a.is_bar_mapped(0) && b.is_bar_mapped(0));
}

fn an_unmasked_vector_the_guest_never_programmed_injects_nothing(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let (sim, mut dev, prog) = guest_device(&vm, 2, |v| v == 0);
    let bar = dev.bar_address(0).unwrap();
    let entry1 = prog.table_address - bar + 16;
    // The guest clears vector 1's address, then unmasks it: a message KVM cannot route.
    dev.mmio_write(MmioAddress(bar), entry1, &[0; 8]);
    dev.mmio_write(MmioAddress(bar), entry1 + 12, &0u32.to_le_bytes());
    assert!(dev.msix_route(1).is_none(), "vector 1 holds no route");
    let routes = vm.router.committed_table().len();

    // Device-side raise, seen by the VMM's poll: nothing to inject, counted.
    sim.raise(1);
    assert_eq!(dev.poll_userspace_interrupts(), 1);
    assert!(dev.take_userspace_messages().is_empty());
    assert_eq!(dev.stats().unprogrammed_dropped, 1);
    // VMM-side raise takes the same decision.
    dev.raise_vector(1);
    assert!(dev.take_userspace_messages().is_empty());
    assert_eq!(dev.stats().unprogrammed_dropped, 2);
    // Vector 0 still delivers through KVM, and nothing was routed for vector 1.
    assert!(vm.delivers(&dev, 0, 0));
    assert_eq!(vm.table().len(), routes);
    assert!(vm.received_nothing(&dev, 0, 1));
}
