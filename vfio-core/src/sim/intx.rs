// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! INTx of the simulated device, as Linux v6.12.117 drivers/vfio/pci/vfio_pci_intrs.c handles
//! it for a device that supports masking with COMMAND's INTx Disable (`pci_2_3`, as QEMU's
//! devices do).
//!
//! The device drives a level: [`IrqState::set_intx_line`]. While INTx is enabled and not
//! masked, an asserted line interrupts the host (`vfio_intx_handler()`): INTx is masked at once
//! (automask), whether or not an eventfd is bound, and the eventfd (if any) is signalled. An
//! unmask while the line is still asserted does not unmask: the interrupt is signalled again
//! and INTx stays masked (`vfio_pci_intx_unmask_handler()` returning 1). The virtual INTx
//! Disable bit (`virq_disabled`) masks INTx when set, suppresses every INTx signal (device and
//! loopback) while set, and acts as an unmask when cleared; INTx is enabled masked while it
//! is set (`vfio_intx_enable()`).

use std::os::unix::io::RawFd;

use vfio_bindings::bindings::vfio as b;

use super::irq::{set_err, IrqState, Trigger};
use super::{RaiseOutcome, SimCounters};
use crate::error::{Error, Result};
use crate::info::INTX_IRQ_INDEX;
use crate::irq_set::{IrqData, IrqSet};

impl IrqState {
    fn intx_enabled(&self) -> bool {
        self.active == Some(INTX_IRQ_INDEX)
    }

    /// `vfio_pci_set_intx_trigger()`. The INTx handler is requested once, when INTx is
    /// enabled (even with no eventfd), and freed when it is disabled; changing the eventfd only
    /// swaps the trigger and costs no `request_irq`.
    pub(crate) fn intx_trigger(&mut self, set: &IrqSet, c: &mut SimCounters) -> Result<()> {
        let data = set.flags() & b::VFIO_IRQ_SET_DATA_TYPE_MASK;
        let is_this = self.intx_enabled();
        if is_this && set.count == 0 && data & b::VFIO_IRQ_SET_DATA_NONE != 0 {
            self.intx_disable(c);
            return Ok(());
        }
        if !(is_this || self.active.is_none()) || set.start != 0 || set.count != 1 {
            return Err(set_err(INTX_IRQ_INDEX, libc::EINVAL));
        }
        if data & b::VFIO_IRQ_SET_DATA_EVENTFD != 0 {
            let trigger = Self::intx_eventfd(set)?;
            self.intx = trigger;
            if !is_this {
                // vfio_intx_enable(): masked as the virtual INTx Disable says; the line, if
                // already asserted, interrupts as soon as the handler is requested.
                self.active = Some(INTX_IRQ_INDEX);
                self.intx_masked = self.virq_disabled;
                c.index_enables += 1;
                c.request_irq += 1;
                self.intx_fire(c);
            }
            return Ok(());
        }
        if !is_this {
            return Err(set_err(INTX_IRQ_INDEX, libc::EINVAL));
        }
        let fire = match &set.data {
            IrqData::Bool(v) => v.first().copied().unwrap_or(false),
            _ => true,
        };
        if fire {
            // A loopback ignores the mask but not the virtual INTx Disable.
            self.send_intx(c);
        }
        Ok(())
    }

    /// The eventfd of an INTx DATA_EVENTFD set (its single fd): bound when the fd is >= 0,
    /// none for a negative one.
    fn intx_eventfd(set: &IrqSet) -> Result<Option<Trigger>> {
        let fd = Self::fds(set).first().copied().unwrap_or(-1);
        if fd < 0 {
            return Ok(None);
        }
        let trigger = Trigger::bind(fd).map_err(|source| Error::SetIrqs {
            index: INTX_IRQ_INDEX,
            source,
        })?;
        Ok(Some(trigger))
    }

    /// `vfio_intx_disable()`.
    fn intx_disable(&mut self, c: &mut SimCounters) {
        self.intx = None;
        self.intx_unmask = None;
        self.intx_masked = false;
        self.active = None;
        c.free_irq += 1;
        c.index_disables += 1;
    }

    /// `vfio_send_intx_eventfd()`: signal the trigger unless INTx is disabled virtually.
    fn send_intx(&self, c: &mut SimCounters) -> Option<RawFd> {
        if !self.intx_enabled() || self.virq_disabled {
            return None;
        }
        let t = self.intx.as_ref()?;
        if t.signal() {
            c.signals += 1;
        }
        Some(t.raw)
    }

