// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VFIO migration v2 state machine as pure logic: a transcription of the kernel's.
//!
//! A device advertises which optional states it supports ([`MigrationFlags`]). Userspace may
//! request any supported state from any supported state, but a driver only implements single
//! arcs: the kernel breaks a request into arcs with `vfio_mig_get_next_state()`, and the
//! driver's `set_state` loop takes one arc per call until the device is in the requested state.
//! [`next_step`] is that function and [`path`] is that loop, both over the kernel's own tables,
//! transcribed (in `vfio-core`'s `migration::fsm`, the workspace's one copy, in the kernel's
//! order) from Linux v6.12.117 `drivers/vfio/vfio_main.c`, `vfio_mig_get_next_state()`:
//! `vfio_from_fsm_table` and `state_flags_table`.
//!
//! # The kernel's rule
//!
//! `vfio_mig_get_next_state(cur, new)` answers `-EINVAL` when `cur` (with a `WARN_ON`) or
//! `new` is not a state the device's flags support (`state_flags_table`); `ERROR` needs all 32
//! bits of the flag word, which no in-tree driver sets. Otherwise it looks up
//! `vfio_from_fsm_table[cur][new]` and, while that state is not `ERROR` and is unsupported,
//! looks up `vfio_from_fsm_table[that][new]`. It answers that state, or `-EINVAL` if it is
//! `ERROR`. The only `ERROR` entries a supported pair reaches are `STOP_COPY` → `PRE_COPY` and
//! `STOP_COPY` → `PRE_COPY_P2P` ([`Error::BlockedArc`]).
//!
//! The drivers' loop (Linux v6.12.117 `samples/vfio-mdev/mtty.c`, `mtty_set_state()`;
//! `drivers/vfio/pci/mlx5/main.c`, `mlx5vf_pci_set_device_state()`) runs
//! `while (state != new_state)`: ask for the next state, take that arc, record it. A refusal
//! or a failed arc ends the loop with the device in the last state it reached.
//!
//! # Termination
//!
//! The kernel's skip loop stops as soon as it reaches `ERROR` (its condition tests for `ERROR`
//! first), so it never spins on that entry. It could only spin on a cycle of unsupported
//! states, and the table has none. `vfio-core`'s build checks it (constant evaluation next to
//! the transcribed tables): for every flag word whose known bits are any of the eight combinations, and for
//! the all-ones word, the skip loop ends; for the four valid flag sets, every walk either
//! reaches its target or is refused at its first step. A refused request is therefore refused
//! before any arc is taken, in the kernel as here.

use std::fmt;

use vfio_core::migration::fsm::{
    kernel_supports, vfio_mig_get_next_state, KernelHop, MAX_ARCS, VFIO_MIGRATION_P2P,
    VFIO_MIGRATION_PRE_COPY, VFIO_MIGRATION_STOP_COPY,
};
use vfio_core::MigState;

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

    /// The same state as `vfio-core` names it (the numbers are the kernel's in both).
    pub const fn to_device_state(self) -> MigState {
        match self {
            State::Error => MigState::Error,
            State::Stop => MigState::Stop,
            State::Running => MigState::Running,
            State::StopCopy => MigState::StopCopy,
            State::Resuming => MigState::Resuming,
            State::RunningP2p => MigState::RunningP2p,
            State::PreCopy => MigState::PreCopy,
            State::PreCopyP2p => MigState::PreCopyP2p,
        }
    }

    /// The same state as this crate names `vfio-core`'s.
    pub const fn from_device_state(state: MigState) -> Self {
        match state {
            MigState::Error => State::Error,
            MigState::Stop => State::Stop,
            MigState::Running => State::Running,
            MigState::StopCopy => State::StopCopy,
            MigState::Resuming => State::Resuming,
            MigState::RunningP2p => State::RunningP2p,
            MigState::PreCopy => State::PreCopy,
            MigState::PreCopyP2p => State::PreCopyP2p,
        }
    }

    const fn is_error(self) -> bool {
        matches!(self, State::Error)
    }
}

