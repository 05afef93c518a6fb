// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`Incoming`], [`Received`] and [`Loaded`]: the destination side of a live migration (see
//! the module docs of [`crate::live_migration`]).

use std::io::Read;
use std::time::Duration;

use migration_state::{DeviceIdentity, DeviceState, Frame, State, StreamReader};
use vfio_core::MigrationDataFd;

use super::log::TransitionLog;
use super::members::{check_same, failed, members_of, reset_touched, run_p2p_ordered, Member};
use super::MigrationOptions;
use crate::{restore_all, Error, PassthroughDevice, RestoreReport, Result, Strategy};

/// What one device received (destination side).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceReceipt {
    /// The VMM's id of the device.
    pub id: u32,
    /// Pre-copy bytes written to its `RESUMING` fd.
    pub precopy_bytes: u64,
    /// Stop-copy bytes written to its `RESUMING` fd.
    pub stop_copy_bytes: u64,
}

/// What a completed destination did.
#[derive(Debug)]
pub struct DestinationReport {
    /// Per device, in the migration's order.
    pub devices: Vec<DeviceReceipt>,
    /// Frames read, the end frame included.
    pub frames: u64,
    /// Every state change, in order, from [`Incoming::start`] on.
    pub log: TransitionLog,
    /// From the first device entering `STOP` out of `RESUMING` to the last entering
    /// `RUNNING`: loading every device, the VMM-side restore between, the P2P-ordered run.
    pub stop_to_running: Duration,
    /// What the VMM-side restore cost, when [`Received::resume`] did it.
    pub restore: Option<RestoreReport>,
}

/// What every destination stage carries.
#[derive(Debug)]
struct Stage {
    members: Vec<Member>,
    /// Each device's `RESUMING` fd, until it leaves `RESUMING`.
    fds: Vec<Option<MigrationDataFd>>,
    receipts: Vec<DeviceReceipt>,
    states: Vec<Option<DeviceState>>,
    frames: u64,
    log: TransitionLog,
}

impl Stage {
    /// Resets every device touched and wraps `source` (the uAPI's way out of `RESUMING`).
    fn roll_back(&mut self, source: Error) -> Error {
        self.fds.iter_mut().for_each(|f| *f = None);
        let rollback = reset_touched(&mut self.members, &mut self.log);
        self.members.clear();
        failed(source, rollback)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.members.is_empty() {
            self.fds.iter_mut().for_each(|f| *f = None);
            reset_touched(&mut self.members, &mut self.log);
        }
    }
}

/// The destination while the stream's frames arrive: every device in `RESUMING`. Dropping it
/// resets the devices.
#[derive(Debug)]
pub struct Incoming<R: Read> {
    reader: StreamReader<R>,
    stage: Stage,
}

impl<R: Read> Incoming<R> {
    /// Reads the stream's header from `input` and checks it names exactly `devices` (every
    /// passthrough device of the destination VM, in the source's order), then moves every
    /// device to `RESUMING`.
    ///
    /// # Errors
    /// [`Error::NotMigratable`], [`Error::DuplicateDevice`] or [`Error::DeviceNotReady`] (a
    /// device not in `RUNNING` or `STOP`), nothing touched. A header the destination refuses
    /// (not a stream, another version, other devices, corrupt, cut short) is
    /// [`Error::MigrationFailed`] around [`Error::MigrationStream`] with every device
    /// untouched; a device that cannot enter `RESUMING` is [`Error::MigrationFailed`] with
    /// every device touched reset.
    pub fn start(input: R, devices: &[&PassthroughDevice], opts: MigrationOptions) -> Result<Self> {
        let members = members_of(devices)?;
        for m in &members {
            let state = m.state()?;
            if !matches!(state, State::Running | State::Stop) {
                return Err(Error::DeviceNotReady { id: m.id, state });
            }
        }
        let identities: Vec<DeviceIdentity> = members.iter().map(|m| m.identity).collect();
        let mut stage = Stage {
            fds: members.iter().map(|_| None).collect(),
            receipts: members
                .iter()
                .map(|m| DeviceReceipt {
                    id: m.id,
                    precopy_bytes: 0,
                    stop_copy_bytes: 0,
                })
                .collect(),
            states: members.iter().map(|_| None).collect(),
            members,
            frames: 0,
            log: TransitionLog::default(),
        };
        let reader = match StreamReader::with_max_frame(input, &identities, opts.max_frame) {
            Ok(r) => r,
            Err(e) => return Err(stage.roll_back(Error::MigrationStream(e))),
        };
        for i in 0..stage.members.len() {
            let entered = match stage.members.get_mut(i) {
                Some(m) => m.walk(State::Resuming, &mut stage.log),
                None => continue,
            };
            match entered.and_then(|fd| fd.ok_or(Error::NoDataFd)) {
                Ok(fd) => {
                    if let Some(slot) = stage.fds.get_mut(i) {
                        *slot = Some(fd);
                    }
                }
                Err(e) => return Err(stage.roll_back(e)),
            }
        }
        Ok(Incoming { reader, stage })
    }

