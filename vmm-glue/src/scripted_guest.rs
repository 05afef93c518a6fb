// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A scripted guest driver: it programs a [`PassthroughDevice`] only through the guest-visible
//! entry points — config space accesses and MMIO writes to the BARs through vm-device's
//! [`MutDeviceMmio`] — in the order a Linux driver does.
//!
//! Tests and the `bench-msix` benchmark use it to bring devices into a realistic state before
//! they are saved. Nothing in it reaches into the device's internals.

use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;

use crate::PassthroughDevice;

/// Capability ID of MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability ID of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;

const MSIX_CTRL_ENABLE: u16 = 1 << 15;
const MSIX_CTRL_FUNCTION_MASK: u16 = 1 << 14;
const COMMAND_MEMORY: u16 = 1 << 1;
const COMMAND_BUS_MASTER: u16 = 1 << 2;

/// Reads a little-endian u32 from config space as the guest sees it.
pub fn config_read_u32(dev: &PassthroughDevice, offset: u16) -> u32 {
    let mut b = [0u8; 4];
    dev.config_read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// Reads a little-endian u16 from config space as the guest sees it.
pub fn config_read_u16(dev: &PassthroughDevice, offset: u16) -> u16 {
    let mut b = [0u8; 2];
    dev.config_read(offset, &mut b);
    u16::from_le_bytes(b)
}

/// Walks the standard capability list the guest sees and returns the offset of capability `id`.
/// Stops after 48 hops so a looping list cannot hang the walk.
pub fn find_capability(dev: &PassthroughDevice, id: u8) -> Option<u16> {
    find_capability_where(dev, |cap_id, _| cap_id == id)
}

/// Walks the standard capability list the guest sees and returns the offset of the first
/// capability for which `hit(id, offset)` is true, after at most 48 hops.
fn find_capability_where(dev: &PassthroughDevice, hit: impl Fn(u8, u16) -> bool) -> Option<u16> {
    let mut b = [0u8; 1];
    dev.config_read(0x34, &mut b);
    let mut ptr = u16::from(b[0] & !3);
    for _ in 0..48 {
        if ptr < 0x40 {
            return None;
        }
        let mut hdr = [0u8; 2];
        dev.config_read(ptr, &mut hdr);
        if hit(hdr[0], ptr) {
            return Some(ptr);
        }
        ptr = u16::from(hdr[1] & !3);
    }
    None
}

/// One BAR as the scripted firmware placed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacedBar {
    /// BAR index.
    pub index: u8,
    /// Guest address the firmware wrote.
    pub address: u64,
    /// Size found with the sizing protocol.
    pub size: u64,
    /// Whether the BAR decodes I/O space.
    pub io: bool,
}

/// Sizes every BAR with the all-ones protocol and places memory BARs upwards from
/// `*next_mmio` (each aligned to its size, at least 4 KiB apart unless `pack` is set, in which
/// case sub-page BARs may share a page) and I/O BARs from `*next_pio`; then sets COMMAND.Memory,
/// COMMAND.IO and Bus Master, like firmware followed by a driver's `pci_enable_device`.
pub fn place_bars(
    dev: &mut PassthroughDevice,
    next_mmio: &mut u64,
    next_pio: &mut u64,
    pack: bool,
) -> Vec<PlacedBar> {
    let mut placed = Vec::new();
    let mut index = 0u8;
    while index < 6 {
        let off = 0x10 + 4 * u16::from(index);
        let orig = config_read_u32(dev, off);
        dev.config_write(off, &u32::MAX.to_le_bytes());
        let probe = config_read_u32(dev, off);
        let io = orig & 1 == 1;
        let is64 = !io && (orig >> 1) & 3 == 2;
        let mut mask = if io {
            // I/O space is 16 bits wide on x86: the upper half may read as zero.
            u64::from(probe & !3) | 0xffff_ffff_ffff_0000
        } else {
            u64::from(probe & !0xf) | 0xffff_ffff_0000_0000
        };
        if is64 {
            dev.config_write(off + 4, &u32::MAX.to_le_bytes());
            let hi = config_read_u32(dev, off + 4);
            mask = (u64::from(hi) << 32) | (mask & 0xffff_ffff);
        }
        let size = (!mask).wrapping_add(1);
        if probe == 0 || size == 0 {
            dev.config_write(off, &orig.to_le_bytes());
            index += 1;
            continue;
        }
        let cursor = if io { &mut *next_pio } else { &mut *next_mmio };
        let align = if io || pack { size } else { size.max(4096) };
        let addr = cursor.div_ceil(align) * align;
        *cursor = addr + if io || pack { size } else { size.max(4096) };
        dev.config_write(off, &((addr as u32) | (orig & 0xf)).to_le_bytes());
        if is64 {
            dev.config_write(off + 4, &((addr >> 32) as u32).to_le_bytes());
        }
        placed.push(PlacedBar {
            index,
            address: addr,
            size,
            io,
        });
        index += if is64 { 2 } else { 1 };
    }
    let cmd = config_read_u16(dev, 0x04) | COMMAND_MEMORY | COMMAND_BUS_MASTER | 1;
    dev.config_write(0x04, &cmd.to_le_bytes());
    placed
}

