// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A simulated vfio-pci device that follows Linux's semantics (feature `sim`).
//!
//! Every other crate's tests and the benchmarks run against it, so it models what costs and
//! what fails in the kernel: `VFIO_DEVICE_SET_IRQS` with the kernel's argument checks,
//! NORESIZE and dynamic MSI-X, a `free_irq` + `request_irq` for every vector a TRIGGER names;
//! device-side raises that signal the bound eventfd or latch the vector pending; counters of
//! each; injected failures; and migration v2 through a data fd. [`SimDevice::mtty`] is the
//! lab's mtty mdev instead: its regions, UART registers, interrupts and migration stream.
//!
//! Share it as `Arc<SimDevice>`: hand a clone to the code under test (as
//! `Arc<dyn VfioDevice>`) and keep one to raise vectors and read counters.
//!
//! # Where it differs from Linux
//!
//! Known, deliberate or not yet modelled:
//! - Migration follows mtty's driver (Linux v6.12.117 `samples/vfio-mdev/mtty.c`; see
//!   `migration`'s module docs), with the kernel's state walk. The data fd is an in-process
//!   handle, not a file: it answers `read`, `write` and `VFIO_MIG_GET_PRECOPY_INFO` as mtty's
//!   file does (including the VFS's EBADF for the wrong direction and ENOTTY for the ioctl on a
//!   resuming fd), but it cannot be polled, `pread` (ESPIPE in the kernel) or passed to
//!   another process (`MigrationDataFd::as_file` is `None`). Allocation failures of the
//!   driver's files (ENOMEM) are not modelled.
//! - The generic profile's stream is the simulator's own (frames of an opaque blob of at most
//!   [`SIM_MAX_BLOB`] bytes); its `MIG_DATA_SIZE` is one frame of the blob, and state changed
//!   during PRE_COPY is reported as dirty bytes (mtty reports none).
//! - The mtty profile ([`SimDevice::mtty`]) answers as mtty does, except: a BAR read wider than
//!   a byte gets the register in the first byte of each 4/2/1-byte piece and 0 in the others
//!   (mtty leaves them uninitialised); a config write to BAR0/BAR1 narrower than 4 bytes is
//!   zero-extended (mtty reads past its piece); mtty's check of `num_irqs` from a
//!   GET_INFO that was never made (every IRQ ioctl EINVAL) is not modelled; its no-op DMA
//!   logging is not offered (the traits have no DMA logging).
//! - Dynamic MSI-X is whatever the builder says; the kernel also requires MSI domain support.
//! - A raise on an allocated MSI-X vector with no eventfd is latched pending (QEMU's view of the
//!   PBA); the kernel loses it. An unmasked INTx with no eventfd is latched too, where the
//!   kernel masks the line and drops the interrupt.
//! - A loopback INTx trigger ignores COMMAND's INTx Disable; the ERR index has no vectors (no
//!   PCIe error reporting); reset does not tear down interrupts (as in the kernel).
//! - A raw-flags request may pair one DATA type's flag with another type's payload.
//! - A trigger fd is checked with one `fstat`, against the inode every eventfd shares. Linux
//!   backs timerfd, signalfd and epoll fds (and other anonymous-inode files) with that same
//!   inode, so the simulator accepts them where `eventfd_ctx_fdget` refuses them (EINVAL); any
//!   other file (a device node, a pipe, a socket, a regular file) is refused as the kernel does.

mod builder;
mod irq;
mod migration;
mod migration_api;
mod mtty;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::io::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use pci_config::{ids, BarKind, ConfigSpace};

use crate::device::VfioDevice;
use crate::error::{errno, Error, Result};
use crate::info::{
    pci_region_offset, DeviceFlags, DeviceInfo, IrqFlags, IrqInfo, RegionFlags, RegionInfo,
    SparseMmapArea, BAR0_REGION_INDEX, CONFIG_REGION_INDEX, ERR_IRQ_INDEX, INTX_IRQ_INDEX,
    MSIX_IRQ_INDEX, MSI_IRQ_INDEX, REQ_IRQ_INDEX, VGA_REGION_INDEX,
};
use crate::irq_set::IrqSet;

