// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! INTx through the VM's irqchip with a level-triggered irqfd: [`Router::attach_intx`].
//!
//! A device's INTx pin is an irqchip GSI (an IOAPIC pin on x86), not an MSI route, so it
//! needs no table entry of its own: the backend keeps the irqchip routes. What it needs is an
//! irqfd registered with a resample eventfd (`KVM_IRQFD` with `KVM_IRQFD_FLAG_RESAMPLE`): a
//! signal on the trigger asserts the line; when the guest acknowledges the interrupt (EOI),
//! KVM de-asserts it and signals the resample eventfd, which the VMM hands to VFIO as the INTx
//! unmask eventfd, so the device's INTx is unmasked without a trip through the VMM.
//!
//! KVM accepts a resample irqfd only with a full in-kernel irqchip (`KVM_CREATE_IRQCHIP`),
//! and only an irqchip GSI is ever acknowledged: an MSI GSI is refused here before KVM is
//! asked (KVM would accept it and never resample).

use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{Error, Result, Router};

/// An INTx line bound to an irqchip GSI with a resample irqfd. Detached when dropped (or with
/// [`IntxLine::detach`], which reports a failure).
#[derive(Debug)]
pub struct IntxLine {
    router: Arc<Router>,
    gsi: u32,
    trigger: Arc<EventFd>,
    resample: Arc<EventFd>,
    attached: bool,
}

impl IntxLine {
    /// The GSI (irqchip pin) the line asserts.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// Signalled by the device to assert the line (VFIO's INTx trigger eventfd).
    pub fn trigger(&self) -> &Arc<EventFd> {
        &self.trigger
    }

    /// Signalled by KVM when the guest acknowledges the interrupt (VFIO's INTx unmask
    /// eventfd).
    pub fn resample(&self) -> &Arc<EventFd> {
        &self.resample
    }

    /// Unbind the irqfd from the GSI.
    pub fn detach(mut self) -> Result<()> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> Result<()> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        self.router.detach_line_irqfd(&self.trigger, self.gsi)
    }
}

impl Drop for IntxLine {
    fn drop(&mut self) {
        let _ = self.detach_inner();
    }
}

impl Router {
    /// Bind a new trigger eventfd to irqchip GSI `gsi` with a new resample eventfd. Refused
    /// with [`Error::NotAnIrqchipGsi`] for a GSI the router gives to MSI routes; a backend
    /// refusal (EINVAL without a full in-kernel irqchip, EBUSY for an eventfd bound already) is
    /// [`Error::IrqfdAttach`]. Counted as an irqfd attach.
    pub fn attach_intx(self: &Arc<Self>, gsi: u32) -> Result<IntxLine> {
        let new_fd = || EventFd::new(EFD_NONBLOCK).map_err(|source| Error::EventFd { source });
        let trigger = Arc::new(new_fd()?);
        let resample = Arc::new(new_fd()?);
        self.attach_line_irqfd(&trigger, &resample, gsi)?;
        Ok(IntxLine {
            router: Arc::clone(self),
            gsi,
            trigger,
            resample,
            attached: true,
        })
    }
}