/// The MSI message the scripted guest programs into vector `vector` of device `device`:
/// an x86 LAPIC address spread over a few destination IDs, and a distinct data value.
pub fn message_for(device: usize, vector: u16) -> (u64, u32) {
    let dest = (device as u64 + u64::from(vector)) % 8;
    (
        0xfee0_0000 | (dest << 12),
        0x4000 | ((device as u32 & 0x3f) << 8) | u32::from(vector & 0xff),
    )
}

/// What [`program_msix`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsixProgram {
    /// Offset of the MSI-X capability.
    pub capability: u16,
    /// Number of vectors the table has.
    pub vectors: u16,
    /// Guest address of the table.
    pub table_address: u64,
    /// Guest address of the PBA.
    pub pba_address: u64,
}

/// Guest address of BAR `bir` as config space reads back.
fn bar_address(dev: &PassthroughDevice, bir: u8) -> u64 {
    let off = 0x10 + 4 * u16::from(bir);
    let lo = config_read_u32(dev, off);
    if lo & 1 == 1 {
        return u64::from(lo & !3);
    }
    let mut addr = u64::from(lo & !0xf);
    if (lo >> 1) & 3 == 2 && bir < 5 {
        addr |= u64::from(config_read_u32(dev, off + 4)) << 32;
    }
    addr
}

/// Writes `data` at guest address `addr`, routed to the device like a VMM bus would: the
/// `base` argument is the address of the BAR that contains `addr`.
fn mmio_write_at(dev: &mut PassthroughDevice, bar_base: u64, addr: u64, data: &[u8]) {
    dev.mmio_write(MmioAddress(bar_base), addr - bar_base, data);
}

/// Programs MSI-X like Linux's `msix_capability_init` followed by `request_irq` per vector:
/// enable with the function masked, write every entry (still masked), clear the function
/// mask, then unmask each vector for which `unmask(vector)` is true. Returns `None` if the
/// device has no MSI-X capability or its table BAR is not placed.
pub fn program_msix(
    dev: &mut PassthroughDevice,
    device: usize,
    unmask: impl Fn(u16) -> bool,
) -> Option<MsixProgram> {
    let cap = find_capability(dev, CAP_ID_MSIX)?;
    let ctrl = config_read_u16(dev, cap + 2);
    let vectors = (ctrl & 0x7ff) + 1;
    let table = config_read_u32(dev, cap + 4);
    let pba = config_read_u32(dev, cap + 8);
    let table_bar = bar_address(dev, (table & 7) as u8);
    let pba_bar = bar_address(dev, (pba & 7) as u8);
    if table_bar == 0 {
        return None;
    }
    let table_address = table_bar + u64::from(table & !7);
    let pba_address = pba_bar + u64::from(pba & !7);

    dev.config_write(
        cap + 2,
        &(MSIX_CTRL_ENABLE | MSIX_CTRL_FUNCTION_MASK).to_le_bytes(),
    );
    for v in 0..vectors {
        let (addr, data) = message_for(device, v);
        let entry = table_address + 16 * u64::from(v);
        mmio_write_at(dev, table_bar, entry, &(addr as u32).to_le_bytes());
        mmio_write_at(
            dev,
            table_bar,
            entry + 4,
            &((addr >> 32) as u32).to_le_bytes(),
        );
        mmio_write_at(dev, table_bar, entry + 8, &data.to_le_bytes());
    }
    dev.config_write(cap + 2, &MSIX_CTRL_ENABLE.to_le_bytes());
    for v in 0..vectors {
        if unmask(v) {
            let ctrl = table_address + 16 * u64::from(v) + 12;
            mmio_write_at(dev, table_bar, ctrl, &0u32.to_le_bytes());
        }
    }
    Some(MsixProgram {
        capability: cap,
        vectors,
        table_address,
        pba_address,
    })
}

