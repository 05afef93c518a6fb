// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Describing a simulated device: from scratch (IDs, BARs, MSI, MSI-X) or from a config-space
//! dump plus the BAR sizes a dump cannot carry.

use pci_config::{ids, regs, BarKind, ConfigSpace};

use crate::error::{Error, Result};
use crate::migration::MigrationFeatures;

use super::migration::{ArcFailure, PreCopyEnd};

use super::SimDevice;

/// Largest device-state blob the simulated device migrates (a resume stream whose frame claims
/// more is refused).
pub const SIM_MAX_BLOB: usize = 16 * 1024;

/// How the simulated device reports its MSI-X index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MsixMode {
    /// `VFIO_IRQ_INFO_NORESIZE`: the vector count is fixed when the index is enabled.
    #[default]
    NoResize,
    /// Dynamic MSI-X (Linux 6.5+): vectors can be added one at a time after enable.
    Dynamic,
}

/// A device behaviour behind the BARs that the simulator models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceModel {
    /// The interrupt registers of QEMU's e1000e in BAR 0 (ICR, ICS, IMS, IMC, IVAR): writes
    /// raise INTx, MSI or MSI-X as the device's config space has them enabled.
    E1000e,
}

/// Where the MSI-X table and PBA live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixPlacement {
    /// Number of vectors (table size), 1..=2048.
    pub vectors: u16,
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in its BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR holding the PBA.
    pub pba_bar: u8,
    /// Offset of the PBA in its BAR (8-byte aligned).
    pub pba_offset: u32,
}

impl MsixPlacement {
    /// Table at offset 0 of `bar`, PBA right after it (rounded up to 8 bytes... and to a page,
    /// as most devices do).
    pub fn in_bar(vectors: u16, bar: u8) -> Self {
        let table_len = u32::from(vectors) * 16;
        MsixPlacement {
            vectors,
            table_bar: bar,
            table_offset: 0,
            pba_bar: bar,
            pba_offset: table_len.next_multiple_of(4096),
        }
    }

    /// Bytes of the table.
    pub fn table_len(&self) -> u64 {
        u64::from(self.vectors) * 16
    }

