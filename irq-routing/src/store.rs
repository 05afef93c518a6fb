// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The router's route store: one [`Record`] per route, in slots indexed by the routes'
//! handles, held in fixed chunks of [`CHUNK_ROUTES`] slots (chunk `c` of the store backs chunk
//! `c` of the published [`RouteSnapshot`](crate::RouteSnapshot)), so the store grows without
//! ever moving a route.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::route::{MsiMessage, RouteId, RouteState, RouteView, SnapSlot, CHUNK_ROUTES};

/// One route as the router tracks it.
#[derive(Debug)]
pub(crate) struct Record {
    /// The message the owner asked for.
    pub(crate) msi: MsiMessage,
    /// The GSI the route holds; `None` once it fell back to userspace.
    pub(crate) gsi: Option<u32>,
    /// The message the committed table holds at `gsi`, if any.
    pub(crate) committed: Option<MsiMessage>,
    pub(crate) irqfd: Option<Arc<EventFd>>,
    pub(crate) attached: bool,
    /// The owner took the irqfd off the GSI ([`Router::park_irqfd`](crate::Router::park_irqfd)):
    /// a commit does not attach it, and signals wait in the eventfd.
    pub(crate) parked: bool,
    pub(crate) state: RouteState,
    /// Listed in the router's `touched` list (added or updated since the last commit).
    pub(crate) touched: bool,
}

impl Record {
    /// A route just added at `gsi`, not committed yet.
    #[inline]
    pub(crate) fn staged(msi: MsiMessage, gsi: u32, irqfd: Option<Arc<EventFd>>) -> Self {
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

    /// What the snapshot shows of this route.
    #[inline]
    pub(crate) fn view(&self) -> RouteView {
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

/// One slot of the route store: its current generation and the route it holds.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub(crate) generation: u32,
    pub(crate) record: Option<Record>,
}

impl Slot {
    /// What a snapshot shows of this slot.
    #[inline]
    pub(crate) fn snap(&self) -> SnapSlot {
        SnapSlot {
            generation: self.generation,
            view: self.record.as_ref().map(Record::view),
        }
    }
}

/// The last generation a slot serves; a slot that reaches it is retired, so no handle
/// is ever issued twice.
pub(crate) const LAST_GENERATION: u32 = u32::MAX - 1;

/// The routes, in slots indexed by their handles: a removal frees its slot for a later
/// route under the slot's next generation.
#[derive(Debug, Default)]
pub(crate) struct RouteStore {
    /// Slot `s` is `chunks[s / CHUNK_ROUTES][s % CHUNK_ROUTES]`. Every chunk is made with room
    /// for `CHUNK_ROUTES` slots and filled in order (only the last one is short), so a chunk
    /// never moves its slots.
    chunks: Vec<Vec<Slot>>,
    /// Free slots, reused last freed first.
    free: Vec<u32>,
    /// Routes held.
    pub(crate) len: usize,
}

impl RouteStore {
    #[inline]
    pub(crate) fn slot(&self, slot: usize) -> Option<&Slot> {
        self.chunks
            .get(slot / CHUNK_ROUTES)?
            .get(slot % CHUNK_ROUTES)
    }

    #[inline]
    fn slot_mut(&mut self, slot: usize) -> Option<&mut Slot> {
        self.chunks
            .get_mut(slot / CHUNK_ROUTES)?
            .get_mut(slot % CHUNK_ROUTES)
    }

    /// The slots of chunk `c` made so far.
    pub(crate) fn chunk(&self, c: usize) -> Option<&[Slot]> {
        self.chunks.get(c).map(|c| &c[..])
    }

    #[inline]
    pub(crate) fn get(&self, id: RouteId) -> Option<&Record> {
        self.slot(id.slot())
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.record.as_ref())
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: RouteId) -> Option<&mut Record> {
        self.slot_mut(id.slot())
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.record.as_mut())
    }

    /// Stores `record` in a free slot (or a fresh one) and returns its handle.
    #[inline]
    pub(crate) fn insert(&mut self, record: Record) -> RouteId {
        self.len += 1;
        while let Some(slot) = self.free.pop() {
            if let Some(s) = self.slot_mut(slot as usize) {
                s.record = Some(record);
                return RouteId::new(slot, s.generation);
            }
        }
        let full = self.chunks.last().is_none_or(|c| c.len() >= CHUNK_ROUTES);
        if full {
            self.chunks.push(Vec::with_capacity(CHUNK_ROUTES));
        }
        let last = self.chunks.len().saturating_sub(1);
        let mut slot = last * CHUNK_ROUTES;
        if let Some(chunk) = self.chunks.last_mut() {
            slot += chunk.len();
            chunk.push(Slot {
                generation: 0,
                record: Some(record),
            });
        }
        RouteId::new(u32::try_from(slot).unwrap_or(u32::MAX), 0)
    }

    /// Takes the route out; its slot moves on to the next generation.
    pub(crate) fn remove(&mut self, id: RouteId) -> Option<Record> {
        let slot = self
            .slot_mut(id.slot())
            .filter(|s| s.generation == id.generation())?;
        let record = slot.record.take()?;
        slot.generation += 1;
        let reusable = slot.generation <= LAST_GENERATION;
        self.len -= 1;
        if reusable {
            self.free.push(id.slot() as u32);
        }
        Some(record)
    }

    /// Room for `more` routes in the list of chunks (the chunks themselves never grow past
    /// the room they are made with).
    pub(crate) fn reserve(&mut self, more: usize) {
        self.chunks
            .reserve(more.saturating_sub(self.free.len()).div_ceil(CHUNK_ROUTES));
    }

    /// The chunks of slots, in slot order.
    pub(crate) fn chunks(&self) -> impl Iterator<Item = &[Slot]> {
        self.chunks.iter().map(|c| &c[..])
    }

    /// The slot of `id` for a test to change (its generation, say).
    #[cfg(test)]
    pub(crate) fn slot_of(&mut self, id: RouteId) -> Option<&mut Slot> {
        self.slot_mut(id.slot())
    }
}
