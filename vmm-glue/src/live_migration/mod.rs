// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Live migration of a VM's passthrough devices: pre-copy, stop-copy and resume through VFIO
//! migration v2, every device's data and VMM-side state in one byte stream, and dirty-page
//! tracking of guest memory.
//!
//! # Source
//!
//! 1. [`Outgoing::start`] with every device of the VM, the stream's [`Write`](std::io::Write)
//!    and, for dirty tracking, the VM's container: writes the stream header (each device's
//!    [`DeviceIdentity`]), starts dirty tracking
//!    ([`DirtyLog`]), then moves every device with `PRE_COPY` to it (`RUNNING -> PRE_COPY`, or
//!    `RUNNING_P2P -> PRE_COPY_P2P`).
//! 2. While the VM runs, [`Outgoing::precopy_round`] as often as the VMM likes: per device,
//!    `VFIO_MIG_GET_PRECOPY_INFO` (initial and dirty bytes), the data fd read up to its
//!    temporary end ("nothing more for now": mtty's `read() == 0`, the uAPI's `ENOMSG`) as
//!    pre-copy frames, `PRECOPY_INFO` again, and `VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` (the
//!    stop-copy size, to predict the downtime); then the devices' dirty pages OR into the
//!    VMM's bitmaps. [`PrecopyRound::converged`] says when `PRECOPY_INFO` reports nothing left
//!    on every device.
//! 3. With the vCPUs stopped, [`Outgoing::switchover`]: every device reaches its P2P quiescent
//!    state (`RUNNING_P2P`, `PRE_COPY_P2P`) before any device reaches `STOP` or `STOP_COPY`;
//!    each device's data fd is read in `STOP_COPY` to its end as stop-copy frames; the devices
//!    go to `STOP`; the last dirty pages are reported and tracking stops; each device's
//!    VMM-side state ([`PassthroughDevice::save`]) ends its part of the stream.
//!
//! # Destination
//!
//! 1. [`Incoming::start`] with the same devices (same ids, same order) reads and checks the
//!    header before touching a device (a stream for other devices or of another version is
//!    refused with nothing changed), then moves every device to `RESUMING`.
//! 2. [`Incoming::receive`] writes pre-copy and stop-copy data to each device's `RESUMING` fd
//!    as the frames arrive and keeps the VMM-side states, up to the stream's end frame.
//! 3. [`Received::resume`] (or [`Received::load`], the VMM's own restore, then
//!    [`Loaded::run`]): every device `RESUMING -> STOP` (the device takes its data), the
//!    VMM-side states restored ([`crate::restore_all`]), then every device reaches
//!    `RUNNING_P2P` before any reaches `RUNNING`.
//!
//! Any failure once a device was touched rolls the devices back before the error returns
//! ([`Error::MigrationFailed`] with its [`Rollback`]): on the source they are walked back to
//! the state they started in (`RUNNING`, P2P-ordered: the VM can go on there); on the
//! destination they are reset (`VFIO_DEVICE_RESET`, to `RUNNING`), as the uAPI requires to
//! abort a `RESUMING` session (Linux v6.12.117 `include/uapi/linux/vfio.h`, "To abort a
//! RESUMING session the device must be reset"). Dropping a migration half-way does the same.
//!
//! # The P2P order and devices without P2P
//!
//! `RUNNING_P2P` and `PRE_COPY_P2P` "must prevent the device from initiating any new P2P DMA
//! transactions" while it still answers them (the uAPI text above
//! `enum vfio_device_mig_state`), so a device that stops cannot be hit by a peer's DMA only
//! if every peer is quiesced first. A device without `P2P` has no such state: the kernel's
//! table takes it from `RUNNING` straight to `STOP` (`vfio_mig_get_next_state()` skips the
//! unsupported `RUNNING_P2P`; [`migration_state::path`] is that walk). Such devices stop first
//! once every P2P device is quiesced, and on the destination run first once every P2P device is
//! in `RUNNING_P2P`, so the P2P devices are responsive whenever they may be hit. With two or
//! more devices without `P2P` no order can give that guarantee between them; the migration
//! still follows the kernel's rules for each device ([`p2p_order_holds`] tells).
//!
//! # What never waits
//!
//! Nothing here waits on the guest: every step talks only to the devices, the container and
//! the stream. The guest migration notice ([`crate::notice`]) runs alongside, on the VMM's
//! clock, and its state travels in the VMM-side state.
//!
//! Every state change is recorded in order in a [`TransitionLog`] (device, arc, success, time),
//! so the VMM and tests can check the order across devices.
//!
//! # Example
//!
//! An mtty (the simulator's profile of the kernel's sample) migrated through a byte buffer; a
//! VMM gives a socket and `KernelDevice`s.
//!
//! ```
//! use std::sync::Arc;
//! use bar_mmap::{HostResourceSpace, PageSize};
//! use irq_routing::{MemoryBackend, Router};
//! use vfio_core::sim::SimDevice;
//! use vmm_glue::{DeviceOptions, Incoming, MigrationOptions, Outgoing, PassthroughDevice};
//! use vmm_glue::{Strategy, VmResources};
//!
//! let vm = || -> Result<VmResources, Box<dyn std::error::Error>> {
//!     let router = Arc::new(Router::new(MemoryBackend::new())?);
//!     let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)?.into_shared();
//!     Ok(VmResources::new(router, host, PageSize::SIZE_4K))
//! };
//! let opts = DeviceOptions { id: 1, ..DeviceOptions::default() };
//! let (src_vm, dst_vm) = (vm()?, vm()?);
//! let src = PassthroughDevice::new_migratable(Arc::new(SimDevice::mtty(2)?), &src_vm, opts.clone())?;
//! let mut dst = PassthroughDevice::new_migratable(Arc::new(SimDevice::mtty(2)?), &dst_vm, opts)?;
//!
//! // Source: pre-copy until PRECOPY_INFO reports nothing left, then the switchover.
//! let mut out = Outgoing::start(Vec::new(), &[&src], None, MigrationOptions::default())?;
//! let rounds = out.precopy_until_converged(10, &mut [], |_| {})?;
//! assert_eq!(rounds[0].devices[0].read, 24, "mtty's header");
//! let sent = out.switchover(&[&src], &mut [])?;
//! assert_eq!(sent.devices[0].stop_copy_bytes, 72, "its two ports");
//!
//! // Destination: the same devices, in the same order.
//! let received = Incoming::start(&sent.writer[..], &[&dst], MigrationOptions::default())?
//!     .receive()?;
//! received.resume(&mut [&mut dst], Strategy::VmWide)?;
//! assert_eq!(dst.save(), src.save());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod destination;
mod dirty;
mod log;
mod members;
mod source;

