// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The migration data fd: what a saving state (PRE_COPY, PRE_COPY_P2P, STOP_COPY) or RESUMING
//! hands out, with the kernel's reading conventions.
//!
//! # What a read means, per state
//!
//! The uAPI (Linux v6.12.117 `include/uapi/linux/vfio.h`, the text of
//! `VFIO_MIG_GET_PRECOPY_INFO`) gives PRE_COPY a *temporary* end of stream, which "should"
//! read as `ENOMSG`, and STOP_COPY a permanent one, `read() == 0`. Drivers differ:
//!
//! | device state | read returns | meaning | [`DataChunk`] |
//! |---|---|---|---|
//! | any saving state | n > 0 | n bytes of the stream | `Bytes(n)` |
//! | PRE_COPY, PRE_COPY_P2P | 0 | nothing more for now: mtty answers every read past its data with 0 (`mtty_save_read()`), in PRE_COPY too | `NothingMoreForNow` |
//! | PRE_COPY, PRE_COPY_P2P | `ENOMSG` | nothing more for now (the uAPI's convention; `mlx5vf_save_read()`) | `NothingMoreForNow` |
//! | PRE_COPY, PRE_COPY_P2P, STOP_COPY | `EAGAIN` | the fd is non-blocking and the data is not ready yet (`mlx5vf_save_read()`); read again | `NothingMoreForNow` |
//! | STOP_COPY | 0 | the end: everything was read | `End` |
//! | STOP_COPY | `ENOMSG` | not allowed by the uAPI ("ENOMSG may not be returned in STOP_COPY") | error |
//! | any other state | 0 | the end | `End` |
//! | any | `ENODEV` | the fd is stale: the device left the state it belongs to, or was reset (`mtty_disable_files()`) | error |
//!
//! A read cannot tell PRE_COPY's 0 from STOP_COPY's on its own, so [`MigrationDataFd::read_chunk`]
//! takes the state the caller put the device in. `VFIO_MIG_GET_PRECOPY_INFO`
//! ([`MigrationDataFd::precopy_info`]) tells how much PRE_COPY data is left; a pre-copy loop
//! reads until it reports nothing and the read says `NothingMoreForNow`, then moves the device
//! to STOP_COPY and reads the same fd to `End`.
//!
//! The raw `read(2)`/`write(2)` results are available through [`std::io::Read`] and
//! [`std::io::Write`], on the simulated device's fd too.

use std::fs::File;
use std::io::{self, Read, Write};

use crate::error::{Error, Result};
use crate::migration::MigState;

/// What one read of a saving data fd produced (see the module docs for each state's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataChunk {
    /// This many bytes were read.
    Bytes(usize),
    /// Nothing more for now: PRE_COPY's temporary end (0 or `ENOMSG`), or `EAGAIN` from a
    /// non-blocking fd. Ask again later, or leave PRE_COPY.
    NothingMoreForNow,
    /// The stream ended: `read() == 0` in STOP_COPY (or in a non-saving state).
    End,
}

/// `VFIO_MIG_GET_PRECOPY_INFO`: how much PRE_COPY data the device has that was not read yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrecopyInfo {
    /// Unread initial data (starts non-zero, falls as it is read).
    pub initial_bytes: u64,
    /// Unread data about device state that changed since it was last read.
    pub dirty_bytes: u64,
}

impl PrecopyInfo {
    /// Whether the device reports nothing left to read for now.
    pub const fn is_empty(&self) -> bool {
        self.initial_bytes == 0 && self.dirty_bytes == 0
    }
}

/// Where the data fd lives.
enum Inner {
    /// An fd the kernel returned (or any file a caller wraps).
    File(File),
    /// The simulated device's in-process data fd.
    #[cfg(feature = "sim")]
    Sim(crate::sim::SimDataFd),
}

/// The data fd of a saving (STOP_COPY, PRE_COPY, PRE_COPY_P2P) or resuming (RESUMING) state.
///
/// The kernel backend's is the anonymous file the driver returned; the simulated device's is
/// an in-process handle with the same answers (the simulator cannot take `ioctl`s on a file of
/// its own). Both read and write like `read(2)`/`write(2)` ([`Read`], [`Write`]) and answer
/// [`MigrationDataFd::precopy_info`].
pub struct MigrationDataFd {
    inner: Inner,
}

impl std::fmt::Debug for MigrationDataFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::File(file) => f.debug_tuple("MigrationDataFd").field(file).finish(),
            #[cfg(feature = "sim")]
            Inner::Sim(sim) => f.debug_tuple("MigrationDataFd").field(sim).finish(),
        }
    }
}

/// `err` is `errno`.
fn is_errno(err: &io::Error, errno: i32) -> bool {
    err.raw_os_error() == Some(errno)
}

impl MigrationDataFd {
    /// Wrap a data fd the kernel returned.
    pub fn new(file: File) -> Self {
        MigrationDataFd {
            inner: Inner::File(file),
        }
    }

    #[cfg(feature = "sim")]
    pub(crate) fn sim(fd: crate::sim::SimDataFd) -> Self {
        MigrationDataFd {
            inner: Inner::Sim(fd),
        }
    }

    /// The kernel's file, to poll it or pass it on; `None` for the simulated device's fd.
    pub fn as_file(&self) -> Option<&File> {
        match &self.inner {
            Inner::File(file) => Some(file),
            #[cfg(feature = "sim")]
            Inner::Sim(_) => None,
        }
    }

