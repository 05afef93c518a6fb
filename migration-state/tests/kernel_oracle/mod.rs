// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The oracle: Linux v6.12.117's migration state machine, written from the kernel's source and
//! independently of `migration-state`'s `fsm` (nothing here calls the crate).
//!
//! 1. `vfio_from_fsm_table` and `state_flags_table` of `drivers/vfio/vfio_main.c`,
//!    `vfio_mig_get_next_state()`, transcribed literally: the [`designated!`] macro takes the
//!    kernel's designated initializers as written, rows and entries in the kernel's order, and
//!    fails on a hole or a duplicate;
//! 2. [`vfio_mig_get_next_state`], that function's two flag checks and its skip loop over
//!    those tables;
//! 3. [`set_state`], the drivers' loop around it (`samples/vfio-mdev/mtty.c`,
//!    `mtty_set_state()`; `drivers/vfio/pci/mlx5/main.c`, `mlx5vf_pci_set_device_state()`):
//!    `while (state != new_state)`, one arc per call, stop at the first refusal;
//! 4. a second description from the same function's comment, transcribed as data: the arcs a
//!    driver must implement per feature set ([`required_arcs`]) and the combination
//!    transitions and blocked requests with every feature ([`COMBINATIONS_ALL_FEATURES`],
//!    [`BLOCKED_ALL_FEATURES`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

// `enum vfio_device_mig_state` (include/uapi/linux/vfio.h).
pub const VFIO_DEVICE_STATE_ERROR: u32 = 0;
pub const VFIO_DEVICE_STATE_STOP: u32 = 1;
pub const VFIO_DEVICE_STATE_RUNNING: u32 = 2;
pub const VFIO_DEVICE_STATE_STOP_COPY: u32 = 3;
pub const VFIO_DEVICE_STATE_RESUMING: u32 = 4;
pub const VFIO_DEVICE_STATE_RUNNING_P2P: u32 = 5;
pub const VFIO_DEVICE_STATE_PRE_COPY: u32 = 6;
pub const VFIO_DEVICE_STATE_PRE_COPY_P2P: u32 = 7;
/// `VFIO_DEVICE_NUM_STATES` in vfio_mig_get_next_state().
pub const VFIO_DEVICE_NUM_STATES: u32 = VFIO_DEVICE_STATE_PRE_COPY_P2P + 1;
pub const N: usize = VFIO_DEVICE_NUM_STATES as usize;

// `struct vfio_device_feature_migration` flags (include/uapi/linux/vfio.h).
pub const VFIO_MIGRATION_STOP_COPY: u32 = 1 << 0;
pub const VFIO_MIGRATION_P2P: u32 = 1 << 1;
pub const VFIO_MIGRATION_PRE_COPY: u32 = 1 << 2;

/// The four feature sets the kernel accepts.
pub const FEATURE_SETS: [u32; 4] = [
    VFIO_MIGRATION_STOP_COPY,
    VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
    VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
    VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY,
];

/// A C designated initializer, `[index] = value`, as a Rust array; a hole or a duplicate
/// index panics.
macro_rules! designated {
    ($( [$index:ident] = $value:expr ),* $(,)?) => {{
        let mut out = [None; N];
        $(
            let slot = &mut out[$index as usize];
            assert!(slot.is_none(), "duplicate initializer {}", stringify!($index));
            *slot = Some($value);
        )*
        out.map(|v| v.expect("every index has an initializer"))
    }};
}

