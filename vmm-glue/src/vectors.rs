// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host side of a device's MSI or MSI-X vectors: for each vector an irqfd (bound to its
//! KVM route while unmasked), a userspace eventfd (where the VFIO trigger points while the
//! vector has no KVM route to rely on), its route handle, and the trigger cache in front of
//! `VFIO_DEVICE_SET_IRQS`.
//!
//! Rules this module keeps:
//! * A vector holds a route (and so a GSI) only once it has been unmasked with a valid message
//!   (lazy rule of `irq-routing`). Once routed, masking keeps the route, its GSI and the VFIO
//!   trigger on the irqfd: only the irqfd is taken off the GSI ([`Router::park_irqfd`], one
//!   irqfd detach, no `SET_IRQS`, no routing commit), so a masked vector's interrupts wait in
//!   its irqfd, where the PBA emulation finds them. Unmasking drains the irqfd first (what it
//!   held is pending and is delivered as the current message allows) and puts it back.
//! * Route changes of one operation run inside one [`RouteBatch`](irq_routing::RouteBatch)
//!   (unless the strategy is per-vector), nested in the caller's batch if it holds one.
//! * A vector's trigger points at its irqfd only while the message its GSI holds in the
//!   committed table is the vector's current message (or the route awaits its first commit,
//!   so its irqfd is not attached yet and a signal waits in it). While an update of its route
//!   is staged, the GSI still holds the previous message: the trigger moves to the userspace
//!   eventfd and the VMM delivers the current message, until the commit lets it move back.
//!   No interrupt is injected with a stale message.
//! * Triggers go through a cache: a vector already pointing at the wanted fd costs nothing; when
//!   several vectors change at once they are all set with one SET_IRQS.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use irq_routing::{MsiMessage, RouteId, RouteSnapshot, RouteState, RouteView, Router};
use vfio_core::{IrqSet, MsixTriggers, VfioDevice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::stats::DeviceStats;
use crate::{Error, Result, Strategy};

/// What the guest wants for one vector right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// Masked by its own bit or the function mask.
    pub masked: bool,
    /// The message programmed.
    pub msg: MsiMessage,
}

/// Whether a route in `state` delivers through KVM (staged or routed).
fn on_kvm_path(state: Option<RouteState>) -> bool {
    matches!(
        state,
        Some(RouteState::Staged) | Some(RouteState::Routed { .. })
    )
}

/// Whether signalling the irqfd of route `id` makes KVM inject exactly `msg`, now or once the
/// irqfd is attached: the route is on the KVM path and its GSI holds no other committed message.
///
/// A route added in a batch still running has no committed message yet: its irqfd is not
/// attached, so a signal waits in the eventfd and KVM injects it with `msg` when the commit
/// attaches it. A route whose update is staged still holds the previous message at its GSI
/// until the commit: its irqfd would inject a stale message, so the vector goes through
/// userspace until then.
fn irqfd_injects(snapshot: &RouteSnapshot, id: RouteId, msg: &MsiMessage) -> bool {
    let (on_path, view) = path_and_view(snapshot, id);
    on_path && view.is_none_or(|v| v.committed_msi.is_none_or(|c| c == *msg))
}

/// Whether route `id` is on the KVM path in `snapshot`, and its view if the snapshot holds one
/// (a handle issued after the snapshot, added inside a batch still running, is staged with no
/// view).
fn path_and_view(snapshot: &RouteSnapshot, id: RouteId) -> (bool, Option<RouteView>) {
    match snapshot.lookup(id) {
        Some((state, view)) => (on_kvm_path(Some(state)), view),
        None => (false, None),
    }
}

/// A message KVM can route: a non-zero address.
pub(crate) fn valid(msg: &MsiMessage) -> bool {
    msg.address != 0
}

