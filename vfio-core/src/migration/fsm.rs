// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The kernel's migration v2 state machine: its tables and next-state rule, transcribed from
//! Linux v6.12.117 `drivers/vfio/vfio_main.c`, `vfio_mig_get_next_state()` (its
//! `vfio_from_fsm_table` and `state_flags_table`), with the flag bits of
//! `include/uapi/linux/vfio.h`. This is the workspace's one copy: the simulated device walks
//! it, and `migration-state`'s state machine is built on it.
//!
//! # The rule
//!
//! `vfio_mig_get_next_state(cur, new)` answers `-EINVAL` when `cur` (with a `WARN_ON`) or `new`
//! is not a state the device's flags support (`state_flags_table`; `ERROR` needs all 32 bits of
//! the flag word, which no in-tree driver sets). Otherwise it looks up
//! `vfio_from_fsm_table[cur][new]` and, while that state is not `ERROR` and is unsupported,
//! looks up `vfio_from_fsm_table[that][new]`. It answers that state, or `-EINVAL` if it is
//! `ERROR`. Between supported states the only `ERROR` entries are `STOP_COPY` to `PRE_COPY`
//! and `STOP_COPY` to `PRE_COPY_P2P`; `RESUMING` reaches every state through `STOP`.
//!
//! Drivers (Linux v6.12.117 `samples/vfio-mdev/mtty.c`, `mtty_set_state()`;
//! `drivers/vfio/pci/mlx5/main.c`, `mlx5vf_pci_set_device_state()`) loop
//! `while (state != new_state)`: ask for the next state, take that arc, record it. A refusal or
//! a failed arc ends the loop with the device in the last state it reached.
//!
//! # Termination
//!
//! The kernel's skip loop stops as soon as it reaches `ERROR` (its condition tests for `ERROR`
//! first), so it never spins on that entry; it could only spin on a cycle of unsupported
//! states, and the table has none. The build checks it by constant evaluation: for every flag
//! word whose known bits are any of the eight combinations, and for the all-ones word, the skip
//! loop ends; for the four valid flag sets, every walk either reaches its target within
//! [`MAX_ARCS`] arcs or is refused at its first step. A refused request is therefore refused
//! before any arc is taken.
//!
//! The tables are kept in the kernel's own order and indexed at compile time; a compile-time
//! check proves the transcription complete.

use super::MigState as State;

/// `VFIO_DEVICE_NUM_STATES` (`VFIO_DEVICE_STATE_PRE_COPY_P2P + 1`).
pub const NUM_STATES: usize = 8;

/// `VFIO_MIGRATION_STOP_COPY` (`include/uapi/linux/vfio.h`).
pub const VFIO_MIGRATION_STOP_COPY: u32 = 1 << 0;
/// `VFIO_MIGRATION_P2P`.
pub const VFIO_MIGRATION_P2P: u32 = 1 << 1;
/// `VFIO_MIGRATION_PRE_COPY`.
pub const VFIO_MIGRATION_PRE_COPY: u32 = 1 << 2;

/// The four flag words a device can have (`STOP_COPY` is mandatory).
pub const EVERY_FLAG_SET: [u32; 4] = [
    VFIO_MIGRATION_STOP_COPY,
    VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
    VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
    VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
];