    /// Reads the stream to its end frame: pre-copy and stop-copy data are written to each
    /// device's `RESUMING` fd as they arrive, the VMM-side states kept.
    ///
    /// # Errors
    /// [`Error::MigrationFailed`] around what failed ([`Error::MigrationStream`] for a stream
    /// that is cut short, corrupt, out of order or carries a bad state;
    /// [`Error::MigrationData`] for data a device refuses), with every device reset to
    /// `RUNNING`.
    pub fn receive(mut self) -> Result<Received> {
        if let Err(e) = self.read_frames() {
            return Err(self.stage.roll_back(e));
        }
        let stage = std::mem::replace(&mut self.stage, Stage::empty());
        Ok(Received { stage })
    }

    fn read_frames(&mut self) -> Result<()> {
        let stage = &mut self.stage;
        loop {
            let frame = self
                .reader
                .next_frame()
                .map_err(Error::MigrationStream)?
                .ok_or(Error::MigrationStream(
                    migration_state::Error::StreamTruncated { what: "end frame" },
                ))?;
            stage.frames += 1;
            let (device, data, stop_copy) = match frame {
                Frame::Precopy { device, data } => (device, data, false),
                Frame::StopCopy { device, data } => (device, data, true),
                Frame::State { device, state } => {
                    if let Some(slot) = stage.states.get_mut(usize::from(device)) {
                        *slot = Some(*state);
                    }
                    continue;
                }
                Frame::End => return Ok(()),
            };
            let i = usize::from(device);
            let fd = stage
                .fds
                .get_mut(i)
                .and_then(Option::as_mut)
                .ok_or(Error::NoDataFd)?;
            fd.write_all(&data).map_err(Error::MigrationData)?;
            if let Some(r) = stage.receipts.get_mut(i) {
                let n = data.len() as u64;
                if stop_copy {
                    r.stop_copy_bytes += n;
                } else {
                    r.precopy_bytes += n;
                }
            }
        }
    }

    /// The state changes so far.
    pub fn log(&self) -> &TransitionLog {
        &self.stage.log
    }
}

impl Stage {
    /// A stage holding nothing (what is left behind when a stage moves on).
    fn empty() -> Self {
        Stage {
            members: Vec::new(),
            fds: Vec::new(),
            receipts: Vec::new(),
            states: Vec::new(),
            frames: 0,
            log: TransitionLog::default(),
        }
    }

    fn take(&mut self) -> Stage {
        std::mem::replace(self, Stage::empty())
    }
}

/// The destination once the whole stream arrived: every device still in `RESUMING` with its
/// data written. Dropping it resets the devices.
#[derive(Debug)]
pub struct Received {
    stage: Stage,
}

impl Received {
    /// The VMM-side states the stream carried, in the migration's order.
    pub fn states(&self) -> Vec<&DeviceState> {
        self.stage.states.iter().flatten().collect()
    }

    /// What each device received.
    pub fn receipts(&self) -> &[DeviceReceipt] {
        &self.stage.receipts
    }

