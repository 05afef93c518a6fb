// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`Router`]: a VM's MSI routes, their GSIs and irqfds, and the snapshot readers see. The
//! commit that batches share is in `commit`, the route store in `store`.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use vm_allocator::IdAllocator;
use vmm_sys_util::eventfd::EventFd;

use crate::backend::RoutingBackend;
use crate::batch::{BatchReport, RouteBatch};
use crate::error::{Error, Result};
use crate::route::{Chunk, SnapSlot};
use crate::route::{
    MsiMessage, RouteEntry, RouteId, RouteSnapshot, RouteState, RouteView, UserspaceReason,
    CHUNK_ROUTES,
};
use crate::store::{Record, RouteStore, Slot};

/// Counters of the backend operations a router issued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Table commits issued (`KVM_SET_GSI_ROUTING`), failed ones included.
    pub commits: u64,
    /// Table commits the backend refused.
    pub failed_commits: u64,
    /// irqfd attaches issued, failed ones included.
    pub irqfd_attaches: u64,
    /// irqfd attaches the backend refused.
    pub failed_irqfd_attaches: u64,
    /// irqfd detaches issued, failed ones included.
    pub irqfd_detaches: u64,
}

/// A removal waiting for the next commit: the GSI stays reserved until the
/// table without the route is in force and the irqfd is detached.
#[derive(Debug)]
struct Removal {
    gsi: u32,
    irqfd: Option<Arc<EventFd>>,
}

struct Inner {
    backend: Box<dyn RoutingBackend>,
    gsis: IdAllocator,
    limit: u32,
    gsis_in_use: u32,
    routes: RouteStore,
    /// Batch guards alive.
    depth: usize,
    /// Routes added or updated since the last commit, in that order, no repeats (a route's
    /// `touched` flag says whether it is listed; removed routes may linger, and are skipped).
    touched: Vec<RouteId>,
    removals: Vec<Removal>,
    /// Whether the wanted table may differ from `in_force`.
    dirty: bool,
    /// The committed entries the router relies on (entries of released GSIs
    /// are dropped: nothing can raise them, and the next commit replaces them).
    in_force: Vec<RouteEntry>,
    stats: RouterStats,
    /// The last published snapshot (its chunks are shared with the one readers hold).
    published: RouteSnapshot,
    /// Per snapshot chunk, a bit per slot whose route changed since the last publication
    /// (bit `s % CHUNK_ROUTES` of word `s / CHUNK_ROUTES`).
    stale_slots: Vec<u64>,
    /// The chunks with a bit set in `stale_slots`, each listed once.
    stale_chunks: Vec<usize>,
    /// An update or a removal inside the running batch is not published yet. (An addition
    /// needs no publication before the commit: a handle the snapshot does not know reads as
    /// `Staged`.)
    republish: bool,
    /// While the outermost guard's commit builds its report: each settled route's outcome.
    report: Option<Vec<(RouteId, RouteState)>>,
}

/// A VM's MSI routes.
///
/// Shared as `Arc<Router>` by every device of one VM; all methods take
/// `&self` and serialise on an internal mutex, except [`Router::snapshot`] and
/// [`Router::route`], which are lock-free.
///
/// Outside a batch each operation commits at once (one `KVM_SET_GSI_ROUTING`
/// per change). While any [`RouteBatch`] guard is alive, on any thread,
/// operations are staged and the outermost guard's end commits them once.
pub struct Router {
    inner: Mutex<Inner>,
    snapshot: ArcSwap<RouteSnapshot>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Router")
            .field("backend", &inner.backend)
            .field("routes", &inner.routes.len)
            .field("gsis_in_use", &inner.gsis_in_use)
            .field("limit", &inner.limit)
            .field("batch_depth", &inner.depth)
            .field("stats", &inner.stats)
            .finish()
    }
}

