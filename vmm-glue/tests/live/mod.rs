// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The live-migration tests' rig: simulated devices wrapped so that every migration state
//! change and dirty-tracking call lands in one journal, in the order the code under test made
//! them (an observer independent of the library's own log), and VMs on real KVM.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "lab")]
pub mod lab;

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

/// Migratable passthrough devices in `vm` over `sims`, each [`Recorded`] in `journal`, with
/// ids 1, 2, ...
pub fn recorded_devices(
    vm: &Vm,
    sims: &[Arc<SimDevice>],
    journal: &Journal,
) -> Vec<PassthroughDevice> {
    sims.iter()
        .zip(1u32..)
        .map(|(s, id)| migratable(vm, &Recorded::new(s.clone(), id, journal), id, false))
        .collect()
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

/// STOP_COPY, P2P and PRE_COPY: everything mtty has.
pub const ALL: MigrationFeatures = MigrationFeatures::STOP_COPY
    .union(MigrationFeatures::P2P)
    .union(MigrationFeatures::PRE_COPY);

/// The states a log's devices entered, in order, as (device, state).
pub fn entered_order(log: &vmm_glue::TransitionLog) -> Vec<(u32, MigState)> {
    log.entries()
        .iter()
        .filter_map(|c| c.entered().map(|s| (c.device, s.to_device_state())))
        .collect()
}

/// A one-device stream's header: magic, version, count, one 16-byte identity, CRC.
pub const STREAM_HEADER: usize = 12 + 16 + 4;
/// A frame's head: kind, device, length, CRC.
pub const FRAME_HEAD: usize = 11;

/// (kind, offset of the payload, length) of every frame of a one-device stream.
pub fn frames(bytes: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut out = Vec::new();
    let mut at = STREAM_HEADER;
    while at + FRAME_HEAD <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 3..at + 7].try_into().unwrap()) as usize;
        out.push((bytes[at], at + FRAME_HEAD, len));
        at += FRAME_HEAD + len;
    }
    out
}

/// Runs `dst`'s destination on `stream`, which must fail: the failure unwrapped, and the
/// rollback.
pub fn refused(
    dst: &mut PassthroughDevice,
    stream: &[u8],
) -> (vmm_glue::Error, vmm_glue::Rollback) {
    use vmm_glue::{Error, Incoming, MigrationOptions};
    let result = Incoming::start(stream, &[&*dst], MigrationOptions::default())
        .and_then(Incoming::receive)
        .and_then(|r| r.resume(&mut [&mut *dst], Strategy::VmWide));
    match result {
        Err(Error::MigrationFailed { source, rollback }) => (*source, rollback),
        other => panic!("expected a failed migration, got {other:?}"),
    }
}

/// The stream's error inside a vmm-glue error.
pub fn stream_error(e: &vmm_glue::Error) -> &migration_state::Error {
    match e {
        vmm_glue::Error::MigrationStream(s) => s,
        other => panic!("expected a stream error, got {other:?}"),
    }
}

/// This test binary run again as a child with only the ignored test `test` (a destination),
/// `role` in its environment variable `env`, stdin and stdout piped.
pub fn spawn_destination(test: &str, env: &str, role: &str) -> std::process::Child {
    use std::process::{Command, Stdio};
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The `@@KEY value` lines the child printed, once it exited successfully.
pub fn reports(mut child: std::process::Child) -> std::collections::BTreeMap<String, String> {
    use std::io::{BufRead, BufReader};
    let mut got = std::collections::BTreeMap::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest prints "test NAME ... " before the test's own output.
        let kv = line.split_once("@@").and_then(|(_, l)| l.split_once(' '));
        if let Some((k, v)) = kv {
            got.insert(k.to_owned(), v.to_owned());
        }
    }
    assert!(
        child.wait().unwrap().success(),
        "the destination process failed"
    );
    got
}

/// The arcs a simulated device took, as (from, to).
pub fn arcs(sim: &SimDevice) -> Vec<(MigState, MigState)> {
    sim.migration_arcs()
        .iter()
        .map(|a| (a.from, a.to))
        .collect()
}

/// Two pre-copying P2P devices (ids 1 and 2) at the switchover: both quiesced, then both
/// stopped.
pub const TWO_P2P_SWITCHOVER: [(u32, MigState); 6] = [
    (1, MigState::PreCopyP2p),
    (2, MigState::PreCopyP2p),
    (1, MigState::StopCopy),
    (2, MigState::StopCopy),
    (1, MigState::Stop),
    (2, MigState::Stop),
];

/// Two P2P devices (ids 1 and 2) resuming: both load (out of RESUMING), both reach
/// RUNNING_P2P, then both run.
pub const TWO_P2P_RESUME: [(u32, MigState); 6] = [
    (1, MigState::Stop),
    (2, MigState::Stop),
    (1, MigState::RunningP2p),
    (2, MigState::RunningP2p),
    (1, MigState::Running),
    (2, MigState::Running),
];

/// `good` as a newer stream writer (version 2) would write it, checksums right.
pub fn newer_stream_version(good: &[u8]) -> Vec<u8> {
    let mut newer = good.to_vec();
    newer[8..10].copy_from_slice(&2u16.to_le_bytes());
    migration_state::stream::reseal(&mut newer);
    newer
}

/// `good` with its (one) device's VMM-side state in a newer device-state format (3), inside a
/// current stream, checksums right.
pub fn newer_state_format(good: &[u8]) -> Vec<u8> {
    let mut skewed = good.to_vec();
    let (_, at, len) = frames(good)
        .into_iter()
        .find(|(kind, ..)| *kind == 3)
        .unwrap();
    skewed[at + 8..at + 10].copy_from_slice(&3u16.to_le_bytes());
    migration_state::format::reseal(&mut skewed[at..at + len]);
    migration_state::stream::reseal(&mut skewed);
    skewed
}

/// The error of [`newer_stream_version`]'s stream.
pub fn is_newer_stream(e: &vmm_glue::Error) -> bool {
    matches!(
        stream_error(e),
        migration_state::Error::StreamVersion {
            found: 2,
            supported: 1
        }
    )
}

/// The error of [`newer_state_format`]'s stream.
pub fn is_newer_state(e: &vmm_glue::Error) -> bool {
    matches!(
        stream_error(e),
        migration_state::Error::UnsupportedVersion { found: 3, .. }
    )
}
