// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Register offsets of the configuration header and bitflags for its command and status
//! registers.

use bitflags::bitflags;

/// Size of the conventional configuration space.
pub const CONVENTIONAL_SIZE: usize = 256;
/// Size of the PCI Express extended configuration space.
pub const EXTENDED_SIZE: usize = 4096;

/// Vendor ID (16 bits).
pub const VENDOR_ID: usize = 0x00;
/// Device ID (16 bits).
pub const DEVICE_ID: usize = 0x02;
/// Command register (16 bits), see [`Command`].
pub const COMMAND: usize = 0x04;
/// Status register (16 bits), see [`Status`].
pub const STATUS: usize = 0x06;
/// Revision ID (8 bits).
pub const REVISION_ID: usize = 0x08;
/// Programming interface (8 bits); the class code is the 24 bits at 0x09..0x0c.
pub const CLASS_PROG_IF: usize = 0x09;
/// Sub-class (8 bits).
pub const CLASS_SUBCLASS: usize = 0x0a;
/// Base class (8 bits).
pub const CLASS_BASE: usize = 0x0b;
/// Cache line size (8 bits).
pub const CACHE_LINE_SIZE: usize = 0x0c;
/// Latency timer (8 bits).
pub const LATENCY_TIMER: usize = 0x0d;
/// Header type (8 bits); bit 7 flags a multi-function device.
pub const HEADER_TYPE: usize = 0x0e;
/// First base address register (type 0 and type 1 headers).
pub const BAR0: usize = 0x10;
/// Subsystem vendor ID (type 0 header).
pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
/// Subsystem ID (type 0 header).
pub const SUBSYSTEM_ID: usize = 0x2e;
/// Expansion ROM base address (type 0 header).
pub const ROM_ADDRESS: usize = 0x30;
/// Expansion ROM base address (type 1, bridge, header).
pub const BRIDGE_ROM_ADDRESS: usize = 0x38;
/// Pointer to the first standard capability (8 bits, low two bits reserved).
pub const CAPABILITY_POINTER: usize = 0x34;
/// Interrupt line (8 bits).
pub const INTERRUPT_LINE: usize = 0x3c;
/// Interrupt pin (8 bits).
pub const INTERRUPT_PIN: usize = 0x3d;
/// First byte after the standard header: capabilities live in `0x40..0x100`.
pub const HEADER_END: usize = 0x40;
/// Offset of the first extended capability.
pub const EXTENDED_START: usize = 0x100;

bitflags! {
    /// The command register at 0x04.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Command: u16 {
        /// Respond to I/O space accesses (I/O BARs are decoded).
        const IO_SPACE = 1 << 0;
        /// Respond to memory space accesses (memory BARs and the ROM are decoded).
        const MEMORY_SPACE = 1 << 1;
        /// The function may master the bus (DMA, MSI).
        const BUS_MASTER = 1 << 2;
        /// Monitor special cycles.
        const SPECIAL_CYCLES = 1 << 3;
        /// Memory write and invalidate enable.
        const MEMORY_WRITE_INVALIDATE = 1 << 4;
        /// VGA palette snoop.
        const VGA_PALETTE_SNOOP = 1 << 5;
        /// Parity error response.
        const PARITY_ERROR_RESPONSE = 1 << 6;
        /// Address/data stepping (hard-wired to zero on modern devices).
        const STEPPING = 1 << 7;
        /// SERR# enable.
        const SERR = 1 << 8;
        /// Fast back-to-back enable.
        const FAST_BACK_TO_BACK = 1 << 9;
        /// INTx emulation disable.
        const INTX_DISABLE = 1 << 10;
    }
}

impl Command {
    /// Command bits a guest may change on a typical function (what QEMU and Linux treat as
    /// writable by default).
    pub const DEFAULT_WRITABLE: Command = Command::IO_SPACE
        .union(Command::MEMORY_SPACE)
        .union(Command::BUS_MASTER)
        .union(Command::PARITY_ERROR_RESPONSE)
        .union(Command::SERR)
        .union(Command::INTX_DISABLE);
}

bitflags! {
    /// The status register at 0x06.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Status: u16 {
        /// Immediate readiness.
        const IMMEDIATE_READINESS = 1 << 0;
        /// An INTx interrupt is pending.
        const INTX = 1 << 3;
        /// The capability pointer at 0x34 is valid.
        const CAPABILITY_LIST = 1 << 4;
        /// 66 MHz capable.
        const MHZ_66 = 1 << 5;
        /// Fast back-to-back capable.
        const FAST_BACK_TO_BACK = 1 << 7;
        /// Master data parity error (write 1 to clear).
        const MASTER_DATA_PARITY_ERROR = 1 << 8;
        /// DEVSEL timing, low bit.
        const DEVSEL_LOW = 1 << 9;
        /// DEVSEL timing, high bit.
        const DEVSEL_HIGH = 1 << 10;
        /// Signaled target abort (write 1 to clear).
        const SIGNALED_TARGET_ABORT = 1 << 11;
        /// Received target abort (write 1 to clear).
        const RECEIVED_TARGET_ABORT = 1 << 12;
        /// Received master abort (write 1 to clear).
        const RECEIVED_MASTER_ABORT = 1 << 13;
        /// Signaled system error (write 1 to clear).
        const SIGNALED_SYSTEM_ERROR = 1 << 14;
        /// Detected parity error (write 1 to clear).
        const DETECTED_PARITY_ERROR = 1 << 15;
    }
}

impl Status {
    /// The error bits, which are write-1-to-clear.
    pub const W1C: Status = Status::MASTER_DATA_PARITY_ERROR
        .union(Status::SIGNALED_TARGET_ABORT)
        .union(Status::RECEIVED_TARGET_ABORT)
        .union(Status::RECEIVED_MASTER_ABORT)
        .union(Status::SIGNALED_SYSTEM_ERROR)
        .union(Status::DETECTED_PARITY_ERROR);
}