impl Router {
    /// A router with no MSI route over `backend`. Issues no backend call: the
    /// backend's own routes stay as they are until the first commit.
    pub fn new(backend: impl RoutingBackend + 'static) -> Result<Self> {
        let range = backend.msi_gsi_range();
        let gsi_error = |source| Error::GsiRange {
            start: range.start,
            end: range.end,
            source,
        };
        let last = range
            .end
            .checked_sub(1)
            .ok_or(gsi_error(vm_allocator::Error::InvalidRange(
                u64::from(range.start),
                u64::from(range.end),
            )))?;
        let gsis = IdAllocator::new(range.start, last).map_err(gsi_error)?;
        Ok(Self {
            inner: Mutex::new(Inner {
                backend: Box::new(backend),
                gsis,
                limit: range.end - range.start,
                gsis_in_use: 0,
                routes: RouteStore::default(),
                depth: 0,
                touched: Vec::new(),
                removals: Vec::new(),
                dirty: false,
                in_force: Vec::new(),
                stats: RouterStats::default(),
                published: RouteSnapshot::default(),
                stale_slots: Vec::new(),
                stale_chunks: Vec::new(),
                republish: false,
                report: None,
            }),
            snapshot: ArcSwap::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves `Inner` consistent between
        // statements that matter; keep serving rather than poisoning the VM.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start (or join) a batch: until the returned guard and every other
    /// guard alive ends, route changes are staged.
    pub fn batch(&self) -> RouteBatch<'_> {
        self.lock().depth += 1;
        RouteBatch::new(self)
    }

    /// Add an MSI route and reserve a GSI for it, binding `irqfd` (if given)
    /// to that GSI once the route is committed.
    ///
    /// The `Arc` is kept as is: no file descriptor is duplicated.
    ///
    /// Outside a batch the route is committed before this returns; if
    /// attaching the irqfd then fails, the route is kept as
    /// [`RouteState::Userspace`] and this still returns its handle. Inside a
    /// batch the route reads as [`RouteState::Staged`] until the batch ends.
    ///
    /// # Errors
    /// [`Error::RouteLimit`] when no GSI is left (nothing changes);
    /// [`Error::Commit`] when the immediate commit failed (the route is gone).
    pub fn add_msi_route(&self, msi: MsiMessage, irqfd: Option<Arc<EventFd>>) -> Result<RouteId> {
        let mut inner = self.lock();
        let gsi = inner
            .gsis
            .allocate_id()
            .map_err(|_| Error::RouteLimit { limit: inner.limit })?;
        inner.gsis_in_use += 1;
        let id = inner.routes.insert(Record::staged(msi, gsi, irqfd));
        // Not marked stale: until a publication marks the touched routes (the flush that
        // settles them, or a nested guard's end after an update), a handle the snapshot does
        // not know reads as `Staged`, which it is.
        inner.touched.push(id);
        inner.dirty = true;
        if inner.depth == 0 {
            let result = inner.flush();
            if result.is_err() {
                inner.routes.remove(id);
            }
            self.publish(&mut inner);
            result?;
        }
        Ok(id)
    }

    /// Add several MSI routes at once, as [`Router::add_msi_route`] does for each, taking the
    /// router's lock once: the handles come back in the order of `routes`.
    ///
    /// All or nothing at the route limit: when the GSIs left cannot hold every route, none is
    /// added. Outside a batch all of them are committed together (one table commit, then the
    /// irqfd attaches); inside one they are staged like single additions.
    ///
    /// # Errors
    /// [`Error::RouteLimit`] when fewer GSIs are left than routes asked for (nothing changes);
    /// [`Error::Commit`] when the immediate commit failed (none of the routes is kept).
    pub fn add_msi_routes<I>(&self, routes: I) -> Result<Vec<RouteId>>
    where
        I: IntoIterator<Item = (MsiMessage, Option<Arc<EventFd>>)>,
    {
        let routes = routes.into_iter();
        let (low, high) = routes.size_hint();
        let mut inner = self.lock();
        // Room for as many routes as the iterator says, at most as many as GSIs are left.
        let room = high
            .unwrap_or(low)
            .min(inner.limit.saturating_sub(inner.gsis_in_use) as usize);
        let mut ids = Vec::with_capacity(room);
        inner.touched.reserve(room);
        inner.routes.reserve(room);
        for (msi, irqfd) in routes {
            let Ok(gsi) = inner.gsis.allocate_id() else {
                // Give back what this call took (its routes are the last ones touched).
                // Their slots move on to their next generation, so the handles issued stay
                // burnt, which nothing can observe.
                let kept = inner.touched.len().saturating_sub(ids.len());
                inner.touched.truncate(kept);
                for id in ids {
                    if let Some(gsi) = inner.routes.remove(id).and_then(|r| r.gsi) {
                        inner.release_gsi(gsi);
                    }
                }
                return Err(Error::RouteLimit { limit: inner.limit });
            };
            inner.gsis_in_use += 1;
            let id = inner.routes.insert(Record::staged(msi, gsi, irqfd));
            inner.touched.push(id);
            ids.push(id);
        }
        if ids.is_empty() {
            return Ok(ids);
        }
        // As for one addition, the publication that shows them marks them stale.
        inner.dirty = true;
        if inner.depth == 0 {
            let result = inner.flush();
            if result.is_err() {
                for &id in &ids {
                    inner.routes.remove(id);
                }
            }
            self.publish(&mut inner);
            result?;
        }
        Ok(ids)
    }

    /// Point a route at a new message. The same message changes nothing and
    /// issues nothing.
    ///
    /// A route that fell back to userspace only records the message; remove
    /// it and add it again to get a KVM route.
    ///
    /// # Errors
    /// [`Error::UnknownRoute`]; [`Error::Commit`] when the immediate commit
    /// failed (the route is then `Userspace`, its GSI released).
    pub fn update_msi_route(&self, id: RouteId, msi: MsiMessage) -> Result<()> {
        let mut inner = self.lock();
        let record = inner.routes.get_mut(id).ok_or(Error::UnknownRoute(id))?;
        if record.msi == msi {
            return Ok(());
        }
        record.msi = msi;
        let userspace = record.gsi.is_none();
        let newly_touched = !userspace && !record.touched;
        if !userspace {
            record.state = RouteState::Staged;
            record.touched = true;
        }
        inner.mark_stale(id);
        inner.republish = true;
        if userspace {
            // Only the message shown changed.
            if inner.depth == 0 {
                self.publish(&mut inner);
            }
            return Ok(());
        }
        if newly_touched {
            inner.touched.push(id);
        }
        inner.dirty = true;
        if inner.depth == 0 {
            let result = inner.flush();
            self.publish(&mut inner);
            result?;
        }
        Ok(())
    }

    /// Remove a route: its irqfd is detached and its GSI freed (after the
    /// commit that drops the route, inside a batch).
    ///
    /// The route is gone when this returns, even on error.
    ///
    /// # Errors
    /// [`Error::UnknownRoute`]; outside a batch [`Error::Commit`] (KVM keeps
    /// a stale entry at the freed GSI with no irqfd bound, so nothing can
    /// raise it) or [`Error::IrqfdDetach`] (the GSI stays reserved).
    pub fn remove_route(&self, id: RouteId) -> Result<()> {
        let mut inner = self.lock();
        // A listed handle stays in `touched`: it names nothing any more and is skipped.
        let record = inner.routes.remove(id).ok_or(Error::UnknownRoute(id))?;
        inner.mark_stale(id);
        inner.republish = true;
        if let Some(gsi) = record.gsi {
            if record.committed.is_none() && !record.attached {
                // Never reached KVM: give the GSI back at once.
                inner.release_gsi(gsi);
            } else {
                inner.dirty = true;
                inner.removals.push(Removal {
                    gsi,
                    irqfd: record.irqfd.filter(|_| record.attached),
                });
            }
        }
        let result = if inner.depth == 0 {
            inner.flush()
        } else {
            Ok(())
        };
        if inner.depth == 0 {
            self.publish(&mut inner);
        }
        result
    }

    /// Take route `id`'s irqfd off its GSI while keeping the route, its GSI and its committed
    /// message: signals on the irqfd wait in the eventfd instead of being injected, until
    /// [`Router::unpark_irqfd`]. What a masked MSI-X vector needs: no routing commit and no
    /// device call, one irqfd detach (none for a route not committed yet). A route without an
    /// irqfd, or parked already, is left as it is.
    pub fn park_irqfd(&self, id: RouteId) -> Result<()> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let record = inner.routes.get_mut(id).ok_or(Error::UnknownRoute(id))?;
        if record.parked || record.irqfd.is_none() {
            return Ok(());
        }
        if let (true, Some(gsi), Some(fd)) = (record.attached, record.gsi, record.irqfd.clone()) {
            inner.stats.irqfd_detaches += 1;
            inner
                .backend
                .detach_irqfd(&fd, gsi)
                .map_err(|source| Error::IrqfdDetach { gsi, source })?;
            if let Some(r) = inner.routes.get_mut(id) {
                r.attached = false;
            }
        }
        if let Some(r) = inner.routes.get_mut(id) {
            r.parked = true;
        }
        self.attachment_changed(inner, id);
        Ok(())
    }

    /// A route's irqfd left or rejoined its GSI: its view changes.
    fn attachment_changed(&self, inner: &mut Inner, id: RouteId) {
        inner.mark_stale(id);
        inner.republish = true;
        if inner.depth == 0 {
            self.publish(inner);
        }
    }

    /// Put a parked irqfd back on its route's GSI: a signal that waited in the eventfd is then
    /// injected (KVM reads a pending count when it binds an irqfd). A route still waiting for
    /// its first commit gets its irqfd attached by that commit. If the backend refuses the
    /// attach, the route falls back to userspace (as after a commit whose attach failed) and
    /// [`Error::IrqfdAttach`] says so.
    pub fn unpark_irqfd(&self, id: RouteId) -> Result<()> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let record = inner.routes.get_mut(id).ok_or(Error::UnknownRoute(id))?;
        if !record.parked {
            return Ok(());
        }
        record.parked = false;
        let committed = record.committed.is_some() && !record.touched;
        if let (true, Some(gsi), Some(fd)) = (committed, record.gsi, record.irqfd.clone()) {
            inner.stats.irqfd_attaches += 1;
            match inner.backend.attach_irqfd(&fd, gsi) {
                Ok(()) => {
                    if let Some(r) = inner.routes.get_mut(id) {
                        r.attached = true;
                    }
                    self.attachment_changed(inner, id);
                }
                Err(source) => {
                    // As when a commit cannot attach an irqfd: the route falls back to
                    // userspace and its GSI is freed (nothing is bound to it).
                    inner.stats.failed_irqfd_attaches += 1;
                    if let Some(r) = inner.routes.get_mut(id) {
                        r.gsi = None;
                        r.committed = None;
                        r.irqfd = None;
                        r.parked = false;
                        r.state =
                            RouteState::Userspace(UserspaceReason::IrqfdAttach(source.errno()));
                    }
                    inner.release_gsi(gsi);
                    self.attachment_changed(inner, id);
                    return Err(Error::IrqfdAttach { gsi, source });
                }
            }
        }
        Ok(())
    }

