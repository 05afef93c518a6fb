// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every migration request mtty's flags allow, replayed on a device in the `from` state, and
//! checked against what Linux v6.12.117 answers: the verdict, whether a data fd comes back,
//! the state after, and which of the fds handed out before still work.
//!
//! [`ROWS`] is the table of the workspace's note on mtty's (from, to) pairs, transcribed row
//! by row: it was computed from the kernel source (`drivers/vfio/vfio_main.c`,
//! `vfio_mig_get_next_state()`; `samples/vfio-mdev/mtty.c`, `mtty_set_state()`,
//! `mtty_step_state()`) independently of the table the simulator walks, so the simulator is
//! held to the kernel and not to itself. The rows from ERROR are left out: mtty never enters
//! ERROR (`mtty_set_state()` never records it).

use super::{expect_errno, Failure, Outcome, Subject};
use crate::device::VfioMigration;
use crate::migration::{MigState, MigState::*, MigrationDataFd};

/// One request: its number in the note, `from -> to`, whether the kernel answers 0 (else
/// EINVAL, with nothing done), whether a new data fd comes back, and the arcs the driver takes
/// (the states entered, in order).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub(crate) n: u32,
    pub(crate) from: MigState,
    pub(crate) to: MigState,
    pub(crate) ok: bool,
    pub(crate) new_fd: bool,
    pub(crate) arcs: &'static [MigState],
}

