// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lab: the type1 container scenarios on the kernel's container (the host runs them on the
//! simulated one: `tests/iommu.rs`). The group attached is the e1000e's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod iommu_rules;

use std::any::Any;
use std::sync::Arc;

use vfio_core::lab::LabDevices;
use vfio_core::{Container, Type1, VfioContainer};

struct Kernel {
    container: Arc<Container>,
    group: u32,
}

impl iommu_rules::Rig for Kernel {
    fn container(&self) -> &dyn VfioContainer {
        self.container.as_ref()
    }
    fn raw(&self) -> &dyn Type1 {
        self.container.as_ref()
    }
    fn join(&self) -> Box<dyn Any> {
        Box::new(self.container.group(self.group).unwrap())
    }
}

/// A container for the e1000e's group (an ordinary vfio-pci device).
fn rig() -> Kernel {
    let lab = LabDevices::from_env().unwrap();
    Kernel {
        container: Container::new().unwrap(),
        group: lab.e1000e().unwrap().iommu_group().unwrap(),
    }
}

/// A container for an mtty mdev's group only (a mediated device that pins nothing).
fn mediated_rig() -> Kernel {
    let lab = LabDevices::from_env().unwrap();
    Kernel {
        container: Container::new().unwrap(),
        group: lab.mtty(0).unwrap().iommu_group().unwrap(),
    }
}

#[test]
fn dirty_pages_follow_the_kernel() {
    iommu_rules::dirty_pages_follow_the_kernel(&rig(), false);
}

#[test]
fn dirty_pages_of_mediated_devices_follow_the_kernel() {
    iommu_rules::dirty_pages_follow_the_kernel(&mediated_rig(), true);
}

#[test]
fn the_vmm_bitmap_is_the_union_with_the_iommus() {
    iommu_rules::the_vmm_bitmap_is_the_union_with_the_iommus(&rig(), false);
    iommu_rules::the_vmm_bitmap_is_the_union_with_the_iommus(&mediated_rig(), true);
}

#[test]
fn raw_map_and_unmap_rules() {
    iommu_rules::raw_map_and_unmap_rules(&rig());
}

#[test]
fn guest_regions_follow_the_groups() {
    iommu_rules::guest_regions_follow_the_groups(&rig());
}

/// A real vfio-pci device has no DMA-logging feature (ENOTTY): the tracker falls back to the
/// container, which reports every mapped page of guest memory, and nothing outside it.
#[test]
fn the_tracker_falls_back_to_the_container_for_a_device_without_dma_logging() {
    use vfio_core::{DirtySource, DirtyTracker, DmaLogging};
    let lab = LabDevices::from_env().unwrap();
    let container = Container::new().unwrap();
    let dev = Arc::new(container.open_device(&lab.e1000e().unwrap()).unwrap());
    let err = dev.dma_logging_start(4096, &[(0, 4096)]).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOTTY));
    container
        .map_guest_region(&iommu_rules::region(0, 32 * 4096))
        .unwrap();
    let t = DirtyTracker::start(container.clone(), vec![dev.clone()]).unwrap();
    assert_eq!(t.source(), DirtySource::Container);
    let mut bits = [1u64 << 40];
    t.report(0, &mut bits).unwrap();
    assert_eq!(bits[0], 0xffff_ffff | (1 << 40));
    t.stop().unwrap();
}
