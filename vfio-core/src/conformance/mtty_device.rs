// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! mtty's shape as the kernel's sample answers it (Linux v6.12.117
//! `samples/vfio-mdev/mtty.c`): device, region and irq info, config writes, the UART
//! registers behind the I/O BARs and `mtty_set_irqs()`.

use super::mtty::{baseline, get, put, IER, IIR, LCR, LSR, MCR, MSR, SCR, TX};
use super::{expect_errno, Failure, Outcome, Signals, Subject};
use crate::info::{DeviceFlags, IrqFlags, RegionFlags, INTX_IRQ_INDEX, MSI_IRQ_INDEX};
use crate::irq_set::{IrqAction, IrqData, IrqSet};
use crate::migration::MigrationFeatures;

/// GET_INFO, REGION_INFO and IRQ_INFO as `mtty_get_device_info()`,
/// `mtty_get_region_info()` and `mtty_get_irq_info()` answer; migration flags
/// STOP_COPY | P2P | PRE_COPY (`mtty_init_dev()`).
pub fn info_regions_and_irqs(s: &Subject) -> Outcome {
    let info = s.dev().info();
    ensure_eq!(info.flags, DeviceFlags::PCI, "no RESET flag");
    let rw = RegionFlags::READ | RegionFlags::WRITE;
    for index in 0..9u32 {
        let r = info
            .region(index)
            .ok_or_else(|| Failure::new(format!("region {index} missing")))?;
        let size = match index {
            0 | 1 => 8,
            7 => 0xff,
            _ => 0,
        };
        ensure_eq!((r.flags, r.size), (rw, size), "region {index}");
        ensure_eq!(r.offset, u64::from(index) << 40, "region {index}");
    }
    ensure_eq!(info.num_irqs(), 5);
    let intx = info.irq(INTX_IRQ_INDEX).map(|i| (i.count, i.flags));
    let want = IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED;
    ensure_eq!(intx, Some((1, want)));
    let msi = info.irq(MSI_IRQ_INDEX).map(|i| (i.count, i.flags));
    ensure_eq!(msi, Some((1, IrqFlags::EVENTFD | IrqFlags::NORESIZE)));
    for index in 2..5 {
        ensure!(info.irq(index).is_none(), "index {index} answers EINVAL");
    }
    let all = MigrationFeatures::STOP_COPY | MigrationFeatures::P2P | MigrationFeatures::PRE_COPY;
    ensure_eq!(s.device.migration_features()?, Some(all));
    // Config space: mtty's own 255 bytes (mtty_create_config_space()).
    ensure_eq!(s.config_read(0, 4)?, 0x3253_4348, "vendor and device");
    ensure_eq!(s.config_read(0x08, 4)?, 0x0700_0210, "class, revision");
    ensure_eq!(s.config_read(0x3d, 1)?, 1, "INTA");
    expect_errno(
        s.dev()
            .region_read(crate::info::CONFIG_REGION_INDEX, 0xfc, &mut [0u8; 4]),
        libc::EINVAL,
    )
}

/// The UART registers (`handle_bar_write()`, `handle_bar_read()`): SCR and LCR store, the
/// divisor latch with DLAB, IER's low nibble, the loopback FIFO with LSR's bits, IIR and MSR,
/// on both ports independently.
pub fn uart_registers_read_back(s: &Subject) -> Outcome {
    let d = s.device.as_ref();
    baseline(d)?;
    put(d, 0, SCR, 0x5a)?;
    put(d, 1, SCR, 0xa5)?;
    ensure_eq!((get(d, 0, SCR)?, get(d, 1, SCR)?), (0x5a, 0xa5));
    ensure_eq!(get(d, 0, LSR)?, 0x60, "THRE | TEMT with an empty FIFO");
    ensure_eq!(get(d, 0, IIR)?, 0xc1, "no interrupt pending");
    ensure_eq!(get(d, 0, MSR)?, 0xb3, "DCD | DSR | CTS | DDSR | DCTS");
    for b in *b"hi" {
        put(d, 0, TX, b)?;
    }
    ensure_eq!(get(d, 0, LSR)?, 0x01, "data ready");
    ensure_eq!(get(d, 1, LSR)?, 0x60, "port 1 has its own FIFO");
    ensure_eq!((get(d, 0, TX)?, get(d, 0, TX)?), (b'h', b'i'));
    ensure_eq!(get(d, 0, LSR)?, 0x60);
    put(d, 0, LCR, 0x83)?;
    put(d, 0, TX, 0x0c)?; // divisor low byte
    put(d, 0, IER, 0x01)?; // divisor high byte
    ensure_eq!((get(d, 0, TX)?, get(d, 0, IER)?), (0x0c, 0x01), "divisor");
    ensure_eq!(get(d, 0, LCR)?, 0x83);
    put(d, 0, LCR, 0x03)?;
    put(d, 0, IER, 0xf4)?;
    ensure_eq!(get(d, 0, IER)?, 0x04, "IER reads its low nibble");
    put(d, 0, IER, 0x00)?;
    put(d, 0, MCR, 0x0b)?;
    ensure_eq!(get(d, 0, MCR)?, 0x0b);
    baseline(d)
}

