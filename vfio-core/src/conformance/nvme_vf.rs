// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Scenarios on a VF of QEMU's NVMe controller (SR-IOV), bound to vfio-pci: what vfio-pci
//! does differently for a VF (Linux v6.12.117 drivers/vfio/pci/vfio_pci_config.c,
//! vfio_config_init(): IDs from the PF, interrupt pin 0; `no_command_memory`;
//! vfio_pci_core.c, vfio_pci_get_irq_count()).

use super::{expect_errno, find_cap, set_command, Failure, Outcome, Signals, Subject};
use crate::info::{
    DeviceFlags, IrqFlags, RegionFlags, CONFIG_REGION_INDEX, ERR_IRQ_INDEX, INTX_IRQ_INDEX,
    MSIX_IRQ_INDEX, MSI_IRQ_INDEX, REQ_IRQ_INDEX,
};
use crate::irq_set::IrqSet;

/// Where QEMU's NVMe VF keeps its MSI-X table in BAR0 \[QEMU\].
const TABLE: u64 = 0x2000;

/// The VF's shape: RESET and PCI; one 64-bit BAR of 16 KiB, mmappable, holding the MSI-X
/// table (MSIX_MAPPABLE); 4 KiB of config; INTx and MSI with no vector, MSI-X one vector
/// (dynamic), ERR and REQ one.
pub fn shape(s: &Subject) -> Outcome {
    let info = s.dev().info();
    ensure_eq!(info.flags, DeviceFlags::RESET | DeviceFlags::PCI);
    let bar0 = info.region(0).ok_or_else(|| Failure::new("no BAR0"))?;
    let rw = RegionFlags::READ | RegionFlags::WRITE;
    ensure_eq!(
        (
            bar0.flags,
            bar0.size,
            bar0.msix_mappable,
            bar0.sparse_mmap.is_none()
        ),
        (
            rw | RegionFlags::MMAP | RegionFlags::CAPS,
            0x4000,
            true,
            true
        )
    );
    for index in 1..7 {
        ensure!(info.region(index).is_none(), "region {index}");
    }
    ensure_eq!(
        info.region(CONFIG_REGION_INDEX).map(|r| (r.flags, r.size)),
        Some((rw, 4096))
    );
    let noresize = IrqFlags::EVENTFD | IrqFlags::NORESIZE;
    let want = [
        (
            INTX_IRQ_INDEX,
            0,
            IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED,
        ),
        (MSI_IRQ_INDEX, 0, noresize),
        (MSIX_IRQ_INDEX, 1, IrqFlags::EVENTFD),
        (ERR_IRQ_INDEX, 1, noresize),
        (REQ_IRQ_INDEX, 1, noresize),
    ];
    for (index, count, flags) in want {
        ensure_eq!(
            info.irq(index).map(|i| (i.count, i.flags)),
            Some((count, flags)),
            "irq index {index}"
        );
    }
    Ok(())
}

/// No INTx and no MSI vector: every SET_IRQS on those indexes is EINVAL, the count-0
/// disable included (vfio_set_irqs_validate_and_prepare() with max 0).
pub fn no_intx_no_msi(s: &Subject) -> Outcome {
    let t = Signals::new()?;
    for index in [INTX_IRQ_INDEX, MSI_IRQ_INDEX] {
        let d = s.dev();
        expect_errno(
            d.set_irqs(&IrqSet::eventfds(index, 0, vec![Some(t.raw())])),
            libc::EINVAL,
        )?;
        expect_errno(d.set_irqs(&IrqSet::disable(index)), libc::EINVAL)?;
        expect_errno(d.set_irqs(&IrqSet::mask(index, 0, 1, true)), libc::EINVAL)?;
        expect_errno(d.set_irqs(&IrqSet::fire(index, 0, 1)), libc::EINVAL)?;
    }
    s.wait_settle();
    ensure_eq!(t.count()?, 0);
    Ok(())
}

