// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Route values: MSI messages, table entries, route handles and their states,
//! and the lock-free snapshot hot paths read.

/// An MSI message as the guest programmed it into an MSI or MSI-X vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// The 64-bit message address.
    pub address: u64,
    /// The message data.
    pub data: u32,
    /// The requester ID to pass to KVM (`KVM_MSI_VALID_DEVID`); needed on
    /// platforms whose interrupt controller translates by device (arm64 ITS).
    pub devid: Option<u32>,
}

impl MsiMessage {
    /// A message without a device ID.
    pub const fn new(address: u64, data: u32) -> Self {
        Self {
            address,
            data,
            devid: None,
        }
    }

    /// The same message tagged with a device ID.
    pub const fn with_devid(self, devid: u32) -> Self {
        Self {
            devid: Some(devid),
            ..self
        }
    }
}

/// One MSI route of the table the router hands to its backend.
///
/// The backend adds the routes it owns (the irqchip routes for KVM) itself;
/// the router only ever passes MSI routes, sorted by GSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// The GSI the route is installed at.
    pub gsi: u32,
    /// The message KVM injects when the GSI is raised.
    pub msi: MsiMessage,
}

/// A handle to one route, returned when the route is added.
///
/// Handles are never reused within a router, so a stale handle can only name
/// nothing, never another vector's route. (Inside, a handle names a slot of the
/// router's route store and the generation of that slot: a slot freed by a removal
/// serves a later route under the next generation, and a slot whose generations
/// run out is never used again.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId(pub(crate) u64);

impl RouteId {
    /// The handle of generation `generation` of slot `slot`.
    #[inline]
    pub(crate) const fn new(slot: u32, generation: u32) -> Self {
        Self(((generation as u64) << 32) | slot as u64)
    }

    /// The slot of the route store this handle names.
    #[inline]
    pub(crate) const fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// The generation of the slot this handle was issued for.
    #[inline]
    pub(crate) const fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The handle's raw value (for logs).
    pub const fn raw(self) -> u64 {
        self.0
    }
}

/// Why a route delivers through userspace instead of through a KVM route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserspaceReason {
    /// Attaching the irqfd to the route's GSI failed with this errno; the GSI
    /// was released.
    IrqfdAttach(i32),
    /// The commit that would have installed (or changed) the route failed
    /// with this errno; the GSI was released.
    CommitFailed(i32),
}

/// Where a route stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteState {
    /// Added or changed inside a batch that has not ended yet: KVM does not
    /// deliver it yet (a changed route still delivers its previous message).
    Staged,
    /// Installed at `gsi` in the committed table, with its irqfd (if any)
    /// attached.
    Routed {
        /// The route's GSI.
        gsi: u32,
    },
    /// The route has no KVM route: its owner must deliver the vector through
    /// userspace. Holds no GSI. Remove it, then add it again to retry.
    Userspace(UserspaceReason),
}

/// What the snapshot knows about one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteView {
    /// The route's state as of the snapshot.
    pub state: RouteState,
    /// The message in force: the committed one for `Routed`, the requested
    /// one otherwise.
    pub msi: MsiMessage,
    /// Whether an irqfd is attached to the route's GSI.
    pub irqfd_attached: bool,
    /// The message the committed table holds at the route's GSI: what KVM injects when the
    /// route's irqfd is signalled right now. `None` until the route's first commit (a route
    /// added inside a running batch) and once the route lost its GSI. For an update staged
    /// inside a running batch this is the previous message, while `msi` is already the new
    /// one: an owner that must never deliver a stale message compares the two.
    pub committed_msi: Option<MsiMessage>,
}

/// How many consecutive slots one chunk of a [`RouteSnapshot`] covers.
pub(crate) const CHUNK_ROUTES: usize = 64;

/// One slot of a snapshot: the slot's generation at publication and, if it held a
/// route then, the route's view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapSlot {
    /// The generation of the route the slot held, or of the next one it will hold.
    pub(crate) generation: u32,
    pub(crate) view: Option<RouteView>,
}

/// The slots `c * CHUNK_ROUTES ..` of one chunk `c`.
pub(crate) type Chunk = std::sync::Arc<[SnapSlot; CHUNK_ROUTES]>;

