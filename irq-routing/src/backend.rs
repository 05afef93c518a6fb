// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The narrow boundary between the router and the hypervisor.

use std::fmt::Debug;
use std::ops::Range;

use vmm_sys_util::errno;
use vmm_sys_util::eventfd::EventFd;

use crate::route::RouteEntry;

/// What the router needs from a hypervisor: replace the routing table, and
/// bind or unbind an irqfd to a GSI.
///
/// Implementations: `KvmBackend` (feature `kvm`) and
/// `MemoryBackend` (feature `test-utils`).
pub trait RoutingBackend: Debug + Send + Sync {
    /// The GSIs the router may give to MSI routes. Its length is the route
    /// limit: the backend has already subtracted whatever table entries it
    /// keeps for itself.
    fn msi_gsi_range(&self) -> Range<u32>;

    /// Replace the whole routing table with `routes` (MSI routes sorted by
    /// GSI) plus the routes the backend owns. On error the previous table
    /// must still be in force.
    fn commit_table(&self, routes: &[RouteEntry]) -> errno::Result<()>;

    /// Bind `fd` to `gsi`: signalling `fd` raises the GSI.
    fn attach_irqfd(&self, fd: &EventFd, gsi: u32) -> errno::Result<()>;

    /// Unbind `fd` from `gsi` (a resample irqfd too).
    fn detach_irqfd(&self, fd: &EventFd, gsi: u32) -> errno::Result<()>;

    /// Bind `fd` to irqchip pin `gsi` as a level-triggered line: signalling `fd` asserts it,
    /// and the guest's acknowledgement de-asserts it and signals `resample`.
    fn attach_resample_irqfd(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> errno::Result<()>;
}
