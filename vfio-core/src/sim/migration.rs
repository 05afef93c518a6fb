// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Migration v2 of the simulated device: the kernel's state walk, a driver's migration files,
//! and the device-internal state they carry.
//!
//! The walk is the kernel's (`vfio_mig_get_next_state()`, [`crate::migration::fsm`]) taken
//! one arc at a time in a loop, as `mtty_set_state()` (Linux v6.12.117
//! `samples/vfio-mdev/mtty.c`) takes it: a refusal changes nothing, and a failing arc stops the
//! walk with the device in the state before that arc. The files follow mtty's rules
//! (`mtty_step_state()`, `mtty_save_device_data()`, `mtty_save_read()`,
//! `mtty_resume_write()`, `mtty_precopy_ioctl()`, `mtty_disable_files()`):
//!
//! - RUNNING -> PRE_COPY, RUNNING_P2P -> PRE_COPY_P2P and STOP -> STOP_COPY create the saving
//!   file, holding the device's initial data; entering STOP_COPY appends its final data, to the
//!   pre-copy file when there is one (and then no new fd is returned). STOP -> RESUMING creates
//!   the resuming file.
//! - PRE_COPY -> RUNNING, PRE_COPY_P2P -> RUNNING_P2P, STOP_COPY -> STOP, a successful
//!   RESUMING -> STOP and a reset disable the files: their fds then answer `ENODEV`.
//! - A read returns what is left, up to the buffer's size; with nothing left it returns 0, or
//!   `ENOMSG` in PRE_COPY where the profile says so ([`PreCopyEnd`]).
//! - `VFIO_MIG_GET_PRECOPY_INFO` answers `EINVAL` outside the pre-copy states (checked
//!   first), `ENODEV` for a disabled file, else the unread initial and dirty bytes.
//! - A resume write past the profile's stream size is `ENOMEM` (nothing taken); RESUMING ->
//!   STOP loads the written stream and, when the device refuses it, fails with the device
//!   still in RESUMING and the fd still writable (or in ERROR where the profile says so).
//!
//! What the files carry is the device's business ([`DeviceContent`]): the generic profile
//! streams an opaque blob in frames ([`Blob`]); the mtty profile streams mtty's exact bytes.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

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
/// ([`SimDevice::fail_migration_arc`](super::SimDevice::fail_migration_arc)), or a resume
/// stream the device refuses ([`SimDeviceBuilder::resume_failure`](super::SimDeviceBuilder::resume_failure)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArcFailure {
    /// The device stays in the arc's source state, the last one it reached, its files as they
    /// were (what mtty, mlx5, hisi_acc and pds do when a step fails).
    StaysInSource,
    /// The device enters ERROR and its data fds stop working; only a reset leaves it.
    EntersError,
}

/// How a saving fd answers a read in PRE_COPY once everything available was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreCopyEnd {
    /// `ENOMSG`, as the uAPI asks (`mlx5vf_save_read()`).
    #[default]
    Enomsg,
    /// `read() == 0`, as mtty answers (`mtty_save_read()`).
    ZeroRead,
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

