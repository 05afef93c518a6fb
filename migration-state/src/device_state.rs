// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The state a VMM carries across a migration for one passthrough PCI function.
//!
//! These are plain data types; [`crate::format`] turns them into bytes and back, and checks
//! every invariant documented here with [`DeviceState::validate`] on both sides.

use pci_config::ConfigSpace;

use crate::{Error, Result};

/// Size of a conventional PCI configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Size of a PCI Express extended configuration space.
pub const EXTENDED_CONFIG_SPACE_SIZE: usize = 4096;
/// Most vectors an MSI-X table may have.
pub const MAX_MSIX_VECTORS: usize = 2048;
/// Number of BARs of a type 0 header.
pub const BAR_COUNT: u8 = 6;

/// The emulated configuration space: the bytes the guest sees where the VMM emulates them,
/// and the per-byte masks that say which bits are emulated and which the guest may write.
///
/// This mirrors `pci-config`'s representation (value + emulation, write and
/// write-1-to-clear masks), so a VMM can snapshot and restore it byte for byte. All four
/// vectors have the same length, 256 or 4096 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigState {
    /// The emulated bytes.
    pub bytes: Vec<u8>,
    /// Bits set here are served from `bytes`; clear bits come from the physical device.
    pub emulated_mask: Vec<u8>,
    /// Bits the guest may write.
    pub write_mask: Vec<u8>,
    /// Bits the guest clears by writing 1.
    pub write1c_mask: Vec<u8>,
}

impl ConfigState {
    /// An all-zero conventional (256-byte) configuration space.
    pub fn zeroed() -> Self {
        Self {
            bytes: vec![0; CONFIG_SPACE_SIZE],
            emulated_mask: vec![0; CONFIG_SPACE_SIZE],
            write_mask: vec![0; CONFIG_SPACE_SIZE],
            write1c_mask: vec![0; CONFIG_SPACE_SIZE],
        }
    }

    /// Snapshots the emulated bytes and the masks of `space`. The physical bytes are not
    /// saved: the destination reads them from its own device.
    pub fn capture(space: &ConfigSpace) -> Self {
        Self {
            bytes: space.emulated().to_vec(),
            emulated_mask: space.emulated_mask().to_vec(),
            write_mask: space.write_mask().to_vec(),
            write1c_mask: space.w1c_mask().to_vec(),
        }
    }

    /// Restores this snapshot into `space`, which must have the same size. All or nothing: on
    /// error `space` is unchanged.
    pub fn restore_into(&self, space: &mut ConfigSpace) -> Result<()> {
        self.validate()?;
        if space.size() != self.bytes.len() {
            return Err(Error::InvalidField {
                field: "config.size",
                value: self.bytes.len() as u64,
            });
        }
        let mut staged = space.clone();
        staged
            .restore_emulated(&self.bytes, &self.emulated_mask)
            .and_then(|()| staged.set_write_mask(0, &self.write_mask))
            .and_then(|()| staged.set_w1c_mask(0, &self.write1c_mask))
            .map_err(Error::ConfigRestore)?;
        *space = staged;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        let len = self.bytes.len();
        if len != CONFIG_SPACE_SIZE && len != EXTENDED_CONFIG_SPACE_SIZE {
            return Err(Error::InvalidField {
                field: "config.size",
                value: len as u64,
            });
        }
        for (field, mask) in [
            ("config.emulated_mask", &self.emulated_mask),
            ("config.write_mask", &self.write_mask),
            ("config.write1c_mask", &self.write1c_mask),
        ] {
            if mask.len() != len {
                return Err(Error::InvalidField {
                    field,
                    value: mask.len() as u64,
                });
            }
        }
        Ok(())
    }
}

/// The kind of address space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BarKind {
    /// I/O ports.
    Io = 0,
    /// 32-bit memory.
    Memory32 = 1,
    /// 64-bit memory (occupies this BAR and the next).
    Memory64 = 2,
}

impl BarKind {
    pub(crate) fn from_raw(raw: u8) -> Result<Self> {
        match raw {
            0 => Ok(BarKind::Io),
            1 => Ok(BarKind::Memory32),
            2 => Ok(BarKind::Memory64),
            v => Err(Error::InvalidField {
                field: "bar.kind",
                value: u64::from(v),
            }),
        }
    }
}

/// One implemented BAR with the guest address it is programmed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarState {
    /// BAR number, 0..=5 (0..=4 for a 64-bit BAR).
    pub index: u8,
    /// What the BAR decodes.
    pub kind: BarKind,
    /// Whether a memory BAR is prefetchable (false for I/O).
    pub prefetchable: bool,
    /// Guest-physical (or guest I/O) address, aligned to `size`.
    pub address: u64,
    /// Size in bytes, a power of two.
    pub size: u64,
}