/// The 56 requests between mtty's seven states and towards ERROR.
#[rustfmt::skip]
pub(crate) const ROWS: [Row; 56] = [
    Row { n: 1, from: Stop, to: Stop, ok: true, new_fd: false, arcs: &[] },
    Row { n: 2, from: Stop, to: Running, ok: true, new_fd: false, arcs: &[RunningP2p, Running] },
    Row { n: 3, from: Stop, to: StopCopy, ok: true, new_fd: true, arcs: &[StopCopy] },
    Row { n: 4, from: Stop, to: Resuming, ok: true, new_fd: true, arcs: &[Resuming] },
    Row { n: 5, from: Stop, to: RunningP2p, ok: true, new_fd: false, arcs: &[RunningP2p] },
    Row { n: 6, from: Stop, to: PreCopy, ok: true, new_fd: true, arcs: &[RunningP2p, Running, PreCopy] },
    Row { n: 7, from: Stop, to: PreCopyP2p, ok: true, new_fd: true, arcs: &[RunningP2p, PreCopyP2p] },
    Row { n: 8, from: Stop, to: Error, ok: false, new_fd: false, arcs: &[] },
    Row { n: 9, from: Running, to: Stop, ok: true, new_fd: false, arcs: &[RunningP2p, Stop] },
    Row { n: 10, from: Running, to: Running, ok: true, new_fd: false, arcs: &[] },
    Row { n: 11, from: Running, to: StopCopy, ok: true, new_fd: true, arcs: &[RunningP2p, Stop, StopCopy] },
    Row { n: 12, from: Running, to: Resuming, ok: true, new_fd: true, arcs: &[RunningP2p, Stop, Resuming] },
    Row { n: 13, from: Running, to: RunningP2p, ok: true, new_fd: false, arcs: &[RunningP2p] },
    Row { n: 14, from: Running, to: PreCopy, ok: true, new_fd: true, arcs: &[PreCopy] },
    Row { n: 15, from: Running, to: PreCopyP2p, ok: true, new_fd: true, arcs: &[RunningP2p, PreCopyP2p] },
    Row { n: 16, from: Running, to: Error, ok: false, new_fd: false, arcs: &[] },
    Row { n: 17, from: StopCopy, to: Stop, ok: true, new_fd: false, arcs: &[Stop] },
    Row { n: 18, from: StopCopy, to: Running, ok: true, new_fd: false, arcs: &[Stop, RunningP2p, Running] },
    Row { n: 19, from: StopCopy, to: StopCopy, ok: true, new_fd: false, arcs: &[] },
    Row { n: 20, from: StopCopy, to: Resuming, ok: true, new_fd: true, arcs: &[Stop, Resuming] },
    Row { n: 21, from: StopCopy, to: RunningP2p, ok: true, new_fd: false, arcs: &[Stop, RunningP2p] },
    Row { n: 22, from: StopCopy, to: PreCopy, ok: false, new_fd: false, arcs: &[] },
    Row { n: 23, from: StopCopy, to: PreCopyP2p, ok: false, new_fd: false, arcs: &[] },
    Row { n: 24, from: StopCopy, to: Error, ok: false, new_fd: false, arcs: &[] },
    Row { n: 25, from: Resuming, to: Stop, ok: true, new_fd: false, arcs: &[Stop] },
    Row { n: 26, from: Resuming, to: Running, ok: true, new_fd: false, arcs: &[Stop, RunningP2p, Running] },
    Row { n: 27, from: Resuming, to: StopCopy, ok: true, new_fd: true, arcs: &[Stop, StopCopy] },
    Row { n: 28, from: Resuming, to: Resuming, ok: true, new_fd: false, arcs: &[] },
    Row { n: 29, from: Resuming, to: RunningP2p, ok: true, new_fd: false, arcs: &[Stop, RunningP2p] },
    Row { n: 30, from: Resuming, to: PreCopy, ok: true, new_fd: true, arcs: &[Stop, RunningP2p, Running, PreCopy] },
    Row { n: 31, from: Resuming, to: PreCopyP2p, ok: true, new_fd: true, arcs: &[Stop, RunningP2p, PreCopyP2p] },
    Row { n: 32, from: Resuming, to: Error, ok: false, new_fd: false, arcs: &[] },
    Row { n: 33, from: RunningP2p, to: Stop, ok: true, new_fd: false, arcs: &[Stop] },
    Row { n: 34, from: RunningP2p, to: Running, ok: true, new_fd: false, arcs: &[Running] },
    Row { n: 35, from: RunningP2p, to: StopCopy, ok: true, new_fd: true, arcs: &[Stop, StopCopy] },
    Row { n: 36, from: RunningP2p, to: Resuming, ok: true, new_fd: true, arcs: &[Stop, Resuming] },
    Row { n: 37, from: RunningP2p, to: RunningP2p, ok: true, new_fd: false, arcs: &[] },
    Row { n: 38, from: RunningP2p, to: PreCopy, ok: true, new_fd: true, arcs: &[Running, PreCopy] },
    Row { n: 39, from: RunningP2p, to: PreCopyP2p, ok: true, new_fd: true, arcs: &[PreCopyP2p] },
    Row { n: 40, from: RunningP2p, to: Error, ok: false, new_fd: false, arcs: &[] },
    Row { n: 41, from: PreCopy, to: Stop, ok: true, new_fd: false, arcs: &[Running, RunningP2p, Stop] },
    Row { n: 42, from: PreCopy, to: Running, ok: true, new_fd: false, arcs: &[Running] },
    Row { n: 43, from: PreCopy, to: StopCopy, ok: true, new_fd: false, arcs: &[PreCopyP2p, StopCopy] },
    Row { n: 44, from: PreCopy, to: Resuming, ok: true, new_fd: true, arcs: &[Running, RunningP2p, Stop, Resuming] },
    Row { n: 45, from: PreCopy, to: RunningP2p, ok: true, new_fd: false, arcs: &[Running, RunningP2p] },
    Row { n: 46, from: PreCopy, to: PreCopy, ok: true, new_fd: false, arcs: &[] },
    Row { n: 47, from: PreCopy, to: PreCopyP2p, ok: true, new_fd: false, arcs: &[PreCopyP2p] },
    Row { n: 48, from: PreCopy, to: Error, ok: false, new_fd: false, arcs: &[] },
    Row { n: 49, from: PreCopyP2p, to: Stop, ok: true, new_fd: false, arcs: &[RunningP2p, Stop] },
    Row { n: 50, from: PreCopyP2p, to: Running, ok: true, new_fd: false, arcs: &[RunningP2p, Running] },
    Row { n: 51, from: PreCopyP2p, to: StopCopy, ok: true, new_fd: false, arcs: &[StopCopy] },
    Row { n: 52, from: PreCopyP2p, to: Resuming, ok: true, new_fd: true, arcs: &[RunningP2p, Stop, Resuming] },
    Row { n: 53, from: PreCopyP2p, to: RunningP2p, ok: true, new_fd: false, arcs: &[RunningP2p] },
    Row { n: 54, from: PreCopyP2p, to: PreCopy, ok: true, new_fd: false, arcs: &[PreCopy] },
    Row { n: 55, from: PreCopyP2p, to: PreCopyP2p, ok: true, new_fd: false, arcs: &[] },
    Row { n: 56, from: PreCopyP2p, to: Error, ok: false, new_fd: false, arcs: &[] },
];

/// The arcs after which mtty's earlier fds answer ENODEV (`mtty_step_state()` calls
/// `mtty_disable_files()` on them).
const CLOSING_ARCS: [(MigState, MigState); 4] = [
    (PreCopy, Running),
    (PreCopyP2p, RunningP2p),
    (StopCopy, Stop),
    (Resuming, Stop),
];

impl Row {
    /// Whether the walk takes an arc that disables the files open before it.
    fn closes_files(&self) -> bool {
        let mut prev = self.from;
        self.arcs.iter().any(|&next| {
            let closing = CLOSING_ARCS.contains(&(prev, next));
            prev = next;
            closing
        })
    }
}