/// The device-internal state a migration stream carries, and how the device takes it back.
pub(crate) trait DeviceContent {
    /// What a new saving file starts with (mtty: the header).
    fn initial_data(&self) -> Vec<u8>;
    /// What entering STOP_COPY appends to the saving file (mtty: the ports).
    fn final_data(&self) -> Vec<u8>;
    /// What a saving file made by STOP -> STOP_COPY holds: the initial data, then the final.
    fn stop_copy_data(&self) -> Vec<u8> {
        let mut data = self.initial_data();
        data.extend_from_slice(&self.final_data());
        data
    }
    /// Take a resume stream at RESUMING -> STOP; the errno when the device refuses it.
    fn load(&mut self, stream: &[u8]) -> std::result::Result<(), i32>;
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`'s `stop_copy_length`.
    fn stop_copy_length(&self) -> u64;
}

/// How the files answer, per profile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamRules {
    /// PRE_COPY's answer once everything available was read.
    pub(crate) pre_copy_end: PreCopyEnd,
    /// The most bytes a resume stream may have: a write past it is `ENOMEM`.
    pub(crate) resume_limit: usize,
    /// Where a refused resume stream leaves the device.
    pub(crate) load_failure: ArcFailure,
    /// mtty's header check on the write that completes the 24-byte header, for a device of
    /// this many ports (`mtty_resume_write()`).
    pub(crate) mtty_header: Option<u32>,
}

/// The generic profile's resume streams may be this long (many PRE_COPY frames of the
/// largest blob).
pub(crate) const FRAMES_RESUME_LIMIT: usize = 64 * (SIM_MAX_BLOB + 4);

impl StreamRules {
    /// The generic profile: frames of an opaque blob, `ENOMSG` at PRE_COPY's temporary end.
    pub(crate) fn frames(pre_copy_end: PreCopyEnd, load_failure: ArcFailure) -> Self {
        StreamRules {
            pre_copy_end,
            resume_limit: FRAMES_RESUME_LIMIT,
            load_failure,
            mtty_header: None,
        }
    }
}

/// The generic profile's device state: an opaque blob, streamed as frames of a little-endian
/// `u32` length and that many bytes. A saving file starts with one frame of the blob as it was
/// then; every change while in PRE_COPY appends one (reported as dirty bytes); entering
/// STOP_COPY appends the final one. RESUMING keeps the last complete frame.
#[derive(Debug, Clone, Default)]
pub(crate) struct Blob(pub(crate) Vec<u8>);

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

impl DeviceContent for Blob {
    fn initial_data(&self) -> Vec<u8> {
        frame(&self.0)
    }

    fn final_data(&self) -> Vec<u8> {
        frame(&self.0)
    }

    /// One frame: the blob as it is now.
    fn stop_copy_data(&self) -> Vec<u8> {
        frame(&self.0)
    }

    fn load(&mut self, stream: &[u8]) -> std::result::Result<(), i32> {
        self.0 = last_frame(stream).ok_or(libc::EINVAL)?;
        Ok(())
    }

    fn stop_copy_length(&self) -> u64 {
        4 + self.0.len() as u64
    }
}

/// A saving file (`struct mtty_migration_file` opened for reading).
#[derive(Debug)]
struct SaveFile {
    id: u64,
    data: Vec<u8>,
    /// The reader's position (`f_pos`).
    pos: usize,
    /// Bytes of initial data at the front of `data`; the rest was appended since.
    initial: usize,
}

/// A resuming file: the bytes written so far (`filled_size`, which is also `f_pos`).
#[derive(Debug)]
struct ResumeFile {
    id: u64,
    data: Vec<u8>,
}

/// The simulated device's migration state, shared with its data fds.
#[derive(Debug)]
pub(crate) struct MigCore {
    pub(crate) features: F,
    pub(crate) state: MigState,
    /// Injected failure of one arc, every time it is taken, until cleared.
    pub(crate) fault: Option<ArcFault>,
    /// Every arc attempted, in order.
    pub(crate) arcs: Vec<MigrationArc>,
    rules: StreamRules,
    saving: Option<SaveFile>,
    resuming: Option<ResumeFile>,
    /// The id the next file gets; a data fd whose file is no longer the device's is stale.
    next_id: u64,
}

/// The simulated device's migration: the shared core and the generic profile's blob.
#[derive(Debug)]
pub(crate) struct MigSim {
    pub(crate) core: MigCore,
    pub(crate) blob: Blob,
}

pub(crate) fn lock(m: &Mutex<MigSim>) -> MutexGuard<'_, MigSim> {
    // As the device's own lock: a panic elsewhere leaves nothing half-done that matters more.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MigSim {
    pub(crate) fn new(features: F, blob: Vec<u8>, rules: StreamRules) -> Self {
        MigSim {
            core: MigCore {
                features,
                state: S::Running,
                fault: None,
                arcs: Vec::new(),
                rules,
                saving: None,
                resuming: None,
                next_id: 1,
            },
            blob: Blob(blob),
        }
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` SET, with `external` the device's content when
    /// its profile has its own (mtty), else the blob. `handle` is the `Arc` this lives in, for
    /// the data fds.
    pub(crate) fn set_state(
        &mut self,
        handle: &Arc<Mutex<MigSim>>,
        target: MigState,
        external: Option<&mut dyn DeviceContent>,
    ) -> Result<Option<MigrationDataFd>> {
        let content: &mut dyn DeviceContent = match external {
            Some(c) => c,
            None => &mut self.blob,
        };
        self.core.set_state(handle, target, content)
    }