impl BarState {
    fn validate(&self) -> Result<()> {
        let max_index = if self.kind == BarKind::Memory64 {
            BAR_COUNT - 2
        } else {
            BAR_COUNT - 1
        };
        if self.index > max_index {
            return Err(Error::InvalidField {
                field: "bar.index",
                value: u64::from(self.index),
            });
        }
        if !self.size.is_power_of_two() {
            return Err(Error::InvalidField {
                field: "bar.size",
                value: self.size,
            });
        }
        if self.address & (self.size - 1) != 0 {
            return Err(Error::InvalidField {
                field: "bar.address",
                value: self.address,
            });
        }
        let limit = match self.kind {
            BarKind::Io | BarKind::Memory32 => 1u64 << 32,
            BarKind::Memory64 => u64::MAX,
        };
        if self
            .address
            .checked_add(self.size - 1)
            .is_none_or(|last| last >= limit)
        {
            return Err(Error::InvalidField {
                field: "bar.address",
                value: self.address,
            });
        }
        if self.kind == BarKind::Io && self.prefetchable {
            return Err(Error::InvalidField {
                field: "bar.prefetchable",
                value: 1,
            });
        }
        Ok(())
    }
}

/// Which interrupt mechanism the guest driver has enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum InterruptMode {
    /// No interrupts enabled.
    #[default]
    None = 0,
    /// Legacy INTx.
    Intx = 1,
    /// MSI.
    Msi = 2,
    /// MSI-X.
    Msix = 3,
}

impl InterruptMode {
    pub(crate) fn from_raw(raw: u8) -> Result<Self> {
        match raw {
            0 => Ok(InterruptMode::None),
            1 => Ok(InterruptMode::Intx),
            2 => Ok(InterruptMode::Msi),
            3 => Ok(InterruptMode::Msix),
            v => Err(Error::InvalidField {
                field: "interrupt_mode",
                value: u64::from(v),
            }),
        }
    }
}

/// The emulated MSI capability's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiState {
    /// MSI Enable bit.
    pub enabled: bool,
    /// Whether the capability has a 64-bit address.
    pub address_64bit: bool,
    /// Whether the capability has per-vector mask and pending bits.
    pub per_vector_masking: bool,
    /// Multiple Message Capable, log2 of the vector count (0..=5).
    pub multiple_message_capable: u8,
    /// Multiple Message Enable, log2 of the enabled count (at most the capable value).
    pub multiple_message_enable: u8,
    /// Message address (upper half zero without `address_64bit`).
    pub address: u64,
    /// Message data.
    pub data: u16,
    /// Per-vector mask bits (zero without `per_vector_masking`).
    pub mask_bits: u32,
    /// Per-vector pending bits (zero without `per_vector_masking`).
    pub pending_bits: u32,
}

impl MsiState {
    fn validate(&self) -> Result<()> {
        if self.multiple_message_capable > 5 {
            return Err(Error::InvalidField {
                field: "msi.multiple_message_capable",
                value: u64::from(self.multiple_message_capable),
            });
        }
        if self.multiple_message_enable > self.multiple_message_capable {
            return Err(Error::InvalidField {
                field: "msi.multiple_message_enable",
                value: u64::from(self.multiple_message_enable),
            });
        }
        if !self.address_64bit && self.address >> 32 != 0 {
            return Err(Error::InvalidField {
                field: "msi.address",
                value: self.address,
            });
        }
        if !self.per_vector_masking && (self.mask_bits != 0 || self.pending_bits != 0) {
            return Err(Error::InvalidField {
                field: "msi.mask_bits",
                value: u64::from(self.mask_bits | self.pending_bits),
            });
        }
        Ok(())
    }
}

/// One MSI-X table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsixEntry {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
    /// The per-vector mask bit of Vector Control.
    pub masked: bool,
}

/// The emulated MSI-X capability, table and PBA.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MsixState {
    /// MSI-X Enable bit.
    pub enabled: bool,
    /// Function Mask bit.
    pub function_mask: bool,
    /// The table, one entry per vector (1..=2048 entries).
    pub entries: Vec<MsixEntry>,
    /// Pending Bit Array, 64 vectors per word, `entries.len().div_ceil(64)` words; bits past the
    /// last vector are zero.
    pub pba: Vec<u64>,
}

impl MsixState {
    /// A table of `vectors` masked, zeroed entries with no pending bits.
    pub fn with_vectors(vectors: usize) -> Self {
        Self {
            enabled: false,
            function_mask: false,
            entries: vec![
                MsixEntry {
                    masked: true,
                    ..MsixEntry::default()
                };
                vectors
            ],
            pba: vec![0; vectors.div_ceil(64)],
        }
    }

    fn validate(&self) -> Result<()> {
        let n = self.entries.len();
        if n == 0 || n > MAX_MSIX_VECTORS {
            return Err(Error::InvalidField {
                field: "msix.vectors",
                value: n as u64,
            });
        }
        if self.pba.len() != n.div_ceil(64) {
            return Err(Error::InvalidField {
                field: "msix.pba_words",
                value: self.pba.len() as u64,
            });
        }
        let tail_bits = n % 64;
        if tail_bits != 0 {
            let last = self.pba.last().copied().unwrap_or(0);
            if last >> tail_bits != 0 {
                return Err(Error::InvalidField {
                    field: "msix.pba",
                    value: last,
                });
            }
        }
        Ok(())
    }
}

