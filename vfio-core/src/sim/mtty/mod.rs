// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulator's mtty profile ([`SimDevice::mtty`]): the kernel's sample mdev (Linux
//! v6.12.117 `samples/vfio-mdev/mtty.c`), with the answers the sample gives rather than
//! vfio-pci's.

mod uart;

use pci_config::{BarKind, ConfigSpace};
use vfio_bindings::bindings::vfio as b;

use crate::error::{errno, Error, Result};
use crate::info::{
    pci_region_offset, DeviceFlags, DeviceInfo, IrqFlags, IrqInfo, RegionFlags, RegionInfo,
    BAR0_REGION_INDEX, CONFIG_REGION_INDEX, INTX_IRQ_INDEX, MSI_IRQ_INDEX, VGA_REGION_INDEX,
};
use crate::irq_set::{IrqSet, IRQ_SET_HEADER_SIZE};
use crate::migration::MigrationFeatures;

use super::irq::Trigger;
use super::migration::{ArcFailure, DeviceContent, PreCopyEnd, StreamRules};
use super::{SimCounters, SimDevice, SimDeviceBuilder};

use uart::{SerialPort, PORT_LEN};

/// The lab's capture of an `mtty-2` device's config region, read right after open.
const FIXTURE: &str = include_str!("../../../../fixtures/lab/mtty.vfio.lspci-x");

/// `MTTY_CONFIG_SPACE_SIZE`.
pub const MTTY_CONFIG_SPACE_SIZE: usize = 0xff;
/// `MTTY_IO_BAR_SIZE`.
const MTTY_IO_BAR_SIZE: u64 = 8;
/// `MTTY_MAGIC`: the first 8 bytes of every mtty migration stream.
pub const MTTY_MAGIC: u64 = 0x7e9d_0989_8c3e_2c4e;
/// `MTTY_MAJOR_VER`, `MTTY_MINOR_VER`.
const MTTY_VERSION: (u32, u32) = (1, 0);
/// `offsetof(struct mtty_data, ports)`: the stream's header, all a PRE_COPY fd ever holds.
pub const MTTY_HEADER_LEN: usize = 24;
/// `sizeof(struct serial_port)`: what the stream carries per port.
pub const MTTY_PORT_LEN: usize = PORT_LEN;
/// `VFIO_PCI_NUM_IRQS`, which mtty reports as `num_irqs` and validates every index against.
const NUM_IRQS: u32 = 5;

/// `mtty_data_size()`: the whole stream of a device with `ports` ports.
pub const fn mtty_data_size(ports: u32) -> usize {
    MTTY_HEADER_LEN + ports as usize * MTTY_PORT_LEN
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The check `mtty_resume_write()` makes on the write that completes the header: magic,
/// flags 0, version 1.0, the destination's port count.
pub(crate) fn header_is_valid(data: &[u8], ports: u32) -> bool {
    let magic = data
        .get(..8)
        .and_then(|m| <[u8; 8]>::try_from(m).ok())
        .map(u64::from_le_bytes);
    magic == Some(MTTY_MAGIC)
        && word(data, 8) == Some(MTTY_VERSION.0)
        && word(data, 12) == Some(MTTY_VERSION.1)
        && word(data, 16) == Some(ports)
        && word(data, 20) == Some(0)
}

/// Which interrupt mtty has enabled (`irq_index`, -1 for none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IrqIndex {
    None,
    Intx,
    Msi,
}

/// The state of one mtty device (`struct mdev_state`) that is not migration's.
#[derive(Debug)]
pub(crate) struct Mtty {
    ports: u32,
    vconfig: [u8; MTTY_CONFIG_SPACE_SIZE],
    s: [SerialPort; 2],
    irq_index: IrqIndex,
    intx: Option<Trigger>,
    msi: Option<Trigger>,
    intx_mask: bool,
    /// Whether the simulated kernel can report DMA logs (`CONFIG_IOMMUFD_DRIVER`; see
    /// `sim::dma_logging`).
    pub(crate) reports_dma_logs: bool,
}