    /// The generic profile's device changed its state: while pre-copying, the new state is
    /// appended to the saving file as dirty data.
    pub(crate) fn set_blob(&mut self, blob: Vec<u8>) {
        if self.core.state.is_pre_copy() {
            if let Some(f) = self.core.saving.as_mut() {
                f.data.extend_from_slice(&frame(&blob));
            }
        }
        self.blob.0 = blob;
    }
}

impl MigCore {
    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn disable_files(&mut self) {
        self.saving = None;
        self.resuming = None;
    }

    /// `mtty_save_device_data(new)`: a new saving file with the initial data (and the final
    /// data when `new` is STOP_COPY), or, with one open, the final data appended to it.
    fn save_device_data(
        &mut self,
        handle: &Arc<Mutex<MigSim>>,
        new: MigState,
        content: &dyn DeviceContent,
    ) -> Option<MigrationDataFd> {
        if let Some(f) = self.saving.as_mut() {
            if new == S::StopCopy {
                f.data.extend_from_slice(&content.final_data());
            }
            return None;
        }
        let id = self.new_id();
        let (data, initial) = if new == S::StopCopy {
            (content.stop_copy_data(), 0)
        } else {
            let data = content.initial_data();
            let initial = data.len();
            (data, initial)
        };
        self.saving = Some(SaveFile {
            id,
            data,
            pos: 0,
            initial,
        });
        Some(MigrationDataFd::sim(SimDataFd {
            mig: handle.clone(),
            id,
            resuming: false,
        }))
    }

    /// One arc (`mtty_step_state()`); an error leaves the device in `self.state`.
    fn step(
        &mut self,
        handle: &Arc<Mutex<MigSim>>,
        next: MigState,
        content: &mut dyn DeviceContent,
    ) -> std::result::Result<Option<MigrationDataFd>, (i32, ArcFailure)> {
        match (self.state, next) {
            (S::Running, S::PreCopy)
            | (S::RunningP2p, S::PreCopyP2p)
            // PRE_COPY -> STOP_COPY is the arc of a device without P2P.
            | (S::Stop | S::PreCopy | S::PreCopyP2p, S::StopCopy) => {
                Ok(self.save_device_data(handle, next, content))
            }
            (S::Stop, S::Resuming) => {
                let id = self.new_id();
                self.resuming = Some(ResumeFile {
                    id,
                    data: Vec::new(),
                });
                Ok(Some(MigrationDataFd::sim(SimDataFd {
                    mig: handle.clone(),
                    id,
                    resuming: true,
                })))
            }
            (S::Resuming, S::Stop) => {
                let stream = self.resuming.as_ref().map(|f| f.data.as_slice());
                content
                    .load(stream.unwrap_or_default())
                    .map_err(|e| (e, self.rules.load_failure))?;
                self.disable_files();
                Ok(None)
            }
            (S::PreCopy, S::Running) | (S::PreCopyP2p, S::RunningP2p) | (S::StopCopy, S::Stop) => {
                self.disable_files();
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn set_state(
        &mut self,
        handle: &Arc<Mutex<MigSim>>,
        target: MigState,
        content: &mut dyn DeviceContent,
    ) -> Result<Option<MigrationDataFd>> {
        let err = |e: i32| Error::SetMigrationState {
            requested: target,
            source: errno(e),
        };
        let mut fd = None;
        while self.state != target {
            let from = self.state;
            let next = next_state(from, target, self.features).ok_or_else(|| err(libc::EINVAL))?;
            let injected = self.fault.filter(|f| f.from == from && f.to == next);
            let result = match injected {
                Some(f) => Err((f.errno, f.leaves)),
                None => self.step(handle, next, content),
            };
            self.arcs.push(MigrationArc {
                from,
                to: next,
                succeeded: result.is_ok(),
            });
            match result {
                // A file-returning arc is always the last of its walk (the kernel's table).
                Ok(f) => fd = f,
                Err((e, leaves)) => {
                    if leaves == ArcFailure::EntersError {
                        self.state = S::Error;
                        self.disable_files();
                    }
                    return Err(err(e));
                }
            }
            self.state = next;
        }
        Ok(fd)
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`.
    pub(crate) fn data_size(&self, content: &dyn DeviceContent) -> u64 {
        content.stop_copy_length()
    }

    /// Reset: RUNNING, files disabled (`mtty_reset()` via `mtty_state_mutex_unlock()`).
    pub(crate) fn reset(&mut self) {
        self.state = S::Running;
        self.disable_files();
    }
}

impl MigSim {
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` with `external` as in [`MigSim::set_state`].
    pub(crate) fn data_size(&self, external: Option<&dyn DeviceContent>) -> u64 {
        self.core.data_size(external.unwrap_or(&self.blob))
    }
}

/// The simulated device's data fd: a handle on the device's migration file. It answers as the
/// driver's file does; see [`crate::migration::MigrationDataFd`].
pub(crate) struct SimDataFd {
    mig: Arc<Mutex<MigSim>>,
    id: u64,
    /// Opened for writing (RESUMING), else for reading.
    resuming: bool,
}

impl std::fmt::Debug for SimDataFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDataFd")
            .field("id", &self.id)
            .field("resuming", &self.resuming)
            .finish()
    }
}

impl SimDataFd {
    /// The device's saving file, if it is still this fd's; ENODEV once disabled.
    fn saving_file<'a>(&self, core: &'a mut MigCore) -> io::Result<&'a mut SaveFile> {
        core.saving
            .as_mut()
            .filter(|f| f.id == self.id)
            .ok_or_else(|| errno(libc::ENODEV))
    }

