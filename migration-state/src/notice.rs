// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An opt-in, device-generic, guest-cooperative migration notice.
//!
//! A virtual vendor-specific capability (ID 0x09) tells a cooperating guest driver that its
//! device is about to be migrated, and afterwards that it must reset its driver. Unlike the
//! rejected SR-IOV-only design this replaces, the VMM never waits on the guest:
//!
//! - [`GuestNotice::request`] announces the migration and returns at once, with the vector
//!   to raise (if the guest opted in) and a deadline on the VMM's own clock;
//! - the guest acknowledges by writing the announced generation into the capability, a plain
//!   config write that needs no lock the migration path holds;
//! - [`GuestNotice::poll`] is non-blocking: it says to proceed once the guest acknowledged or
//!   the deadline passed, so a stuck guest delays migration by at most the deadline;
//! - on the destination, [`GuestNotice::resumed`] flags "reset your driver" and returns the
//!   vector the guest chose, for the VMM to raise.
//!
//! Time is whatever monotonic clock the VMM passes in as a [`Duration`] since an epoch of its
//! choosing, which keeps this module pure and testable without sleeping.
//!
//! # Capability layout (20 bytes)
//!
//! | offset | size | guest access | field |
//! |---|---|---|---|
//! | 0 | 1 | RO | capability ID 0x09 (vendor-specific) |
//! | 1 | 1 | RO | next pointer |
//! | 2 | 1 | RO | length, 20 |
//! | 3 | 1 | RO | protocol version, 1 |
//! | 4 | 4 | RO | signature `"VMGN"` |
//! | 8 | 1 | RO | host status: 0 idle, 1 migration pending, 2 resumed, reset the driver |
//! | 9 | 1 | RW | guest control: bit 0 set when the driver handles notices |
//! | 10 | 2 | RW | the interrupt vector (MSI-X entry or MSI vector) for notices |
//! | 12 | 4 | RO | host generation, bumped by each notice |
//! | 16 | 4 | RW | guest acknowledgement: the last generation the driver handled |

use std::time::Duration;

use pci_config::capability::CapabilityKind;
use pci_config::{ids, ConfigSpace};

use crate::device_state::NoticeState;
use crate::{Error, Result};

/// Length of the notice capability in bytes.
pub const CAPABILITY_LEN: usize = 20;
/// The protocol version in byte 3.
pub const PROTOCOL_VERSION: u8 = 1;
/// The signature at offset 4 that tells this capability from other vendor-specific ones.
pub const SIGNATURE: [u8; 4] = *b"VMGN";

/// Offset of the host status byte.
pub const HOST_STATUS: usize = 8;
/// Offset of the guest control byte.
pub const GUEST_CONTROL: usize = 9;
/// Offset of the guest-chosen vector (u16).
pub const VECTOR: usize = 10;
/// Offset of the host generation (u32).
pub const HOST_GENERATION: usize = 12;
/// Offset of the guest acknowledgement (u32).
pub const GUEST_ACK: usize = 16;

/// Guest control bit: the driver handles notices.
pub const CONTROL_ENABLED: u8 = 1;

/// What the host status byte announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HostStatus {
    /// Nothing to do.
    Idle = 0,
    /// The device will be migrated; quiesce and acknowledge.
    MigrationPending = 1,
    /// The device was migrated; reset the driver and acknowledge.
    ResetRequired = 2,
}

/// The capability's bytes as first inserted (next pointer zero; the chain sets it).
pub fn capability_bytes() -> [u8; CAPABILITY_LEN] {
    let mut b = [0u8; CAPABILITY_LEN];
    b[0] = ids::CAP_VENDOR;
    b[2] = CAPABILITY_LEN as u8;
    b[3] = PROTOCOL_VERSION;
    b[4..8].copy_from_slice(&SIGNATURE);
    b
}

/// The guest write mask of the capability: control, vector and acknowledgement are writable.
pub fn capability_write_mask() -> [u8; CAPABILITY_LEN] {
    let mut m = [0u8; CAPABILITY_LEN];
    m[GUEST_CONTROL] = CONTROL_ENABLED;
    m[VECTOR..VECTOR + 2].fill(0xff);
    m[GUEST_ACK..GUEST_ACK + 4].fill(0xff);
    m
}

