// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulator configured like the lab's devices, from their committed config-space captures
//! (`fixtures/lab/*.sysfs.lspci-x`: the physical config space vfio-pci starts from) plus what a
//! dump cannot carry (BAR sizes, the device's behaviour).

use pci_config::{BarKind, ConfigSpace};

use super::Failure;
use crate::sim::{MsixMode, SimDevice};

/// The lab's e1000e, as sysfs showed its config space to the guest kernel.
const E1000E_SYSFS: &str = include_str!("../../../fixtures/lab/e1000e.sysfs.lspci-x");
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

/// QEMU 7.2's e1000e as vfio-pci in Linux 6.12.117 shows it (LAB.md: BAR0 and BAR1 0x20000
/// of memory, BAR2 0x20 of I/O, BAR3 the MSI-X BAR; dynamic MSI-X with 5 vectors).
pub fn e1000e_profile() -> Result<SimDevice, Failure> {
    Ok(SimDevice::from_config_space_builder(space(E1000E_SYSFS)?)
        .bar(0, BarKind::Mem32, 0x20000, false)
        .bar(1, BarKind::Mem32, 0x20000, false)
        .bar(2, BarKind::Io, 0x20, false)
        .bar(3, BarKind::Mem32, 0x4000, false)
        .msix_mode(MsixMode::Dynamic)
        .build()?)
}

/// A VF of QEMU 7.2's NVMe controller as vfio-pci in Linux 6.12.117 shows it.
pub fn nvme_vf_profile() -> Result<SimDevice, Failure> {
    Ok(SimDevice::from_config_space_builder(space(NVME_VF_SYSFS)?)
        .bar(0, BarKind::Mem64, 0x4000, false)
        .msix_mode(MsixMode::Dynamic)
        .build()?)
}
