// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest's view of the device's configuration space, built with `pci-config`.
//!
//! Built from the device's config region:
//! * SR-IOV and ARI extended capabilities are hidden (the guest gets one function);
//! * the MSI and MSI-X capabilities are emulated in full: the guest writes only their
//!   enable/mask/message fields, and nothing of them reaches the device;
//! * BARs are emulated (sizing protocol included), start unassigned (address 0), and report
//!   moves;
//! * everything else reads through to the device and guest writes to non-emulated bits are
//!   forwarded to it. Read-only bits stay read-only (pci-config's write masks).

use pci_config::ids::{CAP_EXP, CAP_MSI, CAP_MSIX, EXT_ARI, EXT_SRIOV};
use pci_config::{BarKind, CapabilityKind, ConfigSpace, ROM_INDEX};
use vfio_core::info::{BAR0_REGION_INDEX, CONFIG_REGION_INDEX, MSI_IRQ_INDEX, ROM_REGION_INDEX};
use vfio_core::VfioDevice;

use crate::{Error, Result};

/// COMMAND bits clear after power-on that a host leaves set: I/O, memory, bus master (low
/// byte) and Interrupt Disable (high byte).
pub(crate) const POWER_ON_CLEARED_COMMAND_LOW: u8 = 0x07;
/// See [`POWER_ON_CLEARED_COMMAND_LOW`].
pub(crate) const POWER_ON_CLEARED_COMMAND_HIGH: u8 = 0x04;

/// Where the MSI capability is and what it can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MsiCap {
    pub offset: u16,
    pub is64: bool,
    pub per_vector_mask: bool,
    /// log2 of the vectors the function can use.
    pub mmc: u8,
}

impl MsiCap {
    pub fn data_offset(&self) -> u16 {
        self.offset + if self.is64 { 12 } else { 8 }
    }
    pub fn mask_offset(&self) -> u16 {
        self.offset + if self.is64 { 16 } else { 12 }
    }
    pub fn len(&self) -> u16 {
        match (self.is64, self.per_vector_mask) {
            (false, false) => 10,
            (true, false) => 14,
            (false, true) => 20,
            (true, true) => 24,
        }
    }
}

/// Where the MSI-X capability, table and PBA are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MsixCap {
    pub offset: u16,
    pub vectors: u16,
    pub table_bir: u8,
    pub table_offset: u64,
    pub pba_bir: u8,
    pub pba_offset: u64,
}

/// One BAR as the host describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostBar {
    pub index: u8,
    pub kind: BarKind,
    pub size: u64,
    /// The address the physical register holds (the host address).
    pub host_addr: u64,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

/// The emulated config space and what was found in it.
#[derive(Debug)]
pub(crate) struct ConfigEmu {
    pub space: ConfigSpace,
    /// `space` as built: what a reset returns to.
    pub initial: ConfigSpace,
    /// Offset of the PCI Express capability's Device Control register, if the device has one.
    pub pcie_devctl: Option<u16>,
    pub msi: Option<MsiCap>,
    pub msix: Option<MsixCap>,
    pub bars: Vec<HostBar>,
    pub has_intx: bool,
}

fn u16_at(bytes: &[u8], off: usize) -> u16 {
    let lo = bytes.get(off).copied().unwrap_or(0);
    let hi = bytes.get(off + 1).copied().unwrap_or(0);
    u16::from_le_bytes([lo, hi])
}

fn u32_at(bytes: &[u8], off: usize) -> u32 {
    u32::from(u16_at(bytes, off)) | (u32::from(u16_at(bytes, off + 2)) << 16)
}