/// How `mtty_read()`/`mtty_write()` cut an access: 4, 2 or 1 bytes by alignment.
fn chunks(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize)> {
    let mut at = offset;
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = if left >= 4 && at % 4 == 0 {
            4
        } else if left >= 2 && at % 2 == 0 {
            2
        } else {
            1
        };
        let chunk = (at, n);
        at += n as u64;
        left -= n;
        Some(chunk)
    })
}

fn set_irqs_err(index: u32, e: i32) -> Error {
    Error::SetIrqs {
        index,
        source: errno(e),
    }
}

impl Mtty {
    fn new(ports: u32, config: &ConfigSpace) -> Result<Self> {
        let mut vconfig = [0u8; MTTY_CONFIG_SPACE_SIZE];
        config
            .read(0, &mut vconfig)
            .map_err(|_| Error::SimConfig("mtty config fixture too short"))?;
        if ports == 1 {
            // mtty_create_config_space() sets BAR1 only for two ports.
            vconfig[0x14..0x18].fill(0);
        }
        Ok(Mtty {
            ports,
            vconfig,
            s: [SerialPort::new(), SerialPort::new()],
            irq_index: IrqIndex::None,
            intx: None,
            msi: None,
            intx_mask: false,
            reports_dma_logs: false,
        })
    }

    /// `mtty_get_device_info()`, `mtty_get_region_info()`, `mtty_get_irq_info()`.
    fn device_info(ports: u32) -> DeviceInfo {
        let regions = (0..=VGA_REGION_INDEX)
            .map(|index| {
                let size = match index {
                    CONFIG_REGION_INDEX => MTTY_CONFIG_SPACE_SIZE as u64,
                    BAR0_REGION_INDEX => MTTY_IO_BAR_SIZE,
                    1 if ports == 2 => MTTY_IO_BAR_SIZE,
                    _ => 0,
                };
                Some(RegionInfo {
                    index,
                    flags: RegionFlags::READ | RegionFlags::WRITE,
                    size,
                    offset: pci_region_offset(index),
                    sparse_mmap: None,
                    msix_mappable: false,
                })
            })
            .collect();
        let mut irqs = vec![None; NUM_IRQS as usize];
        irqs[INTX_IRQ_INDEX as usize] = Some(IrqInfo {
            index: INTX_IRQ_INDEX,
            flags: IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED,
            count: 1,
        });
        irqs[MSI_IRQ_INDEX as usize] = Some(IrqInfo {
            index: MSI_IRQ_INDEX,
            flags: IrqFlags::EVENTFD | IrqFlags::NORESIZE,
            count: 1,
        });
        DeviceInfo {
            flags: DeviceFlags::PCI,
            regions,
            irqs,
        }
    }

    /// `mtty_trigger_interrupt()`.
    fn trigger_interrupt(&mut self, counters: &mut SimCounters) {
        match self.irq_index {
            IrqIndex::Msi => {
                if self.msi.as_ref().is_some_and(Trigger::signal) {
                    counters.signals += 1;
                }
            }
            IrqIndex::Intx => {
                if let Some(t) = self.intx.as_ref().filter(|_| !self.intx_mask) {
                    if t.signal() {
                        counters.signals += 1;
                    }
                    self.intx_mask = true;
                }
            }
            IrqIndex::None => {}
        }
    }

    fn port(&mut self, index: u32) -> Option<&mut SerialPort> {
        self.s
            .get_mut(index.checked_sub(BAR0_REGION_INDEX)? as usize)
    }

    /// `mtty_read()`: config bytes, or UART registers (the first byte of each chunk; mtty
    /// leaves the others uninitialised, the simulator reads them as 0). The access is inside
    /// the region: the caller checked it.
    pub(crate) fn region_read(
        &mut self,
        index: u32,
        offset: u64,
        buf: &mut [u8],
        counters: &mut SimCounters,
    ) -> Result<()> {
        let err = Error::region_read(index, offset, buf.len());
        if index == CONFIG_REGION_INDEX {
            let src = self
                .vconfig
                .get(offset as usize..offset as usize + buf.len())
                .ok_or_else(|| err(errno(libc::EFAULT)))?;
            buf.copy_from_slice(src);
            return Ok(());
        }
        let mut raises = 0;
        for (at, n) in chunks(offset, buf.len()) {
            let port = self.port(index).ok_or_else(|| err(errno(libc::EFAULT)))?;
            let (value, raised) = port.read(at as u8);
            raises += usize::from(raised);
            let start = (at - offset) as usize;
            if let Some(chunk) = buf.get_mut(start..start + n) {
                chunk.fill(0);
                if let Some(first) = chunk.first_mut() {
                    *first = value;
                }
            }
        }
        for _ in 0..raises {
            self.trigger_interrupt(counters);
        }
        Ok(())
    }