    /// Every device `RESUMING -> STOP`: each device takes the data written to it (and
    /// refuses incomplete or invalid data on this arc).
    ///
    /// # Errors
    /// [`Error::MigrationFailed`] around [`Error::MigrationWalk`], every device reset.
    pub fn load(mut self) -> Result<Loaded> {
        let stage = &mut self.stage;
        for i in 0..stage.members.len() {
            let walked = match stage.members.get_mut(i) {
                Some(m) => m.walk(State::Stop, &mut stage.log),
                None => continue,
            };
            // The session is over (or refused): its fd goes once the arc returned.
            if let Some(fd) = stage.fds.get_mut(i) {
                *fd = None;
            }
            if let Err(e) = walked {
                return Err(stage.roll_back(e));
            }
        }
        let states = match stage.states.iter().cloned().collect::<Option<Vec<_>>>() {
            Some(s) => s,
            // The reader refuses an end frame before every device's state.
            None => {
                return Err(stage.roll_back(Error::MigrationStream(
                    migration_state::Error::StreamOrder { device: 0 },
                )))
            }
        };
        Ok(Loaded {
            stage: stage.take(),
            states,
        })
    }

    /// [`Received::load`], the VMM-side states restored onto `devices` (the ones given to
    /// [`Incoming::start`], in order) with [`restore_all`] and `strategy`, then
    /// [`Loaded::run`].
    ///
    /// # Errors
    /// [`Error::MigrationFailed`] around what failed ([`Error::DeviceMismatch`] for devices
    /// that are not the migration's), every device reset.
    pub fn resume(
        mut self,
        devices: &mut [&mut PassthroughDevice],
        strategy: Strategy,
    ) -> Result<DestinationReport> {
        {
            let shared: Vec<&PassthroughDevice> = devices.iter().map(|d| &**d).collect();
            if let Err(e) = check_same(&self.stage.members, &shared) {
                return Err(self.stage.roll_back(e));
            }
        }
        let mut loaded = self.load()?;
        let restore = match devices.first().map(|d| d.router().clone()) {
            Some(router) => {
                let states = loaded.states.clone();
                match restore_all(
                    &router,
                    devices.iter_mut().map(|d| &mut **d).zip(&states),
                    strategy,
                ) {
                    Ok(r) => Some(r),
                    Err(e) => return Err(loaded.stage.roll_back(e)),
                }
            }
            None => None,
        };
        let shared: Vec<&PassthroughDevice> = devices.iter().map(|d| &**d).collect();
        let mut report = loaded.run(&shared)?;
        report.restore = restore;
        Ok(report)
    }
}

/// The destination once every device took its data and is in `STOP`: the VMM restores the
/// VMM-side states ([`Loaded::states`]), then [`Loaded::run`]. Dropping it resets the devices.
#[derive(Debug)]
pub struct Loaded {
    stage: Stage,
    states: Vec<DeviceState>,
}

impl Loaded {
    /// The VMM-side states, in the migration's order.
    pub fn states(&self) -> &[DeviceState] {
        &self.states
    }

    /// Runs the devices (`devices` as given to [`Incoming::start`]): every device with P2P to
    /// `RUNNING_P2P`, then every device to `RUNNING`, those without P2P first.
    ///
    /// # Errors
    /// [`Error::MigrationFailed`] around what failed ([`Error::DeviceMismatch`] for devices
    /// that are not the migration's, [`Error::MigrationWalk`]), every device reset.
    pub fn run(mut self, devices: &[&PassthroughDevice]) -> Result<DestinationReport> {
        let stage = &mut self.stage;
        if let Err(e) = check_same(&stage.members, devices) {
            return Err(stage.roll_back(e));
        }
        if let Err(e) = run_p2p_ordered(&mut stage.members, &mut stage.log) {
            return Err(stage.roll_back(e));
        }
        let mut stage = stage.take();
        // Done: nothing left for a drop to reset.
        stage.members.clear();
        let log = &stage.log;
        let stop_to_running = log
            .first_arc(State::Resuming, State::Stop)
            .zip(log.last_entering(&[State::Running]))
            .and_then(|(a, b)| log.between(a, b))
            .unwrap_or_default();
        Ok(DestinationReport {
            devices: std::mem::take(&mut stage.receipts),
            frames: stage.frames,
            log: std::mem::take(&mut stage.log),
            stop_to_running,
            restore: None,
        })
    }
}
