// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulated device's migration: [`VfioMigration`] and the test hooks (fault injection,
//! the arcs taken, the generic profile's blob). The model is in [`super::migration`].

use std::sync::{Arc, Mutex};

use crate::device::VfioMigration;
use crate::error::{errno, Error, Result};
use crate::migration::{MigState, MigrationDataFd, MigrationFeatures};

use super::migration::{lock, ArcFault, DeviceContent, MigSim};
use super::{ArcFailure, MigrationArc, SimDevice, SIM_MAX_BLOB};

fn not_migratable() -> Error {
    Error::SimConfig("device does not support migration")
}

impl SimDevice {
    fn migration(&self) -> Option<Arc<Mutex<MigSim>>> {
        self.lock().migration.clone()
    }

    /// Make every migration arc `from -> to` fail with `errno` until
    /// [`SimDevice::clear_faults`], leaving the device as `leaves` says. The arc is one single
    /// step of the kernel's walk, so a request that passes through it fails there too (after
    /// the arcs before it were taken). Fails when the device does not support migration.
    pub fn fail_migration_arc(
        &self,
        from: MigState,
        to: MigState,
        errno: i32,
        leaves: ArcFailure,
    ) -> Result<()> {
        let m = self.migration().ok_or_else(not_migratable)?;
        lock(&m).core.fault = Some(ArcFault {
            from,
            to,
            errno,
            leaves,
        });
        Ok(())
    }

    /// Every single-state migration arc the device was asked to take, in order, failed ones
    /// included (empty without migration support). A reset does not clear it.
    pub fn migration_arcs(&self) -> Vec<MigrationArc> {
        self.migration()
            .map(|m| lock(&m).core.arcs.clone())
            .unwrap_or_default()
    }

    /// The generic profile's device-internal state, which migration saves and restores
    /// (`None` without migration, and for the mtty profile, whose state is its UART
    /// registers).
    pub fn device_state_blob(&self) -> Option<Vec<u8>> {
        if self.lock().mtty.is_some() {
            return None;
        }
        self.migration().map(|m| lock(&m).blob.0.clone())
    }

    /// Change the generic profile's device-internal state (the device doing work). While the
    /// device is in a pre-copy state the new state is appended to the saving fd and reported
    /// as dirty bytes by `VFIO_MIG_GET_PRECOPY_INFO`.
    pub fn set_device_state_blob(&self, blob: Vec<u8>) -> Result<()> {
        if blob.len() > SIM_MAX_BLOB {
            return Err(Error::SimConfig("migration blob larger than SIM_MAX_BLOB"));
        }
        if self.lock().mtty.is_some() {
            return Err(Error::SimConfig("the mtty profile has no blob"));
        }
        let m = self.migration().ok_or_else(not_migratable)?;
        lock(&m).set_blob(blob);
        Ok(())
    }
}

impl VfioMigration for SimDevice {
    fn migration_features(&self) -> Result<Option<MigrationFeatures>> {
        let s = &mut *self.lock();
        s.counters.migration_queries += 1;
        Ok(s.migration.as_ref().map(|m| lock(m).core.features))
    }

    fn set_migration_state(&self, state: MigState) -> Result<Option<MigrationDataFd>> {
        let s = &mut *self.lock();
        s.counters.migration_set_state += 1;
        let Some(m) = s.migration.clone() else {
            return Err(Error::SetMigrationState {
                requested: state,
                source: errno(libc::ENOTTY),
            });
        };
        let content = s.mtty.as_deref_mut().map(|c| c as &mut dyn DeviceContent);
        let result = lock(&m).set_state(&m, state, content);
        result
    }

    fn migration_state(&self) -> Result<MigState> {
        let s = &mut *self.lock();
        s.counters.migration_queries += 1;
        s.migration
            .as_ref()
            .map(|m| lock(m).core.state)
            .ok_or_else(|| Error::GetMigrationState(errno(libc::ENOTTY)))
    }

    fn migration_data_size(&self) -> Result<u64> {
        let s = &mut *self.lock();
        s.counters.migration_queries += 1;
        let m = s
            .migration
            .as_ref()
            .ok_or_else(|| Error::MigrationDataSize(errno(libc::ENOTTY)))?;
        let content = s.mtty.as_deref().map(|c| c as &dyn DeviceContent);
        let size = lock(m).data_size(content);
        Ok(size)
    }
}
