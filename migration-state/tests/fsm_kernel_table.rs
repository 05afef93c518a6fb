// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Exhaustive check of the state machine against the kernel's table, written out here as data.
//!
//! The expected paths are computed in this file, from two independent descriptions:
//! 1. the kernel's next-hop table (`vfio_from_fsm_table`) and its per-state feature table,
//!    walked one hop at a time, skipping unsupported states and stopping at ERROR;
//! 2. the list of direct arcs each flag set allows (from the uAPI documentation), searched
//!    breadth-first, to confirm every walk is a shortest path made of real arcs.
//!
//! Neither calls the crate's `next_step`/`path`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;

use migration_state::{next_step, path, Error, MigrationFlags, State};

// Kernel numbering.
const ERROR: usize = 0;
const STOP: usize = 1;
const RUNNING: usize = 2;
const STOP_COPY: usize = 3;
const RESUMING: usize = 4;
const RUNNING_P2P: usize = 5;
const PRE_COPY: usize = 6;
const PRE_COPY_P2P: usize = 7;

/// `KERNEL_NEXT[from][to]`: the next hop the kernel's table names, before skipping.
/// Columns are in kernel numbering: ERROR, STOP, RUNNING, STOP_COPY, RESUMING, RUNNING_P2P,
/// PRE_COPY, PRE_COPY_P2P.
const KERNEL_NEXT: [[usize; 8]; 8] = [
    // from ERROR: everything is ERROR
    [ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR, ERROR],
    // from STOP
    [
        ERROR,
        STOP,
        RUNNING_P2P,
        STOP_COPY,
        RESUMING,
        RUNNING_P2P,
        RUNNING_P2P,
        RUNNING_P2P,
    ],
    // from RUNNING
    [
        ERROR,
        RUNNING_P2P,
        RUNNING,
        RUNNING_P2P,
        RUNNING_P2P,
        RUNNING_P2P,
        PRE_COPY,
        PRE_COPY,
    ],
    // from STOP_COPY
    [ERROR, STOP, STOP, STOP_COPY, STOP, STOP, ERROR, ERROR],
    // from RESUMING
    [ERROR, STOP, STOP, STOP, RESUMING, STOP, ERROR, ERROR],
    // from RUNNING_P2P
    [
        ERROR,
        STOP,
        RUNNING,
        STOP,
        STOP,
        RUNNING_P2P,
        RUNNING,
        PRE_COPY_P2P,
    ],
    // from PRE_COPY
    [
        ERROR,
        RUNNING,
        RUNNING,
        PRE_COPY_P2P,
        RUNNING,
        RUNNING,
        PRE_COPY,
        PRE_COPY_P2P,
    ],
    // from PRE_COPY_P2P
    [
        ERROR,
        RUNNING_P2P,
        RUNNING_P2P,
        STOP_COPY,
        RUNNING_P2P,
        RUNNING_P2P,
        PRE_COPY,
        PRE_COPY_P2P,
    ],
];

// Feature bits.
const F_STOP_COPY: u64 = 1;
const F_P2P: u64 = 2;
const F_PRE_COPY: u64 = 4;

/// The kernel's `state_flags_table`: features a state needs. ERROR needs every bit (never met).
const KERNEL_NEEDS: [u64; 8] = [
    u64::MAX,
    F_STOP_COPY,
    F_STOP_COPY,
    F_STOP_COPY,
    F_STOP_COPY,
    F_STOP_COPY | F_P2P,
    F_STOP_COPY | F_PRE_COPY,
    F_STOP_COPY | F_P2P | F_PRE_COPY,
];

const FLAG_SETS: [u64; 4] = [
    F_STOP_COPY,
    F_STOP_COPY | F_P2P,
    F_STOP_COPY | F_PRE_COPY,
    F_STOP_COPY | F_P2P | F_PRE_COPY,
];

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Path(Vec<usize>),
    Unsupported,
    InError,
    Blocked,
}

fn supported(flags: u64, s: usize) -> bool {
    KERNEL_NEEDS[s] & flags == KERNEL_NEEDS[s]
}

/// The kernel's walk, with the ERROR fix: stop instead of looping on the sentinel.
fn kernel_walk(flags: u64, from: usize, to: usize) -> Expected {
    if from == ERROR {
        return Expected::InError;
    }
    if !supported(flags, from) || !supported(flags, to) {
        return Expected::Unsupported;
    }
    let mut out = Vec::new();
    let mut cur = from;
    while cur != to {
        let mut next = KERNEL_NEXT[cur][to];
        while next != ERROR && !supported(flags, next) {
            next = KERNEL_NEXT[next][to];
        }
        if next == ERROR {
            return Expected::Blocked;
        }
        out.push(next);
        cur = next;
        assert!(out.len() <= 8, "reference walk loops");
    }
    Expected::Path(out)
}

