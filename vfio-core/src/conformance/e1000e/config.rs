// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Config-space virtualization on the e1000e (Linux v6.12.117
//! drivers/vfio/pci/vfio_pci_config.c: init_pci_cap_basic_perm(), vfio_bar_fixup(),
//! vfio_msi_config_read/write(), the MSI-X capability's read-only perms,
//! vfio_exp_config_write(), vfio_pm_config_write(), vfio_config_do_rw()).

use super::{BUS_MASTER, MEMORY, VECTORS};
use crate::conformance::{expect_errno, fds, find_cap, Failure, Outcome, Signals, Subject};
use crate::info::{CONFIG_REGION_INDEX, MSIX_IRQ_INDEX, MSI_IRQ_INDEX};
use crate::irq_set::IrqSet;

const CAP_PM: u8 = 0x01;
const CAP_MSI: u8 = 0x05;
const CAP_EXP: u8 = 0x10;
const CAP_MSIX: u8 = 0x11;

/// Write `!v` over a field and read `v` back: the IDs, revision and class, header type,
/// subsystem IDs, capability pointer and interrupt pin are read-only; so is STATUS (no
/// write-1-to-clear for the user). The interrupt line is a virtual byte the user owns.
pub fn read_only_header_fields(s: &Subject) -> Outcome {
    for (at, len) in [
        (0x00, 4),
        (0x08, 4),
        (0x0e, 1),
        (0x2c, 4),
        (0x34, 1),
        (0x3d, 1),
        (0x06, 2),
    ] {
        let v = s.config_read(at, len)?;
        s.config_write(at, len, !v)?;
        ensure_eq!(s.config_read(at, len)?, v, "field {at:#x}");
    }
    let line = s.config_read(0x3c, 1)?;
    s.config_write(0x3c, 1, 0x5a)?;
    ensure_eq!(s.config_read(0x3c, 1)?, 0x5a);
    s.config_write(0x3c, 1, line)?;
    ensure_eq!(s.config_read(0x3c, 1)?, line);
    Ok(())
}

/// BAR sizing on the virtual BARs: all-ones reads back the size mask with the BAR's flags
/// (BAR0/1 0x20000 memory, BAR2 0x20 I/O, BAR3 0x4000 memory \[QEMU sizes\]); the unused BARs
/// and the absent ROM read 0; the original values come back.
pub fn bar_sizing(s: &Subject) -> Outcome {
    let want = [
        (0x10, 0xfffe_0000u32),
        (0x14, 0xfffe_0000),
        (0x18, 0xffff_ffe1),
        (0x1c, 0xffff_c000),
        (0x20, 0),
        (0x24, 0),
    ];
    for (at, mask) in want {
        let v = s.config_read(at, 4)?;
        s.config_write(at, 4, !0)?;
        ensure_eq!(s.config_read(at, 4)?, mask, "BAR at {at:#x}");
        s.config_write(at, 4, v)?;
        ensure_eq!(s.config_read(at, 4)?, v, "BAR at {at:#x} restored");
    }
    s.config_write(0x30, 4, 0xffff_f801)?;
    ensure_eq!(s.config_read(0x30, 4)?, 0, "no ROM");
    Ok(())
}

/// At open vfio-pci has cleared Bus Master and pci_enable_device() has set I/O and memory
/// decode; INTx Disable is clear.
pub fn command_at_open(s: &Subject) -> Outcome {
    let cmd = s.config_read(0x04, 2)? as u16;
    ensure_eq!(cmd & 0x0407, 0x0003, "COMMAND {cmd:#06x}");
    // Bus Master and memory decode are the device's bits: they stick.
    super::set_command(s, BUS_MASTER, true)?;
    ensure!(
        s.config_read(0x04, 2)? as u16 & BUS_MASTER != 0,
        "Bus Master set"
    );
    super::set_command(s, BUS_MASTER | MEMORY, false)?;
    ensure_eq!(s.config_read(0x04, 2)? as u16 & (BUS_MASTER | MEMORY), 0);
    super::set_command(s, MEMORY, true)?;
    Ok(())
}

/// MSI's control: Enable only sticks while MSI is enabled through SET_IRQS (and SET_IRQS does
/// not set it); Multiple Message Capable reads what the last MSI enable got, 0 before it;
/// the message address and data are the user's.
pub fn msi_control_is_virtualized(s: &Subject) -> Outcome {
    let cap = find_cap(s, CAP_MSI)?;
    let f = s.config_read(cap + 2, 2)?;
    ensure_eq!(f & 0x0f, 0, "disabled, MMC 0 before any enable: {f:#x}");
    s.config_write(cap + 2, 2, f | 1)?;
    ensure_eq!(s.config_read(cap + 2, 2)? & 1, 0, "Enable refused");
    let a = Signals::new()?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSI_IRQ_INDEX, 0, vec![Some(a.raw())]))?;
    ensure_eq!(
        s.config_read(cap + 2, 2)? & 1,
        0,
        "SET_IRQS leaves Enable clear"
    );
    s.config_write(cap + 2, 2, f | 1)?;
    ensure_eq!(s.config_read(cap + 2, 2)? & 1, 1, "Enable sticks now");
    // Multiple Message Enable is clamped to what the enable got (one vector: 0).
    s.config_write(cap + 2, 2, f | 1 | (3 << 4))?;
    ensure_eq!(s.config_read(cap + 2, 2)? & 0x70, 0, "MME clamped");
    s.config_write(cap + 4, 4, 0xfee0_1000)?;
    s.config_write(cap + 12, 2, 0x4041)?;
    ensure_eq!(s.config_read(cap + 4, 4)?, 0xfee0_1000);
    ensure_eq!(s.config_read(cap + 12, 2)?, 0x4041);
    s.dev().set_irqs(&IrqSet::disable(MSI_IRQ_INDEX))?;
    s.config_write(cap + 2, 2, f)?;
    Ok(())
}

