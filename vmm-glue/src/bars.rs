// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! BARs: which are mapped and which are trapped, on the host (bar-mmap's probe-once plan) and
//! in the guest (bar-mmap's page map, shared by every device of the VM).
//!
//! * At build time the device's BARs are probed once into a [`HostMmapPlan`]; sub-page BARs
//!   reserve the rest of their host page in the VM's host resource space.
//! * Each BAR gets a [`SparseLayout`]: the MSI-X table and PBA are always trapped.
//! * A BAR is offered for a guest mapping when its layout has mapped areas (the host allows the
//!   mmap); a mapping of it means its mapped areas, never its trapped ones (the MSI-X table
//!   and PBA, and what the region's caps exclude).
//! * When the guest moves a BAR, the shared [`GuestPageMap`] decides exclusivity for every
//!   device: a BAR moved onto another device's page makes both trapped, until the conflict
//!   goes away. The resulting [`MapChange`]s are installed at once as memory slots when the
//!   VM has [`GuestMappings`](bar_mmap::GuestMappings) ([`VmResources::with_guest_mappings`]),
//!   or queue up for the VMM otherwise ([`PassthroughDevice::take_map_changes`]).
//! * The VMM learns each BAR's shape ([`PassthroughDevice::bars`]), may place BARs itself
//!   before the guest runs ([`PassthroughDevice::assign_bar`]), and hears of every move from
//!   the config write that caused it ([`crate::ConfigEvents`]).
//!
//! Trapped accesses are forwarded to the VFIO region (see [`crate::mmio`]).

use std::sync::{Arc, Mutex};

use bar_mmap::{
    BarInfo, ByteRange, GuestBar, GuestPageMap, HostMmapPlan, MapChange, MsixLocation, RegionId,
    RegionMmapCaps, SparseLayout,
};
use pci_config::BarKind;
use std::os::fd::AsFd;
use vfio_core::info::BAR0_REGION_INDEX;
use vfio_core::VfioDevice;

use crate::config::ConfigEmu;
use crate::{DeviceOptions, Error, PassthroughDevice, Result, VmResources};

/// The device's BAR mapping state.
#[derive(Debug)]
pub(crate) struct Bars {
    /// `None` once released (teardown).
    plan: Option<HostMmapPlan>,
    layouts: Vec<(u8, SparseLayout)>,
    /// Per BAR: whether its layout has mapped areas.
    guest_mappable: [bool; 6],
    pub(crate) guest_pages: Arc<Mutex<GuestPageMap>>,
    map_changes: Vec<MapChange>,
}

/// One BAR of the device, as the guest sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarDescription {
    /// BAR index (0-5, or 6 for the expansion ROM).
    pub index: u8,
    /// Memory (32- or 64-bit), I/O, or ROM.
    pub kind: BarKind,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Whether some of it can be mapped into the guest (otherwise every access traps).
    pub mappable: bool,
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
        let mut guest_mappable = [false; 6];
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
            if let Some(w) = guest_mappable.get_mut(usize::from(bar.index)) {
                *w = host_ok && layout.mapped().next().is_some();
            }
            layouts.push((bar.index, layout));
        }
        Ok(Bars {
            plan: Some(plan),
            layouts,
            guest_mappable,
            guest_pages: vm.guest_pages.clone(),
            map_changes: Vec::new(),
        })
    }

    /// Give the host reservations back; returns how many there were.
    pub(crate) fn release_host_plan(&mut self) -> usize {
        let Some(plan) = self.plan.take() else {
            return 0;
        };
        let n = plan.reservations().len();
        // Dropping the plan releases them too; disable reports a failure, which leaves
        // nothing more to do here.
        let _ = plan.disable();
        n
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
                            .guest_mappable
                            .get(usize::from(index))
                            .copied()
                            .unwrap_or(false),
                    },
                )
                .unwrap_or_default(),
            None => map.remove(region),
        };
        drop(map);
        self.apply_map_changes(changes);
    }

    /// Install the changes as memory slots when the VM has guest mappings, else queue them.
    fn apply_map_changes(&mut self, changes: Vec<MapChange>) {
        match &self.vm_mappings {
            Some(maps) => {
                let applied = maps.lock().map(|mut m| m.apply(&changes));
                if !matches!(applied, Ok(Ok(()))) {
                    self.stats.device_access_errors += 1;
                }
            }
            None => self.bars.map_changes.extend(changes),
        }
    }

    /// Tell the VM's guest mappings where each mappable BAR's areas are mmapped from.
    pub(crate) fn register_bar_sources(&mut self) -> Result<()> {
        let Some(maps) = self.vm_mappings.clone() else {
            return Ok(());
        };
        let mut maps = maps.lock().map_err(|_| Error::Poisoned)?;
        for (index, layout) in &self.bars.layouts {
            let mappable = self
                .bars
                .guest_mappable
                .get(usize::from(*index))
                .copied()
                .unwrap_or(false);
            let region = self
                .dev
                .info()
                .region(BAR0_REGION_INDEX + u32::from(*index));
            let (true, Some(region)) = (mappable, region) else {
                continue;
            };
            let areas = layout.mapped().map(|a| (a.offset, a.mmap_len)).collect();
            maps.register(
                self.region_id(*index),
                self.dev.as_fd(),
                region.offset,
                areas,
            )
            .map_err(Error::BarProbe)?;
        }
        Ok(())
    }

    /// The device's BARs (and expansion ROM) as the guest sees them.
    pub fn bars(&self) -> Vec<BarDescription> {
        let mut out: Vec<BarDescription> = self
            .cfg
            .bars
            .iter()
            .map(|b| BarDescription {
                index: b.index,
                kind: b.kind,
                size: b.size,
                prefetchable: b.prefetchable,
                mappable: self
                    .bars
                    .guest_mappable
                    .get(usize::from(b.index))
                    .copied()
                    .unwrap_or(false),
            })
            .collect();
        if let Some(rom) = self.cfg.space.bar(pci_config::ROM_INDEX) {
            out.push(BarDescription {
                index: pci_config::ROM_INDEX,
                kind: BarKind::Rom,
                size: rom.size,
                prefetchable: false,
                mappable: false,
            });
        }
        out
    }

    /// Place BAR `index` at guest address `address` (a VMM that lays out BARs itself, before
    /// the guest runs), as a guest's BAR write would: the address takes effect for mappings
    /// once memory (or I/O) decode is enabled. An address the BAR cannot hold (not aligned to
    /// its size, too high for a 32-bit BAR) is refused and nothing changes.
    pub fn assign_bar(&mut self, index: u8, address: u64) -> Result<crate::ConfigEvents> {
        let bar = self
            .cfg
            .bars
            .iter()
            .find(|b| b.index == index)
            .copied()
            .ok_or(Error::NoSuchBar(index))?;
        let fits = match bar.kind {
            BarKind::Mem64 => true,
            _ => address <= u64::from(u32::MAX),
        };
        if address % bar.size != 0 || !fits {
            return Err(Error::BarAddress { index, address });
        }
        let reg = 0x10 + 4 * u16::from(index);
        let low = address as u32;
        let mut events = self.config_write(reg, &low.to_le_bytes());
        if bar.kind == BarKind::Mem64 {
            let high = (address >> 32) as u32;
            let more = self.config_write(reg + 4, &high.to_le_bytes());
            events.bar_moves.extend(more.bar_moves);
        }
        Ok(events)
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

    /// The host-side mmap plan of the device's BARs (`None` after teardown).
    pub fn host_mmap_plan(&self) -> Option<&HostMmapPlan> {
        self.bars.plan.as_ref()
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
