// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`KvmBackend`]: the routing backend over a KVM VM file descriptor.

use std::ops::Range;
use std::sync::Arc;

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_irqchip, kvm_irq_routing_msi,
    kvm_irq_routing_msi__bindgen_ty_1, KvmIrqRouting, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
    KVM_MSI_VALID_DEVID,
};
use kvm_ioctls::{Cap, VmFd};
use vmm_sys_util::errno;
use vmm_sys_util::eventfd::EventFd;

use crate::backend::RoutingBackend;
use crate::error::{Error, Result};
use crate::route::RouteEntry;

/// Number of IOAPIC pins KVM's in-kernel IOAPIC has (GSIs 0-23).
pub const IOAPIC_PINS: u32 = 24;
/// Number of legacy PIC pins (GSIs 0-15, master 0-7, slave 8-15).
pub const PIC_PINS: u32 = 16;

// irqchip identifiers of `kvm_irq_routing_irqchip.irqchip` on x86.
const IRQCHIP_PIC_MASTER: u32 = 0;
const IRQCHIP_PIC_SLAVE: u32 = 1;
const IRQCHIP_IOAPIC: u32 = 2;

/// Routes `KVM_SET_GSI_ROUTING` to a VM, keeping the VM's irqchip routes.
///
/// `KVM_SET_GSI_ROUTING` replaces the whole table, so every commit carries the
/// irqchip routes a VM with an in-kernel irqchip needs (on x86, the table KVM
/// installs by default: IOAPIC pins 0-23 at GSIs 0-23 and PIC pins 0-15 at
/// GSIs 0-15). MSI routes get GSIs above them, and their count is bounded so
/// the whole table fits in `KVM_CAP_IRQ_ROUTING` entries.
#[derive(Debug)]
pub struct KvmBackend {
    vm: Arc<VmFd>,
    irqchip_routes: Vec<kvm_irq_routing_entry>,
    msi_gsis: Range<u32>,
    max_routes: u32,
    msi_devid: bool,
}

impl KvmBackend {
    /// A backend for a VM that has an in-kernel irqchip (`create_irq_chip` on
    /// x86). On x86 every committed table keeps KVM's default IOAPIC and PIC
    /// routes; on other architectures no irqchip route is kept.
    pub fn new(vm: Arc<VmFd>) -> Result<Self> {
        Self::with_irqchip_routes(vm, default_irqchip_routes())
    }

    /// A backend that keeps no irqchip route (split irqchip, or a platform
    /// whose interrupt controller needs no GSI routes): every GSI the routing
    /// limit allows is available to MSI routes.
    pub fn without_irqchip_routes(vm: Arc<VmFd>) -> Result<Self> {
        Self::with_irqchip_routes(vm, Vec::new())
    }

    fn with_irqchip_routes(
        vm: Arc<VmFd>,
        irqchip_routes: Vec<kvm_irq_routing_entry>,
    ) -> Result<Self> {
        let cap = vm.check_extension_int(Cap::IrqRouting);
        let reserved = u32::try_from(irqchip_routes.len()).unwrap_or(u32::MAX);
        let first_gsi = irqchip_routes
            .iter()
            .map(|e| e.gsi.saturating_add(1))
            .max()
            .unwrap_or(0);
        let max_routes = u32::try_from(cap).unwrap_or(0);
        // Both the entry count and every GSI must stay below KVM's limit.
        let msi_count = max_routes.saturating_sub(reserved);
        let end = first_gsi.saturating_add(msi_count).min(max_routes);
        if end <= first_gsi {
            return Err(Error::RoutingUnsupported {
                max_routes: cap,
                reserved,
            });
        }
        Ok(Self {
            msi_devid: vm.check_extension(Cap::MsiDevid),
            vm,
            irqchip_routes,
            msi_gsis: first_gsi..end,
            max_routes,
        })
    }

    /// KVM's limit on routing table entries (`KVM_CAP_IRQ_ROUTING`).
    pub fn max_kvm_routes(&self) -> u32 {
        self.max_routes
    }

    /// Whether KVM takes MSI device IDs (`KVM_CAP_MSI_DEVID`, arm64 with an
    /// ITS). Without it, [`MsiMessage::devid`](crate::MsiMessage::devid) is
    /// left out of the table, as KVM does not need it.
    pub fn msi_devid_supported(&self) -> bool {
        self.msi_devid
    }

    /// How many entries of every committed table are irqchip routes.
    pub fn irqchip_route_count(&self) -> usize {
        self.irqchip_routes.len()
    }

    /// The VM this backend routes for.
    pub fn vm(&self) -> &Arc<VmFd> {
        &self.vm
    }
}

fn irqchip_entry(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    entry.u.irqchip = kvm_irq_routing_irqchip { irqchip, pin };
    entry
}

fn default_irqchip_routes() -> Vec<kvm_irq_routing_entry> {
    if !cfg!(target_arch = "x86_64") {
        return Vec::new();
    }
    let mut routes = Vec::with_capacity((IOAPIC_PINS + PIC_PINS) as usize);
    for gsi in 0..IOAPIC_PINS {
        if gsi < PIC_PINS {
            let (chip, pin) = if gsi < 8 {
                (IRQCHIP_PIC_MASTER, gsi)
            } else {
                (IRQCHIP_PIC_SLAVE, gsi - 8)
            };
            routes.push(irqchip_entry(gsi, chip, pin));
        }
        routes.push(irqchip_entry(gsi, IRQCHIP_IOAPIC, gsi));
    }
    routes
}

fn msi_entry(route: &RouteEntry, with_devid: bool) -> kvm_irq_routing_entry {
    let devid = route.msi.devid.filter(|_| with_devid);
    let mut entry = kvm_irq_routing_entry {
        gsi: route.gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        flags: if devid.is_some() {
            KVM_MSI_VALID_DEVID
        } else {
            0
        },
        ..Default::default()
    };
    entry.u.msi = kvm_irq_routing_msi {
        address_lo: route.msi.address as u32,
        address_hi: (route.msi.address >> 32) as u32,
        data: route.msi.data,
        __bindgen_anon_1: kvm_irq_routing_msi__bindgen_ty_1 {
            devid: devid.unwrap_or(0),
        },
    };
    entry
}

impl RoutingBackend for KvmBackend {
    fn msi_gsi_range(&self) -> Range<u32> {
        self.msi_gsis.clone()
    }

    fn commit_table(&self, routes: &[RouteEntry]) -> errno::Result<()> {
        let total = self.irqchip_routes.len() + routes.len();
        let mut table = KvmIrqRouting::new(total).map_err(|_| errno::Error::new(libc::E2BIG))?;
        let slots = table.as_mut_slice();
        let (chip, msi) = slots.split_at_mut(self.irqchip_routes.len());
        chip.copy_from_slice(&self.irqchip_routes);
        for (slot, route) in msi.iter_mut().zip(routes) {
            *slot = msi_entry(route, self.msi_devid);
        }
        self.vm.set_gsi_routing(&table)
    }

    fn attach_irqfd(&self, fd: &EventFd, gsi: u32) -> errno::Result<()> {
        self.vm.register_irqfd(fd, gsi)
    }

    fn detach_irqfd(&self, fd: &EventFd, gsi: u32) -> errno::Result<()> {
        self.vm.unregister_irqfd(fd, gsi)
    }

    fn attach_resample_irqfd(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> errno::Result<()> {
        self.vm.register_irqfd_with_resample(fd, resample, gsi)
    }
}