    /// `mtty_write()`: `handle_pci_cfg_write()` or `handle_bar_write()` per chunk.
    pub(crate) fn region_write(
        &mut self,
        index: u32,
        offset: u64,
        data: &[u8],
        counters: &mut SimCounters,
    ) -> Result<()> {
        let err = Error::region_write(index, offset, data.len());
        for (at, n) in chunks(offset, data.len()) {
            let start = (at - offset) as usize;
            let chunk = data.get(start..start + n).unwrap_or_default();
            if index == CONFIG_REGION_INDEX {
                self.config_write(at as usize, chunk);
                continue;
            }
            let port = self.port(index).ok_or_else(|| err(errno(libc::EFAULT)))?;
            let raises = port.write(at as u8, chunk.first().copied().unwrap_or(0));
            for _ in 0..raises {
                self.trigger_interrupt(counters);
            }
        }
        Ok(())
    }

    /// `handle_pci_cfg_write()`: only the interrupt line and BAR0/1 (BAR2-4 read back 0);
    /// everything else is dropped. A BAR write takes 4 bytes; a shorter one is zero-extended
    /// (mtty reads past its chunk there).
    fn config_write(&mut self, offset: usize, chunk: &[u8]) {
        match offset {
            0x3c => {
                if let (Some(slot), Some(&v)) = (self.vconfig.get_mut(0x3c), chunk.first()) {
                    *slot = v;
                }
            }
            0x10 | 0x14 => {
                let bar_index = (offset - 0x10) / 4;
                let mut value = [0u8; 4];
                let n = chunk.len().min(4);
                value[..n].copy_from_slice(&chunk[..n]);
                let mut addr = u32::from_le_bytes(value);
                if self.ports == 1 && bar_index == 1 {
                    addr = 0;
                } else {
                    if addr == 0xffff_ffff {
                        // bar_mask = ~(MTTY_IO_BAR_SIZE) + 1
                        addr &= (!(MTTY_IO_BAR_SIZE as u32)).wrapping_add(1);
                    }
                    addr |= u32::from(self.vconfig[offset] & 0x3);
                }
                self.vconfig[offset..offset + 4].copy_from_slice(&addr.to_le_bytes());
            }
            0x18 | 0x1c | 0x20 => self.vconfig[offset..offset + 4].fill(0),
            _ => {}
        }
    }

    /// `mtty_ioctl(VFIO_DEVICE_SET_IRQS)`: `vfio_set_irqs_validate_and_prepare()` against 5
    /// vectors on every index, then `mtty_set_irqs()`.
    pub(crate) fn set_irqs(&mut self, set: &IrqSet, counters: &mut SimCounters) -> Result<()> {
        let bytes = set.to_bytes();
        let w = |i: usize| word(&bytes, 4 * i).unwrap_or(0);
        let (argsz, flags, index, start, count) = (w(0), w(1), w(2), w(3), w(4));
        let einval = || set_irqs_err(index, libc::EINVAL);
        let known = b::VFIO_IRQ_SET_DATA_TYPE_MASK | b::VFIO_IRQ_SET_ACTION_TYPE_MASK;
        if (argsz as usize) < IRQ_SET_HEADER_SIZE
            || index >= NUM_IRQS
            || count >= u32::MAX - start
            || flags & !known != 0
        {
            return Err(einval());
        }
        if start >= NUM_IRQS || start + count > NUM_IRQS {
            return Err(einval());
        }
        let size = match flags & b::VFIO_IRQ_SET_DATA_TYPE_MASK {
            b::VFIO_IRQ_SET_DATA_NONE => 0,
            b::VFIO_IRQ_SET_DATA_BOOL => 1,
            b::VFIO_IRQ_SET_DATA_EVENTFD => 4,
            _ => return Err(einval()),
        };
        let data_len = count as usize * size;
        if size != 0 && (argsz as usize - IRQ_SET_HEADER_SIZE) < data_len {
            return Err(einval());
        }
        let data = bytes
            .get(IRQ_SET_HEADER_SIZE..IRQ_SET_HEADER_SIZE + data_len)
            .ok_or_else(einval)?;
        match index {
            INTX_IRQ_INDEX | MSI_IRQ_INDEX => {
                self.set_intx_msi(index, flags, start, count, data, counters)
            }
            // MSI-X, ERR, REQ.
            _ => Err(set_irqs_err(index, libc::ENOTTY)),
        }
    }

