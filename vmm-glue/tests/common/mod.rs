// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shared setup for the in-memory-backend tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bar_mmap::{HostResourceSpace, PageSize};
use irq_routing::{MemoryBackend, Router};
use migration_state::DeviceState;
use vfio_core::sim::{MsixPlacement, SimDevice};
use vfio_core::VfioDevice;
use vmm_glue::{scripted_guest, DeviceOptions, PassthroughDevice, Strategy, VmResources};

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
    device_on(vm, sim.clone(), id, strategy)
}

pub fn device_on(
    vm: &Vm,
    vfio: Arc<dyn VfioDevice>,
    id: u32,
    strategy: Strategy,
) -> PassthroughDevice {
    let opts = DeviceOptions {
        id,
        strategy,
        ..DeviceOptions::default()
    };
    PassthroughDevice::new(vfio, &vm.res, opts).unwrap()
}

/// A per-device-strategy device whose BARs the scripted firmware placed in a 1 MiB window of
/// its own (from 0xc000_0000 + `id` MiB).
pub fn placed_device(vm: &Vm, vfio: Arc<dyn VfioDevice>, id: u32) -> PassthroughDevice {
    let mut dev = device_on(vm, vfio, id, Strategy::PerDevice);
    let (mut mmio, mut pio) = (0xc000_0000u64 + u64::from(id) * 0x10_0000, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    dev
}

/// Saved states of one placed device per entry of `vectors` (its MSI-X vector count), in a
/// VM of their own, whose guest programmed and unmasked every MSI-X vector.
pub fn programmed_states(vectors: &[u16]) -> Vec<DeviceState> {
    let src = vm();
    vectors
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut d = placed_device(&src, msix_sim(*n), i as u32);
            scripted_guest::program_msix(&mut d, i, |_| true).unwrap();
            d.save()
        })
        .collect()
}

/// A fresh VM with one placed device per entry of `vectors`, nothing enabled yet.
pub fn fresh_devices(vectors: &[u16]) -> (Vm, Vec<Arc<SimDevice>>, Vec<PassthroughDevice>) {
    let vm = vm();
    let sims: Vec<_> = vectors.iter().map(|n| msix_sim(*n)).collect();
    let devs = sims
        .iter()
        .enumerate()
        .map(|(i, s)| placed_device(&vm, s.clone(), i as u32))
        .collect();
    (vm, sims, devs)
}