/// Linux v6.12.117 drivers/vfio/vfio_main.c, vfio_mig_get_next_state(): `vfio_from_fsm_table`.
pub fn vfio_from_fsm_table() -> [[u32; N]; N] {
    designated! {
        [VFIO_DEVICE_STATE_STOP] = designated! {
            [VFIO_DEVICE_STATE_STOP] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_RUNNING] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_PRE_COPY] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_DEVICE_STATE_STOP_COPY,
            [VFIO_DEVICE_STATE_RESUMING] = VFIO_DEVICE_STATE_RESUMING,
            [VFIO_DEVICE_STATE_RUNNING_P2P] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_ERROR] = VFIO_DEVICE_STATE_ERROR,
        },
        [VFIO_DEVICE_STATE_RUNNING] = designated! {
            [VFIO_DEVICE_STATE_STOP] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_RUNNING] = VFIO_DEVICE_STATE_RUNNING,
            [VFIO_DEVICE_STATE_PRE_COPY] = VFIO_DEVICE_STATE_PRE_COPY,
            [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_RESUMING] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_RUNNING_P2P] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_ERROR] = VFIO_DEVICE_STATE_ERROR,
        },
        [VFIO_DEVICE_STATE_PRE_COPY] = designated! {
            [VFIO_DEVICE_STATE_STOP] = VFIO_DEVICE_STATE_RUNNING,
            [VFIO_DEVICE_STATE_RUNNING] = VFIO_DEVICE_STATE_RUNNING,
            [VFIO_DEVICE_STATE_PRE_COPY] = VFIO_DEVICE_STATE_PRE_COPY,
            [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_DEVICE_STATE_PRE_COPY_P2P,
            [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_DEVICE_STATE_PRE_COPY_P2P,
            [VFIO_DEVICE_STATE_RESUMING] = VFIO_DEVICE_STATE_RUNNING,
            [VFIO_DEVICE_STATE_RUNNING_P2P] = VFIO_DEVICE_STATE_RUNNING,
            [VFIO_DEVICE_STATE_ERROR] = VFIO_DEVICE_STATE_ERROR,
        },
        [VFIO_DEVICE_STATE_PRE_COPY_P2P] = designated! {
            [VFIO_DEVICE_STATE_STOP] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_RUNNING] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_PRE_COPY] = VFIO_DEVICE_STATE_PRE_COPY,
            [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_DEVICE_STATE_PRE_COPY_P2P,
            [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_DEVICE_STATE_STOP_COPY,
            [VFIO_DEVICE_STATE_RESUMING] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_RUNNING_P2P] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_ERROR] = VFIO_DEVICE_STATE_ERROR,
        },
        [VFIO_DEVICE_STATE_STOP_COPY] = designated! {
            [VFIO_DEVICE_STATE_STOP] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_RUNNING] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_PRE_COPY] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_DEVICE_STATE_STOP_COPY,
            [VFIO_DEVICE_STATE_RESUMING] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_RUNNING_P2P] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_ERROR] = VFIO_DEVICE_STATE_ERROR,
        },
        [VFIO_DEVICE_STATE_RESUMING] = designated! {
            [VFIO_DEVICE_STATE_STOP] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_RUNNING] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_PRE_COPY] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_RESUMING] = VFIO_DEVICE_STATE_RESUMING,
            [VFIO_DEVICE_STATE_RUNNING_P2P] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_ERROR] = VFIO_DEVICE_STATE_ERROR,
        },
        [VFIO_DEVICE_STATE_RUNNING_P2P] = designated! {
            [VFIO_DEVICE_STATE_STOP] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_RUNNING] = VFIO_DEVICE_STATE_RUNNING,
            [VFIO_DEVICE_STATE_PRE_COPY] = VFIO_DEVICE_STATE_RUNNING,
            [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_DEVICE_STATE_PRE_COPY_P2P,
            [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_RESUMING] = VFIO_DEVICE_STATE_STOP,
            [VFIO_DEVICE_STATE_RUNNING_P2P] = VFIO_DEVICE_STATE_RUNNING_P2P,
            [VFIO_DEVICE_STATE_ERROR] = VFIO_DEVICE_STATE_ERROR,
        },
        [VFIO_DEVICE_STATE_ERROR] = designated! {
            [VFIO_DEVICE_STATE_STOP] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_RUNNING] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_PRE_COPY] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_RESUMING] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_RUNNING_P2P] = VFIO_DEVICE_STATE_ERROR,
            [VFIO_DEVICE_STATE_ERROR] = VFIO_DEVICE_STATE_ERROR,
        },
    }
}

/// Linux v6.12.117 drivers/vfio/vfio_main.c, vfio_mig_get_next_state(): `state_flags_table`
/// (`~0U` for ERROR).
pub fn state_flags_table() -> [u32; N] {
    designated! {
        [VFIO_DEVICE_STATE_STOP] = VFIO_MIGRATION_STOP_COPY,
        [VFIO_DEVICE_STATE_RUNNING] = VFIO_MIGRATION_STOP_COPY,
        [VFIO_DEVICE_STATE_PRE_COPY] =
            VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
        [VFIO_DEVICE_STATE_PRE_COPY_P2P] = VFIO_MIGRATION_STOP_COPY |
                                           VFIO_MIGRATION_P2P |
                                           VFIO_MIGRATION_PRE_COPY,
        [VFIO_DEVICE_STATE_STOP_COPY] = VFIO_MIGRATION_STOP_COPY,
        [VFIO_DEVICE_STATE_RESUMING] = VFIO_MIGRATION_STOP_COPY,
        [VFIO_DEVICE_STATE_RUNNING_P2P] =
            VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
        [VFIO_DEVICE_STATE_ERROR] = !0u32,
    }
}

