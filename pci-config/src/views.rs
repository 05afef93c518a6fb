// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Typed views of the capabilities a VMM cares about: MSI, MSI-X, PCI Express, power
//! management and vendor-specific.
//!
//! Each view is a decoded snapshot of the guest view at one offset (`parse`), with the offsets
//! of its registers for emulation, and a `build` function giving the bytes of a new
//! capability for [`ConfigSpace::insert_capability`] or the
//! [`ConfigSpaceBuilder`](crate::ConfigSpaceBuilder).

use bitflags::bitflags;

use crate::ids;
use crate::{ConfigSpace, Error, Result};

bitflags! {
    /// MSI message control (capability offset +2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MsiControl: u16 {
        /// MSI enable.
        const ENABLE = 1 << 0;
        /// Multiple message capable, log2 of the vector count (3 bits).
        const MMC_MASK = 0b111 << 1;
        /// Multiple message enable, log2 of the enabled vector count (3 bits).
        const MME_MASK = 0b111 << 4;
        /// 64-bit message address.
        const ADDR_64 = 1 << 7;
        /// Per-vector masking.
        const PER_VECTOR_MASK = 1 << 8;
        /// Extended message data capable.
        const EXT_DATA_CAPABLE = 1 << 9;
        /// Extended message data enable.
        const EXT_DATA_ENABLE = 1 << 10;
    }
}

bitflags! {
    /// MSI-X message control (capability offset +2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MsixControl: u16 {
        /// Table size minus one (11 bits).
        const TABLE_SIZE_MASK = 0x07ff;
        /// Function mask: every vector is masked.
        const FUNCTION_MASK = 1 << 14;
        /// MSI-X enable.
        const ENABLE = 1 << 15;
    }
}

fn expect_id(cs: &ConfigSpace, offset: u16, id: u8) -> Result<()> {
    if cs.read_u8(usize::from(offset))? != id {
        return Err(Error::MalformedCapability {
            offset,
            reason: "capability ID does not match the view",
        });
    }
    Ok(())
}

/// MSI capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiCap {
    /// Offset of the capability.
    pub offset: u16,
    /// Message control.
    pub control: MsiControl,
    /// Message address (upper half zero for 32-bit capabilities).
    pub address: u64,
    /// Message data.
    pub data: u16,
    /// Mask bits, when per-vector masking is supported.
    pub mask: Option<u32>,
    /// Pending bits, when per-vector masking is supported.
    pub pending: Option<u32>,
}

impl MsiCap {
    /// Decodes the MSI capability at `offset`.
    pub fn parse(cs: &ConfigSpace, offset: u16) -> Result<Self> {
        expect_id(cs, offset, ids::CAP_MSI)?;
        let o = usize::from(offset);
        let control = MsiControl::from_bits_retain(cs.read_u16(o + 2)?);
        let is64 = control.contains(MsiControl::ADDR_64);
        let mut address = u64::from(cs.read_u32(o + 4)?);
        if is64 {
            address |= u64::from(cs.read_u32(o + 8)?) << 32;
        }
        let data_off = if is64 { o + 12 } else { o + 8 };
        let (mask, pending) = if control.contains(MsiControl::PER_VECTOR_MASK) {
            (
                Some(cs.read_u32(data_off + 4)?),
                Some(cs.read_u32(data_off + 8)?),
            )
        } else {
            (None, None)
        };
        Ok(MsiCap {
            offset,
            control,
            address,
            data: cs.read_u16(data_off)?,
            mask,
            pending,
        })
    }

    /// Whether MSI is enabled.
    pub fn enabled(&self) -> bool {
        self.control.contains(MsiControl::ENABLE)
    }

    /// Whether the address is 64 bits.
    pub fn is_64bit(&self) -> bool {
        self.control.contains(MsiControl::ADDR_64)
    }

    /// Whether per-vector masking is supported.
    pub fn per_vector_masking(&self) -> bool {
        self.control.contains(MsiControl::PER_VECTOR_MASK)
    }

    /// Number of vectors the function can request (1-32).
    pub fn vectors_capable(&self) -> u32 {
        1 << ((self.control.bits() >> 1) & 0b111).min(5)
    }

    /// Number of vectors the guest enabled (1-32).
    pub fn vectors_enabled(&self) -> u32 {
        1 << ((self.control.bits() >> 4) & 0b111).min(5)
    }