    fn disable(&mut self, intx: bool) {
        let slot = if intx { &mut self.intx } else { &mut self.msi };
        if slot.take().is_some() {
            if intx {
                self.intx_mask = false;
            }
            self.irq_index = IrqIndex::None;
        }
    }

    /// `mtty_set_irqs()` for INTx and MSI.
    fn set_intx_msi(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        data: &[u8],
        counters: &mut SimCounters,
    ) -> Result<()> {
        let intx = index == INTX_IRQ_INDEX;
        let mine = if intx { IrqIndex::Intx } else { IrqIndex::Msi };
        let einval = || set_irqs_err(index, libc::EINVAL);
        let first_bool = data.first().is_some_and(|&v| v != 0);
        let none = flags & b::VFIO_IRQ_SET_DATA_NONE != 0;
        let bool_data = flags & b::VFIO_IRQ_SET_DATA_BOOL != 0;
        let eventfd = flags & b::VFIO_IRQ_SET_DATA_EVENTFD != 0;
        match flags & b::VFIO_IRQ_SET_ACTION_TYPE_MASK {
            b::VFIO_IRQ_SET_ACTION_MASK | b::VFIO_IRQ_SET_ACTION_UNMASK if !intx => {
                Err(set_irqs_err(index, libc::ENOTTY))
            }
            action @ (b::VFIO_IRQ_SET_ACTION_MASK | b::VFIO_IRQ_SET_ACTION_UNMASK) => {
                if self.irq_index != IrqIndex::Intx || start != 0 || count != 1 {
                    return Err(einval());
                }
                let masked = action == b::VFIO_IRQ_SET_ACTION_MASK;
                if none || (bool_data && first_bool) {
                    self.intx_mask = masked;
                } else if eventfd {
                    return Err(set_irqs_err(index, libc::ENOTTY));
                }
                Ok(())
            }
            b::VFIO_IRQ_SET_ACTION_TRIGGER => {
                if self.irq_index == mine && count == 0 && none {
                    self.disable(intx);
                    return Ok(());
                }
                let free = matches!(self.irq_index, IrqIndex::None) || self.irq_index == mine;
                if !free || start != 0 || count != 1 {
                    return Err(einval());
                }
                if eventfd {
                    let fd = word(data, 0).map_or(-1, |v| v as i32);
                    self.disable(intx);
                    if fd < 0 {
                        return Ok(());
                    }
                    let t = Trigger::bind(fd).map_err(|source| Error::SetIrqs { index, source })?;
                    if intx {
                        self.intx = Some(t);
                    } else {
                        self.msi = Some(t);
                    }
                    self.irq_index = mine;
                    return Ok(());
                }
                if self.irq_index != mine {
                    return Err(einval());
                }
                if none || (bool_data && first_bool) {
                    self.trigger_interrupt(counters);
                }
                Ok(())
            }
            // Two action bits: no case of mtty's switch matches, and it answers 0.
            _ => Ok(()),
        }
    }
}