pub use builder::{MsixMode, MsixPlacement, SimDeviceBuilder, SIM_MAX_BLOB};
pub use irq::RaiseOutcome;
pub use migration::{ArcFailure, MigrationArc, PreCopyEnd};
pub use mtty::{
    mtty_data_size, MTTY_CONFIG_SPACE_SIZE, MTTY_HEADER_LEN, MTTY_MAGIC, MTTY_PORT_LEN,
};

pub(crate) use migration::SimDataFd;

use irq::IrqState;
use migration::{MigSim, StreamRules};

const PAGE: u64 = 4096;

/// What the simulated device has been asked to do, by kind. Read with
/// [`SimDevice::counters`]; every field only grows (until [`SimDevice::reset_counters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// `VFIO_DEVICE_SET_IRQS` calls, failed ones included.
    pub set_irqs: u64,
    /// `VFIO_DEVICE_SET_IRQS` calls that failed (rejected, injected or failing midway).
    pub set_irqs_failed: u64,
    /// Region reads.
    pub region_reads: u64,
    /// Region writes.
    pub region_writes: u64,
    /// `VFIO_DEVICE_RESET` calls.
    pub resets: u64,
    /// Migration state sets.
    pub migration_set_state: u64,
    /// Migration state and feature queries.
    pub migration_queries: u64,
    /// Vector bindings the kernel would make (`request_irq`).
    pub request_irq: u64,
    /// Vector releases the kernel would make (`free_irq`).
    pub free_irq: u64,
    /// MSI/MSI-X/INTx index enables.
    pub index_enables: u64,
    /// MSI/MSI-X/INTx index disables.
    pub index_disables: u64,
    /// Vectors the PCI core allocated (at enable, and one at a time in dynamic MSI-X).
    pub vectors_allocated: u64,
    /// Eventfd signals delivered.
    pub signals: u64,
    /// Raises latched pending because nothing was bound.
    pub latched: u64,
    /// `request_irq` count per MSI-X vector.
    pub vector_bindings: Vec<u64>,
}

/// Injected failures.
#[derive(Debug, Default)]
struct Faults {
    /// Fail the SET_IRQS call that makes `counters.set_irqs` reach this value.
    set_irqs_call: Option<(u64, i32)>,
}

#[derive(Debug)]
struct SimState {
    config: ConfigSpace,
    irq: IrqState,
    counters: SimCounters,
    faults: Faults,
    /// Shared with the device's migration data fds.
    migration: Option<Arc<Mutex<MigSim>>>,
    /// The mtty profile's device ([`SimDevice::mtty`]): its regions, interrupts and
    /// migration content replace vfio-pci's.
    mtty: Option<Box<mtty::Mtty>>,
}

/// A simulated vfio-pci device. See the module docs.
#[derive(Debug)]
pub struct SimDevice {
    info: DeviceInfo,
    msix: Option<MsixPlacement>,
    /// The BARs' bytes: one sparse memory file, region `i` at `pci_region_offset(i)`, as a
    /// vfio-pci device fd lays its regions out. Handed out as the device's [`AsFd`].
    mem: File,
    state: Mutex<SimState>,
}

fn read_u16(cs: &ConfigSpace, at: usize) -> Result<u16> {
    cs.read_u16(at)
        .map_err(|_| Error::SimConfig("capability out of config space"))
}

fn read_u32(cs: &ConfigSpace, at: usize) -> Result<u32> {
    cs.read_u32(at)
        .map_err(|_| Error::SimConfig("capability out of config space"))
}