/// The two enums number the states alike.
const _: () = {
    let mut i = 0;
    while i < State::ALL.len() {
        assert!(State::ALL[i].to_device_state().to_raw() == State::ALL[i].to_raw());
        i += 1;
    }
};

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
    pub const STOP_COPY_BIT: u64 = VFIO_MIGRATION_STOP_COPY as u64;
    /// The kernel's `VFIO_MIGRATION_P2P` bit.
    pub const P2P_BIT: u64 = VFIO_MIGRATION_P2P as u64;
    /// The kernel's `VFIO_MIGRATION_PRE_COPY` bit.
    pub const PRE_COPY_BIT: u64 = VFIO_MIGRATION_PRE_COPY as u64;

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

    /// Parses the kernel's flag word. Bits this crate does not know are ignored (the kernel's
    /// tables look only at the three known bits; see [`MigrationFlags::supports`] for the one
    /// exception, which changes no answer); a word without `STOP_COPY` is refused, since such
    /// a device supports no state at all and cannot migrate.
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
        self.migration_flags() as u64
    }

    /// The flag word as the kernel keeps it (`unsigned int migration_flags` of
    /// `struct vfio_device`).
    const fn migration_flags(self) -> u32 {
        let mut bits = VFIO_MIGRATION_STOP_COPY;
        if self.p2p {
            bits |= VFIO_MIGRATION_P2P;
        }
        if self.pre_copy {
            bits |= VFIO_MIGRATION_PRE_COPY;
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

    /// Whether a device with these flags supports `state`, by the kernel's `state_flags_table`
    /// (never true for `ERROR`, which needs every bit of the kernel's 32-bit flag word; a
    /// device whose word had all 32 bits set would pass that check for `ERROR`, but the
    /// table's `ERROR` row and column then refuse every request involving it all the same).
    pub const fn supports(self, state: State) -> bool {
        kernel_supports(self.migration_flags(), state.to_device_state())
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
/// `requested`: Linux v6.12.117 `vfio_mig_get_next_state()`. Returns `requested` itself when
/// the two are equal (the table's diagonal) or adjacent.
///
/// Every refusal is the kernel's `-EINVAL`, told apart by which check refused: the one on
/// `current` ([`Error::DeviceInError`] for `ERROR`, [`Error::UnsupportedState`] otherwise),
/// the one on `requested` ([`Error::UnsupportedState`], including a request for `ERROR`), or
/// the table walk reaching `ERROR` ([`Error::BlockedArc`]).
pub fn next_step(flags: MigrationFlags, current: State, requested: State) -> Result<State> {
    let hop = vfio_mig_get_next_state(
        flags.migration_flags(),
        current.to_device_state(),
        requested.to_device_state(),
    );
    match hop {
        KernelHop::Next(next) => Ok(State::from_device_state(next)),
        KernelHop::CurrentUnsupported if current.is_error() => Err(Error::DeviceInError),
        KernelHop::CurrentUnsupported => Err(Error::UnsupportedState {
            state: current,
            flags,
        }),
        KernelHop::RequestedUnsupported => Err(Error::UnsupportedState {
            state: requested,
            flags,
        }),
        // `Spins` cannot happen: `KERNEL_RULES_TERMINATE` proves it at compile time. Were the
        // table ever edited into a cycle, refusing is the only answer that does not hang.
        KernelHop::ReachedError | KernelHop::Spins => Err(Error::BlockedArc {
            from: current,
            to: requested,
        }),
    }
}

/// Every arc, in order, that takes a device with `flags` from `from` to `to`, as the drivers'
/// `set_state` loop takes them when no arc fails. The returned states exclude `from` and end
/// with `to`; the vector is empty when `from == to`.
///
/// Fails like [`next_step`]. The kernel refuses a request only at its first step (checked at
/// compile time), so a refused request is refused as a whole, before any arc is taken.
///
/// When `from == to` the drivers' loop does not run at all: `mtty_set_state()` and
/// `mlx5vf_pci_set_device_state()` succeed without consulting the table. For a state the
/// device supports this answers the same (no arcs). A device is never in a state its flags
/// lack, except `ERROR`, which only the pds driver enters and where it refuses every request
/// with `-EIO` (Linux v6.12.117 `drivers/vfio/pci/pds/vfio_dev.c`,
/// `pds_vfio_set_device_state()`); so for `from == to` this still checks the state as
/// [`next_step`] does and refuses `ERROR` with [`Error::DeviceInError`] and an unsupported
/// state with [`Error::UnsupportedState`], rather than report a walk that never happened.
pub fn path(flags: MigrationFlags, from: State, to: State) -> Result<Vec<State>> {
    if from == to {
        next_step(flags, from, to)?;
        return Ok(Vec::new());
    }
    let mut steps = Vec::new();
    let mut current = from;
    while current != to {
        // `KERNEL_RULES_TERMINATE` proves every walk ends within `MAX_ARCS`; the bound only
        // guarantees that an edited table could not make this loop forever.
        if steps.len() >= MAX_ARCS {
            return Err(Error::BlockedArc { from, to });
        }
        current = next_step(flags, current, to)?;
        steps.push(current);
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
            assert_eq!(s.to_device_state().index(), i);
            assert_eq!(State::from_device_state(s.to_device_state()), *s);
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
    fn supported_states_follow_state_flags_table() {
        use State::*;
        let count = |f: MigrationFlags| State::ALL.iter().filter(|s| f.supports(**s)).count();
        assert_eq!(count(MigrationFlags::STOP_COPY), 4);
        assert_eq!(count(MigrationFlags::WITH_P2P), 5);
        assert_eq!(count(MigrationFlags::WITH_PRE_COPY), 5);
        assert_eq!(count(MigrationFlags::ALL), 7);
        assert!(MigrationFlags::WITH_P2P.supports(RunningP2p));
        assert!(!MigrationFlags::WITH_P2P.supports(PreCopyP2p));
        assert!(MigrationFlags::WITH_PRE_COPY.supports(PreCopy));
        assert!(!MigrationFlags::WITH_PRE_COPY.supports(PreCopyP2p));
        assert!(!MigrationFlags::ALL.supports(Error));
        // Only the all-ones word passes the ERROR check, and the table refuses it anyway.
        assert!(kernel_supports(!0, MigState::Error));
        assert!(matches!(
            vfio_mig_get_next_state(!0, MigState::Error, MigState::Stop),
            KernelHop::ReachedError
        ));
        assert!(matches!(
            vfio_mig_get_next_state(!0, MigState::Stop, MigState::Error),
            KernelHop::ReachedError
        ));
    }

    #[test]
    fn same_state_is_empty_path() {
        assert!(path(MigrationFlags::STOP_COPY, State::Stop, State::Stop)
            .unwrap()
            .is_empty());
        assert_eq!(
            next_step(MigrationFlags::STOP_COPY, State::Stop, State::Stop).unwrap(),
            State::Stop
        );
        assert!(matches!(
            path(MigrationFlags::STOP_COPY, State::PreCopy, State::PreCopy),
            Err(Error::UnsupportedState {
                state: State::PreCopy,
                ..
            })
        ));
        assert!(matches!(
            path(MigrationFlags::ALL, State::Error, State::Error),
            Err(Error::DeviceInError)
        ));
    }

    #[test]
    fn stop_copy_to_pre_copy_is_refused_at_the_error_entry() {
        // vfio_from_fsm_table[STOP_COPY][PRE_COPY] is ERROR: the kernel answers -EINVAL.
        assert!(matches!(
            vfio_mig_get_next_state(7, MigState::StopCopy, MigState::PreCopy),
            KernelHop::ReachedError
        ));
        assert!(matches!(
            next_step(MigrationFlags::ALL, State::StopCopy, State::PreCopy),
            Err(Error::BlockedArc {
                from: State::StopCopy,
                to: State::PreCopy
            })
        ));
    }

    #[test]
    fn a_skip_is_taken_where_the_table_names_an_unsupported_state() {
        // vfio_from_fsm_table[RUNNING][STOP] is RUNNING_P2P; without P2P the kernel follows
        // vfio_from_fsm_table[RUNNING_P2P][STOP], which is STOP.
        assert_eq!(
            next_step(MigrationFlags::STOP_COPY, State::Running, State::Stop).unwrap(),
            State::Stop
        );
        assert_eq!(
            next_step(MigrationFlags::WITH_P2P, State::Running, State::Stop).unwrap(),
            State::RunningP2p
        );
    }
}
