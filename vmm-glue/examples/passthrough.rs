// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The wiring a VMM copies to pass a PCI device through with this workspace: open the device
//! through the VM's container, map guest memory for its DMA, attach it to the MMIO bus, place
//! its BARs, let the guest route its interrupts, tear it down.
//!
//! ```text
//! cargo run -p vmm-glue --features sim --example passthrough            # a simulated device
//! cargo run -p vmm-glue --example passthrough -- 0000:01:00.1 [TOKEN]  # a device on vfio-pci
//! ```
//!
//! Interrupts go through KVM when /dev/kvm can make a VM, through the in-memory router
//! otherwise (the lab's guest has no KVM). The lab's NVMe test drives a real VF through these
//! same functions (`vmm-glue/tests/lab_nvme.rs`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::{Arc, Mutex};

use bar_mmap::{GuestMappings, HostResourceSpace, PageSize, RecordedSlots};
use irq_routing::{MemoryBackend, Router};
use pci_config::BarKind;
use vfio_core::{Container, DeviceAddress, KernelDevice, Uuid, VfioContainer, VfioDevice};
use vm_device::bus::{MmioAddress, MmioRange};
use vm_device::device_manager::{IoManager, MmioManager};
use vm_memory::GuestRegionMmap;
use vmm_glue::{DeviceOptions, PassthroughDevice, UnplugReport, VmResources};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// A container, a device opened through it, and whatever keeps the device's group attached.
type Opened = (
    Arc<dyn VfioContainer>,
    Arc<dyn VfioDevice>,
    Box<dyn std::any::Any>,
);

/// Guest RAM size of the example VM.
pub const RAM: u64 = 64 << 20;
/// Where BARs go: a 32-bit MMIO window above RAM.
pub const MMIO_WINDOW: u64 = 0xc000_0000;
/// The memory slots BAR mappings may use (RAM would take the others).
pub const BAR_SLOTS: std::ops::Range<u32> = 16..64;

/// What a VMM keeps per VM for its passed-through devices.
pub struct Vm {
    /// Interrupt routes, shared by every device.
    pub router: Arc<Router>,
    /// The VM's IO address space (one container for every device).
    pub container: Arc<dyn VfioContainer>,
    /// Guest RAM, at guest physical address 0, DMA-mapped.
    pub ram: GuestRegionMmap,
    /// Shared device resources: router, host space, guest page map and BAR mappings.
    pub res: VmResources,
    /// The MMIO bus the vCPU exit handler dispatches to.
    pub mmio: IoManager,
    /// Where each device's BARs are registered on `mmio`, by device id.
    on_bus: BTreeMap<u32, Vec<u64>>,
    /// Next free guest address of the MMIO window.
    next_mmio: u64,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("router", &self.router)
            .field("container", &self.container)
            .field("next_mmio", &self.next_mmio)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// A VM whose routes go through `router`, whose devices share `container`, with `RAM`
    /// bytes of guest memory mapped into it for DMA.
    pub fn new(router: Arc<Router>, container: Arc<dyn VfioContainer>) -> Result<Self> {
        // Guest RAM backed by a memfd at guest physical address 0.
        let ram = vfio_core::memfd_guest_region(0, RAM)?;
        // Mapped now if a group is attached, or when the first one joins.
        container.map_guest_region(&ram)?;
        let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)?.into_shared();
        // Without KVM the slots are only recorded; with KVM use bar_mmap::KvmMemorySlots.
        let maps = GuestMappings::new(Box::new(RecordedSlots::default()), BAR_SLOTS);
        let res =
            VmResources::new(router.clone(), host, PageSize::SIZE_4K).with_guest_mappings(maps);
        Ok(Vm {
            router,
            container,
            ram,
            res,
            mmio: IoManager::new(),
            on_bus: BTreeMap::new(),
            next_mmio: MMIO_WINDOW,
        })
    }

    /// Plug `device` in as device `id`: build the passthrough device, place its memory BARs in
    /// the MMIO window (the VMM's firmware role), turn on memory decode and bus mastering as
    /// the guest's driver would, and put the BARs on the bus.
    pub fn plug(
        &mut self,
        device: Arc<dyn VfioDevice>,
        id: u32,
    ) -> Result<Arc<Mutex<PassthroughDevice>>> {
        let opts = DeviceOptions {
            id,
            ..DeviceOptions::default()
        };
        let mut dev = PassthroughDevice::new(device, &self.res, opts)?;
        for bar in dev.bars() {
            if !matches!(bar.kind, BarKind::Mem32 | BarKind::Mem64) {
                continue;
            }
            let at = self.next_mmio.div_ceil(bar.size) * bar.size;
            self.next_mmio = at + bar.size.max(4096);
            dev.assign_bar(bar.index, at)?;
        }
        // COMMAND: memory decode and bus master. The write reports the BARs it brought up.
        let events = dev.config_write(0x04, &0x0006u16.to_le_bytes());
        let dev = Arc::new(Mutex::new(dev));
        if !events.bar_moves.is_empty() {
            self.attach_bars(&dev)?;
        }
        Ok(dev)
    }

    /// Register the device's memory BARs on the MMIO bus where they decode now, replacing
    /// where they were: after `plug`, and whenever a guest config write moved a BAR
    /// ([`vmm_glue::ConfigEvents::bar_moves`] not empty). Accesses to mapped pages never reach
    /// the bus on KVM; the bus serves the trapped ones.
    pub fn attach_bars(&mut self, dev: &Arc<Mutex<PassthroughDevice>>) -> Result<()> {
        let (id, now) = {
            let d = dev.lock().map_err(|_| "poisoned")?;
            let now: Vec<(u64, u64)> = d
                .bars()
                .iter()
                .filter(|b| matches!(b.kind, BarKind::Mem32 | BarKind::Mem64))
                .filter_map(|b| d.bar_address(b.index).map(|at| (at, b.size)))
                .collect();
            (d.id(), now)
        };
        for at in self.on_bus.remove(&id).unwrap_or_default() {
            self.mmio.deregister_mmio(MmioAddress(at));
        }
        let mut registered = Vec::new();
        for (at, size) in now {
            self.mmio
                .register_mmio(MmioRange::new(MmioAddress(at), size)?, dev.clone())?;
            registered.push(at);
        }
        self.on_bus.insert(id, registered);
        Ok(())
    }

    /// Unplug a device: take its BARs off the bus and give back what it held.
    pub fn unplug(&mut self, dev: Arc<Mutex<PassthroughDevice>>) -> Result<UnplugReport> {
        let id = dev.lock().map_err(|_| "poisoned")?.id();
        for at in self.on_bus.remove(&id).unwrap_or_default() {
            self.mmio.deregister_mmio(MmioAddress(at));
        }
        let dev = Arc::try_unwrap(dev).map_err(|_| "device still shared")?;
        Ok(dev.into_inner().map_err(|_| "poisoned")?.unplug())
    }
}

