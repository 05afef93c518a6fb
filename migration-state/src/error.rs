// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The crate's error type.

use crate::fsm::{MigrationFlags, State};

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A raw state number is not one of the eight v2 states.
    #[error("{0} is not a VFIO migration v2 state")]
    InvalidStateValue(u32),
    /// The device's migration flags lack the mandatory `STOP_COPY` feature.
    #[error("migration flags {bits:#x} lack the mandatory STOP_COPY feature")]
    MissingStopCopy {
        /// The flag word as the device reported it.
        bits: u64,
    },
    /// A state (current or requested) is not supported by the device's flags
    /// (`state_flags_table`); the kernel's `vfio_mig_get_next_state()` answers `-EINVAL`.
    #[error("state {state} is not supported by a device with {flags}")]
    UnsupportedState {
        /// The unsupported state.
        state: State,
        /// The device's flags.
        flags: MigrationFlags,
    },
    /// The device is in the `ERROR` state; only a reset leaves it (the kernel's
    /// `vfio_mig_get_next_state()` answers `-EINVAL` with a warning).
    #[error("the device is in the ERROR state and must be reset")]
    DeviceInError,
    /// The kernel's state machine refuses this request: `vfio_from_fsm_table` leads it to its
    /// `ERROR` entry and `vfio_mig_get_next_state()` answers `-EINVAL` (for valid flags, only
    /// `STOP_COPY` -> `PRE_COPY` and `STOP_COPY` -> `PRE_COPY_P2P`).
    #[error("the transition {from} -> {to} is not allowed")]
    BlockedArc {
        /// Where the walk starts.
        from: State,
        /// The requested state.
        to: State,
    },

    /// A serialized state ended before a field it must contain.
    #[error(
        "device state truncated: {field} needs {needed} bytes at offset {offset}, {available} left"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Offset of the field in the stream.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the stream or section.
        available: usize,
    },
    /// The stream does not start with the device-state magic.
    #[error("not a device-state stream (bad magic)")]
    BadMagic,
    /// The stream was written by a newer (or unknown) format version than this reader supports.
    #[error("device-state format version {found} is not supported (this reader supports 1..={supported})")]
    UnsupportedVersion {
        /// The version in the stream.
        found: u16,
        /// The newest version this reader understands.
        supported: u16,
    },
    /// The header's payload length does not match the stream's length.
    #[error("device-state header announces {announced} bytes, stream has {actual}")]
    LengthMismatch {
        /// Total length the header announces.
        announced: u64,
        /// Actual stream length.
        actual: usize,
    },
    /// The stream's CRC32 does not match its contents.
    #[error("device-state checksum mismatch: header {expected:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// CRC32 stored in the header.
        expected: u32,
        /// CRC32 computed over the stream.
        computed: u32,
    },
    /// A section this format version requires is absent.
    #[error("device-state section {0:#x} is missing")]
    MissingSection(u16),
    /// A section appears twice.
    #[error("device-state section {0:#x} appears twice")]
    DuplicateSection(u16),
    /// A section tag this format version does not define.
    #[error("device-state section {tag:#x} is unknown in format version {version}")]
    UnknownSection {
        /// The tag.
        tag: u16,
        /// The stream's format version.
        version: u16,
    },
    /// A section's body is longer than its fields.
    #[error("device-state section {tag:#x} has {extra} trailing bytes")]
    TrailingBytes {
        /// The section's tag.
        tag: u16,
        /// Bytes left unread.
        extra: usize,
    },
    /// A field holds a value outside its domain, or contradicts another field.
    #[error("device-state field {field} has invalid value {value:#x}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// The offending value.
        value: u64,
    },
    /// The state uses something the requested (older) format version cannot carry.
    #[error("device-state {field} cannot be written in format version {version}")]
    NotRepresentable {
        /// The field that needs a newer version.
        field: &'static str,
        /// The requested version.
        version: u16,
    },
    /// The device does not support migration (no `VFIO_DEVICE_FEATURE_MIGRATION`).
    #[error("the device does not support VFIO migration")]
    NotMigratable,
    /// Querying the device's migration support or state failed.
    #[error("querying the device's migration state")]
    Device(#[source] vfio_core::Error),
    /// An arc of a device walk failed; `recovery` says where the device was left.
    #[error("moving the device to {requested} failed entering {failed_at} after {completed_arcs} arcs; recovery: {recovery:?}")]
    Transition {
        /// The state the walk was asked to reach.
        requested: State,
        /// The arc's target state that failed.
        failed_at: State,
        /// Arcs that succeeded before the failure.
        completed_arcs: usize,
        /// What the recovery rule did.
        recovery: crate::driver::Recovery,
        /// The device's error.
        #[source]
        source: vfio_core::Error,
    },
    /// Restoring a configuration-space snapshot into a `pci-config` space failed.
    #[error("restoring the configuration space")]
    ConfigRestore(#[source] pci_config::Error),
    /// Inserting or updating the notice capability in the configuration space failed.
    #[error("migration notice capability")]
    NoticeCapability(#[source] pci_config::Error),
    /// A device state is too large to encode (a length does not fit its field).
    #[error("device-state {field} is too large to encode ({len} bytes or entries)")]
    TooLarge {
        /// The field's name.
        field: &'static str,
        /// Its length.
        len: usize,
    },

    /// Reading or writing a migration stream failed.
    #[error("migration stream i/o failed")]
    StreamIo(#[source] std::io::Error),
    /// The migration stream ended early.
    #[error("migration stream truncated in the {what}")]
    StreamTruncated {
        /// What was being read.
        what: &'static str,
    },
    /// Not a migration stream (bad magic).
    #[error("not a migration stream (bad magic)")]
    StreamMagic,
    /// The stream was written by a version this reader does not know.
    #[error(
        "migration stream version {found} is not supported (this reader supports 1..={supported})"
    )]
    StreamVersion {
        /// The version in the stream.
        found: u16,
        /// The newest version this reader understands.
        supported: u16,
    },
    /// The stream carries another number of devices than the destination has.
    #[error("migration stream carries {found} devices, the destination has {expected}")]
    StreamDeviceCount {
        /// Devices in the stream.
        found: u16,
        /// Devices at the destination.
        expected: u16,
    },
    /// A device of the stream is not the destination's device at that index.
    #[error("migration stream device {index} is {found:?}, the destination's is {expected:?}")]
    StreamWrongDevice {
        /// Index in the stream.
        index: u16,
        /// The destination's device.
        expected: Box<crate::stream::DeviceIdentity>,
        /// What the stream says.
        found: Box<crate::stream::DeviceIdentity>,
    },
    /// A checksum does not match (`frame`: the frame's index; `None`: the header).
    #[error("migration stream corrupt (frame {frame:?})")]
    StreamCorrupt {
        /// Index of the frame, or `None` for the header.
        frame: Option<u64>,
    },
    /// A frame of an unknown kind.
    #[error("migration stream frame of unknown kind {kind}")]
    StreamFrameKind {
        /// The kind byte.
        kind: u8,
    },
    /// A frame longer than the reader accepts (or than a frame can be).
    #[error("migration stream frame of {length} bytes exceeds {max}")]
    StreamFrameTooLarge {
        /// Its announced length.
        length: u64,
        /// The limit.
        max: u32,
    },
    /// A frame names a device the stream does not carry.
    #[error("migration stream frame for unknown device {device}")]
    StreamUnknownDevice {
        /// The device index.
        device: u16,
    },
    /// A device's frames out of order (pre-copy, stop-copy, state), or the stream closed
    /// before a device's state.
    #[error("migration stream frames of device {device} out of order")]
    StreamOrder {
        /// The device index.
        device: u16,
    },
    /// More devices than a stream can carry.
    #[error("a migration stream carries at most 65535 devices")]
    StreamTooManyDevices,
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