    /// Whether route `id`'s irqfd is parked.
    pub fn is_parked(&self, id: RouteId) -> bool {
        self.lock().routes.get_mut(id).is_some_and(|r| r.parked)
    }

    /// The routes as of the last publication, lock-free.
    pub fn snapshot(&self) -> Arc<RouteSnapshot> {
        self.snapshot.load_full()
    }

    /// One route's view as of the last publication, lock-free. `None` means
    /// the route has no KVM route to rely on (it is gone, or was added inside
    /// a batch still running and is not published yet).
    pub fn route(&self, id: RouteId) -> Option<RouteView> {
        self.snapshot.load().get(id)
    }

    /// One route's state, lock-free: `Staged` for a route added inside a
    /// batch still running, `None` for a removed route.
    pub fn route_state(&self, id: RouteId) -> Option<RouteState> {
        self.snapshot.load().state(id)
    }

    /// Counters of the backend operations issued so far.
    pub fn stats(&self) -> RouterStats {
        self.lock().stats
    }

    /// Bind a level-triggered irqfd for an INTx line (see [`Router::attach_intx`]).
    pub(crate) fn attach_line_irqfd(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<()> {
        let mut inner = self.lock();
        let msi = inner.backend.msi_gsi_range();
        if msi.contains(&gsi) {
            return Err(Error::NotAnIrqchipGsi { gsi });
        }
        inner.stats.irqfd_attaches += 1;
        inner
            .backend
            .attach_resample_irqfd(fd, resample, gsi)
            .map_err(|source| {
                inner.stats.failed_irqfd_attaches += 1;
                Error::IrqfdAttach { gsi, source }
            })
    }

    /// Unbind an INTx line's irqfd.
    pub(crate) fn detach_line_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        let mut inner = self.lock();
        inner.stats.irqfd_detaches += 1;
        inner
            .backend
            .detach_irqfd(fd, gsi)
            .map_err(|source| Error::IrqfdDetach { gsi, source })
    }

