// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The opt-in guest migration notice (`migration-state`'s [`GuestNotice`]) on a
//! passthrough device.
//!
//! With [`DeviceOptions::guest_notice`](crate::DeviceOptions::guest_notice) set, the device's
//! emulated config space carries the notice capability. A cooperating guest driver opts in by
//! writing the vector it wants notices on and its enable bit; it acknowledges a notice by
//! writing the announced generation back. Those are ordinary config writes
//! ([`PassthroughDevice::config_write`]) and never wait for the VMM.
//!
//! The VMM side never waits for the guest either:
//!
//! 1. source: [`PassthroughDevice::request_migration_notice`] announces the migration, raises
//!    the guest's vector and returns at once, with a deadline on the VMM's own clock;
//! 2. the VMM's migration loop calls [`PassthroughDevice::poll_migration_notice`] with its
//!    clock, and goes on once it does not answer [`NoticeStatus::Waiting`]: when the guest
//!    acknowledged, or at the deadline if it never does;
//! 3. destination, after restore and once the VM runs:
//!    [`PassthroughDevice::notify_guest_resumed`] tells the guest to reset its driver, on the
//!    vector it chose (restored with the state).
//!
//! The vector is the guest's input: it is checked against what the guest enabled (MSI-X table
//! size or MSI Multiple Message Enable) when raised, and a bad one is reported as
//! [`Raised::NoSuchVector`] without failing the migration.

use std::time::Duration;

use migration_state::{GuestNotice, NoticeInterrupt, NoticeStatus};

use crate::raise::Raised;
use crate::{Error, PassthroughDevice, Result};

/// What announcing a notice to the guest did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeDelivery {
    /// The guest driver has not opted in: nothing was announced or raised.
    GuestNotEnabled,
    /// Announced in the capability; the guest's vector was raised with this outcome.
    Announced {
        /// The vector the guest chose.
        vector: u16,
        /// What raising it did.
        raised: Raised,
    },
}

impl PassthroughDevice {
    /// Whether the device carries the guest migration notice capability.
    pub fn has_guest_notice(&self) -> bool {
        self.notice.is_some()
    }

    /// The notice protocol state (offset, generation), if the device carries it.
    pub fn guest_notice(&self) -> Option<&GuestNotice> {
        self.notice.as_ref()
    }

    fn announced(&mut self, irq: Option<NoticeInterrupt>) -> NoticeDelivery {
        match irq {
            Some(NoticeInterrupt { vector }) => NoticeDelivery::Announced {
                vector,
                raised: self.raise_vector(vector),
            },
            None => NoticeDelivery::GuestNotEnabled,
        }
    }

    /// Source side: announces an imminent migration at `now` (the VMM's monotonic clock)
    /// and raises the guest's vector. The guest has until `now + timeout` to acknowledge;
    /// poll with [`PassthroughDevice::poll_migration_notice`]. Returns at once.
    ///
    /// # Errors
    /// [`Error::NoticeDisabled`] if the device was built without the notice;
    /// [`Error::Notice`] if the capability cannot be updated.
    pub fn request_migration_notice(
        &mut self,
        now: Duration,
        timeout: Duration,
    ) -> Result<NoticeDelivery> {
        let notice = self.notice.as_mut().ok_or(Error::NoticeDisabled)?;
        let irq = notice
            .request(&mut self.cfg.space, now, timeout)
            .map_err(Error::Notice)?;
        Ok(self.announced(irq))
    }

    /// Where the notice stands at `now`. Non-blocking. The VMM proceeds with the migration
    /// unless this answers [`NoticeStatus::Waiting`] (a device without the notice answers
    /// [`NoticeStatus::Idle`]).
    pub fn poll_migration_notice(&mut self, now: Duration) -> NoticeStatus {
        match &mut self.notice {
            Some(n) => n.poll(&self.cfg.space, now),
            None => NoticeStatus::Idle,
        }
    }

    /// Destination side, after the state is restored and the VM runs: tells the guest to
    /// reset its driver and raises the vector it chose before the migration.
    ///
    /// # Errors
    /// As [`PassthroughDevice::request_migration_notice`].
    pub fn notify_guest_resumed(&mut self) -> Result<NoticeDelivery> {
        let notice = self.notice.as_mut().ok_or(Error::NoticeDisabled)?;
        let irq = notice.resumed(&mut self.cfg.space).map_err(Error::Notice)?;
        Ok(self.announced(irq))
    }

    /// Source side, the migration was abandoned: back to idle, and the guest is told.
    ///
    /// # Errors
    /// As [`PassthroughDevice::request_migration_notice`].
    pub fn cancel_migration_notice(&mut self) -> Result<NoticeDelivery> {
        let notice = self.notice.as_mut().ok_or(Error::NoticeDisabled)?;
        let irq = notice.cancel(&mut self.cfg.space).map_err(Error::Notice)?;
        Ok(self.announced(irq))
    }
}