/// A consistent, immutable view of every route, published after each
/// operation that was not deferred, when the outermost batch guard ends, and
/// when a nested guard ends after an update or a removal (routes added in a
/// running batch appear with its commit; until then their handles read as
/// [`RouteState::Staged`]).
///
/// Readers get it lock-free from [`Router::snapshot`](crate::Router::snapshot)
/// and never wait on a commit. Lookups index by handle (no search); the views
/// are held in shared chunks of consecutive slots, so publishing a change
/// copies only the chunks it touched.
#[derive(Clone, Debug, Default)]
pub struct RouteSnapshot {
    /// Chunk `c` at `c`; as many as the router's route store needs.
    pub(crate) chunks: Vec<Chunk>,
    /// Routes held, whatever their state.
    pub(crate) len: usize,
}

impl PartialEq for RouteSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for RouteSnapshot {}

impl RouteSnapshot {
    /// The slot a handle names, `None` past the slots this snapshot knows.
    #[inline]
    fn slot(&self, id: RouteId) -> Option<&SnapSlot> {
        let slot = id.slot();
        self.chunks
            .get(slot / CHUNK_ROUTES)?
            .get(slot % CHUNK_ROUTES)
    }

    /// The view of one route, or `None` if the route is unknown to this
    /// snapshot (removed, or added inside a batch after the snapshot was
    /// published): either way there is no KVM route for it.
    #[inline]
    pub fn get(&self, id: RouteId) -> Option<RouteView> {
        self.slot(id)
            .filter(|s| s.generation == id.generation())
            .and_then(|s| s.view)
    }

    /// The state of one route. A handle issued after the snapshot was
    /// published (a route added inside a batch still running) reads as
    /// [`RouteState::Staged`]; `None` means the route is gone.
    #[inline]
    pub fn state(&self, id: RouteId) -> Option<RouteState> {
        match self.slot(id) {
            // A slot created after the publication.
            None => Some(RouteState::Staged),
            // The slot was free at publication (the handle came later), or was reused since.
            Some(s) if s.generation == id.generation() => {
                Some(s.view.map_or(RouteState::Staged, |v| v.state))
            }
            Some(s) if s.generation < id.generation() => Some(RouteState::Staged),
            // The slot has moved on to a later route: this one is gone.
            Some(_) => None,
        }
    }

    /// What [`RouteSnapshot::state`] and [`RouteSnapshot::get`] say of one route, with one
    /// lookup: its state, and its view when the snapshot holds one (a route added inside a
    /// batch still running is `Staged` with no view). `None` means the route is gone.
    #[inline]
    pub fn lookup(&self, id: RouteId) -> Option<(RouteState, Option<RouteView>)> {
        match self.slot(id) {
            None => Some((RouteState::Staged, None)),
            Some(s) if s.generation == id.generation() => Some(match s.view {
                Some(v) => (v.state, Some(v)),
                None => (RouteState::Staged, None),
            }),
            Some(s) if s.generation < id.generation() => Some((RouteState::Staged, None)),
            Some(_) => None,
        }
    }

    /// How many routes the snapshot holds, whatever their state.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the snapshot holds no route.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every route with its view, in slot order (handle order for a router that never
    /// removed a route).
    pub fn iter(&self) -> impl Iterator<Item = (RouteId, RouteView)> + '_ {
        (0u32..)
            .step_by(CHUNK_ROUTES)
            .zip(self.chunks.iter())
            .flat_map(|(first, chunk)| {
                (first..)
                    .zip(chunk.iter())
                    .filter_map(|(slot, s)| s.view.map(|v| (RouteId::new(slot, s.generation), v)))
            })
    }

    /// How many chunks the snapshot holds.
    pub(crate) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Adds chunks up to chunk `c`, chunk `k` as `fill(k)` gives it.
    pub(crate) fn grow_to(&mut self, c: usize, mut fill: impl FnMut(usize) -> Chunk) {
        while self.chunks.len() <= c {
            let k = self.chunks.len();
            self.chunks.push(fill(k));
        }
    }

    /// Puts `chunk` in place of chunk `c` (readers holding the old one keep it).
    pub(crate) fn replace_chunk(&mut self, c: usize, chunk: Chunk) {
        if let Some(old) = self.chunks.get_mut(c) {
            *old = chunk;
        }
    }

    /// The views of chunk `c`, to change in place: the chunk is copied first if a reader (an
    /// earlier snapshot) shares it. `None` past the chunks held.
    pub(crate) fn chunk_mut(&mut self, c: usize) -> Option<&mut [SnapSlot; CHUNK_ROUTES]> {
        self.chunks.get_mut(c).map(std::sync::Arc::make_mut)
    }
}
