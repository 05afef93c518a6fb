// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Which BAR pages may be mmapped, on the host and in the guest, sub-page BARs included.
//!
//! - [`HostMmapPlan::probe_and_reserve`] probes a device's BARs once, reserving the rest of the
//!   page of each sub-page BAR in a [`HostResourceSpace`]; the plan's queries
//!   ([`HostMmapPlan::is_mappable`], [`HostMmapPlan::mmap_len`]) have no side effects, and the
//!   reservations are released on [`HostMmapPlan::disable`] or drop.
//! - [`SparseLayout`] splits one BAR into mapped and trapped areas around the MSI-X table and
//!   PBA and the region's sparse-mmap areas.
//! - [`GuestPageMap`] follows the guest's BAR placements and says, as they move, which regions
//!   own their guest pages and may be mapped, as a list of [`MapChange`]s.
//! - [`Mapping`] is the mmap of a region, unmapped on drop.
//!
//! ```
//! use bar_mmap::{BarInfo, HostMmapPlan, HostResourceSpace, PageSize};
//!
//! let space = HostResourceSpace::new(0xfe00_0000, 0x10_0000)?.into_shared();
//! let bars = [BarInfo::memory(0, 0xfe00_0000, 0x100), BarInfo::io(1, 0xc000, 0x40)];
//! let plan = HostMmapPlan::probe_and_reserve(&bars, PageSize::SIZE_4K, &space)?;
//! assert_eq!(plan.mmap_len(0), Some(0x1000)); // sub-page BAR, rest of its page reserved
//! assert!(!plan.is_mappable(1)); // I/O BARs always trap
//! // A hot-added BAR cannot land in the rest of BAR 0's page...
//! assert!(space.lock().unwrap().reserve_exact(0xfe00_0800, 0x100).is_err());
//! plan.disable()?;
//! // ...until the plan is disabled.
//! assert!(space.lock().unwrap().is_free(0xfe00_0100, 0xf00));
//! # Ok::<(), bar_mmap::Error>(())
//! ```

mod error;
mod guest;
mod host;
mod mapping;
mod page;
mod resources;
mod slots;
mod sparse;

pub use error::{Error, Result};
pub use guest::{GuestBar, GuestMapping, GuestPageMap, GuestTrap, MapChange, RegionId};
pub use host::{BarInfo, BarKind, HostDecision, HostMmapPlan, NotMappable};
#[cfg(feature = "kvm")]
pub use mapping::KvmMemorySlots;
pub use mapping::{host_page_size, Mapping};
pub use page::PageSize;
pub use resources::{HostResourceSpace, SharedResourceSpace};
pub use slots::{GuestMappings, InstalledSlot, MemorySlots, RecordedSlots, SlotStats};
pub use sparse::{Area, AreaKind, ByteRange, MsixLocation, RegionMmapCaps, SparseLayout};
pub use vm_allocator::RangeInclusive;
