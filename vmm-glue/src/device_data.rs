// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device-internal state: VFIO migration v2 driven through `migration-state`'s driver.
//!
//! A device built with [`PassthroughDevice::new_migratable`] (or given its migration handle
//! with [`PassthroughDevice::with_migration`]) carries its internal state in
//! [`DeviceState::device_data`]:
//!
//! * source, at the switchover: [`PassthroughDevice::save_stopped`] walks the device to
//!   `STOP_COPY` along the kernel's path (`RUNNING -> [RUNNING_P2P ->] STOP -> STOP_COPY`),
//!   reads the data fd to its end, leaves the device in `STOP` and returns the full state
//!   (VMM side from [`PassthroughDevice::save`], plus the blob). If the migration is
//!   abandoned, [`PassthroughDevice::run_device`] brings the device back to `RUNNING`;
//! * destination: [`PassthroughDevice::load_device_data`] walks the fresh device to
//!   `RESUMING`, writes the blob and moves it to `STOP` (the device consumes the data on
//!   that arc); the VMM then restores the VMM side ([`PassthroughDevice::restore`] or
//!   [`crate::restore_all`]) and, when the VM starts, calls
//!   [`PassthroughDevice::run_device`]. Interrupts are therefore bound before the device
//!   can raise one, as in QEMU, where the device leaves `RESUMING` when the VM starts.
//!
//! None of these waits on the guest: they only talk to the device. A device without a
//! migration handle keeps working as before: its blob is empty, and loading an empty blob
//! or running it does nothing.

use migration_state::{walk_device, DeviceState, State};
use vfio_core::{DataChunk, MigState, MigrationDataFd, VfioMigration};

use crate::{Error, PassthroughDevice, Result};

/// The largest device-internal state [`PassthroughDevice::save_stopped`] reads (1 GiB); a
/// device that streams more is treated as broken.
pub const MAX_DEVICE_DATA: usize = 1 << 30;

fn walk(
    mig: &dyn VfioMigration,
    to: State,
    recovery: Option<State>,
) -> Result<Option<MigrationDataFd>> {
    walk_device(mig, to, recovery)
        .map(|w| w.data_fd)
        .map_err(|source| Error::MigrationWalk { to, source })
}

/// Reads a STOP_COPY data fd to its end, refusing more than `limit` bytes.
fn read_to_end(fd: &mut MigrationDataFd, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match fd
            .read_chunk(MigState::StopCopy, &mut buf)
            .map_err(Error::MigrationData)?
        {
            DataChunk::Bytes(n) => {
                if out.len().saturating_add(n) > limit {
                    return Err(Error::DeviceDataTooLarge { limit });
                }
                out.extend_from_slice(buf.get(..n).unwrap_or_default());
            }
            // STOP_COPY ends with a zero read; "nothing more for now" (EAGAIN, a non-blocking
            // fd) is not expected on the fd the device handed out and is taken as the end too,
            // so a confused device cannot make the VMM spin.
            DataChunk::End | DataChunk::NothingMoreForNow => return Ok(out),
        }
    }
}

impl PassthroughDevice {
    /// Source side of the switchover: stops the device, reads its internal state and returns
    /// the whole [`DeviceState`] (the VMM side as [`PassthroughDevice::save`] captures it, and
    /// the blob in `device_data`). The device is left in `STOP`.
    ///
    /// Without a migration handle this is [`PassthroughDevice::save`] (empty blob, the device
    /// is not touched).
    ///
    /// # Errors
    /// [`Error::MigrationWalk`] if a transition fails (the device is recovered to `STOP`, or
    /// reset when it cannot get there); [`Error::NoDataFd`], [`Error::MigrationData`] or
    /// [`Error::DeviceDataTooLarge`] if the data cannot be read (the device is then moved on to
    /// `STOP`, dropping the stream). Call [`PassthroughDevice::run_device`] to resume the
    /// device on the source after a failure.
    pub fn save_stopped(&mut self) -> Result<DeviceState> {
        let mut state = self.save();
        let Some(mig) = self.mig.clone() else {
            return Ok(state);
        };
        let fd = walk(&*mig, State::StopCopy, Some(State::Stop))?;
        let data = match fd {
            Some(mut fd) => read_to_end(&mut fd, MAX_DEVICE_DATA),
            None => Err(Error::NoDataFd),
        };
        // Leave STOP_COPY whatever happened: the stream is done (or broken).
        let stopped = walk(&*mig, State::Stop, None);
        state.device_data = data?;
        stopped?;
        Ok(state)
    }

    /// Destination side: loads `state.device_data` into the device (`RESUMING`, write, `STOP`).
    /// The device stays stopped until [`PassthroughDevice::run_device`].
    ///
    /// Without a migration handle an empty blob is accepted and does nothing.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] for a non-empty blob and a device without migration (nothing
    /// happens); [`Error::MigrationWalk`] if a transition fails (the device is reset, as QEMU
    /// does without a recovery state); [`Error::NoDataFd`] or [`Error::MigrationData`] if the
    /// blob cannot be written (the device is moved on to `STOP`, and reset if it refuses).
    pub fn load_device_data(&mut self, state: &DeviceState) -> Result<()> {
        let Some(mig) = self.mig.clone() else {
            if state.device_data.is_empty() {
                return Ok(());
            }
            return Err(Error::StateMismatch(
                "device data for a device without migration",
            ));
        };
        let fd = walk(&*mig, State::Resuming, None)?;
        let written = match fd {
            Some(mut fd) => fd
                .write_all(&state.device_data)
                .map_err(Error::MigrationData),
            None => Err(Error::NoDataFd),
        };
        // The device takes the data on RESUMING -> STOP; a refused blob fails this arc.
        let stopped = walk(&*mig, State::Stop, None);
        written?;
        stopped.map(|_| ())
    }

    /// Moves the device to `RUNNING`: on the destination once the VM starts, on the source
    /// when a migration is abandoned. Does nothing without a migration handle or when the
    /// device already runs.
    ///
    /// # Errors
    /// [`Error::MigrationWalk`] if a transition fails (the device is reset).
    pub fn run_device(&mut self) -> Result<()> {
        match self.mig.clone() {
            Some(mig) => walk(&*mig, State::Running, None).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The device's VFIO migration state, or `None` without a migration handle.
    ///
    /// # Errors
    /// [`Error::MigrationState`] if the device cannot be asked.
    pub fn device_migration_state(&self) -> Result<Option<State>> {
        match &self.mig {
            Some(mig) => {
                let s = mig.migration_state().map_err(Error::MigrationState)?;
                Ok(Some(migration_state::driver::from_device_state(s)))
            }
            None => Ok(None),
        }
    }
}
