// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VFIO migration v2 state machine, a versioned device-state format, and an opt-in
//! guest-cooperative migration notice that never blocks on the guest.
//!
//! - [`fsm`]: which single arcs take a device from its current state to a requested one: the
//!   kernel's `vfio_mig_get_next_state()` and the drivers' walk over it, on a transcription
//!   of the kernel's tables ([`next_step`], [`path`]).
//! - [`device_state`] and [`format`](mod@format): what a VMM saves for a passthrough function, and a
//!   checksummed, versioned binary encoding whose decoder never panics.
//! - [`driver`]: walks a `vfio-core` device along that path with QEMU's recovery rule.
//! - [`stream`]: the framed, versioned, checksummed migration stream of a VM's devices (their
//!   data fds' bytes and their VMM-side state) over any `Read`/`Write`.
//! - [`notice`]: an opt-in vendor capability through which a cooperating guest driver learns
//!   of a migration; the VMM never waits on it past a deadline on its own clock.
//!
//! ```
//! use migration_state::{path, DeviceState, MigrationFlags, State};
//!
//! // A device without P2P or pre-copy goes RUNNING -> STOP -> STOP_COPY to be saved.
//! let steps = path(MigrationFlags::STOP_COPY, State::Running, State::StopCopy)?;
//! assert_eq!(steps, [State::Stop, State::StopCopy]);
//!
//! let saved = DeviceState { device_data: vec![1, 2, 3], ..DeviceState::default() };
//! let bytes = saved.encode()?;
//! assert_eq!(DeviceState::decode(&bytes)?, saved);
//! # Ok::<(), migration_state::Error>(())
//! ```

#![forbid(unsafe_code)]

mod codec;
pub mod device_state;
pub mod driver;
mod error;
pub mod format;
pub mod fsm;
pub mod notice;
pub mod stream;

pub use device_state::{
    BarKind, BarState, ConfigState, DeviceState, InterruptMode, MsiState, MsixEntry, MsixState,
    NoticeState,
};
pub use driver::{walk_device, walk_device_observed, Recovery, WalkEvent, Walked};
pub use error::{Error, Result};
pub use format::FormatVersion;
pub use fsm::{next_step, path, MigrationFlags, State};
pub use notice::{GuestNotice, NoticeInterrupt, NoticeStatus, ProceedReason};
pub use stream::{DeviceIdentity, Frame, StreamReader, StreamWriter, STREAM_VERSION};
