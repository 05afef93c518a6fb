// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! INTx on the e1000e (Linux v6.12.117 drivers/vfio/pci/vfio_pci_intrs.c: vfio_intx_handler(),
//! vfio_pci_intx_unmask_handler(), vfio_send_intx_eventfd(); vfio_pci_config.c,
//! vfio_basic_config_write() "Emulate INTx disable"). The line is the e1000e's: asserted
//! while ICR & IMS has TXDW \[QEMU\]; writing ICR = ~0 deasserts it.

use super::{set_command, INTX_DISABLE, TXDW};
use super::{ICR, ICS, IMC, IMS};
use crate::conformance::{expect_errno, Outcome, Signals, Subject};
use crate::info::{IrqFlags, INTX_IRQ_INDEX};
use crate::irq_set::{IrqAction, IrqData, IrqSet};

fn enable(s: &Subject, t: Option<&Signals>) -> Outcome {
    s.dev().set_irqs(&IrqSet::eventfds(
        INTX_IRQ_INDEX,
        0,
        vec![t.map(Signals::raw)],
    ))?;
    Ok(())
}

fn unmask(s: &Subject) -> Outcome {
    s.dev()
        .set_irqs(&IrqSet::mask(INTX_IRQ_INDEX, 0, 1, false))?;
    Ok(())
}

fn mask(s: &Subject) -> Outcome {
    s.dev()
        .set_irqs(&IrqSet::mask(INTX_IRQ_INDEX, 0, 1, true))?;
    Ok(())
}

/// Only TXDW enabled, nothing pending: the line is low.
fn quiet(s: &Subject) -> Outcome {
    s.write32(0, IMC, !0)?;
    s.write32(0, ICR, !0)?;
    s.write32(0, IMS, TXDW)
}

/// The device asserts its line (TXDW).
fn assert_line(s: &Subject) -> Outcome {
    s.write32(0, ICS, TXDW)
}

/// The device deasserts its line.
fn deassert(s: &Subject) -> Outcome {
    s.write32(0, ICR, !0)
}

/// Wait for `t` to reach `n`, then that nothing more comes.
#[track_caller]
fn settles_at(s: &Subject, t: &Signals, n: u64) -> Outcome {
    let got = t.wait_for(n, s.deadline())?;
    ensure_eq!(got, n, "signals");
    s.wait_settle();
    let got = t.count()?;
    ensure_eq!(got, n, "signals after settling");
    Ok(())
}

/// INTx fires once and masks itself; while the line stays asserted every UNMASK signals again
/// and leaves it masked; once the device deasserts, UNMASK unmasks and the next assertion
/// fires.
pub fn intx_automask_and_level(s: &Subject) -> Outcome {
    let info = s
        .dev()
        .info()
        .irq(INTX_IRQ_INDEX)
        .ok_or_else(|| crate::conformance::Failure::new("no INTx"))?;
    ensure_eq!(info.count, 1);
    ensure_eq!(
        info.flags,
        IrqFlags::EVENTFD | IrqFlags::MASKABLE | IrqFlags::AUTOMASKED
    );
    let t = Signals::new()?;
    quiet(s)?;
    enable(s, Some(&t))?;
    assert_line(s)?;
    settles_at(s, &t, 1)?;
    assert_line(s)?;
    settles_at(s, &t, 1)?;
    unmask(s)?;
    settles_at(s, &t, 2)?;
    unmask(s)?;
    settles_at(s, &t, 3)?;
    deassert(s)?;
    unmask(s)?;
    settles_at(s, &t, 3)?;
    assert_line(s)?;
    settles_at(s, &t, 4)?;
    deassert(s)?;
    s.dev().set_irqs(&IrqSet::disable(INTX_IRQ_INDEX))?;
    Ok(())
}

/// A user MASK holds INTx masked across the device's interrupts and a deassertion, until
/// UNMASK; a loopback TRIGGER signals regardless of the mask; MASK with an eventfd is ENOTTY.
pub fn intx_mask_holds_and_loopback_ignores_it(s: &Subject) -> Outcome {
    let t = Signals::new()?;
    quiet(s)?;
    enable(s, Some(&t))?;
    mask(s)?;
    assert_line(s)?;
    settles_at(s, &t, 0)?;
    deassert(s)?;
    settles_at(s, &t, 0)?;
    unmask(s)?;
    settles_at(s, &t, 0)?;
    assert_line(s)?;
    settles_at(s, &t, 1)?;
    // Masked now (automask); a loopback still signals.
    s.dev().set_irqs(&IrqSet::fire(INTX_IRQ_INDEX, 0, 1))?;
    settles_at(s, &t, 2)?;
    mask(s)?;
    s.dev().set_irqs(&IrqSet::fire(INTX_IRQ_INDEX, 0, 1))?;
    settles_at(s, &t, 3)?;
    let x = Signals::new()?;
    let mask_fd = IrqSet {
        index: INTX_IRQ_INDEX,
        action: IrqAction::Mask,
        start: 0,
        count: 1,
        data: IrqData::Eventfds(vec![Some(x.raw())]),
        raw_flags: None,
    };
    expect_errno(s.dev().set_irqs(&mask_fd), libc::ENOTTY)?;
    deassert(s)?;
    s.dev().set_irqs(&IrqSet::disable(INTX_IRQ_INDEX))?;
    Ok(())
}

