// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! BAR region access of the simulated device, as Linux v6.12.117
//! drivers/vfio/pci/vfio_pci_rdwr.c performs it: through the BAR's memory (one sparse memory
//! file for the device, each BAR at its vfio-pci offset); the MSI-X table of the table's BAR
//! excluded (reads fill 0xff, writes are dropped, `vfio_pci_core_do_io_rw()`); memory BARs
//! refused with EIO while memory decode is off or the device is in D3hot
//! (`vfio_pci_core_ioread*/iowrite*()`), except inside the excluded table, which reaches no
//! device; I/O BARs never refused. The PBA reads the device's pending bits, and a modelled
//! device's registers (QEMU's e1000e) act on their dword accesses.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use pci_config::BarKind;

use super::e1000e::{E1000eRegs, Mode, Signals};
use super::irq::IrqState;
use super::{SimDevice, SimState, PAGE};
use crate::error::{errno, Error, Result};
use crate::info::{pci_region_offset, DeviceInfo, RegionInfo, SparseMmapArea, BAR0_REGION_INDEX};

/// The BAR regions of `info`.
pub(super) fn bar_regions(info: &DeviceInfo) -> impl Iterator<Item = &RegionInfo> {
    info.regions
        .iter()
        .flatten()
        .filter(|r| r.index < BAR0_REGION_INDEX + 6)
}

/// The memory file behind the BARs, sized to end with the last BAR region (a sparse file: only
/// pages written take memory).
pub(super) fn bar_memory(info: &DeviceInfo) -> Result<File> {
    let mem = crate::ioctl::memfd(c"vfio-sim-bars").map_err(Error::SimMemory)?;
    let end = bar_regions(info)
        .map(|r| r.offset + r.size)
        .max()
        .unwrap_or(0);
    mem.set_len(end).map_err(Error::SimMemory)?;
    Ok(mem)
}

/// The parts of `0..size` outside the page-aligned `holes` (offset, len).
pub(super) fn areas_around(size: u64, holes: &[(u64, u64)]) -> Vec<SparseMmapArea> {
    let mut cut: Vec<(u64, u64)> = holes
        .iter()
        .map(|&(o, l)| (o / PAGE * PAGE, (o + l).next_multiple_of(PAGE).min(size)))
        .collect();
    cut.sort_unstable();
    let mut areas = Vec::new();
    let mut at = 0;
    for (start, end) in cut {
        if start > at {
            areas.push(SparseMmapArea {
                offset: at,
                size: start - at,
            });
        }
        at = at.max(end);
    }
    if at < size {
        areas.push(SparseMmapArea {
            offset: at,
            size: size - at,
        });
    }
    areas
}

/// The dword-aligned register offsets fully inside `offset..offset + len`.
fn dwords(offset: u64, len: usize) -> impl Iterator<Item = u64> {
    let end = offset + len as u64;
    (offset.next_multiple_of(4)..end)
        .step_by(4)
        .filter(move |r| r + 4 <= end)
}

impl SimDevice {
    /// The excluded MSI-X table window of BAR `bar`, if it holds the table.
    fn table_window(&self, bar: u8) -> Option<(u64, u64)> {
        let m = self.msix.filter(|m| m.table_bar == bar)?;
        let start = u64::from(m.table_offset);
        Some((start, start + m.table_len()))
    }

    /// Whether `offset..offset + len` of BAR `bar` touches the device (is not all inside the
    /// excluded table) while the device does not decode memory: then the access is EIO.
    fn decode_off(&self, s: &SimState, bar: u8, offset: u64, len: usize) -> bool {
        let is_mem = self
            .bars
            .get(usize::from(bar))
            .copied()
            .flatten()
            .is_some_and(|r| r.kind != BarKind::Io);
        if !is_mem || s.config.memory_enabled() {
            return false;
        }
        match self.table_window(bar) {
            Some((start, end)) => offset < start || offset + len as u64 > end,
            None => true,
        }
    }

    /// Which interrupt the emulated device itself has enabled in its config space.
    pub(super) fn device_mode(s: &SimState) -> Mode {
        let b = s.config.phys.bytes();
        if let Some(at) = s.config.msix_cap() {
            if super::config::word(b, at + super::config::MSIX_FLAGS)
                & super::config::MSIX_FLAGS_ENABLE
                != 0
            {
                return Mode::Msix;
            }
        }
        if let Some(at) = s.config.msi_cap() {
            if super::config::word(b, at + super::config::MSI_FLAGS)
                & super::config::MSI_FLAGS_ENABLE
                != 0
            {
                return Mode::Msi;
            }
        }
        Mode::Intx
    }

    /// Deliver what the device's registers signalled.
    pub(super) fn deliver(&self, s: &mut SimState, signals: Signals) {
        let bm = !self.msi_needs_bus_master
            || s.config.physical_command() & super::config::COMMAND_MASTER != 0;
        for v in signals.msix {
            s.irq.raise_msix(v, bm, &mut s.counters);
        }
        if signals.msi {
            s.irq.raise_msi(bm, &mut s.counters);
        }
        if let Some(level) = signals.intx {
            Self::drive_intx(s, level);
        }
    }

