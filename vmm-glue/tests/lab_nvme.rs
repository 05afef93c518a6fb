// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lab: a real NVMe VF (QEMU 7.2's controller, Linux 6.12's vfio-pci) passed through with
//! `PassthroughDevice` alone, wired as the `passthrough` example wires a device: guest RAM (a
//! memfd) DMA-mapped through the VM's container, the scripted guest placing the BARs and
//! enabling MSI-X with config and MSI-X table writes, an NVMe admin Identify submitted through
//! the BAR (registers through the real mmap of the VF's BAR where the VM mapped it, the MSI-X
//! table and PBA trapped to the VM's MMIO bus), the identify data DMAed into guest RAM and the
//! completion interrupt on MSI-X vector 0's irqfd (the in-memory router: the lab's guest has no
//! KVM). Then the pending bit of a masked vector, a mask/unmask storm counted in SET_IRQS, and
//! in every test the teardown that lets `sriov_numvfs=0` complete.
//!
//! The PF is host provisioning, not part of the guest (`nvme/pf.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/passthrough.rs"]
mod example;
mod nvme;

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bar_mmap::Mapping;
use irq_routing::{MemoryBackend, RouteState, Router};
use nvme::pf::{provision_vf, ProvisionedVf};
use nvme::{identify, AdminQueue, Completion, ControllerId, Registers, CNS_CONTROLLER};
use pci_config::BarKind;
use vfio_core::info::DeviceInfo;
use vfio_core::lab::{self, LabDevices};
use vfio_core::{Container, IrqSet, KernelDevice, VfioContainer, VfioDevice};
use vm_device::bus::MmioAddress;
use vm_device::device_manager::MmioManager;
use vm_memory::{Bytes, GuestRegionMmap, MemoryRegionAddress};
use vmm_glue::{scripted_guest, IrqMode, PassthroughDevice};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Where the guest's driver keeps the VF's admin queues and identify data, in guest RAM.
const GUEST_ASQ: u64 = 0x20_0000;
const GUEST_ACQ: u64 = 0x20_1000;
const GUEST_IDENTIFY: u64 = 0x20_2000;
/// Entries of the VF's admin queues.
const QUEUE_ENTRIES: u16 = 8;
/// Where the scripted guest places the BARs (the example's firmware placed them lower).
const GUEST_WINDOW: u64 = 0xd000_0000;
/// The VMM's id of the VF.
const VF_ID: u32 = 1;
/// Mask/unmask cycles of the storm.
const STORM: u32 = 10_000;
/// How long the kernel and QEMU get for anything a test waits for.
const WAIT: Duration = Duration::from_secs(10);

/// The real VF with every `VFIO_DEVICE_SET_IRQS` counted (issued ones, failed or not).
#[derive(Debug)]
struct CountingDevice {
    inner: Arc<KernelDevice>,
    set_irqs: AtomicU64,
}

impl CountingDevice {
    fn set_irqs_issued(&self) -> u64 {
        self.set_irqs.load(Ordering::SeqCst)
    }
}

impl AsFd for CountingDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

impl VfioDevice for CountingDevice {
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }
    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> vfio_core::Result<()> {
        self.inner.region_read(index, offset, buf)
    }
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> vfio_core::Result<()> {
        self.inner.region_write(index, offset, data)
    }
    fn set_irqs(&self, set: &IrqSet) -> vfio_core::Result<()> {
        self.set_irqs.fetch_add(1, Ordering::SeqCst);
        self.inner.set_irqs(set)
    }
    fn reset(&self) -> vfio_core::Result<()> {
        self.inner.reset()
    }
}

/// The VF's BAR 0 as the guest at `base` reaches it: through the mapping the VM installed
/// there (the real mmap of the VF's BAR), or, where none is, trapped to the VM's MMIO bus.
struct GuestBar<'a> {
    vm: &'a example::Vm,
    base: u64,
    mapped: Cell<u64>,
    trapped: Cell<u64>,
}

