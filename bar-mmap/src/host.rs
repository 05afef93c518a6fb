// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host-side decision: which BARs of one device may be mmapped at all.
//!
//! [`HostMmapPlan::probe_and_reserve`] is the only function here with side effects, and its
//! name says so: it looks at every BAR once, reserves the rest of each sub-page BAR's page as a
//! dummy range in the [`SharedResourceSpace`], and caches the outcome. Everything else on the
//! plan is a query that returns the cached answer and can be called any number of times. The
//! reservations go back to the space when the plan is [disabled](HostMmapPlan::disable) or
//! dropped.
//!
//! The rules, as Linux vfio-pci applies them:
//! - I/O BARs and empty BARs are never mappable.
//! - A memory BAR that starts on a page boundary and covers whole pages is mappable.
//! - A memory BAR that starts on a page boundary but ends inside a page (a sub-page BAR, or a
//!   malformed BAR whose size is not a page multiple) is mappable only if the rest of its last
//!   page can be reserved. The reservation is what keeps a BAR hot-added later out of the page
//!   that the guest will reach through the mapping.
//! - A memory BAR that does not start on a page boundary is not mappable. A mapping always
//!   starts at a page boundary, so the BAR would sit at some non-zero offset inside it; the
//!   VFIO region describes the BAR from its first byte and gives userspace no way to learn that
//!   offset, and the guest cannot be made to place the BAR at the same offset in its own page.

use std::collections::BTreeMap;
use std::ops::Range;

use vm_allocator::RangeInclusive;

use crate::resources::{lock, SharedResourceSpace};
use crate::{Error, MsixLocation, PageSize, RegionMmapCaps, Result, SparseLayout};

/// The address space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// Memory space (MMIO).
    Memory,
    /// I/O port space.
    Io,
}

/// What the host knows about one BAR of the device: the input to the probe.
///
/// The plan trusts what the host PCI core guarantees: assigned BARs overlap neither each other
/// nor any other resource. What it checks is the part of a BAR's last page that the BAR does
/// not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarInfo {
    /// BAR index (0..=5 for standard BARs).
    pub index: u8,
    /// Memory or I/O.
    pub kind: BarKind,
    /// Host physical address the BAR is assigned at.
    pub host_addr: u64,
    /// Size of the BAR in bytes.
    pub size: u64,
}

impl BarInfo {
    /// A memory BAR.
    pub fn memory(index: u8, host_addr: u64, size: u64) -> Self {
        BarInfo {
            index,
            kind: BarKind::Memory,
            host_addr,
            size,
        }
    }

    /// An I/O BAR.
    pub fn io(index: u8, host_addr: u64, size: u64) -> Self {
        BarInfo {
            index,
            kind: BarKind::Io,
            host_addr,
            size,
        }
    }
}

/// Why a BAR may not be mmapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotMappable {
    /// I/O BARs are always trapped.
    Io,
    /// The BAR has no size.
    Empty,
    /// The BAR does not start on a page boundary.
    UnalignedStart,
    /// Another BAR of the same device lies in the rest of the BAR's last page.
    PageSharedWithOwnBar,
    /// The rest of the BAR's last page could not be reserved: something else already holds
    /// part of it, or it lies outside the resource space.
    RestOfPageTaken,
}

/// The cached outcome of probing one BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostDecision {
    /// The BAR may be mmapped from its first byte for `mmap_len` bytes (its size rounded up to
    /// the page size).
    Mappable {
        /// Length of the mapping: the BAR size rounded up to a page.
        mmap_len: u64,
        /// The dummy reservation covering the rest of the last page, if the BAR ends inside one.
        dummy: Option<RangeInclusive>,
    },
    /// The BAR must be trapped in full.
    NotMappable(NotMappable),
}

impl HostDecision {
    /// Whether the BAR may be mmapped.
    pub fn is_mappable(&self) -> bool {
        matches!(self, HostDecision::Mappable { .. })
    }
}

/// The immutable, probed-once mmap plan for the BARs of one device.
///
/// It holds a clone of the [`SharedResourceSpace`] so that it can release its dummy
/// reservations on [`disable`](Self::disable) or drop.
#[derive(Debug)]
pub struct HostMmapPlan {
    page_size: PageSize,
    bars: BTreeMap<u8, (BarInfo, HostDecision)>,
    space: SharedResourceSpace,
    /// Dummy ranges this plan holds in `space`; emptied when released.
    reservations: Vec<RangeInclusive>,
}

impl HostMmapPlan {
    /// Probes every BAR of a device once, reserving the rest of the page of each sub-page BAR
    /// in `space`, and caches which BARs may be mmapped.
    ///
    /// Input errors (a BAR index given twice, a BAR that wraps the address space) are reported
    /// before anything is reserved. A reservation that cannot be made is not an error: that BAR
    /// is simply [`NotMappable::RestOfPageTaken`].
    pub fn probe_and_reserve(
        bars: &[BarInfo],
        page_size: PageSize,
        space: &SharedResourceSpace,
    ) -> Result<Self> {
        let mut by_index = BTreeMap::new();
        for bar in bars {
            if bar.kind == BarKind::Memory && bar.size != 0 {
                let end = bar.host_addr.checked_add(bar.size);
                if end.and_then(|e| page_size.align_up(e)).is_none() {
                    return Err(Error::BarOverflow {
                        index: bar.index,
                        addr: bar.host_addr,
                        size: bar.size,
                    });
                }
            }
            if by_index.insert(bar.index, *bar).is_some() {
                return Err(Error::DuplicateBar(bar.index));
            }
        }

        // Build the plan first so that, should anything below fail, dropping it hands back
        // whatever was already reserved.
        let mut plan = HostMmapPlan {
            page_size,
            bars: BTreeMap::new(),
            space: space.clone(),
            reservations: Vec::new(),
        };
        let mut guard = lock(space)?;
        for bar in by_index.values() {
            let decision = probe_one(bar, &by_index, page_size, &mut guard);
            if let HostDecision::Mappable {
                dummy: Some(range), ..
            } = decision
            {
                plan.reservations.push(range);
            }
            plan.bars.insert(bar.index, (*bar, decision));
        }
        drop(guard);
        Ok(plan)
    }