/// The VMM's verdict from [`GuestNotice::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeStatus {
    /// No notice outstanding.
    Idle,
    /// Waiting for the guest; poll again before `deadline`, proceed at it regardless.
    Waiting {
        /// When the VMM proceeds without an answer.
        deadline: Duration,
    },
    /// The VMM may go on with the migration.
    Proceed(ProceedReason),
}

/// Why [`NoticeStatus::Proceed`] was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProceedReason {
    /// The guest acknowledged the notice.
    Acknowledged,
    /// The guest did not answer before the deadline.
    DeadlineExpired,
    /// The guest never opted in, so there was nobody to tell.
    GuestNotEnabled,
}

/// An interrupt the VMM must raise to tell the guest about a notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoticeInterrupt {
    /// The vector the guest chose (an MSI-X table entry, or an MSI vector).
    pub vector: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Pending { deadline: Duration },
    Decided(ProceedReason),
    ResetRequired,
}

/// The notice protocol for one device. All methods return at once; none waits on the guest.
#[derive(Debug, Clone)]
pub struct GuestNotice {
    offset: u16,
    phase: Phase,
    generation: u32,
}

impl GuestNotice {
    /// Inserts the notice capability into `config` (at a free offset of the standard chain,
    /// emulated, with the guest-writable fields of [`capability_write_mask`]) and returns the
    /// protocol state for it. On error `config` is unchanged.
    pub fn insert(config: &mut ConfigSpace) -> Result<Self> {
        let mut staged = config.clone();
        let offset = staged
            .insert_capability(CapabilityKind::Standard, &capability_bytes())
            .map_err(Error::NoticeCapability)?;
        staged
            .set_write_mask(usize::from(offset), &capability_write_mask())
            .map_err(Error::NoticeCapability)?;
        *config = staged;
        Ok(Self {
            offset,
            phase: Phase::Idle,
            generation: 0,
        })
    }

    /// Rebuilds the protocol state on a migration destination from its saved state. The
    /// capability's bytes come back with the rest of the configuration space.
    pub fn restore(state: &NoticeState) -> Self {
        Self {
            offset: u16::from(state.capability_offset),
            phase: Phase::Idle,
            generation: state.generation,
        }
    }

    /// What a migration stream carries for this notice.
    pub fn save(&self, config: &ConfigSpace) -> NoticeState {
        NoticeState {
            capability_offset: self.offset as u8,
            guest_enabled: self.guest_enabled(config),
            vector: self.read_u16(config, VECTOR),
            generation: self.generation,
        }
    }

    /// Offset of the capability in configuration space.
    pub fn offset(&self) -> u16 {
        self.offset
    }

    /// Whether a config access at `offset..offset + len` touches the capability, so the VMM
    /// knows to call [`GuestNotice::poll`] (or simply poll on its own schedule).
    pub fn covers(&self, offset: usize, len: usize) -> bool {
        let start = usize::from(self.offset);
        offset < start + CAPABILITY_LEN && start < offset.saturating_add(len)
    }

    /// Whether the guest driver opted in.
    pub fn guest_enabled(&self, config: &ConfigSpace) -> bool {
        self.read_u8(config, GUEST_CONTROL) & CONTROL_ENABLED != 0
    }

    /// The current generation (bumped by every notice).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Announces an imminent migration at time `now`; the guest has until `now + timeout`.
    ///
    /// Returns the interrupt to raise when the guest opted in, `None` otherwise (then
    /// [`GuestNotice::poll`] says to proceed at once). Never waits.
    pub fn request(
        &mut self,
        config: &mut ConfigSpace,
        now: Duration,
        timeout: Duration,
    ) -> Result<Option<NoticeInterrupt>> {
        if !self.guest_enabled(config) {
            self.phase = Phase::Decided(ProceedReason::GuestNotEnabled);
            return Ok(None);
        }
        let generation = self.generation.wrapping_add(1);
        self.announce(config, HostStatus::MigrationPending, generation)?;
        self.phase = Phase::Pending {
            deadline: now.saturating_add(timeout),
        };
        Ok(Some(NoticeInterrupt {
            vector: self.read_u16(config, VECTOR),
        }))
    }

