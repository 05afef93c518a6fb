// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Exhaustive check of the state machine against the kernel: Linux v6.12.117.
//!
//! The expectations come from [`kernel_oracle`], a reimplementation of the kernel's
//! `vfio_mig_get_next_state()` and of the drivers' set_state loop over a literal transcription
//! of the kernel's tables, written from the kernel source and not from `fsm.rs`. Every
//! (features, current, requested) combination of the four feature sets the kernel accepts
//! (`STOP_COPY` mandatory, `P2P` and `PRE_COPY` optional) is checked, for `next_step` (one call
//! of `vfio_mig_get_next_state()`) and for `path` (the whole walk, arc by arc).
//!
//! # What the previous implementation got wrong
//!
//! Its next-hop table was a hand-written `match`, and the table in this test was written from
//! the same understanding, so the two agreed with each other and not with Linux. Run against
//! this oracle (on commit 6d67465, before the rewrite), it differed on exactly these requests:
//!
//! | features | from -> to | kernel | old implementation |
//! |---|---|---|---|
//! | STOP_COPY\|P2P\|PRE_COPY | RUNNING -> PRE_COPY_P2P | RUNNING_P2P, PRE_COPY_P2P | PRE_COPY, PRE_COPY_P2P |
//! | STOP_COPY\|P2P\|PRE_COPY | RESUMING -> PRE_COPY | STOP, RUNNING_P2P, RUNNING, PRE_COPY | refused (`BlockedArc`) |
//! | STOP_COPY\|P2P\|PRE_COPY | RESUMING -> PRE_COPY_P2P | STOP, RUNNING_P2P, PRE_COPY_P2P | refused (`BlockedArc`) |
//! | STOP_COPY\|PRE_COPY | RESUMING -> PRE_COPY | STOP, RUNNING, PRE_COPY | refused (`BlockedArc`) |
//!
//! The kernel's `vfio_from_fsm_table[RUNNING][PRE_COPY_P2P]` is `RUNNING_P2P` (the old code
//! had `PRE_COPY`), and its `RESUMING` row sends `PRE_COPY` and `PRE_COPY_P2P` to `STOP`
//! (the old code had `ERROR`); only the `STOP_COPY` row blocks them.
//! [`pairs_the_old_implementation_got_wrong`] pins these four.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kernel_oracle;

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Debug;

use kernel_oracle::*;
use migration_state::{next_step, path, Error, MigrationFlags, State};

fn st(raw: u32) -> State {
    State::from_raw(raw).unwrap()
}

fn crate_flags(migration_flags: u32) -> MigrationFlags {
    MigrationFlags::from_bits(u64::from(migration_flags)).unwrap()
}

/// The crate's refusal for the kernel's `-EINVAL` at `check`, for the request `cur -> new`.
fn refusal_matches(got: &Error, check: Einval, cur: u32, new: u32) -> bool {
    match check {
        Einval::CurFsm if cur == VFIO_DEVICE_STATE_ERROR => matches!(got, Error::DeviceInError),
        Einval::CurFsm => {
            matches!(got, Error::UnsupportedState { state, .. } if *state == st(cur))
        }
        Einval::NewFsm => {
            matches!(got, Error::UnsupportedState { state, .. } if *state == st(new))
        }
        Einval::NextIsError => {
            matches!(got, Error::BlockedArc { from, to } if *from == st(cur) && *to == st(new))
        }
    }
}

/// Every (features, current, requested) combination of the four feature sets, with the
/// crate's flags for the features.
fn every_request() -> impl Iterator<Item = (u32, MigrationFlags, u32, u32)> {
    FEATURE_SETS.into_iter().flat_map(|flags| {
        (0..VFIO_DEVICE_NUM_STATES).flat_map(move |cur| {
            (0..VFIO_DEVICE_NUM_STATES).map(move |new| (flags, crate_flags(flags), cur, new))
        })
    })
}

/// The assertion message for a request: what the kernel answered and what the crate did.
fn describe(
    mf: MigrationFlags,
    from: u32,
    to: u32,
    kernel: &impl Debug,
    got: &impl Debug,
) -> String {
    format!(
        "{mf}: {} -> {}: kernel {kernel:?}, got {got:?}",
        st(from),
        st(to)
    )
}