    /// Length of this capability in bytes (10, 14, 20 or 24).
    pub fn len(&self) -> usize {
        10 + if self.is_64bit() { 4 } else { 0 } + if self.per_vector_masking() { 10 } else { 0 }
    }

    /// Always false: a capability has a header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Offset of the message data register.
    pub fn data_offset(&self) -> u16 {
        self.offset + if self.is_64bit() { 12 } else { 8 }
    }

    /// Offset of the mask bits register, when per-vector masking is supported.
    pub fn mask_offset(&self) -> Option<u16> {
        self.per_vector_masking().then(|| self.data_offset() + 4)
    }

    /// Bytes of a new MSI capability: `log2_vectors` (0-5) vectors capable, 32- or 64-bit,
    /// with or without per-vector masking, everything else zero.
    pub fn build(log2_vectors: u8, is_64bit: bool, per_vector_mask: bool) -> Vec<u8> {
        let mut control = u16::from(log2_vectors.min(5)) << 1;
        if is_64bit {
            control |= MsiControl::ADDR_64.bits();
        }
        if per_vector_mask {
            control |= MsiControl::PER_VECTOR_MASK.bits();
        }
        let len = 10 + if is_64bit { 4 } else { 0 } + if per_vector_mask { 10 } else { 0 };
        let mut v = vec![0u8; len];
        v[0] = ids::CAP_MSI;
        v[2..4].copy_from_slice(&control.to_le_bytes());
        v
    }
}

/// MSI-X capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsixCap {
    /// Offset of the capability.
    pub offset: u16,
    /// Message control.
    pub control: MsixControl,
    /// BAR holding the vector table.
    pub table_bir: u8,
    /// Offset of the vector table in its BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR holding the pending bit array.
    pub pba_bir: u8,
    /// Offset of the PBA in its BAR (8-byte aligned).
    pub pba_offset: u32,
}

impl MsixCap {
    /// Length of an MSI-X capability.
    pub const LEN: usize = 12;

    /// Decodes the MSI-X capability at `offset`.
    pub fn parse(cs: &ConfigSpace, offset: u16) -> Result<Self> {
        expect_id(cs, offset, ids::CAP_MSIX)?;
        let o = usize::from(offset);
        let table = cs.read_u32(o + 4)?;
        let pba = cs.read_u32(o + 8)?;
        Ok(MsixCap {
            offset,
            control: MsixControl::from_bits_retain(cs.read_u16(o + 2)?),
            table_bir: (table & 7) as u8,
            table_offset: table & !7,
            pba_bir: (pba & 7) as u8,
            pba_offset: pba & !7,
        })
    }

    /// Number of vectors in the table (1-2048).
    pub fn table_size(&self) -> u16 {
        (self.control.bits() & MsixControl::TABLE_SIZE_MASK.bits()) + 1
    }

    /// Whether MSI-X is enabled.
    pub fn enabled(&self) -> bool {
        self.control.contains(MsixControl::ENABLE)
    }

    /// Whether the function mask is set.
    pub fn function_masked(&self) -> bool {
        self.control.contains(MsixControl::FUNCTION_MASK)
    }

    /// Offset of the message control register.
    pub fn control_offset(&self) -> u16 {
        self.offset + 2
    }

    /// Bytes of a new MSI-X capability. Errors when `table_size` is not 1-2048, a BIR is
    /// above 5 or an offset is not 8-byte aligned.
    pub fn build(
        table_size: u16,
        table_bir: u8,
        table_offset: u32,
        pba_bir: u8,
        pba_offset: u32,
    ) -> Result<Vec<u8>> {
        let bad = |reason| Error::MalformedCapability { offset: 0, reason };
        if !(1..=2048).contains(&table_size) {
            return Err(bad("MSI-X table size is 1-2048"));
        }
        if table_bir > 5 || pba_bir > 5 {
            return Err(bad("MSI-X BIR is 0-5"));
        }
        if table_offset & 7 != 0 || pba_offset & 7 != 0 {
            return Err(bad("MSI-X table and PBA offsets are 8-byte aligned"));
        }
        let mut v = vec![0u8; Self::LEN];
        v[0] = ids::CAP_MSIX;
        v[2..4].copy_from_slice(&(table_size - 1).to_le_bytes());
        v[4..8].copy_from_slice(&(table_offset | u32::from(table_bir)).to_le_bytes());
        v[8..12].copy_from_slice(&(pba_offset | u32::from(pba_bir)).to_le_bytes());
        Ok(v)
    }
}

