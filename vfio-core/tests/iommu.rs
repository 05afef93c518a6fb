// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The type1 container scenarios on the simulated container (the lab runs them on the
//! kernel's: `tests/lab_iommu.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod iommu_rules;

use std::any::Any;
use std::sync::Arc;

use vfio_core::sim::{lab_iommu_info, mediated_iommu_info, SimContainer};
use vfio_core::{Type1, VfioContainer};

struct Sim(Arc<SimContainer>);

impl iommu_rules::Rig for Sim {
    fn container(&self) -> &dyn VfioContainer {
        self.0.as_ref()
    }
    fn raw(&self) -> &dyn Type1 {
        self.0.as_ref()
    }
    fn join(&self) -> Box<dyn Any> {
        Box::new(self.0.join().unwrap())
    }
}

fn rig() -> Sim {
    Sim(SimContainer::new(lab_iommu_info()))
}

#[test]
fn raw_map_and_unmap_rules() {
    iommu_rules::raw_map_and_unmap_rules(&rig());
}

#[test]
fn guest_regions_follow_the_groups() {
    let rig = rig();
    iommu_rules::guest_regions_follow_the_groups(&rig);
    // The table was mapped twice: once per first group.
    assert_eq!(rig.0.counters().iommu_sets, 2);
}

#[test]
fn dirty_pages_follow_the_kernel() {
    iommu_rules::dirty_pages_follow_the_kernel(&rig(), false);
}

#[test]
fn dirty_pages_of_mediated_devices_follow_the_kernel() {
    let rig = Sim(SimContainer::new_mediated(mediated_iommu_info()));
    iommu_rules::dirty_pages_follow_the_kernel(&rig, true);
}

#[test]
fn the_vmm_bitmap_is_the_union_with_the_iommus() {
    iommu_rules::the_vmm_bitmap_is_the_union_with_the_iommus(&rig(), false);
    let rig = Sim(SimContainer::new_mediated(mediated_iommu_info()));
    iommu_rules::the_vmm_bitmap_is_the_union_with_the_iommus(&rig, true);
}

#[test]
fn a_region_refused_while_mapping_the_table_leaves_the_group_out() {
    let c = SimContainer::new(lab_iommu_info());
    // Outside the IOVA ranges, which are known only once the IOMMU is set.
    c.map_guest_region(&iommu_rules::region(0xfee0_0000, 0x1000))
        .unwrap();
    assert!(matches!(
        c.join(),
        Err(vfio_core::Error::DmaOutsideIovaRanges { .. })
    ));
    assert_eq!(c.groups(), 0);
    assert!(c.iommu_mappings().is_empty());
}
