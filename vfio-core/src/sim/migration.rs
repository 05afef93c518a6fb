// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Migration v2 of the simulated device: the kernel's state walk, and a device-internal blob
//! streamed through the data fd (a socket pair) while saving and read back when resuming.
//!
//! Stream format (device-internal, opaque to users): frames of a little-endian `u32` length
//! then that many bytes. PRE_COPY sends one frame with the state at entry; STOP_COPY sends one
//! with the final state and ends the stream. RESUMING keeps the last complete frame.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::error::{errno, Error, Result};
use crate::migration::{MigState, MigState as S, MigrationDataFd, MigrationFeatures as F};

use super::builder::SIM_MAX_BLOB;

/// The next state on the way from `cur` to `target` (Linux's `vfio_from_fsm_table`).
fn table(cur: MigState, target: MigState) -> MigState {
    if cur == target {
        return cur;
    }
    match (cur, target) {
        (S::Error, _) | (_, S::Error) => S::Error,
        (S::Stop, S::StopCopy) => S::StopCopy,
        (S::Stop, S::Resuming) => S::Resuming,
        (S::Stop, _) => S::RunningP2p,
        (S::Running, S::PreCopy) => S::PreCopy,
        (S::Running, _) => S::RunningP2p,
        (S::PreCopy, S::PreCopyP2p | S::StopCopy) => S::PreCopyP2p,
        (S::PreCopy, _) => S::Running,
        (S::PreCopyP2p, S::PreCopy) => S::PreCopy,
        (S::PreCopyP2p, S::StopCopy) => S::StopCopy,
        (S::PreCopyP2p, _) => S::RunningP2p,
        (S::StopCopy | S::Resuming, S::PreCopy | S::PreCopyP2p) => S::Error,
        (S::StopCopy | S::Resuming, _) => S::Stop,
        (S::RunningP2p, S::Running | S::PreCopy) => S::Running,
        (S::RunningP2p, S::PreCopyP2p) => S::PreCopyP2p,
        (S::RunningP2p, _) => S::Stop,
    }
}

/// Features a state needs (`state_flags_table`); `None` for ERROR, which is never allowed.
fn needs(state: MigState) -> Option<F> {
    match state {
        S::Error => None,
        S::Stop | S::Running | S::StopCopy | S::Resuming => Some(F::STOP_COPY),
        S::RunningP2p => Some(F::STOP_COPY | F::P2P),
        S::PreCopy => Some(F::STOP_COPY | F::PRE_COPY),
        S::PreCopyP2p => Some(F::STOP_COPY | F::PRE_COPY | F::P2P),
    }
}

fn supported(state: MigState, features: F) -> bool {
    needs(state).is_some_and(|n| features.contains(n))
}

/// The next single arc from `cur` towards `target`, skipping states the device does not
/// support. Unlike Linux's loop, which can spin on the ERROR entry, this stops at ERROR and
/// refuses (EINVAL).
pub(crate) fn next_state(cur: MigState, target: MigState, features: F) -> Option<MigState> {
    if !supported(cur, features) || !supported(target, features) {
        return None;
    }
    let mut next = table(cur, target);
    // Each hop moves along a finite table; bound the walk by the number of states.
    for _ in 0..MigState::ALL.len() {
        if next == S::Error {
            return None;
        }
        if supported(next, features) {
            return Some(next);
        }
        next = table(next, target);
    }
    None
}

/// The simulated device's migration state.
#[derive(Debug)]
pub(crate) struct MigSim {
    pub(crate) features: F,
    pub(crate) state: MigState,
    pub(crate) blob: Vec<u8>,
    /// Saving: the device's end of the stream, a handle on the user's end (to switch it
    /// between PRE_COPY's non-blocking and STOP_COPY's blocking reads), the last writer.
    saving: Option<Saving>,
    /// Resuming: the device's (non-blocking) end.
    resuming: Option<UnixStream>,
}

/// A saving stream in progress.
#[derive(Debug)]
struct Saving {
    /// The device's end; dropped once the final frame is queued.
    dev: Option<UnixStream>,
    /// A handle on the user's end (same open file), to switch its blocking mode.
    user: UnixStream,
    /// The last queued writer; each writer joins the one before it.
    last: Option<JoinHandle<()>>,
}

fn frame(blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + blob.len());
    out.extend_from_slice(&(blob.len() as u32).to_le_bytes());
    out.extend_from_slice(blob);
    out
}

/// The last complete frame of `stream`, or `None` if it holds none or ends mid-frame.
fn last_frame(stream: &[u8]) -> Option<Vec<u8>> {
    let mut rest = stream;
    let mut last = None;
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        if len > SIM_MAX_BLOB {
            return None;
        }
        let body = rest.get(4..4 + len)?;
        last = Some(body.to_vec());
        rest = rest.get(4 + len..)?;
    }
    last
}

impl MigSim {
    pub(crate) fn new(features: F, blob: Vec<u8>) -> Self {
        MigSim {
            features,
            state: S::Running,
            blob,
            saving: None,
            resuming: None,
        }
    }

