// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VFIO migration v2 state machine as pure logic.
//!
//! A device advertises which optional states it supports ([`MigrationFlags`]). Userspace may
//! request any supported state from any supported state, but the device itself only implements
//! single arcs. [`next_step`] picks the next arc the kernel would take towards the requested
//! state and [`path`] lists every arc of the walk.
//!
//! The walk follows the kernel's next-hop table: states the device does not support are skipped
//! over, requests the table marks as impossible (leaving `STOP_COPY` or `RESUMING` for a
//! pre-copy state) are refused, and reaching the `ERROR` sentinel ends the walk with
//! [`Error::BlockedArc`] instead of looping on it.

use std::fmt;

use crate::{Error, Result};

/// A VFIO migration v2 device state (`enum vfio_device_mig_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum State {
    /// The device failed a transition and must be reset. Never a valid request.
    Error = 0,
    /// Stopped: no DMA, no interrupts, internal state frozen.
    Stop = 1,
    /// Running normally.
    Running = 2,
    /// Stopped, with the final device state readable from the data fd.
    StopCopy = 3,
    /// Stopped, accepting a device state written to the data fd.
    Resuming = 4,
    /// Running but not initiating peer-to-peer DMA (needs [`MigrationFlags::p2p`]).
    RunningP2p = 5,
    /// Running, with an initial device state readable (needs [`MigrationFlags::pre_copy`]).
    PreCopy = 6,
    /// [`State::PreCopy`] without peer-to-peer DMA (needs both optional features).
    PreCopyP2p = 7,
}

impl State {
    /// All eight states, in kernel numbering order.
    pub const ALL: [State; 8] = [
        State::Error,
        State::Stop,
        State::Running,
        State::StopCopy,
        State::Resuming,
        State::RunningP2p,
        State::PreCopy,
        State::PreCopyP2p,
    ];

    /// The kernel's number for this state.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }

    /// The state with the kernel's number `raw`.
    pub fn from_raw(raw: u32) -> Result<Self> {
        State::ALL
            .get(raw as usize)
            .copied()
            .ok_or(Error::InvalidStateValue(raw))
    }

    /// Whether the device produces migration data in this state (a data fd to read).
    pub const fn is_saving(self) -> bool {
        matches!(self, State::StopCopy | State::PreCopy | State::PreCopyP2p)
    }

    /// The feature flags a device must advertise to support this state; `None` for `ERROR`,
    /// which no device supports as a target.
    const fn required(self) -> Option<MigrationFlags> {
        match self {
            State::Error => None,
            State::Stop | State::Running | State::StopCopy | State::Resuming => {
                Some(MigrationFlags::STOP_COPY)
            }
            State::RunningP2p => Some(MigrationFlags::WITH_P2P),
            State::PreCopy => Some(MigrationFlags::WITH_PRE_COPY),
            State::PreCopyP2p => Some(MigrationFlags::ALL),
        }
    }

    /// The next arc the kernel's table takes from `self` towards `to`, before skipping
    /// unsupported states. `ERROR` marks a request the table refuses.
    const fn table_hop(self, to: State) -> State {
        use State::*;
        match (self, to) {
            (Error, _) | (_, Error) => Error,
            (from, to) if from as u32 == to as u32 => to,
            (Stop, StopCopy | Resuming) => to,
            (Stop, _) => RunningP2p,
            (Running, PreCopy | PreCopyP2p) => PreCopy,
            (Running, _) => RunningP2p,
            (PreCopy, PreCopyP2p | StopCopy) => PreCopyP2p,
            (PreCopy, _) => Running,
            (PreCopyP2p, PreCopy | StopCopy) => to,
            (PreCopyP2p, _) => RunningP2p,
            (StopCopy | Resuming, PreCopy | PreCopyP2p) => Error,
            (StopCopy | Resuming, _) => Stop,
            (RunningP2p, Running | PreCopy) => Running,
            (RunningP2p, PreCopyP2p) => PreCopyP2p,
            (RunningP2p, _) => Stop,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            State::Error => "ERROR",
            State::Stop => "STOP",
            State::Running => "RUNNING",
            State::StopCopy => "STOP_COPY",
            State::Resuming => "RESUMING",
            State::RunningP2p => "RUNNING_P2P",
            State::PreCopy => "PRE_COPY",
            State::PreCopyP2p => "PRE_COPY_P2P",
        };
        f.write_str(name)
    }
}

/// The migration features a device advertises (`VFIO_DEVICE_FEATURE_MIGRATION` flags).
///
/// `STOP_COPY` is mandatory, so a value of this type always has it; `P2P` and `PRE_COPY` are
/// optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MigrationFlags {
    p2p: bool,
    pre_copy: bool,
}

impl MigrationFlags {
    /// The kernel's `VFIO_MIGRATION_STOP_COPY` bit.
    pub const STOP_COPY_BIT: u64 = 1;
    /// The kernel's `VFIO_MIGRATION_P2P` bit.
    pub const P2P_BIT: u64 = 2;
    /// The kernel's `VFIO_MIGRATION_PRE_COPY` bit.
    pub const PRE_COPY_BIT: u64 = 4;

    /// Only the mandatory `STOP_COPY` feature.
    pub const STOP_COPY: Self = Self {
        p2p: false,
        pre_copy: false,
    };
    /// `STOP_COPY` and `P2P`.
    pub const WITH_P2P: Self = Self {
        p2p: true,
        pre_copy: false,
    };
    /// `STOP_COPY` and `PRE_COPY`.
    pub const WITH_PRE_COPY: Self = Self {
        p2p: false,
        pre_copy: true,
    };
    /// `STOP_COPY`, `P2P` and `PRE_COPY`.
    pub const ALL: Self = Self {
        p2p: true,
        pre_copy: true,
    };
    /// The four valid flag sets.
    pub const EVERY_SET: [Self; 4] = [
        Self::STOP_COPY,
        Self::WITH_P2P,
        Self::WITH_PRE_COPY,
        Self::ALL,
    ];

