// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`PassthroughDevice`]: construction and the config-space entry points.

use std::sync::{Arc, Mutex};

use bar_mmap::{GuestMappings, GuestPageMap, PageSize, SharedResourceSpace};
use irq_routing::{IntxLine, MsiMessage, Router};
use migration_state::GuestNotice;
use pci_config::Command;
use vfio_core::info::CONFIG_REGION_INDEX;
use vfio_core::{DmaLogging, MsixTriggers, VfioDevice, VfioMigration};
use vmm_sys_util::eventfd::EventFd;

use crate::bars::Bars;
use crate::config::ConfigEmu;
use crate::irq_mode::IrqMode;
use crate::msix::MsixTable;
use crate::stats::DeviceStats;
use crate::vectors::VectorSet;
use crate::{Error, Result, Strategy};

/// What every passthrough device of one VM shares: the VM's interrupt router, the host
/// resource space sub-page BAR reservations are made in, and the map of guest BAR pages.
#[derive(Clone, Debug)]
pub struct VmResources {
    /// The VM's route table (one per VM).
    pub router: Arc<Router>,
    /// Host MMIO resource space (the dummy reservations of sub-page BARs go here).
    pub host_space: SharedResourceSpace,
    /// Guest placements of every device's BARs, to decide page exclusivity.
    pub guest_pages: Arc<Mutex<GuestPageMap>>,
    /// Page size used for mmap decisions (the host's).
    pub page_size: PageSize,
    /// The VM's memory slots for BAR mappings; with them a device installs and removes its
    /// guest mappings itself as the guest moves BARs (without them the VMM applies
    /// [`PassthroughDevice::take_map_changes`]).
    pub guest_mappings: Option<Arc<Mutex<GuestMappings>>>,
}

impl VmResources {
    /// Resources for a VM, with an empty guest page map of `page_size` pages.
    pub fn new(router: Arc<Router>, host_space: SharedResourceSpace, page_size: PageSize) -> Self {
        VmResources {
            router,
            host_space,
            guest_pages: Arc::new(Mutex::new(GuestPageMap::new(page_size))),
            page_size,
            guest_mappings: None,
        }
    }

    /// These resources with BAR mappings installed in `mappings` (KVM memory slots, usually).
    pub fn with_guest_mappings(mut self, mappings: GuestMappings) -> Self {
        self.guest_mappings = Some(Arc::new(Mutex::new(mappings)));
        self
    }
}

/// The eventfds a VMM gives a device for its INTx pin: `trigger` is the VMM's irqfd for the
/// pin (registered with a resample fd), `unmask` the resample eventfd VFIO re-arms on.
#[derive(Clone, Debug)]
pub struct IntxEventFds {
    /// Signalled by the device when INTx asserts.
    pub trigger: Arc<EventFd>,
    /// Signalled by KVM on EOI; unmasks the device's INTx.
    pub unmask: Option<Arc<EventFd>>,
}

/// Per-device settings.
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    /// The VMM's name for the device (for example its BDF); must be unique within the VM.
    pub id: u32,
    /// How interrupt setup groups route commits.
    pub strategy: Strategy,
    /// Requester ID to put in MSI routes (needed by arm64's ITS), if any.
    pub devid: Option<u32>,
    /// INTx eventfds; without them (and without `intx_gsi`) INTx mode is tracked but nothing
    /// is bound.
    pub intx: Option<IntxEventFds>,
    /// The irqchip pin (GSI) the device's INTx asserts: the device takes an INTx line from the
    /// router (a resample irqfd on KVM) and binds VFIO's INTx trigger and unmask eventfds to
    /// it. Takes precedence over `intx`.
    pub intx_gsi: Option<u32>,
    /// Host physical addresses of BARs 0-5, when the VFIO config region does not carry them
    /// (it normally does not: read them from sysfs). `0` means unknown: that BAR is trapped
    /// unless it is at least a page.
    pub host_bar_addresses: [u64; 6],
    /// Insert migration-state's guest migration notice capability into the emulated config
    /// space (opt-in: a guest driver that knows it can quiesce before a migration and reset
    /// after one). See [`crate::notice`].
    pub guest_notice: bool,
}