#[test]
fn next_step_is_vfio_mig_get_next_state() {
    let (mut ok, mut cur_refused, mut new_refused, mut blocked) = (0, 0, 0, 0);
    for (flags, mf, cur, new) in every_request() {
        let want = vfio_mig_get_next_state(flags, cur, new);
        let got = next_step(mf, st(cur), st(new));
        let what = describe(mf, cur, new, &want, &got);
        match want {
            Ok(next) => {
                assert_eq!(got.unwrap().to_raw(), next, "{what}");
                ok += 1;
            }
            Err(check) => {
                assert!(
                    refusal_matches(&got.unwrap_err(), check, cur, new),
                    "{what}"
                );
                match check {
                    Einval::CurFsm => cur_refused += 1,
                    Einval::NewFsm => new_refused += 1,
                    Einval::NextIsError => blocked += 1,
                }
            }
        }
    }
    // Supported states per set (state_flags_table): 4, 5, 5 and 7 of the 8.
    let supported_pairs = 4 * 4 + 5 * 5 + 5 * 5 + 7 * 7;
    // Only STOP_COPY -> PRE_COPY and STOP_COPY -> PRE_COPY_P2P reach ERROR, and each needs
    // its target supported: one pair with PRE_COPY alone, two with both.
    assert_eq!(blocked, 1 + 2);
    assert_eq!(ok, supported_pairs - blocked);
    // A current state the set lacks (4, 3, 3 and 1 of them), with any of the 8 requests.
    assert_eq!(cur_refused, 8 * (4 + 3 + 3 + 1));
    // A supported current state with a requested state the set lacks.
    assert_eq!(new_refused, 4 * 4 + 5 * 3 + 5 * 3 + 7);
    assert_eq!(ok + cur_refused + new_refused + blocked, 4 * 8 * 8);
}

#[test]
fn path_is_the_drivers_loop() {
    let mut walked = 0;
    let mut same_state_refusals = 0;
    for (flags, mf, from, to) in every_request() {
        let want = set_state(flags, from, to);
        let got = path(mf, st(from), st(to));
        let what = describe(mf, from, to, &want, &got);
        if from == to && !supported(flags, from) {
            // The drivers' loop never runs for from == to. A device is never in a state its
            // flags lack except ERROR (only pds enters it, and refuses every request there
            // with EIO); path refuses these, as documented.
            assert!(want.arcs.is_empty() && want.refused.is_none(), "{what}");
            let e = got.unwrap_err();
            assert!(refusal_matches(&e, Einval::CurFsm, from, to), "{what}");
            same_state_refusals += 1;
            continue;
        }
        match want.refused {
            None => {
                let got: Vec<u32> = got.unwrap().iter().map(|s| s.to_raw()).collect();
                assert_eq!(got, want.arcs, "{what}");
                walked += 1;
            }
            Some(check) => {
                // The kernel refuses only before the first arc, so refusing the whole
                // request up front is what the device would see.
                assert!(want.arcs.is_empty(), "refused midway: {what}");
                assert!(
                    refusal_matches(&got.unwrap_err(), check, from, to),
                    "{what}"
                );
            }
        }
    }
    assert_eq!(walked, (4 * 4 + 5 * 5 + 5 * 5 + 7 * 7) - 3);
    assert_eq!(same_state_refusals, 4 + 3 + 3 + 1);
}

/// Shortest number of `arcs` from `from` to `to`.
fn shortest(arcs: &BTreeSet<(u32, u32)>, from: u32, to: u32) -> Option<usize> {
    let mut dist = [usize::MAX; N];
    dist[from as usize] = 0;
    let mut queue = VecDeque::from([from]);
    while let Some(s) = queue.pop_front() {
        for &(a, b) in arcs {
            if a == s && dist[b as usize] == usize::MAX {
                dist[b as usize] = dist[s as usize] + 1;
                queue.push_back(b);
            }
        }
    }
    (dist[to as usize] != usize::MAX).then_some(dist[to as usize])
}

#[test]
fn every_arc_walked_is_one_the_kernel_requires_and_walks_are_shortest() {
    for flags in FEATURE_SETS {
        let mf = crate_flags(flags);
        let required = required_arcs(flags);
        let mut used = BTreeSet::new();
        for from in (0..VFIO_DEVICE_NUM_STATES).filter(|s| supported(flags, *s)) {
            for to in 0..VFIO_DEVICE_NUM_STATES {
                let Ok(steps) = path(mf, st(from), st(to)) else {
                    continue;
                };
                let mut prev = from;
                for s in &steps {
                    let arc = (prev, s.to_raw());
                    assert!(
                        required.contains(&arc),
                        "{mf}: {} -> {}: arc {} -> {s} is not one a driver implements",
                        st(from),
                        st(to),
                        st(prev)
                    );
                    used.insert(arc);
                    prev = s.to_raw();
                }
                assert_eq!(Some(steps.len()), shortest(&required, from, to), "{mf}");
            }
        }
        // And every arc the comment requires is one some request takes.
        assert_eq!(used, required, "{mf}");
    }
}

