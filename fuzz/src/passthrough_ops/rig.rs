// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device under test, the reference model and the checks of the `passthrough_mmio`
//! target (see the parent module for what is checked).

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bar_mmap::{HostResourceSpace, PageSize};
use irq_routing::{MemoryBackend, MemoryOp, MsiMessage, RouteState, Router};
use pci_config::BarKind;
use vfio_core::info::{MSIX_IRQ_INDEX, MSI_IRQ_INDEX};
use vfio_core::sim::{MsixPlacement, SimDevice};
use vm_device::bus::MmioAddress;
use vm_device::MutDeviceMmio;
use vmm_glue::scripted_guest::{self, config_read_u16, find_capability};
use vmm_glue::{DeviceOptions, IrqMode, PassthroughDevice, Strategy, VmResources};

use super::{Base, Op, Setup, BAR0_SIZE, BAR2_SIZE};

/// Where an access lands, per the rules `vmm_glue::mmio` documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hit {
    Table(u64),
    Pba(u64),
    Region { bar: u8, offset: u64 },
    Nothing,
}

/// The reference state the checks compare the device with.
struct Model {
    layout: MsixPlacement,
    /// Table entries as dwords; Vector Control keeps bit 0 only.
    entries: Vec<[u32; 4]>,
    /// Vectors that hold a route (exact while no failure was injected).
    routed: Vec<bool>,
    /// Vectors raised at least once (device or VMM side).
    fired: Vec<bool>,
    /// Bytes forwarded to the device's BARs, by (BAR, offset).
    shadow: BTreeMap<(u8, u64), u8>,
    /// Expected `ignored_mmio`.
    ignored_mmio: u64,
    /// Whether a backend failure was injected (route existence is then not exact).
    faults: bool,
}

fn well_formed(offset: u64, len: usize, limit: u64) -> bool {
    (len == 4 || len == 8)
        && offset % len as u64 == 0
        && offset.checked_add(len as u64).is_some_and(|e| e <= limit)
}

impl Model {
    fn table_len(&self) -> u64 {
        self.layout.table_len()
    }

    fn pba_len(&self) -> u64 {
        self.layout.pba_len()
    }

    fn table_bytes(&self) -> Vec<u8> {
        self.entries
            .iter()
            .flat_map(|e| e.iter().flat_map(|d| d.to_le_bytes()))
            .collect()
    }

    fn hit(&self, dev: &PassthroughDevice, addr: u64, len: usize) -> Hit {
        for (index, size) in [(0u8, BAR0_SIZE), (2u8, BAR2_SIZE)] {
            let Some(base) = dev.bar_address(index) else {
                continue;
            };
            let Some(off) = addr.checked_sub(base) else {
                continue;
            };
            if off >= size || off.saturating_add(len as u64) > size {
                continue;
            }
            let l = &self.layout;
            let (toff, poff) = (u64::from(l.table_offset), u64::from(l.pba_offset));
            if l.table_bar == index && off >= toff && off < toff + self.table_len() {
                return Hit::Table(off - toff);
            }
            if l.pba_bar == index && off >= poff && off < poff + self.pba_len() {
                return Hit::Pba(off - poff);
            }
            return Hit::Region {
                bar: index,
                offset: off,
            };
        }
        Hit::Nothing
    }

    fn masked(&self, table_fmask: bool, v: usize) -> bool {
        table_fmask || self.entries.get(v).is_none_or(|e| e[3] & 1 != 0)
    }

    fn message(&self, v: usize) -> MsiMessage {
        let e = self.entries.get(v).copied().unwrap_or([0; 4]);
        MsiMessage::new(u64::from(e[1]) << 32 | u64::from(e[0]), e[2])
    }

    fn write_table(&mut self, offset: u64, data: &[u8]) -> bool {
        if !well_formed(offset, data.len(), self.table_len()) {
            return false;
        }
        let v = (offset / 16) as usize;
        let first = ((offset % 16) / 4) as usize;
        let Some(e) = self.entries.get_mut(v) else {
            return false;
        };
        for (i, chunk) in data.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w.copy_from_slice(chunk);
            let d = first + i;
            let value = u32::from_le_bytes(w);
            e[d] = if d == 3 { value & 1 } else { value };
        }
        true
    }
}

