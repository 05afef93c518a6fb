// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Device info, BAR region access and device interrupts on the e1000e (Linux v6.12.117
//! drivers/vfio/pci/vfio_pci_core.c: vfio_pci_ioctl_get_info(), _get_region_info(),
//! _get_irq_info(), _reset(); vfio_pci_rdwr.c: vfio_pci_bar_rw(), vfio_pci_core_do_io_rw()).

use super::{
    arm, bus_master, cause_of, quiesce, raise, set_command, IMS, MEMORY, MSIX_BAR, PBA, TXDW,
    VECTORS,
};
use crate::conformance::{counts, expect_errno, fds, find_cap, Failure, Outcome, Signals, Subject};
use crate::info::{
    DeviceFlags, IrqFlags, RegionFlags, CONFIG_REGION_INDEX, ERR_IRQ_INDEX, INTX_IRQ_INDEX,
    MSIX_IRQ_INDEX, MSI_IRQ_INDEX, REQ_IRQ_INDEX, ROM_REGION_INDEX, VGA_REGION_INDEX,
};
use crate::irq_set::IrqSet;

/// GET_INFO, REGION_INFO and IRQ_INFO as the kernel reports them for the e1000e (LAB.md): RESET
/// and PCI; memory BARs of a page or more mmappable; MSIX_MAPPABLE on the MSI-X table's BAR
/// only and never SPARSE_MMAP; no ROM, no VGA; 4 KiB of config; INTx maskable and
/// automasked, MSI one vector, MSI-X five without NORESIZE, ERR and REQ one with NORESIZE.
pub fn device_and_region_info(s: &Subject) -> Outcome {
    let info = s.dev().info();
    ensure_eq!(info.flags, DeviceFlags::RESET | DeviceFlags::PCI);
    ensure_eq!(info.num_irqs(), 5);
    let rw = RegionFlags::READ | RegionFlags::WRITE;
    // Per region: flags, size, MSIX_MAPPABLE.
    type Shape = Option<(RegionFlags, u64, bool)>;
    let want: [(u32, Shape); 9] = [
        (0, Some((rw | RegionFlags::MMAP, 0x20000, false))),
        (1, Some((rw | RegionFlags::MMAP, 0x20000, false))),
        (2, Some((rw, 0x20, false))),
        (
            3,
            Some((rw | RegionFlags::MMAP | RegionFlags::CAPS, 0x4000, true)),
        ),
        (4, None),
        (5, None),
        (ROM_REGION_INDEX, None),
        (CONFIG_REGION_INDEX, Some((rw, 4096, false))),
        (VGA_REGION_INDEX, None),
    ];
    for (index, want) in want {
        let got = info
            .region(index)
            .map(|r| (r.flags, r.size, r.msix_mappable));
        ensure_eq!(got, want, "region {index}");
        if let Some(r) = info.region(index) {
            ensure_eq!(r.sparse_mmap, None, "region {index}");
            ensure_eq!(r.offset, u64::from(index) << 40, "region {index}");
        }
    }
    let noresize = IrqFlags::EVENTFD | IrqFlags::NORESIZE;
    let want = [
        (
            INTX_IRQ_INDEX,
            1,
            IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED,
        ),
        (MSI_IRQ_INDEX, 1, noresize),
        (MSIX_IRQ_INDEX, VECTORS as u32, IrqFlags::EVENTFD),
        (ERR_IRQ_INDEX, 1, noresize),
        (REQ_IRQ_INDEX, 1, noresize),
    ];
    for (index, count, flags) in want {
        let got = info.irq(index).map(|i| (i.count, i.flags));
        ensure_eq!(got, Some((count, flags)), "irq index {index}");
    }
    Ok(())
}

