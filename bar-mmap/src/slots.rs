// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest mappings for real: the mapped areas of every BAR the guest page map lets be mapped,
//! mmapped from the device and installed as memory slots of the VM, so guest accesses to them
//! reach the device without trapping.
//!
//! [`GuestMappings`] is shared by every device of one VM (like [`GuestPageMap`], whose
//! [`MapChange`]s it applies: a BAR move of one device can unmap another device's region). A
//! device registers where each of its BARs can be mmapped from ([`GuestMappings::register`]);
//! the map changes then install or remove one memory slot per mapped area, from a pool of slot
//! numbers the VMM sets aside. [`MemorySlots`] is the VM side: KVM's user memory regions
//! (`KvmMemorySlots`, feature `kvm`), or [`RecordedSlots`] where there is no KVM. A slot owns
//! its [`Mapping`] while installed, so the memory the guest reaches cannot be unmapped under it.
//!
//! [`GuestPageMap`]: crate::GuestPageMap

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::{Error, GuestMapping, MapChange, Mapping, RegionId, Result};

/// The VM's memory slots, as the guest mappings use them.
pub trait MemorySlots: Send + Debug {
    /// Install `mapping` at guest physical address `gpa` as slot `slot`. The slot keeps the
    /// mapping until removed; on failure the mapping is dropped and the slot stays free.
    fn install(&mut self, slot: u32, gpa: u64, mapping: Mapping) -> Result<()>;

    /// Remove slot `slot`, handing back its mapping.
    fn remove(&mut self, slot: u32) -> Result<Mapping>;

    /// The mapping installed as slot `slot`.
    fn mapping(&self, slot: u32) -> Option<&Mapping>;
}

/// Memory slots recorded, not installed anywhere: for a VMM without KVM (and the lab guest,
/// which has none). Accesses through [`GuestMappings::mapping_at`] reach the same memory a
/// guest would.
#[derive(Debug, Default)]
pub struct RecordedSlots {
    slots: BTreeMap<u32, (u64, Mapping)>,
}

impl RecordedSlots {
    /// The guest address slot `slot` is installed at.
    pub fn gpa(&self, slot: u32) -> Option<u64> {
        self.slots.get(&slot).map(|(gpa, _)| *gpa)
    }

    /// The slots installed, in order.
    pub fn slots(&self) -> Vec<u32> {
        self.slots.keys().copied().collect()
    }
}

impl MemorySlots for RecordedSlots {
    fn install(&mut self, slot: u32, gpa: u64, mapping: Mapping) -> Result<()> {
        if self.slots.contains_key(&slot) {
            return Err(Error::SlotBusy(slot));
        }
        self.slots.insert(slot, (gpa, mapping));
        Ok(())
    }

    fn remove(&mut self, slot: u32) -> Result<Mapping> {
        self.slots
            .remove(&slot)
            .map(|(_, m)| m)
            .ok_or(Error::SlotNotInstalled(slot))
    }

    fn mapping(&self, slot: u32) -> Option<&Mapping> {
        self.slots.get(&slot).map(|(_, m)| m)
    }
}

/// Where a region's mapped areas are mmapped from.
#[derive(Debug)]
struct Source {
    fd: OwnedFd,
    /// Offset of the region (the BAR) in `fd`.
    region_offset: u64,
    /// Mapped areas: offset inside the BAR and mmap length (page multiples).
    areas: Vec<(u64, u64)>,
}

/// One installed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstalledSlot {
    /// The region it maps part of.
    pub region: RegionId,
    /// The slot number.
    pub slot: u32,
    /// Guest physical address.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Counters of slot operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotStats {
    /// Slots installed.
    pub installed: u64,
    /// Slots removed.
    pub removed: u64,
}

/// The VM's guest mappings of device BARs. See the module docs.
#[derive(Debug)]
pub struct GuestMappings {
    slots: Box<dyn MemorySlots>,
    free: BTreeSet<u32>,
    sources: BTreeMap<RegionId, Source>,
    installed: BTreeMap<RegionId, Vec<InstalledSlot>>,
    stats: SlotStats,
}

impl GuestMappings {
    /// Guest mappings installed in `slots`, using the slot numbers in `pool` (the VMM keeps
    /// the others for guest RAM).
    pub fn new(slots: Box<dyn MemorySlots>, pool: Range<u32>) -> Self {
        GuestMappings {
            slots,
            free: pool.collect(),
            sources: BTreeMap::new(),
            installed: BTreeMap::new(),
            stats: SlotStats::default(),
        }
    }