impl<'a> GuestBar<'a> {
    fn new(vm: &'a example::Vm, base: u64) -> Self {
        GuestBar {
            vm,
            base,
            mapped: Cell::new(0),
            trapped: Cell::new(0),
        }
    }

    /// `f` on the mapping holding `gpa`, if the VM installed one there.
    fn through_mapping<T>(&self, gpa: u64, f: impl FnOnce(&Mapping, usize) -> T) -> Option<T> {
        let maps = self.vm.res.guest_mappings.as_ref()?.lock().unwrap();
        let (mapping, offset) = maps.mapping_at(gpa)?;
        self.mapped.set(self.mapped.get() + 1);
        Some(f(mapping, offset))
    }

    /// Accesses that went through the mapping, and that trapped.
    fn counts(&self) -> (u64, u64) {
        (self.mapped.get(), self.trapped.get())
    }
}

impl Registers for &GuestBar<'_> {
    fn read32(&self, offset: u64) -> u32 {
        let gpa = self.base + offset;
        if let Some(v) = self.through_mapping(gpa, |m, o| m.read_u32(o).unwrap()) {
            return v;
        }
        self.trapped.set(self.trapped.get() + 1);
        let mut b = [0u8; 4];
        self.vm.mmio.mmio_read(MmioAddress(gpa), &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    fn write32(&self, offset: u64, value: u32) {
        let gpa = self.base + offset;
        let write = |m: &Mapping, o: usize| m.write_u32(o, value).unwrap();
        if self.through_mapping(gpa, write).is_some() {
            return;
        }
        self.trapped.set(self.trapped.get() + 1);
        self.vm
            .mmio
            .mmio_write(MmioAddress(gpa), &value.to_le_bytes())
            .unwrap();
    }
}

/// Whether `fd` becomes readable within `timeout` (without reading it).
fn readable(fd: &EventFd, timeout: Duration) -> bool {
    let epoll = Epoll::new().unwrap();
    let event = EpollEvent::new(EventSet::IN, 0);
    epoll
        .ctl(ControlOperation::Add, fd.as_raw_fd(), event)
        .unwrap();
    let mut events = [EpollEvent::default()];
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        match epoll.wait(ms, &mut events) {
            Ok(n) => return n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        }
    }
}

/// Vector 0's irqfd: the device's own fd (what the router attaches to the GSI) and a duplicate
/// of it the test reads.
struct Irqfd {
    raw: RawFd,
    dup: EventFd,
}

impl Irqfd {
    /// The GSI the device's irqfd is attached to in the VM, if any.
    fn gsi(&self, backend: &MemoryBackend) -> Option<u32> {
        backend
            .attached_irqfds()
            .into_iter()
            .find(|(fd, _)| *fd == self.raw)
            .map(|(_, gsi)| gsi)
    }

    /// Whether the guest is being interrupted through it: signalled while attached to a GSI
    /// of the VM (the in-memory router's stand-in for KVM injecting it).
    fn delivering(&self, backend: &MemoryBackend) -> bool {
        self.gsi(backend).is_some() && readable(&self.dup, Duration::ZERO)
    }

    /// Wait for one delivery and consume it: the count the eventfd held.
    fn take_delivery(&self, backend: &MemoryBackend) -> u64 {
        assert!(
            readable(&self.dup, WAIT),
            "no interrupt on vector 0's irqfd"
        );
        assert!(
            self.delivering(backend),
            "signalled but not attached to a GSI"
        );
        self.dup.read().unwrap()
    }
}

/// A VM with the provisioned VF plugged in the example's way, its BARs placed and MSI-X
/// enabled by the scripted guest. Fields drop in order: the VF's holders before the PF.
struct Rig {
    backend: MemoryBackend,
    router: Arc<Router>,
    container: Arc<Container>,
    vm: example::Vm,
    dev: Arc<Mutex<PassthroughDevice>>,
    counting: Arc<CountingDevice>,
    /// Offsets in BAR 0 of vector 0's Vector Control word and of the PBA.
    vector_ctrl: u64,
    pba: u64,
    irqfd: Irqfd,
    request: EventFd,
    lab: LabDevices,
    vf: ProvisionedVf,
}