    /// `vfio_intx_handler()`: an asserted line on an unmasked INTx masks it and signals.
    fn intx_fire(&mut self, c: &mut SimCounters) -> RaiseOutcome {
        if !self.intx_enabled() || self.intx_masked || !self.intx_line {
            return RaiseOutcome::Latched;
        }
        self.intx_masked = true;
        match self.send_intx(c) {
            Some(fd) => RaiseOutcome::Signalled(fd),
            None => RaiseOutcome::Latched,
        }
    }

    /// The device drives its INTx line to `level`: asserting it interrupts an enabled,
    /// unmasked INTx (see the module docs).
    pub(crate) fn set_intx_line(&mut self, level: bool, c: &mut SimCounters) -> RaiseOutcome {
        self.service_intx_unmask(c);
        let rising = level && !self.intx_line;
        self.intx_line = level;
        if !level {
            return RaiseOutcome::Latched;
        }
        let out = self.intx_fire(c);
        if rising && out == RaiseOutcome::Latched {
            c.latched += 1;
        }
        out
    }

    /// `vfio_pci_set_intx_mask()` / `vfio_pci_set_intx_unmask()`: only while INTx is enabled,
    /// only `start 0, count 1`; MASK with DATA_EVENTFD is ENOTTY; UNMASK with DATA_EVENTFD
    /// installs (fd >= 0, EBUSY if one is installed) or removes (fd < 0) the unmask eventfd.
    pub(crate) fn intx_mask(
        &mut self,
        set: &IrqSet,
        mask: bool,
        c: &mut SimCounters,
    ) -> Result<()> {
        if !self.intx_enabled() || set.start != 0 || set.count != 1 {
            return Err(set_err(INTX_IRQ_INDEX, libc::EINVAL));
        }
        self.service_intx_unmask(c);
        let apply = match &set.data {
            IrqData::Bool(v) => v.first().copied().unwrap_or(false),
            IrqData::None => true,
            IrqData::Eventfds(_) if mask => return Err(set_err(INTX_IRQ_INDEX, libc::ENOTTY)),
            IrqData::Eventfds(_) => {
                let fd = Self::fds(set).first().copied().unwrap_or(-1);
                if fd < 0 {
                    self.intx_unmask = None;
                    return Ok(());
                }
                // vfio_virqfd_enable(): one unmask eventfd at a time.
                if self.intx_unmask.is_some() {
                    return Err(set_err(INTX_IRQ_INDEX, libc::EBUSY));
                }
                self.intx_unmask = Self::intx_eventfd(set)?;
                self.virqfd_generation += 1;
                self.virqfd_new = true;
                // Already signalled at install: the handler runs at once.
                self.service_intx_unmask(c);
                return Ok(());
            }
        };
        if apply {
            if mask {
                self.intx_mask_now();
            } else {
                self.intx_unmask_now(c);
            }
        }
        Ok(())
    }

    /// `__vfio_pci_intx_mask()`.
    fn intx_mask_now(&mut self) {
        if self.intx_enabled() {
            self.intx_masked = true;
        }
    }

    /// `__vfio_pci_intx_unmask()`: with the line still asserted INTx stays masked and the
    /// interrupt is signalled again; otherwise INTx is unmasked. Nothing while INTx is disabled
    /// virtually.
    fn intx_unmask_now(&mut self, c: &mut SimCounters) {
        if !self.intx_enabled() || !self.intx_masked || self.virq_disabled {
            return;
        }
        if self.intx_line {
            self.send_intx(c);
        } else {
            self.intx_masked = false;
        }
    }

    /// Act on a signal of the INTx unmask eventfd (the kernel's virqfd), if one arrived.
    pub(crate) fn service_intx_unmask(&mut self, c: &mut SimCounters) {
        if !self.intx_enabled() {
            return;
        }
        if self.intx_unmask.as_ref().is_some_and(Trigger::take) {
            self.intx_unmask_now(c);
        }
    }

    /// The virtual COMMAND INTx Disable bit now reads `disabled` (vfio_basic_config_write(),
    /// "Emulate INTx disable"): setting it masks INTx, clearing it unmasks.
    pub(crate) fn set_virq_disabled(&mut self, disabled: bool, c: &mut SimCounters) {
        self.service_intx_unmask(c);
        if disabled && !self.virq_disabled {
            self.virq_disabled = true;
            self.intx_mask_now();
        } else if !disabled && self.virq_disabled {
            self.virq_disabled = false;
            self.intx_unmask_now(c);
        }
    }
}
