// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulated device's stimuli and fault injection for what the lab cannot provoke: a
//! positive SET_IRQS return, the REQ and ERR signals, MSI from the device, and the rules that
//! hold for devices unlike the lab's (no PCI Express, no reset).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;

use common::{eventfds, msix_device, raw, take_count};
use vfio_core::info::{ERR_IRQ_INDEX, MSIX_IRQ_INDEX, MSI_IRQ_INDEX, REQ_IRQ_INDEX};
use vfio_core::sim::{MsixMode, RaiseOutcome, SimDevice};
use vfio_core::{Error, IrqSet, MsixTriggers, VfioDevice};

/// vfio_msi_enable(): when the PCI core allocates fewer vectors than asked, vfio-pci frees
/// them and SET_IRQS returns the count it got; nothing is enabled. The device reports it as
/// `SetIrqsIncomplete`, and a later enable that fits works.
#[test]
fn a_short_vector_allocation_enables_nothing() {
    let sim = msix_device(8, MsixMode::NoResize);
    let fds = eventfds(8);
    sim.fail_msi_alloc(3);
    let err = sim
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, raw(&fds)))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SetIrqsIncomplete {
                index: MSIX_IRQ_INDEX,
                available: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(sim.active_irq_index(), None);
    assert_eq!(sim.counters().request_irq, 0);
    // Through the trigger cache: the failure is returned and nothing is cached as set.
    sim.fail_msi_alloc(3);
    let dev: &dyn VfioDevice = sim.as_ref();
    let mut cache = MsixTriggers::for_device(dev).unwrap();
    assert!(cache.enable_all(dev, &raw(&fds)).is_err());
    assert!(!cache.is_enabled());
    cache.enable_all(dev, &raw(&fds[..3])).unwrap();
    assert_eq!(sim.active_irq_index(), Some(MSIX_IRQ_INDEX));
    assert_eq!(sim.allocated_vectors(), 3);
}

/// REQ (device removal, vfio_pci_core_request()) and ERR (AER, vfio_pci_core_aer_err_detected())
/// signal their eventfd when one is bound.
#[test]
fn request_and_aer_error_signal_their_eventfds() {
    let text = include_str!("../../fixtures/lab/e1000e.sysfs.lspci-x");
    let space = pci_config::parse_dump(text).unwrap().remove(0).space;
    let sim = SimDevice::from_config_space_builder(space)
        .bar(3, pci_config::BarKind::Mem32, 0x4000, false)
        .build()
        .unwrap();
    assert_eq!(sim.request(), RaiseOutcome::Dropped);
    assert_eq!(sim.aer_error(), RaiseOutcome::Dropped);
    let fds = eventfds(2);
    for (index, fd) in [(REQ_IRQ_INDEX, &fds[0]), (ERR_IRQ_INDEX, &fds[1])] {
        sim.set_irqs(&IrqSet::eventfds(index, 0, vec![Some(fd.as_raw_fd())]))
            .unwrap();
    }
    assert_eq!(sim.request(), RaiseOutcome::Signalled(fds[0].as_raw_fd()));
    assert_eq!(sim.aer_error(), RaiseOutcome::Signalled(fds[1].as_raw_fd()));
    assert_eq!(sim.request(), RaiseOutcome::Signalled(fds[0].as_raw_fd()));
    assert_eq!((take_count(&fds[0]), take_count(&fds[1])), (2, 1));
}

/// MSI from the device: delivered while MSI is enabled with a trigger and, for a device that
/// needs it, Bus Master is on; dropped otherwise.
#[test]
fn msi_from_the_device_needs_an_eventfd_and_bus_master() {
    let sim = SimDevice::builder(0x8086, 0x10d3)
        .msi(1)
        .msi_needs_bus_master(true)
        .build()
        .unwrap();
    let fds = eventfds(1);
    assert_eq!(sim.raise_msi(), RaiseOutcome::Dropped);
    sim.set_irqs(&IrqSet::eventfds(MSI_IRQ_INDEX, 0, vec![None]))
        .unwrap();
    assert_eq!(sim.raise_msi(), RaiseOutcome::Dropped, "no Bus Master");
    sim.region_write(vfio_core::info::CONFIG_REGION_INDEX, 4, &[0x4, 0])
        .unwrap();
    assert_eq!(sim.raise_msi(), RaiseOutcome::Dropped, "no eventfd");
    sim.set_irqs(&IrqSet::eventfds(
        MSI_IRQ_INDEX,
        0,
        vec![Some(fds[0].as_raw_fd())],
    ))
    .unwrap();
    assert_eq!(sim.raise_msi(), RaiseOutcome::Signalled(fds[0].as_raw_fd()));
    assert_eq!(take_count(&fds[0]), 1);
    assert_eq!(sim.counters().dropped, 3);
}

/// A conventional PCI function has no ERR index (vfio_pci_ioctl_get_irq_info() EINVAL; with
/// a count of 0 every SET_IRQS on it is EINVAL); a function vfio-pci could not reset at open
/// answers VFIO_DEVICE_RESET with EINVAL (vfio_pci_ioctl_reset()).
#[test]
fn no_err_index_without_pcie_and_no_reset_without_reset_works() {
    let sim = SimDevice::builder(0x8086, 0x10d3)
        .reset(false)
        .build()
        .unwrap();
    assert!(sim.info().irq(ERR_IRQ_INDEX).is_none());
    assert_eq!(sim.info().num_irqs(), 5);
    let fds = eventfds(1);
    let err = sim
        .set_irqs(&IrqSet::eventfds(
            ERR_IRQ_INDEX,
            0,
            vec![Some(fds[0].as_raw_fd())],
        ))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(sim.reset().unwrap_err().errno(), Some(libc::EINVAL));
    let req = sim.info().irq(REQ_IRQ_INDEX).unwrap();
    assert!(req.is_noresize());
}