/// Config writes (`handle_pci_cfg_write()`): BAR0/BAR1 size with all ones (`bar_mask`,
/// keeping the I/O bit) and store an address otherwise, BAR2-4 read back 0, the interrupt
/// line stores one byte, COMMAND, STATUS, the pin and a write that does not start at a BAR
/// are dropped. Everything changed is put back: the mdev keeps its config between opens.
pub fn config_writes_follow_mtty(s: &Subject) -> Outcome {
    ensure_eq!(s.config_read(0x10, 4)?, 1, "BAR0 as mtty builds it");
    // (write at, bytes, value; then the dword read at, and what it holds).
    let steps: [(u64, usize, u32, u64, u32, &str); 8] = [
        (
            0x10,
            4,
            0xffff_ffff,
            0x10,
            0xffff_fff9,
            "BAR0 sizes to 8 bytes of I/O",
        ),
        (0x14, 4, 0xffff_ffff, 0x14, 0xffff_fff9, "BAR1"),
        (
            0x10,
            4,
            0xc000,
            0x10,
            0xc001,
            "an address, the I/O bit kept",
        ),
        (
            0x12,
            2,
            0x1234,
            0x10,
            0xc001,
            "a write inside BAR0 is dropped",
        ),
        (0x18, 4, 0xffff_ffff, 0x18, 0, "BAR2"),
        (0x04, 2, 0x0007, 0x04, 0x0200_0001, "COMMAND and STATUS"),
        (
            0x3c,
            4,
            0xffff_ff0b,
            0x3c,
            0x0000_010b,
            "line stored, pin kept",
        ),
        (0x3d, 1, 0x04, 0x3c, 0x0000_010b, "the pin is hardwired"),
    ];
    for (at, len, value, read_at, want, what) in steps {
        s.config_write(at, len, value)?;
        ensure_eq!(s.config_read(read_at, 4)?, want, "{what}");
    }
    s.config_write(0x3c, 1, 0)?;
    for bar in [0x10, 0x14] {
        s.config_write(bar, 4, 1)?;
        ensure_eq!(s.config_read(bar, 4)?, 1, "BAR at {bar:#x} put back");
    }
    Ok(())
}

fn set_irqs(s: &Subject, set: IrqSet) -> crate::Result<()> {
    s.dev().set_irqs(&set)
}

fn with_action(mut set: IrqSet, action: IrqAction) -> IrqSet {
    set.action = action;
    set
}

/// `mtty_set_irqs()`: validation against 5 vectors on every index, ENOTTY for MSI-X, ERR and
/// REQ, an eventfd of -1 that enables nothing, no unmask eventfd, INTx loopback that signals
/// only while unmasked and then masks, and the UART raising through the same path (IER.THRI
/// written with an empty FIFO).
pub fn set_irqs_follow_mtty(s: &Subject) -> Outcome {
    let d = s.device.as_ref();
    baseline(d)?;
    let t = Signals::new()?;
    let a = Signals::new()?;
    for index in 2..5 {
        expect_errno(
            set_irqs(s, IrqSet::eventfds(index, 0, vec![Some(t.raw())])),
            libc::ENOTTY,
        )?;
        expect_errno(set_irqs(s, IrqSet::disable(index)), libc::ENOTTY)?;
    }
    expect_errno(
        set_irqs(s, IrqSet::eventfds(INTX_IRQ_INDEX, 5, vec![Some(t.raw())])),
        libc::EINVAL,
    )?;
    let mut two = IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![Some(t.raw()), None]);
    two.count = 2;
    expect_errno(set_irqs(s, two), libc::EINVAL)?;
    // fd -1 disables and does not enable: MSI can be enabled next.
    set_irqs(s, IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![None]))?;
    set_irqs(s, IrqSet::eventfds(MSI_IRQ_INDEX, 0, vec![Some(a.raw())]))?;
    expect_errno(
        set_irqs(s, IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![Some(t.raw())])),
        libc::EINVAL,
    )?;
    set_irqs(s, IrqSet::fire(MSI_IRQ_INDEX, 0, 1))?;
    ensure_eq!(a.wait_for(1, s.deadline())?, 1, "MSI loopback");
    expect_errno(
        set_irqs(s, IrqSet::mask(MSI_IRQ_INDEX, 0, 1, true)),
        libc::ENOTTY,
    )?;
    set_irqs(s, IrqSet::disable(MSI_IRQ_INDEX))?;
    set_irqs(s, IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![Some(t.raw())]))?;
    let unmask_fd = with_action(
        IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![Some(a.raw())]),
        IrqAction::Unmask,
    );
    expect_errno(set_irqs(s, unmask_fd), libc::ENOTTY)?;
    set_irqs(s, IrqSet::fire(INTX_IRQ_INDEX, 0, 1))?;
    ensure_eq!(t.wait_for(1, s.deadline())?, 1);
    set_irqs(s, IrqSet::fire(INTX_IRQ_INDEX, 0, 1))?;
    s.wait_settle();
    ensure_eq!(t.count()?, 1, "automasked");
    set_irqs(s, IrqSet::mask(INTX_IRQ_INDEX, 0, 1, false))?;
    s.wait_settle();
    ensure_eq!(t.count()?, 1, "an unmask does not re-send");
    let mut fire = IrqSet::fire(INTX_IRQ_INDEX, 0, 1);
    fire.data = IrqData::Bool(vec![true]);
    set_irqs(s, fire)?;
    ensure_eq!(t.wait_for(2, s.deadline())?, 2);
    set_irqs(s, IrqSet::mask(INTX_IRQ_INDEX, 0, 1, false))?;
    put(d, 0, IER, 0x02)?;
    ensure_eq!(t.wait_for(3, s.deadline())?, 3, "THRI with an empty FIFO");
    put(d, 0, IER, 0x00)?;
    set_irqs(s, IrqSet::disable(INTX_IRQ_INDEX))?;
    s.wait_settle();
    ensure_eq!((t.count()?, a.count()?), (3, 1));
    Ok(())
}