/// PCI Express device/port type (capability register bits 7:4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PciePortType {
    /// PCI Express endpoint.
    Endpoint,
    /// Legacy PCI Express endpoint.
    LegacyEndpoint,
    /// Root port of a root complex.
    RootPort,
    /// Upstream port of a switch.
    UpstreamPort,
    /// Downstream port of a switch.
    DownstreamPort,
    /// PCI Express to PCI/PCI-X bridge.
    PcieToPciBridge,
    /// PCI/PCI-X to PCI Express bridge.
    PciToPcieBridge,
    /// Root complex integrated endpoint.
    RootComplexIntegratedEndpoint,
    /// Root complex event collector.
    RootComplexEventCollector,
    /// A reserved encoding.
    Reserved(u8),
}

impl PciePortType {
    /// Decodes the 4-bit field.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0xf {
            0 => Self::Endpoint,
            1 => Self::LegacyEndpoint,
            4 => Self::RootPort,
            5 => Self::UpstreamPort,
            6 => Self::DownstreamPort,
            7 => Self::PcieToPciBridge,
            8 => Self::PciToPcieBridge,
            9 => Self::RootComplexIntegratedEndpoint,
            10 => Self::RootComplexEventCollector,
            other => Self::Reserved(other),
        }
    }

    /// The 4-bit encoding.
    pub fn bits(self) -> u8 {
        match self {
            Self::Endpoint => 0,
            Self::LegacyEndpoint => 1,
            Self::RootPort => 4,
            Self::UpstreamPort => 5,
            Self::DownstreamPort => 6,
            Self::PcieToPciBridge => 7,
            Self::PciToPcieBridge => 8,
            Self::RootComplexIntegratedEndpoint => 9,
            Self::RootComplexEventCollector => 10,
            Self::Reserved(b) => b & 0xf,
        }
    }
}

/// PCI Express capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PcieCap {
    /// Offset of the capability.
    pub offset: u16,
    /// Capability version (1 or 2).
    pub version: u8,
    /// Device/port type.
    pub port_type: PciePortType,
    /// Slot implemented (ports only).
    pub slot_implemented: bool,
    /// MSI/MSI-X vector used for this capability's interrupts.
    pub interrupt_message_number: u8,
}

impl PcieCap {
    /// Decodes the PCI Express capability at `offset`.
    pub fn parse(cs: &ConfigSpace, offset: u16) -> Result<Self> {
        expect_id(cs, offset, ids::CAP_EXP)?;
        let flags = cs.read_u16(usize::from(offset) + 2)?;
        Ok(PcieCap {
            offset,
            version: (flags & 0xf) as u8,
            port_type: PciePortType::from_bits(((flags >> 4) & 0xf) as u8),
            slot_implemented: flags & (1 << 8) != 0,
            interrupt_message_number: ((flags >> 9) & 0x1f) as u8,
        })
    }

    /// Bytes of a new version-2 PCI Express capability (0x3c bytes) of this port type, every
    /// other field zero.
    pub fn build(port_type: PciePortType) -> Vec<u8> {
        let mut v = vec![0u8; 0x3c];
        v[0] = ids::CAP_EXP;
        let flags: u16 = 2 | (u16::from(port_type.bits()) << 4);
        v[2..4].copy_from_slice(&flags.to_le_bytes());
        v
    }
}

/// Device power state (PMCSR bits 1:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PowerState {
    /// Fully on.
    D0,
    /// Light sleep.
    D1,
    /// Deeper sleep.
    D2,
    /// Off, still powered.
    D3Hot,
}

/// Power management capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PmCap {
    /// Offset of the capability.
    pub offset: u16,
    /// Version (PMC bits 2:0).
    pub version: u8,
    /// Current power state.
    pub power_state: PowerState,
    /// No soft reset: D3hot to D0 keeps the function's state.
    pub no_soft_reset: bool,
}

