// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A simulated vfio-pci device that follows Linux's semantics (feature `sim`).
//!
//! Every other crate's tests and the benchmarks run against it, and the conformance suite
//! (`crate::conformance`) holds it to the real kernel in the lab, so it models what costs and
//! what fails in Linux v6.12.117's vfio-pci: `VFIO_DEVICE_SET_IRQS` with the kernel's
//! argument checks, NORESIZE and dynamic MSI-X, a `free_irq` + `request_irq` for every vector a
//! TRIGGER names; INTx as a level with automask, unmask re-sends and the virtual INTx Disable
//! bit; config-space virtualization (read-only and virtual fields, BAR sizing, MSI and MSI-X
//! control, PM power states, PCIe FLR); BAR access with the MSI-X table excluded and memory
//! decode honoured; device-side raises that signal the bound eventfd, latch a vector pending,
//! or are dropped as QEMU's devices drop them; the interrupt registers of QEMU's e1000e, so
//! BAR writes raise real interrupts; counters of each; injected failures; and migration v2
//! through a data fd. [`SimDevice::mtty`] is the lab's mtty mdev instead: its regions, UART
//! registers, interrupts and migration stream.
//!
//! Share it as `Arc<SimDevice>`: hand a clone to the code under test (as
//! `Arc<dyn VfioDevice>`) and keep one to raise vectors and read counters.
//!
//! # Where it differs from Linux
//!
//! Known, deliberate or not yet modelled (the conformance suite runs what it does model
//! against the real kernel in the lab):
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
//!   GET_INFO that was never made (every IRQ ioctl EINVAL) is not modelled. Its DMA logging
//!   is mtty's: accepted and empty (`dma_logging`); the generic profile has none (ENOTTY), as
//!   vfio-pci.
//! - Dynamic MSI-X is whatever the builder says; the kernel also requires MSI domain support.
//! - A raw-flags request may pair one DATA type's flag with another type's payload.
//! - A trigger fd is checked with one `fstat`, against the inode every eventfd shares. Linux
//!   backs timerfd, signalfd and epoll fds (and other anonymous-inode files) with that same
//!   inode, so the simulator accepts them where `eventfd_ctx_fdget` refuses them (EINVAL); any
//!   other file (a device node, a pipe, a socket, a regular file) is refused as the kernel does.
//! - The device's fd ([`AsFd`]) is the memory file its BARs live in: `pread`/`pwrite` on it
//!   never come back short at a region's end (the kernel's do) and reach neither the modelled
//!   registers nor the MSI-X table exclusion; config space is not in it. A mapping of it works
//!   while memory decode is off (the kernel's mappings fault with SIGBUS then).
//! - Region accesses past a region's end are EINVAL before anything is touched (the trait's
//!   rule, which `KernelDevice` keeps by checking first); the kernel itself answers EFAULT for
//!   config space and a short count for a BAR.
//! - The emulated device behind vfio-pci is QEMU-like only as far as the conformance
//!   scenarios reach: its config registers take the writes `build.rs`
//!   (`emulated_device_masks`) lists; of its BAR registers only the e1000e interrupt registers
//!   act (module `e1000e`), everything else is plain memory. No expansion ROM, no VGA region,
//!   no VPD data (VPD address and data are virtual bytes only).
//! - The PCI core's side is reduced to what vfio-pci shows: the reset methods (FLR, PM reset,
//!   bus reset) are one device reset that zeroes the BARs' memory and the modelled registers
//!   and clears pending bits, config space saved and restored around it; power states D0 to
//!   D3hot only (no D3cold, runtime PM or `needs_pm_restore`); `vfio_bar_restore()` (reset
//!   detection on COMMAND writes) never has anything to restore.
//! - The REQ eventfd is signalled by [`SimDevice::request`] and the ERR eventfd by
//!   [`SimDevice::aer_error`]: there is no device removal or AER to do it (the lab's
//!   `vmm-glue/lab_nvme` removes a real VF; the conformance suite does not).
//! - INTx is modelled for devices that mask with COMMAND's INTx Disable (`pci_2_3`, every QEMU
//!   device): no irqchip masking, no `nointx` quirk, no ENODEV for a function without an IRQ.
//! - MSI: a device message with no trigger bound is dropped; in the kernel the freed vector's
//!   message is zeroed and the device's write to address 0 is blocked by the IOMMU (seen in
//!   the lab). Per-vector MSI masking bits reach the device's registers but gate nothing. A
//!   latched MSI-X vector is delivered when its trigger is bound whatever Bus Master says.
//! - Capabilities no lab device has (vendor-specific, AF, VPD, PCI-X, hidden ones and the
//!   extended ones but AER and DSN) follow the kernel's tables in the config model and its unit
//!   tests, but no lab scenario has checked them; neither has DEVCTL2.
//! - QEMU 7.2's e1000e throttles interrupts (ITR/EITR) and aborts when MSI-X is enabled or
//!   disabled while a throttling timer runs; the model sends every interrupt at once and never
//!   aborts, so the scenarios wait before switching interrupt types (the `\[QEMU\]` notes).
//! - Delivery is synchronous (no workqueue), except the INTx unmask eventfd, which a thread
//!   serves as the kernel's virqfd is served from the eventfd's wakeup.