/// Reads the BARs from the physical header and the region sizes; zeroes the address bits in
/// `bytes` so the guest starts with unassigned BARs.
fn host_bars(dev: &dyn VfioDevice, bytes: &mut [u8]) -> Vec<HostBar> {
    let mut bars = Vec::new();
    let mut i = 0u8;
    while i < 6 {
        let reg = 0x10 + 4 * usize::from(i);
        let raw = u32_at(bytes, reg);
        let size = dev
            .info()
            .region(BAR0_REGION_INDEX + u32::from(i))
            .map_or(0, |r| r.size);
        let io = raw & 1 == 1;
        let is64 = !io && (raw >> 1) & 3 == 2 && i < 5;
        let kind = match (io, is64) {
            (true, _) => BarKind::Io,
            (false, true) => BarKind::Mem64,
            (false, false) => BarKind::Mem32,
        };
        if size.is_power_of_two() {
            let mut host_addr = u64::from(raw & if io { !3 } else { !0xf });
            if is64 {
                host_addr |= u64::from(u32_at(bytes, reg + 4)) << 32;
            }
            bars.push(HostBar {
                index: i,
                kind,
                size,
                host_addr,
                prefetchable: !io && raw & 8 != 0,
            });
        }
        let keep = if io { 3 } else { 0xf };
        let flags = (raw & keep).to_le_bytes();
        if let Some(b) = bytes.get_mut(reg..reg + 4) {
            b.copy_from_slice(&flags);
        }
        if is64 {
            if let Some(b) = bytes.get_mut(reg + 4..reg + 8) {
                b.fill(0);
            }
        }
        i += if is64 { 2 } else { 1 };
    }
    if let Some(b) = bytes.get_mut(0x30..0x34) {
        b.fill(0);
    }
    bars
}

impl ConfigEmu {
    /// Builds the guest's view from the device's config region.
    pub fn build(dev: &dyn VfioDevice) -> Result<Self> {
        let region = dev
            .info()
            .region(CONFIG_REGION_INDEX)
            .ok_or(Error::NoConfigRegion)?;
        let size = if region.size >= 4096 { 4096 } else { 256 };
        let mut bytes = vec![0u8; size];
        // The region may be shorter than the space it backs (mtty's is 0xff bytes,
        // MTTY_CONFIG_SPACE_SIZE): read what it has, the rest reads as 0.
        let readable = usize::try_from(region.size).map_or(size, |n| n.min(size));
        let head = bytes.get_mut(..readable).unwrap_or_default();
        dev.region_read(CONFIG_REGION_INDEX, 0, head)
            .map_err(Error::ConfigRead)?;
        let bars = host_bars(dev, &mut bytes);
        // The guest starts from power-on COMMAND (decode and bus master off); the device is
        // told the same when the passthrough device is built.
        if let Some(cmd) = bytes.get_mut(4) {
            *cmd &= !POWER_ON_CLEARED_COMMAND_LOW;
        }
        if let Some(cmd) = bytes.get_mut(5) {
            *cmd &= !POWER_ON_CLEARED_COMMAND_HIGH;
        }
        let has_intx = bytes.get(0x3d).is_some_and(|p| *p != 0);
        let mut space = ConfigSpace::from_bytes(&bytes).map_err(Error::ConfigModel)?;
        if space.is_extended() {
            for id in [EXT_SRIOV, EXT_ARI] {
                space
                    .hide_all(CapabilityKind::Extended, id)
                    .map_err(Error::ConfigModel)?;
            }
        }
        for bar in &bars {
            space
                .define_bar(bar.index, bar.kind, bar.size, bar.prefetchable)
                .map_err(Error::ConfigModel)?;
        }
        if let Some(rom) = dev.info().region(ROM_REGION_INDEX) {
            if rom.size.is_power_of_two() && rom.size >= 2048 {
                space
                    .define_bar(ROM_INDEX, BarKind::Rom, rom.size, false)
                    .map_err(Error::ConfigModel)?;
            }
        }
        // The vector count comes from GET_IRQ_INFO: vfio-pci's config view shows Multiple
        // Message Capable as what the last MSI enable got (0 before the first), not what the
        // device can do (Linux v6.12.117 drivers/vfio/pci/vfio_pci_config.c,
        // vfio_msi_config_read()).
        let msi_vectors = dev.info().irq(MSI_IRQ_INDEX).map_or(1, |i| i.count);
        let msi = Self::emulate_msi(&mut space, msi_vectors)?;
        let msix = Self::emulate_msix(&mut space)?;
        let pcie_devctl = space.find_standard(CAP_EXP).ok().map(|c| c.offset + 8);
        Ok(ConfigEmu {
            initial: space.clone(),
            pcie_devctl,
            space,
            msi,
            msix,
            bars,
            has_intx,
        })
    }