/// Which `return -EINVAL` of vfio_mig_get_next_state() answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Einval {
    /// `WARN_ON(cur_fsm >= ARRAY_SIZE(...) || cur_fsm's flags missing)`.
    CurFsm,
    /// `new_fsm >= ARRAY_SIZE(...) || new_fsm's flags missing`.
    NewFsm,
    /// `*next_fsm == VFIO_DEVICE_STATE_ERROR` after the skip loop.
    NextIsError,
}

/// Skips after which the oracle declares that the kernel's loop would spin: far more than
/// there are states.
pub const SPIN_GUARD: usize = 64;

/// Linux v6.12.117 vfio_mig_get_next_state(), for a device whose `migration_flags` is
/// `migration_flags`. Panics if the kernel's skip loop would never end.
pub fn vfio_mig_get_next_state(
    migration_flags: u32,
    cur_fsm: u32,
    new_fsm: u32,
) -> Result<u32, Einval> {
    let table = vfio_from_fsm_table();
    let flags = state_flags_table();
    let valid = |s: u32| (flags[s as usize] & migration_flags) == flags[s as usize];
    if cur_fsm >= VFIO_DEVICE_NUM_STATES || !valid(cur_fsm) {
        return Err(Einval::CurFsm);
    }
    if new_fsm >= VFIO_DEVICE_NUM_STATES || !valid(new_fsm) {
        return Err(Einval::NewFsm);
    }
    let mut next_fsm = table[cur_fsm as usize][new_fsm as usize];
    let mut skips = 0;
    while next_fsm != VFIO_DEVICE_STATE_ERROR && !valid(next_fsm) {
        next_fsm = table[next_fsm as usize][new_fsm as usize];
        skips += 1;
        assert!(
            skips < SPIN_GUARD,
            "kernel spins: flags {migration_flags:#x}, {cur_fsm} -> {new_fsm}"
        );
    }
    if next_fsm != VFIO_DEVICE_STATE_ERROR {
        Ok(next_fsm)
    } else {
        Err(Einval::NextIsError)
    }
}

/// What a driver's set_state loop does with a request when every arc it takes succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetState {
    /// The states entered, in order.
    pub arcs: Vec<u32>,
    /// The refusal that ended the loop, if any (after `arcs`).
    pub refused: Option<Einval>,
}

/// The drivers' loop (Linux v6.12.117 samples/vfio-mdev/mtty.c, mtty_set_state()):
/// `while (state != new_state) { rc = vfio_mig_get_next_state(...); if (rc) break; step;
/// state = next_state; }`. Panics if it would never end.
pub fn set_state(migration_flags: u32, mut state: u32, new_state: u32) -> SetState {
    let mut arcs = Vec::new();
    while state != new_state {
        match vfio_mig_get_next_state(migration_flags, state, new_state) {
            Ok(next_state) => {
                arcs.push(next_state);
                state = next_state;
            }
            Err(e) => {
                return SetState {
                    arcs,
                    refused: Some(e),
                }
            }
        }
        assert!(arcs.len() < SPIN_GUARD, "driver loop never ends: {arcs:?}");
    }
    SetState {
        arcs,
        refused: None,
    }
}

pub fn supported(migration_flags: u32, s: u32) -> bool {
    let needs = state_flags_table()[s as usize];
    needs & migration_flags == needs
}

