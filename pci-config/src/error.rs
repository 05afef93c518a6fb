// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The crate's error type.

use crate::capability::CapabilityKind;

/// Everything that can go wrong while modelling a configuration space.
///
/// Every variant is returned before any state is changed: an operation that fails leaves the
/// [`ConfigSpace`](crate::ConfigSpace) exactly as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A byte buffer handed to [`ConfigSpace::from_bytes`](crate::ConfigSpace::from_bytes) is
    /// neither 256 nor 4096 bytes long.
    #[error("a configuration space is 256 or 4096 bytes, not {0}")]
    BadSpaceSize(usize),
    /// An access `[offset, offset + len)` does not lie inside the space.
    #[error("access of {len} bytes at {offset:#x} is outside the {size}-byte space")]
    OutOfRange {
        /// First byte of the access.
        offset: usize,
        /// Length of the access in bytes.
        len: usize,
        /// Size of the space (256 or 4096).
        size: usize,
    },
    /// Two mask or value buffers that must have the same length do not.
    #[error("mask of {mask} bytes does not match {data} data bytes")]
    MaskLength {
        /// Length of the mask buffer.
        mask: usize,
        /// Length of the data buffer.
        data: usize,
    },
    /// A capability chain visits the same offset twice.
    #[error("{kind:?} capability chain loops back to {offset:#x}")]
    CapabilityLoop {
        /// Which chain.
        kind: CapabilityKind,
        /// The offset reached a second time.
        offset: u16,
    },
    /// A next pointer points into the header (below 0x40 for standard capabilities, below
    /// 0x100 for extended ones).
    #[error("{kind:?} capability pointer at {from:#x} points into the header: {to:#x}")]
    PointerIntoHeader {
        /// Which chain.
        kind: CapabilityKind,
        /// Where the pointer is stored.
        from: u16,
        /// The pointer's value.
        to: u16,
    },
    /// A next pointer, or the capability it points to, runs past the end of the space.
    #[error("{kind:?} capability pointer at {from:#x} points past the end: {to:#x}")]
    PointerPastEnd {
        /// Which chain.
        kind: CapabilityKind,
        /// Where the pointer is stored.
        from: u16,
        /// The pointer's value.
        to: u16,
    },
    /// A next pointer is not dword aligned.
    #[error("{kind:?} capability pointer at {from:#x} is not dword aligned: {to:#x}")]
    MisalignedPointer {
        /// Which chain.
        kind: CapabilityKind,
        /// Where the pointer is stored.
        from: u16,
        /// The pointer's value.
        to: u16,
    },
    /// Two capabilities of a chain share bytes.
    #[error("{kind:?} capabilities at {first:#x} and {second:#x} overlap")]
    CapabilityOverlap {
        /// Which chain.
        kind: CapabilityKind,
        /// The capability that starts first.
        first: u16,
        /// The capability that starts inside the first one.
        second: u16,
    },
    /// No capability with this ID is in the chain.
    #[error("no {kind:?} capability with ID {id:#x}")]
    CapabilityNotFound {
        /// Which chain was searched.
        kind: CapabilityKind,
        /// The ID looked for.
        id: u16,
    },
    /// The capability passed in is not (or no longer) part of the chain.
    #[error("no {kind:?} capability at {offset:#x} in the chain")]
    NotInChain {
        /// Which chain.
        kind: CapabilityKind,
        /// The offset given.
        offset: u16,
    },
    /// A capability's bytes are malformed (too short, wrong ID for a typed view, bad length).
    #[error("malformed capability at {offset:#x}: {reason}")]
    MalformedCapability {
        /// Offset of the capability (0 for bytes not yet placed).
        offset: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// No free, dword-aligned, non-overlapping room is left for a capability of this size.
    #[error("no room for a {len}-byte {kind:?} capability")]
    NoRoom {
        /// Which chain.
        kind: CapabilityKind,
        /// Size of the capability.
        len: usize,
    },
    /// Extended capabilities need the 4 KiB extended space.
    #[error("extended capabilities need a 4 KiB configuration space")]
    NotExtended,
    /// A BAR definition is invalid (bad index, size not a power of two, overlapping a 64-bit
    /// pair, wrong header type...).
    #[error("invalid BAR {index}: {reason}")]
    InvalidBar {
        /// BAR index (6 is the expansion ROM).
        index: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// A line of `lspci -x` dump text could not be parsed.
    #[error("dump line {line}: {reason}")]
    Dump {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