/// A VFIO device passed through to a guest: emulated config space, trapped or mapped BARs,
/// emulated MSI-X table and PBA, and interrupts routed through the VM's [`Router`].
///
/// Attach it to a VMM's buses through vm-device's [`MutDeviceMmio`](vm_device::MutDeviceMmio)
/// and [`MutDevicePio`](vm_device::MutDevicePio) (a `Mutex<PassthroughDevice>` is then a
/// `DeviceMmio`), and route the PCI root's config accesses to [`PassthroughDevice::config_read`]
/// and [`PassthroughDevice::config_write`].
pub struct PassthroughDevice {
    pub(crate) opts: DeviceOptions,
    pub(crate) dev: Arc<dyn VfioDevice>,
    pub(crate) mig: Option<Arc<dyn VfioMigration>>,
    /// The device's DMA logging, for dirty-page tracking ([`crate::live_migration::DirtyLog`]).
    pub(crate) dma_logging: Option<Arc<dyn DmaLogging>>,
    pub(crate) notice: Option<GuestNotice>,
    pub(crate) router: Arc<Router>,
    pub(crate) cfg: ConfigEmu,
    pub(crate) mode: IrqMode,
    pub(crate) msix: Option<MsixTable>,
    pub(crate) msix_vectors: Option<VectorSet>,
    pub(crate) msi_vectors: Option<VectorSet>,
    pub(crate) intx_bound: bool,
    pub(crate) bars: Bars,
    pub(crate) userspace_msgs: Vec<MsiMessage>,
    pub(crate) stats: DeviceStats,
    pub(crate) intx_line: Option<IntxLine>,
    pub(crate) request: Option<EventFd>,
    pub(crate) vm_mappings: Option<Arc<Mutex<GuestMappings>>>,
    pub(crate) torn_down: bool,
}

/// What a config write did that the VMM may act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigEvents {
    /// BARs (and the ROM, index 6) whose decoded guest address changed, in index order.
    pub bar_moves: Vec<pci_config::BarMove>,
    /// The write started a function-level reset (PCIe Device Control, Initiate FLR): the
    /// device and its emulated state were reset.
    pub reset: bool,
}

