// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Trapped BAR accesses, through vm-device's bus traits.
//!
//! A VMM registers each trapped range of the device on its bus; the handler receives the
//! range's `base` and an `offset`, and works from the absolute address `base + offset`, so
//! registering a whole BAR or just a trapped page both work. An access that hits the MSI-X
//! table or PBA is served by the table model ([`crate::msix`] documents its rules); any other
//! access is forwarded to the device's VFIO region. Accesses that hit no decoded BAR of this
//! device read as zeros and are dropped, and are counted.

use pci_config::BarKind;
use vfio_core::info::BAR0_REGION_INDEX;
use vm_device::bus::{MmioAddress, MmioAddressOffset, PioAddress, PioAddressOffset};
use vm_device::{MutDeviceMmio, MutDevicePio};

use crate::PassthroughDevice;

/// Where an access landed.
enum Target {
    Table(u64),
    Pba(u64),
    Region { bar: u8, offset: u64 },
    Nothing,
}

impl PassthroughDevice {
    fn target(&self, addr: u64, len: usize, io: bool) -> Target {
        for bar in &self.cfg.bars {
            if (bar.kind == BarKind::Io) != io {
                continue;
            }
            let Some(base) = self.cfg.space.decoded_bar_address(bar.index) else {
                continue;
            };
            let Some(off) = addr.checked_sub(base) else {
                continue;
            };
            if off >= bar.size || off.saturating_add(len as u64) > bar.size {
                continue;
            }
            if let Some(cap) = self.cfg.msix {
                let table_len = u64::from(cap.vectors) * 16;
                let pba_len = u64::from(cap.vectors).div_ceil(64) * 8;
                if cap.table_bir == bar.index
                    && off >= cap.table_offset
                    && off < cap.table_offset + table_len
                {
                    return Target::Table(off - cap.table_offset);
                }
                if cap.pba_bir == bar.index
                    && off >= cap.pba_offset
                    && off < cap.pba_offset + pba_len
                {
                    return Target::Pba(off - cap.pba_offset);
                }
            }
            return Target::Region {
                bar: bar.index,
                offset: off,
            };
        }
        Target::Nothing
    }

    fn bar_read(&mut self, addr: u64, data: &mut [u8], io: bool) {
        match self.target(addr, data.len(), io) {
            Target::Table(off) => match &self.msix {
                Some(t) => t.read_table(off, data),
                None => data.fill(0),
            },
            Target::Pba(off) => match &self.msix {
                Some(t) => t.read_pba(off, data),
                None => data.fill(0),
            },
            Target::Region { bar, offset } => {
                let index = BAR0_REGION_INDEX + u32::from(bar);
                if self.dev.region_read(index, offset, data).is_err() {
                    data.fill(0);
                    self.stats.device_access_errors += 1;
                }
            }
            Target::Nothing => {
                data.fill(0);
                self.stats.ignored_mmio += 1;
            }
        }
    }

    fn bar_write(&mut self, addr: u64, data: &[u8], io: bool) {
        match self.target(addr, data.len(), io) {
            Target::Table(off) => {
                let change = self.msix.as_mut().and_then(|t| t.write_table(off, data));
                match change {
                    Some(c) => self.msix_table_written(c),
                    None => self.stats.ignored_mmio += 1,
                }
            }
            // The PBA is read-only.
            Target::Pba(_) | Target::Nothing => self.stats.ignored_mmio += 1,
            Target::Region { bar, offset } => {
                let index = BAR0_REGION_INDEX + u32::from(bar);
                if self.dev.region_write(index, offset, data).is_err() {
                    self.stats.device_access_errors += 1;
                }
            }
        }
    }
}

impl MutDeviceMmio for PassthroughDevice {
    fn mmio_read(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.bar_read(base.0.wrapping_add(offset), data, false);
    }

    fn mmio_write(&mut self, base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.bar_write(base.0.wrapping_add(offset), data, false);
    }
}

impl MutDevicePio for PassthroughDevice {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let addr = u64::from(base.0).wrapping_add(u64::from(offset));
        self.bar_read(addr, data, true);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let addr = u64::from(base.0).wrapping_add(u64::from(offset));
        self.bar_write(addr, data, true);
    }
}