impl DeviceContent for Mtty {
    /// `mtty_save_device_data()`: `struct mtty_data`'s header.
    fn initial_data(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(MTTY_HEADER_LEN);
        h.extend_from_slice(&MTTY_MAGIC.to_le_bytes());
        for v in [MTTY_VERSION.0, MTTY_VERSION.1, self.ports, 0] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    /// `mtty_save_state()`: each port's `struct serial_port`.
    fn final_data(&self) -> Vec<u8> {
        self.s
            .iter()
            .take(self.ports as usize)
            .flat_map(SerialPort::to_bytes)
            .collect()
    }

    /// `mtty_load_state()`: EINVAL with fewer than `mtty_data_size()` bytes; the header is not
    /// checked again (the write did).
    fn load(&mut self, stream: &[u8]) -> std::result::Result<(), i32> {
        if stream.len() < mtty_data_size(self.ports) {
            return Err(libc::EINVAL);
        }
        for (i, port) in self.s.iter_mut().take(self.ports as usize).enumerate() {
            let at = MTTY_HEADER_LEN + i * MTTY_PORT_LEN;
            let bytes = stream
                .get(at..at + MTTY_PORT_LEN)
                .and_then(|b| <&[u8; PORT_LEN]>::try_from(b).ok())
                .ok_or(libc::EINVAL)?;
            *port = SerialPort::from_bytes(bytes);
        }
        Ok(())
    }

    /// `mtty_get_data_size()`.
    fn stop_copy_length(&self) -> u64 {
        mtty_data_size(self.ports) as u64
    }
}

impl SimDevice {
    /// The lab's mtty mdev (Linux v6.12.117 `samples/vfio-mdev/mtty.c`), with `ports` serial
    /// ports (1 or 2; the lab creates `mtty-2` devices), answering as the sample does rather
    /// than as vfio-pci:
    ///
    /// - Device info (`mtty_get_device_info()`): flags PCI only (no RESET flag, though
    ///   `VFIO_DEVICE_RESET` works: `mtty_reset()`), 9 regions, 5 irq indexes.
    /// - Regions (`mtty_get_region_info()`): every index below 9 reads and writes; config
    ///   space is 0xff bytes, BAR0 (port 0) and BAR1 (port 1, `mtty-2` only) are 8-byte I/O
    ///   BARs, all the others have size 0. Nothing is mmappable.
    /// - Config space: mtty's own array, starting as `fixtures/lab/mtty.vfio.lspci-x` (the
    ///   lab's capture, which is what `mtty_create_config_space()` builds); writes follow
    ///   `handle_pci_cfg_write()`.
    /// - BARs: each port's 16550-like UART registers (`handle_bar_write()`,
    ///   `handle_bar_read()`: SCR, LCR with the DLAB divisor latch, IER, FCR/IIR, MCR, LSR, MSR
    ///   and a 16-byte loopback FIFO), so a value written through one device's BAR and migrated
    ///   reads back through the other's.
    /// - Interrupts (`mtty_get_irq_info()`, `mtty_set_irqs()`): INTx (count 1, maskable,
    ///   automasked) and MSI (count 1, NORESIZE); indexes 2-4 have no info (EINVAL). SET_IRQS
    ///   is validated against 5 vectors on every index, then MSI-X, ERR and REQ are ENOTTY;
    ///   an eventfd of -1 disables without enabling; a trigger on INTx signals only while
    ///   unmasked and masks it; the UART raises through the same path.
    /// - Migration: STOP_COPY | P2P | PRE_COPY, mtty's exact stream (a 24-byte header, then 36
    ///   bytes per port: `struct mtty_data`), PRE_COPY's end read as 0, `MIG_DATA_SIZE`
    ///   24 + 36 per port, and `mtty_resume_write()`'s ENOMEM and EFAULT rules.
    pub fn mtty(ports: u32) -> Result<SimDevice> {
        if !(1..=2).contains(&ports) {
            return Err(Error::SimConfig("mtty has one or two ports"));
        }
        let entry = pci_config::parse_dump(FIXTURE)
            .ok()
            .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0)))
            .ok_or(Error::SimConfig("mtty config fixture does not parse"))?;
        let mut builder = SimDeviceBuilder::from_config_space(entry.space)
            .bar(0, BarKind::Io, MTTY_IO_BAR_SIZE, false)
            .reset(false)
            .migration(
                MigrationFeatures::P2P | MigrationFeatures::PRE_COPY,
                Vec::new(),
            )
            .pre_copy_end(PreCopyEnd::ZeroRead)
            .resume_failure(ArcFailure::StaysInSource);
        if ports == 2 {
            builder = builder.bar(1, BarKind::Io, MTTY_IO_BAR_SIZE, false);
        }
        builder.mtty = Some(ports);
        builder.build()
    }
}