impl PmCap {
    /// Decodes the power management capability at `offset`.
    pub fn parse(cs: &ConfigSpace, offset: u16) -> Result<Self> {
        expect_id(cs, offset, ids::CAP_PM)?;
        let o = usize::from(offset);
        let pmc = cs.read_u16(o + 2)?;
        let pmcsr = cs.read_u16(o + 4)?;
        Ok(PmCap {
            offset,
            version: (pmc & 7) as u8,
            power_state: match pmcsr & 3 {
                0 => PowerState::D0,
                1 => PowerState::D1,
                2 => PowerState::D2,
                _ => PowerState::D3Hot,
            },
            no_soft_reset: pmcsr & (1 << 3) != 0,
        })
    }

    /// Offset of the control/status register (PMCSR).
    pub fn control_offset(&self) -> u16 {
        self.offset + 4
    }

    /// Bytes of a new version-3 power management capability in D0, no soft reset.
    pub fn build() -> Vec<u8> {
        vec![ids::CAP_PM, 0, 3, 0, 1 << 3, 0, 0, 0]
    }
}

/// Vendor-specific capability: a length byte and opaque data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VendorCap {
    /// Offset of the capability.
    pub offset: u16,
    /// Its length byte (header included).
    pub len: u8,
    /// The bytes after the 3-byte header.
    pub data: Vec<u8>,
}

impl VendorCap {
    /// Decodes the vendor-specific capability at `offset`.
    pub fn parse(cs: &ConfigSpace, offset: u16) -> Result<Self> {
        expect_id(cs, offset, ids::CAP_VENDOR)?;
        let o = usize::from(offset);
        let len = cs.read_u8(o + 2)?;
        if len < 3 {
            return Err(Error::MalformedCapability {
                offset,
                reason: "vendor capability length below its header",
            });
        }
        let mut data = vec![0u8; usize::from(len) - 3];
        cs.read(o + 3, &mut data)?;
        Ok(VendorCap { offset, len, data })
    }

    /// Bytes of a new vendor-specific capability carrying `payload`, padded to a dword.
    /// Errors when it would not fit in the length byte.
    pub fn build(payload: &[u8]) -> Result<Vec<u8>> {
        let len = u8::try_from(payload.len() + 3).map_err(|_| Error::MalformedCapability {
            offset: 0,
            reason: "vendor capability longer than 255 bytes",
        })?;
        let mut v = vec![ids::CAP_VENDOR, 0, len];
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        Ok(v)
    }
}

