// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The devices of a live migration as the state machine sees them, and the orders they are
//! walked in: the P2P order on both ends, and the rollbacks.

use std::fmt;
use std::sync::Arc;

use migration_state::driver::{device_flags, from_device_state, Recovery};
use migration_state::{walk_device_observed, DeviceIdentity, MigrationFlags, State, WalkEvent};
use vfio_core::{MigrationDataFd, VfioMigration};

use super::log::TransitionLog;
use crate::{Error, PassthroughDevice, Result};

/// Where a failed live migration left its devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollback {
    /// Devices walked back to the state they started in, `RUNNING` normally (source).
    pub resumed: Vec<u32>,
    /// Devices reset (`VFIO_DEVICE_RESET`) to `RUNNING`: on the destination every device
    /// touched; on the source a device whose walk back failed.
    pub reset: Vec<u32>,
    /// Devices never moved (the failure came before they were touched).
    pub untouched: Vec<u32>,
    /// Devices that could be neither walked back nor reset: unusable.
    pub failed: Vec<u32>,
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "devices resumed {:?}, reset {:?}, untouched {:?}, unrecoverable {:?}",
            self.resumed, self.reset, self.untouched, self.failed
        )
    }
}

/// One device of a live migration.
pub(crate) struct Member {
    pub(crate) id: u32,
    pub(crate) mig: Arc<dyn VfioMigration>,
    pub(crate) flags: MigrationFlags,
    pub(crate) identity: DeviceIdentity,
    /// Whether a request was made of the device yet.
    pub(crate) touched: bool,
    /// Whether a failed walk reset the device (QEMU's rule), and whether that reset failed.
    pub(crate) reset_by_walk: Option<bool>,
    /// The state a source rollback returns the device to (what it was in when the migration
    /// started: RUNNING, or RUNNING_P2P or STOP for a VM that was quiesced or paused).
    pub(crate) home: State,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("id", &self.id)
            .field("flags", &self.flags)
            .field("touched", &self.touched)
            .finish_non_exhaustive()
    }
}

impl Member {
    fn of(dev: &PassthroughDevice) -> Result<Self> {
        let id = dev.id();
        let mig = dev.mig.clone().ok_or(Error::NotMigratable { id })?;
        // A device without migration, or whose flags lack the mandatory STOP_COPY, supports
        // no migration state at all.
        let flags = device_flags(&*mig).map_err(|e| match e {
            migration_state::Error::Device(e) => Error::MigrationState(e),
            _ => Error::NotMigratable { id },
        })?;
        Ok(Member {
            id,
            mig,
            flags,
            identity: dev.migration_identity()?,
            touched: false,
            reset_by_walk: None,
            home: State::Running,
        })
    }

    /// Whether `dev` is this device (same id, same VFIO device object).
    fn is(&self, dev: &PassthroughDevice) -> bool {
        dev.id() == self.id
            && dev
                .mig
                .as_ref()
                .is_some_and(|m| crate::device::same_object(m, &self.mig))
    }

    pub(crate) fn state(&self) -> Result<State> {
        self.mig
            .migration_state()
            .map(from_device_state)
            .map_err(Error::MigrationState)
    }

    /// Walk to `to` along the kernel's path (no recovery state: a failed arc resets the
    /// device, QEMU's rule), every request recorded in `log`.
    pub(crate) fn walk(
        &mut self,
        to: State,
        log: &mut TransitionLog,
    ) -> Result<Option<MigrationDataFd>> {
        self.touched = true;
        let id = self.id;
        walk_device_observed(&*self.mig, to, None, &mut |e| log.record(id, e))
            .map(|w| w.data_fd)
            .map_err(|source| {
                if let migration_state::Error::Transition { recovery, .. } = &source {
                    self.reset_by_walk = match recovery {
                        Recovery::Reset => Some(true),
                        Recovery::ResetFailed => Some(false),
                        Recovery::RecoveredTo(_) => self.reset_by_walk,
                    };
                }
                Error::MigrationWalk { to, source }
            })
    }

    /// `VFIO_DEVICE_RESET`, recorded.
    fn reset(&mut self, log: &mut TransitionLog) -> bool {
        self.touched = true;
        let succeeded = self.mig.reset().is_ok();
        log.record(self.id, WalkEvent::Reset { succeeded });
        succeeded
    }
}

/// The members for `devices`: each must be migratable, ids unique.
pub(crate) fn members_of(devices: &[&PassthroughDevice]) -> Result<Vec<Member>> {
    let mut out: Vec<Member> = Vec::with_capacity(devices.len());
    for d in devices {
        if out.iter().any(|m| m.id == d.id()) {
            return Err(Error::DuplicateDevice { id: d.id() });
        }
        out.push(Member::of(d)?);
    }
    Ok(out)
}

