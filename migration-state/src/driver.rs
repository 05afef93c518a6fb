// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Walking a real (or simulated) device through a [`path`], one arc per call, with QEMU's
//! recovery rule: when an arc fails, go to the caller's recovery state if one was given and the
//! device can still reach it, otherwise reset the device.
//!
//! The whole path is computed, and refused if blocked, before the device is touched.
//! [`walk_device_observed`] reports every request it makes of the device ([`WalkEvent`]), in
//! order, so a caller moving several devices can record the order of their state changes.

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

/// One request a walk made of the device, in the order it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkEvent {
    /// A single-arc `set_migration_state` from `from` to `to` (recovery arcs included).
    Arc {
        /// The state the device was in.
        from: State,
        /// The state asked for.
        to: State,
        /// Whether the device took the arc.
        succeeded: bool,
    },
    /// `VFIO_DEVICE_RESET` (QEMU's rule when the recovery state cannot be reached); a reset
    /// device is in `RUNNING`.
    Reset {
        /// Whether the reset succeeded.
        succeeded: bool,
    },
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
    walk_device_observed(device, to, recovery, &mut |_| {})
}

/// [`walk_device`], telling `observe` about every request made of the device as it is made:
/// each single arc (the walk's and the recovery's) and a reset.
pub fn walk_device_observed<D: VfioMigration + ?Sized>(
    device: &D,
    to: State,
    recovery: Option<State>,
    observe: &mut dyn FnMut(WalkEvent),
) -> Result<Walked> {
    let flags = device_flags(device)?;
    let from = from_device_state(device.migration_state().map_err(Error::Device)?);
    let steps = path(flags, from, to)?;
    let mut data_fd = None;
    let mut at = from;
    for (i, &step) in steps.iter().enumerate() {
        let result = device.set_migration_state(to_device_state(step));
        observe(WalkEvent::Arc {
            from: at,
            to: step,
            succeeded: result.is_ok(),
        });
        match result {
            Ok(fd) => {
                data_fd = fd.or(data_fd);
                at = step;
            }
            Err(source) => {
                let outcome = recover(device, flags, recovery, observe);
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
    observe: &mut dyn FnMut(WalkEvent),
) -> Recovery {
    if let Some(target) = recovery {
        let now = device.migration_state().ok().map(from_device_state);
        let steps = now.and_then(|now| Some((now, path(flags, now, target).ok()?)));
        if let Some((mut at, steps)) = steps {
            let reached = steps.iter().all(|&s| {
                let ok = device.set_migration_state(to_device_state(s)).is_ok();
                observe(WalkEvent::Arc {
                    from: at,
                    to: s,
                    succeeded: ok,
                });
                at = s;
                ok
            });
            if reached {
                return Recovery::RecoveredTo(target);
            }
        }
    }
    let succeeded = device.reset().is_ok();
    observe(WalkEvent::Reset { succeeded });
    if succeeded {
        Recovery::Reset
    } else {
        Recovery::ResetFailed
    }
}