fn rig() -> Rig {
    let lab = LabDevices::from_env().expect("run inside the lab guest (cargo xtask lab)");
    let vf = provision_vf(&lab);
    // The VM, as the example builds it: in-memory routes, one container, RAM DMA-mapped once
    // a group joins.
    let backend = MemoryBackend::new();
    let router = Arc::new(Router::new(backend.clone()).unwrap());
    let container = Container::new().unwrap();
    let mut vm = example::Vm::new(router.clone(), container.clone()).unwrap();
    assert!(!container.dma_mappings()[0].live, "no group yet");
    let kernel = example::open_pci(&container, &vf.bdf, Some(vf.token)).unwrap();
    let ram = container.dma_mappings();
    assert_eq!(ram.len(), 1);
    assert_eq!(
        (ram[0].iova, ram[0].size, ram[0].live),
        (0, example::RAM, true)
    );
    let counting = Arc::new(CountingDevice {
        inner: kernel,
        set_irqs: AtomicU64::new(0),
    });
    let dev = vm.plug(counting.clone(), VF_ID).unwrap();
    let (table, pba, irqfd, request) = {
        let mut d = dev.lock().unwrap();
        let bar0 = d.bars().into_iter().find(|b| b.index == 0).unwrap();
        assert_eq!(
            (bar0.kind, bar0.size, bar0.mappable),
            (BarKind::Mem64, 0x4000, true)
        );
        assert_eq!(
            d.bar_address(0),
            Some(example::MMIO_WINDOW),
            "the firmware's place"
        );
        // The guest sizes and re-places the BARs, then enables MSI-X with vector 0 unmasked.
        let (mut mmio, mut pio) = (GUEST_WINDOW, 0x1000);
        let placed = scripted_guest::place_bars(&mut d, &mut mmio, &mut pio, false);
        assert_eq!(placed.len(), 1, "{placed:?}");
        assert_eq!(d.bar_address(0), Some(GUEST_WINDOW));
        let prog = scripted_guest::program_msix(&mut d, 0, |v| v == 0).unwrap();
        assert_eq!(prog.vectors, 1);
        assert_eq!(d.irq_mode(), IrqMode::Msix);
        let route = d.msix_route(0).expect("vector 0 is routed once unmasked");
        let Some(RouteState::Routed { gsi }) = router.route_state(route) else {
            panic!("vector 0: {:?}", router.route_state(route));
        };
        let msg = scripted_guest::message_for(0, 0);
        let entry = router.committed_table().into_iter().find(|e| e.gsi == gsi);
        assert_eq!(entry.map(|e| (e.msi.address, e.msi.data)), Some(msg));
        let device_irqfd = d.msix_irqfd(0).unwrap();
        let irqfd = Irqfd {
            raw: device_irqfd.as_raw_fd(),
            dup: device_irqfd.try_clone().unwrap(),
        };
        assert_eq!(irqfd.gsi(&backend), Some(gsi));
        let request = d.request_eventfd().unwrap().try_clone().unwrap();
        (prog.table_address, prog.pba_address, irqfd, request)
    };
    // The guest's config writes moved BAR 0: the bus follows.
    vm.attach_bars(&dev).unwrap();
    {
        // Its register pages are the real mmap of the VF, installed where the guest put them;
        // the MSI-X table and PBA pages are not mapped.
        let maps = vm.res.guest_mappings.as_ref().unwrap().lock().unwrap();
        assert!(maps.mapping_at(GUEST_WINDOW).is_some());
        assert!(
            maps.mapping_at(example::MMIO_WINDOW).is_none(),
            "moved away"
        );
        assert!(maps.mapping_at(table).is_none() && maps.mapping_at(pba).is_none());
    }
    Rig {
        backend,
        router,
        container,
        vm,
        dev,
        counting,
        vector_ctrl: table - GUEST_WINDOW + 12,
        pba: pba - GUEST_WINDOW,
        irqfd,
        request,
        lab,
        vf,
    }
}