impl ConfigSpace {
    /// The MSI capability, if the standard chain has one.
    pub fn msi(&self) -> Result<Option<MsiCap>> {
        match self.find_standard(ids::CAP_MSI) {
            Ok(c) => MsiCap::parse(self, c.offset).map(Some),
            Err(Error::CapabilityNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The MSI-X capability, if the standard chain has one.
    pub fn msix(&self) -> Result<Option<MsixCap>> {
        match self.find_standard(ids::CAP_MSIX) {
            Ok(c) => MsixCap::parse(self, c.offset).map(Some),
            Err(Error::CapabilityNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The PCI Express capability, if the standard chain has one.
    pub fn pcie(&self) -> Result<Option<PcieCap>> {
        match self.find_standard(ids::CAP_EXP) {
            Ok(c) => PcieCap::parse(self, c.offset).map(Some),
            Err(Error::CapabilityNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Emulates the whole MSI capability at `offset` the way a passthrough VMM does: the guest
    /// view keeps its current bytes, which now live in emulated bytes; enable, multiple
    /// message enable, address, data and (if present) mask bits become writable.
    pub fn emulate_msi(&mut self, offset: u16) -> Result<MsiCap> {
        let cap = MsiCap::parse(self, offset)?;
        let o = usize::from(offset);
        let mut bytes = vec![0u8; cap.len()];
        self.read(o, &mut bytes)?;
        self.set_emulated_bytes(o, &bytes)?;
        let mut wmask = vec![0u8; cap.len()];
        let control = MsiControl::ENABLE.bits() | MsiControl::MME_MASK.bits();
        wmask[2..4].copy_from_slice(&control.to_le_bytes());
        let addr_end = if cap.is_64bit() { 12 } else { 8 };
        wmask[4..8].copy_from_slice(&[0xfc, 0xff, 0xff, 0xff]);
        wmask[8..addr_end].fill(0xff);
        wmask[addr_end..addr_end + 2].fill(0xff);
        if cap.per_vector_masking() {
            wmask[addr_end + 4..addr_end + 8].fill(0xff);
        }
        self.set_write_mask(o, &wmask)?;
        self.set_w1c_mask(o, &vec![0; cap.len()])?;
        Ok(cap)
    }

    /// Emulates the whole MSI-X capability at `offset`: its bytes live in emulated bytes, and
    /// only the enable and function-mask bits are writable.
    pub fn emulate_msix(&mut self, offset: u16) -> Result<MsixCap> {
        let cap = MsixCap::parse(self, offset)?;
        let o = usize::from(offset);
        let mut bytes = [0u8; MsixCap::LEN];
        self.read(o, &mut bytes)?;
        self.set_emulated_bytes(o, &bytes)?;
        let mut wmask = [0u8; MsixCap::LEN];
        let control = MsixControl::ENABLE.bits() | MsixControl::FUNCTION_MASK.bits();
        wmask[2..4].copy_from_slice(&control.to_le_bytes());
        self.set_write_mask(o, &wmask)?;
        self.set_w1c_mask(o, &[0; MsixCap::LEN])?;
        Ok(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigSpaceBuilder;

    #[test]
    fn built_capabilities_parse_back() {
        let cs = ConfigSpaceBuilder::new(1, 2)
            .capability(MsiCap::build(3, true, true))
            .capability(MsixCap::build(65, 2, 0x1000, 4, 0x2008).unwrap())
            .capability(PcieCap::build(PciePortType::RootPort))
            .capability(PmCap::build())
            .capability(VendorCap::build(&[0xde, 0xad]).unwrap())
            .build()
            .unwrap();
        let caps = cs.walk_standard().unwrap();
        assert_eq!(caps.len(), 5);
        let msi = cs.msi().unwrap().unwrap();
        assert!(msi.is_64bit() && msi.per_vector_masking() && !msi.enabled());
        assert_eq!((msi.vectors_capable(), msi.len()), (8, 24));
        assert_eq!(msi.mask_offset(), Some(msi.offset + 16));
        let msix = cs.msix().unwrap().unwrap();
        assert_eq!(msix.table_size(), 65);
        assert_eq!((msix.table_bir, msix.table_offset), (2, 0x1000));
        assert_eq!((msix.pba_bir, msix.pba_offset), (4, 0x2008));
        let pcie = cs.pcie().unwrap().unwrap();
        assert_eq!((pcie.version, pcie.port_type), (2, PciePortType::RootPort));
        let pm = PmCap::parse(&cs, caps[3].offset).unwrap();
        assert_eq!(
            (pm.version, pm.power_state, pm.no_soft_reset),
            (3, PowerState::D0, true)
        );
        let v = VendorCap::parse(&cs, caps[4].offset).unwrap();
        assert_eq!((v.len, v.data), (5, vec![0xde, 0xad]));
        assert!(MsixCap::parse(&cs, caps[0].offset).is_err());
    }

    #[test]
    fn emulated_msix_takes_only_enable_and_mask() {
        let mut cs = ConfigSpaceBuilder::new(1, 2)
            .capability(MsixCap::build(4, 0, 0, 0, 0x800).unwrap())
            .build()
            .unwrap();
        let off = cs.msix().unwrap().unwrap().offset;
        cs.emulate_msix(off).unwrap();
        let fx = cs.write(usize::from(off) + 2, &[0xff, 0xff]).unwrap();
        assert_eq!(fx.forward, None);
        assert_eq!(fx.capabilities.len(), 1);
        let m = cs.msix().unwrap().unwrap();
        assert!(m.enabled() && m.function_masked());
        assert_eq!(m.table_size(), 4);
        // The physical control register never saw the write.
        assert_eq!(cs.physical()[usize::from(off) + 3], 0);
    }

    #[test]
    fn emulated_msi_accepts_address_and_data() {
        let mut cs = ConfigSpaceBuilder::new(1, 2)
            .capability(MsiCap::build(0, false, false))
            .build()
            .unwrap();
        let off = usize::from(cs.msi().unwrap().unwrap().offset);
        cs.emulate_msi(off as u16).unwrap();
        cs.write(off + 4, &0xfee0_0003u32.to_le_bytes()).unwrap();
        cs.write(off + 8, &0x4041u16.to_le_bytes()).unwrap();
        cs.write(off + 2, &[0xff, 0xff]).unwrap();
        let msi = cs.msi().unwrap().unwrap();
        assert_eq!((msi.address, msi.data), (0xfee0_0000, 0x4041));
        assert!(msi.enabled() && !msi.is_64bit());
    }
}