    /// The device drives its INTx pin (STATUS's Interrupt Status bit follows it).
    pub(super) fn drive_intx(s: &mut SimState, level: bool) -> super::RaiseOutcome {
        let status = super::config::STATUS;
        let bit = u32::from(super::config::STATUS_INTERRUPT);
        s.config.phys.set_bits(status, 2, bit, level);
        s.irq.set_intx_line(level, &mut s.counters)
    }

    /// The INTx level of a modelled device, re-evaluated (after its interrupt mode changed).
    pub(super) fn sync_model(&self, s: &mut SimState) {
        let mode = Self::device_mode(s);
        let level = match s.model.as_mut() {
            Some(m) => m.read(super::e1000e::IMS, mode).1.intx,
            None => return,
        };
        Self::drive_intx(s, level.unwrap_or(false));
    }

    /// Read BAR `bar` (region index `index`); the caller checked the bounds.
    pub(super) fn bar_read(
        &self,
        s: &mut SimState,
        index: u32,
        bar: u8,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<()> {
        if self.decode_off(s, bar, offset, buf.len()) {
            return Err(errno(libc::EIO));
        }
        self.mem
            .read_exact_at(buf, pci_region_offset(index) + offset)?;
        let end = offset + buf.len() as u64;
        if let Some((start, stop)) = self.table_window(bar) {
            for at in offset.max(start)..end.min(stop) {
                if let Some(b) = buf.get_mut((at - offset) as usize) {
                    *b = 0xff;
                }
            }
        }
        if let Some(m) = self.msix.filter(|m| m.pba_bar == bar) {
            let pba = u64::from(m.pba_offset);
            let lo = offset.max(pba);
            let hi = end.min(pba + m.pba_len());
            if lo < hi {
                if let Some(sub) = buf.get_mut((lo - offset) as usize..(hi - offset) as usize) {
                    read_pba(&s.irq, pba, lo, sub);
                }
            }
        }
        if s.model.is_some() {
            let mode = Self::device_mode(s);
            for reg in dwords(offset, buf.len()).filter(|&r| E1000eRegs::owns(bar, r)) {
                let Some(model) = s.model.as_mut() else { break };
                let (value, signals) = model.read(reg, mode);
                let shadow = model.shadow(reg);
                let at = (reg - offset) as usize;
                if let Some(slot) = buf.get_mut(at..at + 4) {
                    slot.copy_from_slice(&value.to_le_bytes());
                }
                self.mem
                    .write_all_at(&shadow.to_le_bytes(), pci_region_offset(index) + reg)?;
                self.deliver(s, signals);
            }
        }
        Ok(())
    }

    /// Write BAR `bar` (region index `index`); the caller checked the bounds.
    pub(super) fn bar_write(
        &self,
        s: &mut SimState,
        index: u32,
        bar: u8,
        offset: u64,
        data: &[u8],
    ) -> io::Result<()> {
        if self.decode_off(s, bar, offset, data.len()) {
            return Err(errno(libc::EIO));
        }
        let base = pci_region_offset(index);
        let window = self.table_window(bar).unwrap_or((0, 0));
        // Everything outside the excluded table goes to the BAR's memory.
        for (i, byte) in data.iter().enumerate() {
            let at = offset + i as u64;
            if at < window.0 || at >= window.1 {
                self.mem
                    .write_all_at(std::slice::from_ref(byte), base + at)?;
            }
        }
        if s.model.is_some() {
            let mode = Self::device_mode(s);
            for reg in dwords(offset, data.len()).filter(|&r| E1000eRegs::owns(bar, r)) {
                let at = (reg - offset) as usize;
                let Some(bytes) = data
                    .get(at..at + 4)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                else {
                    continue;
                };
                let value = u32::from_le_bytes(bytes);
                let Some(model) = s.model.as_mut() else { break };
                let signals = model.write(reg, value, mode);
                let shadow = model.shadow(reg);
                self.mem.write_all_at(&shadow.to_le_bytes(), base + reg)?;
                self.deliver(s, signals);
            }
        }
        Ok(())
    }

    /// The device's own reset (what `pci_try_reset_function()` resets of it; its config space
    /// is saved and restored around it): the BARs' memory and modelled registers at their
    /// reset values, nothing pending, INTx deasserted; nothing for a device that ignores the
    /// kernel's reset method.
    pub(super) fn device_reset(&self, s: &mut SimState) -> Result<()> {
        if self.reset_keeps_registers {
            return Ok(());
        }
        for r in bar_regions(&self.info).filter(|r| r.size > 0) {
            crate::ioctl::punch_hole(&self.mem, r.offset, r.size).map_err(Error::Reset)?;
        }
        if let Some(m) = s.model.as_mut() {
            m.reset();
        }
        s.irq.pending.iter_mut().for_each(|p| *p = false);
        Self::drive_intx(s, false);
        Ok(())
    }
}

/// Read the MSI-X PBA bits covering `offset..offset + buf.len()` of the PBA.
fn read_pba(irq: &IrqState, pba_offset: u64, offset: u64, buf: &mut [u8]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        let base = (offset + i as u64 - pba_offset) * 8;
        *byte = (0..8u64).fold(0u8, |acc, bit| {
            let set = irq
                .pending
                .get((base + bit) as usize)
                .copied()
                .unwrap_or(false);
            acc | (u8::from(set) << bit)
        });
    }
}