    /// Where the protocol stands at time `now`. Non-blocking; call it from the migration loop.
    pub fn poll(&mut self, config: &ConfigSpace, now: Duration) -> NoticeStatus {
        match self.phase {
            Phase::Idle => NoticeStatus::Idle,
            Phase::Decided(reason) => NoticeStatus::Proceed(reason),
            Phase::Pending { deadline } => {
                let reason = if self.acknowledged(config) {
                    ProceedReason::Acknowledged
                } else if now >= deadline {
                    ProceedReason::DeadlineExpired
                } else {
                    return NoticeStatus::Waiting { deadline };
                };
                self.phase = Phase::Decided(reason);
                NoticeStatus::Proceed(reason)
            }
            Phase::ResetRequired => {
                if self.acknowledged(config) {
                    self.phase = Phase::Idle;
                    NoticeStatus::Idle
                } else {
                    NoticeStatus::Proceed(ProceedReason::DeadlineExpired)
                }
            }
        }
    }

    /// On the destination, after the device state is restored and the VM resumed: tells the
    /// guest to reset its driver. Returns the interrupt to raise, or `None` if the guest never
    /// opted in. The guest acknowledges by writing the new generation.
    pub fn resumed(&mut self, config: &mut ConfigSpace) -> Result<Option<NoticeInterrupt>> {
        if !self.guest_enabled(config) {
            self.phase = Phase::Idle;
            return Ok(None);
        }
        let generation = self.generation.wrapping_add(1);
        self.announce(config, HostStatus::ResetRequired, generation)?;
        self.phase = Phase::ResetRequired;
        Ok(Some(NoticeInterrupt {
            vector: self.read_u16(config, VECTOR),
        }))
    }

    /// The migration was cancelled on the source: back to idle. Returns the interrupt to
    /// raise so the guest sees the status change, if it opted in.
    pub fn cancel(&mut self, config: &mut ConfigSpace) -> Result<Option<NoticeInterrupt>> {
        self.phase = Phase::Idle;
        if !self.guest_enabled(config) {
            return Ok(None);
        }
        let generation = self.generation.wrapping_add(1);
        self.announce(config, HostStatus::Idle, generation)?;
        Ok(Some(NoticeInterrupt {
            vector: self.read_u16(config, VECTOR),
        }))
    }

    fn acknowledged(&self, config: &ConfigSpace) -> bool {
        self.read_u32(config, GUEST_ACK) == self.generation
    }

    fn announce(
        &mut self,
        config: &mut ConfigSpace,
        status: HostStatus,
        generation: u32,
    ) -> Result<()> {
        let base = usize::from(self.offset);
        config
            .set_emulated_bytes(base + HOST_STATUS, &[status as u8])
            .and_then(|()| {
                config.set_emulated_bytes(base + HOST_GENERATION, &generation.to_le_bytes())
            })
            .map_err(Error::NoticeCapability)?;
        self.generation = generation;
        Ok(())
    }

    fn read_u8(&self, config: &ConfigSpace, field: usize) -> u8 {
        config
            .read_u8(usize::from(self.offset) + field)
            .unwrap_or(0)
    }

    fn read_u16(&self, config: &ConfigSpace, field: usize) -> u16 {
        config
            .read_u16(usize::from(self.offset) + field)
            .unwrap_or(0)
    }