impl SimDevice {
    /// Start describing a device with these IDs.
    pub fn builder(vendor: u16, device: u16) -> SimDeviceBuilder {
        SimDeviceBuilder::new(vendor, device)
    }

    /// Start describing a device from a config space (for example a parsed `lspci -x` dump);
    /// see [`SimDeviceBuilder::from_config_space`].
    pub fn from_config_space_builder(space: ConfigSpace) -> SimDeviceBuilder {
        SimDeviceBuilder::from_config_space(space)
    }

    fn from_parts(b: SimDeviceBuilder, mut cs: ConfigSpace) -> Result<SimDevice> {
        let bad = |_| Error::SimConfig("config space write out of range");
        // MSI: its vector count, and the guest-writable control bits (enable, MME) and
        // address/data/mask registers.
        let msi_vectors = match cs.find_standard(ids::CAP_MSI) {
            Ok(cap) => {
                let at = usize::from(cap.offset);
                let ctrl = read_u16(&cs, at + 2)?;
                cs.set_write_mask(at + 2, &[0x71, 0]).map_err(bad)?;
                let regs = usize::from(cap.len).saturating_sub(4);
                cs.set_write_mask(at + 4, &vec![0xff; regs]).map_err(bad)?;
                1u32 << ((ctrl >> 1) & 0x7).min(5)
            }
            Err(_) => 0,
        };
        let msix = match cs.find_standard(ids::CAP_MSIX) {
            Ok(cap) => {
                let at = usize::from(cap.offset);
                let ctrl = read_u16(&cs, at + 2)?;
                let table = read_u32(&cs, at + 4)?;
                let pba = read_u32(&cs, at + 8)?;
                // Enable and function mask.
                cs.set_write_mask(at + 2, &[0, 0xc0]).map_err(bad)?;
                Some(MsixPlacement {
                    vectors: (ctrl & 0x7ff) + 1,
                    table_bar: (table & 7) as u8,
                    table_offset: table & !7,
                    pba_bar: (pba & 7) as u8,
                    pba_offset: pba & !7,
                })
            }
            Err(_) => None,
        };
        let bar_of = |i: u8| cs.bar(i);
        if let Some(m) = msix {
            let fits = |bar: u8, off: u32, len: u64| {
                bar_of(bar).is_some_and(|b| u64::from(off) + len <= b.size)
            };
            if !fits(m.table_bar, m.table_offset, m.table_len())
                || !fits(m.pba_bar, m.pba_offset, m.pba_len())
            {
                return Err(Error::SimConfig("MSI-X table or PBA outside its BAR"));
            }
        }
        let mut regions: Vec<Option<RegionInfo>> = (0..=VGA_REGION_INDEX).map(|_| None).collect();
        for i in 0..6u8 {
            let Some(bar) = cs.bar(i) else { continue };
            let index = BAR0_REGION_INDEX + u32::from(i);
            let mut flags = RegionFlags::READ | RegionFlags::WRITE;
            let is_mem = matches!(bar.kind, BarKind::Mem32 | BarKind::Mem64);
            if is_mem && (bar.size >= PAGE || b.sub_page_mmap) {
                flags |= RegionFlags::MMAP;
            }
            let mut sparse_mmap = None;
            let mut msix_mappable = false;
            if let (Some(m), true) = (msix, flags.contains(RegionFlags::MMAP)) {
                let mut holes = Vec::new();
                if m.table_bar == i {
                    holes.push((u64::from(m.table_offset), m.table_len()));
                }
                if m.pba_bar == i {
                    holes.push((u64::from(m.pba_offset), m.pba_len()));
                }
                if !holes.is_empty() {
                    flags |= RegionFlags::CAPS;
                    if b.msix_mappable {
                        msix_mappable = true;
                    } else {
                        sparse_mmap = Some(areas_around(bar.size, &holes));
                    }
                }
            }
            if let Some(slot) = regions.get_mut(index as usize) {
                *slot = Some(RegionInfo {
                    index,
                    flags,
                    size: bar.size,
                    offset: pci_region_offset(index),
                    sparse_mmap,
                    msix_mappable,
                });
            }
        }
        if let Some(slot) = regions.get_mut(CONFIG_REGION_INDEX as usize) {
            *slot = Some(RegionInfo {
                index: CONFIG_REGION_INDEX,
                flags: RegionFlags::READ | RegionFlags::WRITE,
                size: cs.size() as u64,
                offset: pci_region_offset(CONFIG_REGION_INDEX),
                sparse_mmap: None,
                msix_mappable: false,
            });
        }
        let pin = cs.read_u8(pci_config::regs::INTERRUPT_PIN).unwrap_or(0);
        let msix_vectors = msix.map_or(0, |m| u32::from(m.vectors));
        let dynamic = b.msix_mode == MsixMode::Dynamic;
        let irq = |index, flags, count| {
            Some(IrqInfo {
                index,
                flags,
                count,
            })
        };
        let irqs = vec![
            irq(
                INTX_IRQ_INDEX,
                IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED,
                u32::from(pin != 0),
            ),
            irq(
                MSI_IRQ_INDEX,
                IrqFlags::EVENTFD | IrqFlags::NORESIZE,
                msi_vectors,
            ),
            irq(
                MSIX_IRQ_INDEX,
                if dynamic {
                    IrqFlags::EVENTFD
                } else {
                    IrqFlags::EVENTFD | IrqFlags::NORESIZE
                },
                msix_vectors,
            ),
            irq(ERR_IRQ_INDEX, IrqFlags::EVENTFD, 0),
            irq(REQ_IRQ_INDEX, IrqFlags::EVENTFD, 1),
        ];
        let mut flags = DeviceFlags::PCI;
        if b.reset {
            flags |= DeviceFlags::RESET;
        }
        let mut info = DeviceInfo {
            flags,
            regions,
            irqs,
        };
        let mut rules = StreamRules::frames(b.pre_copy_end, b.resume_failure);
        let mut mtty_model = None;
        if let Some(ports) = b.mtty {
            let (mtty_info, mtty_rules, model) = mtty::profile(ports, &cs)?;
            info = mtty_info;
            rules = mtty_rules;
            mtty_model = Some(Box::new(model));
        }
        let counters = SimCounters {
            vector_bindings: vec![0; msix_vectors as usize],
            ..SimCounters::default()
        };
        let migration = b
            .migration
            .map(|f| Arc::new(Mutex::new(MigSim::new(f, b.blob.clone(), rules))));
        let mem = bar_memory(&info)?;
        Ok(SimDevice {
            info,
            msix,
            mem,
            state: Mutex::new(SimState {
                config: cs,
                irq: IrqState::new(msix_vectors, dynamic),
                counters,
                faults: Faults::default(),
                migration,
                mtty: mtty_model,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than the panic itself; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> SimCounters {
        self.lock().counters.clone()
    }

    /// Zero the counters.
    pub fn reset_counters(&self) {
        let mut s = self.lock();
        let n = s.counters.vector_bindings.len();
        s.counters = SimCounters {
            vector_bindings: vec![0; n],
            ..SimCounters::default()
        };
    }

    /// The device raises MSI-X vector `vector`: the eventfd bound to it is signalled, or, with
    /// nothing bound, the vector is latched pending (set in the PBA) and delivered when a
    /// trigger is bound to it.
    pub fn raise(&self, vector: u32) -> RaiseOutcome {
        let s = &mut *self.lock();
        s.irq.raise_msix(vector, &mut s.counters)
    }

    /// The device asserts INTx.
    pub fn raise_intx(&self) -> RaiseOutcome {
        let s = &mut *self.lock();
        s.irq.raise_intx(&mut s.counters)
    }

    /// Whether INTx is masked (by the user, or automatically when it fired). A signal on the
    /// INTx unmask eventfd, if one is bound, is acted on first.
    pub fn is_intx_masked(&self) -> bool {
        let s = &mut *self.lock();
        s.irq.service_intx_unmask(&mut s.counters);
        s.irq.intx_masked
    }

    /// Whether MSI-X vector `vector` is latched pending.
    pub fn is_pending(&self, vector: u32) -> bool {
        self.lock()
            .irq
            .pending
            .get(vector as usize)
            .copied()
            .unwrap_or(false)
    }

    /// The fd number bound to MSI-X vector `vector` (as passed to SET_IRQS), if any.
    pub fn msix_trigger(&self, vector: u32) -> Option<RawFd> {
        self.lock().irq.msix_trigger(vector)
    }

    /// The enabled interrupt index among INTx, MSI and MSI-X, if any.
    pub fn active_irq_index(&self) -> Option<u32> {
        self.lock().irq.active
    }

    /// How many vectors of the active MSI/MSI-X index the PCI core has allocated.
    pub fn allocated_vectors(&self) -> u32 {
        let n = self.lock().irq.allocated.iter().filter(|a| **a).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Make the `n`-th SET_IRQS call from now (1 = the next) fail with `errno`, changing
    /// nothing.
    pub fn fail_nth_set_irqs(&self, n: u64, errno: i32) {
        let mut s = self.lock();
        let at = s.counters.set_irqs + n.max(1);
        s.faults.set_irqs_call = Some((at, errno));
    }

    /// Make `request_irq` of MSI/MSI-X vector `vector` fail with `errno` (the kernel then
    /// undoes the vectors the same call had set), until [`SimDevice::clear_faults`].
    pub fn fail_request_irq(&self, vector: u32, errno: i32) {
        self.lock().irq.fail_request = Some((vector, errno));
    }

    /// Remove injected failures.
    pub fn clear_faults(&self) {
        let mut s = self.lock();
        s.faults = Faults::default();
        s.irq.fail_request = None;
        if let Some(m) = s.migration.as_ref() {
            migration::lock(m).core.fault = None;
        }
    }

    /// Read the physical MSI-X PBA bits covering `offset..offset + buf.len()` of the PBA.
    fn read_pba(irq: &irq::IrqState, pba_offset: u64, offset: u64, buf: &mut [u8]) {
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
}

/// The BAR regions of `info`: index, offset in the device fd, size.
fn bar_regions(info: &DeviceInfo) -> impl Iterator<Item = &RegionInfo> {
    info.regions
        .iter()
        .flatten()
        .filter(|r| r.index < BAR0_REGION_INDEX + 6)
}

/// The memory file behind the BARs, sized to end with the last BAR region (a sparse file: only
/// pages written take memory).
fn bar_memory(info: &DeviceInfo) -> Result<File> {
    let mem = crate::ioctl::memfd(c"vfio-sim-bars").map_err(Error::SimMemory)?;
    let end = bar_regions(info)
        .map(|r| r.offset + r.size)
        .max()
        .unwrap_or(0);
    mem.set_len(end).map_err(Error::SimMemory)?;
    Ok(mem)
}

/// The parts of `0..size` outside the page-aligned `holes` (offset, len).
fn areas_around(size: u64, holes: &[(u64, u64)]) -> Vec<SparseMmapArea> {
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

/// The memory file the BAR regions live in, at their `RegionInfo::offset`: mmap it there to map
/// a BAR; `pread`/`pwrite` on it see and change the same bytes as
/// [`VfioDevice::region_read`]/[`VfioDevice::region_write`], without the device's side effects
/// (counters, PBA, modelled registers). Config space is not in it.
impl AsFd for SimDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.mem.as_fd()
    }
}

impl VfioDevice for SimDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len();
        let err = Error::region_read(index, offset, len);
        self.info
            .region_for_access(index, offset, len)
            .map_err(err)?;
        let s = &mut *self.lock();
        s.counters.region_reads += 1;
        if let Some(m) = s.mtty.as_mut() {
            return m.region_read(index, offset, buf, &mut s.counters);
        }
        if index == CONFIG_REGION_INDEX {
            return s
                .config
                .read(offset as usize, buf)
                .map_err(|_| err(errno(libc::EINVAL)));
        }
        let bar = (index - BAR0_REGION_INDEX) as u8;
        let at = pci_region_offset(index) + offset;
        self.mem.read_exact_at(buf, at).map_err(err)?;
        if let Some(m) = self.msix.filter(|m| m.pba_bar == bar) {
            let pba = u64::from(m.pba_offset);
            let lo = offset.max(pba);
            let hi = (offset + len as u64).min(pba + m.pba_len());
            if lo < hi {
                let sub = buf.get_mut((lo - offset) as usize..(hi - offset) as usize);
                if let Some(sub) = sub {
                    Self::read_pba(&s.irq, pba, lo, sub);
                }
            }
        }
        Ok(())
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        let err = Error::region_write(index, offset, data.len());
        self.info
            .region_for_access(index, offset, data.len())
            .map_err(err)?;
        let s = &mut *self.lock();
        s.counters.region_writes += 1;
        if let Some(m) = s.mtty.as_mut() {
            return m.region_write(index, offset, data, &mut s.counters);
        }
        if index == CONFIG_REGION_INDEX {
            return s
                .config
                .write(offset as usize, data)
                .map(|_| ())
                .map_err(|_| err(errno(libc::EINVAL)));
        }
        let at = pci_region_offset(index) + offset;
        self.mem.write_all_at(data, at).map_err(err)
    }

    fn set_irqs(&self, set: &IrqSet) -> Result<()> {
        let s = &mut *self.lock();
        s.counters.set_irqs += 1;
        let result = match s.faults.set_irqs_call {
            Some((at, e)) if at == s.counters.set_irqs => {
                s.faults.set_irqs_call = None;
                Err(Error::SetIrqs {
                    index: set.index,
                    source: errno(e),
                })
            }
            // mtty validates and answers SET_IRQS its own way (mtty_set_irqs()).
            _ if s.mtty.is_some() => s
                .mtty
                .as_mut()
                .map_or(Ok(()), |m| m.set_irqs(set, &mut s.counters)),
            _ => set.validate(&self.info).and_then(|()| {
                let max = self.info.irq(set.index).map_or(0, |i| i.count);
                // COMMAND bit 10, INTx Disable: INTx starts masked when the user set it.
                let virq_disabled = s
                    .config
                    .read_u16(pci_config::regs::COMMAND)
                    .is_ok_and(|cmd| cmd & (1 << 10) != 0);
                s.irq.apply(set, max, virq_disabled, &mut s.counters)
            }),
        };
        if result.is_err() {
            s.counters.set_irqs_failed += 1;
        }
        result
    }

    fn reset(&self) -> Result<()> {
        let s = &mut *self.lock();
        s.counters.resets += 1;
        let reset_migration = |s: &SimState| {
            if let Some(m) = s.migration.as_ref() {
                migration::lock(m).core.reset();
            }
        };
        if s.mtty.is_some() {
            // mtty resets without the RESET flag: RUNNING, migration files disabled; its
            // UART and interrupt state stay (mtty_reset()).
            reset_migration(s);
            return Ok(());
        }
        if !self.info.flags.contains(DeviceFlags::RESET) {
            // vfio_pci_ioctl_reset() without reset_works.
            return Err(Error::Reset(errno(libc::EINVAL)));
        }
        for r in bar_regions(&self.info).filter(|r| r.size > 0) {
            crate::ioctl::punch_hole(&self.mem, r.offset, r.size).map_err(Error::Reset)?;
        }
        s.irq.pending.iter_mut().for_each(|p| *p = false);
        reset_migration(s);
        Ok(())
    }
}