/// Whether a data fd handed out before still works: a saving fd reads (ENODEV once stale); a
/// resuming fd that holds a whole stream refuses one more byte with ENOMEM (ENODEV once stale:
/// a disabled file's position is back at 0, so the size check passes).
fn fd_is_live(fd: &mut MigrationDataFd, resuming: bool) -> Result<bool, Failure> {
    use std::io::{Read, Write};
    let result = if resuming {
        fd.write(&[0])
    } else {
        fd.read(&mut [0u8; 128])
    };
    match result {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(e) if resuming && e.raw_os_error() == Some(libc::ENOMEM) => Ok(true),
        Ok(_) if !resuming => Ok(true),
        other => Err(Failure::new(format!(
            "unexpected answer of an old fd: {other:?}"
        ))),
    }
}

/// Put `d` in `from` (from RUNNING after a reset, along the kernel's path), writing `stream`
/// when `from` is RESUMING so the device can leave it; returns the fd `from` handed out.
fn reach(
    d: &dyn VfioMigration,
    from: MigState,
    stream: &[u8],
) -> Result<Option<MigrationDataFd>, Failure> {
    d.reset()?;
    ensure_eq!(d.migration_state()?, Running, "after reset");
    if from == Running {
        return Ok(None);
    }
    let mut fd = d.set_migration_state(from)?;
    ensure_eq!(d.migration_state()?, from);
    ensure_eq!(fd.is_some(), from.has_data_fd(), "reaching {from:?}");
    if from == Resuming {
        if let Some(fd) = fd.as_mut() {
            fd.write_all(stream)?;
        }
    }
    Ok(fd)
}

/// Replay one request on `d`.
fn replay(d: &dyn VfioMigration, row: &Row, stream: &[u8]) -> Outcome {
    let mut old = reach(d, row.from, stream)?;
    match d.set_migration_state(row.to) {
        Ok(fd) if row.ok => {
            ensure_eq!(fd.is_some(), row.new_fd, "a new data fd");
            if let Some(mut fd) = fd.filter(|_| row.to.is_saving()) {
                ensure!(fd_is_live(&mut fd, false)?, "the new saving fd reads");
            }
        }
        result if !row.ok => expect_errno(result, libc::EINVAL)?,
        result => return Err(Failure::new(format!("expected 0, got {result:?}"))),
    }
    let after = if row.ok { row.to } else { row.from };
    ensure_eq!(d.migration_state()?, after, "the state after");
    if let Some(fd) = old.as_mut() {
        let live = fd_is_live(fd, row.from == Resuming)?;
        ensure_eq!(
            live,
            !(row.ok && row.closes_files()),
            "the fd {:?} handed out",
            row.from
        );
    }
    Ok(())
}

/// Every (from, to) request of the transcribed table, each from a device reset and walked to `from`; a
/// RESUMING `from` gets a complete stream (the bytes this device's STOP_COPY reads to its end)
/// first, as the note's verdicts assume. All differences are reported together.
pub fn every_request_walks_as_the_kernel_answers(s: &Subject) -> Outcome {
    let d = s.device.as_ref();
    let stream = super::mtty::whole_stream(d)?;
    let mut wrong = Vec::new();
    for row in &ROWS {
        if let Err(f) = replay(d, row, &stream) {
            wrong.push(format!("#{} {:?} -> {:?}: {f}", row.n, row.from, row.to));
        }
    }
    d.reset()?;
    ensure!(
        wrong.is_empty(),
        "{} of {} requests differ from the kernel's answers:\n{}",
        wrong.len(),
        ROWS.len(),
        wrong.join("\n")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transcription has every pair once and the counts of the note's summary.
    #[test]
    fn the_table_is_the_note_s() {
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in ROWS.iter().enumerate() {
            assert_eq!(r.n as usize, i + 1);
            assert!(seen.insert((r.from.index(), r.to.index())), "{r:?}");
            assert_eq!(
                r.arcs.last().copied().unwrap_or(r.from),
                if r.ok { r.to } else { r.from }
            );
        }
        let refused = ROWS.iter().filter(|r| !r.ok).count();
        let same = ROWS.iter().filter(|r| r.from == r.to).count();
        let single = ROWS.iter().filter(|r| r.arcs.len() == 1).count();
        let multi = ROWS.iter().filter(|r| r.arcs.len() > 1).count();
        assert_eq!((refused, same, single, multi), (7 + 2, 7, 15, 25));
        assert!(
            ROWS[29].ok && ROWS[29].arcs.len() == 4,
            "RESUMING -> PRE_COPY walks"
        );
    }
}
