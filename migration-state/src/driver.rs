// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Walking a real (or simulated) device through a [`path`], one arc per call, with QEMU's
//! recovery rule: when an arc fails, go to the caller's recovery state if one was given and the
//! device can still reach it, otherwise reset the device.
//!
//! The whole path is computed, and refused if blocked, before the device is touched.

use vfio_core::{MigState, MigrationDataFd, VfioMigration};

use crate::fsm::{path, MigrationFlags, State};
use crate::{Error, Result};

/// What [`walk_device`] did when it succeeded.
#[derive(Debug)]
pub struct Walked {
    /// Arcs asked of the device (0 when it was already in the requested state).
    pub arcs: usize,
    /// The data fd of the last saving or resuming state entered, if any.
    pub data_fd: Option<MigrationDataFd>,
}

/// How a failed walk left the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// The device was walked to the caller's recovery state.
    RecoveredTo(State),
    /// The device was reset (it is `RUNNING` again, with its migration streams dropped).
    Reset,
    /// Even the reset failed; the device is unusable.
    ResetFailed,
}

/// Converts this crate's state to `vfio-core`'s ([`State::to_device_state`]).
pub fn to_device_state(state: State) -> MigState {
    state.to_device_state()
}

/// Converts `vfio-core`'s state to this crate's ([`State::from_device_state`]).
pub fn from_device_state(state: MigState) -> State {
    State::from_device_state(state)
}

/// The device's migration flags, or [`Error::NotMigratable`].
pub fn device_flags<D: VfioMigration + ?Sized>(device: &D) -> Result<MigrationFlags> {
    let features = device
        .migration_features()
        .map_err(Error::Device)?
        .ok_or(Error::NotMigratable)?;
    MigrationFlags::from_bits(features.bits())
}

/// Moves `device` to `to` along the kernel's path, one single arc per
/// `set_migration_state` call. On a failed arc, applies `recovery` as QEMU does (see the module
/// docs) and returns [`Error::Transition`] saying where the device ended up.
pub fn walk_device<D: VfioMigration + ?Sized>(
    device: &D,
    to: State,
    recovery: Option<State>,
) -> Result<Walked> {
    let flags = device_flags(device)?;
    let from = from_device_state(device.migration_state().map_err(Error::Device)?);
    let steps = path(flags, from, to)?;
    let mut data_fd = None;
    for (i, &step) in steps.iter().enumerate() {
        match device.set_migration_state(to_device_state(step)) {
            Ok(fd) => data_fd = fd.or(data_fd),
            Err(source) => {
                let outcome = recover(device, flags, recovery);
                return Err(Error::Transition {
                    requested: to,
                    failed_at: step,
                    completed_arcs: i,
                    recovery: outcome,
                    source,
                });
            }
        }
    }
    Ok(Walked {
        arcs: steps.len(),
        data_fd,
    })
}

fn recover<D: VfioMigration + ?Sized>(
    device: &D,
    flags: MigrationFlags,
    recovery: Option<State>,
) -> Recovery {
    if let Some(target) = recovery {
        let reached = device
            .migration_state()
            .ok()
            .map(from_device_state)
            .and_then(|now| path(flags, now, target).ok())
            .is_some_and(|steps| {
                steps
                    .iter()
                    .all(|s| device.set_migration_state(to_device_state(*s)).is_ok())
            });
        if reached {
            return Recovery::RecoveredTo(target);
        }
    }
    match device.reset() {
        Ok(()) => Recovery::Reset,
        Err(_) => Recovery::ResetFailed,
    }
}