    fn read_u32(&self, config: &ConfigSpace, field: usize) -> u32 {
        config
            .read_u32(usize::from(self.offset) + field)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn setup() -> (ConfigSpace, GuestNotice) {
        let mut cs = ConfigSpace::new_conventional();
        let notice = GuestNotice::insert(&mut cs).unwrap();
        (cs, notice)
    }

    fn guest_write(cs: &mut ConfigSpace, n: &GuestNotice, field: usize, data: &[u8]) {
        cs.write(usize::from(n.offset()) + field, data).unwrap();
    }

    fn guest_opt_in(cs: &mut ConfigSpace, n: &GuestNotice, vector: u16) {
        guest_write(cs, n, VECTOR, &vector.to_le_bytes());
        guest_write(cs, n, GUEST_CONTROL, &[CONTROL_ENABLED]);
    }

    #[test]
    fn capability_is_found_in_the_chain() {
        let (cs, n) = setup();
        let cap = cs.find_standard(ids::CAP_VENDOR).unwrap();
        assert_eq!(cap.offset, n.offset());
        assert_eq!(usize::from(cap.len), CAPABILITY_LEN);
        let mut sig = [0u8; 4];
        cs.read(usize::from(n.offset()) + 4, &mut sig).unwrap();
        assert_eq!(sig, SIGNATURE);
    }

    #[test]
    fn guest_cannot_write_host_fields() {
        let (mut cs, n) = setup();
        guest_write(&mut cs, &n, HOST_STATUS, &[0xff]);
        guest_write(&mut cs, &n, HOST_GENERATION, &[0xff; 4]);
        guest_write(&mut cs, &n, 4, &[0; 4]);
        assert_eq!(n.read_u8(&cs, HOST_STATUS), 0);
        assert_eq!(n.read_u32(&cs, HOST_GENERATION), 0);
        assert_eq!(n.read_u32(&cs, 4), u32::from_le_bytes(SIGNATURE));
    }

    #[test]
    fn guest_not_enabled_proceeds_at_once() {
        let (mut cs, mut n) = setup();
        assert_eq!(n.request(&mut cs, Duration::ZERO, SECOND).unwrap(), None);
        assert_eq!(
            n.poll(&cs, Duration::ZERO),
            NoticeStatus::Proceed(ProceedReason::GuestNotEnabled)
        );
        // Nothing was announced to a guest that does not listen.
        assert_eq!(n.read_u8(&cs, HOST_STATUS), HostStatus::Idle as u8);
    }

    #[test]
    fn acknowledged_notice_proceeds_before_deadline() {
        let (mut cs, mut n) = setup();
        guest_opt_in(&mut cs, &n, 5);
        let irq = n.request(&mut cs, SECOND, SECOND).unwrap();
        assert_eq!(irq, Some(NoticeInterrupt { vector: 5 }));
        assert_eq!(
            n.read_u8(&cs, HOST_STATUS),
            HostStatus::MigrationPending as u8
        );
        assert_eq!(
            n.poll(&cs, SECOND),
            NoticeStatus::Waiting {
                deadline: 2 * SECOND
            }
        );
        // A stale acknowledgement does not count.
        guest_write(&mut cs, &n, GUEST_ACK, &0u32.to_le_bytes());
        assert!(matches!(n.poll(&cs, SECOND), NoticeStatus::Waiting { .. }));
        guest_write(&mut cs, &n, GUEST_ACK, &n.generation().to_le_bytes());
        assert_eq!(
            n.poll(&cs, SECOND + Duration::from_millis(1)),
            NoticeStatus::Proceed(ProceedReason::Acknowledged)
        );
    }

    #[test]
    fn resumed_tells_guest_to_reset_on_its_vector() {
        let (mut src_cs, mut src) = setup();
        guest_opt_in(&mut src_cs, &src, 9);
        src.request(&mut src_cs, Duration::ZERO, SECOND).unwrap();
        let saved = src.save(&src_cs);
        assert_eq!(saved.vector, 9);
        assert!(saved.guest_enabled);

        // The destination's config space comes back with the emulated bytes and masks.
        let mut dst_cs = src_cs.clone();
        let mut dst = GuestNotice::restore(&saved);
        assert_eq!(dst.offset(), src.offset());
        let irq = dst.resumed(&mut dst_cs).unwrap();
        assert_eq!(irq, Some(NoticeInterrupt { vector: 9 }));
        assert_eq!(
            dst.read_u8(&dst_cs, HOST_STATUS),
            HostStatus::ResetRequired as u8
        );
        assert_eq!(dst.generation(), saved.generation + 1);
        guest_write(
            &mut dst_cs,
            &dst,
            GUEST_ACK,
            &dst.generation().to_le_bytes(),
        );
        assert_eq!(dst.poll(&dst_cs, Duration::ZERO), NoticeStatus::Idle);
    }

    #[test]
    fn insert_without_room_leaves_config_untouched() {
        let mut cs = ConfigSpace::new_conventional();
        // Fill the capability area with vendor capabilities until it is full.
        let mut inserted = 0;
        while GuestNotice::insert(&mut cs).is_ok() {
            inserted += 1;
        }
        assert_eq!(inserted, (0x100 - 0x40) / 20);
        let before = cs.clone();
        assert!(matches!(
            GuestNotice::insert(&mut cs),
            Err(Error::NoticeCapability(_))
        ));
        assert_eq!(cs.guest_view(), before.guest_view());
    }
}
