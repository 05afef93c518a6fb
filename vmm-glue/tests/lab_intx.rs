// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lab: INTx of a real e1000e through `PassthroughDevice` with an INTx line from the router
//! (`DeviceOptions::intx_gsi`), the way a VMM wires it on KVM: the line's trigger is VFIO's INTx
//! eventfd and its resample eventfd VFIO's INTx unmask eventfd. The lab's guest has no KVM, so
//! the router is the in-memory one and the test signals the resample eventfd where KVM would on
//! the guest's EOI; the device, vfio-pci's INTx handling (automask, unmask with the line still
//! asserted) and the eventfds are real.
//!
//! The e1000e raises INTx from its interrupt registers (LAB.md): IMS enables a cause, ICS sets
//! it, reading ICR clears it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use irq_routing::{MemoryBackend, Router};
use vfio_core::info::BAR0_REGION_INDEX;
use vfio_core::lab::LabDevices;
use vfio_core::{Container, VfioDevice};
use vmm_glue::{DeviceOptions, IrqMode, PassthroughDevice, VmResources};
use vmm_sys_util::eventfd::EventFd;

const ICR: u64 = 0xc0;
const ICS: u64 = 0xc8;
const IMS: u64 = 0xd0;
const IMC: u64 = 0xd8;
/// Transmit descriptor written back: the cause bit that raises INTx and MSI.
const TXDW: u32 = 1;

fn write32(dev: &dyn VfioDevice, offset: u64, value: u32) {
    dev.region_write(BAR0_REGION_INDEX, offset, &value.to_le_bytes())
        .unwrap();
}

fn read32(dev: &dyn VfioDevice, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.region_read(BAR0_REGION_INDEX, offset, &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// Signals `fd` collected within `timeout` (the kernel delivers asynchronously).
fn signals(fd: &EventFd, timeout: Duration) -> u64 {
    let start = Instant::now();
    loop {
        if let Ok(n) = fd.read() {
            return n;
        }
        if start.elapsed() > timeout {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn e1000e_intx_through_an_intx_line_with_its_resample_eventfd() {
    let lab = LabDevices::from_env().unwrap();
    let container = Container::new().unwrap();
    let e1000e = Arc::new(container.open_device(&lab.e1000e().unwrap()).unwrap());
    let backend = MemoryBackend::new();
    let router = Arc::new(Router::new(backend.clone()).unwrap());
    let host = bar_mmap::HostResourceSpace::new(0xe000_0000, 0x1000_0000)
        .unwrap()
        .into_shared();
    let vm = VmResources::new(router.clone(), host, bar_mmap::PageSize::SIZE_4K);
    let opts = DeviceOptions {
        id: 3,
        intx_gsi: Some(10),
        ..DeviceOptions::default()
    };
    let mut dev = PassthroughDevice::new(e1000e.clone(), &vm, opts).unwrap();
    assert_eq!(dev.irq_mode(), IrqMode::Intx, "INTx is live after reset");
    // The guest's driver turns memory decode on (the device starts with it off, as after
    // reset; vfio-pci answers EIO to BAR accesses until then).
    let events = dev.config_write(0x04, &0x0002u16.to_le_bytes());
    assert!(!events.reset);
    let line = dev.intx_line().unwrap();
    let (trigger, resample) = (line.trigger().clone(), line.resample().clone());
    assert_eq!(backend.attached_gsi(&trigger), Some(10));
    assert_eq!(
        backend.resample_fd(&trigger),
        Some(std::os::fd::AsRawFd::as_raw_fd(&*resample))
    );
    // The device asserts INTx: vfio-pci masks the line and signals the trigger once.
    let _ = read32(&*e1000e, ICR);
    write32(&*e1000e, IMS, TXDW);
    write32(&*e1000e, ICS, TXDW);
    assert_eq!(signals(&trigger, Duration::from_secs(5)), 1);
    assert_eq!(
        signals(&trigger, Duration::from_millis(200)),
        0,
        "automasked"
    );
    // The guest's EOI would make KVM signal the resample eventfd: with the line still
    // asserted, vfio-pci unmasks, the interrupt fires again, and it masks again.
    resample.write(1).unwrap();
    assert_eq!(signals(&trigger, Duration::from_secs(5)), 1);
    assert_eq!(signals(&trigger, Duration::from_millis(200)), 0);
    // The guest's driver clears the cause (ICR is clear-on-read) and stops it; the next
    // resample unmasks a quiet line.
    write32(&*e1000e, IMC, TXDW);
    assert_ne!(read32(&*e1000e, ICR) & TXDW, 0);
    resample.write(1).unwrap();
    assert_eq!(signals(&trigger, Duration::from_millis(300)), 0);
    // And the next cause fires once more.
    write32(&*e1000e, IMS, TXDW);
    write32(&*e1000e, ICS, TXDW);
    assert_eq!(signals(&trigger, Duration::from_secs(5)), 1);
    write32(&*e1000e, IMC, TXDW);
    let _ = read32(&*e1000e, ICR);
    // Unplug: INTx disabled on the device, the line's irqfd unbound.
    let detaches = router.stats().irqfd_detaches;
    let report = dev.unplug();
    assert_eq!(report.set_irqs_calls, 1);
    assert_eq!(router.stats().irqfd_detaches, detaches + 1);
    assert_eq!(backend.attached_gsi(&trigger), None);
}
