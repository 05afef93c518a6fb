// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The live-migration tests' rig: simulated devices wrapped so that every migration state
//! change and dirty-tracking call lands in one journal, in the order the code under test made
//! them (an observer independent of the library's own log), and VMs on real KVM.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use bar_mmap::{HostResourceSpace, PageSize};
use irq_routing::{MemoryBackend, Router};
use vfio_core::info::DeviceInfo;
use vfio_core::sim::{MsixPlacement, SimContainer, SimDevice};
use vfio_core::{
    DirtyRequest, DmaLogging, DmaMapping, IommuInfo, IrqSet, MigState, MigrationDataFd,
    MigrationFeatures, VfioContainer, VfioDevice, VfioMigration,
};
use vm_memory::GuestRegionMmap;
use vmm_glue::{scripted_guest, DeviceOptions, PassthroughDevice, Strategy, VmResources};

/// What the journal saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A single-arc `set_migration_state` of device `dev`.
    Arc {
        dev: u32,
        from: MigState,
        to: MigState,
        ok: bool,
    },
    /// `VFIO_DEVICE_RESET` of device `dev`.
    Reset {
        dev: u32,
    },
    /// The container's dirty tracking.
    DirtyStart,
    DirtyReport,
    DirtyStop,
}

/// The calls every recorded device and container of a test made, in order.
#[derive(Clone, Debug, Default)]
pub struct Journal(Arc<Mutex<Vec<Event>>>);

impl Journal {
    pub fn push(&self, e: Event) {
        self.0.lock().unwrap().push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// The successful arcs, as (device, entered state).
    pub fn entered(&self) -> Vec<(u32, MigState)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Arc {
                    dev, to, ok: true, ..
                } => Some((dev, to)),
                Event::Reset { dev } => Some((dev, MigState::Running)),
                _ => None,
            })
            .collect()
    }

    /// Position of the first successful arc into one of `states` (of any device).
    pub fn first(&self, states: &[MigState]) -> Option<usize> {
        self.entered().iter().position(|(_, s)| states.contains(s))
    }

    /// Position of the last successful arc into one of `states`.
    pub fn last(&self, states: &[MigState]) -> Option<usize> {
        self.entered().iter().rposition(|(_, s)| states.contains(s))
    }

    /// Position of the first arc of `dev` into one of `states`.
    pub fn first_of(&self, dev: u32, states: &[MigState]) -> Option<usize> {
        self.entered()
            .iter()
            .position(|(d, s)| *d == dev && states.contains(s))
    }
}

/// A device (simulated or the kernel's) whose migration and reset calls go to the journal.
#[derive(Debug)]
pub struct Recorded<D = SimDevice> {
    pub dev: Arc<D>,
    pub id: u32,
    pub journal: Journal,
}

impl<D> Recorded<D> {
    pub fn new(dev: Arc<D>, id: u32, journal: &Journal) -> Arc<Self> {
        Arc::new(Recorded {
            dev,
            id,
            journal: journal.clone(),
        })
    }
}

impl<D: AsFd> AsFd for Recorded<D> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}

impl<D: VfioDevice> VfioDevice for Recorded<D> {
    fn info(&self) -> &DeviceInfo {
        self.dev.info()
    }
    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> vfio_core::Result<()> {
        self.dev.region_read(index, offset, buf)
    }
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> vfio_core::Result<()> {
        self.dev.region_write(index, offset, data)
    }
    fn set_irqs(&self, set: &IrqSet) -> vfio_core::Result<()> {
        self.dev.set_irqs(set)
    }
    fn reset(&self) -> vfio_core::Result<()> {
        let r = self.dev.reset();
        if r.is_ok() {
            self.journal.push(Event::Reset { dev: self.id });
        }
        r
    }
}

impl<D: VfioMigration> VfioMigration for Recorded<D> {
    fn migration_features(&self) -> vfio_core::Result<Option<MigrationFeatures>> {
        self.dev.migration_features()
    }
    fn set_migration_state(&self, state: MigState) -> vfio_core::Result<Option<MigrationDataFd>> {
        let from = self.dev.migration_state()?;
        let r = self.dev.set_migration_state(state);
        self.journal.push(Event::Arc {
            dev: self.id,
            from,
            to: state,
            ok: r.is_ok(),
        });
        r
    }
    fn migration_state(&self) -> vfio_core::Result<MigState> {
        self.dev.migration_state()
    }
    fn migration_data_size(&self) -> vfio_core::Result<u64> {
        self.dev.migration_data_size()
    }
}

