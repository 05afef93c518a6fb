// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The interrupt side of the simulated device, following Linux's `vfio_pci_intrs.c`: one
//! active interrupt type at a time, a trigger per vector, `free_irq`/`request_irq` for every
//! vector a TRIGGER names, NORESIZE or dynamic MSI-X allocation, and pending bits latched
//! when the device raises a vector nothing is bound to.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::OnceLock;

use vfio_bindings::bindings::vfio as b;
use vmm_sys_util::eventfd::EventFd;

use crate::error::{errno, Error, Result};
use crate::info::{ERR_IRQ_INDEX, INTX_IRQ_INDEX, MSIX_IRQ_INDEX, MSI_IRQ_INDEX, REQ_IRQ_INDEX};
use crate::ioctl::{dup_fd, eventfd_take};
use crate::irq_set::{IrqData, IrqSet};

use super::SimCounters;

/// A bound trigger: the fd number the caller passed, and the device's own reference to it
/// (the kernel holds an eventfd context, so the caller closing its fd does not unbind).
#[derive(Debug)]
pub(crate) struct Trigger {
    pub(crate) raw: RawFd,
    pub(crate) file: File,
}

/// The `(st_dev, st_ino)` every eventfd reports. Linux backs every eventfd with one shared
/// anonymous inode, so one probe eventfd, made once per process, tells them all; `None` if the
/// probe could not be made (then each trigger is checked through `/proc/self/fd`).
fn eventfd_identity() -> Option<(u64, u64)> {
    static IDENTITY: OnceLock<Option<(u64, u64)>> = OnceLock::new();
    *IDENTITY.get_or_init(|| {
        let probe = EventFd::new(libc::EFD_CLOEXEC).ok()?;
        let file = File::from(dup_fd(probe.as_raw_fd()).ok()?);
        let meta = file.metadata().ok()?;
        Some((meta.dev(), meta.ino()))
    })
}

impl Trigger {
    /// `eventfd_ctx_fdget`: takes the device's own reference (EBADF for an fd that is not
    /// open), then checks the file is an eventfd (EINVAL otherwise) with one `fstat`, compared
    /// with the shared eventfd inode (see the module docs of `sim` for what this lets through).
    pub(crate) fn bind(raw: RawFd) -> std::io::Result<Trigger> {
        let file = File::from(dup_fd(raw)?);
        let is_eventfd = match eventfd_identity() {
            Some(id) => {
                let meta = file.metadata()?;
                (meta.dev(), meta.ino()) == id
            }
            None => {
                let link = std::fs::read_link(format!("/proc/self/fd/{raw}"))?;
                link.to_str() == Some("anon_inode:[eventfd]")
            }
        };
        if !is_eventfd {
            return Err(errno(libc::EINVAL));
        }
        Ok(Trigger { raw, file })
    }

    pub(crate) fn signal(&self) -> bool {
        (&self.file).write_all(&1u64.to_ne_bytes()).is_ok()
    }

    /// Whether the eventfd was signalled since last asked (its counter is consumed).
    pub(crate) fn take(&self) -> bool {
        eventfd_take(&self.file).is_ok_and(|n| n > 0)
    }
}

/// Per-device interrupt state.
#[derive(Debug)]
pub(crate) struct IrqState {
    /// The enabled type among INTx, MSI, MSI-X.
    pub(crate) active: Option<u32>,
    pub(crate) dynamic_msix: bool,
    /// Per vector of the active MSI/MSI-X type: allocated by the PCI core.
    pub(crate) allocated: Vec<bool>,
    /// Per vector of the active MSI/MSI-X type: the requested irq's trigger.
    pub(crate) ctx: Vec<Option<Trigger>>,
    /// MSI-X pending bits (the PBA), latched by raises with no trigger bound.
    pub(crate) pending: Vec<bool>,
    pub(crate) intx: Option<Trigger>,
    /// The INTx unmask eventfd (`ACTION_UNMASK | DATA_EVENTFD`, the kernel's virqfd): a
    /// signal on it unmasks INTx. Serviced whenever the device or the user touches INTx.
    pub(crate) intx_unmask: Option<Trigger>,
    /// Counts unmask eventfd installs; a watcher thread serves the install it was started for.
    pub(crate) virqfd_generation: u64,
    /// An unmask eventfd was installed and its watcher has not been started yet.
    pub(crate) virqfd_new: bool,
    /// `ctx->masked` of INTx.
    pub(crate) intx_masked: bool,
    /// The level the device drives on its INTx pin.
    pub(crate) intx_line: bool,
    /// `vdev->virq_disabled`: the virtual COMMAND INTx Disable bit, as last acted on.
    pub(crate) virq_disabled: bool,
    pub(crate) err: Option<Trigger>,
    pub(crate) req: Option<Trigger>,
    /// Injected failure: `request_irq` of this MSI/MSI-X vector fails with this errno.
    pub(crate) fail_request: Option<(u32, i32)>,
    /// Injected failure: the PCI core allocates only this many MSI/MSI-X vectors at the next
    /// enable that asks for more, and SET_IRQS returns that count (vfio_msi_enable()).
    pub(crate) fail_alloc: Option<u32>,
}

