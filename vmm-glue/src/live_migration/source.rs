// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`Outgoing`]: the source side of a live migration (see the module docs of
//! [`crate::live_migration`]).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use migration_state::{DeviceIdentity, State, StreamWriter};
use vfio_core::{DataChunk, DirtySource, MigrationDataFd, PrecopyInfo, VfioContainer};

use super::dirty::{DirtyBitmap, DirtyLog};
use super::log::TransitionLog;
use super::members::{
    check_same, failed, members_of, quiesce, resume_on_source, stop_copy_ordered, Member, Rollback,
};
use super::MigrationOptions;
use crate::{Error, PassthroughDevice, Result};

/// How one device's reading ended in a pre-copy round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoundEnd {
    /// The data fd said "nothing more for now" (PRE_COPY's temporary end).
    NothingMoreForNow,
    /// The round's byte budget ([`MigrationOptions::round_budget`]) was used up first.
    Budget,
}

/// What one pre-copy round did with one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRound {
    /// The VMM's id of the device.
    pub id: u32,
    /// `VFIO_MIG_GET_PRECOPY_INFO` before reading.
    pub before: PrecopyInfo,
    /// Bytes read from the data fd (and written to the stream as pre-copy frames).
    pub read: u64,
    /// How the reading ended.
    pub end: RoundEnd,
    /// `VFIO_MIG_GET_PRECOPY_INFO` after reading.
    pub after: PrecopyInfo,
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` after reading: the device's estimate of its
    /// stop-copy data.
    pub stop_copy_estimate: u64,
}

impl DeviceRound {
    /// Whether the device has nothing left to pre-copy for now: the read reached the temporary
    /// end and `PRECOPY_INFO` reports no initial or dirty bytes.
    pub fn is_drained(&self) -> bool {
        self.end == RoundEnd::NothingMoreForNow && self.after.is_empty()
    }
}

/// What one [`Outgoing::precopy_round`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrecopyRound {
    /// The round's number, from 1.
    pub round: u32,
    /// The pre-copying devices (those with `PRE_COPY`), in the migration's order.
    pub devices: Vec<DeviceRound>,
    /// Where the dirty pages came from, when dirty tracking is on.
    pub dirty_source: Option<DirtySource>,
}

impl PrecopyRound {
    /// Whether every pre-copying device is drained ([`DeviceRound::is_drained`]): what is
    /// left is the stop-copy data.
    pub fn converged(&self) -> bool {
        self.devices.iter().all(DeviceRound::is_drained)
    }

    /// The devices' stop-copy size estimates, summed (`MIG_DATA_SIZE`).
    pub fn stop_copy_estimate(&self) -> u64 {
        self.devices.iter().map(|d| d.stop_copy_estimate).sum()
    }

    /// Bytes pre-copied in this round, all devices.
    pub fn read(&self) -> u64 {
        self.devices.iter().map(|d| d.read).sum()
    }
}

/// What one device moved in a whole migration (source side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceTransfer {
    /// The VMM's id of the device.
    pub id: u32,
    /// Pre-copy bytes read, all rounds.
    pub precopy_bytes: u64,
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` at the switchover, before the device was stopped:
    /// the downtime prediction's input.
    pub stop_copy_estimate: u64,
    /// Bytes read in `STOP_COPY`.
    pub stop_copy_bytes: u64,
}

/// What a completed [`Outgoing::switchover`] did.
#[derive(Debug)]
pub struct SourceReport<W> {
    /// The stream's writer, flushed, after the end frame.
    pub writer: W,
    /// Per device, in the migration's order.
    pub devices: Vec<DeviceTransfer>,
    /// Pre-copy rounds run.
    pub rounds: u32,
    /// Bytes of stream written (header and frames).
    pub stream_bytes: u64,
    /// Every state change, in order, from [`Outgoing::start`] on.
    pub log: TransitionLog,
    /// Wall-clock time of the switchover call (devices quiesced, stopped, read, stream
    /// finished).
    pub switchover_time: Duration,
}

/// One device's pre-copy session on the source.
#[derive(Debug)]
struct Session {
    /// The data fd of the saving session, once one was handed out.
    fd: Option<MigrationDataFd>,
    /// The pre-copy state the device is in (`PRE_COPY` or `PRE_COPY_P2P`), if it pre-copies.
    precopy: Option<State>,
    precopy_bytes: u64,
}

/// Which frames [`pump`] writes.
#[derive(Clone, Copy)]
enum Phase {
    Precopy,
    StopCopy,
}

