// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The router's commit: the table once (if it changed), then the pending removals' irqfd
//! detaches, then the staged routes' irqfd attaches and their final states; and, when the
//! backend refuses the table, undoing what the batch staged.

use vmm_sys_util::errno;
use vmm_sys_util::eventfd::EventFd;

use super::Inner;
use crate::error::{Error, Result};
use crate::route::{RouteEntry, RouteId, RouteState, UserspaceReason};
use crate::store::Record;

/// The outcomes of [`Inner::attach_staged`]'s attaches, taken in order by the routes that
/// waited for one.
struct Attaches {
    /// How many routes took their outcome so far.
    rank: usize,
    /// The refused attaches, by rank.
    failed: std::iter::Peekable<std::vec::IntoIter<(usize, errno::Error)>>,
}

impl Attaches {
    /// The next attach's outcome: `None` if it went through, the backend's error if not.
    fn next(&mut self) -> Option<errno::Error> {
        let rank = self.rank;
        self.rank += 1;
        self.failed.next_if(|(r, _)| *r == rank).map(|(_, e)| e)
    }
}

impl Inner {
    fn wanted_table(&self) -> Vec<RouteEntry> {
        let mut table = Vec::with_capacity(self.routes.len);
        for slots in self.routes.chunks() {
            for r in slots.iter().filter_map(|s| s.record.as_ref()) {
                if let Some(gsi) = r.gsi {
                    table.push(RouteEntry { gsi, msi: r.msi });
                }
            }
        }
        table.sort_unstable_by_key(|e| e.gsi);
        table
    }

    fn detach(&mut self, fd: &EventFd, gsi: u32) -> errno::Result<()> {
        self.stats.irqfd_detaches += 1;
        self.backend.detach_irqfd(fd, gsi)
    }

    /// Commit what is staged: the table once (if it changed), then pending
    /// removals' irqfd detaches, then staged irqfd attaches.
    ///
    /// Every route this settles or undoes is marked stale (its view changes); a handle
    /// lingering in `touched` after its removal was marked by the removal.
    pub(super) fn flush(&mut self) -> Result<()> {
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
        let mut touched = std::mem::take(&mut self.touched);
        let mut attaches = self.attach_staged(&touched);
        for &id in &touched {
            self.settle(id, table_in_force, &mut attaches);
        }
        // Keep the list's room for the next batch.
        touched.clear();
        self.touched = touched;
        result
    }

    /// Whether a commit that installs `record` binds its irqfd: it holds a GSI and an irqfd
    /// that is neither attached already nor parked by its owner.
    fn needs_attach(record: &Record) -> bool {
        record.gsi.is_some() && record.irqfd.is_some() && !record.attached && !record.parked
    }

    /// Binds the irqfds the routes in `touched` wait for ([`Inner::needs_attach`]), in order,
    /// in one loop that touches nothing else between two attaches: each `KVM_IRQFD` walks the
    /// VM's irqfds in the kernel, and the loop keeps the router's records out of the cache
    /// that walk uses (`cargo xtask bench-msix`'s closing commit is where it shows). Returns
    /// the outcomes for [`Inner::settle`] to take in the same order.
    fn attach_staged(&mut self, touched: &[RouteId]) -> Attaches {
        let routes = &self.routes;
        let mut todo: Vec<(&EventFd, u32)> = Vec::with_capacity(touched.len());
        for &id in touched {
            let Some(r) = routes
                .get(id)
                .filter(|r| r.touched && Inner::needs_attach(r))
            else {
                continue;
            };
            if let (Some(fd), Some(gsi)) = (&r.irqfd, r.gsi) {
                todo.push((fd, gsi));
            }
        }
        let mut failed = Vec::new();
        for (rank, &(fd, gsi)) in todo.iter().enumerate() {
            if let Err(e) = self.backend.attach_irqfd(fd, gsi) {
                failed.push((rank, e));
            }
        }
        self.stats.irqfd_attaches += todo.len() as u64;
        self.stats.failed_irqfd_attaches += failed.len() as u64;
        Attaches {
            rank: 0,
            failed: failed.into_iter().peekable(),
        }
    }

    /// After a successful commit: record the route's message as committed (`in_force`) and
    /// set its final state. Its irqfd, if it waited for one, was attached by
    /// [`Inner::attach_staged`] (`attaches` gives the outcomes in the same order); a refused
    /// attach leaves the route on userspace with its GSI freed.
    fn settle(&mut self, id: RouteId, in_force: bool, attaches: &mut Attaches) {
        self.mark_stale(id);
        let Some(record) = self.routes.get_mut(id).filter(|r| r.touched) else {
            return;
        };
        let attach = Inner::needs_attach(record).then(|| attaches.next());
        record.touched = false;
        let mut lost_gsi = None;
        if let Some(gsi) = record.gsi {
            if in_force {
                record.committed = Some(record.msi);
            }
            record.state = RouteState::Routed { gsi };
            match attach {
                Some(None) => record.attached = true,
                Some(Some(e)) => {
                    record.gsi = None;
                    record.committed = None;
                    record.irqfd = None;
                    record.parked = false;
                    record.state = RouteState::Userspace(UserspaceReason::IrqfdAttach(e.errno()));
                    lost_gsi = Some(gsi);
                }
                None => {}
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
            self.mark_stale(id);
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
