// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulator configured like the lab's devices, from their committed config-space captures
//! (`fixtures/lab/*.sysfs.lspci-x`: the physical config space vfio-pci starts from, read after
//! the device was opened) plus what a dump cannot carry: BAR sizes (the lab's REGION_INFO), the
//! VF's IDs (its PF's SR-IOV capability), and the device's behaviour (QEMU's e1000e interrupt
//! registers; QEMU's devices need Bus Master for MSI and MSI-X).

use pci_config::{BarKind, CapabilityKind, ConfigSpace};

use super::Failure;
use crate::sim::{DeviceModel, MsixMode, SimDevice};

/// The lab's e1000e, as sysfs showed its config space to the guest kernel.
const E1000E_SYSFS: &str = include_str!("../../../fixtures/lab/e1000e.sysfs.lspci-x");
/// The lab's NVMe PF (for its SR-IOV capability).
const NVME_PF_SYSFS: &str = include_str!("../../../fixtures/lab/nvme-pf.sysfs.lspci-x");
/// The lab's NVMe VF, as sysfs showed its config space to the guest kernel.
const NVME_VF_SYSFS: &str = include_str!("../../../fixtures/lab/nvme-vf.sysfs.lspci-x");

fn space(dump: &str) -> Result<ConfigSpace, Failure> {
    let mut entries =
        pci_config::parse_dump(dump).map_err(|e| Failure::new(format!("fixture: {e}")))?;
    if entries.is_empty() {
        return Err(Failure::new("fixture holds no device"));
    }
    Ok(entries.swap_remove(0).space)
}

/// QEMU 7.2's e1000e as vfio-pci in Linux 6.12.117 shows it: BAR0 and BAR1 0x20000 of memory,
/// BAR2 0x20 of I/O, BAR3 (the MSI-X BAR) 0x4000, as REGION_INFO reported them in the lab;
/// dynamic MSI-X with 5 vectors; the interrupt registers of QEMU's e1000e in BAR0, which
/// VFIO_DEVICE_RESET (a PM reset) leaves as they were.
pub fn e1000e_profile() -> Result<SimDevice, Failure> {
    Ok(SimDevice::from_config_space_builder(space(E1000E_SYSFS)?)
        .bar(0, BarKind::Mem32, 0x20000, false)
        .bar(1, BarKind::Mem32, 0x20000, false)
        .bar(2, BarKind::Io, 0x20, false)
        .bar(3, BarKind::Mem32, 0x4000, false)
        .msix_mode(MsixMode::Dynamic)
        .model(DeviceModel::E1000e)
        .msi_needs_bus_master(true)
        .reset_keeps_registers(true)
        .build()?)
}

/// QEMU 7.2's NVMe PF as vfio-pci in Linux 6.12.117 shows it: BAR0 64-bit, 0x4000, holding
/// the MSI-X table (63 vectors, dynamic). The seed-000 comparison runs on it.
pub fn nvme_pf_profile() -> Result<SimDevice, Failure> {
    Ok(SimDevice::from_config_space_builder(space(NVME_PF_SYSFS)?)
        .bar(0, BarKind::Mem64, 0x4000, false)
        .msix_mode(MsixMode::Dynamic)
        .msi_needs_bus_master(true)
        .build()?)
}

/// The vendor and VF device ID an SR-IOV PF gives its VFs (its SR-IOV capability: VF Device
/// ID at +0x1a; vendor the PF's).
fn vf_ids(pf: &ConfigSpace) -> Result<(u16, u16), Failure> {
    let cap = pf
        .find_capability(CapabilityKind::Extended, pci_config::ids::EXT_SRIOV)
        .map_err(|e| Failure::new(format!("PF fixture: no SR-IOV capability: {e}")))?;
    let device = pf
        .read_u16(usize::from(cap.offset) + 0x1a)
        .map_err(|e| Failure::new(format!("PF fixture: {e}")))?;
    Ok((pf.vendor_id(), device))
}

/// A VF of QEMU 7.2's NVMe controller as vfio-pci in Linux 6.12.117 shows it: BAR0 64-bit,
/// 0x4000 (the lab's REGION_INFO), holding the one-vector MSI-X table; dynamic MSI-X; no INTx.
pub fn nvme_vf_profile() -> Result<SimDevice, Failure> {
    let (vendor, device) = vf_ids(&space(NVME_PF_SYSFS)?)?;
    Ok(SimDevice::from_config_space_builder(space(NVME_VF_SYSFS)?)
        .bar(0, BarKind::Mem64, 0x4000, false)
        .msix_mode(MsixMode::Dynamic)
        .virtfn(vendor, device)
        .msi_needs_bus_master(true)
        .build()?)
}