    /// Parses the kernel's flag word. Bits this crate does not know are ignored; a word without
    /// `STOP_COPY` is refused, since such a device cannot migrate.
    pub fn from_bits(bits: u64) -> Result<Self> {
        if bits & Self::STOP_COPY_BIT == 0 {
            return Err(Error::MissingStopCopy { bits });
        }
        Ok(Self {
            p2p: bits & Self::P2P_BIT != 0,
            pre_copy: bits & Self::PRE_COPY_BIT != 0,
        })
    }

    /// The kernel's flag word.
    pub const fn bits(self) -> u64 {
        let mut bits = Self::STOP_COPY_BIT;
        if self.p2p {
            bits |= Self::P2P_BIT;
        }
        if self.pre_copy {
            bits |= Self::PRE_COPY_BIT;
        }
        bits
    }

    /// Whether the device supports the `RUNNING_P2P` (and with pre-copy, `PRE_COPY_P2P`) state.
    pub const fn p2p(self) -> bool {
        self.p2p
    }

    /// Whether the device supports the `PRE_COPY` states.
    pub const fn pre_copy(self) -> bool {
        self.pre_copy
    }

    /// Whether a device with these flags supports `state` (never true for `ERROR`).
    pub const fn supports(self, state: State) -> bool {
        match state.required() {
            None => false,
            Some(req) => (!req.p2p || self.p2p) && (!req.pre_copy || self.pre_copy),
        }
    }
}

impl fmt::Display for MigrationFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("STOP_COPY")?;
        if self.p2p {
            f.write_str("|P2P")?;
        }
        if self.pre_copy {
            f.write_str("|PRE_COPY")?;
        }
        Ok(())
    }
}

/// The single arc a device with `flags` takes first when in `current` and asked for
/// `requested`. Returns `requested` itself when the two are equal or adjacent.
///
/// Fails with [`Error::DeviceInError`] when `current` is `ERROR`, with
/// [`Error::UnsupportedState`] when either state is not supported by `flags` (including a
/// request for `ERROR`), and with [`Error::BlockedArc`] when the kernel refuses the request.
pub fn next_step(flags: MigrationFlags, current: State, requested: State) -> Result<State> {
    if current == State::Error {
        return Err(Error::DeviceInError);
    }
    for state in [current, requested] {
        if !flags.supports(state) {
            return Err(Error::UnsupportedState { state, flags });
        }
    }
    let mut next = current.table_hop(requested);
    // Skip states the device lacks. Each table hop moves strictly closer to `requested` or to
    // the ERROR sentinel, so the walk is bounded by the number of states; the bound below is a
    // belt-and-braces guarantee that this never loops.
    for _ in 0..State::ALL.len() {
        if next == State::Error {
            return Err(Error::BlockedArc {
                from: current,
                to: requested,
            });
        }
        if flags.supports(next) {
            return Ok(next);
        }
        next = next.table_hop(requested);
    }
    Err(Error::BlockedArc {
        from: current,
        to: requested,
    })
}

/// Every arc, in order, that takes a device with `flags` from `from` to `to`. The returned
/// states exclude `from` and end with `to`; the vector is empty when `from == to`.
///
/// Fails like [`next_step`]; a blocked request is refused as a whole, before any arc is taken.
pub fn path(flags: MigrationFlags, from: State, to: State) -> Result<Vec<State>> {
    let mut steps = Vec::new();
    let mut current = from;
    // A simple path visits each state at most once.
    while current != to {
        if steps.len() >= State::ALL.len() {
            return Err(Error::BlockedArc { from, to });
        }
        current = next_step(flags, current, to)?;
        steps.push(current);
    }
    // `from == to` still validates both states.
    if steps.is_empty() {
        next_step(flags, from, to)?;
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_numbers_round_trip() {
        for (i, s) in State::ALL.iter().enumerate() {
            assert_eq!(s.to_raw(), i as u32);
            assert_eq!(State::from_raw(i as u32).unwrap(), *s);
        }
        assert!(matches!(
            State::from_raw(8),
            Err(Error::InvalidStateValue(8))
        ));
    }

    #[test]
    fn flags_require_stop_copy() {
        assert!(matches!(
            MigrationFlags::from_bits(6),
            Err(Error::MissingStopCopy { bits: 6 })
        ));
        assert_eq!(MigrationFlags::from_bits(7).unwrap(), MigrationFlags::ALL);
        // Unknown bits are ignored.
        assert_eq!(
            MigrationFlags::from_bits(1 | 8).unwrap(),
            MigrationFlags::STOP_COPY
        );
        for f in MigrationFlags::EVERY_SET {
            assert_eq!(MigrationFlags::from_bits(f.bits()).unwrap(), f);
        }
    }

    #[test]
    fn same_state_is_empty_path() {
        assert!(path(MigrationFlags::STOP_COPY, State::Stop, State::Stop)
            .unwrap()
            .is_empty());
        assert!(matches!(
            path(MigrationFlags::STOP_COPY, State::PreCopy, State::PreCopy),
            Err(Error::UnsupportedState {
                state: State::PreCopy,
                ..
            })
        ));
    }

    #[test]
    fn stop_copy_to_pre_copy_is_blocked_not_looping() {
        // The kernel's skip loop spins on ERROR here; we refuse.
        assert!(matches!(
            next_step(MigrationFlags::ALL, State::StopCopy, State::PreCopy),
            Err(Error::BlockedArc {
                from: State::StopCopy,
                to: State::PreCopy
            })
        ));
    }
}
