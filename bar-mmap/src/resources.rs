// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host's resource space: the tree in which a sub-page BAR's dummy reservation lives.
//!
//! [`HostResourceSpace`] plays the part of the kernel's `iomem` resource tree. It uses
//! vm-allocator's [`AddressAllocator`] as its engine and keeps a ledger of every range handed
//! out, because `AddressAllocator::allocate` with `AllocPolicy::ExactMatch` in vm-allocator
//! 0.1.4 does not check whether the node containing the requested address is already
//! allocated: it will carve an "exact" range out of somebody else's allocation. The ledger
//! refuses any request that overlaps an existing range before the allocator is asked, so a
//! dummy reservation really keeps a hot-added BAR out of the rest of its page.
//!
//! A VMM shares one space between its device-model code and every [`HostMmapPlan`] through
//! [`SharedResourceSpace`] (`Arc<Mutex<_>>`): the plan keeps a clone so that it can release its
//! reservations when it is disabled or dropped.
//!
//! [`HostMmapPlan`]: crate::HostMmapPlan

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use vm_allocator::{AddressAllocator, AllocPolicy, RangeInclusive};

use crate::{Error, Result};

/// A host resource space shared between the VMM and the mmap plans of its devices.
pub type SharedResourceSpace = Arc<Mutex<HostResourceSpace>>;

/// Locks a shared space, mapping a poisoned lock to [`Error::ResourceSpacePoisoned`].
pub(crate) fn lock(space: &SharedResourceSpace) -> Result<MutexGuard<'_, HostResourceSpace>> {
    space.lock().map_err(|_| Error::ResourceSpacePoisoned)
}

/// An address space from which ranges are reserved exactly or allocated first-fit, never twice.
#[derive(Debug, Clone)]
pub struct HostResourceSpace {
    allocator: AddressAllocator,
    /// Every range currently handed out: start -> last byte. Ranges never overlap.
    taken: BTreeMap<u64, u64>,
}

impl HostResourceSpace {
    /// A space covering `size` bytes from `base`, all free.
    pub fn new(base: u64, size: u64) -> Result<Self> {
        Ok(HostResourceSpace {
            allocator: AddressAllocator::new(base, size).map_err(Error::Allocator)?,
            taken: BTreeMap::new(),
        })
    }

    /// Wraps the space for sharing with [`HostMmapPlan`](crate::HostMmapPlan)s.
    pub fn into_shared(self) -> SharedResourceSpace {
        Arc::new(Mutex::new(self))
    }

    /// First byte of the space.
    pub fn base(&self) -> u64 {
        self.allocator.base()
    }

    /// Last byte of the space.
    pub fn end(&self) -> u64 {
        self.allocator.end()
    }

    /// Reserves exactly `len` bytes at `start`, or fails with [`Error::RangeBusy`] if any of
    /// them is taken.
    pub fn reserve_exact(&mut self, start: u64, len: u64) -> Result<RangeInclusive> {
        let end = last_byte(start, len)?;
        if self.overlaps(start, end) {
            return Err(Error::RangeBusy { start, end });
        }
        let range = self
            .allocator
            .allocate(len, 1, AllocPolicy::ExactMatch(start))
            .map_err(|e| match e {
                vm_allocator::Error::ResourceNotAvailable => Error::RangeBusy { start, end },
                other => Error::Allocator(other),
            })?;
        self.taken.insert(range.start(), range.end());
        Ok(range)
    }

    /// Allocates `len` bytes aligned to `align` at the lowest free address.
    pub fn allocate(&mut self, len: u64, align: u64) -> Result<RangeInclusive> {
        let range = self
            .allocator
            .allocate(len, align, AllocPolicy::FirstMatch)
            .map_err(Error::Allocator)?;
        // First-fit only ever picks free nodes, so the ledger cannot disagree; check anyway so
        // the ledger stays the single source of truth.
        if self.overlaps(range.start(), range.end()) {
            // Hand the range back; it was never ours to keep.
            let _ = self.allocator.free(&range);
            return Err(Error::RangeBusy {
                start: range.start(),
                end: range.end(),
            });
        }
        self.taken.insert(range.start(), range.end());
        Ok(range)
    }

    /// Releases a range previously returned by [`reserve_exact`](Self::reserve_exact) or
    /// [`allocate`](Self::allocate).
    pub fn release(&mut self, range: &RangeInclusive) -> Result<()> {
        if self.taken.get(&range.start()) != Some(&range.end()) {
            return Err(Error::NotAllocated {
                start: range.start(),
                end: range.end(),
            });
        }
        self.allocator.free(range).map_err(Error::Allocator)?;
        self.taken.remove(&range.start());
        Ok(())
    }

    /// Whether every byte of `[start, start + len)` is free (and inside the space).
    pub fn is_free(&self, start: u64, len: u64) -> bool {
        match last_byte(start, len) {
            Ok(end) => start >= self.base() && end <= self.end() && !self.overlaps(start, end),
            Err(_) => false,
        }
    }

    /// The ranges currently handed out, in address order.
    pub fn taken(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.taken.iter().map(|(s, e)| (*s, *e))
    }

    /// Whether any taken range overlaps `[start, end]`.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        // Ranges in the ledger are disjoint, so only the last one starting at or before `end`
        // can reach back to `start`.
        self.taken
            .range(..=end)
            .next_back()
            .is_some_and(|(_, last)| *last >= start)
    }
}

/// The last byte of `[start, start + len)`, refusing empty and wrapping ranges.
fn last_byte(start: u64, len: u64) -> Result<u64> {
    len.checked_sub(1)
        .and_then(|l| start.checked_add(l))
        .ok_or(Error::InvalidRange { start, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_reservation_inside_taken_range_is_refused() {
        let mut space = HostResourceSpace::new(0, 0x10_0000).unwrap();
        space.reserve_exact(0x1000, 0x1000).unwrap();
        // vm-allocator 0.1.4 alone would hand this out; the ledger must not.
        assert!(matches!(
            space.reserve_exact(0x1100, 0x100),
            Err(Error::RangeBusy {
                start: 0x1100,
                end: 0x11ff
            })
        ));
        assert!(matches!(
            space.reserve_exact(0x800, 0x1000),
            Err(Error::RangeBusy { .. })
        ));
        assert_eq!(space.taken().count(), 1);
    }

    #[test]
    fn release_makes_range_free_and_rejects_unknown_ranges() {
        let mut space = HostResourceSpace::new(0x1000, 0x10_0000).unwrap();
        let r = space.reserve_exact(0x2000, 0x800).unwrap();
        assert!(!space.is_free(0x2400, 0x10));
        let bogus = RangeInclusive::new(0x2000, 0x23ff).unwrap();
        assert!(matches!(
            space.release(&bogus),
            Err(Error::NotAllocated { .. })
        ));
        space.release(&r).unwrap();
        assert!(space.is_free(0x2000, 0x800));
        assert_eq!(space.taken().count(), 0);
        assert!(!space.is_free(0x0, 0x10), "below the base is never free");
    }

    #[test]
    fn first_fit_skips_taken_ranges() {
        let mut space = HostResourceSpace::new(0, 0x4000).unwrap();
        space.reserve_exact(0, 0x1000).unwrap();
        let r = space.allocate(0x1000, 0x1000).unwrap();
        assert_eq!((r.start(), r.end()), (0x1000, 0x1fff));
        assert_eq!(space.taken().count(), 2);
    }
}
