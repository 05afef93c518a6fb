// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`Router`]: a VM's MSI routes, their GSIs and irqfds, and the commit logic
//! that batches share.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use vm_allocator::IdAllocator;
use vmm_sys_util::errno;
use vmm_sys_util::eventfd::EventFd;

use crate::backend::RoutingBackend;
use crate::batch::{BatchReport, RouteBatch};
use crate::error::{Error, Result};
use crate::route::{
    MsiMessage, RouteEntry, RouteId, RouteSnapshot, RouteState, RouteView, SnapSlot,
    UserspaceReason, CHUNK_ROUTES,
};

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

/// One route as the router tracks it.
#[derive(Debug)]
struct Record {
    /// The message the owner asked for.
    msi: MsiMessage,
    /// The GSI the route holds; `None` once it fell back to userspace.
    gsi: Option<u32>,
    /// The message the committed table holds at `gsi`, if any.
    committed: Option<MsiMessage>,
    irqfd: Option<Arc<EventFd>>,
    attached: bool,
    /// The owner took the irqfd off the GSI ([`Router::park_irqfd`]): a commit does not
    /// attach it, and signals wait in the eventfd.
    parked: bool,
    state: RouteState,
    /// Listed in `Inner::touched` (added or updated since the last commit).
    touched: bool,
}

impl Record {
    /// A route just added at `gsi`, not committed yet.
    fn staged(msi: MsiMessage, gsi: u32, irqfd: Option<Arc<EventFd>>) -> Self {
        Self {
            msi,
            gsi: Some(gsi),
            committed: None,
            irqfd,
            attached: false,
            parked: false,
            state: RouteState::Staged,
            touched: true,
        }
    }
}

/// One slot of the route store: its current generation and the route it holds.
#[derive(Debug)]
struct Slot {
    generation: u32,
    record: Option<Record>,
}

/// The last generation a slot serves; a slot that reaches it is retired, so no handle
/// is ever issued twice.
const LAST_GENERATION: u32 = u32::MAX - 1;

/// The routes, in slots indexed by their handles: a removal frees its slot for a later
/// route under the slot's next generation.
#[derive(Debug, Default)]
struct RouteStore {
    slots: Vec<Slot>,
    /// Free slots, reused last freed first.
    free: Vec<u32>,
    len: usize,
}

impl RouteStore {
    #[cfg(test)]
    fn get(&self, id: RouteId) -> Option<&Record> {
        self.slots
            .get(id.slot())
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.record.as_ref())
    }

    fn get_mut(&mut self, id: RouteId) -> Option<&mut Record> {
        self.slots
            .get_mut(id.slot())
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.record.as_mut())
    }

    /// Stores `record` in a free slot (or a new one) and returns its handle.
    fn insert(&mut self, record: Record) -> RouteId {
        self.len += 1;
        while let Some(slot) = self.free.pop() {
            if let Some(s) = self.slots.get_mut(slot as usize) {
                s.record = Some(record);
                return RouteId::new(slot, s.generation);
            }
        }
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.slots.push(Slot {
            generation: 0,
            record: Some(record),
        });
        RouteId::new(slot, 0)
    }

    /// Takes the route out; its slot moves on to the next generation.
    fn remove(&mut self, id: RouteId) -> Option<Record> {
        let slot = self
            .slots
            .get_mut(id.slot())
            .filter(|s| s.generation == id.generation())?;
        let record = slot.record.take()?;
        self.len -= 1;
        slot.generation += 1;
        if slot.generation <= LAST_GENERATION {
            self.free.push(id.slot() as u32);
        }
        Some(record)
    }

    /// Room for `more` routes without growing the store.
    fn reserve(&mut self, more: usize) {
        self.slots.reserve(more.saturating_sub(self.free.len()));
    }

    fn records(&self) -> impl Iterator<Item = &Record> {
        self.slots.iter().filter_map(|s| s.record.as_ref())
    }
}