/// The guest-cooperative migration notice's state (format version 2 and later).
///
/// See [`crate::notice`]; a destination restores it so it can tell the guest, on the vector the
/// guest chose, that its driver must reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoticeState {
    /// Offset of the notice capability in configuration space.
    pub capability_offset: u8,
    /// Whether the guest driver opted in.
    pub guest_enabled: bool,
    /// The interrupt vector the guest chose for notices.
    pub vector: u16,
    /// The notice generation last announced to the guest.
    pub generation: u32,
}

/// Everything a VMM saves for one passthrough function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// Emulated configuration space and masks.
    pub config: ConfigState,
    /// Implemented BARs and their guest addresses, at most one per index.
    pub bars: Vec<BarState>,
    /// The active interrupt mechanism.
    pub interrupt_mode: InterruptMode,
    /// MSI capability state, if the function has one (required when the mode is MSI).
    pub msi: Option<MsiState>,
    /// MSI-X state, if the function has the capability (required when the mode is MSI-X).
    pub msix: Option<MsixState>,
    /// The opaque device-internal state read from the VFIO migration data fd.
    pub device_data: Vec<u8>,
    /// The migration notice, when the VMM enabled it (format version 2).
    pub notice: Option<NoticeState>,
}

impl Default for DeviceState {
    fn default() -> Self {
        Self {
            config: ConfigState::zeroed(),
            bars: Vec::new(),
            interrupt_mode: InterruptMode::None,
            msi: None,
            msix: None,
            device_data: Vec::new(),
            notice: None,
        }
    }
}

impl DeviceState {
    /// Checks every invariant documented on the fields. Encoding and decoding call this.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        let mut seen = 0u8;
        for bar in &self.bars {
            bar.validate()?;
            let mut claims = 1u8 << bar.index;
            if bar.kind == BarKind::Memory64 {
                claims |= 1u8 << (bar.index + 1);
            }
            if seen & claims != 0 {
                return Err(Error::InvalidField {
                    field: "bar.index",
                    value: u64::from(bar.index),
                });
            }
            seen |= claims;
        }
        if let Some(msi) = &self.msi {
            msi.validate()?;
        }
        if let Some(msix) = &self.msix {
            msix.validate()?;
        }
        let mode_ok = match self.interrupt_mode {
            InterruptMode::None | InterruptMode::Intx => true,
            InterruptMode::Msi => self.msi.is_some_and(|m| m.enabled),
            InterruptMode::Msix => self.msix.as_ref().is_some_and(|m| m.enabled),
        };
        if !mode_ok {
            return Err(Error::InvalidField {
                field: "interrupt_mode",
                value: self.interrupt_mode as u64,
            });
        }
        if let Some(notice) = &self.notice {
            let end = usize::from(notice.capability_offset) + crate::notice::CAPABILITY_LEN;
            if notice.capability_offset < 0x40 || end > CONFIG_SPACE_SIZE {
                return Err(Error::InvalidField {
                    field: "notice.capability_offset",
                    value: u64::from(notice.capability_offset),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_capture_restore_round_trips_through_pci_config() {
        let mut src = ConfigSpace::new_conventional();
        src.set_emulated_bytes(0x40, &[0x11, 0x22, 0x33]).unwrap();
        src.set_write_mask(0x41, &[0xf0]).unwrap();
        src.set_w1c_mask(0x06, &[0x80]).unwrap();
        let snap = ConfigState::capture(&src);
        let mut dst = ConfigSpace::new_conventional();
        snap.restore_into(&mut dst).unwrap();
        assert_eq!(dst.emulated(), src.emulated());
        assert_eq!(dst.emulated_mask(), src.emulated_mask());
        assert_eq!(dst.write_mask(), src.write_mask());
        assert_eq!(dst.w1c_mask(), src.w1c_mask());
        assert_eq!(dst.read_u8(0x42).unwrap(), 0x33);
    }

    #[test]
    fn config_restore_of_wrong_size_leaves_space_untouched() {
        let mut snap = ConfigState::zeroed();
        snap.bytes.fill(0xaa);
        snap.emulated_mask.fill(0xff);
        let mut ext = ConfigState {
            bytes: vec![0xaa; EXTENDED_CONFIG_SPACE_SIZE],
            emulated_mask: vec![0xff; EXTENDED_CONFIG_SPACE_SIZE],
            write_mask: vec![0; EXTENDED_CONFIG_SPACE_SIZE],
            write1c_mask: vec![0; EXTENDED_CONFIG_SPACE_SIZE],
        };
        let mut space = ConfigSpace::new_conventional();
        let before = space.clone();
        assert!(matches!(
            ext.restore_into(&mut space),
            Err(Error::InvalidField {
                field: "config.size",
                ..
            })
        ));
        ext.write_mask.pop();
        assert!(ext.restore_into(&mut space).is_err());
        assert_eq!(space, before);
        snap.restore_into(&mut space).unwrap();
        assert_eq!(space.read_u8(0).unwrap(), 0xaa);
    }
}