/// The stream's [`Write`], counting the bytes that went through.
#[derive(Debug)]
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads `fd` (the device in `state`) into frames of at most `max_frame` bytes written to
/// `writer` as device `index`'s `phase` data, until the fd's end for that state or `budget`
/// bytes. Returns the bytes read and the chunk that ended the reading (`None`: the budget).
fn pump<W: Write>(
    fd: &mut MigrationDataFd,
    state: State,
    writer: &mut StreamWriter<W>,
    index: u16,
    phase: Phase,
    max_frame: u32,
    budget: u64,
) -> Result<(u64, Option<DataChunk>)> {
    let frame = max_frame.max(1) as usize;
    let mut buf = vec![0u8; frame.min(64 << 10)];
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0u64;
    let flush = |writer: &mut StreamWriter<W>, data: &[u8]| -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match phase {
            Phase::Precopy => writer.precopy(index, data),
            Phase::StopCopy => writer.stop_copy(index, data),
        }
        .map_err(Error::MigrationStream)
    };
    let end = loop {
        if total >= budget {
            break None;
        }
        match fd
            .read_chunk(state.to_device_state(), &mut buf)
            .map_err(Error::MigrationData)?
        {
            DataChunk::Bytes(n) => {
                pending.extend_from_slice(buf.get(..n).unwrap_or_default());
                total += n as u64;
                if pending.len() >= frame {
                    let rest = pending.split_off(frame);
                    flush(writer, &pending)?;
                    pending = rest;
                }
            }
            end => break Some(end),
        }
    };
    flush(writer, &pending)?;
    Ok((total, end))
}

/// The source side of a live migration. See the module docs of [`crate::live_migration`].
///
/// Dropping it before [`Outgoing::switchover`] succeeded rolls the devices back as
/// [`Outgoing::abort`] does.
#[derive(Debug)]
pub struct Outgoing<W: Write> {
    members: Vec<Member>,
    sessions: Vec<Session>,
    writer: Option<StreamWriter<Counted<W>>>,
    dirty: Option<DirtyLog>,
    log: TransitionLog,
    opts: MigrationOptions,
    rounds: u32,
}

impl<W: Write> Outgoing<W> {
    /// Starts migrating `devices` (every passthrough device of the VM, in the order the
    /// destination will list its own): writes the stream header to `out`, starts dirty
    /// tracking of `container`'s guest memory if one is given ([`DirtyLog`]), then moves every
    /// device with `PRE_COPY` into it (`RUNNING -> PRE_COPY`, `RUNNING_P2P -> PRE_COPY_P2P`).
    /// A device without `PRE_COPY`, or stopped, is left as it is until the switchover.
    ///
    /// # Errors
    /// Before any device is touched: [`Error::NotMigratable`], [`Error::DuplicateDevice`],
    /// [`Error::DeviceNotReady`] (a device in a saving, resuming or error state),
    /// [`Error::MigrationStream`] (the header could not be written), [`Error::DirtyTracking`].
    /// A device that fails to enter `PRE_COPY`: [`Error::MigrationFailed`], every device back
    /// in the state it started in and tracking stopped.
    pub fn start(
        out: W,
        devices: &[&PassthroughDevice],
        container: Option<Arc<dyn VfioContainer>>,
        opts: MigrationOptions,
    ) -> Result<Self> {
        let mut members = members_of(devices)?;
        for m in &mut members {
            let state = m.state()?;
            if !matches!(state, State::Running | State::RunningP2p | State::Stop) {
                return Err(Error::DeviceNotReady { id: m.id, state });
            }
            m.home = state;
        }
        let identities: Vec<DeviceIdentity> = members.iter().map(|m| m.identity).collect();
        let out = Counted {
            inner: out,
            bytes: 0,
        };
        let writer = StreamWriter::new(out, &identities).map_err(Error::MigrationStream)?;
        let dirty = container.map(|c| DirtyLog::start(c, devices)).transpose()?;
        let sessions = members
            .iter()
            .map(|_| Session {
                fd: None,
                precopy: None,
                precopy_bytes: 0,
            })
            .collect();
        let mut out = Outgoing {
            members,
            sessions,
            writer: Some(writer),
            dirty,
            log: TransitionLog::default(),
            opts,
            rounds: 0,
        };
        if let Err(e) = out.enter_precopy() {
            return Err(out.roll_back(e));
        }
        Ok(out)
    }

    fn enter_precopy(&mut self) -> Result<()> {
        for (m, s) in self.members.iter_mut().zip(self.sessions.iter_mut()) {
            if !m.flags.pre_copy() {
                continue;
            }
            let to = match m.state()? {
                State::Running => State::PreCopy,
                State::RunningP2p => State::PreCopyP2p,
                _ => continue,
            };
            s.fd = Some(m.walk(to, &mut self.log)?.ok_or(Error::NoDataFd)?);
            s.precopy = Some(to);
        }
        Ok(())
    }

