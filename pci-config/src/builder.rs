// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`ConfigSpaceBuilder`]: a configuration space from a few facts, for simulated devices and
//! tests.

use crate::bar::BarKind;
use crate::capability::CapabilityKind;
use crate::regs::{self, Status};
use crate::{ConfigSpace, Result};

/// Builds a type 0 (endpoint) configuration space.
///
/// Header fields go into physical bytes; BARs are defined with [`ConfigSpace::define_bar`];
/// capabilities are physical bytes chained in the order given, standard ones from 0x40,
/// extended ones from 0x100, each at the next dword after the previous one.
///
/// ```
/// use pci_config::{BarKind, ConfigSpaceBuilder, views::MsixCap};
///
/// let cs = ConfigSpaceBuilder::new(0x1af4, 0x1041)
///     .class(0x02, 0x00, 0x00)
///     .bar(0, BarKind::Mem64, 0x4000, true)
///     .capability(MsixCap::build(4, 0, 0x2000, 0, 0x3000)?)
///     .build()?;
/// assert_eq!(cs.msix()?.map(|m| m.table_size()), Some(4));
/// # Ok::<(), pci_config::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConfigSpaceBuilder {
    vendor: u16,
    device: u16,
    class: [u8; 3],
    revision: u8,
    subsystem: (u16, u16),
    interrupt_pin: u8,
    extended: bool,
    bars: Vec<(u8, BarKind, u64, bool)>,
    standard: Vec<Vec<u8>>,
    extended_caps: Vec<Vec<u8>>,
}

impl ConfigSpaceBuilder {
    /// A function with these vendor and device IDs, class 0, no BARs, no capabilities.
    pub fn new(vendor: u16, device: u16) -> Self {
        ConfigSpaceBuilder {
            vendor,
            device,
            class: [0; 3],
            revision: 0,
            subsystem: (0, 0),
            interrupt_pin: 0,
            extended: false,
            bars: Vec::new(),
            standard: Vec::new(),
            extended_caps: Vec::new(),
        }
    }

    /// Base class, sub-class and programming interface.
    pub fn class(mut self, base: u8, sub: u8, prog_if: u8) -> Self {
        self.class = [prog_if, sub, base];
        self
    }

    /// Revision ID.
    pub fn revision(mut self, revision: u8) -> Self {
        self.revision = revision;
        self
    }

    /// Subsystem vendor and subsystem IDs.
    pub fn subsystem(mut self, vendor: u16, id: u16) -> Self {
        self.subsystem = (vendor, id);
        self
    }

    /// Interrupt pin (0 none, 1-4 INTA-INTD).
    pub fn interrupt_pin(mut self, pin: u8) -> Self {
        self.interrupt_pin = pin;
        self
    }

    /// Make it a 4 KiB PCI Express space (implied by any extended capability).
    pub fn extended(mut self) -> Self {
        self.extended = true;
        self
    }

    /// Defines a BAR (see [`ConfigSpace::define_bar`]); checked in [`Self::build`].
    pub fn bar(mut self, index: u8, kind: BarKind, size: u64, prefetchable: bool) -> Self {
        self.bars.push((index, kind, size, prefetchable));
        self
    }

    /// Appends a standard capability (bytes with header; the next pointer is filled in).
    pub fn capability(mut self, bytes: Vec<u8>) -> Self {
        self.standard.push(bytes);
        self
    }

    /// Appends an extended capability (bytes with its 4-byte header; the next pointer is
    /// filled in).
    pub fn extended_capability(mut self, bytes: Vec<u8>) -> Self {
        self.extended = true;
        self.extended_caps.push(bytes);
        self
    }

    /// The configuration space. Errors: a BAR definition error, or
    /// [`Error::NoRoom`](crate::Error::NoRoom) when the capabilities do not fit.
    pub fn build(self) -> Result<ConfigSpace> {
        let mut cs = if self.extended {
            ConfigSpace::new_extended()
        } else {
            ConfigSpace::new_conventional()
        };
        cs.set_physical(regs::VENDOR_ID, &self.vendor.to_le_bytes())?;
        cs.set_physical(regs::DEVICE_ID, &self.device.to_le_bytes())?;
        cs.set_physical(regs::REVISION_ID, &[self.revision])?;
        cs.set_physical(regs::CLASS_PROG_IF, &self.class)?;
        cs.set_physical(regs::SUBSYSTEM_VENDOR_ID, &self.subsystem.0.to_le_bytes())?;
        cs.set_physical(regs::SUBSYSTEM_ID, &self.subsystem.1.to_le_bytes())?;
        cs.set_physical(regs::INTERRUPT_PIN, &[self.interrupt_pin])?;
        for (index, kind, size, prefetchable) in self.bars {
            cs.define_bar(index, kind, size, prefetchable)?;
        }
        place_chain(&mut cs, CapabilityKind::Standard, &self.standard)?;
        place_chain(&mut cs, CapabilityKind::Extended, &self.extended_caps)?;
        Ok(cs)
    }
}

/// Lays capabilities out back to back in physical bytes and chains them.
fn place_chain(cs: &mut ConfigSpace, kind: CapabilityKind, caps: &[Vec<u8>]) -> Result<()> {
    let (mut at, end) = match kind {
        CapabilityKind::Standard => (regs::HEADER_END, regs::CONVENTIONAL_SIZE),
        CapabilityKind::Extended => (regs::EXTENDED_START, regs::EXTENDED_SIZE),
    };
    let mut offsets = Vec::with_capacity(caps.len());
    for bytes in caps {
        let len = bytes.len().max(4);
        if at + len > end {
            return Err(crate::Error::NoRoom { kind, len });
        }
        offsets.push(at);
        at = (at + len + 3) & !3;
    }
    for (i, (bytes, &off)) in caps.iter().zip(&offsets).enumerate() {
        let next = offsets.get(i + 1).copied().unwrap_or(0);
        let mut b = bytes.clone();
        b.resize(b.len().max(4), 0);
        match kind {
            CapabilityKind::Standard => {
                if let Some(n) = b.get_mut(1) {
                    *n = next as u8;
                }
            }
            CapabilityKind::Extended => {
                let header = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let header = (header & 0x000f_ffff) | ((next as u32) << 20);
                b[..4].copy_from_slice(&header.to_le_bytes());
            }
        }
        cs.set_physical(off, &b)?;
    }
    if kind == CapabilityKind::Standard && !offsets.is_empty() {
        let first = offsets.first().copied().unwrap_or(0);
        cs.set_physical(regs::CAPABILITY_POINTER, &[first as u8])?;
        let status = cs.read_u16(regs::STATUS)? | Status::CAPABILITY_LIST.bits();
        cs.set_physical(regs::STATUS, &status.to_le_bytes())?;
    }
    Ok(())
}