/// Everything one input runs against.
pub(super) struct Rig {
    setup: Setup,
    backend: MemoryBackend,
    router: Arc<Router>,
    sim: Arc<SimDevice>,
    dev: PassthroughDevice,
    msix_cap: u16,
    msi_cap: Option<u16>,
    placed: [u64; 2],
    model: Model,
}

impl Rig {
    pub(super) fn new(setup: Setup) -> Rig {
        let backend = MemoryBackend::new();
        let router = Arc::new(
            Router::new(backend.clone()).unwrap_or_else(|e| panic!("router on memory: {e}")),
        );
        let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)
            .unwrap_or_else(|e| panic!("host space: {e}"))
            .into_shared();
        let vm = VmResources::new(router.clone(), host, PageSize::SIZE_4K);
        let placement = setup.placement();
        let mut builder = SimDevice::builder(0x8086, 0x154c)
            .bar(0, BarKind::Mem64, BAR0_SIZE, false)
            .bar(2, BarKind::Mem32, BAR2_SIZE, false)
            .msix(placement)
            .sub_page_mmap(setup.sub_page_mmap);
        if setup.msi {
            builder = builder.msi(4);
        }
        let sim = Arc::new(
            builder
                .build()
                .unwrap_or_else(|e| panic!("sim device {placement:?}: {e}")),
        );
        let mut host_bar_addresses = [0u64; 6];
        if setup.sub_page_mmap {
            host_bar_addresses[2] = 0xe000_0000;
        }
        let opts = DeviceOptions {
            id: 1,
            strategy: Strategy::ALL[usize::from(setup.strategy & 3)],
            host_bar_addresses,
            ..DeviceOptions::default()
        };
        let mut dev = PassthroughDevice::new(sim.clone(), &vm, opts)
            .unwrap_or_else(|e| panic!("passthrough device: {e}"));
        let msix_cap = find_capability(&dev, scripted_guest::CAP_ID_MSIX)
            .unwrap_or_else(|| panic!("no MSI-X capability"));
        let msi_cap = find_capability(&dev, scripted_guest::CAP_ID_MSI);
        assert_eq!(msi_cap.is_some(), setup.msi, "MSI capability");