/// Finds the guest migration notice capability the way a guest driver would: a
/// vendor-specific capability (ID 0x09) whose signature is `migration-state`'s.
pub fn find_notice_capability(dev: &PassthroughDevice) -> Option<u16> {
    use migration_state::notice::SIGNATURE;
    find_capability_where(dev, |id, ptr| {
        id == pci_config::ids::CAP_VENDOR
            && config_read_u32(dev, ptr + 4) == u32::from_le_bytes(SIGNATURE)
    })
}

/// A cooperating guest driver opts in to migration notices on `vector` (an MSI-X entry or
/// MSI vector). Returns the capability offset, or `None` if the device has no notice.
pub fn opt_in_notice(dev: &mut PassthroughDevice, vector: u16) -> Option<u16> {
    use migration_state::notice::{CONTROL_ENABLED, GUEST_CONTROL, VECTOR};
    let cap = find_notice_capability(dev)?;
    dev.config_write(cap + VECTOR as u16, &vector.to_le_bytes());
    dev.config_write(cap + GUEST_CONTROL as u16, &[CONTROL_ENABLED]);
    Some(cap)
}

/// The host status byte of the notice (0 idle, 1 migration pending, 2 reset the driver).
pub fn notice_status(dev: &PassthroughDevice) -> Option<u8> {
    let cap = find_notice_capability(dev)?;
    let mut b = [0u8; 1];
    dev.config_read(cap + migration_state::notice::HOST_STATUS as u16, &mut b);
    Some(b[0])
}

/// The guest driver handles the current notice: reads the host generation and writes it
/// back as its acknowledgement. Returns the generation acknowledged.
pub fn ack_notice(dev: &mut PassthroughDevice) -> Option<u32> {
    use migration_state::notice::{GUEST_ACK, HOST_GENERATION};
    let cap = find_notice_capability(dev)?;
    let generation = config_read_u32(dev, cap + HOST_GENERATION as u16);
    dev.config_write(cap + GUEST_ACK as u16, &generation.to_le_bytes());
    Some(generation)
}

/// Programs MSI like Linux's `msi_capability_init`: message address and data, the per-vector
/// mask bits `mask`, then Enable with Multiple Message Enable `log2_vectors`. Returns the
/// capability offset, or `None` without MSI.
pub fn program_msi(
    dev: &mut PassthroughDevice,
    device: usize,
    log2_vectors: u8,
    mask: u32,
) -> Option<u16> {
    let cap = find_capability(dev, CAP_ID_MSI)?;
    let ctrl = config_read_u16(dev, cap + 2);
    let is64 = ctrl & (1 << 7) != 0;
    let (addr, data) = message_for(device, 0);
    dev.config_write(cap + 4, &(addr as u32).to_le_bytes());
    let data_off = if is64 {
        dev.config_write(cap + 8, &((addr >> 32) as u32).to_le_bytes());
        cap + 12
    } else {
        cap + 8
    };
    dev.config_write(data_off, &(data as u16 & !0x1f).to_le_bytes());
    if ctrl & (1 << 8) != 0 {
        dev.config_write(data_off + 4, &mask.to_le_bytes());
    }
    let enable = 1u16 | (u16::from(log2_vectors & 7) << 4);
    dev.config_write(cap + 2, &enable.to_le_bytes());
    Some(cap)
}