pub(crate) fn set_err(index: u32, e: i32) -> Error {
    Error::SetIrqs {
        index,
        source: errno(e),
    }
}

impl IrqState {
    pub(crate) fn new(msix_vectors: u32, dynamic_msix: bool) -> Self {
        IrqState {
            active: None,
            dynamic_msix,
            allocated: Vec::new(),
            ctx: Vec::new(),
            pending: vec![false; msix_vectors as usize],
            intx: None,
            intx_unmask: None,
            virqfd_generation: 0,
            virqfd_new: false,
            intx_masked: false,
            intx_line: false,
            virq_disabled: false,
            err: None,
            req: None,
            fail_request: None,
            fail_alloc: None,
        }
    }

    /// Carry out a request that passed [`IrqSet::validate`] (vfio_pci_set_irqs_ioctl()).
    pub(crate) fn apply(
        &mut self,
        set: &IrqSet,
        max_vectors: u32,
        c: &mut SimCounters,
    ) -> Result<()> {
        let flags = set.flags();
        let action = flags & b::VFIO_IRQ_SET_ACTION_TYPE_MASK;
        match (set.index, action) {
            (MSI_IRQ_INDEX | MSIX_IRQ_INDEX, b::VFIO_IRQ_SET_ACTION_TRIGGER) => {
                self.msi_trigger(set, max_vectors, c)
            }
            (INTX_IRQ_INDEX, b::VFIO_IRQ_SET_ACTION_TRIGGER) => self.intx_trigger(set, c),
            (INTX_IRQ_INDEX, b::VFIO_IRQ_SET_ACTION_MASK | b::VFIO_IRQ_SET_ACTION_UNMASK) => {
                self.intx_mask(set, action == b::VFIO_IRQ_SET_ACTION_MASK, c)
            }
            (ERR_IRQ_INDEX | REQ_IRQ_INDEX, b::VFIO_IRQ_SET_ACTION_TRIGGER) => {
                self.ctx_trigger_single(set, c)
            }
            // MSI/MSI-X masking is not exported by vfio-pci; two action bits match nothing.
            _ => Err(set_err(set.index, libc::ENOTTY)),
        }
    }

