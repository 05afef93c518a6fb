// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Device, region and irq descriptions, as `VFIO_DEVICE_GET_INFO`, `VFIO_DEVICE_GET_REGION_INFO`
//! and `VFIO_DEVICE_GET_IRQ_INFO` report them.

use vfio_bindings::bindings::vfio as b;

/// Region index of BAR 0 (BARs 1-5 follow).
pub const BAR0_REGION_INDEX: u32 = b::VFIO_PCI_BAR0_REGION_INDEX;
/// Region index of the expansion ROM.
pub const ROM_REGION_INDEX: u32 = b::VFIO_PCI_ROM_REGION_INDEX;
/// Region index of PCI configuration space.
pub const CONFIG_REGION_INDEX: u32 = b::VFIO_PCI_CONFIG_REGION_INDEX;
/// Region index of the legacy VGA region.
pub const VGA_REGION_INDEX: u32 = b::VFIO_PCI_VGA_REGION_INDEX;
/// Irq index of INTx.
pub const INTX_IRQ_INDEX: u32 = b::VFIO_PCI_INTX_IRQ_INDEX;
/// Irq index of MSI.
pub const MSI_IRQ_INDEX: u32 = b::VFIO_PCI_MSI_IRQ_INDEX;
/// Irq index of MSI-X.
pub const MSIX_IRQ_INDEX: u32 = b::VFIO_PCI_MSIX_IRQ_INDEX;
/// Irq index of the AER error notification.
pub const ERR_IRQ_INDEX: u32 = b::VFIO_PCI_ERR_IRQ_INDEX;
/// Irq index of the device request notification.
pub const REQ_IRQ_INDEX: u32 = b::VFIO_PCI_REQ_IRQ_INDEX;

/// Offset of region `index` in the device fd, as vfio-pci lays regions out (`index << 40`).
pub const fn pci_region_offset(index: u32) -> u64 {
    (index as u64) << 40
}

bitflags::bitflags! {
    /// `vfio_device_info.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct DeviceFlags: u32 {
        /// The device supports `VFIO_DEVICE_RESET`.
        const RESET = b::VFIO_DEVICE_FLAGS_RESET;
        /// The device is a PCI device.
        const PCI = b::VFIO_DEVICE_FLAGS_PCI;
    }
}

bitflags::bitflags! {
    /// `vfio_region_info.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct RegionFlags: u32 {
        /// The region can be read.
        const READ = b::VFIO_REGION_INFO_FLAG_READ;
        /// The region can be written.
        const WRITE = b::VFIO_REGION_INFO_FLAG_WRITE;
        /// The region (or its sparse areas) can be mmapped.
        const MMAP = b::VFIO_REGION_INFO_FLAG_MMAP;
        /// The region info carries capabilities.
        const CAPS = b::VFIO_REGION_INFO_FLAG_CAPS;
    }
}

bitflags::bitflags! {
    /// `vfio_irq_info.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct IrqFlags: u32 {
        /// Vectors of the index can signal an eventfd.
        const EVENTFD = b::VFIO_IRQ_INFO_EVENTFD;
        /// The index supports MASK/UNMASK.
        const MASKABLE = b::VFIO_IRQ_INFO_MASKABLE;
        /// The interrupt is masked automatically when it fires (INTx).
        const AUTOMASKED = b::VFIO_IRQ_INFO_AUTOMASKED;
        /// The vector count is fixed once enabled: growing it means disable and re-enable.
        const NORESIZE = b::VFIO_IRQ_INFO_NORESIZE;
    }
}

/// One mmappable area of a region (`VFIO_REGION_INFO_CAP_SPARSE_MMAP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseMmapArea {
    /// Offset of the area inside the region.
    pub offset: u64,
    /// Size of the area.
    pub size: u64,
}

/// A region's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index.
    pub index: u32,
    /// Access flags.
    pub flags: RegionFlags,
    /// Size in bytes.
    pub size: u64,
    /// Offset of the region in the device fd (for `pread`/`pwrite`/`mmap`).
    pub offset: u64,
    /// The mmappable areas when the region reports `SPARSE_MMAP`; `None` when the whole region
    /// is mmappable (if `MMAP` is set).
    pub sparse_mmap: Option<Vec<SparseMmapArea>>,
    /// `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`: the MSI-X table and PBA inside this BAR may be
    /// mmapped along with the rest of it (userspace still traps them).
    pub msix_mappable: bool,
}

impl RegionInfo {
    /// Whether the region, or part of it, can be mmapped.
    pub fn is_mmappable(&self) -> bool {
        self.flags.contains(RegionFlags::MMAP)
    }
}

/// An irq index's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfo {
    /// Irq index.
    pub index: u32,
    /// Flags.
    pub flags: IrqFlags,
    /// Number of vectors the index supports (the MSI-X table size for MSI-X).
    pub count: u32,
}

impl IrqInfo {
    /// Whether the vector count is fixed at enable time (`VFIO_IRQ_INFO_NORESIZE`).
    pub fn is_noresize(&self) -> bool {
        self.flags.contains(IrqFlags::NORESIZE)
    }
}

/// Everything a device reports about itself. It does not change while the device is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Device flags.
    pub flags: DeviceFlags,
    /// Regions, by index; an index the device does not have is `None`.
    pub regions: Vec<Option<RegionInfo>>,
    /// Irq indexes, by index; an index the device does not have is `None`.
    pub irqs: Vec<Option<IrqInfo>>,
}

impl DeviceInfo {
    /// The region at `index`, if the device has it.
    pub fn region(&self, index: u32) -> Option<&RegionInfo> {
        self.regions.get(index as usize).and_then(Option::as_ref)
    }

    /// The region at `index` if the `len` bytes at `offset` lie inside it; EINVAL, as the
    /// kernel answers, for a missing region or an access past its end.
    #[cfg(any(feature = "kernel", feature = "sim"))]
    pub(crate) fn region_for_access(
        &self,
        index: u32,
        offset: u64,
        len: usize,
    ) -> std::io::Result<&RegionInfo> {
        let region = self
            .region(index)
            .ok_or_else(|| crate::error::errno(libc::EINVAL))?;
        match offset.checked_add(len as u64) {
            Some(end) if end <= region.size => Ok(region),
            _ => Err(crate::error::errno(libc::EINVAL)),
        }
    }

    /// The irq index `index`, if the device has it.
    pub fn irq(&self, index: u32) -> Option<&IrqInfo> {
        self.irqs.get(index as usize).and_then(Option::as_ref)
    }

    /// Number of irq indexes the device reports (`vfio_device_info.num_irqs`).
    pub fn num_irqs(&self) -> u32 {
        u32::try_from(self.irqs.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vfio-pci places region `i` at `i << VFIO_PCI_OFFSET_SHIFT` (40) in the device fd.
    #[test]
    fn region_offsets_follow_vfio_pci() {
        assert_eq!(pci_region_offset(BAR0_REGION_INDEX), 0);
        assert_eq!(pci_region_offset(2), 0x200_0000_0000);
        assert_eq!(CONFIG_REGION_INDEX, 7);
        assert_eq!(pci_region_offset(CONFIG_REGION_INDEX), 0x700_0000_0000);
        assert_eq!(
            (
                INTX_IRQ_INDEX,
                MSI_IRQ_INDEX,
                MSIX_IRQ_INDEX,
                ERR_IRQ_INDEX,
                REQ_IRQ_INDEX
            ),
            (0, 1, 2, 3, 4)
        );
        assert_eq!(IrqFlags::NORESIZE.bits(), 8);
        assert_eq!(IrqFlags::EVENTFD.bits(), 1);
    }
}