    fn emulate_msi(space: &mut ConfigSpace, vectors: u32) -> Result<Option<MsiCap>> {
        let Ok(cap) = space.find_standard(CAP_MSI) else {
            return Ok(None);
        };
        let ctrl = u16_at(space.physical(), usize::from(cap.offset) + 2);
        let msi = MsiCap {
            offset: cap.offset,
            is64: ctrl & (1 << 7) != 0,
            per_vector_mask: ctrl & (1 << 8) != 0,
            mmc: vectors.max(1).ilog2().min(5) as u8,
        };
        let off = usize::from(cap.offset);
        let len = usize::from(msi.len());
        let mut value = space
            .physical()
            .get(off..off + len)
            .map(<[u8]>::to_vec)
            .ok_or(Error::StateMismatch("MSI capability past the end"))?;
        // Start disabled, one vector, no message; capable of what GET_IRQ_INFO reports.
        if let Some(b) = value.get_mut(2) {
            *b = (*b & !0x7f) | (msi.mmc << 1);
        }
        value.iter_mut().skip(4).for_each(|b| *b = 0);
        let e = Error::ConfigModel;
        space.set_emulated_bytes(off, &value).map_err(e)?;
        let mut wmask = vec![0u8; len];
        if let Some(b) = wmask.get_mut(2) {
            *b = 0x71; // Enable, Multiple Message Enable
        }
        let mut fill = |from: usize, bytes: &[u8]| {
            for (i, m) in bytes.iter().enumerate() {
                if let Some(w) = wmask.get_mut(from + i) {
                    *w = *m;
                }
            }
        };
        fill(4, &[0xfc, 0xff, 0xff, 0xff]);
        if msi.is64 {
            fill(8, &[0xff; 4]);
        }
        let data = usize::from(msi.data_offset() - msi.offset);
        fill(data, &[0xff, 0xff]);
        if msi.per_vector_mask {
            let m = usize::from(msi.mask_offset() - msi.offset);
            let nvec_mask = (1u64 << (1u32 << msi.mmc)) - 1;
            fill(m, &(nvec_mask as u32).to_le_bytes());
        }
        space.set_write_mask(off, &wmask).map_err(e)?;
        Ok(Some(msi))
    }

    fn emulate_msix(space: &mut ConfigSpace) -> Result<Option<MsixCap>> {
        let Ok(cap) = space.find_standard(CAP_MSIX) else {
            return Ok(None);
        };
        let off = usize::from(cap.offset);
        let phys = space.physical();
        let ctrl = u16_at(phys, off + 2);
        let table = u32_at(phys, off + 4);
        let pba = u32_at(phys, off + 8);
        let msix = MsixCap {
            offset: cap.offset,
            vectors: (ctrl & 0x7ff) + 1,
            table_bir: (table & 7) as u8,
            table_offset: u64::from(table & !7),
            pba_bir: (pba & 7) as u8,
            pba_offset: u64::from(pba & !7),
        };
        let mut value = phys
            .get(off..off + 12)
            .map(<[u8]>::to_vec)
            .ok_or(Error::StateMismatch("MSI-X capability past the end"))?;
        if let Some(b) = value.get_mut(3) {
            *b &= !0xc0; // start disabled and unmasked
        }
        let e = Error::ConfigModel;
        space.set_emulated_bytes(off, &value).map_err(e)?;
        let mut wmask = [0u8; 12];
        wmask[3] = 0xc0;
        space.set_write_mask(off, &wmask).map_err(e)?;
        Ok(Some(msix))
    }

    pub fn read_u16(&self, offset: u16) -> u16 {
        self.space.read_u16(usize::from(offset)).unwrap_or(0)
    }

    pub fn read_u32(&self, offset: u16) -> u32 {
        self.space.read_u32(usize::from(offset)).unwrap_or(0)
    }

    /// MSI-X control bits (enable, function mask) as the guest wrote them.
    pub fn msix_control(&self) -> Option<(bool, bool)> {
        let cap = self.msix?;
        let ctrl = self.read_u16(cap.offset + 2);
        Some((ctrl & 0x8000 != 0, ctrl & 0x4000 != 0))
    }

    /// MSI Enable as the guest wrote it.
    pub fn msi_enabled(&self) -> bool {
        self.msi
            .is_some_and(|cap| self.read_u16(cap.offset + 2) & 1 != 0)
    }

    /// Forces an enable bit back to zero in the emulated copy (a refused enable).
    pub fn clear_bits(&mut self, offset: u16, mask: u16) {
        let v = self.read_u16(offset) & !mask;
        let _ = self
            .space
            .set_emulated(usize::from(offset), &v.to_le_bytes(), &mask.to_le_bytes());
    }
}