    /// Rolls every device back to the state it started in, stops dirty tracking, and wraps
    /// `source`.
    fn roll_back(&mut self, source: Error) -> Error {
        let rollback = self.abort_devices();
        failed(source, rollback)
    }

    fn abort_devices(&mut self) -> Rollback {
        self.writer = None;
        for s in &mut self.sessions {
            s.fd = None;
            s.precopy = None;
        }
        if let Some(d) = self.dirty.take() {
            // Nothing to report to: the rollback is what the caller learns.
            let _ = d.stop();
        }
        resume_on_source(&mut self.members, &mut self.log)
    }

    /// One pre-copy round while the VM runs: for every pre-copying device,
    /// `VFIO_MIG_GET_PRECOPY_INFO`, its data fd read up to "nothing more for now" (or the
    /// round's budget) into pre-copy frames, `PRECOPY_INFO` again and
    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE`; then the devices' dirty pages OR into `dirty`.
    ///
    /// # Errors
    /// [`Error::PrecopyInfo`], [`Error::MigrationData`], [`Error::MigrationDataSize`],
    /// [`Error::MigrationStream`], [`Error::DirtyTracking`]: the migration is left as it was
    /// (the stream may hold part of the round); [`Outgoing::abort`] or a drop rolls back.
    pub fn precopy_round(&mut self, dirty: &mut [DirtyBitmap<'_>]) -> Result<PrecopyRound> {
        let writer = self.writer.as_mut().ok_or(Error::NoDataFd)?;
        let mut devices = Vec::new();
        for (index, (m, s)) in (0u16..).zip(self.members.iter().zip(self.sessions.iter_mut())) {
            let (Some(fd), Some(state)) = (s.fd.as_mut(), s.precopy) else {
                continue;
            };
            let before = fd.precopy_info().map_err(Error::PrecopyInfo)?;
            let (read, end) = pump(
                fd,
                state,
                writer,
                index,
                Phase::Precopy,
                self.opts.max_frame,
                self.opts.round_budget,
            )?;
            s.precopy_bytes += read;
            let after = fd.precopy_info().map_err(Error::PrecopyInfo)?;
            let stop_copy_estimate = m
                .mig
                .migration_data_size()
                .map_err(Error::MigrationDataSize)?;
            devices.push(DeviceRound {
                id: m.id,
                before,
                read,
                end: match end {
                    Some(_) => RoundEnd::NothingMoreForNow,
                    None => RoundEnd::Budget,
                },
                after,
                stop_copy_estimate,
            });
        }
        if let Some(d) = &self.dirty {
            d.report_all(dirty)?;
        }
        self.rounds += 1;
        Ok(PrecopyRound {
            round: self.rounds,
            devices,
            dirty_source: self.dirty.as_ref().map(DirtyLog::source),
        })
    }

    /// Pre-copy rounds until one converges ([`PrecopyRound::converged`]) or `max_rounds` ran;
    /// `between` sees each round (the VMM sends guest memory there, say). Every round reports
    /// dirty pages into `dirty`.
    ///
    /// # Errors
    /// As [`Outgoing::precopy_round`].
    pub fn precopy_until_converged(
        &mut self,
        max_rounds: u32,
        dirty: &mut [DirtyBitmap<'_>],
        mut between: impl FnMut(&PrecopyRound),
    ) -> Result<Vec<PrecopyRound>> {
        let mut rounds = Vec::new();
        for _ in 0..max_rounds {
            let r = self.precopy_round(dirty)?;
            between(&r);
            let done = r.converged();
            rounds.push(r);
            if done {
                break;
            }
        }
        Ok(rounds)
    }

    /// `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` of every device now, in the migration's order: the
    /// bytes the switchover will read (divide by the link's rate for the downtime it adds).
    ///
    /// # Errors
    /// [`Error::MigrationDataSize`].
    pub fn stop_copy_estimate(&self) -> Result<Vec<u64>> {
        self.members
            .iter()
            .map(|m| {
                m.mig
                    .migration_data_size()
                    .map_err(Error::MigrationDataSize)
            })
            .collect()
    }

    /// The state changes so far.
    pub fn log(&self) -> &TransitionLog {
        &self.log
    }

    /// Where dirty pages come from, when dirty tracking is on.
    pub fn dirty_source(&self) -> Option<DirtySource> {
        self.dirty.as_ref().map(DirtyLog::source)
    }

    /// OR the devices' dirty pages since the last report into `dirty` (between rounds, if
    /// the VMM wants them more often). Does nothing without dirty tracking.
    ///
    /// # Errors
    /// [`Error::DirtyTracking`].
    pub fn report_dirty(&self, dirty: &mut [DirtyBitmap<'_>]) -> Result<()> {
        match &self.dirty {
            Some(d) => d.report_all(dirty),
            None => Ok(()),
        }
    }

    /// The switchover, with the vCPUs stopped (and the VMM's userspace interrupt eventfds
    /// drained, so pending bits are in the MSI-X state): `devices` are the ones given to
    /// [`Outgoing::start`], in the same order.
    ///
    /// Every device with P2P reaches `RUNNING_P2P` or `PRE_COPY_P2P` before any device reaches
    /// `STOP` or `STOP_COPY`; then every device goes to `STOP_COPY` (those without P2P first),
    /// its data fd is read to the end into stop-copy frames, and it goes to `STOP`. The last
    /// dirty pages OR into `dirty` and tracking stops; each device's VMM-side state
    /// ([`PassthroughDevice::save`]) and the end frame close the stream. The devices are left
    /// in `STOP`: on the source, once the destination runs, the VM is done.
    ///
    /// # Errors
    /// [`Error::MigrationFailed`] around what failed ([`Error::DeviceMismatch`] for devices
    /// that are not the migration's, before any is touched): every device was walked back to
    /// the state it started in (`RUNNING`, P2P-ordered) and tracking stopped, so the VMM can
    /// resume the VM on the source.
    pub fn switchover(
        mut self,
        devices: &[&PassthroughDevice],
        dirty: &mut [DirtyBitmap<'_>],
    ) -> Result<SourceReport<W>> {
        if let Err(e) = check_same(&self.members, devices) {
            return Err(self.roll_back(e));
        }
        let started = Instant::now();
        match self.switch(devices, dirty) {
            Ok(transfers) => {
                let finished = match self.writer.take() {
                    Some(w) => w.finish().map_err(Error::MigrationStream),
                    None => Err(Error::NoDataFd),
                };
                let counted = match finished {
                    Ok(w) => w,
                    Err(e) => return Err(self.roll_back(e)),
                };
                // Done: nothing left for a drop to roll back.
                self.members.clear();
                Ok(SourceReport {
                    writer: counted.inner,
                    devices: transfers,
                    rounds: self.rounds,
                    stream_bytes: counted.bytes,
                    log: std::mem::take(&mut self.log),
                    switchover_time: started.elapsed(),
                })
            }
            Err(e) => Err(self.roll_back(e)),
        }
    }

    fn switch(
        &mut self,
        devices: &[&PassthroughDevice],
        dirty: &mut [DirtyBitmap<'_>],
    ) -> Result<Vec<DeviceTransfer>> {
        let estimates = self.stop_copy_estimate()?;
        quiesce(&mut self.members, &mut self.log)?;
        let fresh = stop_copy_ordered(&mut self.members, &mut self.log)?;
        let writer = self.writer.as_mut().ok_or(Error::NoDataFd)?;
        let mut transfers = Vec::with_capacity(self.members.len());
        for (index, ((m, s), (new_fd, estimate))) in (0u16..).zip(
            self.members
                .iter()
                .zip(self.sessions.iter_mut())
                .zip(fresh.into_iter().zip(estimates)),
        ) {
            // From a pre-copy state the saving session's fd carries on into STOP_COPY.
            let mut fd = new_fd.or_else(|| s.fd.take()).ok_or(Error::NoDataFd)?;
            let limit = self.opts.max_device_data;
            let (read, end) = pump(
                &mut fd,
                State::StopCopy,
                writer,
                index,
                Phase::StopCopy,
                self.opts.max_frame,
                limit.saturating_add(1),
            )?;
            if read > limit {
                return Err(Error::DeviceDataTooLarge {
                    limit: usize::try_from(limit).unwrap_or(usize::MAX),
                });
            }
            if end != Some(DataChunk::End) {
                return Err(Error::StopCopyStalled { id: m.id });
            }
            transfers.push(DeviceTransfer {
                id: m.id,
                precopy_bytes: s.precopy_bytes,
                stop_copy_estimate: estimate,
                stop_copy_bytes: read,
            });
        }
        // The sessions are complete: STOP_COPY -> STOP closes them.
        for m in &mut self.members {
            m.walk(State::Stop, &mut self.log)?;
        }
        if let Some(d) = self.dirty.take() {
            d.report_all(dirty)?;
            d.stop()?;
        }
        for (index, d) in (0u16..).zip(devices) {
            writer
                .device_state(index, &d.save())
                .map_err(Error::MigrationStream)?;
        }
        Ok(transfers)
    }

    /// Abandons the migration: every device back to the state it started in (`RUNNING`,
    /// P2P-ordered), dirty tracking stopped. The stream is left as it is (the destination sees it end early and rolls back).
    pub fn abort(mut self) -> Rollback {
        let rb = self.abort_devices();
        self.members.clear();
        rb
    }
}

impl<W: Write> Drop for Outgoing<W> {
    fn drop(&mut self) {
        if !self.members.is_empty() {
            self.abort_devices();
        }
    }
}