    pub(crate) fn fds(set: &IrqSet) -> Vec<RawFd> {
        match &set.data {
            IrqData::Eventfds(v) => v
                .iter()
                .take(set.count as usize)
                .map(|f| f.unwrap_or(-1))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn msi_trigger(&mut self, set: &IrqSet, max_vectors: u32, c: &mut SimCounters) -> Result<()> {
        let flags = set.flags();
        let data = flags & b::VFIO_IRQ_SET_DATA_TYPE_MASK;
        let is_this = self.active == Some(set.index);
        if is_this && set.count == 0 && data == b::VFIO_IRQ_SET_DATA_NONE {
            self.msi_disable(c);
            return Ok(());
        }
        if !(is_this || self.active.is_none()) {
            return Err(set_err(set.index, libc::EINVAL));
        }
        if data == b::VFIO_IRQ_SET_DATA_EVENTFD {
            let fds = Self::fds(set);
            if is_this {
                return self.set_block(set.index, set.start, &fds, c);
            }
            let nvec = set.start + set.count;
            if nvec == 0 {
                // pci_alloc_irq_vectors(pdev, 1, 0, ..): fewer than the minimum of one
                // (ERANGE in the lab, Linux 6.12.117).
                return Err(set_err(set.index, libc::ERANGE));
            }
            if let Some(available) = self.fail_alloc.filter(|&n| n < nvec) {
                // "return the number of supported vectors if we can't get all": the vectors
                // are freed and nothing is enabled.
                self.fail_alloc = None;
                return Err(Error::SetIrqsIncomplete {
                    index: set.index,
                    available,
                });
            }
            self.msi_enable(set.index, nvec, max_vectors, c);
            let ret = self.set_block(set.index, set.start, &fds, c);
            if ret.is_err() {
                self.msi_disable(c);
            }
            return ret;
        }
        if !is_this {
            return Err(set_err(set.index, libc::EINVAL));
        }
        for (i, v) in (set.start..set.start + set.count).enumerate() {
            let fire = match &set.data {
                IrqData::Bool(bools) => bools.get(i).copied().unwrap_or(false),
                _ => true,
            };
            if fire {
                if let Some(Some(t)) = self.ctx.get(v as usize) {
                    if t.signal() {
                        c.signals += 1;
                    }
                }
            }
        }
        Ok(())
    }

    fn msi_enable(&mut self, index: u32, nvec: u32, max_vectors: u32, c: &mut SimCounters) {
        self.active = Some(index);
        self.allocated = vec![false; max_vectors as usize];
        self.ctx = (0..max_vectors).map(|_| None).collect();
        for a in self.allocated.iter_mut().take(nvec as usize) {
            *a = true;
        }
        c.index_enables += 1;
        c.vectors_allocated += u64::from(nvec);
    }

    fn msi_disable(&mut self, c: &mut SimCounters) {
        for v in 0..self.ctx.len() {
            self.release_vector(v, c);
        }
        self.allocated.clear();
        self.ctx.clear();
        self.active = None;
        c.index_disables += 1;
    }

    fn release_vector(&mut self, v: usize, c: &mut SimCounters) {
        if let Some(slot) = self.ctx.get_mut(v) {
            if slot.take().is_some() {
                c.free_irq += 1;
            }
        }
    }

    /// `vfio_msi_set_block`: set each vector; on failure undo the ones already set.
    fn set_block(
        &mut self,
        index: u32,
        start: u32,
        fds: &[RawFd],
        c: &mut SimCounters,
    ) -> Result<()> {
        for (i, &fd) in fds.iter().enumerate() {
            let v = start + i as u32;
            if let Err(e) = self.set_vector_signal(index, v, fd, c) {
                for undo in start..v {
                    // De-assigning cannot fail.
                    let _ = self.set_vector_signal(index, undo, -1, c);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// `vfio_msi_set_vector_signal`: free what is bound, then bind `fd` unless it is -1.
    fn set_vector_signal(
        &mut self,
        index: u32,
        v: u32,
        fd: RawFd,
        c: &mut SimCounters,
    ) -> Result<()> {
        let vi = v as usize;
        self.release_vector(vi, c);
        if fd < 0 {
            return Ok(());
        }
        let allocated = self.allocated.get(vi).copied().unwrap_or(false);
        if !allocated {
            if index == MSIX_IRQ_INDEX && self.dynamic_msix {
                if let Some(a) = self.allocated.get_mut(vi) {
                    *a = true;
                    c.vectors_allocated += 1;
                }
            } else {
                return Err(set_err(index, libc::EINVAL));
            }
        }
        if let Some((fv, e)) = self.fail_request {
            if fv == v {
                return Err(set_err(index, e));
            }
        }
        let trigger = Trigger::bind(fd).map_err(|source| Error::SetIrqs { index, source })?;
        c.request_irq += 1;
        if let Some(n) = c.vector_bindings.get_mut(vi) {
            *n += 1;
        }
        if index == MSIX_IRQ_INDEX && self.pending.get(vi).copied().unwrap_or(false) {
            if trigger.signal() {
                c.signals += 1;
            }
            if let Some(p) = self.pending.get_mut(vi) {
                *p = false;
            }
        }
        if let Some(slot) = self.ctx.get_mut(vi) {
            *slot = Some(trigger);
        }
        Ok(())
    }

    fn ctx_trigger_single(&mut self, set: &IrqSet, c: &mut SimCounters) -> Result<()> {
        let data = set.flags() & b::VFIO_IRQ_SET_DATA_TYPE_MASK;
        let index = set.index;
        let slot = if index == ERR_IRQ_INDEX {
            &mut self.err
        } else {
            &mut self.req
        };
        // DATA_NONE on an index with no eventfd matches nothing in the kernel: EINVAL.
        if data == b::VFIO_IRQ_SET_DATA_NONE && slot.is_none() {
            return Err(set_err(index, libc::EINVAL));
        }
        if data == b::VFIO_IRQ_SET_DATA_NONE && set.count == 0 {
            *slot = None;
            return Ok(());
        }
        if set.count != 1 {
            return Err(set_err(index, libc::EINVAL));
        }
        match data {
            b::VFIO_IRQ_SET_DATA_EVENTFD => {
                let fd = Self::fds(set).first().copied().unwrap_or(-1);
                if fd == -1 {
                    *slot = None;
                } else if fd >= 0 {
                    *slot =
                        Some(Trigger::bind(fd).map_err(|source| Error::SetIrqs { index, source })?);
                } else {
                    // vfio_pci_set_ctx_trigger_single(): any other negative fd falls through
                    // to -EINVAL, the trigger untouched.
                    return Err(set_err(index, libc::EINVAL));
                }
                Ok(())
            }
            _ => {
                let fire = match &set.data {
                    IrqData::Bool(v) => v.first().copied().unwrap_or(false),
                    _ => true,
                };
                if let (true, Some(t)) = (fire, slot.as_ref()) {
                    if t.signal() {
                        c.signals += 1;
                    }
                }
                Ok(())
            }
        }
    }

    /// The device raises MSI-X vector `v`. With MSI-X disabled the device does not send
    /// MSI-X messages: the raise is dropped. A vector with no trigger is masked in the device's
    /// table (the host kernel masks a vector when its irq is freed, and a vector not yet
    /// allocated is masked from reset), so the device latches it in its PBA and sends it when
    /// a trigger is bound. Otherwise the message goes out, if `bus_master` lets the device
    /// write it (QEMU's devices drop MSI and MSI-X messages with COMMAND Bus Master off), and
    /// the kernel signals the trigger.
    pub(crate) fn raise_msix(
        &mut self,
        v: u32,
        bus_master: bool,
        c: &mut SimCounters,
    ) -> RaiseOutcome {
        let vi = v as usize;
        if vi >= self.pending.len() {
            return RaiseOutcome::NoSuchVector;
        }
        if self.active != Some(MSIX_IRQ_INDEX) {
            c.dropped += 1;
            return RaiseOutcome::Dropped;
        }
        if let Some(Some(t)) = self.ctx.get(vi) {
            if !bus_master {
                c.dropped += 1;
                return RaiseOutcome::Dropped;
            }
            if t.signal() {
                c.signals += 1;
            }
            return RaiseOutcome::Signalled(t.raw);
        }
        if let Some(p) = self.pending.get_mut(vi) {
            *p = true;
        }
        c.latched += 1;
        RaiseOutcome::Latched
    }

    /// The device sends its MSI message (vector 0). Delivered to the trigger when MSI is
    /// enabled with one bound and `bus_master` is on; lost otherwise (MSI without per-vector
    /// masking has nowhere to latch it).
    pub(crate) fn raise_msi(&mut self, bus_master: bool, c: &mut SimCounters) -> RaiseOutcome {
        if self.active != Some(MSI_IRQ_INDEX) || !bus_master {
            c.dropped += 1;
            return RaiseOutcome::Dropped;
        }
        match self.ctx.first() {
            Some(Some(t)) => {
                if t.signal() {
                    c.signals += 1;
                }
                RaiseOutcome::Signalled(t.raw)
            }
            _ => {
                c.dropped += 1;
                RaiseOutcome::Dropped
            }
        }
    }

    /// Signal the ERR (`err`) or REQ eventfd, if one is bound (the kernel's AER
    /// `err_detected` and device-request paths).
    pub(crate) fn signal_ctx(&mut self, err: bool, c: &mut SimCounters) -> RaiseOutcome {
        let slot = if err { &self.err } else { &self.req };
        match slot {
            Some(t) => {
                if t.signal() {
                    c.signals += 1;
                }
                RaiseOutcome::Signalled(t.raw)
            }
            None => RaiseOutcome::Dropped,
        }
    }

    /// The fd bound to MSI-X vector `v`, if the index is enabled and one is bound.
    pub(crate) fn msix_trigger(&self, v: u32) -> Option<RawFd> {
        if self.active != Some(MSIX_IRQ_INDEX) {
            return None;
        }
        self.ctx
            .get(v as usize)
            .and_then(|t| t.as_ref().map(|t| t.raw))
    }
}

/// What a device-side raise did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaiseOutcome {
    /// The trigger bound to the vector (this fd number) was signalled.
    Signalled(RawFd),
    /// Not delivered now, kept: an MSI-X vector with no trigger latched in the PBA, or an INTx
    /// line that stays asserted while INTx is masked, disabled or has no eventfd.
    Latched,
    /// Lost: the index is disabled, Bus Master is off, or MSI has no trigger.
    Dropped,
    /// The device has no such vector.
    NoSuchVector,
}