    /// How many MSI routes the backend allows.
    pub fn route_limit(&self) -> u32 {
        self.lock().limit
    }

    /// How many GSIs are reserved right now (routes holding one, removals
    /// waiting for a commit, and GSIs kept after a failed irqfd detach).
    pub fn gsis_in_use(&self) -> u32 {
        self.lock().gsis_in_use
    }

    /// The table the router believes is in force, sorted by GSI.
    pub fn committed_table(&self) -> Vec<RouteEntry> {
        self.lock().in_force.clone()
    }

    /// Ends one batch guard; the outermost commits. Called by [`RouteBatch`]. Without
    /// `report`, the outermost returns an empty report (no per-route list is built).
    pub(crate) fn end_batch(&self, report: bool) -> Result<Option<BatchReport>> {
        let mut inner = self.lock();
        inner.depth = inner.depth.saturating_sub(1);
        if inner.depth > 0 {
            // Readers see the batch's updates and removals as staged now; its additions read
            // as staged already, and a publication now shows them (as staged) too: the routes
            // touched so far are marked for it (an addition marks nothing itself).
            if inner.republish {
                inner.mark_touched_stale();
                self.publish(&mut inner);
            }
            return Ok(None);
        }
        // Settling each touched route records its outcome (a removed route's handle, which may
        // linger in `touched`, is skipped).
        inner.report = report.then(|| Vec::with_capacity(inner.touched.len()));
        let commits_before = inner.stats.commits;
        let result = inner.flush();
        let routes = inner.report.take().unwrap_or_default();
        self.publish(&mut inner);
        result?;
        Ok(Some(BatchReport {
            committed: inner.stats.commits != commits_before,
            routes,
        }))
    }

