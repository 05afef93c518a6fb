// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`TransitionLog`]: every migration state change a live migration asked of its devices, in
//! the order it asked them.

use std::time::{Duration, Instant};

use migration_state::{State, WalkEvent};

/// One request made of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    /// The VMM's id of the device.
    pub device: u32,
    /// The arc (or reset) and whether the device took it.
    pub event: WalkEvent,
    /// When the request returned, from the start of the log.
    pub at: Duration,
}

impl LoggedChange {
    /// The state the device entered, if this was an arc it took (a reset enters `RUNNING`).
    pub fn entered(&self) -> Option<State> {
        match self.event {
            WalkEvent::Arc {
                to,
                succeeded: true,
                ..
            } => Some(to),
            WalkEvent::Reset { succeeded: true } => Some(State::Running),
            _ => None,
        }
    }
}

/// The state changes of a live migration, in order. Times are wall-clock from the log's start,
/// for reports; the order is what tests check.
#[derive(Clone, Debug)]
pub struct TransitionLog {
    started: Instant,
    entries: Vec<LoggedChange>,
}

impl Default for TransitionLog {
    fn default() -> Self {
        TransitionLog {
            started: Instant::now(),
            entries: Vec::new(),
        }
    }
}

impl TransitionLog {
    /// Record `event` of `device` now.
    pub(crate) fn record(&mut self, device: u32, event: WalkEvent) {
        self.entries.push(LoggedChange {
            device,
            event,
            at: self.started.elapsed(),
        });
    }

    /// Every request, in order.
    pub fn entries(&self) -> &[LoggedChange] {
        &self.entries
    }

    /// The states `device` entered, in order.
    pub fn states_of(&self, device: u32) -> Vec<State> {
        self.entries
            .iter()
            .filter(|c| c.device == device)
            .filter_map(LoggedChange::entered)
            .collect()
    }

    /// Position in [`TransitionLog::entries`] of the first change that entered one of
    /// `states`.
    pub fn first_entering(&self, states: &[State]) -> Option<usize> {
        self.entries
            .iter()
            .position(|c| c.entered().is_some_and(|s| states.contains(&s)))
    }

    /// Position of the last change that entered one of `states`.
    pub fn last_entering(&self, states: &[State]) -> Option<usize> {
        self.entries
            .iter()
            .rposition(|c| c.entered().is_some_and(|s| states.contains(&s)))
    }

    /// Position of the first arc from `from` to `to` the device took.
    pub fn first_arc(&self, from: State, to: State) -> Option<usize> {
        self.entries.iter().position(|c| {
            c.event
                == WalkEvent::Arc {
                    from,
                    to,
                    succeeded: true,
                }
        })
    }

    /// The time between entries `a` and `b` (`b` after `a`).
    pub fn between(&self, a: usize, b: usize) -> Option<Duration> {
        let (a, b) = (self.entries.get(a)?, self.entries.get(b)?);
        b.at.checked_sub(a.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arc(from: State, to: State, succeeded: bool) -> WalkEvent {
        WalkEvent::Arc {
            from,
            to,
            succeeded,
        }
    }

    #[test]
    fn entered_states_and_positions() {
        let mut log = TransitionLog::default();
        log.record(1, arc(State::Running, State::RunningP2p, true));
        log.record(2, arc(State::Running, State::RunningP2p, false));
        log.record(2, WalkEvent::Reset { succeeded: true });
        log.record(1, arc(State::RunningP2p, State::Stop, true));
        assert_eq!(log.states_of(1), [State::RunningP2p, State::Stop]);
        assert_eq!(log.states_of(2), [State::Running]);
        assert_eq!(log.first_entering(&[State::RunningP2p]), Some(0));
        assert_eq!(log.last_entering(&[State::Running]), Some(2));
        assert_eq!(log.first_entering(&[State::StopCopy]), None);
        assert_eq!(log.first_arc(State::RunningP2p, State::Stop), Some(3));
        assert_eq!(log.first_arc(State::Running, State::RunningP2p), Some(0));
        assert!(log.between(0, 3).is_some());
        assert!(log.between(0, 9).is_none());
    }
}