        let n = usize::from(setup.vectors);
        let mut model = Model {
            layout: placement,
            entries: vec![[0, 0, 0, 1]; n],
            routed: vec![false; n],
            fired: vec![false; n],
            shadow: BTreeMap::new(),
            ignored_mmio: 0,
            faults: false,
        };
        let mut placed = [0xc000_0000u64, 0xc000_4000];
        if setup.place {
            let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
            let bars = scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, setup.pack);
            assert_eq!(bars.len(), 2, "placed BARs: {bars:?}");
            for b in &bars {
                let size = if b.index == 0 { BAR0_SIZE } else { BAR2_SIZE };
                assert_eq!(b.size, size, "BAR {} sizing", b.index);
                placed[usize::from(b.index / 2)] = b.address;
            }
            if setup.program {
                let prog =
                    scripted_guest::program_msix(&mut dev, 0, |v| setup.unmasked_by_guest(v))
                        .unwrap_or_else(|| panic!("program_msix found no table"));
                assert_eq!(usize::from(prog.vectors), n);
                for (v, e) in (0u16..).zip(model.entries.iter_mut()) {
                    let (addr, data) = scripted_guest::message_for(0, v);
                    *e = [
                        addr as u32,
                        (addr >> 32) as u32,
                        data,
                        u32::from(!setup.unmasked_by_guest(v)),
                    ];
                }
            }
        }
        Rig {
            setup,
            backend,
            router,
            sim,
            dev,
            msix_cap,
            msi_cap,
            placed,
            model,
        }
    }

    fn base(&self, base: Base) -> u64 {
        let bar = |i: u8| {
            self.dev
                .bar_address(i)
                .unwrap_or(self.placed[usize::from(i / 2)])
        };
        let l = &self.model.layout;
        match base {
            Base::Bar0 => bar(0),
            Base::Bar2 => bar(2),
            Base::Table => bar(l.table_bar) + u64::from(l.table_offset),
            Base::Pba => bar(l.pba_bar) + u64::from(l.pba_offset),
        }
    }

    fn table_fmask(&self) -> bool {
        config_read_u16(&self.dev, self.msix_cap + 2) & 0x4000 != 0
    }

    fn mmio_read(&mut self, addr: u64, len: usize, what: &dyn std::fmt::Debug) {
        let hit = self.model.hit(&self.dev, addr, len);
        let mut buf = vec![0xa5u8; len];
        let page = addr & !0xfff;
        self.dev
            .mmio_read(MmioAddress(page), addr.wrapping_sub(page), &mut buf);
        match hit {
            Hit::Table(off) => {
                let bytes = self.model.table_bytes();
                let want = if well_formed(off, len, self.model.table_len()) {
                    bytes[off as usize..off as usize + len].to_vec()
                } else {
                    vec![0; len]
                };
                assert_eq!(buf, want, "{what:?}: table read at {off:#x}");
            }
            Hit::Pba(off) => {
                let words: Vec<u8> = self
                    .dev
                    .msix_table()
                    .map(|t| t.pba_words().iter().flat_map(|w| w.to_le_bytes()).collect())
                    .unwrap_or_default();
                let want = if well_formed(off, len, self.model.pba_len()) {
                    words[off as usize..off as usize + len].to_vec()
                } else {
                    vec![0; len]
                };
                assert_eq!(buf, want, "{what:?}: PBA read at {off:#x}");
            }
            Hit::Region { bar, offset } => {
                let l = &self.model.layout;
                let pba = u64::from(l.pba_offset)..u64::from(l.pba_offset) + self.model.pba_len();
                for (i, b) in buf.iter().enumerate() {
                    let at = offset + i as u64;
                    if bar == l.pba_bar && pba.contains(&at) {
                        continue; // the device's own PBA shows through
                    }
                    // vfio-pci keeps the device's MSI-X table out of the region: 0xff.
                    let table = u64::from(l.table_offset)
                        ..u64::from(l.table_offset) + self.model.table_len();
                    let want = if bar == l.table_bar && table.contains(&at) {
                        0xff
                    } else {
                        self.model.shadow.get(&(bar, at)).copied().unwrap_or(0)
                    };
                    assert_eq!(*b, want, "{what:?}: BAR {bar} byte {at:#x}");
                }
            }
            Hit::Nothing => {
                self.model.ignored_mmio += 1;
                assert!(buf.iter().all(|b| *b == 0), "{what:?}: unclaimed read");
            }
        }
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) {
        let hit = self.model.hit(&self.dev, addr, data.len());
        match hit {
            Hit::Table(off) => {
                if !self.model.write_table(off, data) {
                    self.model.ignored_mmio += 1;
                }
            }
            Hit::Pba(_) | Hit::Nothing => self.model.ignored_mmio += 1,
            Hit::Region { bar, offset } => {
                for (i, b) in data.iter().enumerate() {
                    self.model.shadow.insert((bar, offset + i as u64), *b);
                }
            }
        }
        let page = addr & !0xfff;
        self.dev
            .mmio_write(MmioAddress(page), addr.wrapping_sub(page), data);
    }

    fn table_addr(&self, vector: u8, dword: u8) -> u64 {
        self.base(Base::Table) + 16 * u64::from(vector) + 4 * u64::from(dword & 3)
    }

    pub(super) fn apply(&mut self, op: &Op) {
        match op {
            Op::MmioRead { base, offset, len } => {
                let addr = self.base(*base).wrapping_add_signed(i64::from(*offset));
                self.mmio_read(addr, usize::from(*len), op);
            }
            Op::MmioWrite { base, offset, data } => {
                let addr = self.base(*base).wrapping_add_signed(i64::from(*offset));
                self.mmio_write(addr, data);
            }
            Op::TableWrite {
                vector,
                dword,
                qword,
                value,
            } => {
                let v = *vector % (self.setup.vectors as u8).saturating_add(1).max(1);
                let bytes = value.to_le_bytes();
                let len = if *qword { 8 } else { 4 };
                self.mmio_write(self.table_addr(v, *dword), &bytes[..len]);
            }
            Op::TableRead {
                vector,
                dword,
                qword,
            } => {
                let v = *vector % (self.setup.vectors as u8).saturating_add(1).max(1);
                let len = if *qword { 8 } else { 4 };
                self.mmio_read(self.table_addr(v, *dword), len, op);
            }
            Op::ConfigWrite { offset, data } => {
                self.dev.config_write(u16::from(*offset), data);
            }
            Op::MsixControl(v) => {
                self.dev.config_write(self.msix_cap + 2, &v.to_le_bytes());
            }
            Op::MsiWrite { reg, data } => {
                if let Some(cap) = self.msi_cap {
                    self.dev.config_write(cap + u16::from(*reg % 24), data);
                }
            }
            Op::DeviceRaise(v) => {
                if let Some(f) = self.model.fired.get_mut(usize::from(*v)) {
                    *f = true;
                }
                let _ = self.sim.raise(u32::from(*v));
                self.dev.poll_userspace_interrupts();
            }
            Op::VmmRaise(v) => {
                let mode = self.dev.irq_mode();
                if mode == IrqMode::Msix {
                    if let Some(f) = self.model.fired.get_mut(usize::from(*v)) {
                        *f = true;
                    }
                }
                let raised = self.dev.raise_vector(*v);
                if mode == IrqMode::Msix {
                    let n = usize::from(self.setup.vectors);
                    let want = if usize::from(*v) >= n {
                        vmm_glue::Raised::NoSuchVector
                    } else if self.model.masked(self.table_fmask(), usize::from(*v)) {
                        vmm_glue::Raised::Pending
                    } else {
                        vmm_glue::Raised::Delivered
                    };
                    assert_eq!(raised, want, "{op:?}");
                } else if mode != IrqMode::Msi {
                    assert_eq!(raised, vmm_glue::Raised::NoSuchVector, "{op:?} in {mode:?}");
                }
            }
            Op::Poll => {
                self.dev.poll_userspace_interrupts();
            }
            Op::Fault { op, k } => {
                let kind = match op % 3 {
                    0 => MemoryOp::Commit,
                    1 => MemoryOp::AttachIrqfd,
                    _ => MemoryOp::DetachIrqfd,
                };
                self.model.faults = true;
                self.backend.fail_nth(kind, u64::from(*k), libc::EINVAL);
            }
            Op::MoveBar { bar, address } => {
                let reg = if bar % 2 == 0 { 0x10 } else { 0x18 };
                self.dev.config_write(reg, &address.to_le_bytes());
            }
        }
    }

    /// The whole-state checks (see the module docs).
    pub(super) fn check(&mut self, op: &Op) {
        let dev = &self.dev;
        let n = usize::from(self.setup.vectors);
        // Mode versus the enable bits the guest reads back.
        let msix_ctrl = config_read_u16(dev, self.msix_cap + 2);
        let msix_en = msix_ctrl & 0x8000 != 0;
        let fmask = msix_ctrl & 0x4000 != 0;
        let msi_en = self
            .msi_cap
            .is_some_and(|c| config_read_u16(dev, c + 2) & 1 != 0);
        assert!(!(msix_en && msi_en), "{op:?}: MSI and MSI-X both enabled");
        let cmd = config_read_u16(dev, 0x04);
        let want_mode = if msix_en {
            IrqMode::Msix
        } else if msi_en {
            IrqMode::Msi
        } else if cmd & (1 << 10) == 0 {
            IrqMode::Intx
        } else {
            IrqMode::None
        };
        let mode = dev.irq_mode();
        assert_eq!(mode, want_mode, "{op:?}: mode (control {msix_ctrl:#x})");
        let msix = mode == IrqMode::Msix;

        // The table against the model.
        let table = dev
            .msix_table()
            .unwrap_or_else(|| panic!("{op:?}: MSI-X table gone"));
        assert_eq!(table.enabled(), msix, "{op:?}: table enabled");
        assert_eq!(table.function_masked(), fmask, "{op:?}: function mask");
        for (v, (e, m)) in table.entries().iter().zip(&self.model.entries).enumerate() {
            assert_eq!(
                [e.addr_lo, e.addr_hi, e.data, e.vector_control],
                *m,
                "{op:?}: entry {v}"
            );
        }
        assert_eq!(table.entries().len(), n, "{op:?}: entries");

        // Routes, triggers and the PBA, vector by vector.
        let snap = self.router.snapshot();
        let sim_msix = self.sim.active_irq_index() == Some(MSIX_IRQ_INDEX);
        assert_eq!(sim_msix, msix, "{op:?}: device MSI-X index enabled");
        let mut attached_want: BTreeMap<i32, (u32, MsiMessage)> = BTreeMap::new();
        let mut parked_count = 0usize;
        let mut routes_held = 0usize;
        for v in 0..n {
            let vu = v as u16;
            let masked = self.model.masked(fmask, v);
            let msg = self.model.message(v);
            let valid = msg.address != 0;
            if !msix {
                self.model.routed[v] = false;
            } else if !masked && valid {
                self.model.routed[v] = true;
            }
            let route = dev.msix_route(vu);
            if !self.model.faults {
                assert_eq!(
                    route.is_some(),
                    self.model.routed[v],
                    "{op:?}: vector {v} route (masked {masked}, valid {valid})"
                );
            } else if !msix {
                assert!(route.is_none(), "{op:?}: vector {v} route outside MSI-X");
            }
            let view = route.and_then(|id| snap.get(id));
            if let Some(id) = route {
                routes_held += 1;
                assert!(
                    view.is_some(),
                    "{op:?}: vector {v} holds unknown route {id:?}"
                );
            }
            let routed_gsi = match view.map(|w| w.state) {
                Some(RouteState::Routed { gsi }) => Some(gsi),
                Some(RouteState::Staged) => panic!("{op:?}: vector {v} left staged"),
                _ => None,
            };
            let irqfd = dev
                .msix_irqfd(vu)
                .unwrap_or_else(|| panic!("{op:?}: no irqfd {v}"))
                .as_raw_fd();
            let user = dev
                .msix_user_eventfd(vu)
                .unwrap_or_else(|| panic!("{op:?}: no eventfd {v}"))
                .as_raw_fd();
            // A masked vector's irqfd is parked (off its GSI) unless the router refused that.
            let parked = route.is_some_and(|id| dev.router().is_parked(id));
            parked_count += usize::from(parked && routed_gsi.is_some());
            assert!(
                !parked || masked,
                "{op:?}: vector {v} parked while unmasked"
            );
            if let (Some(gsi), Some(w)) = (routed_gsi, view) {
                if parked {
                    assert!(!w.irqfd_attached, "{op:?}: vector {v} parked and attached");
                } else {
                    attached_want.insert(irqfd, (gsi, w.msi));
                    assert!(w.irqfd_attached, "{op:?}: vector {v} routed without irqfd");
                }
                if !masked && valid {
                    assert_eq!(w.msi, msg, "{op:?}: vector {v} routes a stale message");
                }
            }
            // Triggers: the device's view and the cache's.
            let trig = self.sim.msix_trigger(vu.into());
            if msix {
                // The irqfd while KVM would inject the vector's current message, or while the
                // vector is masked and its irqfd parked (its signals wait there for the PBA).
                let current = view.is_some_and(|w| w.committed_msi == Some(msg));
                let want = if (!masked && routed_gsi.is_some() && current) || parked {
                    irqfd
                } else {
                    user
                };
                assert_eq!(
                    trig,
                    Some(want),
                    "{op:?}: vector {v} trigger (masked {masked})"
                );
                assert_eq!(
                    dev.msix_trigger(vu),
                    trig,
                    "{op:?}: vector {v} trigger cache"
                );
            } else {
                assert_eq!(trig, None, "{op:?}: vector {v} bound outside MSI-X");
            }
            // PBA.
            if table.is_pending(vu) {
                assert!(
                    self.model.fired[v],
                    "{op:?}: vector {v} pending, never fired"
                );
                assert!(
                    !msix || masked,
                    "{op:?}: vector {v} pending while unmasked in MSI-X mode"
                );
            }
        }
        if let Some(last) = table.pba_words().last() {
            let valid_bits = n - (table.pba_words().len() - 1) * 64;
            if valid_bits < 64 {
                assert_eq!(
                    last >> valid_bits,
                    0,
                    "{op:?}: PBA bits past the last vector"
                );
            }
        }
        assert_eq!(table.pba_words().len(), n.div_ceil(64), "{op:?}: PBA words");

        // Router, backend and device agree.
        assert!(
            snap.iter().all(|(_, w)| w.state != RouteState::Staged),
            "{op:?}: staged route between operations"
        );
        let routed_gsis: Vec<u32> = snap
            .iter()
            .filter_map(|(_, w)| match w.state {
                RouteState::Routed { gsi } => Some(gsi),
                _ => None,
            })
            .collect();
        let mut distinct = routed_gsis.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            routed_gsis.len(),
            "{op:?}: GSI shared by two routes"
        );
        let gsis = self.router.gsis_in_use() as usize;
        let table = self.backend.table();
        let attached = self.backend.attached_irqfds();
        // Every routed vector is in the committed table with its message, its irqfd attached
        // at its GSI, whatever failed before.
        for (fd, (gsi, msg)) in &attached_want {
            assert!(
                table.iter().any(|e| e.gsi == *gsi && e.msi == *msg),
                "{op:?}: GSI {gsi} ({msg:?}) not in the committed table {table:?}"
            );
            assert!(
                attached.contains(&(*fd, *gsi)),
                "{op:?}: irqfd {fd} not attached at GSI {gsi}: {attached:?}"
            );
        }
        assert!(gsis >= routed_gsis.len(), "{op:?}: fewer GSIs than routes");
        let msi_fds: Vec<i32> = (0..4u16)
            .filter_map(|v| dev.msi_irqfd(v).map(AsRawFd::as_raw_fd))
            .collect();
        if !self.model.faults {
            // Nothing failed: the counts are exact, nothing stale, nothing leaked.
            assert_eq!(
                gsis,
                routed_gsis.len(),
                "{op:?}: GSIs in use vs routed routes"
            );
            assert_eq!(table.len(), gsis, "{op:?}: committed table");
            assert_eq!(
                self.router.committed_table().len(),
                gsis,
                "{op:?}: router table"
            );
            let mut msi_attached = 0usize;
            for (fd, gsi) in &attached {
                if msi_fds.contains(fd) {
                    assert_eq!(mode, IrqMode::Msi, "{op:?}: MSI irqfd attached in {mode:?}");
                    msi_attached += 1;
                } else {
                    assert_eq!(
                        attached_want.get(fd).map(|(g, _)| g),
                        Some(gsi),
                        "{op:?}: irqfd {fd} attached at GSI {gsi} without a routed vector"
                    );
                }
            }
            assert_eq!(
                attached.len(),
                attached_want.len() + msi_attached,
                "{op:?}: attached irqfds {attached:?} vs routed vectors {attached_want:?}"
            );
            // Every GSI has its irqfd attached but those of masked vectors (MSI-X or MSI),
            // parked: routed with the irqfd off.
            let parked_routes = snap
                .iter()
                .filter(|(_, w)| matches!(w.state, RouteState::Routed { .. }) && !w.irqfd_attached)
                .count();
            assert!(
                parked_routes >= parked_count,
                "{op:?}: parked MSI-X vectors"
            );
            assert_eq!(
                attached.len() + parked_routes,
                gsis,
                "{op:?}: irqfds vs GSIs"
            );
        }
        if mode != IrqMode::Msi {
            assert_eq!(
                snap.len(),
                routes_held,
                "{op:?}: routes not held by an MSI-X vector"
            );
        }
        if mode == IrqMode::Msi {
            assert_eq!(
                self.sim.active_irq_index(),
                Some(MSI_IRQ_INDEX),
                "{op:?}: MSI index"
            );
        }

        // Messages the VMM must inject: every one is routable (address 0 means never
        // programmed, and no delivery path queues it), and in MSI-X mode each is the current
        // message of an unmasked vector.
        let messages = self.dev.take_userspace_messages();
        for m in &messages {
            assert_ne!(
                m.address, 0,
                "{op:?}: userspace message {m:?} has no address"
            );
        }
        if msix {
            for m in messages {
                let known =
                    (0..n).any(|v| !self.model.masked(fmask, v) && self.model.message(v) == m);
                assert!(
                    known,
                    "{op:?}: userspace message {m:?} of no unmasked vector"
                );
            }
        }

        // Mapping and counters.
        // A BAR holding the MSI-X table or PBA may be mapped, but only its mapped areas, and
        // those never cover a byte of either.
        let l = self.model.layout;
        let structures = [
            (
                l.table_bar,
                u64::from(l.table_offset),
                self.model.table_len(),
            ),
            (l.pba_bar, u64::from(l.pba_offset), self.model.pba_len()),
        ];
        for (bar, start, len) in structures {
            let Some(layout) = self.dev.bar_layout(bar) else {
                continue;
            };
            for area in layout.mapped() {
                let disjoint = area.offset + area.mmap_len.max(area.len) <= start
                    || start + len <= area.offset;
                assert!(
                    disjoint,
                    "{op:?}: mapped area {area:?} of BAR {bar} covers MSI-X structures at {start:#x}+{len:#x}"
                );
            }
        }
        let _ = self.dev.take_map_changes();
        assert_eq!(
            self.dev.stats().ignored_mmio,
            self.model.ignored_mmio,
            "{op:?}: ignored_mmio"
        );
    }
}