/// The MSI-X table (the first 5 x 16 bytes of BAR3) is kept from the user: reads fill 0xff,
/// writes are dropped without error; an access straddling its end reads the device beyond
/// it. The PBA is the device's: a vector de-assigned with fd -1 is latched there by a device
/// interrupt and delivered once when a trigger is bound again.
pub fn msix_table_window_and_pba(s: &Subject) -> Outcome {
    let mut b = [0u8; 16];
    s.dev().region_read(MSIX_BAR, 0, &mut b)?;
    ensure_eq!(b, [0xff; 16], "table entry 0");
    s.dev().region_write(MSIX_BAR, 0, &[0x11; 16])?;
    s.dev().region_read(MSIX_BAR, 0, &mut b)?;
    ensure_eq!(b, [0xff; 16], "still 0xff after a write");
    let mut straddle = [0u8; 8];
    let end = 16 * VECTORS as u64;
    s.dev().region_read(MSIX_BAR, end - 4, &mut straddle)?;
    ensure_eq!(straddle[..4], [0xff; 4], "last table bytes");
    ensure_eq!(
        straddle[4..],
        [0; 4],
        "the device's bytes after the table [QEMU]"
    );
    let sig = Signals::many(VECTORS)?;
    bus_master(s, true)?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, fds(&sig)))?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 2, vec![None]))?;
    arm(s, 0x01f0_0000)?;
    raise(s, cause_of(2))?;
    s.wait_settle();
    ensure_eq!(
        counts(&sig)?,
        vec![0; VECTORS],
        "vector 2 de-assigned: silent"
    );
    ensure_eq!(s.read32(MSIX_BAR, PBA)? & 0x1f, 1 << 2, "vector 2 pending");
    s.dev().set_irqs(&IrqSet::eventfds(
        MSIX_IRQ_INDEX,
        2,
        vec![Some(sig[2].raw())],
    ))?;
    ensure_eq!(
        sig[2].wait_for(1, s.deadline())?,
        1,
        "delivered on re-assignment"
    );
    s.wait_settle();
    ensure_eq!(counts(&sig)?, vec![0, 0, 1, 0, 0]);
    ensure_eq!(s.read32(MSIX_BAR, PBA)? & 0x1f, 0, "no longer pending");
    quiesce(s)?;
    s.wait_settle();
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    Ok(())
}

/// With COMMAND's memory decode off every access to a memory BAR is EIO, except inside the
/// MSI-X table (which reaches no device); the I/O BAR works; decode on again, memory works.
pub fn memory_decode_off(s: &Subject) -> Outcome {
    let mut b = [0u8; 4];
    set_command(s, MEMORY, false)?;
    ensure_eq!(s.config_read(0x04, 2)? as u16 & MEMORY, 0);
    expect_errno(s.dev().region_read(0, IMS, &mut b), libc::EIO)?;
    expect_errno(s.dev().region_write(0, IMS, &[0; 4]), libc::EIO)?;
    expect_errno(s.dev().region_read(1, 0, &mut b), libc::EIO)?;
    s.dev().region_read(MSIX_BAR, 0, &mut b)?;
    ensure_eq!(b, [0xff; 4], "inside the table");
    expect_errno(s.dev().region_read(MSIX_BAR, PBA, &mut b), libc::EIO)?;
    s.dev().region_read(2, 0, &mut b)?;
    set_command(s, MEMORY, true)?;
    s.dev().region_read(0, IMS, &mut b)?;
    s.dev().region_read(MSIX_BAR, PBA, &mut b)?;
    Ok(())
}

/// Accesses past a BAR's end are EINVAL before anything is touched (the trait's rule; the
/// kernel would return a short count for the part inside).
pub fn bar_bounds(s: &Subject) -> Outcome {
    let mut b = [0u8; 4];
    expect_errno(s.dev().region_read(0, 0x20000, &mut b), libc::EINVAL)?;
    expect_errno(s.dev().region_read(0, 0x1fffe, &mut b), libc::EINVAL)?;
    expect_errno(s.dev().region_write(2, 0x1e, &b), libc::EINVAL)?;
    s.dev().region_read(0, 0x1fffc, &mut b)?;
    Ok(())
}

/// MSI from the device: with Bus Master on an ICS write raising an enabled cause signals the
/// MSI eventfd, once; with Bus Master off the message is not sent \[QEMU\]. (With MSI
/// de-assigned by fd -1 the kernel zeroes the device's message, and a device interrupt
/// becomes a DMA write to address 0 that the IOMMU blocks: observed in the lab, not asserted
/// here; the simulator drops it.)
pub fn msi_device_interrupt(s: &Subject) -> Outcome {
    let a = Signals::new()?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSI_IRQ_INDEX, 0, vec![Some(a.raw())]))?;
    arm(s, TXDW)?;
    raise(s, TXDW)?;
    s.wait_settle();
    ensure_eq!(a.count()?, 0, "no Bus Master, no MSI");
    bus_master(s, true)?;
    raise(s, TXDW)?;
    ensure_eq!(a.wait_for(1, s.deadline())?, 1, "MSI");
    s.wait_settle();
    ensure_eq!(a.count()?, 1);
    bus_master(s, false)?;
    raise(s, TXDW)?;
    s.wait_settle();
    ensure_eq!(a.count()?, 1, "Bus Master off again");
    quiesce(s)?;
    s.dev().set_irqs(&IrqSet::disable(MSI_IRQ_INDEX))?;
    Ok(())
}