/// The MSI-X capability is read-only for the user: control shows what the host kernel
/// programmed (Enable while SET_IRQS has MSI-X enabled, Function Mask clear), table and PBA
/// offsets cannot be written.
pub fn msix_control_is_read_only(s: &Subject) -> Outcome {
    let cap = find_cap(s, CAP_MSIX)?;
    let ctrl = s.config_read(cap + 2, 2)?;
    ensure_eq!(ctrl, (VECTORS as u32) - 1, "table size, disabled");
    s.config_write(cap + 2, 2, ctrl | 0xc000)?;
    ensure_eq!(
        s.config_read(cap + 2, 2)?,
        ctrl,
        "Enable and Function Mask refused"
    );
    for at in [cap + 4, cap + 8] {
        let v = s.config_read(at, 4)?;
        s.config_write(at, 4, !v)?;
        ensure_eq!(s.config_read(at, 4)?, v, "offset {at:#x}");
    }
    let sig = Signals::many(VECTORS)?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, fds(&sig)))?;
    ensure_eq!(
        s.config_read(cap + 2, 2)?,
        ctrl | 0x8000,
        "enabled by SET_IRQS"
    );
    s.config_write(cap + 2, 2, ctrl)?;
    ensure_eq!(
        s.config_read(cap + 2, 2)?,
        ctrl | 0x8000,
        "a user write cannot disable it"
    );
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    ensure_eq!(s.config_read(cap + 2, 2)?, ctrl, "disabled by SET_IRQS");
    Ok(())
}

/// PCIe DEVCTL: Max Payload Size and Max Read Request Size are vfio-pci's virtual copies and
/// read back what the user wrote; Phantom Functions is never written; the other bits go to the
/// device, and QEMU 7.2's e1000e keeps none of them (an error-reporting enable reads back 0)
/// \[QEMU\]. The e1000e has no FLR.
pub fn pcie_devctl(s: &Subject) -> Outcome {
    let cap = find_cap(s, CAP_EXP)?;
    let devcap = s.config_read(cap + 4, 4)?;
    ensure_eq!(
        devcap & 0x1000_0000,
        0,
        "the e1000e has no FLR: {devcap:#x}"
    );
    let ctl = s.config_read(cap + 8, 2)?;
    s.config_write(cap + 8, 2, ctl ^ 0x1)?;
    ensure_eq!(
        s.config_read(cap + 8, 2)?,
        ctl,
        "Correctable Error Reporting [QEMU]"
    );
    let sizes = (ctl & !0x70e0) | 0x2020; // MPS 256, MRRS 512
    s.config_write(cap + 8, 2, sizes)?;
    ensure_eq!(
        s.config_read(cap + 8, 2)?,
        sizes,
        "MPS and MRRS are virtual"
    );
    s.config_write(cap + 8, 2, sizes ^ 0x200)?;
    ensure_eq!(
        s.config_read(cap + 8, 2)? & 0x200,
        ctl & 0x200,
        "Phantom Functions"
    );
    s.config_write(cap + 8, 2, ctl)?;
    ensure_eq!(s.config_read(cap + 8, 2)?, ctl);
    Ok(())
}

/// PM: writing D3hot to PMCSR puts the device in D3hot (its state bits read 3) and its memory
/// BARs then fail with EIO; D0 brings them back.
pub fn power_state_d3hot_disables_memory(s: &Subject) -> Outcome {
    let cap = find_cap(s, CAP_PM)?;
    let pmcsr = s.config_read(cap + 4, 2)?;
    ensure_eq!(pmcsr & 3, 0, "D0 at open");
    s.config_write(cap + 4, 2, (pmcsr & !3) | 3)?;
    ensure_eq!(s.config_read(cap + 4, 2)? & 3, 3, "D3hot");
    let mut b = [0u8; 4];
    expect_errno(s.dev().region_read(0, 0x8, &mut b), libc::EIO)?;
    s.config_write(cap + 4, 2, pmcsr & !3)?;
    ensure_eq!(s.config_read(cap + 4, 2)? & 3, 0, "D0");
    s.read32(0, 0x8)?;
    Ok(())
}

/// The config region is the function's whole 4 KiB: the last dword reads, a read past the end
/// is EINVAL (checked by the trait before the kernel sees it); the extended capability list
/// starts with AER (ID 1, version 2) \[QEMU\].
pub fn config_bounds_and_extended_header(s: &Subject) -> Outcome {
    let size = s
        .dev()
        .info()
        .region(CONFIG_REGION_INDEX)
        .ok_or_else(|| Failure::new("no config region"))?
        .size;
    ensure_eq!(size, 4096);
    s.config_read(size - 4, 4)?;
    let mut b = [0u8; 4];
    expect_errno(
        s.dev().region_read(CONFIG_REGION_INDEX, size - 2, &mut b),
        libc::EINVAL,
    )?;
    let ecap = s.config_read(0x100, 4)?;
    ensure_eq!(
        ecap & 0x000f_ffff,
        0x0002_0001,
        "AER v2 at 0x100: {ecap:#x}"
    );
    Ok(())
}
