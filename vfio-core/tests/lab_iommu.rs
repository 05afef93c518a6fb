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

fn rig() -> Kernel {
    let lab = LabDevices::from_env().unwrap();
    Kernel {
        container: Container::new().unwrap(),
        group: lab.e1000e().unwrap().iommu_group().unwrap(),
    }
}

#[test]
fn raw_map_and_unmap_rules() {
    iommu_rules::raw_map_and_unmap_rules(&rig());
}

#[test]
fn guest_regions_follow_the_groups() {
    iommu_rules::guest_regions_follow_the_groups(&rig());
}