/// What an mtty device with `ports` ports reports, its stream rules, and its model over
/// `config` (the fixture's bytes).
pub(crate) fn profile(ports: u32, config: &ConfigSpace) -> Result<(DeviceInfo, StreamRules, Mtty)> {
    let rules = StreamRules {
        pre_copy_end: PreCopyEnd::ZeroRead,
        resume_limit: mtty_data_size(ports),
        load_failure: ArcFailure::StaysInSource,
        mtty_header: Some(ports),
    };
    Ok((Mtty::device_info(ports), rules, Mtty::new(ports, config)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_is_what_mtty_create_config_space_builds() {
        let entry = pci_config::parse_dump(FIXTURE).unwrap().remove(0);
        let m = Mtty::new(2, &entry.space).unwrap();
        let dw = |at: usize| u32::from_le_bytes(m.vconfig[at..at + 4].try_into().unwrap());
        assert_eq!(dw(0x0), 0x3253_4348, "PCI dev ID");
        assert_eq!(
            m.vconfig[0x4..0x8],
            [0x01, 0x00, 0x00, 0x02],
            "command, status"
        );
        assert_eq!(m.vconfig[0x8..0xc], [0x10, 0x02, 0x00, 0x07], "rev, class");
        assert_eq!((dw(0x10), dw(0x14)), (1, 1), "two I/O BARs");
        assert_eq!(dw(0x2c), 0x3253_4348, "subsystem");
        assert_eq!((m.vconfig[0x34], m.vconfig[0x3d]), (0, 1), "no caps, INTA");
        assert_eq!(&m.vconfig[0x60..0x6f], b"PCI Serial/UART");
        let one = Mtty::new(1, &entry.space).unwrap();
        assert_eq!(one.vconfig[0x14..0x18], [0; 4]);
    }

    #[test]
    fn bar_sizing_and_the_interrupt_line_are_the_only_config_writes() {
        let entry = pci_config::parse_dump(FIXTURE).unwrap().remove(0);
        let mut m = Mtty::new(2, &entry.space).unwrap();
        let mut c = SimCounters::default();
        m.region_write(CONFIG_REGION_INDEX, 0x10, &[0xff; 4], &mut c)
            .unwrap();
        m.region_write(CONFIG_REGION_INDEX, 0x3c, &[0x0b, 0x07], &mut c)
            .unwrap();
        m.region_write(CONFIG_REGION_INDEX, 0x04, &[0x07, 0], &mut c)
            .unwrap();
        let mut b = [0u8; 4];
        m.region_read(CONFIG_REGION_INDEX, 0x10, &mut b, &mut c)
            .unwrap();
        assert_eq!(u32::from_le_bytes(b), 0xffff_fff9);
        m.region_read(CONFIG_REGION_INDEX, 0x3c, &mut b, &mut c)
            .unwrap();
        assert_eq!(b, [0x0b, 0x01, 0, 0]);
        m.region_read(CONFIG_REGION_INDEX, 0x04, &mut b, &mut c)
            .unwrap();
        assert_eq!(b, [0x01, 0, 0, 0x02]);
    }

    #[test]
    fn the_header_check_is_mtty_resume_write_s() {
        let entry = pci_config::parse_dump(FIXTURE).unwrap().remove(0);
        let m = Mtty::new(2, &entry.space).unwrap();
        let h = m.initial_data();
        assert_eq!(
            h,
            [
                0x4e, 0x2c, 0x3e, 0x8c, 0x89, 0x09, 0x9d, 0x7e, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
                0, 0, 0, 0
            ]
        );
        assert!(header_is_valid(&h, 2));
        assert!(!header_is_valid(&h, 1));
        let mut bad = h.clone();
        bad[20] = 1;
        assert!(!header_is_valid(&bad, 2), "flags must be 0");
        assert_eq!(m.final_data().len(), 72);
        assert_eq!(mtty_data_size(2), 96);
        assert_eq!(mtty_data_size(1), 60);
    }
}