/// The arcs the comment of vfio_mig_get_next_state() requires a driver to implement, for a
/// device with `migration_flags`. "Without P2P and precopy" is read as "without P2P": a
/// device with PRE_COPY but without P2P needs RUNNING -> STOP and STOP -> RUNNING too.
pub fn required_arcs(migration_flags: u32) -> BTreeSet<(u32, u32)> {
    const ALWAYS: &str = "RESUMING -> STOP, STOP -> RESUMING, STOP -> STOP_COPY, STOP_COPY -> STOP";
    const P2P: &str = "RUNNING -> RUNNING_P2P, RUNNING_P2P -> RUNNING, RUNNING_P2P -> STOP, \
                       STOP -> RUNNING_P2P";
    const PRE_COPY: &str = "RUNNING -> PRE_COPY, PRE_COPY -> RUNNING, PRE_COPY -> STOP_COPY";
    const PRE_COPY_AND_P2P: &str = "PRE_COPY -> RUNNING, PRE_COPY -> PRE_COPY_P2P, \
                                    PRE_COPY_P2P -> PRE_COPY, PRE_COPY_P2P -> RUNNING_P2P, \
                                    PRE_COPY_P2P -> STOP_COPY, RUNNING -> PRE_COPY, \
                                    RUNNING_P2P -> PRE_COPY_P2P";
    const NO_P2P: &str = "RUNNING -> STOP, STOP -> RUNNING";
    let p2p = migration_flags & VFIO_MIGRATION_P2P != 0;
    let pre_copy = migration_flags & VFIO_MIGRATION_PRE_COPY != 0;
    let mut lists = vec![ALWAYS, if p2p { P2P } else { NO_P2P }];
    if pre_copy {
        lists.push(if p2p { PRE_COPY_AND_P2P } else { PRE_COPY });
    }
    lists
        .iter()
        .flat_map(|l| l.split(", "))
        .map(|arc| {
            let w = walk_of(arc);
            assert_eq!(w.len(), 2, "{arc}");
            (w[0], w[1])
        })
        .collect()
}

/// The combination transitions the comment of vfio_mig_get_next_state() lists "if all
/// optional features are supported", then the two it lists as blocked.
pub const COMBINATIONS_ALL_FEATURES: [&str; 25] = [
    "PRE_COPY -> PRE_COPY_P2P -> STOP_COPY",
    "PRE_COPY -> RUNNING -> RUNNING_P2P",
    "PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP",
    "PRE_COPY -> RUNNING -> RUNNING_P2P -> STOP -> RESUMING",
    "PRE_COPY_P2P -> RUNNING_P2P -> RUNNING",
    "PRE_COPY_P2P -> RUNNING_P2P -> STOP",
    "PRE_COPY_P2P -> RUNNING_P2P -> STOP -> RESUMING",
    "RESUMING -> STOP -> RUNNING_P2P",
    "RESUMING -> STOP -> RUNNING_P2P -> PRE_COPY_P2P",
    "RESUMING -> STOP -> RUNNING_P2P -> RUNNING",
    "RESUMING -> STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY",
    "RESUMING -> STOP -> STOP_COPY",
    "RUNNING -> RUNNING_P2P -> PRE_COPY_P2P",
    "RUNNING -> RUNNING_P2P -> STOP",
    "RUNNING -> RUNNING_P2P -> STOP -> RESUMING",
    "RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY",
    "RUNNING_P2P -> RUNNING -> PRE_COPY",
    "RUNNING_P2P -> STOP -> RESUMING",
    "RUNNING_P2P -> STOP -> STOP_COPY",
    "STOP -> RUNNING_P2P -> PRE_COPY_P2P",
    "STOP -> RUNNING_P2P -> RUNNING",
    "STOP -> RUNNING_P2P -> RUNNING -> PRE_COPY",
    "STOP_COPY -> STOP -> RESUMING",
    "STOP_COPY -> STOP -> RUNNING_P2P",
    "STOP_COPY -> STOP -> RUNNING_P2P -> RUNNING",
];
pub const BLOCKED_ALL_FEATURES: [&str; 2] = ["STOP_COPY -> PRE_COPY", "STOP_COPY -> PRE_COPY_P2P"];

/// `"A -> B -> C"` as state numbers.
pub fn walk_of(text: &str) -> Vec<u32> {
    text.split(" -> ")
        .map(|name| match name.trim() {
            "ERROR" => VFIO_DEVICE_STATE_ERROR,
            "STOP" => VFIO_DEVICE_STATE_STOP,
            "RUNNING" => VFIO_DEVICE_STATE_RUNNING,
            "STOP_COPY" => VFIO_DEVICE_STATE_STOP_COPY,
            "RESUMING" => VFIO_DEVICE_STATE_RESUMING,
            "RUNNING_P2P" => VFIO_DEVICE_STATE_RUNNING_P2P,
            "PRE_COPY" => VFIO_DEVICE_STATE_PRE_COPY,
            "PRE_COPY_P2P" => VFIO_DEVICE_STATE_PRE_COPY_P2P,
            other => panic!("unknown state {other}"),
        })
        .collect()
}
