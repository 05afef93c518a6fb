// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shared setup for the in-memory-backend tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bar_mmap::{HostResourceSpace, PageSize};
use irq_routing::{MemoryBackend, Router};
use vfio_core::sim::{MsixPlacement, SimDevice};
use vmm_glue::{DeviceOptions, PassthroughDevice, Strategy, VmResources};

pub struct Vm {
    pub backend: MemoryBackend,
    pub router: Arc<Router>,
    pub res: VmResources,
}

pub fn vm() -> Vm {
    let backend = MemoryBackend::new();
    let router = Arc::new(Router::new(backend.clone()).unwrap());
    let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)
        .unwrap()
        .into_shared();
    let res = VmResources::new(router.clone(), host, PageSize::SIZE_4K);
    Vm {
        backend,
        router,
        res,
    }
}

pub fn msix_sim(vectors: u16) -> Arc<SimDevice> {
    Arc::new(
        SimDevice::builder(0x8086, 0x154c)
            .bar(0, pci_config::BarKind::Mem64, 0x4000, false)
            .msi(4)
            .msix(MsixPlacement::in_bar(vectors, 0))
            .build()
            .unwrap(),
    )
}

pub fn device(vm: &Vm, sim: &Arc<SimDevice>, id: u32, strategy: Strategy) -> PassthroughDevice {
    let opts = DeviceOptions {
        id,
        strategy,
        ..DeviceOptions::default()
    };
    PassthroughDevice::new(sim.clone(), &vm.res, opts).unwrap()
}