impl std::fmt::Debug for PassthroughDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassthroughDevice")
            .field("id", &self.opts.id)
            .field("mode", &self.mode)
            .field("strategy", &self.opts.strategy)
            .field("migratable", &self.mig.is_some())
            .field("notice", &self.notice)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PassthroughDevice {
    /// Builds the device: reads and models its config space (SR-IOV and ARI hidden, MSI and
    /// MSI-X emulated), probes its BARs for mmap (reserving the rest of sub-page BARs' pages
    /// in `vm.host_space`), and creates the eventfds of its MSI-X and MSI vectors. Issues no
    /// SET_IRQS and adds no route: those wait for the guest.
    ///
    /// The device saves and restores no device-internal state (its blob stays empty); use
    /// [`PassthroughDevice::new_migratable`] or [`PassthroughDevice::with_migration`] for a
    /// device that supports VFIO migration v2.
    pub fn new(dev: Arc<dyn VfioDevice>, vm: &VmResources, opts: DeviceOptions) -> Result<Self> {
        let mut cfg = ConfigEmu::build(&*dev)?;
        let notice = if opts.guest_notice {
            Some(GuestNotice::insert(&mut cfg.space).map_err(Error::Notice)?)
        } else {
            None
        };
        let bars = Bars::probe(&*dev, &cfg, vm, &opts)?;
        let intx_line = match opts.intx_gsi {
            Some(gsi) if cfg.has_intx => Some(vm.router.attach_intx(gsi).map_err(Error::Route)?),
            _ => None,
        };
        let (msix, msix_vectors) = match cfg.msix {
            Some(cap) => {
                let cache = MsixTriggers::for_device(&*dev);
                (
                    Some(MsixTable::new(cap.vectors)),
                    Some(VectorSet::new(cap.vectors, cache)?),
                )
            }
            None => (None, None),
        };
        let msi_vectors = match cfg.msi {
            Some(cap) => Some(VectorSet::new(1u16 << cap.mmc, None)?),
            None => None,
        };
        let mut device = PassthroughDevice {
            opts,
            dev,
            mig: None,
            dma_logging: None,
            notice,
            router: vm.router.clone(),
            cfg,
            mode: IrqMode::None,
            msix,
            msix_vectors,
            msi_vectors,
            intx_bound: false,
            bars,
            userspace_msgs: Vec::new(),
            stats: DeviceStats::default(),
            intx_line,
            request: None,
            vm_mappings: vm.guest_mappings.clone(),
            torn_down: false,
        };
        // As after a reset: the kernel hands the device over with decode on (the host's
        // state); the guest's firmware enables what it places.
        device.clear_command();
        device.register_bar_sources()?;
        // After reset INTx is live (Interrupt Disable clear) if the device has a pin.
        device.update_irq_mode();
        Ok(device)
    }

    /// [`PassthroughDevice::new`] for a device that supports VFIO migration v2: its
    /// device-internal state is read through the migration data fd on save
    /// ([`PassthroughDevice::save_stopped`]) and written back on the destination
    /// ([`PassthroughDevice::load_device_data`]).
    pub fn new_migratable<D: VfioMigration + 'static>(
        dev: Arc<D>,
        vm: &VmResources,
        opts: DeviceOptions,
    ) -> Result<Self> {
        let mig: Arc<dyn VfioMigration> = dev.clone();
        let mut device = Self::new(dev, vm, opts)?;
        device.mig = Some(mig);
        Ok(device)
    }

    /// Attaches the migration v2 interface of the VFIO device this one was built from (the
    /// same object, seen through [`VfioMigration`]). A different object is refused with
    /// [`Error::NotSameDevice`] and nothing changes.
    pub fn with_migration(&mut self, mig: Arc<dyn VfioMigration>) -> Result<()> {
        if !same_object(&self.dev, &mig) {
            return Err(Error::NotSameDevice);
        }
        self.mig = Some(mig);
        Ok(())
    }

    /// Whether the device's internal state takes part in migration (a migration v2 handle
    /// is attached).
    pub fn is_migratable(&self) -> bool {
        self.mig.is_some()
    }

    /// The VMM's id of this device.
    pub fn id(&self) -> u32 {
        self.opts.id
    }

    /// The VFIO device underneath.
    pub fn vfio_device(&self) -> &Arc<dyn VfioDevice> {
        &self.dev
    }

    /// The router the device's routes live in.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The commit strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.opts.strategy
    }

    /// Changes the commit strategy (takes effect at the next interrupt setup).
    pub fn set_strategy(&mut self, strategy: Strategy) {
        self.opts.strategy = strategy;
    }

    /// Counters of what the device did.
    pub fn stats(&self) -> DeviceStats {
        self.stats
    }

    /// The interrupt mode the guest has enabled.
    pub fn irq_mode(&self) -> IrqMode {
        self.mode
    }

    /// Size of the config space the guest sees (256 or 4096).
    pub fn config_size(&self) -> usize {
        self.cfg.space.size()
    }

    fn access_ok(&self, offset: u16, len: usize) -> bool {
        matches!(len, 1 | 2 | 4)
            && usize::from(offset) % len == 0
            && usize::from(offset) + len <= self.cfg.space.size()
    }

    /// A guest config read. Accesses that are not 1, 2 or 4 bytes, not naturally aligned, or
    /// past the end of the space read as all ones (like a master abort) and are counted.
    /// Bits that are not emulated are read from the device first.
    pub fn config_read(&self, offset: u16, data: &mut [u8]) {
        if !self.access_ok(offset, data.len()) {
            data.fill(0xff);
            return;
        }
        let off = usize::from(offset);
        let mut view = self.cfg.space.clone_range_view(off, data.len());
        let emulated_all = self
            .cfg
            .space
            .emulated_mask()
            .get(off..off + data.len())
            .is_some_and(|m| m.iter().all(|b| *b == 0xff));
        if !emulated_all {
            let mut phys = vec![0u8; data.len()];
            if self
                .dev
                .region_read(CONFIG_REGION_INDEX, u64::from(offset), &mut phys)
                .is_ok()
            {
                let emask = self.cfg.space.emulated_mask();
                for (i, b) in view.iter_mut().enumerate() {
                    let m = emask.get(off + i).copied().unwrap_or(0xff);
                    *b = (*b & m) | (phys.get(i).copied().unwrap_or(0) & !m);
                }
            }
        }
        data.copy_from_slice(&view);
    }

    /// A guest config write. Ill-formed accesses (as for reads) are ignored and counted.
    /// Read-only and emulated bits follow pci-config's masks; non-emulated writable bits are
    /// forwarded to the device; MSI/MSI-X/COMMAND changes drive the interrupt mode and BAR
    /// moves drive the mappings. Returns what the write changed that the VMM may act on (BAR
    /// moves, a function-level reset); nothing for an ignored write.
    pub fn config_write(&mut self, offset: u16, data: &[u8]) -> ConfigEvents {
        if !self.access_ok(offset, data.len()) {
            self.stats.ignored_config_accesses += 1;
            return ConfigEvents::default();
        }
        let flr = self.starts_flr(offset, data);
        let Ok(effects) = self.cfg.space.write(usize::from(offset), data) else {
            self.stats.ignored_config_accesses += 1;
            return ConfigEvents::default();
        };
        if let Some(fwd) = &effects.forward {
            if self
                .dev
                .region_write(CONFIG_REGION_INDEX, u64::from(fwd.offset), &fwd.data)
                .is_err()
            {
                self.stats.device_access_errors += 1;
            }
        }
        for mv in &effects.bar_moves {
            self.bar_moved(mv.index);
        }
        let msi_off = self.cfg.msi.map(|c| c.offset);
        let msix_off = self.cfg.msix.map(|c| c.offset);
        let touched_irq = effects
            .capabilities
            .iter()
            .any(|c| Some(c.offset) == msi_off || Some(c.offset) == msix_off);
        let intx_changed = effects.command.is_some_and(|(old, new)| {
            old.contains(Command::INTX_DISABLE) != new.contains(Command::INTX_DISABLE)
        });
        if touched_irq || intx_changed {
            self.update_irq_mode();
        }
        if flr {
            // The kernel carried out the reset the forwarded write asked for.
            self.reset_emulated();
        }
        ConfigEvents {
            bar_moves: effects.bar_moves,
            reset: flr,
        }
    }

    /// Whether a write sets Initiate Function Level Reset (bit 15 of PCIe Device Control).
    fn starts_flr(&self, offset: u16, data: &[u8]) -> bool {
        let Some(devctl) = self.cfg.pcie_devctl else {
            return false;
        };
        let flr_byte = devctl + 1;
        let start = offset;
        let end = offset + data.len() as u16;
        (start..end).contains(&flr_byte)
            && data
                .get(usize::from(flr_byte - start))
                .is_some_and(|b| b & 0x80 != 0)
    }
}

/// Whether two handles (of any trait) point at the same object.
pub(crate) fn same_object<A: ?Sized, B: ?Sized>(a: &Arc<A>, b: &Arc<B>) -> bool {
    std::ptr::eq(Arc::as_ptr(a).cast::<()>(), Arc::as_ptr(b).cast::<()>())
}

/// Helper on pci-config's space: the guest view of a range (emulated where emulated).
trait RangeView {
    fn clone_range_view(&self, off: usize, len: usize) -> Vec<u8>;
}

impl RangeView for pci_config::ConfigSpace {
    fn clone_range_view(&self, off: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        let _ = self.read(off, &mut v);
        v
    }
}
