// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shared setup: a VM on either routing backend (`irq_routing::testing`), simulated devices,
//! and the checks that read what KVM shows (delivery) or what the in-memory backend holds.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bar_mmap::{HostResourceSpace, PageSize};
use irq_routing::testing::{TestBackend, TestVm};
use irq_routing::{MemoryBackend, MsiMessage, RouteState, Router};
use migration_state::DeviceState;
use vfio_core::sim::{MsixPlacement, SimDevice};
use vfio_core::VfioDevice;
use vmm_glue::{scripted_guest, DeviceOptions, PassthroughDevice, Strategy, VmResources};

pub struct Vm {
    /// The backend the router runs on, and its delivery checks.
    pub test_vm: TestVm,
    pub router: Arc<Router>,
    pub res: VmResources,
}

impl Vm {
    /// The in-memory backend (for failure injection and its table); panics on KVM.
    pub fn backend(&self) -> &MemoryBackend {
        self.test_vm
            .memory()
            .expect("this test needs the in-memory backend")
    }

    /// Irqfds bound in the VM, from the router's counters; on the in-memory backend, checked
    /// against the backend's bindings.
    pub fn bound_irqfds(&self) -> usize {
        let s = self.router.stats();
        let n = (s.irqfd_attaches - s.failed_irqfd_attaches - s.irqfd_detaches) as usize;
        if let Some(m) = self.test_vm.memory() {
            assert_eq!(m.attached_irqfds().len(), n);
        }
        n
    }

    /// Table commits the router issued; on the in-memory backend, checked against the backend's
    /// count.
    pub fn commits(&self) -> u64 {
        let n = self.router.stats().commits;
        if let Some(m) = self.test_vm.memory() {
            assert_eq!(m.commits(), n);
        }
        n
    }

    /// The routes the router believes are in force; on the in-memory backend, checked against
    /// the backend's table.
    pub fn table(&self) -> Vec<irq_routing::RouteEntry> {
        let t = self.router.committed_table();
        if let Some(m) = self.test_vm.memory() {
            assert_eq!(m.table(), t);
        }
        t
    }

    /// Signalling vector `v`'s irqfd injects device `i`'s guest message for it (see
    /// `TestVm::delivers`).
    pub fn delivers(&self, d: &PassthroughDevice, i: usize, v: u16) -> bool {
        self.test_vm
            .delivers(d.msix_irqfd(v).unwrap(), guest_msg(i, v))
    }

    /// A signal already sent to vector `v`'s irqfd reached the guest as device `i`'s message.
    pub fn received(&self, d: &PassthroughDevice, i: usize, v: u16) -> bool {
        self.test_vm
            .received(d.msix_irqfd(v).unwrap(), guest_msg(i, v))
    }

    /// Nothing sent to vector `v`'s irqfd reached the guest.
    pub fn received_nothing(&self, d: &PassthroughDevice, i: usize, v: u16) -> bool {
        self.test_vm
            .received_nothing(d.msix_irqfd(v).unwrap(), guest_msg(i, v))
    }
}

/// The message the scripted guest programs into vector `v` of device `i`.
pub fn guest_msg(i: usize, v: u16) -> MsiMessage {
    let (address, data) = scripted_guest::message_for(i, v);
    MsiMessage::new(address, data)
}

/// A VM on the in-memory backend.
pub fn vm() -> Vm {
    vm_on(TestBackend::Memory).unwrap()
}

/// A VM on `backend`; `None` (a printed skip) where KVM is unusable, a panic instead with
/// `PASSTHROUGH_REQUIRE_KVM=1`.
pub fn vm_on(backend: TestBackend) -> Option<Vm> {
    let test_vm = TestVm::new(backend)?;
    let router = Arc::new(test_vm.router());
    let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)
        .unwrap()
        .into_shared();
    let res = VmResources::new(router.clone(), host, PageSize::SIZE_4K);
    Some(Vm {
        test_vm,
        router,
        res,
    })
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

/// Device 0 of `vm`: a simulated device with `vectors` MSI-X vectors whose BARs the scripted
/// firmware placed from 0xc000_0000 and whose guest programmed MSI-X, unmasking the vectors
/// `unmask` picks (per-device strategy).
pub fn guest_device(
    vm: &Vm,
    vectors: u16,
    unmask: impl Fn(u16) -> bool,
) -> (
    Arc<SimDevice>,
    PassthroughDevice,
    scripted_guest::MsixProgram,
) {
    let sim = msix_sim(vectors);
    let mut dev = device(vm, &sim, 0, Strategy::PerDevice);
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    let prog = scripted_guest::program_msix(&mut dev, 0, unmask).unwrap();
    (sim, dev, prog)
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
/// VM of their own on the in-memory backend, whose guest programmed and unmasked every MSI-X
/// vector.
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

/// A fresh in-memory VM with one placed device per entry of `vectors`, nothing enabled yet.
pub fn fresh_devices(vectors: &[u16]) -> (Vm, Vec<Arc<SimDevice>>, Vec<PassthroughDevice>) {
    fresh_devices_on(TestBackend::Memory, vectors).unwrap()
}

/// [`fresh_devices`] on `backend` (`None`: KVM unusable, skipped).
pub fn fresh_devices_on(
    backend: TestBackend,
    vectors: &[u16],
) -> Option<(Vm, Vec<Arc<SimDevice>>, Vec<PassthroughDevice>)> {
    let vm = vm_on(backend)?;
    let sims: Vec<_> = vectors.iter().map(|n| msix_sim(*n)).collect();
    let devs = sims
        .iter()
        .enumerate()
        .map(|(i, s)| placed_device(&vm, s.clone(), i as u32))
        .collect();
    Some((vm, sims, devs))
}

/// The state of vector `v` of `d`'s route, if it holds one.
pub fn route_state(vm: &Vm, d: &PassthroughDevice, v: u16) -> Option<RouteState> {
    d.msix_route(v).and_then(|id| vm.router.route_state(id))
}
