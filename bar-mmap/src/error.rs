// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The crate's one error type.

use std::io;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("memory slot {slot} could not be set")]
    MemorySlot {
        /// The slot number.
        slot: u32,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A memory slot number is already in use.
    #[error("memory slot {0} is already installed")]
    SlotBusy(u32),
    /// A memory slot number is not installed.
    #[error("memory slot {0} is not installed")]
    SlotNotInstalled(u32),
    /// Every slot number of the pool is in use.
    #[error("no free memory slot in the pool")]
    NoFreeSlot,
    /// A page size that is not a power of two of at least 4 KiB.
    #[error("page size {0:#x} is not a power of two of at least 4 KiB")]
    InvalidPageSize(u64),
    /// A BAR description whose address range wraps around the 64-bit space.
    #[error("BAR {index} at {addr:#x} with size {size:#x} overflows the address space")]
    BarOverflow {
        /// BAR index.
        index: u8,
        /// Host address or offset the BAR starts at.
        addr: u64,
        /// BAR size in bytes.
        size: u64,
    },
    /// The plan has no BAR with this index.
    #[error("the device has no BAR {0}")]
    UnknownBar(u8),
    /// The same BAR index was described twice.
    #[error("BAR {0} is described more than once")]
    DuplicateBar(u8),
    /// A range of the host resource space could not be reserved because part of it is taken.
    #[error("host range {start:#x}..={end:#x} is already taken")]
    RangeBusy {
        /// First byte of the requested range.
        start: u64,
        /// Last byte of the requested range.
        end: u64,
    },
    /// A host range that is empty or wraps around the 64-bit address space.
    #[error("host range of {len:#x} bytes at {start:#x} is empty or wraps")]
    InvalidRange {
        /// First byte of the range.
        start: u64,
        /// Length of the range.
        len: u64,
    },
    /// The underlying vm-allocator refused an operation.
    #[error("host resource allocator refused the request")]
    Allocator(#[source] vm_allocator::Error),
    /// A range handed back for release was never allocated through this resource space.
    #[error("host range {start:#x}..={end:#x} was not allocated here")]
    NotAllocated {
        /// First byte of the range.
        start: u64,
        /// Last byte of the range.
        end: u64,
    },
    /// A thread panicked while holding the shared resource space lock.
    #[error("the shared host resource space lock is poisoned")]
    ResourceSpacePoisoned,
    /// A sparse-mmap area or trapped range lies outside its BAR.
    #[error("range {offset:#x}+{len:#x} lies outside a BAR of {bar_size:#x} bytes")]
    RangeOutsideBar {
        /// Offset of the range inside the BAR.
        offset: u64,
        /// Length of the range.
        len: u64,
        /// Size of the BAR.
        bar_size: u64,
    },
    /// A guest BAR placement whose range wraps around the guest physical address space.
    #[error("guest BAR at {gpa:#x} with size {size:#x} overflows the guest address space")]
    GuestOverflow {
        /// Guest physical address.
        gpa: u64,
        /// BAR size in bytes.
        size: u64,
    },
    /// A mapping request with a zero length or an offset that is not page aligned.
    #[error("cannot map {len:#x} bytes at file offset {offset:#x}")]
    InvalidMapping {
        /// File offset requested.
        offset: u64,
        /// Length requested.
        len: u64,
    },
    /// The mmap system call failed.
    #[error("mmap failed")]
    Mmap(#[source] io::Error),
    /// Querying the host page size failed.
    #[error("cannot query the host page size")]
    HostPageSize(#[source] io::Error),
    /// An access through a mapping fell outside it.
    #[error(
        "access of {len:#x} bytes at {offset:#x} is outside a mapping of {mapping_len:#x} bytes"
    )]
    AccessOutOfBounds {
        /// Offset of the access inside the mapping.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Length of the mapping.
        mapping_len: usize,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