    /// Queue `bytes` on the saving stream after whatever was queued before; with `end`, the
    /// stream ends once they are written.
    fn send(&mut self, bytes: Vec<u8>, end: bool) -> std::io::Result<()> {
        let saving = self.saving.as_mut().ok_or_else(|| errno(libc::EBADF))?;
        let dev = saving.dev.as_ref().ok_or_else(|| errno(libc::EBADF))?;
        let mut writer = dev.try_clone()?;
        let prev = saving.last.take();
        saving.last = Some(std::thread::spawn(move || {
            if let Some(prev) = prev {
                let _ = prev.join();
            }
            // The reader may have gone away; the device does not care.
            let _ = writer.write_all(&bytes);
        }));
        if end {
            saving.dev = None;
        }
        Ok(())
    }

    /// One arc of the walk.
    fn step(&mut self, next: MigState) -> std::io::Result<Option<MigrationDataFd>> {
        let cur = self.state;
        let mut out = None;
        match (cur, next) {
            (S::Running | S::RunningP2p, S::PreCopy | S::PreCopyP2p) | (S::Stop, S::StopCopy) => {
                let (dev, user) = UnixStream::pair()?;
                let ctl = user.try_clone()?;
                ctl.set_nonblocking(next != S::StopCopy)?;
                self.saving = Some(Saving {
                    dev: Some(dev),
                    user: ctl,
                    last: None,
                });
                let is_stop_copy = next == S::StopCopy;
                self.send(frame(&self.blob), is_stop_copy)?;
                out = Some(MigrationDataFd::new(File::from(
                    std::os::fd::OwnedFd::from(user),
                )));
            }
            (S::PreCopy | S::PreCopyP2p, S::StopCopy) => {
                if let Some(saving) = &self.saving {
                    saving.user.set_nonblocking(false)?;
                }
                self.send(frame(&self.blob), true)?;
            }
            (S::Stop, S::Resuming) => {
                let (dev, user) = UnixStream::pair()?;
                dev.set_nonblocking(true)?;
                self.resuming = Some(dev);
                out = Some(MigrationDataFd::new(File::from(
                    std::os::fd::OwnedFd::from(user),
                )));
            }
            (S::Resuming, S::Stop) => {
                let mut dev = self.resuming.take().ok_or_else(|| errno(libc::EBADF))?;
                let mut stream = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match dev.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => stream.extend_from_slice(buf.get(..n).unwrap_or_default()),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                    if stream.len() > 2 * (SIM_MAX_BLOB + 4) {
                        return Err(errno(libc::EINVAL));
                    }
                }
                self.blob = last_frame(&stream).ok_or_else(|| errno(libc::EINVAL))?;
            }
            (S::StopCopy, S::Stop) | (S::PreCopy | S::PreCopyP2p, S::Running | S::RunningP2p) => {
                self.saving = None;
            }
            _ => {}
        }
        self.state = next;
        Ok(out)
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` SET: walk to `target` one arc at a time. A
    /// failing arc leaves the device in ERROR, as a driver whose step failed does.
    pub(crate) fn set_state(&mut self, target: MigState) -> Result<Option<MigrationDataFd>> {
        let err = |e: std::io::Error| Error::SetMigrationState {
            requested: target,
            source: e,
        };
        if target == S::Error {
            return Err(err(errno(libc::EINVAL)));
        }
        let mut fd = None;
        while self.state != target {
            let next = next_state(self.state, target, self.features)
                .ok_or_else(|| err(errno(libc::EINVAL)))?;
            match self.step(next) {
                Ok(f) => fd = f.or(fd),
                Err(e) => {
                    self.state = S::Error;
                    self.saving = None;
                    self.resuming = None;
                    return Err(err(e));
                }
            }
        }
        Ok(fd)
    }

    /// Reset returns the device to RUNNING and drops any stream.
    pub(crate) fn reset(&mut self) {
        self.state = S::Running;
        self.saving = None;
        self.resuming = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_arcs_match_the_uapi() {
        let all = F::STOP_COPY | F::P2P | F::PRE_COPY;
        assert_eq!(next_state(S::Running, S::Stop, all), Some(S::RunningP2p));
        assert_eq!(next_state(S::Running, S::Stop, F::STOP_COPY), Some(S::Stop));
        assert_eq!(
            next_state(S::Stop, S::Running, F::STOP_COPY),
            Some(S::Running)
        );
        assert_eq!(
            next_state(S::PreCopy, S::StopCopy, all),
            Some(S::PreCopyP2p)
        );
        assert_eq!(
            next_state(S::PreCopy, S::StopCopy, F::STOP_COPY | F::PRE_COPY),
            Some(S::StopCopy)
        );
        assert_eq!(
            next_state(S::Running, S::StopCopy, all),
            Some(S::RunningP2p)
        );
    }

    #[test]
    fn blocked_and_unsupported_arcs_are_refused() {
        let all = F::STOP_COPY | F::P2P | F::PRE_COPY;
        // STOP_COPY -> PRE_COPY is blocked: Linux's loop would spin on ERROR here.
        assert_eq!(next_state(S::StopCopy, S::PreCopy, all), None);
        assert_eq!(next_state(S::Resuming, S::PreCopyP2p, all), None);
        assert_eq!(next_state(S::Running, S::PreCopy, F::STOP_COPY), None);
        assert_eq!(next_state(S::Running, S::RunningP2p, F::STOP_COPY), None);
    }

    #[test]
    fn frames_keep_the_last_complete_one() {
        let mut s = frame(b"one");
        s.extend(frame(b"three"));
        assert_eq!(last_frame(&s), Some(b"three".to_vec()));
        s.pop();
        assert_eq!(last_frame(&s), None);
        assert_eq!(last_frame(&[]), None);
    }
}