/// `vfio_from_fsm_table`, row by row and entry by entry in the order of the kernel's
/// designated initializers: `(cur, [(new, next)])` reads
/// `[cur] = { [new] = next, ... }`. Indexed by [`FROM_FSM_TABLE`].
#[rustfmt::skip]
const VFIO_FROM_FSM_TABLE_ROWS: [(State, [(State, State); NUM_STATES]); NUM_STATES] = {
    use State::{
        Error as ERROR, PreCopy as PRE_COPY, PreCopyP2p as PRE_COPY_P2P, Resuming as RESUMING,
        Running as RUNNING, RunningP2p as RUNNING_P2P, Stop as STOP, StopCopy as STOP_COPY,
    };
    [
        (STOP, [
            (STOP, STOP),
            (RUNNING, RUNNING_P2P),
            (PRE_COPY, RUNNING_P2P),
            (PRE_COPY_P2P, RUNNING_P2P),
            (STOP_COPY, STOP_COPY),
            (RESUMING, RESUMING),
            (RUNNING_P2P, RUNNING_P2P),
            (ERROR, ERROR),
        ]),
        (RUNNING, [
            (STOP, RUNNING_P2P),
            (RUNNING, RUNNING),
            (PRE_COPY, PRE_COPY),
            (PRE_COPY_P2P, RUNNING_P2P),
            (STOP_COPY, RUNNING_P2P),
            (RESUMING, RUNNING_P2P),
            (RUNNING_P2P, RUNNING_P2P),
            (ERROR, ERROR),
        ]),
        (PRE_COPY, [
            (STOP, RUNNING),
            (RUNNING, RUNNING),
            (PRE_COPY, PRE_COPY),
            (PRE_COPY_P2P, PRE_COPY_P2P),
            (STOP_COPY, PRE_COPY_P2P),
            (RESUMING, RUNNING),
            (RUNNING_P2P, RUNNING),
            (ERROR, ERROR),
        ]),
        (PRE_COPY_P2P, [
            (STOP, RUNNING_P2P),
            (RUNNING, RUNNING_P2P),
            (PRE_COPY, PRE_COPY),
            (PRE_COPY_P2P, PRE_COPY_P2P),
            (STOP_COPY, STOP_COPY),
            (RESUMING, RUNNING_P2P),
            (RUNNING_P2P, RUNNING_P2P),
            (ERROR, ERROR),
        ]),
        (STOP_COPY, [
            (STOP, STOP),
            (RUNNING, STOP),
            (PRE_COPY, ERROR),
            (PRE_COPY_P2P, ERROR),
            (STOP_COPY, STOP_COPY),
            (RESUMING, STOP),
            (RUNNING_P2P, STOP),
            (ERROR, ERROR),
        ]),
        (RESUMING, [
            (STOP, STOP),
            (RUNNING, STOP),
            (PRE_COPY, STOP),
            (PRE_COPY_P2P, STOP),
            (STOP_COPY, STOP),
            (RESUMING, RESUMING),
            (RUNNING_P2P, STOP),
            (ERROR, ERROR),
        ]),
        (RUNNING_P2P, [
            (STOP, STOP),
            (RUNNING, RUNNING),
            (PRE_COPY, RUNNING),
            (PRE_COPY_P2P, PRE_COPY_P2P),
            (STOP_COPY, STOP),
            (RESUMING, STOP),
            (RUNNING_P2P, RUNNING_P2P),
            (ERROR, ERROR),
        ]),
        (ERROR, [
            (STOP, ERROR),
            (RUNNING, ERROR),
            (PRE_COPY, ERROR),
            (PRE_COPY_P2P, ERROR),
            (STOP_COPY, ERROR),
            (RESUMING, ERROR),
            (RUNNING_P2P, ERROR),
            (ERROR, ERROR),
        ]),
    ]
};

/// `state_flags_table`, in the order of the kernel's designated initializers: the flags a
/// device must have for a state to be valid. `ERROR` needs `~0U`. Indexed by
/// [`STATE_FLAGS_TABLE`].
#[rustfmt::skip]
const STATE_FLAGS_TABLE_ENTRIES: [(State, u32); NUM_STATES] = [
    (State::Stop, VFIO_MIGRATION_STOP_COPY),
    (State::Running, VFIO_MIGRATION_STOP_COPY),
    (State::PreCopy, VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY),
    (State::PreCopyP2p, VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY),
    (State::StopCopy, VFIO_MIGRATION_STOP_COPY),
    (State::Resuming, VFIO_MIGRATION_STOP_COPY),
    (State::RunningP2p, VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P),
    (State::Error, !0u32),
];

/// `vfio_from_fsm_table[cur][new]`, indexed by state number.
const FROM_FSM_TABLE: [[State; NUM_STATES]; NUM_STATES] = {
    let mut table = [[State::Error; NUM_STATES]; NUM_STATES];
    let mut r = 0;
    while r < NUM_STATES {
        let (cur, entries) = VFIO_FROM_FSM_TABLE_ROWS[r];
        let mut e = 0;
        while e < NUM_STATES {
            let (new, next) = entries[e];
            table[cur.index()][new.index()] = next;
            e += 1;
        }
        r += 1;
    }
    table
};

/// `state_flags_table[state]`, indexed by state number.
const STATE_FLAGS_TABLE: [u32; NUM_STATES] = {
    let mut table = [0; NUM_STATES];
    let mut i = 0;
    while i < NUM_STATES {
        let (state, needs) = STATE_FLAGS_TABLE_ENTRIES[i];
        table[state.index()] = needs;
        i += 1;
    }
    table
};