/// vfio-pci's view of the VF's header: the PF's vendor and the VF device ID (a VF's own ID
/// registers read 0xffff), read-only; interrupt pin 0, read-only; BAR0 64-bit, sizing to
/// 16 KiB; memory decode reads set.
pub fn virtualized_ids_and_bars(s: &Subject) -> Outcome {
    ensure_eq!(s.config_read(0, 4)?, 0x0010_1b36, "IDs");
    s.config_write(0, 4, 0)?;
    ensure_eq!(s.config_read(0, 4)?, 0x0010_1b36, "IDs read-only");
    ensure_eq!(s.config_read(0x3d, 1)?, 0, "no interrupt pin");
    s.config_write(0x3d, 1, 1)?;
    ensure_eq!(s.config_read(0x3d, 1)?, 0);
    ensure!(
        s.config_read(0x04, 2)? & 0x2 != 0,
        "memory decode reads set"
    );
    let (lo, hi) = (s.config_read(0x10, 4)?, s.config_read(0x14, 4)?);
    ensure_eq!(lo & 0xf, 0x4, "64-bit memory BAR");
    s.config_write(0x10, 4, !0)?;
    s.config_write(0x14, 4, !0)?;
    ensure_eq!(s.config_read(0x10, 4)?, 0xffff_c004);
    ensure_eq!(s.config_read(0x14, 4)?, 0xffff_ffff);
    s.config_write(0x10, 4, lo)?;
    s.config_write(0x14, 4, hi)?;
    ensure_eq!((s.config_read(0x10, 4)?, s.config_read(0x14, 4)?), (lo, hi));
    for at in (0x18..0x28).step_by(4) {
        s.config_write(at, 4, !0)?;
        ensure_eq!(s.config_read(at, 4)?, 0, "BAR at {at:#x}");
    }
    Ok(())
}

/// A VF's memory enable is virtual (`no_command_memory`): with COMMAND's memory bit cleared
/// the BAR is still accessible; the bit reads as written.
pub fn memory_enable_is_virtual(s: &Subject) -> Outcome {
    let mut b = [0u8; 4];
    set_command(s, 0x2, false)?;
    ensure_eq!(s.config_read(0x04, 2)? & 0x2, 0, "memory bit reads clear");
    s.dev().region_read(0, 0, &mut b)?;
    s.dev().region_write(0, 0x1000, &[0; 4])?;
    set_command(s, 0x2, true)?;
    ensure!(s.config_read(0x04, 2)? & 0x2 != 0, "memory bit reads set");
    Ok(())
}

/// MSI-X with its one vector: enable, loopback, and the table kept from the user (0xff
/// reads, dropped writes) in BAR0; a second vector is past the table.
pub fn msix_one_vector_and_table(s: &Subject) -> Outcome {
    let a = Signals::new()?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![Some(a.raw())]))?;
    s.dev().set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, 1))?;
    ensure_eq!(a.wait_for(1, s.deadline())?, 1);
    expect_errno(
        s.dev()
            .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 1, vec![Some(a.raw())])),
        libc::EINVAL,
    )?;
    let mut b = [0u8; 16];
    s.dev().region_read(0, TABLE, &mut b)?;
    ensure_eq!(b, [0xff; 16]);
    s.dev().region_write(0, TABLE, &[0; 16])?;
    s.dev().region_read(0, TABLE, &mut b)?;
    ensure_eq!(b, [0xff; 16]);
    let cap = find_cap(s, 0x11)?;
    ensure_eq!(s.config_read(cap + 2, 2)?, 0x8000, "one vector, enabled");
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    ensure_eq!(s.config_read(cap + 2, 2)?, 0);
    Ok(())
}

/// PCIe FLR through DEVCTL (the VF has FLR): the bit reads back 0 and the function resets;
/// vfio-pci's interrupt state survives (MSI-X still enabled with its trigger).
pub fn flr_through_devctl(s: &Subject) -> Outcome {
    let cap = find_cap(s, 0x10)?;
    let devcap = s.config_read(cap + 4, 4)?;
    ensure!(devcap & 0x1000_0000 != 0, "the VF has FLR: {devcap:#x}");
    let a = Signals::new()?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![Some(a.raw())]))?;
    let ctl = s.config_read(cap + 8, 2)?;
    s.config_write(cap + 8, 2, ctl | 0x8000)?;
    ensure_eq!(s.config_read(cap + 8, 2)? & 0x8000, 0, "FLR reads 0");
    s.dev().set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, 1))?;
    ensure_eq!(a.wait_for(1, s.deadline())?, 1, "the trigger survived");
    let msix = find_cap(s, 0x11)?;
    ensure_eq!(s.config_read(msix + 2, 2)?, 0x8000, "MSI-X still enabled");
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    Ok(())
}