    /// The page size the plan was probed with.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// The cached decision for BAR `index`, or `None` if the device has no such BAR.
    pub fn decision(&self, index: u8) -> Option<HostDecision> {
        self.bars.get(&index).map(|(_, d)| *d)
    }

    /// Whether BAR `index` may be mmapped.
    pub fn is_mappable(&self, index: u8) -> bool {
        self.decision(index).is_some_and(|d| d.is_mappable())
    }

    /// The mmap length of BAR `index` (its size rounded up to a page) if it is mappable.
    pub fn mmap_len(&self, index: u8) -> Option<u64> {
        match self.decision(index)? {
            HostDecision::Mappable { mmap_len, .. } => Some(mmap_len),
            HostDecision::NotMappable(_) => None,
        }
    }

    /// The host physical range a mapping of BAR `index` covers, if it is mappable.
    pub fn mappable_range(&self, index: u8) -> Option<Range<u64>> {
        let (bar, _) = self.bars.get(&index)?;
        let len = self.mmap_len(index)?;
        Some(bar.host_addr..bar.host_addr.checked_add(len)?)
    }

    /// The BAR descriptions the plan was probed from, by index.
    pub fn bars(&self) -> impl Iterator<Item = &BarInfo> + '_ {
        self.bars.values().map(|(b, _)| b)
    }

    /// Splits BAR `index` into mapped and trapped areas, given what its VFIO region info
    /// reported and where the device's MSI-X table and PBA are. A BAR the plan does not allow
    /// mmapping comes back trapped in full.
    pub fn sparse_layout(
        &self,
        index: u8,
        caps: &RegionMmapCaps,
        msix: Option<&MsixLocation>,
    ) -> Result<SparseLayout> {
        let (bar, decision) = self.bars.get(&index).ok_or(Error::UnknownBar(index))?;
        let must_trap = msix.map(|m| m.trapped_in(index)).unwrap_or_default();
        SparseLayout::compute(
            bar.size,
            self.page_size,
            decision.is_mappable(),
            caps,
            &must_trap,
        )
    }

    /// The dummy ranges this plan currently holds in the resource space.
    pub fn reservations(&self) -> &[RangeInclusive] {
        &self.reservations
    }

    /// Releases every dummy reservation and ends the plan.
    ///
    /// Every reservation is attempted even if one fails; the first failure is returned.
    pub fn disable(mut self) -> Result<()> {
        self.release_all()
    }

    fn release_all(&mut self) -> Result<()> {
        if self.reservations.is_empty() {
            return Ok(());
        }
        // A poisoned lock still guards a consistent space: every mutation in this crate either
        // completes or leaves the ledger untouched. Releasing is the right thing to do.
        let mut space = self
            .space
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut first_err = None;
        for range in self.reservations.drain(..) {
            if let Err(e) = space.release(&range) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for HostMmapPlan {
    fn drop(&mut self) {
        // Nothing to report to from a destructor; `disable` is the path that reports errors.
        let _ = self.release_all();
    }
}

/// Decides one BAR, reserving the rest of its last page if that is what makes it mappable.
fn probe_one(
    bar: &BarInfo,
    all: &BTreeMap<u8, BarInfo>,
    page: PageSize,
    space: &mut crate::HostResourceSpace,
) -> HostDecision {
    if bar.kind == BarKind::Io {
        return HostDecision::NotMappable(NotMappable::Io);
    }
    if bar.size == 0 {
        return HostDecision::NotMappable(NotMappable::Empty);
    }
    if !page.is_aligned(bar.host_addr) {
        return HostDecision::NotMappable(NotMappable::UnalignedStart);
    }
    // Validated in `probe_and_reserve`: neither can overflow.
    let (Some(end), Some(page_end)) = (
        bar.host_addr.checked_add(bar.size),
        bar.host_addr
            .checked_add(bar.size)
            .and_then(|e| page.align_up(e)),
    ) else {
        return HostDecision::NotMappable(NotMappable::RestOfPageTaken);
    };
    let mmap_len = page_end - bar.host_addr;
    if end == page_end {
        return HostDecision::Mappable {
            mmap_len,
            dummy: None,
        };
    }
    let own_bar_in_tail = all.values().any(|other| {
        other.index != bar.index
            && other.kind == BarKind::Memory
            && other.size != 0
            && other.host_addr < page_end
            && other.host_addr.saturating_add(other.size) > end
    });
    if own_bar_in_tail {
        return HostDecision::NotMappable(NotMappable::PageSharedWithOwnBar);
    }
    match space.reserve_exact(end, page_end - end) {
        Ok(range) => HostDecision::Mappable {
            mmap_len,
            dummy: Some(range),
        },
        Err(_) => HostDecision::NotMappable(NotMappable::RestOfPageTaken),
    }
}