struct Slot {
    irqfd: Arc<EventFd>,
    user: EventFd,
    route: Option<RouteId>,
    routed_msg: Option<MsiMessage>,
    /// The route's irqfd is parked (the vector is masked): off its GSI, still the trigger.
    parked: bool,
    /// A second handle on `irqfd` for the vector's next route to take, made when the slot is
    /// and again when a route goes: adding a route (the resume path) then moves it to the
    /// router instead of updating the `Arc`'s count.
    for_route: Option<Arc<EventFd>>,
}

impl Slot {
    /// The handle on the irqfd that a new route of this vector keeps.
    fn irqfd_for_route(&mut self) -> Arc<EventFd> {
        self.for_route.take().unwrap_or_else(|| self.irqfd.clone())
    }

    /// The vector's route is gone: a handle for the next one is made now.
    fn route_removed(&mut self) {
        self.route = None;
        self.parked = false;
        self.routed_msg = None;
        if self.for_route.is_none() {
            self.for_route = Some(self.irqfd.clone());
        }
    }

    /// Adds a route for this vector (committed at once outside a batch).
    fn add_route(&mut self, router: &Router, msg: MsiMessage, stats: &mut DeviceStats) {
        match router.add_msi_route(msg, Some(self.irqfd_for_route())) {
            Ok(id) => {
                self.route = Some(id);
                self.routed_msg = Some(msg);
            }
            Err(_) => stats.route_failures += 1,
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("irqfd", &self.irqfd.as_raw_fd())
            .field("user", &self.user.as_raw_fd())
            .field("route", &self.route)
            .finish()
    }
}

/// What [`VectorSet::sync_triggers`] wants: each vector's fd, how many differ from the trigger
/// cache and the first that does, and whether a route is off the KVM path.
struct WantedFds {
    fds: Vec<Option<RawFd>>,
    changed: usize,
    first: usize,
    off_path: bool,
    /// Some unmasked vector's trigger waits on its userspace eventfd for a staged update of
    /// its route to be committed (its GSI still holds the previous message).
    awaiting_commit: bool,
}

/// What the last trigger sync of a [`VectorSet`] saw, so that a later check can tell whether a
/// commit since can have moved any trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LastSync {
    /// [`router_failures`] read before that sync loaded its snapshot.
    failures: u64,
    /// [`WantedFds::awaiting_commit`] of that sync.
    awaiting_commit: bool,
}

/// How many commits and irqfd attaches the router has seen fail: the only events besides a
/// staged update's commit that move a route's state under a device's feet.
pub(crate) fn router_failures(router: &Router) -> u64 {
    let s = router.stats();
    s.failed_commits.saturating_add(s.failed_irqfd_attaches)
}

/// The trigger cache of an index: vfio-core's for MSI-X, a plain one for MSI.
#[derive(Debug)]
enum Triggers {
    Msix(MsixTriggers),
    Msi {
        enabled: bool,
        fds: Vec<Option<RawFd>>,
    },
}

/// How a vector that fired while unmasked must be delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Through its irqfd (KVM injects).
    Kvm,
    /// No KVM route: the VMM injects this message itself.
    Userspace(MsiMessage),
    /// The vector's message is not one KVM could route (address 0: never programmed), so
    /// there is nothing to inject.
    Unprogrammed,
}

/// The vectors of one MSI or MSI-X index.
#[derive(Debug)]
pub(crate) struct VectorSet {
    slots: Vec<Slot>,
    triggers: Triggers,
    /// Set by every successful [`VectorSet::sync_triggers`]; cleared by anything else that
    /// changes routes or triggers.
    last_sync: Option<LastSync>,
}

fn eventfd() -> Result<EventFd> {
    EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)
}