    /// Bytes of the PBA (one bit per vector, in qwords).
    pub fn pba_len(&self) -> u64 {
        u64::from(self.vectors).div_ceil(64) * 8
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct BarSpec {
    pub(crate) kind: BarKind,
    pub(crate) size: u64,
    pub(crate) prefetchable: bool,
}

/// Builds a [`SimDevice`].
#[derive(Debug, Clone)]
pub struct SimDeviceBuilder {
    pub(crate) base: Option<ConfigSpace>,
    pub(crate) vendor: u16,
    pub(crate) device: u16,
    pub(crate) class: u32,
    pub(crate) bars: [Option<BarSpec>; 6],
    pub(crate) msi_vectors: Option<u8>,
    pub(crate) msix: Option<MsixPlacement>,
    pub(crate) msix_mode: MsixMode,
    pub(crate) msix_mappable: bool,
    pub(crate) sub_page_mmap: bool,
    pub(crate) reset: bool,
    pub(crate) migration: Option<MigrationFeatures>,
    pub(crate) blob: Vec<u8>,
    pub(crate) pre_copy_end: PreCopyEnd,
    pub(crate) resume_failure: ArcFailure,
    /// The mtty profile, with this many ports ([`SimDevice::mtty`]).
    pub(crate) mtty: Option<u32>,
    pub(crate) virtfn: Option<(u16, u16)>,
    pub(crate) model: Option<DeviceModel>,
    pub(crate) msi_needs_bus_master: bool,
    pub(crate) reset_keeps_registers: bool,
}

impl SimDeviceBuilder {
    /// A device with these IDs, no BARs, no interrupts but INTx, resettable, not migratable.
    pub fn new(vendor: u16, device: u16) -> Self {
        SimDeviceBuilder {
            base: None,
            vendor,
            device,
            class: 0x02_00_00,
            bars: [None; 6],
            msi_vectors: None,
            msix: None,
            msix_mode: MsixMode::NoResize,
            msix_mappable: true,
            sub_page_mmap: false,
            reset: true,
            migration: None,
            blob: Vec::new(),
            pre_copy_end: PreCopyEnd::Enomsg,
            resume_failure: ArcFailure::StaysInSource,
            mtty: None,
            virtfn: None,
            model: None,
            msi_needs_bus_master: false,
            reset_keeps_registers: false,
        }
    }

    /// A device whose config space is `space` (for example a parsed `lspci -x` dump): IDs, MSI
    /// and MSI-X come from its bytes and capabilities. A dump has no BAR sizes: declare each
    /// BAR with [`SimDeviceBuilder::bar`].
    pub fn from_config_space(space: ConfigSpace) -> Self {
        let mut b = SimDeviceBuilder::new(0, 0);
        b.base = Some(space);
        b
    }

    /// The class code (base class, subclass, programming interface).
    pub fn class(mut self, class: u32) -> Self {
        self.class = class & 0x00ff_ffff;
        self
    }

    /// Declare BAR `index` (`Mem64` uses `index + 1` too). A memory BAR smaller than a page is
    /// only mmappable with [`SimDeviceBuilder::sub_page_mmap`].
    pub fn bar(mut self, index: u8, kind: BarKind, size: u64, prefetchable: bool) -> Self {
        if let Some(slot) = self.bars.get_mut(usize::from(index)) {
            *slot = Some(BarSpec {
                kind,
                size,
                prefetchable,
            });
        }
        self
    }

    /// An MSI capability with `vectors` vectors (a power of two up to 32), 64-bit, per-vector
    /// masking.
    pub fn msi(mut self, vectors: u8) -> Self {
        self.msi_vectors = Some(vectors);
        self
    }

    /// An MSI-X capability with this table and PBA placement.
    pub fn msix(mut self, placement: MsixPlacement) -> Self {
        self.msix = Some(placement);
        self
    }

    /// NORESIZE (the default) or dynamic MSI-X.
    pub fn msix_mode(mut self, mode: MsixMode) -> Self {
        self.msix_mode = mode;
        self
    }

    /// Whether the MSI-X table's BAR reports `MSIX_MAPPABLE` (default, as Linux 4.16 and later
    /// do) or, as older kernels did, sparse mmap areas that leave out the table and PBA pages
    /// (never Linux 6.12: not for conformance profiles).
    pub fn msix_mappable(mut self, mappable: bool) -> Self {
        self.msix_mappable = mappable;
        self
    }

    /// Report memory BARs smaller than a page as mmappable (the kernel does when the rest of
    /// the page is reserved for the BAR).
    pub fn sub_page_mmap(mut self, allowed: bool) -> Self {
        self.sub_page_mmap = allowed;
        self
    }

    /// Whether the device supports `VFIO_DEVICE_RESET` (default yes): the RESET flag, and a
    /// reset that works. Without, a reset is EINVAL, as vfio-pci answers without
    /// `reset_works` (Linux v6.12.117 `drivers/vfio/pci/vfio_pci_core.c`,
    /// `vfio_pci_ioctl_reset()`).
    pub fn reset(mut self, supported: bool) -> Self {
        self.reset = supported;
        self
    }

    /// Support migration v2 with these features (STOP_COPY is added) and this initial
    /// device-internal state.
    pub fn migration(mut self, features: MigrationFeatures, blob: Vec<u8>) -> Self {
        self.migration = Some(features | MigrationFeatures::STOP_COPY);
        self.blob = blob;
        self
    }

    /// How a PRE_COPY read answers once everything available was read: `ENOMSG` (default, the
    /// uAPI's convention) or 0 (mtty's).
    pub fn pre_copy_end(mut self, end: PreCopyEnd) -> Self {
        self.pre_copy_end = end;
        self
    }

    /// Where a resume stream the device refuses at RESUMING -> STOP (no complete frame)
    /// leaves it: in RESUMING with its fd still writable (default, what mtty does), or in
    /// ERROR.
    pub fn resume_failure(mut self, leaves: ArcFailure) -> Self {
        self.resume_failure = leaves;
        self
    }

    /// An SR-IOV VF whose PF gives it these IDs: vfio-pci shows the IDs (a VF's own ID
    /// registers read 0xffff), the interrupt pin as 0 (no INTx vector), and the memory enable
    /// bit virtually (`no_command_memory`: BAR access never depends on it).
    pub fn virtfn(mut self, vendor: u16, device: u16) -> Self {
        self.virtfn = Some((vendor, device));
        self
    }

    /// Model this device behaviour behind the BARs.
    pub fn model(mut self, model: DeviceModel) -> Self {
        self.model = Some(model);
        self
    }

    /// Whether the device sends MSI and MSI-X messages only with COMMAND's Bus Master set, as
    /// QEMU's devices (and real ones) do; default off, so a test that never enables bus
    /// mastering still gets its raises.
    pub fn msi_needs_bus_master(mut self, needed: bool) -> Self {
        self.msi_needs_bus_master = needed;
        self
    }

    /// Whether the emulated device ignores the reset the kernel gives it, keeping its BARs'
    /// contents, modelled registers and pending bits: QEMU 7.2's e1000e, which the kernel
    /// resets with a PM reset (D3hot, then D0; it has no FLR), does (seen in the lab). Config
    /// space is restored around a reset either way.
    pub fn reset_keeps_registers(mut self, keeps: bool) -> Self {
        self.reset_keeps_registers = keeps;
        self
    }

    /// Build the device.
    pub fn build(self) -> Result<SimDevice> {
        if self.blob.len() > SIM_MAX_BLOB {
            return Err(Error::SimConfig("migration blob larger than SIM_MAX_BLOB"));
        }
        let space = match self.base.clone() {
            Some(space) => space,
            None => self.generate_space()?,
        };
        let space = self.define_bars(space)?;
        SimDevice::assemble(self, space)
    }

    fn generate_space(&self) -> Result<ConfigSpace> {
        let bad = |_| Error::SimConfig("config space write out of range");
        let mut cs = ConfigSpace::new_conventional();
        cs.set_physical(regs::VENDOR_ID, &self.vendor.to_le_bytes())
            .map_err(bad)?;
        cs.set_physical(regs::DEVICE_ID, &self.device.to_le_bytes())
            .map_err(bad)?;
        let class = self.class.to_le_bytes();
        cs.set_physical(regs::CLASS_PROG_IF, &class[..3])
            .map_err(bad)?;
        cs.set_physical(regs::INTERRUPT_PIN, &[1]).map_err(bad)?;
        // pci_enable_device() at open turns on decoding of the BARs the device has.
        let has = |io: bool| {
            self.bars
                .iter()
                .flatten()
                .any(|b| (b.kind == BarKind::Io) == io)
        };
        let command = u16::from(has(true)) | (u16::from(has(false)) << 1);
        cs.set_physical(regs::COMMAND, &command.to_le_bytes())
            .map_err(bad)?;
        let mut caps: Vec<(u8, Vec<u8>)> = Vec::new();
        if let Some(n) = self.msi_vectors {
            if !n.is_power_of_two() || n > 32 {
                return Err(Error::SimConfig(
                    "MSI vector count must be a power of two <= 32",
                ));
            }
            // Multiple Message Capable, 64-bit, per-vector masking.
            let ctrl: u16 = ((n.trailing_zeros() as u16) << 1) | (1 << 7) | (1 << 8);
            let mut cap = vec![0u8; 24];
            cap[0] = ids::CAP_MSI;
            cap[2..4].copy_from_slice(&ctrl.to_le_bytes());
            caps.push((ids::CAP_MSI, cap));
        }
        if let Some(m) = self.msix {
            if m.vectors == 0 || m.vectors > 2048 || m.table_bar > 5 || m.pba_bar > 5 {
                return Err(Error::SimConfig("MSI-X placement out of range"));
            }
            if m.table_offset % 8 != 0 || m.pba_offset % 8 != 0 {
                return Err(Error::SimConfig(
                    "MSI-X table and PBA offsets must be 8-byte aligned",
                ));
            }
            let mut cap = vec![0u8; 12];
            cap[0] = ids::CAP_MSIX;
            cap[2..4].copy_from_slice(&(m.vectors - 1).to_le_bytes());
            cap[4..8].copy_from_slice(&(m.table_offset | u32::from(m.table_bar)).to_le_bytes());
            cap[8..12].copy_from_slice(&(m.pba_offset | u32::from(m.pba_bar)).to_le_bytes());
            caps.push((ids::CAP_MSIX, cap));
        }
        let mut offset = 0x40usize;
        let mut prev_next = regs::CAPABILITY_POINTER;
        for (_, cap) in &caps {
            cs.set_physical(prev_next, &[offset as u8]).map_err(bad)?;
            cs.set_physical(offset, cap).map_err(bad)?;
            prev_next = offset + 1;
            offset += cap.len().next_multiple_of(8);
        }
        if !caps.is_empty() {
            // Status: capabilities list.
            cs.set_physical(regs::STATUS, &0x10u16.to_le_bytes())
                .map_err(bad)?;
        }
        Ok(cs)
    }

    fn define_bars(&self, mut cs: ConfigSpace) -> Result<ConfigSpace> {
        for (i, spec) in self.bars.iter().enumerate() {
            if let Some(spec) = spec {
                cs.define_bar(i as u8, spec.kind, spec.size, spec.prefetchable)
                    .map_err(|_| Error::SimConfig("invalid BAR"))?;
            }
        }
        Ok(cs)
    }
}