    /// `mtty_save_read()` (a resuming fd is write-only: EBADF, as `vfs_read()` answers).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.resuming {
            return Err(errno(libc::EBADF));
        }
        let m = &mut *lock(&self.mig);
        let (state, end) = (m.core.state, m.core.rules.pre_copy_end);
        let f = self.saving_file(&mut m.core)?;
        let rest = f.data.get(f.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        if n == 0 {
            if state.is_pre_copy() && end == PreCopyEnd::Enomsg {
                return Err(errno(libc::ENOMSG));
            }
            return Ok(0);
        }
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        f.pos += n;
        Ok(n)
    }

    /// `mtty_resume_write()` (a saving fd is read-only: EBADF, as `vfs_write()` answers).
    pub(crate) fn write(&self, data: &[u8]) -> io::Result<usize> {
        if !self.resuming {
            return Err(errno(libc::EBADF));
        }
        let m = &mut *lock(&self.mig);
        let rules = m.core.rules;
        let file = m.core.resuming.as_mut().filter(|f| f.id == self.id);
        // A disabled file's position is back at 0 (`mtty_disable_file()`).
        let pos = file.as_ref().map_or(0, |f| f.data.len());
        if pos.saturating_add(data.len()) > rules.resume_limit {
            return Err(errno(libc::ENOMEM));
        }
        let f = file.ok_or_else(|| errno(libc::ENODEV))?;
        f.data.extend_from_slice(data);
        // The write that completes the header checks it; its bytes stay counted either way.
        if let Some(ports) = rules.mtty_header {
            let header = super::mtty::MTTY_HEADER_LEN;
            if pos < header
                && f.data.len() >= header
                && !super::mtty::header_is_valid(&f.data, ports)
            {
                return Err(errno(libc::EFAULT));
            }
        }
        Ok(data.len())
    }

    /// `mtty_precopy_ioctl()` (a resuming fd has no ioctl: ENOTTY, as `vfs_ioctl()` answers).
    pub(crate) fn precopy_info(&self) -> io::Result<(u64, u64)> {
        if self.resuming {
            return Err(errno(libc::ENOTTY));
        }
        let m = &mut *lock(&self.mig);
        if !m.core.state.is_pre_copy() {
            return Err(errno(libc::EINVAL));
        }
        let f = self.saving_file(&mut m.core)?;
        let initial = f.initial.saturating_sub(f.pos);
        let dirty = f.data.len().saturating_sub(f.pos.max(f.initial));
        Ok((initial as u64, dirty as u64))
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