/// Zero the identify page in guest RAM, run Identify Controller on the VF into it, and return
/// the completion and what the device wrote there.
fn guest_identify<R: Registers>(
    aq: &mut AdminQueue<'_, R>,
    ram: &GuestRegionMmap,
) -> (Completion, ControllerId) {
    ram.write_slice(&[0u8; 4096], MemoryRegionAddress(GUEST_IDENTIFY))
        .unwrap();
    let c = aq.run(identify(CNS_CONTROLLER, 0, GUEST_IDENTIFY)).unwrap();
    (
        c,
        ControllerId::parse(&aq.read_page(GUEST_IDENTIFY).unwrap()),
    )
}

/// The guest's NVMe driver brings the VF's controller up; its first Identify must land in
/// guest RAM and interrupt through vector 0's irqfd once.
fn bring_up<'a>(rig: &'a Rig, bar: &'a GuestBar<'a>) -> AdminQueue<'a, &'a GuestBar<'a>> {
    let mut aq = AdminQueue::enable(bar, &rig.vm.ram, GUEST_ASQ, GUEST_ACQ, QUEUE_ENTRIES).unwrap();
    let (c, id) = guest_identify(&mut aq, &rig.vm.ram);
    // Phase 1 on the first pass through the queue; status 0 is success.
    assert_eq!(
        (c.phase, c.status, c.sq_id, c.sq_head),
        (true, 0, 0, 1),
        "{c:?}"
    );
    assert_eq!(id.vid, 0x1b36, "{id:?}");
    assert_eq!(id.model, "QEMU NVMe Ctrl");
    assert_eq!(id.cntlid, rig.vf.scid, "the VF's own controller answered");
    assert_eq!(rig.irqfd.take_delivery(&rig.backend), 1);
    aq
}

/// Remove the PF's VFs from another thread while the VF is open: the kernel asks for it back
/// through its REQ eventfd and waits; unplugging and dropping everything holding it lets the
/// removal complete.
fn teardown(rig: Rig) {
    let Rig {
        backend,
        router,
        container,
        mut vm,
        dev,
        counting,
        request,
        lab,
        vf,
        ..
    } = rig;
    let (tx, rx) = mpsc::channel();
    let pf = lab.nvme_pf.clone();
    let remover = std::thread::spawn(move || {
        let _ = tx.send(lab::set_numvfs(&pf, 0).map_err(|e| e.to_string()));
    });
    assert!(
        readable(&request, Duration::from_secs(60)),
        "the kernel never signalled the VF's REQ eventfd"
    );
    assert!(rx.try_recv().is_err(), "sriov_numvfs=0 waits for the VF");
    let before = counting.set_irqs_issued();
    let report = vm.unplug(dev).unwrap();
    assert_eq!(report.set_irqs_calls, counting.set_irqs_issued() - before);
    assert_eq!(
        report.set_irqs_calls, 2,
        "MSI-X and REQ disabled: {report:?}"
    );
    assert_eq!(report.gsis_released, 1, "{report:?}");
    assert_eq!(report.irqfds_detached, 1, "{report:?}");
    assert!(report.slots_removed >= 1, "{report:?}");
    assert!(backend.attached_irqfds().is_empty());
    assert_eq!(router.gsis_in_use(), 0);
    drop(vm);
    assert_eq!(
        Arc::strong_count(&counting),
        1,
        "only the test holds the VF now"
    );
    drop(counting);
    assert!(
        container.group_ids().is_empty(),
        "the VF's group left the container"
    );
    let done = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("sriov_numvfs=0 did not complete once the VF was released");
    assert_eq!(done, Ok(()));
    remover.join().unwrap();
    let virtfn = std::path::Path::new("/sys/bus/pci/devices")
        .join(&lab.nvme_pf)
        .join("virtfn0");
    assert!(!virtfn.exists(), "the VF is gone");
    drop(vf);
}