mod build;
mod builder;
mod config;
mod dma_logging;
mod e1000e;
mod intx;
mod iommu;
mod irq;
mod migration;
mod migration_api;
mod mtty;
mod regions;

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::io::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use pci_config::ConfigSpace;

use crate::device::VfioDevice;
use crate::error::{errno, Error, Result};
use crate::info::{
    DeviceFlags, DeviceInfo, BAR0_REGION_INDEX, CONFIG_REGION_INDEX, MSIX_IRQ_INDEX, MSI_IRQ_INDEX,
};
use crate::irq_set::IrqSet;

pub use builder::{DeviceModel, MsixMode, MsixPlacement, SimDeviceBuilder, SIM_MAX_BLOB};
pub use e1000e::{
    ICR as E1000E_ICR, ICS as E1000E_ICS, IMC as E1000E_IMC, IMS as E1000E_IMS, IVAR as E1000E_IVAR,
};
pub use iommu::{lab_iommu_info, mediated_iommu_info, SimContainer, SimGroup, SimIommuCounters};
pub use irq::RaiseOutcome;
pub use migration::{ArcFailure, MigrationArc, PreCopyEnd};
pub use mtty::{
    mtty_data_size, MTTY_CONFIG_SPACE_SIZE, MTTY_HEADER_LEN, MTTY_MAGIC, MTTY_PORT_LEN,
};

pub(crate) use migration::SimDataFd;

use config::{BarResource, IrqContext, VfioConfig};
use e1000e::E1000eRegs;
use irq::IrqState;
use migration::MigSim;

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
    /// Raises latched pending because nothing was bound (MSI-X), or an INTx line asserted
    /// while INTx could not deliver it.
    pub latched: u64,
    /// Raises lost: the index disabled, Bus Master off, or MSI with no trigger.
    pub dropped: u64,
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
    config: VfioConfig,
    irq: IrqState,
    counters: SimCounters,
    faults: Faults,
    /// Shared with the device's migration data fds.
    migration: Option<Arc<Mutex<MigSim>>>,
    /// The modelled device registers (QEMU's e1000e), if any.
    model: Option<E1000eRegs>,
    /// The mtty profile's device ([`SimDevice::mtty`]): its regions, interrupts and
    /// migration content replace vfio-pci's.
    mtty: Option<Box<mtty::Mtty>>,
}

/// A simulated vfio-pci device. See the module docs.
#[derive(Debug)]
pub struct SimDevice {
    info: DeviceInfo,
    msix: Option<MsixPlacement>,
    /// The BARs as the host sized them.
    bars: [Option<BarResource>; 6],
    /// The BARs' bytes: one sparse memory file, region `i` at `pci_region_offset(i)`, as a
    /// vfio-pci device fd lays its regions out. Handed out as the device's [`AsFd`].
    mem: File,
    /// MSI and MSI-X messages need COMMAND's Bus Master (QEMU's devices).
    msi_needs_bus_master: bool,
    /// The emulated device ignores the kernel's reset (QEMU's e1000e and its PM reset).
    reset_keeps_registers: bool,
    /// Shared with the INTx unmask eventfd's watcher thread (the kernel's virqfd).
    state: Arc<Mutex<SimState>>,
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

