// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A VM's interrupt routing table and [`RouteBatch`], a guard that defers
//! `KVM_SET_GSI_ROUTING` so a batch of route changes costs one commit.
//!
//! `KVM_SET_GSI_ROUTING` replaces the VM's whole routing table and walks
//! every irqfd of the VM, so committing once per MSI-X vector makes a
//! device's (or a VM's) setup quadratic in its vector count. A [`Router`]
//! owns the MSI routes of one VM: their GSIs (allocated inside the backend's
//! route limit), their messages and their irqfds. Outside a batch every
//! change commits at once; while a [`RouteBatch`] guard is alive, changes are
//! staged and the outermost guard commits the table once, then attaches the
//! staged irqfds. Owners read each route's [`RouteState`] from a lock-free
//! snapshot, so MMIO handlers never wait on a commit.
//!
//! The hypervisor sits behind [`RoutingBackend`]: `KvmBackend` (feature
//! `kvm`, default) and `MemoryBackend` (feature `test-utils`, which also
//! brings `testing` when `kvm` is on: a real VM for tests, and one test body
//! run on both backends with delivery observed through local APICs).
//!
//! # Rules
//!
//! - **One commit per batch.** While any guard from [`Router::batch`] is
//!   alive (nested, or one VM-wide guard around every device's restore, on
//!   any thread), additions, updates and removals are staged. When the
//!   outermost guard ends ([`RouteBatch::commit`] or drop) the table is
//!   committed once, then pending irqfd detaches and staged irqfd attaches
//!   are issued. A batch that changed nothing issues nothing.
//! - **GSIs.** Each route holds a GSI from an `IdAllocator` over the
//!   backend's [`RoutingBackend::msi_gsi_range`], which keeps the whole table
//!   inside KVM's `KVM_CAP_IRQ_ROUTING` limit together with the irqchip
//!   routes. At the limit, [`Router::add_msi_route`] returns
//!   [`Error::RouteLimit`] and nothing else changes ([`Router::add_msi_routes`]
//!   adds a device's vectors under one lock, all or none). Routes are meant to be
//!   held lazily: add one when a vector is first enabled and unmasked, and
//!   remove it when the vector is disabled. (Whether masking also removes
//!   the route is the owner's choice; `vmm-glue` keeps it, so a mask/unmask
//!   cycle costs no commit.) A removed route's GSI is reused only after the
//!   table without it is committed and its irqfd is detached.
//! - **Failures.** If attaching vector k's irqfd fails, k's GSI is released
//!   and k reads as [`RouteState::Userspace`]; other routes are unaffected.
//!   If the backend refuses the table, the previous table stays in force and
//!   every route the batch added or changed is undone (GSI freed, irqfd
//!   detached, state `Userspace`), listed in [`Error::Commit`].
//! - **Hot paths.** [`Router::route_state`], [`Router::route`] and
//!   [`Router::snapshot`] read an `arc-swap` snapshot and never wait on a
//!   commit. The snapshot is republished after every operation outside a
//!   batch, when the outermost guard ends, and when a nested guard ends after
//!   an update or a removal; a route added inside a running batch reads as
//!   [`RouteState::Staged`] (published or not: a handle the snapshot does not
//!   know is one issued after it). A lookup indexes by handle, and a
//!   publication copies only the chunks of handles that changed, so neither
//!   grows with the number of routes the VM holds.
//!
//! # Example
//!
//! Eight vectors of one device routed with a single commit (this example uses
//! the in-memory backend; with `KvmBackend::new(vm)` the same code drives a
//! real VM):
//!
#![cfg_attr(feature = "test-utils", doc = "```")]
#![cfg_attr(not(feature = "test-utils"), doc = "```ignore")]
//! use std::sync::Arc;
//! use irq_routing::{BatchOutcome, MemoryBackend, MsiMessage, RouteState, Router};
//! use vmm_sys_util::eventfd::EventFd;
//!
//! let backend = MemoryBackend::new();
//! let router = Arc::new(Router::new(backend.clone())?);
//!
//! let batch = router.batch();
//! let mut vectors = Vec::new();
//! for v in 0..8u32 {
//!     let irqfd = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(std::io::Error::from)?);
//!     let msi = MsiMessage::new(0xfee0_0000, 0x30 + v);
//!     vectors.push(router.add_msi_route(msi, Some(irqfd))?);
//! }
//! assert_eq!(router.route_state(vectors[0]), Some(RouteState::Staged));
//! let BatchOutcome::Committed(report) = batch.commit()? else {
//!     unreachable!("this was the only batch");
//! };
//! assert!(report.committed);
//! assert_eq!(backend.commits(), 1);
//! assert_eq!(backend.attaches(), 8);
//! assert!(matches!(router.route_state(vectors[0]), Some(RouteState::Routed { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod backend;
mod batch;
mod error;
mod intx;
#[cfg(feature = "kvm")]
mod kvm;
#[cfg(feature = "test-utils")]
mod memory;
mod route;
mod router;
mod store;
#[cfg(all(feature = "test-utils", feature = "kvm"))]
pub mod testing;

pub use backend::RoutingBackend;
pub use batch::{BatchOutcome, BatchReport, RouteBatch};
pub use error::{Error, Result};
pub use intx::IntxLine;
#[cfg(feature = "kvm")]
pub use kvm::{KvmBackend, IOAPIC_PINS, PIC_PINS};
#[cfg(feature = "test-utils")]
pub use memory::{MemoryBackend, MemoryOp};
pub use route::{
    MsiMessage, RouteEntry, RouteId, RouteSnapshot, RouteState, RouteView, UserspaceReason,
};
pub use router::{Router, RouterStats};