impl<D: DmaLogging> DmaLogging for Recorded<D> {
    fn dma_logging_start(&self, page: u64, ranges: &[(u64, u64)]) -> vfio_core::Result<()> {
        self.dev.dma_logging_start(page, ranges)
    }
    fn dma_logging_stop(&self) -> vfio_core::Result<()> {
        self.dev.dma_logging_stop()
    }
    fn dma_logging_report(
        &self,
        iova: u64,
        length: u64,
        page: u64,
        bitmap: &mut [u64],
    ) -> vfio_core::Result<()> {
        self.dev.dma_logging_report(iova, length, page, bitmap)
    }
}

/// A simulated container whose dirty-tracking calls go to the journal.
#[derive(Debug)]
pub struct RecordedContainer {
    pub sim: Arc<SimContainer>,
    pub journal: Journal,
}

impl VfioContainer for RecordedContainer {
    fn iommu_info(&self) -> vfio_core::Result<IommuInfo> {
        self.sim.iommu_info()
    }
    fn map_guest_region(&self, region: &GuestRegionMmap) -> vfio_core::Result<()> {
        self.sim.map_guest_region(region)
    }
    fn unmap_guest_region(&self, gpa: u64) -> vfio_core::Result<()> {
        self.sim.unmap_guest_region(gpa)
    }
    fn dma_mappings(&self) -> Vec<DmaMapping> {
        self.sim.dma_mappings()
    }
    fn dirty(&self, request: DirtyRequest<'_>) -> vfio_core::Result<()> {
        let e = match &request {
            DirtyRequest::Start => Event::DirtyStart,
            DirtyRequest::Stop => Event::DirtyStop,
            DirtyRequest::Report { .. } => Event::DirtyReport,
        };
        let r = self.sim.dirty(request);
        if r.is_ok() {
            self.journal.push(e);
        }
        r
    }
}

/// A VM: its router (on real KVM when asked) and resources.
pub struct Vm {
    pub router: Arc<Router>,
    pub res: VmResources,
    /// The KVM handle the VM's fd came from, kept open with it.
    _kvm: Option<Box<dyn std::any::Any>>,
}

fn resources(router: Arc<Router>) -> VmResources {
    let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)
        .unwrap()
        .into_shared();
    VmResources::new(router, host, PageSize::SIZE_4K)
}

/// A VM on the real `/dev/kvm` (`None`, with a printed reason, where there is none, unless
/// PASSTHROUGH_REQUIRE_KVM=1 makes that a failure).
#[cfg(feature = "kvm")]
pub fn kvm_vm() -> Option<Vm> {
    let (kvm, vmfd) = irq_routing::testing::kvm_vm_with_irqchip()?;
    let backend = irq_routing::KvmBackend::new(vmfd).unwrap();
    let router = Arc::new(Router::new(backend).unwrap());
    Some(Vm {
        res: resources(router.clone()),
        router,
        _kvm: Some(Box::new(kvm)),
    })
}

/// A VM on the in-memory routing backend (for devices whose migration routes nothing).
pub fn memory_vm() -> Vm {
    let router = Arc::new(Router::new(MemoryBackend::new()).unwrap());
    Vm {
        res: resources(router.clone()),
        router,
        _kvm: None,
    }
}

/// A simulated MSI-X device (8 vectors in BAR 0) with migration `features` and `blob`.
pub fn msix_sim(features: MigrationFeatures, blob: &[u8]) -> Arc<SimDevice> {
    Arc::new(
        SimDevice::builder(0x8086, 0x154c)
            .bar(0, pci_config::BarKind::Mem64, 0x4000, false)
            .msix(MsixPlacement::in_bar(8, 0))
            .migration(features, blob.to_vec())
            .build()
            .unwrap(),
    )
}