    /// `VFIO_MIG_GET_PRECOPY_INFO`. The kernel's errors are kept: `EINVAL` when the device is
    /// not in PRE_COPY or PRE_COPY_P2P, `ENODEV` for a stale fd, `ENOTTY` on a RESUMING fd
    /// (mtty's has no ioctl), each in [`Error::PrecopyInfo`].
    pub fn precopy_info(&self) -> Result<PrecopyInfo> {
        let (initial_bytes, dirty_bytes) = match &self.inner {
            Inner::File(file) => crate::ioctl::mig_get_precopy_info(file),
            #[cfg(feature = "sim")]
            Inner::Sim(sim) => sim.precopy_info(),
        }
        .map_err(Error::PrecopyInfo)?;
        Ok(PrecopyInfo {
            initial_bytes,
            dirty_bytes,
        })
    }

    /// Read the next chunk into `buf`, the device being in `state` (the state the caller last
    /// moved it to). The module docs list what each answer means in each state. A signal that
    /// interrupts the read is retried.
    pub fn read_chunk(&mut self, state: MigState, buf: &mut [u8]) -> Result<DataChunk> {
        loop {
            match self.read(buf) {
                Ok(0) if state.is_pre_copy() => return Ok(DataChunk::NothingMoreForNow),
                Ok(0) => return Ok(DataChunk::End),
                Ok(n) => return Ok(DataChunk::Bytes(n)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_errno(&e, libc::ENOMSG) && state.is_pre_copy() => {
                    return Ok(DataChunk::NothingMoreForNow)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && state.is_saving() => {
                    return Ok(DataChunk::NothingMoreForNow)
                }
                Err(e) => return Err(Error::MigrationData(e)),
            }
        }
    }

    /// Read everything available now, the device being in `state`: in PRE_COPY up to
    /// "nothing more for now", in STOP_COPY to the end (or, on a non-blocking fd, until the
    /// device has nothing ready). Returns the bytes appended to `out` and the chunk that ended
    /// the reading ([`DataChunk::NothingMoreForNow`] or [`DataChunk::End`]).
    pub fn read_available(
        &mut self,
        state: MigState,
        out: &mut Vec<u8>,
    ) -> Result<(usize, DataChunk)> {
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            match self.read_chunk(state, &mut buf)? {
                DataChunk::Bytes(n) => {
                    out.extend_from_slice(buf.get(..n).unwrap_or_default());
                    total += n;
                }
                end => return Ok((total, end)),
            }
        }
    }

    /// Write all of `data` (RESUMING). The first failing write's errno is returned in
    /// [`Error::MigrationData`] (mtty: `ENOMEM` past its stream size, `EFAULT` for a header
    /// that is not its own, `ENODEV` on a stale fd).
    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        Write::write_all(self, data).map_err(Error::MigrationData)
    }
}

/// `read(2)`: the driver's answer, unchanged.
impl Read for MigrationDataFd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::File(file) => file.read(buf),
            #[cfg(feature = "sim")]
            Inner::Sim(sim) => sim.read(buf),
        }
    }
}

/// `write(2)`: the driver's answer, unchanged.
impl Write for MigrationDataFd {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::File(file) => file.write(data),
            #[cfg(feature = "sim")]
            Inner::Sim(sim) => sim.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A kernel-style fd over one end of a socket pair, to feed `read_chunk` exact answers.
    fn pair() -> (MigrationDataFd, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            MigrationDataFd::new(File::from(std::os::fd::OwnedFd::from(a))),
            b,
        )
    }

    #[test]
    fn a_zero_read_is_the_end_only_outside_pre_copy() {
        let (mut fd, peer) = pair();
        (&peer).write_all(b"abc").unwrap();
        drop(peer);
        let mut buf = [0u8; 8];
        assert_eq!(
            fd.read_chunk(MigState::PreCopy, &mut buf).unwrap(),
            DataChunk::Bytes(3)
        );
        // mtty answers 0 in PRE_COPY once its data is read: nothing more for now.
        assert_eq!(
            fd.read_chunk(MigState::PreCopyP2p, &mut buf).unwrap(),
            DataChunk::NothingMoreForNow
        );
        assert_eq!(
            fd.read_chunk(MigState::StopCopy, &mut buf).unwrap(),
            DataChunk::End
        );
        let mut out = Vec::new();
        assert_eq!(
            fd.read_available(MigState::StopCopy, &mut out).unwrap(),
            (0, DataChunk::End)
        );
    }

    #[test]
    fn eagain_is_nothing_more_for_now_in_saving_states() {
        let (mut fd, peer) = pair();
        if let Inner::File(f) = &fd.inner {
            UnixStream::from(std::os::fd::OwnedFd::from(f.try_clone().unwrap()))
                .set_nonblocking(true)
                .unwrap();
        }
        let mut buf = [0u8; 8];
        assert_eq!(
            fd.read_chunk(MigState::StopCopy, &mut buf).unwrap(),
            DataChunk::NothingMoreForNow
        );
        let err = fd.read_chunk(MigState::Stop, &mut buf).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EAGAIN));
        drop(peer);
    }

    #[test]
    fn a_file_that_is_no_data_fd_refuses_precopy_info() {
        let fd = MigrationDataFd::new(File::open("/dev/null").unwrap());
        let err = fd.precopy_info().unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOTTY));
        assert!(fd.as_file().is_some());
    }
}