/// Direct arcs a device with `flags` implements (uAPI documentation in `linux/vfio.h`).
fn arcs(flags: u64) -> Vec<(usize, usize)> {
    let p2p = flags & F_P2P != 0;
    let pre = flags & F_PRE_COPY != 0;
    let mut a = vec![
        (STOP, if p2p { RUNNING_P2P } else { RUNNING }),
        (STOP, STOP_COPY),
        (STOP, RESUMING),
        (RUNNING, if p2p { RUNNING_P2P } else { STOP }),
        (STOP_COPY, STOP),
        (RESUMING, STOP),
    ];
    if p2p {
        a.extend([(RUNNING_P2P, RUNNING), (RUNNING_P2P, STOP)]);
    }
    if pre {
        a.extend([
            (RUNNING, PRE_COPY),
            (PRE_COPY, RUNNING),
            (PRE_COPY, if p2p { PRE_COPY_P2P } else { STOP_COPY }),
        ]);
        if p2p {
            a.extend([
                (RUNNING_P2P, PRE_COPY_P2P),
                (PRE_COPY_P2P, RUNNING_P2P),
                (PRE_COPY_P2P, PRE_COPY),
                (PRE_COPY_P2P, STOP_COPY),
            ]);
        }
    }
    a
}

/// Shortest number of arcs from `from` to `to`, or None.
fn bfs_len(flags: u64, from: usize, to: usize) -> Option<usize> {
    let a = arcs(flags);
    let mut dist = [usize::MAX; 8];
    dist[from] = 0;
    let mut q = VecDeque::from([from]);
    while let Some(s) = q.pop_front() {
        for &(x, y) in &a {
            if x == s && dist[y] == usize::MAX {
                dist[y] = dist[s] + 1;
                q.push_back(y);
            }
        }
    }
    (dist[to] != usize::MAX).then_some(dist[to])
}

fn st(i: usize) -> State {
    State::from_raw(i as u32).unwrap()
}

#[test]
fn every_state_pair_and_flag_set_matches_the_kernel() {
    let mut checked = 0;
    let mut paths = 0;
    let mut blocked = 0;
    for flags in FLAG_SETS {
        let mf = MigrationFlags::from_bits(flags).unwrap();
        for from in 0..8 {
            for to in 0..8 {
                let expected = kernel_walk(flags, from, to);
                let got = path(mf, st(from), st(to));
                let first = next_step(mf, st(from), st(to));
                match &expected {
                    Expected::Path(p) => {
                        let got =
                            got.unwrap_or_else(|e| panic!("{mf}: {} -> {}: {e}", st(from), st(to)));
                        let got: Vec<usize> = got.iter().map(|s| s.to_raw() as usize).collect();
                        assert_eq!(&got, p, "{mf}: {} -> {}", st(from), st(to));
                        let want_first = p.first().copied().unwrap_or(to);
                        assert_eq!(first.unwrap().to_raw() as usize, want_first);
                        // Each hop is a real arc for this flag set, and the walk is shortest.
                        let a = arcs(flags);
                        let mut prev = from;
                        for &s in p {
                            assert!(a.contains(&(prev, s)), "{prev} -> {s} is not an arc");
                            assert!(supported(flags, s));
                            prev = s;
                        }
                        assert_eq!(Some(p.len()), bfs_len(flags, from, to));
                        paths += 1;
                    }
                    Expected::Unsupported => {
                        assert!(
                            matches!(got, Err(Error::UnsupportedState { .. })),
                            "{got:?}"
                        );
                        assert!(matches!(first, Err(Error::UnsupportedState { .. })));
                    }
                    Expected::InError => {
                        assert!(matches!(got, Err(Error::DeviceInError)));
                        assert!(matches!(first, Err(Error::DeviceInError)));
                    }
                    Expected::Blocked => {
                        assert!(
                            matches!(got, Err(Error::BlockedArc { from: f, to: t }) if f == st(from) && t == st(to)),
                            "{got:?}"
                        );
                        assert!(matches!(first, Err(Error::BlockedArc { .. })));
                        blocked += 1;
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4 * 8 * 8);
    // Supported states per flag set: 4, 5, 5, 7 (ERROR never), so 16+25+25+49 pairs, minus
    // the blocked ones: none, none, STOP_COPY/RESUMING -> PRE_COPY (2), and those to
    // PRE_COPY and PRE_COPY_P2P (4).
    assert_eq!(blocked, 2 + 4);
    assert_eq!(paths, 16 + 25 + 25 + 49 - blocked);
}

#[test]
fn blocked_requests_are_refused_not_spun() {
    for (from, to) in [
        (State::StopCopy, State::PreCopy),
        (State::StopCopy, State::PreCopyP2p),
        (State::Resuming, State::PreCopy),
        (State::Resuming, State::PreCopyP2p),
    ] {
        let r = path(MigrationFlags::ALL, from, to);
        assert!(
            matches!(r, Err(Error::BlockedArc { from: f, to: t }) if f == from && t == to),
            "{from} -> {to}: {r:?}"
        );
    }
    // Requesting ERROR is never valid, nor is leaving it.
    assert!(matches!(
        path(MigrationFlags::ALL, State::Running, State::Error),
        Err(Error::UnsupportedState {
            state: State::Error,
            ..
        })
    ));
    assert!(matches!(
        path(MigrationFlags::ALL, State::Error, State::Stop),
        Err(Error::DeviceInError)
    ));
}

#[test]
fn no_path_revisits_a_state() {
    for flags in MigrationFlags::EVERY_SET {
        for from in State::ALL {
            for to in State::ALL {
                if let Ok(p) = path(flags, from, to) {
                    let mut seen = vec![from];
                    for s in &p {
                        assert!(!seen.contains(s), "{flags}: {from} -> {to} loops: {p:?}");
                        seen.push(*s);
                    }
                    assert!(p.len() < State::ALL.len());
                }
            }
        }
    }
}