/// A migratable passthrough device over `dev`, id `id`, with the guest notice if asked.
pub fn migratable<D: VfioMigration + 'static>(
    vm: &Vm,
    dev: &Arc<D>,
    id: u32,
    notice: bool,
) -> PassthroughDevice {
    let opts = DeviceOptions {
        id,
        strategy: Strategy::VmWide,
        guest_notice: notice,
        ..DeviceOptions::default()
    };
    PassthroughDevice::new_migratable(dev.clone(), &vm.res, opts).unwrap()
}

/// The scripted guest places the device's BARs (in a window of its own per id) and, when it
/// has MSI-X, programs it with every third vector masked.
pub fn guest_boots(dev: &mut PassthroughDevice) {
    let id = u64::from(dev.id());
    let (mut mmio, mut pio) = (0xc000_0000 + 0x10_0000 * id, 0x1000 + 0x100 * id);
    scripted_guest::place_bars(dev, &mut mmio, &mut pio, false);
    if scripted_guest::find_capability(dev, scripted_guest::CAP_ID_MSIX).is_some() {
        scripted_guest::program_msix(dev, dev.id() as usize, |v| v % 3 != 0).unwrap();
    }
}

/// The MigState the journal names for a migration-state `State`.
pub fn ms(s: migration_state::State) -> MigState {
    s.to_device_state()
}

/// mtty's UART registers (`include/uapi/linux/serial_reg.h`), port `p` behind I/O BAR `p`.
pub mod uart {
    use vm_device::bus::PioAddress;
    use vm_device::MutDevicePio;
    use vmm_glue::PassthroughDevice;

    const TX: u64 = 0;
    const IER: u64 = 1;
    const FCR: u64 = 2;
    const LCR: u64 = 3;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const SCR: u64 = 7;

    /// What [`program`] queues in each port's FIFO (mtty loops TX back into its RX FIFO).
    pub const TEXT: [&[u8]; 2] = [b"hi", b"xyz"];

    fn base(dev: &PassthroughDevice, port: u8) -> u64 {
        dev.bar_address(port)
            .expect("the guest placed the port's I/O BAR")
    }

    fn put(dev: &mut PassthroughDevice, port: u8, reg: u64, value: u8) {
        let at = base(dev, port) + reg;
        dev.pio_write(PioAddress(at as u16), 0, &[value]);
    }

    fn get(dev: &mut PassthroughDevice, port: u8, reg: u64) -> u8 {
        let at = base(dev, port) + reg;
        let mut b = [0u8];
        dev.pio_read(PioAddress(at as u16), 0, &mut b);
        b[0]
    }

    /// The guest's driver programs both ports through the I/O BARs: FIFO enabled and cleared,
    /// [`TEXT`] queued, then LCR, MCR, IER and SCR set (distinct values per port).
    pub fn program(dev: &mut PassthroughDevice) {
        for port in 0..2u8 {
            put(dev, port, FCR, 0x07);
            for &b in TEXT[usize::from(port)] {
                put(dev, port, TX, b);
            }
            put(dev, port, LCR, 0x03 | port << 3);
            put(dev, port, MCR, 0x08 | port);
            put(dev, port, IER, 0x00);
            put(dev, port, SCR, 0x5a ^ port.wrapping_mul(0xff));
        }
    }

    /// The registers a read does not change, per port: LCR, MCR, IER, SCR, LSR.
    pub fn registers(dev: &mut PassthroughDevice) -> Vec<u8> {
        let mut out = Vec::new();
        for port in 0..2u8 {
            for reg in [LCR, MCR, IER, SCR, LSR] {
                out.push(get(dev, port, reg));
            }
        }
        out
    }

    /// Pops `n` bytes of port `port`'s FIFO, then its LSR.
    pub fn drain(dev: &mut PassthroughDevice, port: u8, n: usize) -> Vec<u8> {
        let mut out: Vec<u8> = (0..n).map(|_| get(dev, port, TX)).collect();
        out.push(get(dev, port, LSR));
        out
    }
}

/// Lowercase hex of `bytes`, and back (the destination process reports its state on stdout).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// A reader that counts the bytes it passed on.
pub struct CountingRead<R> {
    inner: R,
    bytes: u64,
}

impl<R> CountingRead<R> {
    pub fn new(inner: R) -> Self {
        CountingRead { inner, bytes: 0 }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl<R: std::io::Read> std::io::Read for CountingRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}