use migration_state::{DeviceIdentity, MigrationFlags};

pub use destination::{DestinationReport, DeviceReceipt, Incoming, Loaded, Received};
pub use dirty::{DirtyBitmap, DirtyLog};
pub use log::{LoggedChange, TransitionLog};
pub use members::Rollback;
pub use source::{DeviceRound, DeviceTransfer, Outgoing, PrecopyRound, RoundEnd, SourceReport};

use crate::{Error, PassthroughDevice, Result};

/// Limits of a live migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationOptions {
    /// The largest frame payload: device data is written in frames of at most this many bytes,
    /// and a reader refuses longer frames.
    pub max_frame: u32,
    /// Bytes read from one device in one pre-copy round before the round moves on (a device
    /// that keeps producing data cannot hold the round forever).
    pub round_budget: u64,
    /// The most `STOP_COPY` data one device may produce.
    pub max_device_data: u64,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        MigrationOptions {
            max_frame: 1 << 20,
            round_budget: 64 << 20,
            max_device_data: crate::device_data::MAX_DEVICE_DATA as u64,
        }
    }
}

/// Whether the P2P order can protect every device of a VM with these migration features: at
/// most one device lacks `P2P` (see the module docs).
pub fn p2p_order_holds(flags: &[MigrationFlags]) -> bool {
    flags.iter().filter(|f| !f.p2p()).count() <= 1
}

impl PassthroughDevice {
    /// What a migration stream says this device is: the VMM's id, the PCI vendor, device and
    /// subsystem IDs the guest sees, and the device's migration features. The destination
    /// refuses a stream whose identity is not its device's.
    ///
    /// # Errors
    /// [`Error::NotMigratable`] without a migration handle; [`Error::MigrationState`] if the
    /// device cannot be asked for its features.
    pub fn migration_identity(&self) -> Result<DeviceIdentity> {
        let mig = self
            .mig
            .as_ref()
            .ok_or(Error::NotMigratable { id: self.id() })?;
        let features = mig
            .migration_features()
            .map_err(Error::MigrationState)?
            .ok_or(Error::NotMigratable { id: self.id() })?;
        let word = |offset: u16| {
            let mut b = [0u8; 2];
            self.config_read(offset, &mut b);
            u16::from_le_bytes(b)
        };
        Ok(DeviceIdentity {
            id: self.id(),
            vendor: word(0x00),
            device: word(0x02),
            subsystem_vendor: word(0x2c),
            subsystem: word(0x2e),
            migration_flags: features.migration_flags(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p2p_order_holds_with_at_most_one_device_without_p2p() {
        use MigrationFlags as F;
        assert!(p2p_order_holds(&[]));
        assert!(p2p_order_holds(&[F::ALL, F::WITH_P2P, F::STOP_COPY]));
        assert!(!p2p_order_holds(&[F::ALL, F::WITH_PRE_COPY, F::STOP_COPY]));
    }
}
