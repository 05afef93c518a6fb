// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Turning a builder's description into a device: what vfio-pci reports for it (GET_INFO,
//! REGION_INFO, IRQ_INFO as Linux v6.12.117 drivers/vfio/pci/vfio_pci_core.c answers them)
//! and the state it starts in.

use std::sync::{Arc, Mutex};

use pci_config::{BarKind, ConfigSpace};

use super::builder::{DeviceModel, MsixMode, MsixPlacement, SimDeviceBuilder};
use super::config::{self, BarResource, PhysConfig, VfioConfig};
use super::e1000e::E1000eRegs;
use super::irq::IrqState;
use super::migration::{MigSim, StreamRules};
use super::mtty;
use super::regions::{areas_around, bar_memory};
use super::{Faults, SimCounters, SimDevice, SimState, PAGE};
use crate::error::{Error, Result};
use crate::info::{
    pci_region_offset, DeviceFlags, DeviceInfo, IrqFlags, IrqInfo, RegionFlags, RegionInfo,
    BAR0_REGION_INDEX, CONFIG_REGION_INDEX, ERR_IRQ_INDEX, INTX_IRQ_INDEX, MSIX_IRQ_INDEX,
    MSI_IRQ_INDEX, REQ_IRQ_INDEX, VGA_REGION_INDEX,
};

/// The config writes QEMU's emulated PCI devices take, on the registers the simulator's
/// scenarios reach (QEMU's `wmask`/`w1cmask`; the lab checks what the scenarios rely on):
/// COMMAND's I/O, memory, bus master, parity, SERR and INTx Disable bits, STATUS's error bits
/// (write 1 to clear), cache line size and interrupt line, MSI enable/MME and message
/// registers, MSI-X enable and function mask, PMCSR power state and PME enable (PME status
/// write 1 to clear). PCIe DEVCTL is read-only in the device (QEMU 7.2's e1000e keeps its
/// error-reporting enables at 0, seen in the lab); vfio-pci virtualizes MPS, MRRS and FLR.
fn emulated_device_masks(c: &mut VfioConfig) {
    let (msi, msix, pm) = (c.msi_cap(), c.msix_cap(), c.pm_cap());
    let p = &mut c.phys;
    let command = config::COMMAND_IO
        | config::COMMAND_MEMORY
        | config::COMMAND_MASTER
        | config::COMMAND_PARITY
        | config::COMMAND_SERR
        | config::COMMAND_INTX_DISABLE;
    p.writable(config::COMMAND, 2, u32::from(command));
    p.write_one_to_clear(config::STATUS, 2, 0xf900);
    p.writable(0x0c, 1, 0xff);
    p.writable(0x3c, 1, 0xff);
    if let Some(at) = msi {
        let flags = config::word(p.bytes(), at + config::MSI_FLAGS);
        p.writable(at + config::MSI_FLAGS, 1, 0x71);
        let len =
            10 + if flags & 0x80 != 0 { 4 } else { 0 } + if flags & 0x100 != 0 { 10 } else { 0 };
        for reg in (4..len).step_by(4) {
            p.writable(at + reg, 4.min(len - reg), !0);
        }
    }
    if let Some(at) = msix {
        let mask = config::MSIX_FLAGS_ENABLE | config::MSIX_FLAGS_MASKALL;
        p.writable(at + config::MSIX_FLAGS, 2, u32::from(mask));
    }
    if let Some(at) = pm {
        p.writable(at + config::PM_CTRL, 2, 0x0103);
        p.write_one_to_clear(
            at + config::PM_CTRL,
            2,
            u32::from(config::PM_CTRL_PME_STATUS),
        );
    }
}

/// The MSI-X table and PBA the device's capability describes.
fn msix_placement(b: &[u8], at: usize) -> MsixPlacement {
    let ctrl = config::word(b, at + config::MSIX_FLAGS);
    let table = config::dword(b, at + 4);
    let pba = config::dword(b, at + 8);
    MsixPlacement {
        vectors: (ctrl & config::MSIX_FLAGS_QSIZE) + 1,
        table_bar: (table & 7) as u8,
        table_offset: table & !7,
        pba_bar: (pba & 7) as u8,
        pba_offset: pba & !7,
    }
}

