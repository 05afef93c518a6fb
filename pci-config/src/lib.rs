// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A pure model of a PCI function's configuration space, as a VMM emulates it for a guest.
//!
//! This crate does no I/O. Its parts:
//!
//! * [`ConfigSpace`] ([`space`]): 256-byte or 4 KiB space, physical bytes plus per-bit write,
//!   write-1-to-clear and emulation masks; guest reads and writes, [`WriteEffects`].
//! * [`capability`]: walking and validating the standard and extended chains.
//! * [`chain`]: hiding capabilities and inserting virtual ones.
//! * [`bar`]: BAR definition, the sizing protocol and [`BarMove`] reports.
//! * [`views`]: typed MSI, MSI-X, PCI Express, power management and vendor capabilities.
//! * [`ConfigSpaceBuilder`]: a space from vendor/device IDs, BARs and capabilities.
//! * [`lspci`]: reading and writing `lspci -xxxx` dump text.
//! * [`regs`] and [`ids`]: register offsets, [`Command`]/[`Status`] bitflags, capability IDs.
//!
//! ```
//! use pci_config::{ConfigSpace, BarKind, Command};
//!
//! let mut cs = ConfigSpace::new_conventional();
//! cs.define_bar(0, BarKind::Mem32, 0x1000, false)?;
//! // Sizing: write all-ones, read back the size mask.
//! cs.write(0x10, &[0xff; 4])?;
//! assert_eq!(cs.read_u32(0x10)?, 0xffff_f000);
//! // Program an address and enable memory decoding: the BAR move is reported.
//! cs.write(0x10, &0xfe00_0000u32.to_le_bytes())?;
//! let effects = cs.write(0x04, &Command::MEMORY_SPACE.bits().to_le_bytes())?;
//! assert_eq!(effects.bar_moves[0].new, Some(0xfe00_0000));
//! # Ok::<(), pci_config::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod bar;
mod builder;
pub mod capability;
pub mod chain;
mod error;
pub mod ids;
pub mod lspci;
pub mod regs;
pub mod space;
pub mod views;

pub use bar::{Bar, BarKind, BarMove, ROM_INDEX};
pub use builder::ConfigSpaceBuilder;
pub use capability::{Capability, CapabilityKind};
pub use error::{Error, Result};
pub use lspci::{parse_dump, DumpEntry};
pub use regs::{Command, Status};
pub use space::{ConfigSpace, ForwardWrite, WriteEffects};
pub use views::{MsiCap, MsixCap, PcieCap, PmCap, VendorCap};