#[test]
fn identify_data_reaches_guest_ram_and_its_interrupt_the_vectors_irqfd() {
    let rig = rig();
    let bar = GuestBar::new(&rig.vm, GUEST_WINDOW);
    let mut aq = bring_up(&rig, &bar);
    let (mapped, trapped) = bar.counts();
    assert!(mapped > 0, "registers went through the BAR mapping");
    assert_eq!(trapped, 0, "no NVMe register is in a trapped page");
    // A second command: one more interrupt, no more.
    let (c, _) = guest_identify(&mut aq, &rig.vm.ram);
    assert_eq!((c.phase, c.status, c.sq_head), (true, 0, 2), "{c:?}");
    assert_eq!(rig.irqfd.take_delivery(&rig.backend), 1);
    assert!(!readable(&rig.irqfd.dup, Duration::from_millis(200)));
    teardown(rig);
}

#[test]
fn a_masked_vectors_interrupt_sets_its_pba_bit_and_the_unmask_delivers_it_once() {
    let rig = rig();
    let bar = GuestBar::new(&rig.vm, GUEST_WINDOW);
    let mut aq = bring_up(&rig, &bar);
    let regs = &bar;
    // The guest masks vector 0 (a trapped MSI-X table write), then the device interrupts.
    regs.write32(rig.vector_ctrl, 1);
    let (c, _) = guest_identify(&mut aq, &rig.vm.ram);
    assert_eq!(c.status, 0);
    let pending = nvme::wait_until(WAIT, || {
        rig.dev.lock().unwrap().poll_userspace_interrupts();
        regs.read32(rig.pba) & 1 == 1
    });
    assert!(
        pending,
        "the masked vector's interrupt never set its PBA bit"
    );
    assert!(
        !rig.irqfd.delivering(&rig.backend),
        "delivered while masked"
    );
    regs.write32(rig.vector_ctrl, 0);
    assert_eq!(rig.irqfd.take_delivery(&rig.backend), 1, "delivered once");
    assert_eq!(
        regs.read32(rig.pba) & 1,
        0,
        "the unmask took the pending bit"
    );
    assert!(
        !readable(&rig.irqfd.dup, Duration::from_millis(200)),
        "and nothing more"
    );
    assert!(bar.counts().1 >= 4, "table and PBA accesses trapped");
    teardown(rig);
}

#[test]
fn a_mask_unmask_storm_issues_no_set_irqs() {
    let rig = rig();
    let bar = GuestBar::new(&rig.vm, GUEST_WINDOW);
    let mut aq = bring_up(&rig, &bar);
    let regs = &bar;
    let before = (
        rig.counting.set_irqs_issued(),
        rig.backend.attaches(),
        rig.backend.detaches(),
    );
    for _ in 0..STORM {
        regs.write32(rig.vector_ctrl, 1);
        regs.write32(rig.vector_ctrl, 0);
    }
    let set_irqs = rig.counting.set_irqs_issued() - before.0;
    let irqfd_ops = (
        rig.backend.attaches() - before.1,
        rig.backend.detaches() - before.2,
    );
    // Vector 0 still delivers after it.
    let (c, _) = guest_identify(&mut aq, &rig.vm.ram);
    assert_eq!(c.status, 0);
    assert_eq!(rig.irqfd.take_delivery(&rig.backend), 1);
    teardown(rig);
    assert_eq!(
        set_irqs, 0,
        "a {STORM}-cycle mask/unmask storm issued {set_irqs} VFIO_DEVICE_SET_IRQS \
         (irqfd attaches/detaches in the router meanwhile: {irqfd_ops:?})"
    );
}
