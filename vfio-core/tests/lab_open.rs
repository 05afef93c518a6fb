// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lab: opening real devices through their IOMMU groups and a type1 container, and every way
//! that fails. Runs only inside the lab guest (`cargo xtask lab`), against Linux 6.12's VFIO.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use vfio_core::info::{DeviceFlags, IrqFlags, RegionFlags};
use vfio_core::info::{
    BAR0_REGION_INDEX, CONFIG_REGION_INDEX, ERR_IRQ_INDEX, INTX_IRQ_INDEX, MSIX_IRQ_INDEX,
    MSI_IRQ_INDEX, REQ_IRQ_INDEX, VGA_REGION_INDEX,
};
use vfio_core::lab::{self, LabDevices};
use vfio_core::{Container, DeviceAddress, Error, Uuid, VfioContainer, VfioDevice};

fn devices() -> LabDevices {
    LabDevices::from_env().expect("run inside the lab guest (cargo xtask lab)")
}

#[test]
fn e1000e_opens_and_reports_what_the_kernel_reports() {
    let lab = devices();
    let container = Container::new().unwrap();
    let dev = container.open_device(&lab.e1000e().unwrap()).unwrap();
    let info = dev.info();
    assert!(info.flags.contains(DeviceFlags::RESET | DeviceFlags::PCI));
    let bar0 = info.region(BAR0_REGION_INDEX).unwrap();
    assert_eq!(bar0.size, 0x20000);
    assert!(bar0
        .flags
        .contains(RegionFlags::READ | RegionFlags::WRITE | RegionFlags::MMAP));
    let bar2 = info.region(2).unwrap();
    assert_eq!(bar2.size, 0x20);
    assert!(
        !bar2.flags.contains(RegionFlags::MMAP),
        "an I/O BAR is not mmappable"
    );
    let bar3 = info.region(3).unwrap();
    assert!(bar3.msix_mappable, "{bar3:?}");
    assert_eq!(bar3.sparse_mmap, None);
    assert!(
        info.region(VGA_REGION_INDEX).is_none(),
        "region 8 gives EINVAL"
    );
    assert_eq!(info.region(CONFIG_REGION_INDEX).unwrap().size, 4096);
    let intx = info.irq(INTX_IRQ_INDEX).unwrap();
    assert_eq!(intx.count, 1);
    assert_eq!(
        intx.flags,
        IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED
    );
    let msi = info.irq(MSI_IRQ_INDEX).unwrap();
    assert_eq!((msi.count, msi.is_noresize()), (1, true));
    let msix = info.irq(MSIX_IRQ_INDEX).unwrap();
    assert_eq!(
        (msix.count, msix.is_noresize()),
        (5, false),
        "dynamic MSI-X"
    );
    for index in [ERR_IRQ_INDEX, REQ_IRQ_INDEX] {
        let i = info.irq(index).unwrap();
        assert_eq!((i.count, i.is_noresize()), (1, true), "index {index}");
    }
    // The config region reads the vendor and device IDs.
    let mut id = [0u8; 4];
    dev.region_read(CONFIG_REGION_INDEX, 0, &mut id).unwrap();
    assert_eq!(u32::from_le_bytes(id), 0x10d3_8086);
    // Past the end of a region: EINVAL, before the kernel is asked.
    let err = dev.region_read(2, 0x1f, &mut [0u8; 2]).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(container.group_ids().len(), 1);
}

#[test]
fn the_container_reports_type1_iommu_info_once_a_group_is_attached() {
    let lab = devices();
    let container = Container::new().unwrap();
    // No group attached: the IOMMU is not set, GET_INFO is EINVAL.
    let err = container.iommu_info().unwrap_err();
    assert!(matches!(err, Error::IommuInfo(_)), "{err:?}");
    assert_eq!(err.errno(), Some(libc::EINVAL));
    let _dev = container.open_device(&lab.e1000e().unwrap()).unwrap();
    let info = container.iommu_info().unwrap();
    assert_eq!(info.page_sizes, 0x4020_1000);
    assert_eq!(info.min_page_size(), 4096);
    let ranges = info.iova_ranges.unwrap();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!((ranges[0].start, ranges[0].end), (0, 0xfedf_ffff));
    assert_eq!(
        (ranges[1].start, ranges[1].end),
        (0xfef0_0000, 0x7f_ffff_ffff)
    );
    let dirty = info.dirty_tracking.unwrap();
    assert_eq!(dirty.page_sizes, 4096);
    assert_eq!(dirty.max_bitmap_bytes, 0x1000_0000);
    assert_eq!(info.dma_avail, Some(65535));
}

#[test]
fn a_device_that_is_not_in_the_group_is_device_not_found() {
    let lab = devices();
    let container = Container::new().unwrap();
    let e1000e = lab.e1000e().unwrap();
    let group = container.group(e1000e.iommu_group().unwrap()).unwrap();
    let stranger = DeviceAddress::pci("00:1f.7").unwrap();
    let err = group.open_device(&stranger).unwrap_err();
    assert!(matches!(err, Error::DeviceNotFound { .. }), "{err:?}");
    assert_eq!(err.errno(), Some(libc::ENODEV));
    // The group is still attached and usable.
    group.open_device(&e1000e).unwrap();
}

