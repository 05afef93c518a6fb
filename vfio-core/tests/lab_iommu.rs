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
