// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`MemoryBackend`]: an in-memory routing backend for tests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::errno;
use vmm_sys_util::eventfd::EventFd;

use crate::backend::RoutingBackend;
use crate::route::RouteEntry;

/// The operations a [`MemoryBackend`] counts and can be told to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemoryOp {
    /// A table commit (`KVM_SET_GSI_ROUTING` on KVM).
    Commit,
    /// An irqfd attach (`KVM_IRQFD`).
    AttachIrqfd,
    /// An irqfd detach (`KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN`).
    DetachIrqfd,
}

#[derive(Debug, Default)]
struct MemoryState {
    table: Vec<RouteEntry>,
    attached: BTreeMap<RawFd, u32>,
    /// Resample eventfd of each level-triggered irqfd, by trigger fd.
    resample: BTreeMap<RawFd, RawFd>,
    counts: BTreeMap<MemoryOp, u64>,
    failures: BTreeMap<MemoryOp, Vec<(u64, i32)>>,
}

/// A backend that keeps the table and the irqfd bindings in memory.
///
/// It counts every operation (failed ones included), lets tests read the
/// committed table and the attached irqfds, can be told to fail the k-th
/// operation of a kind, and enforces a route limit the way KVM does (a table
/// with a GSI outside the range is refused with `EINVAL`; an eventfd already
/// attached is refused with `EBUSY`). Clones share state, so a test keeps one
/// clone and gives another to the router.
#[derive(Clone, Debug)]
pub struct MemoryBackend {
    msi_gsis: Range<u32>,
    state: Arc<Mutex<MemoryState>>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    /// A backend shaped like KVM on x86 with an in-kernel irqchip: 4096 table
    /// entries, 40 of them irqchip routes at GSIs 0-23, so MSI routes get
    /// GSIs 24..4080.
    pub fn new() -> Self {
        Self::with_msi_gsis(24..4080)
    }

    /// A backend that offers exactly the GSIs in `msi_gsis` to MSI routes
    /// (use a short range to reach the route limit quickly).
    pub fn with_msi_gsis(msi_gsis: Range<u32>) -> Self {
        Self {
            msi_gsis,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the `k`-th future operation of kind `op` (1 = the next one) fail
    /// with `errno`. Several failures may be armed at once.
    pub fn fail_nth(&self, op: MemoryOp, k: u64, errno: i32) {
        let mut state = self.lock();
        let at = state.counts.get(&op).copied().unwrap_or(0) + k;
        state.failures.entry(op).or_default().push((at, errno));
    }

    /// How many operations of kind `op` were issued, failed ones included.
    pub fn count(&self, op: MemoryOp) -> u64 {
        self.lock().counts.get(&op).copied().unwrap_or(0)
    }

    /// How many table commits were issued.
    pub fn commits(&self) -> u64 {
        self.count(MemoryOp::Commit)
    }

    /// How many irqfd attaches were issued.
    pub fn attaches(&self) -> u64 {
        self.count(MemoryOp::AttachIrqfd)
    }

    /// How many irqfd detaches were issued.
    pub fn detaches(&self) -> u64 {
        self.count(MemoryOp::DetachIrqfd)
    }

    /// The table of the last successful commit.
    pub fn table(&self) -> Vec<RouteEntry> {
        self.lock().table.clone()
    }

    /// The attached irqfds as (raw fd, GSI) pairs.
    pub fn attached_irqfds(&self) -> Vec<(RawFd, u32)> {
        self.lock()
            .attached
            .iter()
            .map(|(fd, gsi)| (*fd, *gsi))
            .collect()
    }

    /// The resample eventfd `fd` was attached with (a level-triggered irqfd), if any.
    pub fn resample_fd(&self, fd: &EventFd) -> Option<RawFd> {
        self.lock().resample.get(&fd.as_raw_fd()).copied()
    }

    /// The GSI `fd` is attached to, if any.
    pub fn attached_gsi(&self, fd: &EventFd) -> Option<u32> {
        self.lock().attached.get(&fd.as_raw_fd()).copied()
    }

    // Counts the operation and returns the armed failure, if this is it.
    fn begin(state: &mut MemoryState, op: MemoryOp) -> errno::Result<()> {
        let n = state.counts.entry(op).or_insert(0);
        *n += 1;
        let n = *n;
        if let Some(list) = state.failures.get_mut(&op) {
            if let Some(pos) = list.iter().position(|(at, _)| *at == n) {
                let (_, code) = list.swap_remove(pos);
                return Err(errno::Error::new(code));
            }
        }
        Ok(())
    }
}

impl MemoryBackend {
    /// An irqfd attach, with a resample eventfd for a level-triggered line.
    fn attach(&self, fd: &EventFd, resample: Option<&EventFd>, gsi: u32) -> errno::Result<()> {
        let mut state = self.lock();
        Self::begin(&mut state, MemoryOp::AttachIrqfd)?;
        if state.attached.contains_key(&fd.as_raw_fd()) {
            return Err(errno::Error::new(libc::EBUSY));
        }
        state.attached.insert(fd.as_raw_fd(), gsi);
        if let Some(r) = resample {
            state.resample.insert(fd.as_raw_fd(), r.as_raw_fd());
        }
        Ok(())
    }
}

impl RoutingBackend for MemoryBackend {
    fn msi_gsi_range(&self) -> Range<u32> {
        self.msi_gsis.clone()
    }

    fn commit_table(&self, routes: &[RouteEntry]) -> errno::Result<()> {
        let mut state = self.lock();
        Self::begin(&mut state, MemoryOp::Commit)?;
        if routes.iter().any(|r| !self.msi_gsis.contains(&r.gsi)) {
            return Err(errno::Error::new(libc::EINVAL));
        }
        state.table = routes.to_vec();
        Ok(())
    }

    fn attach_irqfd(&self, fd: &EventFd, gsi: u32) -> errno::Result<()> {
        self.attach(fd, None, gsi)
    }

    fn attach_resample_irqfd(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> errno::Result<()> {
        self.attach(fd, Some(resample), gsi)
    }

    fn detach_irqfd(&self, fd: &EventFd, gsi: u32) -> errno::Result<()> {
        let mut state = self.lock();
        Self::begin(&mut state, MemoryOp::DetachIrqfd)?;
        // Like KVM, detaching an fd that is not attached to `gsi` succeeds.
        if state.attached.get(&fd.as_raw_fd()) == Some(&gsi) {
            state.attached.remove(&fd.as_raw_fd());
            state.resample.remove(&fd.as_raw_fd());
        }
        Ok(())
    }
}
