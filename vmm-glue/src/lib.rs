// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A VFIO passthrough PCI device that a VMM attaches to its bus, composed from the
//! workspace's crates, with batched interrupt setup and a fast resume path.
//!
//! * [`PassthroughDevice`] ([`device`]): built from a `vfio-core` device, the VM's shared
//!   [`irq_routing::Router`] and resources ([`VmResources`]). Config space is emulated with
//!   `pci-config` ([`config`]): MSI and MSI-X fully emulated, SR-IOV and ARI hidden.
//! * [`msix`]: the emulated MSI-X table and PBA, with defined behaviour for hostile accesses.
//! * [`irq_mode`]: none / INTx / MSI / MSI-X, and what happens when MSI and MSI-X are both
//!   enabled.
//! * [`interrupts`]: the interrupt lifecycle (batched enables, one SET_IRQS per enable, masks
//!   that only take the irqfd off its GSI, PBA emulation).
//! * [`bars`] and [`mmio`]: mapped or trapped BARs (bar-mmap), vm-device bus traits.
//! * [`migration`]: save and restore in QEMU's order, [`restore_all`] with one VM-wide commit
//!   (all or nothing for bad states), [`StagedRestore`] for switchover, with
//!   [`StagedRestore::switchover`] leaving the routing commit for after the VM resumes
//!   ([`DeferredCommit`]).
//! * [`device_data`]: the device-internal state through VFIO migration v2 (`STOP_COPY` on the
//!   source, `RESUMING` on the destination), for devices built with
//!   [`PassthroughDevice::new_migratable`].
//! * [`live_migration`]: a VM's devices live-migrated through one byte stream: pre-copy
//!   iterated with `VFIO_MIG_GET_PRECOPY_INFO`, stop-copy size estimates, the P2P order across
//!   devices, dirty-page tracking into the VMM's bitmaps ([`DirtyLog`]), and a destination
//!   that refuses a bad stream with a typed error and resets its devices ([`Outgoing`],
//!   [`Incoming`]).
//! * [`notice`]: the opt-in guest migration notice, driven with the VMM's clock, never
//!   waiting on the guest.
//! * [`raise`]: raising a guest vector from the VMM (irqfd, userspace message, or pending
//!   bit) and MSI per-vector pending bits.
//! * [`strategy`]: the commit [`Strategy`] the benchmark compares.
//! * [`scripted_guest`]: a guest driver that programs MSI-X through config and MMIO writes
//!   only, for tests and the `bench-msix` benchmark.
//!
//! # Example
//!
//! (The simulated device and the in-memory router come from `vfio-core/sim` and
//! `irq-routing/test-utils`; a VMM uses a kernel device and `KvmBackend`.)
//!
//! ```
//! use std::sync::Arc;
//! use bar_mmap::{HostResourceSpace, PageSize};
//! use irq_routing::{MemoryBackend, Router};
//! use vfio_core::sim::{MsixPlacement, SimDevice};
//! use vmm_glue::{scripted_guest, DeviceOptions, PassthroughDevice, VmResources};
//!
//! let backend = MemoryBackend::new();
//! let router = Arc::new(Router::new(backend.clone())?);
//! let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)?.into_shared();
//! let vm = VmResources::new(router.clone(), host, PageSize::SIZE_4K);
//!
//! let sim = Arc::new(
//!     SimDevice::builder(0x8086, 0x154c)
//!         .bar(0, pci_config::BarKind::Mem64, 0x4000, false)
//!         .msix(MsixPlacement::in_bar(8, 0))
//!         .build()?,
//! );
//! let mut dev = PassthroughDevice::new(sim.clone(), &vm, DeviceOptions::default())?;
//!
//! // A guest driver places the BARs and programs MSI-X.
//! let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
//! scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
//! scripted_guest::program_msix(&mut dev, 0, |_| true).ok_or("no MSI-X")?;
//! assert_eq!(router.committed_table().len(), 8);
//!
//! // Save, then restore into a fresh VM with one routing commit.
//! let state = dev.save();
//! let router2 = Arc::new(Router::new(MemoryBackend::new())?);
//! let host2 = HostResourceSpace::new(0xe000_0000, 0x1000_0000)?.into_shared();
//! let vm2 = VmResources::new(router2.clone(), host2, PageSize::SIZE_4K);
//! let mut dev2 = PassthroughDevice::new(sim, &vm2, DeviceOptions::default())?;
//! let report = vmm_glue::restore_all(&router2, [(&mut dev2, &state)], vmm_glue::Strategy::VmWide)?;
//! assert_eq!(report.gsi_routing_commits, 1);
//! assert_eq!(report.set_irqs_calls(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Lets the unit tests share the integration tests' rig (`tests/common`), which names the
// crate `vmm_glue`.
#[cfg(test)]
extern crate self as vmm_glue;

pub mod bars;
pub mod config;
pub mod device;
pub mod device_data;
mod error;
pub mod interrupts;
pub mod irq_mode;
#[cfg(feature = "kvm")]
pub mod kvm_vfio;
pub mod lifecycle;
pub mod live_migration;
pub mod migration;
pub mod mmio;
pub mod msix;
pub mod notice;
pub mod raise;
pub mod scripted_guest;
mod stats;
pub mod strategy;
mod vectors;

pub use bars::BarDescription;
pub use device::{ConfigEvents, DeviceOptions, IntxEventFds, PassthroughDevice, VmResources};
pub use error::{Error, Result};
pub use irq_mode::IrqMode;
#[cfg(feature = "kvm")]
pub use kvm_vfio::KvmVfioDevice;
pub use lifecycle::UnplugReport;
pub use live_migration::{
    DirtyBitmap, DirtyLog, Incoming, MigrationOptions, Outgoing, Rollback, TransitionLog,
};
pub use migration::{restore_all, DeferredCommit, RestoreReport, StagedRestore};
pub use msix::{MsixEntry, MsixTable};
pub use notice::NoticeDelivery;
pub use raise::Raised;
pub use stats::DeviceStats;
pub use strategy::Strategy;