/// `devices` are `members`, in order.
pub(crate) fn check_same(members: &[Member], devices: &[&PassthroughDevice]) -> Result<()> {
    for (index, m) in members.iter().enumerate() {
        if !devices.get(index).is_some_and(|d| m.is(d)) {
            return Err(Error::DeviceMismatch { index });
        }
    }
    if devices.len() != members.len() {
        return Err(Error::DeviceMismatch {
            index: members.len(),
        });
    }
    Ok(())
}

/// The indexes of `members`: those without P2P first, then those with it (each group in the
/// VMM's order). Devices without P2P stop first on the source and run first on the
/// destination, while every P2P device is quiesced but responsive.
fn non_p2p_first(members: &[Member]) -> Vec<usize> {
    let (without, with): (Vec<usize>, Vec<usize>) =
        (0..members.len()).partition(|&i| members.get(i).is_some_and(|m| !m.flags.p2p()));
    without.into_iter().chain(with).collect()
}

/// Source, step one of the switchover: every device with P2P to its P2P quiescent state
/// (`RUNNING -> RUNNING_P2P`, `PRE_COPY -> PRE_COPY_P2P`); others are left as they are.
pub(crate) fn quiesce(members: &mut [Member], log: &mut TransitionLog) -> Result<()> {
    for m in members.iter_mut().filter(|m| m.flags.p2p()) {
        let to = match m.state()? {
            State::Running => State::RunningP2p,
            State::PreCopy => State::PreCopyP2p,
            _ => continue,
        };
        m.walk(to, log)?;
    }
    Ok(())
}

/// Destination, once every device took its data and is in `STOP`: every device with P2P to
/// `RUNNING_P2P`, then every device to `RUNNING`, those without P2P first.
pub(crate) fn run_p2p_ordered(members: &mut [Member], log: &mut TransitionLog) -> Result<()> {
    for m in members.iter_mut().filter(|m| m.flags.p2p()) {
        m.walk(State::RunningP2p, log)?;
    }
    for i in non_p2p_first(members) {
        if let Some(m) = members.get_mut(i) {
            m.walk(State::Running, log)?;
        }
    }
    Ok(())
}

/// Source, step two: every device to `STOP_COPY`, those without P2P first. Returns each
/// device's new data fd, if its walk handed one out (a device coming from `STOP` or
/// `RUNNING_P2P`; from a pre-copy state the pre-copy fd carries on).
pub(crate) fn stop_copy_ordered(
    members: &mut [Member],
    log: &mut TransitionLog,
) -> Result<Vec<Option<MigrationDataFd>>> {
    let mut fds: Vec<Option<MigrationDataFd>> = members.iter().map(|_| None).collect();
    for i in non_p2p_first(members) {
        let (Some(m), Some(slot)) = (members.get_mut(i), fds.get_mut(i)) else {
            continue;
        };
        *slot = m.walk(State::StopCopy, log)?;
    }
    Ok(fds)
}

/// Source rollback: every device back to the state it started in (`RUNNING`, normally), in
/// the destination's order: P2P devices first made responsive (`RUNNING_P2P`), then those
/// without P2P, then the P2P ones, walked home. A device whose walk fails is reset by the walk
/// (QEMU's rule, into `RUNNING`) and then walked home too.
pub(crate) fn resume_on_source(members: &mut [Member], log: &mut TransitionLog) -> Rollback {
    for m in members.iter_mut().filter(|m| m.flags.p2p() && m.touched) {
        let to = match (m.home, m.state()) {
            (State::Stop, _) | (_, Ok(State::Running)) => continue,
            // Still running: end the pre-copy session in one arc.
            (State::Running, Ok(State::PreCopy)) => State::Running,
            _ => State::RunningP2p,
        };
        let _ = m.walk(to, log);
    }
    let mut rb = Rollback::default();
    for i in non_p2p_first(members) {
        let Some(m) = members.get_mut(i) else {
            continue;
        };
        if !m.touched {
            rb.untouched.push(m.id);
            continue;
        }
        let home = m.home;
        let back = m.walk(home, log).is_ok();
        match (m.reset_by_walk, back) {
            // Reset by its failed walk (into RUNNING), then walked home.
            (Some(true), _) => rb.reset.push(m.id),
            (None, true) => rb.resumed.push(m.id),
            (Some(false), _) | (None, false) => rb.failed.push(m.id),
        }
    }
    rb
}

/// Destination rollback: every device touched is reset to `RUNNING` (the kernel's rule to
/// abort `RESUMING`, and the only way back from a half-loaded device).
pub(crate) fn reset_touched(members: &mut [Member], log: &mut TransitionLog) -> Rollback {
    let mut rb = Rollback::default();
    for m in members.iter_mut() {
        if !m.touched {
            rb.untouched.push(m.id);
        } else if m.reset(log) {
            rb.reset.push(m.id);
        } else {
            rb.failed.push(m.id);
        }
    }
    rb
}

/// `Error::MigrationFailed` for `source` and `rollback`.
pub(crate) fn failed(source: Error, rollback: Rollback) -> Error {
    Error::MigrationFailed {
        source: Box::new(source),
        rollback,
    }
}