#[test]
fn all_features_paths_are_the_kernels_listed_combinations() {
    let all = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;
    let mf = crate_flags(all);
    let listed: BTreeSet<Vec<u32>> = COMBINATIONS_ALL_FEATURES
        .iter()
        .map(|t| walk_of(t))
        .collect();
    assert_eq!(listed.len(), 25);
    let blocked: BTreeSet<Vec<u32>> = BLOCKED_ALL_FEATURES.iter().map(|t| walk_of(t)).collect();
    let (mut multi, mut refused, mut direct) = (BTreeSet::new(), BTreeSet::new(), 0);
    for from in (0..VFIO_DEVICE_NUM_STATES).filter(|s| supported(all, *s)) {
        for to in (0..VFIO_DEVICE_NUM_STATES).filter(|s| supported(all, *s) && *s != from) {
            match path(mf, st(from), st(to)) {
                Ok(steps) if steps.len() == 1 => direct += 1,
                Ok(steps) => {
                    let mut walk = vec![from];
                    walk.extend(steps.iter().map(|s| s.to_raw()));
                    multi.insert(walk);
                }
                Err(Error::BlockedArc { .. }) => {
                    refused.insert(vec![from, to]);
                }
                Err(e) => panic!("{} -> {}: {e}", st(from), st(to)),
            }
        }
    }
    assert_eq!(multi, listed);
    assert_eq!(refused, blocked);
    assert_eq!(direct, required_arcs(all).len());
    assert_eq!(direct + multi.len() + refused.len(), 7 * 6);
}

#[test]
fn pairs_the_old_implementation_got_wrong() {
    use State::*;
    let all = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P | VFIO_MIGRATION_PRE_COPY;
    let pre_copy = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY;
    let cases = [
        (all, Running, PreCopyP2p, vec![RunningP2p, PreCopyP2p]),
        (
            all,
            Resuming,
            PreCopy,
            vec![Stop, RunningP2p, Running, PreCopy],
        ),
        (
            all,
            Resuming,
            PreCopyP2p,
            vec![Stop, RunningP2p, PreCopyP2p],
        ),
        (pre_copy, Resuming, PreCopy, vec![Stop, Running, PreCopy]),
    ];
    for (word, from, to, want) in cases {
        let flags = crate_flags(word);
        let oracle: Vec<State> = set_state(word, from.to_raw(), to.to_raw())
            .arcs
            .into_iter()
            .map(st)
            .collect();
        assert_eq!(oracle, want, "oracle, {flags}: {from} -> {to}");
        assert_eq!(
            path(flags, from, to).unwrap(),
            want,
            "{flags}: {from} -> {to}"
        );
        assert_eq!(next_step(flags, from, to).unwrap(), want[0]);
    }
}

#[test]
fn unknown_flag_bits_change_no_verdict() {
    // The kernel's checks look only at state_flags_table's bits; other bits of the device's
    // word change nothing, except that the all-ones word lets ERROR pass the flags check, where
    // the table's ERROR row and column refuse instead.
    for base in FEATURE_SETS {
        for extra in [0, 1 << 3, 1 << 31, !7u32] {
            let word = base | extra;
            let mf = MigrationFlags::from_bits(u64::from(word)).unwrap();
            assert_eq!(mf, crate_flags(base));
            for from in 0..VFIO_DEVICE_NUM_STATES {
                for to in 0..VFIO_DEVICE_NUM_STATES {
                    let kernel = vfio_mig_get_next_state(word, from, to);
                    let plain = vfio_mig_get_next_state(base, from, to);
                    assert_eq!(kernel.is_ok(), plain.is_ok(), "{word:#x}: {from} -> {to}");
                    match kernel {
                        Ok(next) => assert_eq!(next_step(mf, st(from), st(to)).unwrap(), st(next)),
                        Err(_) => assert!(next_step(mf, st(from), st(to)).is_err()),
                    }
                }
            }
        }
    }
    // Without STOP_COPY no state is valid: the kernel refuses every request (and the crate
    // refuses the flags).
    for word in [0, VFIO_MIGRATION_P2P, VFIO_MIGRATION_PRE_COPY, 6] {
        assert!(MigrationFlags::from_bits(u64::from(word)).is_err());
        for from in 0..VFIO_DEVICE_NUM_STATES {
            for to in 0..VFIO_DEVICE_NUM_STATES {
                assert_eq!(vfio_mig_get_next_state(word, from, to), Err(Einval::CurFsm));
            }
        }
    }
    // A state number past the table is refused by the range check, as from_raw refuses it.
    assert_eq!(
        vfio_mig_get_next_state(7, VFIO_DEVICE_STATE_RUNNING, VFIO_DEVICE_NUM_STATES),
        Err(Einval::NewFsm)
    );
    assert!(State::from_raw(VFIO_DEVICE_NUM_STATES).is_err());
}

