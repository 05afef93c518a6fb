// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! BARs: which are mapped and which are trapped, on the host (bar-mmap's probe-once plan) and
//! in the guest (bar-mmap's page map, shared by every device of the VM).
//!
//! * At build time the device's BARs are probed once into a [`HostMmapPlan`]; sub-page BARs
//!   reserve the rest of their host page in the VM's host resource space.
//! * Each BAR gets a [`SparseLayout`]: the MSI-X table and PBA are always trapped.
//! * A BAR is offered for a whole-BAR guest mapping only if the host allows it and nothing in
//!   it must be trapped; a BAR holding the MSI-X table stays trapped here (a VMM may map its
//!   layout's mapped areas itself).
//! * When the guest moves a BAR, the shared [`GuestPageMap`] decides exclusivity for every
//!   device: a BAR moved onto another device's page makes both trapped, until the conflict
//!   goes away. The resulting [`MapChange`]s queue up for the VMM
//!   ([`PassthroughDevice::take_map_changes`]).
//!
//! Trapped accesses are forwarded to the VFIO region (see [`crate::mmio`]).

use std::sync::{Arc, Mutex};

use bar_mmap::{
    BarInfo, ByteRange, GuestBar, GuestPageMap, HostMmapPlan, MapChange, MsixLocation, RegionId,
    RegionMmapCaps, SparseLayout,
};
use pci_config::BarKind;
use vfio_core::info::BAR0_REGION_INDEX;
use vfio_core::VfioDevice;

use crate::config::ConfigEmu;
use crate::{DeviceOptions, Error, PassthroughDevice, Result, VmResources};

/// The device's BAR mapping state.
#[derive(Debug)]
pub(crate) struct Bars {
    plan: HostMmapPlan,
    layouts: Vec<(u8, SparseLayout)>,
    whole_mappable: [bool; 6],
    guest_pages: Arc<Mutex<GuestPageMap>>,
    map_changes: Vec<MapChange>,
}

impl Bars {
    pub(crate) fn probe(
        dev: &dyn VfioDevice,
        cfg: &ConfigEmu,
        vm: &VmResources,
        opts: &DeviceOptions,
    ) -> Result<Self> {
        let page = vm.page_size.get();
        let mut infos = Vec::new();
        for bar in &cfg.bars {
            let given = opts
                .host_bar_addresses
                .get(usize::from(bar.index))
                .copied()
                .unwrap_or(0);
            let addr = if given != 0 { given } else { bar.host_addr };
            if bar.kind == BarKind::Io {
                infos.push(BarInfo::io(bar.index, addr, bar.size));
            } else if addr != 0 || bar.size >= page {
                // An unknown host address cannot be checked for page exclusivity: such a
                // sub-page BAR is left out of the plan, so it is trapped.
                infos.push(BarInfo::memory(bar.index, addr, bar.size));
            }
        }
        let plan = HostMmapPlan::probe_and_reserve(&infos, vm.page_size, &vm.host_space)
            .map_err(Error::BarProbe)?;
        let msix = cfg.msix.map(|m| {
            MsixLocation::from_capability(
                m.table_bir,
                m.table_offset,
                m.pba_bir,
                m.pba_offset,
                m.vectors,
            )
        });
        let mut layouts = Vec::new();
        let mut whole_mappable = [false; 6];
        for bar in cfg.bars.iter().filter(|b| b.kind != BarKind::Io) {
            let region = dev.info().region(BAR0_REGION_INDEX + u32::from(bar.index));
            let region_mmap = region.is_some_and(|r| r.is_mmappable());
            let caps = match region {
                Some(r) if r.msix_mappable => RegionMmapCaps::MsixMappable,
                Some(r) => match &r.sparse_mmap {
                    Some(areas) => RegionMmapCaps::SparseAreas(
                        areas
                            .iter()
                            .map(|a| ByteRange::new(a.offset, a.size))
                            .collect(),
                    ),
                    None => RegionMmapCaps::WholeRegion,
                },
                None => RegionMmapCaps::WholeRegion,
            };
            let traps = msix.map(|m| m.trapped_in(bar.index)).unwrap_or_default();
            let host_ok = plan.is_mappable(bar.index) && region_mmap;
            let layout = SparseLayout::compute(bar.size, vm.page_size, host_ok, &caps, &traps)
                .map_err(Error::BarProbe)?;
            if let Some(w) = whole_mappable.get_mut(usize::from(bar.index)) {
                *w = host_ok && traps.is_empty() && layout.trapped().next().is_none();
            }
            layouts.push((bar.index, layout));
        }
        Ok(Bars {
            plan,
            layouts,
            whole_mappable,
            guest_pages: vm.guest_pages.clone(),
            map_changes: Vec::new(),
        })
    }
}

impl PassthroughDevice {
    fn region_id(&self, bar: u8) -> RegionId {
        RegionId {
            device: self.opts.id,
            bar,
        }
    }

    /// Follows a guest BAR move (or a decode enable/disable) in the shared guest page map.
    pub(crate) fn bar_moved(&mut self, index: u8) {
        let Some(host) = self.cfg.bars.iter().find(|b| b.index == index).copied() else {
            return;
        };
        if host.kind == BarKind::Io {
            return;
        }
        let region = self.region_id(index);
        let decoded = self.cfg.space.decoded_bar_address(index);
        let Ok(mut map) = self.bars.guest_pages.lock() else {
            self.stats.device_access_errors += 1;
            return;
        };
        let changes = match decoded {
            Some(gpa) => map
                .place(
                    region,
                    GuestBar {
                        gpa,
                        size: host.size,
                        host_mappable: self
                            .bars
                            .whole_mappable
                            .get(usize::from(index))
                            .copied()
                            .unwrap_or(false),
                    },
                )
                .unwrap_or_default(),
            None => map.remove(region),
        };
        drop(map);
        self.bars.map_changes.extend(changes);
    }

    /// Mapping changes the VMM must apply to guest memory (for this and other devices of the
    /// VM, as guest BAR moves change page exclusivity), oldest first.
    pub fn take_map_changes(&mut self) -> Vec<MapChange> {
        std::mem::take(&mut self.bars.map_changes)
    }

    /// Whether BAR `index` is mapped into the guest right now (otherwise it traps).
    pub fn is_bar_mapped(&self, index: u8) -> bool {
        self.bars
            .guest_pages
            .lock()
            .is_ok_and(|m| m.is_mapped(self.region_id(index)))
    }

    /// The host-side mmap plan of the device's BARs.
    pub fn host_mmap_plan(&self) -> &HostMmapPlan {
        &self.bars.plan
    }

    /// The mapped and trapped areas of memory BAR `index`.
    pub fn bar_layout(&self, index: u8) -> Option<&SparseLayout> {
        self.bars
            .layouts
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, l)| l)
    }

    /// The guest address BAR `index` decodes at now, if any.
    pub fn bar_address(&self, index: u8) -> Option<u64> {
        self.cfg.space.decoded_bar_address(index)
    }
}