    /// The device raises MSI-X vector `vector`: the eventfd bound to it is signalled; with
    /// nothing bound the vector is latched pending (set in the PBA) and delivered when a
    /// trigger is bound to it; with MSI-X disabled, or (for a device built with
    /// [`SimDeviceBuilder::msi_needs_bus_master`]) Bus Master off, it is dropped.
    pub fn raise(&self, vector: u32) -> RaiseOutcome {
        let s = &mut *self.lock();
        let bm = self.bus_master(s);
        s.irq.raise_msix(vector, bm, &mut s.counters)
    }

    /// The device sends its MSI message: signalled when MSI is enabled with an eventfd bound
    /// (and Bus Master on, where the device needs it); dropped otherwise.
    pub fn raise_msi(&self) -> RaiseOutcome {
        let s = &mut *self.lock();
        let bm = self.bus_master(s);
        s.irq.raise_msi(bm, &mut s.counters)
    }

    /// The device asserts its INTx line (it stays asserted until [`SimDevice::deassert_intx`]).
    /// An enabled, unmasked INTx fires: it is masked and its eventfd, if any, signalled.
    pub fn assert_intx(&self) -> RaiseOutcome {
        let s = &mut *self.lock();
        Self::drive_intx(s, true)
    }

    /// The device deasserts its INTx line.
    pub fn deassert_intx(&self) {
        let s = &mut *self.lock();
        Self::drive_intx(s, false);
    }

    /// Signal the REQ eventfd, as vfio-pci does when the device is being removed
    /// (`vfio_pci_core_request()`); `Dropped` when none is bound.
    pub fn request(&self) -> RaiseOutcome {
        let s = &mut *self.lock();
        s.irq.signal_ctx(false, &mut s.counters)
    }

    /// Signal the ERR eventfd, as vfio-pci does when AER reports an error
    /// (`vfio_pci_core_aer_err_detected()`); `Dropped` when none is bound.
    pub fn aer_error(&self) -> RaiseOutcome {
        let s = &mut *self.lock();
        s.irq.signal_ctx(true, &mut s.counters)
    }

    fn bus_master(&self, s: &SimState) -> bool {
        !self.msi_needs_bus_master || s.config.physical_command() & config::COMMAND_MASTER != 0
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

    /// Make the next MSI/MSI-X enable that asks for more than `available` vectors get only
    /// that many from the PCI core: vfio-pci then frees them, enables nothing and SET_IRQS
    /// returns `available` (`vfio_msi_enable()`), which the device reports as
    /// [`Error::SetIrqsIncomplete`].
    pub fn fail_msi_alloc(&self, available: u32) {
        self.lock().irq.fail_alloc = Some(available);
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
        s.irq.fail_alloc = None;
        if let Some(m) = s.migration.as_ref() {
            migration::lock(m).core.fault = None;
        }
    }
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
        s.irq.service_intx_unmask(&mut s.counters);
        if index == CONFIG_REGION_INDEX {
            let ctx = Self::irq_context(s);
            s.config.read(offset as usize, buf, ctx);
            return Ok(());
        }
        let bar = (index - BAR0_REGION_INDEX) as u8;
        self.bar_read(s, index, bar, offset, buf).map_err(err)
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
        s.irq.service_intx_unmask(&mut s.counters);
        if index == CONFIG_REGION_INDEX {
            let ctx = Self::irq_context(s);
            for effect in s.config.write(offset as usize, data, ctx) {
                match effect {
                    config::Effect::IntxDisable(on) => s.irq.set_virq_disabled(on, &mut s.counters),
                    config::Effect::FunctionReset => self
                        .function_reset(s)
                        .map_err(|e| err(errno(e.errno().unwrap_or(libc::EIO))))?,
                }
            }
            // A write to MSI's flags reaches the device and may change how it interrupts.
            self.sync_model(s);
            return Ok(());
        }
        let bar = (index - BAR0_REGION_INDEX) as u8;
        self.bar_write(s, index, bar, offset, data).map_err(err)
    }