    /// Say where `region`'s mapped areas come from: `fd` at `region_offset` (a VFIO device fd
    /// and the region's offset in it), and each area as (offset in the BAR, mmap length). The
    /// fd is duplicated. Registering a region again replaces its source (unmapping it first).
    pub fn register(
        &mut self,
        region: RegionId,
        fd: BorrowedFd<'_>,
        region_offset: u64,
        areas: Vec<(u64, u64)>,
    ) -> Result<()> {
        let fd = fd.try_clone_to_owned().map_err(Error::Mmap)?;
        self.unmap(region)?;
        self.sources.insert(
            region,
            Source {
                fd,
                region_offset,
                areas,
            },
        );
        Ok(())
    }

    /// Forget `region` (its device is going away): its slots are removed first.
    pub fn unregister(&mut self, region: RegionId) -> Result<()> {
        self.unmap(region)?;
        self.sources.remove(&region);
        Ok(())
    }

    /// Apply the guest page map's changes in order. A map of a region with no source, or
    /// without mapped areas, installs nothing (it traps). On failure the changes before the
    /// failing one stay applied and the failing region is left unmapped.
    pub fn apply(&mut self, changes: &[MapChange]) -> Result<()> {
        for change in changes {
            match *change {
                MapChange::Unmap(m) => self.unmap(m.region)?,
                MapChange::Map(m) => self.map(m)?,
            }
        }
        Ok(())
    }

    fn map(&mut self, m: GuestMapping) -> Result<()> {
        self.unmap(m.region)?;
        let Some(areas) = self.sources.get(&m.region).map(|s| s.areas.clone()) else {
            return Ok(());
        };
        let mut done = Vec::new();
        for (offset, len) in areas {
            let result = self.install_one(m.region, m.gpa, offset, len);
            match result {
                Ok(slot) => done.push(slot),
                Err(e) => {
                    self.installed.insert(m.region, done);
                    self.unmap(m.region)?;
                    return Err(e);
                }
            }
        }
        self.installed.insert(m.region, done);
        Ok(())
    }

    fn install_one(
        &mut self,
        region: RegionId,
        gpa: u64,
        offset: u64,
        len: u64,
    ) -> Result<InstalledSlot> {
        let source = self
            .sources
            .get(&region)
            .ok_or(Error::SlotNotInstalled(u32::MAX))?;
        let slot = *self.free.iter().next().ok_or(Error::NoFreeSlot)?;
        let at = gpa
            .checked_add(offset)
            .ok_or(Error::GuestOverflow { gpa, size: offset })?;
        let file_offset = source
            .region_offset
            .checked_add(offset)
            .ok_or(Error::InvalidMapping { offset, len })?;
        let size = usize::try_from(len).map_err(|_| Error::InvalidMapping { offset, len })?;
        let mapping = Mapping::map_shared(source.fd.as_fd(), file_offset, size)?;
        self.slots.install(slot, at, mapping)?;
        self.free.remove(&slot);
        self.stats.installed += 1;
        Ok(InstalledSlot {
            region,
            slot,
            gpa: at,
            len,
        })
    }

    fn unmap(&mut self, region: RegionId) -> Result<()> {
        let Some(slots) = self.installed.remove(&region) else {
            return Ok(());
        };
        let mut first_err = None;
        for s in slots {
            match self.slots.remove(s.slot) {
                Ok(_mapping) => {
                    self.free.insert(s.slot);
                    self.stats.removed += 1;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Every installed slot, by region.
    pub fn installed(&self) -> Vec<InstalledSlot> {
        self.installed.values().flatten().copied().collect()
    }

    /// Slot numbers of the pool not in use.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    /// Regions with a registered source.
    pub fn registered(&self) -> usize {
        self.sources.len()
    }

    /// Counters.
    pub fn stats(&self) -> SlotStats {
        self.stats
    }

    /// The installed mapping holding guest address `gpa`, and `gpa`'s offset in it: what a
    /// guest access there reaches.
    pub fn mapping_at(&self, gpa: u64) -> Option<(&Mapping, usize)> {
        let s = self
            .installed
            .values()
            .flatten()
            .find(|s| s.gpa <= gpa && gpa - s.gpa < s.len)?;
        let offset = usize::try_from(gpa - s.gpa).ok()?;
        Some((self.slots.mapping(s.slot)?, offset))
    }
}
