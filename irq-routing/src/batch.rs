// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`RouteBatch`]: the guard that defers route commits.

use crate::error::Result;
use crate::route::{RouteId, RouteState};
use crate::router::Router;

/// What the end of the outermost batch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Whether a table commit was issued (false when nothing changed).
    pub committed: bool,
    /// Every route added or updated during the batch that still exists, with
    /// its final state: `Routed`, or `Userspace` if its irqfd failed.
    pub routes: Vec<(RouteId, RouteState)>,
}

/// What ending a batch guard did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Another guard is still alive: the changes stay staged and commit when
    /// the outermost guard ends. Read the routes' states from the snapshot.
    Deferred,
    /// This was the outermost guard: the staged changes were committed.
    Committed(BatchReport),
}

/// A guard that stages route changes; the end of the outermost guard commits
/// the routing table once and then attaches the staged irqfds.
///
/// Obtained from [`Router::batch`]. Guards nest, and one guard may span many
/// devices (a whole VM's resume): while any guard of the router is alive,
/// every device's route changes are staged. End a guard with
/// [`RouteBatch::commit`] to get the outcome, or drop it (the commit still
/// happens; its per-route outcome is then read from the snapshot).
#[derive(Debug)]
#[must_use = "dropping a RouteBatch at once ends the batch"]
pub struct RouteBatch<'a> {
    router: &'a Router,
    ended: bool,
}

impl<'a> RouteBatch<'a> {
    pub(crate) fn new(router: &'a Router) -> Self {
        Self {
            router,
            ended: false,
        }
    }

    /// The router this batch stages into.
    pub fn router(&self) -> &'a Router {
        self.router
    }

    /// End this guard. If it is the outermost, commit what is staged and
    /// report each route's outcome.
    ///
    /// # Errors
    /// [`Error::Commit`](crate::Error::Commit) if the backend refused the
    /// table: the previous table stays in force and the staged additions and
    /// updates are undone (listed in the error, GSIs freed, irqfds detached).
    /// [`Error::IrqfdDetach`](crate::Error::IrqfdDetach) if a removed route's
    /// irqfd could not be detached.
    pub fn commit(mut self) -> Result<BatchOutcome> {
        self.ended = true;
        Ok(match self.router.end_batch(true)? {
            None => BatchOutcome::Deferred,
            Some(report) => BatchOutcome::Committed(report),
        })
    }

    /// End this guard as [`RouteBatch::commit`] does, without building the per-route report
    /// (read the outcomes from the snapshot): `Ok(true)` when this was the outermost guard and
    /// what was staged is committed, `Ok(false)` when another guard is still alive.
    ///
    /// # Errors
    /// As [`RouteBatch::commit`].
    pub fn finish(mut self) -> Result<bool> {
        self.ended = true;
        self.router.end_batch(false).map(|r| r.is_some())
    }
}

impl Drop for RouteBatch<'_> {
    fn drop(&mut self) {
        if !self.ended {
            // Per-route outcomes land in the snapshot; a refused commit is
            // counted in `RouterStats::failed_commits`.
            let _ = self.router.end_batch(false);
        }
    }
}