    fn set_irqs(&self, set: &IrqSet) -> Result<()> {
        let s = &mut *self.lock();
        s.counters.set_irqs += 1;
        s.irq.service_intx_unmask(&mut s.counters);
        let before = s.irq.active;
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
                s.irq.apply(set, max, &mut s.counters)
            }),
        };
        if result.is_err() {
            s.counters.set_irqs_failed += 1;
        }
        if s.irq.active != before {
            self.interrupt_mode_changed(s);
        }
        if std::mem::take(&mut s.irq.virqfd_new) {
            self.watch_unmask_eventfd(s);
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
        // vfio_pci_ioctl_reset(): EINVAL unless the function could be reset at open.
        if !self.info.flags.contains(DeviceFlags::RESET) {
            return Err(Error::Reset(errno(libc::EINVAL)));
        }
        // The device is put in D0, then reset; interrupts and vconfig stay as they are.
        s.config.set_power_state(0);
        self.device_reset(s)?;
        reset_migration(s);
        Ok(())
    }
}

impl SimDevice {
    fn irq_context(s: &SimState) -> IrqContext {
        IrqContext {
            msi_enabled: s.irq.active == Some(MSI_IRQ_INDEX),
        }
    }

    /// The host kernel enabled or disabled MSI or MSI-X on the device: its config registers
    /// show it (MSI-X Enable set and Function Mask clear while enabled, as the lab's kernel
    /// leaves them; MSI Enable in the device's register, which the user does not see), and an
    /// MSI enable sets `msi_qmax`.
    fn interrupt_mode_changed(&self, s: &mut SimState) {
        let active = s.irq.active;
        if let Some(at) = s.config.msix_cap() {
            let on = active == Some(MSIX_IRQ_INDEX);
            let flags = at + config::MSIX_FLAGS;
            let enable = u32::from(config::MSIX_FLAGS_ENABLE);
            s.config.phys.set_bits(flags, 2, enable, on);
            let maskall = u32::from(config::MSIX_FLAGS_MASKALL);
            s.config.phys.set_bits(flags, 2, maskall, false);
        }
        if let Some(at) = s.config.msi_cap() {
            let on = active == Some(MSI_IRQ_INDEX);
            let enable = u32::from(config::MSI_FLAGS_ENABLE);
            s.config
                .phys
                .set_bits(at + config::MSI_FLAGS, 2, enable, on);
            if on {
                // vfio_msi_enable(): msi_qmax = fls(nvec * 2 - 1) - 1.
                let nvec = s.irq.allocated.iter().filter(|a| **a).count().max(1) as u32;
                s.config.msi_qmax = (31 - (nvec * 2 - 1).leading_zeros()) as u16;
            }
        }
        self.sync_model(s);
    }

    /// Serve the INTx unmask eventfd just installed from a thread, as the kernel's virqfd runs
    /// its handler when the eventfd is written (`virqfd_wakeup()`): the user writing it unmasks
    /// INTx (or re-sends while the line is asserted) without touching the device.
    fn watch_unmask_eventfd(&self, s: &SimState) {
        let Some(file) = s
            .irq
            .intx_unmask
            .as_ref()
            .and_then(|t| t.file.try_clone().ok())
        else {
            return;
        };
        let generation = s.irq.virqfd_generation;
        let state = Arc::downgrade(&self.state);
        let spawned = std::thread::Builder::new()
            .name("vfio-sim-virqfd".into())
            .spawn(move || loop {
                let Ok(ready) = crate::ioctl::wait_readable(&file, 20) else {
                    return;
                };
                let Some(state) = state.upgrade() else { return };
                let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
                let s = &mut *guard;
                if s.irq.virqfd_generation != generation || s.irq.intx_unmask.is_none() {
                    return;
                }
                if ready {
                    s.irq.service_intx_unmask(&mut s.counters);
                }
            });
        // Without a thread the eventfd is still served whenever the device is touched.
        drop(spawned);
    }

    /// An FLR through config space (`pci_try_reset_function()`): the device resets, config
    /// space saved and restored around it, in D0.
    fn function_reset(&self, s: &mut SimState) -> Result<()> {
        s.config.set_power_state(0);
        self.device_reset(s)
    }
}