impl VectorSet {
    /// Vectors for the MSI-X index (`cache` from vfio-core) or the MSI index (`cache` None).
    pub(crate) fn new(count: u16, cache: Option<MsixTriggers>) -> Result<Self> {
        let mut slots = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let irqfd = Arc::new(eventfd()?);
            slots.push(Slot {
                for_route: Some(irqfd.clone()),
                irqfd,
                user: eventfd()?,
                route: None,
                routed_msg: None,
                parked: false,
            });
        }
        let triggers = match cache {
            Some(c) => Triggers::Msix(c),
            None => Triggers::Msi {
                enabled: false,
                fds: vec![None; usize::from(count)],
            },
        };
        Ok(VectorSet {
            slots,
            triggers,
            last_sync: None,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The irqfd of `vector` (bound to its GSI once routed).
    pub(crate) fn irqfd(&self, vector: u16) -> Option<&EventFd> {
        self.slots.get(usize::from(vector)).map(|s| &*s.irqfd)
    }

    /// The userspace eventfd of `vector`.
    pub(crate) fn user_eventfd(&self, vector: u16) -> Option<&EventFd> {
        self.slots.get(usize::from(vector)).map(|s| &s.user)
    }

    /// The route of `vector`, if it holds one.
    pub(crate) fn route(&self, vector: u16) -> Option<RouteId> {
        self.slots.get(usize::from(vector)).and_then(|s| s.route)
    }

    /// The fd the VFIO trigger of `vector` points at, as the cache knows it.
    pub(crate) fn trigger(&self, vector: u16) -> Option<RawFd> {
        match &self.triggers {
            Triggers::Msix(c) => c.trigger(u32::from(vector)),
            Triggers::Msi { fds, .. } => fds.get(usize::from(vector)).copied().flatten(),
        }
    }

    /// Whether `vector`'s route is staged or routed (whatever message its GSI holds).
    #[cfg(test)]
    pub(crate) fn kvm_path(&self, router: &Router, vector: u16) -> bool {
        self.route(vector)
            .is_some_and(|id| on_kvm_path(router.route_state(id)))
    }

    /// Whether signalling `vector`'s irqfd delivers `msg` (see [`irqfd_injects`]).
    pub(crate) fn irqfd_delivers(&self, router: &Router, vector: u16, msg: &MsiMessage) -> bool {
        self.route(vector)
            .is_some_and(|id| irqfd_injects(&router.snapshot(), id, msg))
    }

    /// Gives every vector in `which` that is unmasked with a valid message a route carrying
    /// its current message, in one batch (per `strategy`). Route failures leave the vector on
    /// the userspace path and are counted, not returned: the guest's write cannot fail.
    ///
    /// Inside the batch the vectors that need a new route get them all at once
    /// ([`Router::add_msi_routes`]: one lock, one reservation); at the route limit, as many
    /// as still fit get one, in vector order, as one-by-one additions would.
    pub(crate) fn ensure_routes(
        &mut self,
        router: &Router,
        strategy: Strategy,
        wanted: &[Wanted],
        which: impl Iterator<Item = u16>,
        stats: &mut DeviceStats,
    ) {
        self.last_sync = None;
        let batch = strategy.batches_per_device().then(|| router.batch());
        // Only the route a step adds, updates or removes changes state, so one snapshot
        // answers for every existing route (loaded once, not per vector).
        let mut snapshot: Option<std::sync::Arc<RouteSnapshot>> = None;
        // Vectors that need a new route, when they are added together.
        let most = which.size_hint().1.unwrap_or(0);
        let mut new: Vec<(usize, MsiMessage)> = Vec::new();
        for v in which {
            let i = usize::from(v);
            let (Some(slot), Some(w)) = (self.slots.get_mut(i), wanted.get(i)) else {
                continue;
            };
            if w.masked || !valid(&w.msg) {
                continue;
            }
            // A route that fell back to userspace is retried: remove it, add it again.
            if let Some(id) = slot.route {
                let snap = snapshot.get_or_insert_with(|| router.snapshot());
                if matches!(snap.state(id), Some(RouteState::Userspace(_)) | None) {
                    let _ = router.remove_route(id);
                    slot.route_removed();
                }
            }
            match slot.route {
                // Outside a batch (per vector) each addition commits on its own.
                None if batch.is_none() => slot.add_route(router, w.msg, stats),
                None => {
                    if new.is_empty() {
                        new.reserve(most);
                    }
                    new.push((i, w.msg));
                }
                Some(id) if slot.routed_msg != Some(w.msg) => {
                    match router.update_msi_route(id, w.msg) {
                        Ok(()) => slot.routed_msg = Some(w.msg),
                        Err(_) => stats.route_failures += 1,
                    }
                }
                Some(_) => {}
            }
        }
        if !new.is_empty() {
            self.add_routes(router, &new, stats);
        }
        if let Some(b) = batch {
            if b.finish().is_err() {
                stats.route_failures += 1;
            }
        }
    }

    /// Adds the routes of `new` (vector, message) with one [`Router::add_msi_routes`]; when
    /// the router refuses them all (fewer GSIs left than routes), adds them one by one, so the
    /// vectors that still fit get theirs and the others are counted as failures.
    fn add_routes(
        &mut self,
        router: &Router,
        new: &[(usize, MsiMessage)],
        stats: &mut DeviceStats,
    ) {
        let slots = &mut self.slots;
        let routes = new
            .iter()
            .filter_map(|(i, msg)| slots.get_mut(*i).map(|s| (*msg, Some(s.irqfd_for_route()))));
        match router.add_msi_routes(routes) {
            Ok(ids) => {
                for ((i, msg), id) in new.iter().zip(ids) {
                    if let Some(slot) = self.slots.get_mut(*i) {
                        slot.route = Some(id);
                        slot.routed_msg = Some(*msg);
                    }
                }
            }
            Err(_) => {
                for (i, msg) in new {
                    if let Some(slot) = self.slots.get_mut(*i) {
                        slot.add_route(router, *msg, stats);
                    }
                }
            }
        }
    }

    /// Removes every route (one batch per `strategy`). The eventfds stay for the next enable.
    pub(crate) fn release_routes(&mut self, router: &Router, strategy: Strategy) {
        self.last_sync = None;
        let batch = strategy.batches_per_device().then(|| router.batch());
        for slot in &mut self.slots {
            if let Some(id) = slot.route {
                let _ = router.remove_route(id);
            }
            slot.route_removed();
        }
        if let Some(b) = batch {
            let _ = b.finish();
        }
    }

    /// Parks the irqfd of every routed vector the guest masked and unparks the others
    /// (`snapshot` is the router's current one). An irqfd is drained before it goes back on
    /// its GSI, so what a masked vector raised is not injected blindly: the vectors returned
    /// fired while parked and are pending. A park or unpark the router refuses is counted; the
    /// vector then stays as it was, and its trigger follows its parked state.
    pub(crate) fn sync_parking(
        &mut self,
        router: &Router,
        snapshot: &RouteSnapshot,
        wanted: &[Wanted],
        stats: &mut DeviceStats,
    ) -> Vec<u16> {
        let mut fired = Vec::new();
        if !self.slots.iter().any(|s| s.parked) && !wanted.iter().any(|w| w.masked) {
            // Nothing parked and nothing to park: the common case of a resume.
            return fired;
        }
        for (v, slot) in (0u16..).zip(self.slots.iter_mut()) {
            let Some(id) = slot.route else {
                continue;
            };
            let (on_path, _) = path_and_view(snapshot, id);
            let masked = wanted.get(usize::from(v)).is_some_and(|w| w.masked);
            if !on_path {
                // The router took the irqfd off with the route's GSI.
                slot.parked = false;
                continue;
            }
            if masked && !slot.parked {
                match router.park_irqfd(id) {
                    Ok(()) => slot.parked = true,
                    Err(_) => stats.route_failures += 1,
                }
            } else if !masked && slot.parked {
                if slot.irqfd.read().is_ok_and(|n| n > 0) {
                    fired.push(v);
                }
                match router.unpark_irqfd(id) {
                    Ok(()) => slot.parked = false,
                    Err(_) => stats.route_failures += 1,
                }
            }
        }
        fired
    }

    /// Reads (and resets) the parked irqfd of `vector`: how many times the device raised it
    /// while masked since the last read.
    pub(crate) fn drain_parked(&self, vector: u16) -> u64 {
        self.slots
            .get(usize::from(vector))
            .filter(|s| s.parked)
            .and_then(|s| s.irqfd.read().ok())
            .unwrap_or(0)
    }

    /// The fd each vector's trigger should point at, how many of them differ from the
    /// cache (and the first that does), and whether any vector holds a route that is off the
    /// KVM path in `snapshot` (one pass over the vectors).
    fn wanted_fds(&self, snapshot: &RouteSnapshot, wanted: &[Wanted]) -> WantedFds {
        let mut out = WantedFds {
            fds: Vec::with_capacity(self.slots.len()),
            changed: 0,
            first: 0,
            off_path: false,
            awaiting_commit: false,
        };
        for (i, slot) in self.slots.iter().enumerate() {
            let w = wanted.get(i);
            let kvm = match slot.route {
                Some(id) => {
                    let (on_path, view) = path_and_view(snapshot, id);
                    out.off_path |= !on_path;
                    // As `irqfd_injects`: on the KVM path, and no other message committed.
                    let unmasked = w.filter(|w| !w.masked);
                    let stale = unmasked.is_some_and(|w| {
                        view.is_some_and(|v| v.committed_msi.is_some_and(|c| c != w.msg))
                    });
                    out.awaiting_commit |= on_path && stale;
                    // A masked vector whose irqfd is parked keeps its trigger there: its
                    // interrupts wait in the irqfd, which KVM no longer reads.
                    let parked_masked = slot.parked && w.is_some_and(|w| w.masked);
                    on_path && (parked_masked || (unmasked.is_some() && !stale && !slot.parked))
                }
                None => false,
            };
            let fd = Some(if kvm {
                slot.irqfd.as_raw_fd()
            } else {
                slot.user.as_raw_fd()
            });
            if self.trigger(u16::try_from(i).unwrap_or(u16::MAX)) != fd {
                if out.changed == 0 {
                    out.first = i;
                }
                out.changed += 1;
            }
            out.fds.push(fd);
        }
        out
    }

    fn enabled(&self) -> bool {
        match &self.triggers {
            Triggers::Msix(c) => c.is_enabled(),
            Triggers::Msi { enabled, .. } => *enabled,
        }
    }

    /// Points every vector's trigger where it belongs. Index disabled: one SET_IRQS enables
    /// all vectors. Enabled: nothing if no vector changes, one per-vector call if one does,
    /// one SET_IRQS for all vectors if several do.
    ///
    /// `snapshot` is the router's current one, loaded after `failures` ([`router_failures`])
    /// was read. Returns whether any vector holds a route off the KVM path (only then can
    /// [`VectorSet::take_stranded`] find anything).
    pub(crate) fn sync_triggers(
        &mut self,
        dev: &dyn VfioDevice,
        snapshot: &RouteSnapshot,
        failures: u64,
        wanted: &[Wanted],
        stats: &mut DeviceStats,
    ) -> Result<bool> {
        let WantedFds {
            fds,
            changed,
            first,
            off_path,
            awaiting_commit,
        } = self.wanted_fds(snapshot, wanted);
        let synced = LastSync {
            failures,
            awaiting_commit,
        };
        self.last_sync = None;
        let enabled = self.enabled();
        if enabled && changed == 0 {
            self.last_sync = Some(synced);
            return Ok(off_path);
        }
        let single = (enabled && changed == 1).then_some(first);
        stats.set_irqs_calls += 1;
        let res = match (&mut self.triggers, single) {
            (Triggers::Msix(c), Some(i)) => c
                .set_trigger(dev, i as u32, fds.get(i).copied().flatten())
                .map(|_| ()),
            (Triggers::Msix(c), None) => c.enable_all(dev, &fds),
            (
                Triggers::Msi {
                    enabled,
                    fds: cached,
                },
                _,
            ) => {
                let set = IrqSet::eventfds(vfio_core::info::MSI_IRQ_INDEX, 0, fds.clone());
                dev.set_irqs(&set).map(|()| {
                    *enabled = true;
                    *cached = fds;
                })
            }
        };
        res.map_err(Error::SetIrqs)?;
        self.last_sync = Some(synced);
        Ok(off_path)
    }

    /// Whether no commit since the last trigger sync can have moved a trigger: that sync saw
    /// no vector waiting for a staged update, and no commit or irqfd attach of the router has
    /// failed since (`failures` is [`router_failures`] now). A route staged then is routed
    /// now with the message its trigger already assumed.
    pub(crate) fn settled(&self, failures: u64) -> bool {
        self.last_sync
            .is_some_and(|l| !l.awaiting_commit && l.failures == failures)
    }

    /// Disables the index on the device (one SET_IRQS) if it is enabled.
    pub(crate) fn disable(&mut self, dev: &dyn VfioDevice, stats: &mut DeviceStats) -> Result<()> {
        self.last_sync = None;
        if !self.enabled() {
            return Ok(());
        }
        stats.set_irqs_calls += 1;
        match &mut self.triggers {
            Triggers::Msix(c) => c.disable(dev),
            Triggers::Msi { enabled, fds } => dev
                .set_irqs(&IrqSet::disable(vfio_core::info::MSI_IRQ_INDEX))
                .map(|()| {
                    *enabled = false;
                    fds.iter_mut().for_each(|f| *f = None);
                }),
        }
        .map_err(Error::SetIrqs)
    }

    /// How `vector` must be delivered now that it is unmasked: through its irqfd only when
    /// that injects `msg` (not while an update of its route waits for a commit); nowhere when
    /// `msg` was never programmed. Every delivery path asks this, so they all agree.
    pub(crate) fn delivery(&self, router: &Router, vector: u16, msg: MsiMessage) -> Delivery {
        if !valid(&msg) {
            Delivery::Unprogrammed
        } else if self.irqfd_delivers(router, vector, &msg) {
            Delivery::Kvm
        } else {
            Delivery::Userspace(msg)
        }
    }

    /// Reads (and resets) the irqfd of every vector that holds a route no longer on the KVM
    /// path (it fell back to userspace, or is gone): signals that reached the irqfd while
    /// its trigger still pointed there, which no GSI will ever inject. Returns those vectors.
    ///
    /// Vectors whose route is staged or routed are left alone (KVM owns their irqfd), and so
    /// are vectors that never held a route (their irqfd was never a trigger), so the common
    /// path costs no syscall.
    pub(crate) fn take_stranded(&self, snapshot: &RouteSnapshot) -> Vec<u16> {
        (0u16..)
            .zip(self.slots.iter())
            .filter(|(_, s)| s.route.is_some_and(|id| !on_kvm_path(snapshot.state(id))))
            .filter(|(_, s)| s.irqfd.read().is_ok_and(|n| n > 0))
            .map(|(v, _)| v)
            .collect()
    }

    /// Signals `vector`'s irqfd, so KVM injects its route's message.
    pub(crate) fn kick_irqfd(&self, vector: u16) -> bool {
        self.slots
            .get(usize::from(vector))
            .is_some_and(|s| s.irqfd.write(1).is_ok())
    }

    /// Reads (and resets) `vector`'s userspace eventfd; returns how many signals it held.
    pub(crate) fn drain_user(&self, vector: u16) -> u64 {
        self.slots
            .get(usize::from(vector))
            .and_then(|s| s.user.read().ok())
            .unwrap_or(0)
    }
}