/// VFIO_DEVICE_GET_REGION_INFO for every BAR and the config region
/// (vfio_pci_ioctl_get_region_info()): BARs are read/write, memory BARs of a page or more
/// mmappable, and the BAR holding the MSI-X table (the table's BAR only) carries
/// `MSIX_MAPPABLE`. `SPARSE_MMAP` areas around the table and PBA instead are what kernels
/// before 4.16 reported (builder option), never Linux 6.12.
fn region_infos(
    b: &SimDeviceBuilder,
    bars: &[Option<BarResource>; 6],
    msix: Option<MsixPlacement>,
    config_size: usize,
) -> Vec<Option<RegionInfo>> {
    let mut regions: Vec<Option<RegionInfo>> = (0..=VGA_REGION_INDEX).map(|_| None).collect();
    for (i, bar) in (0u8..).zip(bars.iter()) {
        let Some(bar) = bar else { continue };
        let index = BAR0_REGION_INDEX + u32::from(i);
        let mut flags = RegionFlags::READ | RegionFlags::WRITE;
        let is_mem = matches!(bar.kind, BarKind::Mem32 | BarKind::Mem64);
        if is_mem && (bar.size >= PAGE || b.sub_page_mmap) {
            flags |= RegionFlags::MMAP;
        }
        let mut sparse_mmap = None;
        let mut msix_mappable = false;
        if let (Some(m), true) = (msix, flags.contains(RegionFlags::MMAP)) {
            if b.msix_mappable && m.table_bar == i {
                flags |= RegionFlags::CAPS;
                msix_mappable = true;
            } else if !b.msix_mappable {
                let mut holes = Vec::new();
                if m.table_bar == i {
                    holes.push((u64::from(m.table_offset), m.table_len()));
                }
                if m.pba_bar == i {
                    holes.push((u64::from(m.pba_offset), m.pba_len()));
                }
                if !holes.is_empty() {
                    flags |= RegionFlags::CAPS;
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
            size: config_size as u64,
            offset: pci_region_offset(CONFIG_REGION_INDEX),
            sparse_mmap: None,
            msix_mappable: false,
        });
    }
    regions
}

/// VFIO_DEVICE_GET_IRQ_INFO for the five vfio-pci indexes (vfio_pci_ioctl_get_irq_info(),
/// vfio_pci_get_irq_count()): INTx has a vector only with an interrupt pin (none for a VF);
/// MSI's count is its Multiple Message Capable; MSI-X's its table size, without NORESIZE when
/// vectors can be allocated one at a time; ERR exists on PCI Express functions only; REQ
/// always; every index but INTx and dynamic MSI-X is NORESIZE.
fn irq_infos(c: &VfioConfig, dynamic: bool) -> Vec<Option<IrqInfo>> {
    let irq = |index, flags, count| {
        Some(IrqInfo {
            index,
            flags,
            count,
        })
    };
    let b = c.phys.bytes();
    let msi = c.msi_cap().map_or(0, |at| {
        let qmask = (config::word(b, at + config::MSI_FLAGS) & config::MSI_FLAGS_QMASK) >> 1;
        1u32 << qmask
    });
    let msix = c.msix_cap().map_or(0, |at| {
        u32::from(config::word(b, at + config::MSIX_FLAGS) & config::MSIX_FLAGS_QSIZE) + 1
    });
    let noresize = IrqFlags::EVENTFD | IrqFlags::NORESIZE;
    vec![
        irq(
            INTX_IRQ_INDEX,
            IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED,
            u32::from(c.virtual_pin() != 0),
        ),
        irq(MSI_IRQ_INDEX, noresize, msi),
        irq(
            MSIX_IRQ_INDEX,
            if dynamic { IrqFlags::EVENTFD } else { noresize },
            msix,
        ),
        c.exp_cap().and_then(|_| irq(ERR_IRQ_INDEX, noresize, 1)),
        irq(REQ_IRQ_INDEX, noresize, 1),
    ]
}

impl SimDevice {
    /// The device `b` describes, whose config registers are `cs` (BARs defined).
    pub(super) fn assemble(b: SimDeviceBuilder, cs: ConfigSpace) -> Result<SimDevice> {
        let mut bars = [None; 6];
        for (i, slot) in (0u8..).zip(bars.iter_mut()) {
            *slot = cs.bar(i).map(|bar| BarResource {
                kind: bar.kind,
                size: bar.size,
                prefetchable: bar.prefetchable,
            });
        }
        let phys = PhysConfig::new(cs.guest_view());
        let mut config = VfioConfig::new(phys, bars, b.virtfn);
        emulated_device_masks(&mut config);
        let msix = config
            .msix_cap()
            .map(|at| msix_placement(config.phys.bytes(), at));
        if let Some(m) = msix {
            let fits = |bar: u8, off: u32, len: u64| {
                bars.get(usize::from(bar))
                    .copied()
                    .flatten()
                    .is_some_and(|r| u64::from(off) + len <= r.size)
            };
            if !fits(m.table_bar, m.table_offset, m.table_len())
                || !fits(m.pba_bar, m.pba_offset, m.pba_len())
            {
                return Err(Error::SimConfig("MSI-X table or PBA outside its BAR"));
            }
        }
        let dynamic = b.msix_mode == MsixMode::Dynamic;
        let mut flags = DeviceFlags::PCI;
        if b.reset {
            flags |= DeviceFlags::RESET;
        }
        let mut info = DeviceInfo {
            flags,
            regions: region_infos(&b, &bars, msix, config.size()),
            irqs: irq_infos(&config, dynamic),
        };
        let mut rules = StreamRules::frames(b.pre_copy_end, b.resume_failure);
        let mut mtty_model = None;
        if let Some(ports) = b.mtty {
            // mtty's answers replace vfio-pci's (`SimDevice::mtty`).
            let (mtty_info, mtty_rules, model) = mtty::profile(ports, &cs)?;
            info = mtty_info;
            rules = mtty_rules;
            mtty_model = Some(Box::new(model));
        }
        let msix_vectors = msix.map_or(0, |m| u32::from(m.vectors));
        let counters = SimCounters {
            vector_bindings: vec![0; msix_vectors as usize],
            ..SimCounters::default()
        };
        let migration = b
            .migration
            .map(|f| Arc::new(Mutex::new(MigSim::new(f, b.blob.clone(), rules))));
        let mem = bar_memory(&info)?;
        let model = b.model.map(|m| match m {
            DeviceModel::E1000e => E1000eRegs::default(),
        });
        Ok(SimDevice {
            info,
            msix,
            bars,
            mem,
            msi_needs_bus_master: b.msi_needs_bus_master,
            reset_keeps_registers: b.reset_keeps_registers,
            state: Arc::new(Mutex::new(SimState {
                config,
                irq: IrqState::new(msix_vectors, dynamic),
                counters,
                faults: Faults::default(),
                migration,
                model,
                mtty: mtty_model,
            })),
        })
    }
}
