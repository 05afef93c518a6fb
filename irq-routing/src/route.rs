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
/// nothing, never another vector's route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId(pub(crate) u64);

impl RouteId {
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

/// How many consecutive handles one chunk of a [`RouteSnapshot`] covers.
pub(crate) const CHUNK_ROUTES: u64 = 64;

/// The views of the handles `c * CHUNK_ROUTES ..` of one chunk `c`, `None` for a handle with
/// no route; always `CHUNK_ROUTES` long.
pub(crate) type Chunk = std::sync::Arc<[Option<RouteView>]>;

/// A consistent, immutable view of every route, published after each
/// operation that was not deferred and after each batch guard ends.
///
/// Readers get it lock-free from [`Router::snapshot`](crate::Router::snapshot)
/// and never wait on a commit. Lookups index by handle (no search); the views
/// are held in shared chunks of consecutive handles, so publishing a change
/// copies only the chunks it touched.
#[derive(Clone, Debug, Default)]
pub struct RouteSnapshot {
    /// The chunk index of `chunks[0]`.
    pub(crate) first_chunk: u64,
    /// Chunk `first_chunk + i` at `i`; `None` for a chunk without any route.
    pub(crate) chunks: Vec<Option<Chunk>>,
    /// Routes held, whatever their state.
    pub(crate) len: usize,
    /// The first handle issued after this snapshot was published.
    pub(crate) next_id: u64,
}

impl PartialEq for RouteSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.next_id == other.next_id && self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for RouteSnapshot {}

impl RouteSnapshot {
    /// The view of one route, or `None` if the route is unknown to this
    /// snapshot (removed, or added inside a batch after the snapshot was
    /// published): either way there is no KVM route for it.
    pub fn get(&self, id: RouteId) -> Option<RouteView> {
        let at = usize::try_from((id.0 / CHUNK_ROUTES).checked_sub(self.first_chunk)?).ok()?;
        let chunk = self.chunks.get(at)?.as_ref()?;
        chunk.get((id.0 % CHUNK_ROUTES) as usize).copied().flatten()
    }

    /// The state of one route. A handle issued after the snapshot was
    /// published (a route added inside a batch still running) reads as
    /// [`RouteState::Staged`]; `None` means the route is gone.
    pub fn state(&self, id: RouteId) -> Option<RouteState> {
        match self.get(id) {
            Some(view) => Some(view.state),
            None if id.0 >= self.next_id => Some(RouteState::Staged),
            None => None,
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

    /// Every route with its view, in handle order.
    pub fn iter(&self) -> impl Iterator<Item = (RouteId, RouteView)> + '_ {
        (self.first_chunk..)
            .zip(self.chunks.iter())
            .filter_map(|(c, chunk)| chunk.as_ref().map(|chunk| (c, chunk)))
            .flat_map(|(c, chunk)| {
                (0..CHUNK_ROUTES)
                    .zip(chunk.iter())
                    .filter_map(move |(i, v)| {
                        v.map(|v| (RouteId(c.saturating_mul(CHUNK_ROUTES) + i), v))
                    })
            })
    }

    /// Replaces chunk `c` (`None`: the chunk holds no route any more), keeping
    /// no empty chunk at either end.
    pub(crate) fn set_chunk(&mut self, c: u64, chunk: Option<Chunk>) {
        if self.chunks.is_empty() {
            self.first_chunk = c;
        }
        if c < self.first_chunk {
            if chunk.is_none() {
                return;
            }
            let gap = usize::try_from(self.first_chunk - c).unwrap_or(usize::MAX);
            self.chunks.splice(0..0, std::iter::repeat_n(None, gap));
            self.first_chunk = c;
        }
        let at = usize::try_from(c - self.first_chunk).unwrap_or(usize::MAX);
        if at >= self.chunks.len() {
            if chunk.is_none() {
                return;
            }
            self.chunks.resize(at + 1, None);
        }
        if let Some(slot) = self.chunks.get_mut(at) {
            *slot = chunk;
        }
        while self.chunks.last().is_some_and(Option::is_none) {
            self.chunks.pop();
        }
        let leading = self.chunks.iter().take_while(|c| c.is_none()).count();
        if leading > 0 {
            self.chunks.drain(..leading);
            self.first_chunk += leading as u64;
        }
    }
}