/// The transcription names every `[cur][new]` cell of `vfio_from_fsm_table` and every state of
/// `state_flags_table` exactly once (the kernel's designated initializers leave no hole).
const TRANSCRIPTION_IS_COMPLETE: bool = {
    let mut cells = [[0u8; NUM_STATES]; NUM_STATES];
    let mut states = [0u8; NUM_STATES];
    let mut r = 0;
    while r < NUM_STATES {
        let (cur, entries) = VFIO_FROM_FSM_TABLE_ROWS[r];
        let mut e = 0;
        while e < NUM_STATES {
            cells[cur.index()][entries[e].0.index()] += 1;
            e += 1;
        }
        states[STATE_FLAGS_TABLE_ENTRIES[r].0.index()] += 1;
        r += 1;
    }
    let mut ok = true;
    let mut i = 0;
    while i < NUM_STATES {
        let mut j = 0;
        while j < NUM_STATES {
            ok &= cells[i][j] == 1;
            j += 1;
        }
        ok &= states[i] == 1;
        i += 1;
    }
    ok
};
const _: () = assert!(
    TRANSCRIPTION_IS_COMPLETE,
    "vfio_from_fsm_table or state_flags_table transcription has a hole or a duplicate"
);

/// `(state_flags_table[state] & migration_flags) == state_flags_table[state]`.
pub const fn kernel_supports(migration_flags: u32, state: State) -> bool {
    let needs = STATE_FLAGS_TABLE[state.index()];
    needs & migration_flags == needs
}

/// What `vfio_mig_get_next_state()` answers.
#[derive(Debug, Clone, Copy)]
pub enum KernelHop {
    /// 0, with `*next_fsm` set to this state.
    Next(State),
    /// `-EINVAL` (and a `WARN_ON`): `cur_fsm` is not valid for the device.
    CurrentUnsupported,
    /// `-EINVAL`: `new_fsm` is not valid for the device.
    RequestedUnsupported,
    /// `-EINVAL`: the table walk ended on `VFIO_DEVICE_STATE_ERROR`.
    ReachedError,
    /// The kernel's skip loop would never end: it went round a cycle of unsupported states.
    /// A compile-time check (see the module docs, "Termination") proves this never happens.
    Spins,
}

/// Linux v6.12.117 `vfio_mig_get_next_state()`, over the transcribed tables, for a device
/// whose `migration_flags` is `migration_flags`.
pub const fn vfio_mig_get_next_state(migration_flags: u32, cur: State, new: State) -> KernelHop {
    if !kernel_supports(migration_flags, cur) {
        return KernelHop::CurrentUnsupported;
    }
    if !kernel_supports(migration_flags, new) {
        return KernelHop::RequestedUnsupported;
    }
    // Arcs touching unsupported states are skipped over: follow the table from the
    // unsupported state towards the same target.
    let mut next = FROM_FSM_TABLE[cur.index()][new.index()];
    let mut skipped = 0;
    while !matches!(next, State::Error) && !kernel_supports(migration_flags, next) {
        // Skipping NUM_STATES times visits more unsupported states than exist, so the kernel
        // is going round a cycle it never leaves.
        if skipped == NUM_STATES {
            return KernelHop::Spins;
        }
        next = FROM_FSM_TABLE[next.index()][new.index()];
        skipped += 1;
    }
    if matches!(next, State::Error) {
        KernelHop::ReachedError
    } else {
        KernelHop::Next(next)
    }
}

/// The most arcs any request takes: a simple walk visits each of the seven valid states at
/// most once.
pub const MAX_ARCS: usize = NUM_STATES - 1;

/// What the drivers' loop makes of a request when every arc succeeds, for the compile-time
/// check.
#[derive(Debug, Clone, Copy)]
enum DriverWalk {
    /// The device reaches the target (within [`MAX_ARCS`] arcs).
    Reaches,
    /// `vfio_mig_get_next_state()` refused at the first step, before any arc.
    RefusedAtFirstStep,
    /// Refused after some arcs were taken, or still walking after [`MAX_ARCS`] arcs.
    Misbehaves,
}