#[test]
fn a_device_without_a_group_and_a_group_without_vfio_are_typed_errors() {
    let container = Container::new().unwrap();
    let err = container
        .open_device(&DeviceAddress::pci("00:1e.0").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::NoIommuGroup { .. }), "{err:?}");
    assert_eq!(err.errno(), Some(libc::ENOENT));
    // The ICH9 functions at 00:1f.x are in a group no VFIO driver has: no /dev/vfio node.
    let ich9 = DeviceAddress::pci("00:1f.0").unwrap();
    let err = container.open_device(&ich9).unwrap_err();
    assert!(matches!(err, Error::OpenGroup { .. }), "{err:?}");
    assert_eq!(err.errno(), Some(libc::ENOENT));
    assert!(container.group_ids().is_empty());
}

#[test]
fn a_vf_token_on_a_device_that_uses_none_is_refused() {
    let lab = devices();
    let container = Container::new().unwrap();
    let token = Uuid::random().unwrap();
    let err = container
        .open_device(&lab.e1000e().unwrap().with_vf_token(token))
        .unwrap_err();
    assert!(matches!(err, Error::VfTokenUnexpected { .. }), "{err:?}");
    assert_eq!(err.errno(), Some(libc::EINVAL));
}

#[test]
fn an_sriov_vf_opens_only_with_its_pfs_token() {
    let lab = devices();
    let container = Container::new().unwrap();
    // The PF first: opening it resets it, which on QEMU 7.2 would drop VFs created before.
    let pf = container.open_device(&lab.nvme_pf().unwrap()).unwrap();
    let pf_msix = pf.info().irq(MSIX_IRQ_INDEX).unwrap();
    assert_eq!((pf_msix.count, pf_msix.is_noresize()), (63, false));
    let token = Uuid::random().unwrap();
    pf.set_vf_token(token).unwrap();
    lab::set_numvfs(&lab.nvme_pf, 1).unwrap();
    let vf_bdf = lab::vf_address(&lab.nvme_pf, 0, Duration::from_secs(30)).unwrap();
    let vf = DeviceAddress::pci(&vf_bdf).unwrap();
    let err = container.open_device(&vf).unwrap_err();
    assert!(matches!(err, Error::VfTokenRefused { .. }), "{err:?}");
    assert_eq!(err.errno(), Some(libc::EACCES));
    let wrong = Uuid::random().unwrap();
    let err = container
        .open_device(&vf.clone().with_vf_token(wrong))
        .unwrap_err();
    assert!(matches!(err, Error::VfTokenRefused { .. }), "{err:?}");
    let dev = container.open_device(&vf.with_vf_token(token)).unwrap();
    let msix = dev.info().irq(MSIX_IRQ_INDEX).unwrap();
    assert_eq!(msix.count, 1);
    assert_eq!(dev.info().irq(INTX_IRQ_INDEX).map(|i| i.count), Some(0));
    // PF and VF are in different groups of the one container.
    assert_eq!(container.group_ids().len(), 2);
    drop(dev);
    lab::set_numvfs(&lab.nvme_pf, 0).unwrap();
}

#[test]
fn an_mdev_opens_by_uuid() {
    let lab = devices();
    let container = Container::new().unwrap();
    let dev = container.open_device(&lab.mtty(0).unwrap()).unwrap();
    let info = dev.info();
    assert_eq!(info.irq(INTX_IRQ_INDEX).map(|i| i.count), Some(1));
    assert_eq!(info.irq(MSI_IRQ_INDEX).map(|i| i.count), Some(1));
    assert!(
        info.irq(MSIX_IRQ_INDEX).is_none(),
        "mtty answers EINVAL for index 2"
    );
    assert_eq!(info.num_irqs(), 5);
    let mut id = [0u8; 4];
    dev.region_read(CONFIG_REGION_INDEX, 0, &mut id).unwrap();
    assert_ne!(u32::from_le_bytes(id), 0xffff_ffff);
}

#[test]
fn a_group_with_a_device_on_a_host_driver_is_not_viable() {
    let lab = devices();
    let container = Container::new().unwrap();
    let err = container
        .open_device(&DeviceAddress::pci(&lab.unviable).unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::GroupNotViable { .. }), "{err:?}");
    assert!(container.group_ids().is_empty());
}

#[test]
fn devices_of_one_group_share_it_and_it_leaves_with_the_last() {
    let lab = devices();
    assert_eq!(lab.shared_group.len(), 2, "{:?}", lab.shared_group);
    let container = Container::new().unwrap();
    let first = DeviceAddress::pci(&lab.shared_group[0]).unwrap();
    let second = DeviceAddress::pci(&lab.shared_group[1]).unwrap();
    assert_eq!(first.iommu_group().unwrap(), second.iommu_group().unwrap());
    let a = container.open_device(&first).unwrap();
    let b = container.open_device(&second).unwrap();
    assert!(Arc::ptr_eq(a.group().unwrap(), b.group().unwrap()));
    assert_eq!(container.group_ids().len(), 1);
    drop(a);
    assert_eq!(container.group_ids().len(), 1);
    drop(b);
    assert!(container.group_ids().is_empty());
    // The IOMMU went with the last group; the next group sets it again.
    let c = container.open_device(&second).unwrap();
    assert!(container.iommu_info().is_ok());
    drop(c);
}
