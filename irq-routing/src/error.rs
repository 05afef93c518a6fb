// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The crate's error type.

use vmm_sys_util::errno;

use crate::route::RouteId;

/// Errors returned by the router and its backends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend offered an empty or invalid GSI range for MSI routes, so
    /// the GSI allocator could not be built.
    #[error("the backend's MSI GSI range {start}..{end} is unusable")]
    GsiRange {
        /// First GSI of the range the backend offered.
        start: u32,
        /// One past the last GSI of that range.
        end: u32,
        /// Why `IdAllocator` refused it.
        #[source]
        source: vm_allocator::Error,
    },
    /// KVM does not support GSI routing (`KVM_CAP_IRQ_ROUTING` is 0), or its
    /// limit leaves no room for MSI routes next to the irqchip routes.
    #[error(
        "KVM reports {max_routes} routes, too few for MSI routes after {reserved} irqchip routes"
    )]
    RoutingUnsupported {
        /// The value of `KVM_CAP_IRQ_ROUTING`.
        max_routes: i32,
        /// How many table entries the irqchip routes take.
        reserved: u32,
    },
    /// Every GSI available for MSI routes is in use; the new route was not
    /// added and the existing routes are untouched.
    #[error("route limit reached: all {limit} MSI GSIs are in use")]
    RouteLimit {
        /// How many MSI routes the backend allows.
        limit: u32,
    },
    /// The route handle does not name a live route of this router.
    #[error("route {0:?} does not exist (removed, never added, or fell back to userspace)")]
    UnknownRoute(RouteId),
    /// The backend rejected the routing table. The previously committed table
    /// is still in force; the routes listed were undone (GSIs freed, irqfds
    /// detached) and now read as `RouteState::Userspace`.
    #[error("committing the routing table failed; {} staged route(s) were undone", undone.len())]
    Commit {
        /// Routes whose staged addition or update was undone.
        undone: Vec<RouteId>,
        /// The backend's error (for KVM, the errno of `KVM_SET_GSI_ROUTING`).
        #[source]
        source: errno::Error,
    },
    /// An INTx line was asked for on a GSI the router gives to MSI routes (KVM would take
    /// the resample irqfd and never acknowledge the line).
    #[error("GSI {gsi} is an MSI GSI, not an irqchip pin")]
    NotAnIrqchipGsi {
        /// The GSI asked for.
        gsi: u32,
    },
    /// Binding an INTx line's irqfd failed (EINVAL without a full in-kernel irqchip, EBUSY
    /// for an eventfd already bound).
    #[error("binding the INTx irqfd to GSI {gsi} failed")]
    IrqfdAttach {
        /// The GSI.
        gsi: u32,
        /// The backend's error (for KVM, the errno of `KVM_IRQFD`).
        #[source]
        source: errno::Error,
    },
    /// Creating an eventfd failed.
    #[error("creating an eventfd failed")]
    EventFd {
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// Detaching an irqfd from its GSI failed. The GSI stays reserved so no
    /// other route can be reached through the still-bound irqfd.
    #[error("detaching the irqfd from GSI {gsi} failed")]
    IrqfdDetach {
        /// The GSI the irqfd was attached to.
        gsi: u32,
        /// The backend's error (for KVM, the errno of `KVM_IRQFD`).
        #[source]
        source: errno::Error,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