/// The drivers' `while (state != new_state)` loop over [`vfio_mig_get_next_state`].
const fn driver_walk(migration_flags: u32, from: State, to: State) -> DriverWalk {
    let mut current = from;
    let mut arcs = 0;
    while current.index() != to.index() {
        if arcs == MAX_ARCS {
            return DriverWalk::Misbehaves;
        }
        match vfio_mig_get_next_state(migration_flags, current, to) {
            KernelHop::Next(next) => current = next,
            KernelHop::Spins => return DriverWalk::Misbehaves,
            _ if arcs == 0 => return DriverWalk::RefusedAtFirstStep,
            _ => return DriverWalk::Misbehaves,
        }
        arcs += 1;
    }
    DriverWalk::Reaches
}

/// The kernel's rule terminates on every input, and the drivers' loop on every request:
/// - `vfio_mig_get_next_state()` never spins, for every flag word whose three known bits are
///   any of the eight combinations (other bits play no part) and for the all-ones word (the
///   only one for which `ERROR` passes the flags check), and every state pair;
/// - for the four valid flag sets, every request from a supported state either reaches its
///   target within [`MAX_ARCS`] arcs or is refused at its first step.
const KERNEL_RULES_TERMINATE: bool = {
    let words: [u32; 9] = [0, 1, 2, 3, 4, 5, 6, 7, !0u32];
    let mut ok = true;
    let mut w = 0;
    while w < words.len() {
        let mut c = 0;
        while c < NUM_STATES {
            let mut n = 0;
            while n < NUM_STATES {
                let hop = vfio_mig_get_next_state(words[w], State::ALL[c], State::ALL[n]);
                ok &= !matches!(hop, KernelHop::Spins);
                n += 1;
            }
            c += 1;
        }
        w += 1;
    }
    let mut f = 0;
    while f < EVERY_FLAG_SET.len() {
        let flags = EVERY_FLAG_SET[f];
        let mut from = 0;
        while from < NUM_STATES {
            let mut to = 0;
            while to < NUM_STATES {
                if kernel_supports(flags, State::ALL[from]) {
                    let walk = driver_walk(flags, State::ALL[from], State::ALL[to]);
                    ok &= !matches!(walk, DriverWalk::Misbehaves);
                }
                to += 1;
            }
            from += 1;
        }
        f += 1;
    }
    ok
};
const _: () = assert!(
    KERNEL_RULES_TERMINATE,
    "the transcribed kernel rule spins, or a walk is refused midway or loops"
);

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u32 = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;

    fn next(flags: u32, cur: State, new: State) -> Option<State> {
        match vfio_mig_get_next_state(flags, cur, new) {
            KernelHop::Next(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn resuming_reaches_the_pre_copy_states_through_stop() {
        // vfio_from_fsm_table[RESUMING][PRE_COPY] and [PRE_COPY_P2P] are STOP.
        assert_eq!(
            next(ALL, State::Resuming, State::PreCopy),
            Some(State::Stop)
        );
        assert_eq!(
            next(ALL, State::Resuming, State::PreCopyP2p),
            Some(State::Stop)
        );
        assert_eq!(
            next(ALL, State::Stop, State::PreCopyP2p),
            Some(State::RunningP2p)
        );
    }

    #[test]
    fn only_stop_copy_blocks_the_pre_copy_states() {
        for cur in State::ALL {
            for new in [State::PreCopy, State::PreCopyP2p] {
                let hop = vfio_mig_get_next_state(ALL, cur, new);
                let blocked = matches!(hop, KernelHop::ReachedError);
                assert_eq!(
                    blocked,
                    cur == State::StopCopy,
                    "{cur:?} -> {new:?}: {hop:?}"
                );
            }
        }
    }

    #[test]
    fn error_is_never_a_valid_state_and_skips_follow_the_table() {
        assert!(matches!(
            vfio_mig_get_next_state(ALL, State::Running, State::Error),
            KernelHop::RequestedUnsupported
        ));
        assert!(matches!(
            vfio_mig_get_next_state(ALL, State::Error, State::Running),
            KernelHop::CurrentUnsupported
        ));
        // vfio_from_fsm_table[RUNNING][STOP] is RUNNING_P2P; without P2P the kernel follows
        // vfio_from_fsm_table[RUNNING_P2P][STOP], which is STOP.
        assert_eq!(
            next(VFIO_MIGRATION_STOP_COPY, State::Running, State::Stop),
            Some(State::Stop)
        );
        assert_eq!(
            next(ALL, State::Running, State::Stop),
            Some(State::RunningP2p)
        );
        assert!(!kernel_supports(VFIO_MIGRATION_STOP_COPY, State::PreCopy));
        assert!(kernel_supports(!0, State::Error));
    }
}