    /// Publishes the routes as they stand: rebuilds only the snapshot chunks
    /// whose routes changed since the last publication and shares the others.
    fn publish(&self, inner: &mut Inner) {
        inner.republish = false;
        inner.refresh_published();
        self.snapshot.store(Arc::new(inner.published.clone()));
    }
}

impl Inner {
    /// Marks every route touched since the last commit for the next publication.
    fn mark_touched_stale(&mut self) {
        for i in 0..self.touched.len() {
            if let Some(&id) = self.touched.get(i) {
                self.mark_stale(id);
            }
        }
    }

    /// Notes that `id`'s view changed (or it appeared or went), for the next publication.
    fn mark_stale(&mut self, id: RouteId) {
        let slot = id.slot();
        let c = slot / CHUNK_ROUTES;
        if self.stale_slots.len() <= c {
            self.stale_slots.resize(c + 1, 0);
        }
        if let Some(word) = self.stale_slots.get_mut(c) {
            if *word == 0 {
                self.stale_chunks.push(c);
            }
            *word |= 1 << (slot % CHUNK_ROUTES);
        }
    }

    /// Brings `published` up to date: the views of the stale slots are rebuilt from `routes`,
    /// in copies of their chunks (copy on write: the chunks readers hold stay as they were);
    /// the other chunks stay shared. A chunk published for the first time, or whose every slot
    /// is stale, is built whole from the store's chunk instead (no copy to overwrite).
    fn refresh_published(&mut self) {
        let routes = &self.routes;
        let whole = |c: usize| -> Chunk {
            let mut chunk = Arc::new([SnapSlot::default(); CHUNK_ROUTES]);
            if let Some(views) = Arc::get_mut(&mut chunk) {
                for (view, slot) in views.iter_mut().zip(routes.chunk(c).unwrap_or_default()) {
                    *view = slot.snap();
                }
            }
            chunk
        };
        for c in self.stale_chunks.drain(..) {
            let Some(word) = self.stale_slots.get_mut(c) else {
                continue;
            };
            let mut bits = std::mem::take(word);
            if c >= self.published.chunk_count() {
                self.published.grow_to(c, whole);
                continue;
            }
            if bits == u64::MAX {
                self.published.replace_chunk(c, whole(c));
                continue;
            }
            let Some(views) = self.published.chunk_mut(c) else {
                continue;
            };
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(view) = views.get_mut(bit) {
                    *view = routes
                        .slot(c * CHUNK_ROUTES + bit)
                        .map_or(SnapSlot::default(), Slot::snap);
                }
            }
        }
        self.published.len = self.routes.len;
    }

    /// Drops `gsi` from the table in force (sorted by GSI).
    fn forget_in_force(&mut self, gsi: u32) {
        if let Ok(at) = self.in_force.binary_search_by_key(&gsi, |e| e.gsi) {
            self.in_force.remove(at);
        }
    }

    fn release_gsi(&mut self, gsi: u32) {
        if self.gsis.free_id(gsi).is_ok() {
            self.gsis_in_use = self.gsis_in_use.saturating_sub(1);
        }
        self.forget_in_force(gsi);
    }
}

#[path = "commit.rs"]
mod commit;

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
