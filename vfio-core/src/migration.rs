// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! VFIO migration v2 (`VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`) types: device states, feature
//! flags, and the data fd a saving or resuming state hands out.

use std::fs::File;
use std::io::{self, Read, Write};

use vfio_bindings::bindings::vfio as b;

use crate::error::{Error, Result};

/// A migration v2 device state (`enum vfio_device_mig_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigState {
    /// The device failed a transition; only reset leaves it.
    Error,
    /// Stopped: no DMA, no interrupts, state not changing.
    Stop,
    /// Running normally.
    Running,
    /// Stopped, saving the final device state through the data fd.
    StopCopy,
    /// Stopped, loading device state from the data fd.
    Resuming,
    /// Running, but no longer initiating peer-to-peer DMA.
    RunningP2p,
    /// Running, saving device state ahead of the stop (optional feature).
    PreCopy,
    /// `PreCopy` without peer-to-peer DMA.
    PreCopyP2p,
}

impl MigState {
    /// All states, in uAPI order.
    pub const ALL: [MigState; 8] = [
        MigState::Error,
        MigState::Stop,
        MigState::Running,
        MigState::StopCopy,
        MigState::Resuming,
        MigState::RunningP2p,
        MigState::PreCopy,
        MigState::PreCopyP2p,
    ];

    /// The uAPI value.
    pub const fn to_raw(self) -> u32 {
        match self {
            MigState::Error => b::vfio_device_mig_state_VFIO_DEVICE_STATE_ERROR,
            MigState::Stop => b::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP,
            MigState::Running => b::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING,
            MigState::StopCopy => b::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP_COPY,
            MigState::Resuming => b::vfio_device_mig_state_VFIO_DEVICE_STATE_RESUMING,
            MigState::RunningP2p => b::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING_P2P,
            MigState::PreCopy => b::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY,
            MigState::PreCopyP2p => b::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY_P2P,
        }
    }

    /// The state for a uAPI value, if it names one.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.to_raw() == raw)
    }

    /// Whether entering this state hands out a data fd (saving or resuming).
    pub const fn has_data_fd(self) -> bool {
        matches!(
            self,
            MigState::StopCopy | MigState::Resuming | MigState::PreCopy | MigState::PreCopyP2p
        )
    }
}

bitflags::bitflags! {
    /// `vfio_device_feature_migration.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MigrationFeatures: u64 {
        /// STOP, STOP_COPY and RESUMING (mandatory).
        const STOP_COPY = b::VFIO_MIGRATION_STOP_COPY as u64;
        /// RUNNING_P2P.
        const P2P = b::VFIO_MIGRATION_P2P as u64;
        /// PRE_COPY (and PRE_COPY_P2P with `P2P`).
        const PRE_COPY = b::VFIO_MIGRATION_PRE_COPY as u64;
    }
}

/// What one read of a saving data fd produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataChunk {
    /// This many bytes were read.
    Bytes(usize),
    /// PRE_COPY has nothing more for now (the kernel's ENOMSG); ask again later.
    NothingMoreForNow,
    /// The stream ended (read returned 0 in STOP_COPY).
    End,
}

/// The data fd of a saving (STOP_COPY, PRE_COPY) or resuming (RESUMING) state.
///
/// It reads and writes like the file it wraps; [`MigrationDataFd::read_chunk`] folds the
/// "nothing more for now" answers of PRE_COPY into [`DataChunk::NothingMoreForNow`]: ENOMSG from
/// the kernel, EAGAIN from the simulated device's non-blocking stream.
#[derive(Debug)]
pub struct MigrationDataFd {
    file: File,
}

impl MigrationDataFd {
    /// Wrap a data fd.
    pub fn new(file: File) -> Self {
        MigrationDataFd { file }
    }

    /// The underlying file.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Read the next chunk into `buf`.
    pub fn read_chunk(&mut self, buf: &mut [u8]) -> Result<DataChunk> {
        loop {
            match self.file.read(buf) {
                Ok(0) => return Ok(DataChunk::End),
                Ok(n) => return Ok(DataChunk::Bytes(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOMSG)
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    return Ok(DataChunk::NothingMoreForNow)
                }
                Err(e) => return Err(Error::MigrationData(e)),
            }
        }
    }

    /// Read everything available: until the end of the stream in STOP_COPY, or until "nothing
    /// more for now" in PRE_COPY. Returns the bytes appended to `out`.
    pub fn read_available(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            match self.read_chunk(&mut buf)? {
                DataChunk::Bytes(n) => {
                    out.extend_from_slice(buf.get(..n).unwrap_or_default());
                    total += n;
                }
                DataChunk::NothingMoreForNow | DataChunk::End => return Ok(total),
            }
        }
    }

    /// Write all of `data` (RESUMING).
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.file.write_all(data).map_err(Error::MigrationData)
    }
}
