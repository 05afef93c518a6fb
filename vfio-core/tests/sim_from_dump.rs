// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A simulated device built from a real `lspci -x` dump.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::fd::AsRawFd;

use pci_config::BarKind;
use vfio_core::info::{CONFIG_REGION_INDEX, MSIX_IRQ_INDEX};
use vfio_core::sim::{RaiseOutcome, SimDevice};
use vfio_core::{MsixTriggers, VfioDevice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/pci-config");

#[test]
fn virtio_net_dump_gives_its_ids_and_msix_layout() {
    let text = std::fs::read_to_string(format!("{FIXTURES}/00-03-0_1af4-1041.lspci-x")).unwrap();
    let entry = pci_config::parse_dump(&text).unwrap().remove(0);
    // The dump has no BAR sizes; lspci -vvv shows BAR 0 is 64-bit memory, aligned to 1 MiB.
    let sim = SimDevice::from_config_space_builder(entry.space)
        .bar(0, BarKind::Mem64, 0x10_0000, false)
        .build()
        .unwrap();
    let mut ids = [0u8; 4];
    sim.region_read(CONFIG_REGION_INDEX, 0, &mut ids).unwrap();
    assert_eq!(ids, [0xf4, 0x1a, 0x41, 0x10]);
    // "MSI-X: Enable+ Count=3" in the lspci -vvv decoding of the same dump.
    let msix = sim.info().irq(MSIX_IRQ_INDEX).unwrap();
    assert_eq!(msix.count, 3);
    assert!(sim.info().region(0).unwrap().msix_mappable);

    let fds: Vec<EventFd> = (0..3)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let dev: &dyn VfioDevice = &sim;
    let mut t = MsixTriggers::for_device(dev).unwrap();
    let raw: Vec<_> = fds.iter().map(|f| Some(f.as_raw_fd())).collect();
    t.enable_all(dev, &raw).unwrap();
    assert_eq!(sim.counters().set_irqs, 1);
    assert_eq!(sim.raise(1), RaiseOutcome::Signalled(fds[1].as_raw_fd()));
    assert_eq!(fds[1].read().unwrap(), 1);
}