/// Open the PCI function `bdf` (presenting `token` if it is an SR-IOV VF of a vfio-pci PF)
/// through `container`.
pub fn open_pci(
    container: &Arc<Container>,
    bdf: &str,
    token: Option<Uuid>,
) -> Result<Arc<KernelDevice>> {
    let mut address = DeviceAddress::pci(bdf)?;
    if let Some(t) = token {
        address = address.with_vf_token(t);
    }
    // With KVM, add the group to the VM's KVM-VFIO device here, before the device is opened
    // (vmm_glue::KvmVfioDevice::add_group with container.group(id)?.as_fd()).
    Ok(Arc::new(container.open_device(&address)?))
}

#[cfg(feature = "sim")]
fn simulated() -> Result<Opened> {
    use vfio_core::sim::{lab_iommu_info, MsixPlacement, SimContainer, SimDevice};
    let container = SimContainer::new(lab_iommu_info());
    let group = container.join()?;
    let sim = SimDevice::builder(0x1b36, 0x0010)
        .bar(0, BarKind::Mem64, 0x4000, false)
        .msix(MsixPlacement::in_bar(4, 0))
        .build()?;
    Ok((container, Arc::new(sim), Box::new(group)))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let router = Arc::new(Router::new(MemoryBackend::new())?);
    let (container, device, _keep): Opened = match args.first() {
        Some(bdf) => {
            let c = Container::new()?;
            let token = args.get(1).map(|t| t.parse()).transpose()?;
            let d = open_pci(&c, bdf, token)?;
            (c, d, Box::new(()))
        }
        #[cfg(feature = "sim")]
        None => simulated()?,
        #[cfg(not(feature = "sim"))]
        None => return Err("give a PCI address (or build with --features sim)".into()),
    };
    let mut vm = Vm::new(router, container)?;
    let dev = vm.plug(device, 1)?;
    {
        let d = dev.lock().map_err(|_| "poisoned")?;
        for bar in d.bars() {
            println!(
                "BAR {}: {:?} {:#x} bytes at {:?}, mappable {}",
                bar.index,
                bar.kind,
                bar.size,
                d.bar_address(bar.index).map(|a| format!("{a:#x}")),
                bar.mappable
            );
        }
    }
    println!("DMA: {:?}", vm.container.dma_mappings());
    let report = vm.unplug(dev)?;
    println!("unplugged: {report:?}");
    Ok(())
}