impl Record {
    /// What the snapshot shows of this route.
    fn view(&self) -> RouteView {
        RouteView {
            state: self.state,
            msi: match self.state {
                RouteState::Routed { .. } => self.committed.unwrap_or(self.msi),
                _ => self.msi,
            },
            irqfd_attached: self.attached,
            committed_msi: self.committed.filter(|_| self.gsi.is_some()),
        }
    }
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
        inner.touched.push(id);
        inner.mark_stale(id);
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
        let mut ids = Vec::with_capacity(high.unwrap_or(low));
        let mut inner = self.lock();
        inner.touched.reserve(ids.capacity());
        inner.routes.reserve(ids.capacity());
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
        for &id in &ids {
            inner.mark_stale(id);
        }
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
            // as staged already, and are published with the commit.
            if inner.republish {
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
    /// the other chunks stay shared.
    fn refresh_published(&mut self) {
        let slots = &self.routes.slots;
        for c in self.stale_chunks.drain(..) {
            let Some(word) = self.stale_slots.get_mut(c) else {
                continue;
            };
            let mut bits = std::mem::take(word);
            let Some(views) = self.published.chunk_mut(c) else {
                continue;
            };
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let slot = c * CHUNK_ROUTES + bit;
                if let Some(view) = views.get_mut(bit) {
                    *view = slots.get(slot).map_or(SnapSlot::default(), |s| SnapSlot {
                        generation: s.generation,
                        view: s.record.as_ref().map(Record::view),
                    });
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

    fn wanted_table(&self) -> Vec<RouteEntry> {
        let mut table = Vec::with_capacity(self.routes.len);
        table.extend(
            self.routes
                .records()
                .filter_map(|r| r.gsi.map(|gsi| RouteEntry { gsi, msi: r.msi })),
        );
        table.sort_unstable_by_key(|e| e.gsi);
        table
    }

    fn detach(&mut self, fd: &EventFd, gsi: u32) -> errno::Result<()> {
        self.stats.irqfd_detaches += 1;
        self.backend.detach_irqfd(fd, gsi)
    }

    /// Commit what is staged: the table once (if it changed), then pending
    /// removals' irqfd detaches, then staged irqfd attaches.
    fn flush(&mut self) -> Result<()> {
        // Every route this flush settles or undoes changes its view.
        for i in 0..self.touched.len() {
            if let Some(&id) = self.touched.get(i) {
                self.mark_stale(id);
            }
        }
        let mut result = Ok(());
        if self.dirty {
            self.dirty = false;
            let table = self.wanted_table();
            if table != self.in_force {
                self.stats.commits += 1;
                match self.backend.commit_table(&table) {
                    Ok(()) => self.in_force = table,
                    Err(source) => {
                        self.stats.failed_commits += 1;
                        let undone = self.undo_touched(source.errno());
                        result = Err(Error::Commit { undone, source });
                    }
                }
            }
        }
        let table_in_force = result.is_ok();
        // Removals complete whether or not the commit went through: a stale
        // entry in the kernel's table with no irqfd cannot be raised.
        for removal in std::mem::take(&mut self.removals) {
            let detached = match &removal.irqfd {
                Some(fd) => self.detach(fd, removal.gsi),
                None => Ok(()),
            };
            match detached {
                Ok(()) => self.release_gsi(removal.gsi),
                Err(source) => {
                    // Keep the GSI reserved: the irqfd may still raise it.
                    self.forget_in_force(removal.gsi);
                    if result.is_ok() {
                        result = Err(Error::IrqfdDetach {
                            gsi: removal.gsi,
                            source,
                        });
                    }
                }
            }
        }
        // (After a refused commit `touched` is empty: undo_touched took it.)
        for id in std::mem::take(&mut self.touched) {
            self.settle(id, table_in_force);
        }
        result
    }

    /// After a successful commit: record the route's message as committed
    /// (`in_force`), attach its irqfd if needed and set its final state.
    fn settle(&mut self, id: RouteId, in_force: bool) {
        let Some(record) = self.routes.get_mut(id).filter(|r| r.touched) else {
            return;
        };
        record.touched = false;
        let mut lost_gsi = None;
        if let Some(gsi) = record.gsi {
            if in_force {
                record.committed = Some(record.msi);
            }
            record.state = RouteState::Routed { gsi };
            if let (Some(fd), false, false) = (&record.irqfd, record.attached, record.parked) {
                self.stats.irqfd_attaches += 1;
                match self.backend.attach_irqfd(fd, gsi) {
                    Ok(()) => record.attached = true,
                    Err(e) => {
                        self.stats.failed_irqfd_attaches += 1;
                        record.gsi = None;
                        record.committed = None;
                        record.irqfd = None;
                        record.parked = false;
                        record.state =
                            RouteState::Userspace(UserspaceReason::IrqfdAttach(e.errno()));
                        lost_gsi = Some(gsi);
                    }
                }
            }
        }
        let state = record.state;
        if let Some(report) = &mut self.report {
            report.push((id, state));
        }
        if let Some(gsi) = lost_gsi {
            self.release_gsi(gsi);
        }
    }

    /// After a failed commit: every added or updated route loses its GSI and
    /// its irqfd and falls back to userspace.
    fn undo_touched(&mut self, errno: i32) -> Vec<RouteId> {
        let touched = std::mem::take(&mut self.touched);
        let mut undone = Vec::with_capacity(touched.len());
        for id in touched {
            let Some(record) = self.routes.get_mut(id).filter(|r| r.touched) else {
                continue;
            };
            record.touched = false;
            if record.committed == Some(record.msi) {
                // Updated and changed back: the committed route still holds.
                if let Some(gsi) = record.gsi {
                    record.state = RouteState::Routed { gsi };
                }
                continue;
            }
            let Some(gsi) = record.gsi.take() else {
                continue;
            };
            let irqfd = record.irqfd.take().filter(|_| record.attached);
            record.attached = false;
            record.parked = false;
            record.committed = None;
            record.state = RouteState::Userspace(UserspaceReason::CommitFailed(errno));
            undone.push(id);
            let detached = match irqfd {
                Some(fd) => self.detach(&fd, gsi),
                None => Ok(()),
            };
            if detached.is_ok() {
                self.release_gsi(gsi);
            } else {
                self.forget_in_force(gsi);
            }
        }
        undone
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