/// MSI-X from the device: each queue cause arrives on the vector IVAR maps it to, once; with
/// Bus Master off nothing arrives \[QEMU\]. With MSI-X disabled the device signals INTx
/// instead and latches no MSI-X vector: enabling MSI-X afterwards delivers nothing \[QEMU\].
pub fn msix_device_interrupts_need_bus_master(s: &Subject) -> Outcome {
    let sig = Signals::many(VECTORS)?;
    let t = Signals::new()?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![Some(t.raw())]))?;
    arm(s, 0x01f0_0000)?;
    raise(s, cause_of(0))?;
    ensure_eq!(
        t.wait_for(1, s.deadline())?,
        1,
        "INTx while MSI-X is disabled"
    );
    quiesce(s)?;
    s.dev().set_irqs(&IrqSet::disable(INTX_IRQ_INDEX))?;
    // QEMU 7.2's e1000e aborts if MSI-X is enabled while the throttling timer an INTx or MSI
    // interrupt started is still running (e1000e_intrmgr_on_throttling_timer(), seen in the
    // lab): let it run out first [QEMU].
    s.wait_settle();
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, fds(&sig)))?;
    arm(s, 0x01f0_0000)?;
    raise(s, cause_of(1))?;
    s.wait_settle();
    ensure_eq!(
        counts(&sig)?,
        vec![0; VECTORS],
        "nothing latched, nothing without Bus Master"
    );
    bus_master(s, true)?;
    for (v, x) in sig.iter().enumerate() {
        raise(s, cause_of(v))?;
        ensure_eq!(x.wait_for(1, s.deadline())?, 1, "vector {v}");
    }
    s.wait_settle();
    ensure_eq!(counts(&sig)?, vec![1; VECTORS]);
    ensure_eq!(t.count()?, 1);
    quiesce(s)?;
    s.wait_settle();
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    Ok(())
}

/// VFIO_DEVICE_RESET resets the device, not vfio-pci's state: config space (COMMAND, the
/// interrupt line, the MSI-X capability) reads as before, MSI-X stays enabled with its
/// triggers, and device interrupts keep working. The kernel resets the e1000e with a PM reset
/// (it has no FLR), which QEMU 7.2's e1000e ignores: its registers (IMS) keep their values
/// \[QEMU, seen in the lab\].
pub fn reset_keeps_interrupts(s: &Subject) -> Outcome {
    let sig = Signals::many(VECTORS)?;
    bus_master(s, true)?;
    s.config_write(0x3c, 1, 0x5a)?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, fds(&sig)))?;
    arm(s, 0x01f0_0000)?;
    raise(s, cause_of(1))?;
    ensure_eq!(sig[1].wait_for(1, s.deadline())?, 1);
    let msix = find_cap(s, 0x11)?;
    let snapshot = |s: &Subject| -> Result<Vec<u32>, Failure> {
        let mut v = Vec::new();
        for at in (0..0x40).step_by(4) {
            // STATUS can change under the device (its interrupt bit): compare COMMAND only.
            let word = s.config_read(at, 4)?;
            v.push(if at == 4 { word & 0xffff } else { word });
        }
        for at in [msix, msix + 4, msix + 8] {
            v.push(s.config_read(at, 4)?);
        }
        Ok(v)
    };
    let before = snapshot(s)?;
    // QEMU 7.2's e1000e: let its MSI-X throttling timer run out before the reset.
    s.wait_settle();
    s.dev().reset()?;
    ensure_eq!(snapshot(s)?, before, "config space across the reset");
    ensure_eq!(
        s.read32(0, IMS)?,
        0x01f0_0000,
        "IMS kept across the PM reset [QEMU]"
    );
    s.dev()
        .set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, VECTORS as u32))?;
    for (v, x) in sig.iter().enumerate() {
        let want = if v == 1 { 2 } else { 1 };
        ensure_eq!(
            x.wait_for(want, s.deadline())?,
            want,
            "vector {v} kept its trigger"
        );
    }
    arm(s, 0x01f0_0000)?;
    raise(s, cause_of(3))?;
    ensure_eq!(
        sig[3].wait_for(2, s.deadline())?,
        2,
        "device interrupt after reset"
    );
    s.wait_settle();
    ensure_eq!(counts(&sig)?, vec![1, 2, 1, 2, 1]);
    quiesce(s)?;
    s.wait_settle();
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    Ok(())
}