#[test]
fn the_kernel_stops_at_the_error_entry_and_never_spins() {
    // REFERENCE.md claimed the kernel's skip loop can spin forever on the ERROR sentinel. Its
    // condition tests `*next_fsm != VFIO_DEVICE_STATE_ERROR` first, so it cannot: for every
    // flag word (all combinations of the three known bits, and all ones) and every pair the
    // oracle's loop ends (it panics past SPIN_GUARD skips), and reaching ERROR is -EINVAL.
    let words = [0, 1, 2, 3, 4, 5, 6, 7, !0u32];
    let mut next_is_error = 0;
    for word in words {
        for cur in 0..VFIO_DEVICE_NUM_STATES {
            for new in 0..VFIO_DEVICE_NUM_STATES {
                if vfio_mig_get_next_state(word, cur, new) == Err(Einval::NextIsError) {
                    next_is_error += 1;
                }
            }
            for new in 0..VFIO_DEVICE_NUM_STATES {
                let _ = set_state(word, cur, new);
            }
        }
    }
    // Words with STOP_COPY|PRE_COPY: STOP_COPY -> PRE_COPY (words 5, 7: 2); with P2P too,
    // STOP_COPY -> PRE_COPY_P2P (word 7: 1). The all-ones word: the same 2, plus every
    // request from or to ERROR (8 + 8 - 1), all refused at the ERROR entry.
    assert_eq!(next_is_error, 2 + 1 + 2 + 15);
    for flags in MigrationFlags::EVERY_SET {
        for s in State::ALL {
            assert!(path(flags, State::Error, s).is_err());
            assert!(path(flags, s, State::Error).is_err());
        }
    }
}

/// `vfio-core`'s simulated device walks every request as the oracle's driver loop does: the
/// same arcs in the same order, the same refusals (EINVAL, nothing done), for all four feature
/// sets. Each request runs on a fresh device brought from RUNNING to `from` (a RESUMING
/// `from` gets a complete stream first, so it can be left).
#[test]
fn the_simulated_device_walks_as_the_kernel() {
    use vfio_core::sim::SimDevice;
    use vfio_core::{MigState, MigrationFeatures, VfioMigration};

    let mut walked = 0;
    for (flags, _, from, to) in every_request() {
        if !supported(flags, from) {
            continue;
        }
        let features = MigrationFeatures::from_bits_retain(u64::from(flags));
        let sim = SimDevice::builder(0x15b3, 0x101e)
            .migration(features, b"blob".to_vec())
            .build()
            .unwrap();
        let (m_from, m_to) = (
            MigState::from_raw(from).unwrap(),
            MigState::from_raw(to).unwrap(),
        );
        if let Some(mut fd) = sim.set_migration_state(m_from).unwrap() {
            if m_from == MigState::Resuming {
                fd.write_all(&[4, 0, 0, 0, b'n', b'e', b'w', b'!']).unwrap();
            }
        }
        assert_eq!(sim.migration_state().unwrap(), m_from);
        let before = sim.migration_arcs().len();
        let result = sim.set_migration_state(m_to);
        let arcs: Vec<u32> = sim.migration_arcs()[before..]
            .iter()
            .map(|a| {
                assert!(a.succeeded);
                a.to.to_raw()
            })
            .collect();
        let want = set_state(flags, from, to);
        let what = format!(
            "flags {flags:#x}: {} -> {}: kernel {want:?}",
            st(from),
            st(to)
        );
        assert_eq!(arcs, want.arcs, "{what}");
        match want.refused {
            None => {
                assert!(result.is_ok(), "{what}: {result:?}");
                assert_eq!(sim.migration_state().unwrap(), m_to, "{what}");
            }
            Some(_) => {
                assert_eq!(result.unwrap_err().errno(), Some(libc::EINVAL), "{what}");
                assert_eq!(sim.migration_state().unwrap(), m_from, "{what}");
            }
        }
        walked += 1;
    }
    // Supported `from` states: 4, 5, 5 and 7 of them, each with all 8 requests.
    assert_eq!(walked, 8 * (4 + 5 + 5 + 7));
}