fn unmask_fd(s: &Subject, fd: Option<&Signals>) -> crate::Result<()> {
    s.dev().set_irqs(&IrqSet {
        index: INTX_IRQ_INDEX,
        action: IrqAction::Unmask,
        start: 0,
        count: 1,
        data: IrqData::Eventfds(vec![fd.map(Signals::raw)]),
        raw_flags: None,
    })
}

/// The unmask eventfd (the kernel's virqfd, what KVM's resample fd writes): one at a time
/// (EBUSY until fd -1 removes it); a write to it while the line is still asserted signals
/// again, after the deassertion it unmasks; an eventfd already signalled when installed acts
/// at once.
pub fn intx_unmask_eventfd(s: &Subject) -> Outcome {
    let t = Signals::new()?;
    let (u, u2, u3) = (Signals::new()?, Signals::new()?, Signals::new()?);
    quiet(s)?;
    enable(s, Some(&t))?;
    unmask_fd(s, Some(&u))?;
    expect_errno(unmask_fd(s, Some(&u2)), libc::EBUSY)?;
    unmask_fd(s, None)?;
    unmask_fd(s, Some(&u2))?;
    assert_line(s)?;
    settles_at(s, &t, 1)?;
    u2.write(1)?;
    settles_at(s, &t, 2)?;
    deassert(s)?;
    u2.write(1)?;
    settles_at(s, &t, 2)?;
    assert_line(s)?;
    settles_at(s, &t, 3)?;
    // Masked, line deasserted: an unmask eventfd signalled before it is installed unmasks at
    // installation.
    deassert(s)?;
    unmask_fd(s, None)?;
    u3.write(1)?;
    unmask_fd(s, Some(&u3))?;
    assert_line(s)?;
    settles_at(s, &t, 4)?;
    deassert(s)?;
    s.dev().set_irqs(&IrqSet::disable(INTX_IRQ_INDEX))?;
    Ok(())
}

/// COMMAND's INTx Disable after INTx is enabled: setting it masks INTx and silences every
/// INTx signal, device and loopback; clearing it acts as an UNMASK (signals again if the line
/// is still asserted) and overrides a user MASK.
pub fn intx_command_disable_after_enable(s: &Subject) -> Outcome {
    let t = Signals::new()?;
    quiet(s)?;
    enable(s, Some(&t))?;
    set_command(s, INTX_DISABLE, true)?;
    ensure!(
        s.config_read(0x04, 2)? as u16 & INTX_DISABLE != 0,
        "COMMAND reads INTx Disable"
    );
    s.dev().set_irqs(&IrqSet::fire(INTX_IRQ_INDEX, 0, 1))?;
    settles_at(s, &t, 0)?;
    assert_line(s)?;
    settles_at(s, &t, 0)?;
    // UNMASK does nothing while INTx is disabled.
    unmask(s)?;
    settles_at(s, &t, 0)?;
    set_command(s, INTX_DISABLE, false)?;
    settles_at(s, &t, 1)?;
    deassert(s)?;
    unmask(s)?;
    assert_line(s)?;
    settles_at(s, &t, 2)?;
    deassert(s)?;
    mask(s)?;
    set_command(s, INTX_DISABLE, true)?;
    set_command(s, INTX_DISABLE, false)?;
    assert_line(s)?;
    settles_at(s, &t, 3)?;
    deassert(s)?;
    s.dev().set_irqs(&IrqSet::disable(INTX_IRQ_INDEX))?;
    Ok(())
}

/// INTx enabled while COMMAND's INTx Disable is set starts masked; clearing the bit with the
/// line asserted signals.
pub fn intx_enabled_while_disabled(s: &Subject) -> Outcome {
    let t = Signals::new()?;
    quiet(s)?;
    set_command(s, INTX_DISABLE, true)?;
    enable(s, Some(&t))?;
    assert_line(s)?;
    settles_at(s, &t, 0)?;
    set_command(s, INTX_DISABLE, false)?;
    settles_at(s, &t, 1)?;
    deassert(s)?;
    s.dev().set_irqs(&IrqSet::disable(INTX_IRQ_INDEX))?;
    Ok(())
}

/// INTx enabled with no eventfd still handles the interrupt: it masks itself and nothing is
/// signalled; binding an eventfd later does not unmask, the next UNMASK (line still
/// asserted) signals it.
pub fn intx_without_eventfd(s: &Subject) -> Outcome {
    let t = Signals::new()?;
    quiet(s)?;
    enable(s, None)?;
    assert_line(s)?;
    s.wait_settle();
    enable(s, Some(&t))?;
    settles_at(s, &t, 0)?;
    deassert(s)?;
    assert_line(s)?;
    settles_at(s, &t, 0)?;
    unmask(s)?;
    settles_at(s, &t, 1)?;
    deassert(s)?;
    s.dev().set_irqs(&IrqSet::disable(INTX_IRQ_INDEX))?;
    Ok(())
}
