// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Migration v2 of the simulated device: the kernel's state walk, and a device-internal blob
//! streamed through the data fd (a socket pair) while saving and read back when resuming.
//!
//! Stream format (device-internal, opaque to users): frames of a little-endian `u32` length
//! then that many bytes. PRE_COPY sends one frame with the state at entry; STOP_COPY sends one
//! with the final state and ends the stream. RESUMING keeps the last complete frame. A frame is
//! in the stream by the time the state change returns, as a driver's initial PRE_COPY data is.
//!
//! A failing arc leaves the device where the driver leaves it. Linux drivers (mlx5, hisi_acc,
//! pds) step arcs in a loop and, when one fails, stop with `device_state` at the last state
//! they reached; some failures (a resume stream the device rejects) leave ERROR, which only a
//! reset leaves. [`ArcFailure`] chooses which one an injected failure models.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use crate::error::{errno, Error, Result};
use crate::migration::fsm::KernelHop;
use crate::migration::{MigState, MigState as S, MigrationDataFd, MigrationFeatures as F};

use super::builder::SIM_MAX_BLOB;

/// The next single arc from `cur` towards `target`: the kernel's `vfio_mig_get_next_state()`
/// ([`crate::migration::fsm`]); `None` where the kernel answers EINVAL.
pub(crate) fn next_state(cur: MigState, target: MigState, features: F) -> Option<MigState> {
    match features.next_state(cur, target) {
        KernelHop::Next(next) => Some(next),
        _ => None,
    }
}

/// Where an injected migration arc failure leaves the device
/// ([`SimDevice::fail_migration_arc`](super::SimDevice::fail_migration_arc)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArcFailure {
    /// The device stays in the arc's source state, the last one it reached (what mlx5,
    /// hisi_acc and pds do when a step fails).
    StaysInSource,
    /// The device enters ERROR and its data fds stop working; only a reset leaves it.
    EntersError,
}

/// One single-state arc the device was asked to take, in order
/// ([`SimDevice::migration_arcs`](super::SimDevice::migration_arcs)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationArc {
    /// The state the device was in.
    pub from: MigState,
    /// The state the arc leads to.
    pub to: MigState,
    /// Whether the device took it.
    pub succeeded: bool,
}

/// An injected arc failure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ArcFault {
    pub(crate) from: MigState,
    pub(crate) to: MigState,
    pub(crate) errno: i32,
    pub(crate) leaves: ArcFailure,
}

/// The simulated device's migration state.
#[derive(Debug)]
pub(crate) struct MigSim {
    pub(crate) features: F,
    pub(crate) state: MigState,
    pub(crate) blob: Vec<u8>,
    /// Injected failure of one arc, every time it is taken, until cleared.
    pub(crate) fault: Option<ArcFault>,
    /// Every arc attempted, in order.
    pub(crate) arcs: Vec<MigrationArc>,
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

/// Write what the (non-blocking) socket takes now; returns the bytes written. A reader that
/// went away counts as everything written: the device does not care.
fn write_now(dev: &UnixStream, bytes: &[u8]) -> usize {
    let mut done = 0;
    while let Some(rest) = bytes.get(done..).filter(|r| !r.is_empty()) {
        match (&*dev).write(rest) {
            Ok(0) => return bytes.len(),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return done,
            Err(_) => return bytes.len(),
        }
    }
    done
}

/// Write all of `bytes` to the non-blocking socket, waiting for room.
fn write_blocking(dev: &UnixStream, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        done += write_now(dev, bytes.get(done..).unwrap_or_default());
        if done < bytes.len() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
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
            fault: None,
            arcs: Vec::new(),
            saving: None,
            resuming: None,
        }
    }

    /// Put `bytes` on the saving stream after whatever was queued before; with `end`, the
    /// stream ends once they are written. What the socket buffer takes is written now (a frame
    /// of at most `SIM_MAX_BLOB` bytes always fits); anything left is written by a thread.
    fn send(&mut self, bytes: Vec<u8>, end: bool) -> std::io::Result<()> {
        let saving = self.saving.as_mut().ok_or_else(|| errno(libc::EBADF))?;
        let dev = saving.dev.as_ref().ok_or_else(|| errno(libc::EBADF))?;
        let mut done = 0;
        if saving.last.as_ref().is_none_or(JoinHandle::is_finished) {
            done = write_now(dev, &bytes);
        }
        if done < bytes.len() {
            let writer = dev.try_clone()?;
            let prev = saving.last.take();
            saving.last = Some(std::thread::spawn(move || {
                if let Some(prev) = prev {
                    let _ = prev.join();
                }
                write_blocking(&writer, bytes.get(done..).unwrap_or_default());
            }));
        }
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
                dev.set_nonblocking(true)?;
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
            let from = self.state;
            let next =
                next_state(from, target, self.features).ok_or_else(|| err(errno(libc::EINVAL)))?;
            let injected = self.fault.filter(|f| f.from == from && f.to == next);
            let result = match injected {
                Some(f) => Err((errno(f.errno), f.leaves)),
                None => self.step(next).map_err(|e| (e, ArcFailure::EntersError)),
            };
            self.arcs.push(MigrationArc {
                from,
                to: next,
                succeeded: result.is_ok(),
            });
            match result {
                Ok(f) => fd = f.or(fd),
                Err((e, leaves)) => {
                    if leaves == ArcFailure::EntersError {
                        self.state = S::Error;
                        self.saving = None;
                        self.resuming = None;
                    }
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
        // vfio_from_fsm_table[STOP_COPY][PRE_COPY] is ERROR: EINVAL.
        assert_eq!(next_state(S::StopCopy, S::PreCopy, all), None);
        assert_eq!(next_state(S::StopCopy, S::PreCopyP2p, all), None);
        // RESUMING reaches every state through STOP (vfio_from_fsm_table row RESUMING).
        assert_eq!(next_state(S::Resuming, S::PreCopyP2p, all), Some(S::Stop));
        assert_eq!(next_state(S::Resuming, S::PreCopy, all), Some(S::Stop));
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
