// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! MSI-X vector helpers on top of [`VfioDevice::set_irqs`]: enable every vector with one
//! `VFIO_DEVICE_SET_IRQS`, and a per-vector trigger cache so pointing a vector at the eventfd it
//! already signals costs no ioctl.
//!
//! Every TRIGGER that names a vector is, in the kernel, a `free_irq` plus a `request_irq` for it,
//! even when the fd does not change; guests that mask and unmask on every interrupt would pay
//! that on each toggle. [`MsixTriggers`] calls through only when a vector's fd changes.

use std::os::unix::io::RawFd;

use crate::device::VfioDevice;
use crate::error::{errno, Error, Result};
use crate::info::{IrqInfo, MSIX_IRQ_INDEX};
use crate::irq_set::IrqSet;

/// What [`MsixTriggers::set_trigger`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerUpdate {
    /// The vector already had this fd: no ioctl.
    Unchanged,
    /// One SET_IRQS: the vector was set (or the index enabled with it).
    Set,
    /// Two SET_IRQS under NORESIZE: the index was disabled and enabled again with every vector
    /// up to this one (every bound vector is torn down and set up again).
    Regrown,
}

/// A vector's trigger as the cache knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// After a failed call the kernel state is not known; the next set always calls through.
    Unknown,
    /// The vector signals this fd (`None`: no trigger).
    Known(Option<RawFd>),
}

/// The MSI-X index of one device, as this process last configured it.
///
/// Fds are compared by number: after closing an eventfd that a vector still uses, call
/// [`MsixTriggers::forget`] for that vector, or a new eventfd that reuses the number would be
/// taken for the old one.
#[derive(Debug, Clone)]
pub struct MsixTriggers {
    table_size: u32,
    noresize: bool,
    enabled: bool,
    /// Vectors the kernel allocated at enable (the NORESIZE ceiling).
    allocated: u32,
    slots: Vec<Slot>,
}

impl MsixTriggers {
    /// A cache for an MSI-X index described by `info`, starting disabled.
    pub fn new(info: &IrqInfo) -> Self {
        MsixTriggers {
            table_size: info.count,
            noresize: info.is_noresize(),
            enabled: false,
            allocated: 0,
            slots: vec![Slot::Known(None); info.count as usize],
        }
    }

    /// A cache for `device`'s MSI-X index, or `None` when it has no MSI-X vectors.
    pub fn for_device(device: &dyn VfioDevice) -> Option<Self> {
        device
            .info()
            .irq(MSIX_IRQ_INDEX)
            .filter(|i| i.count > 0)
            .map(Self::new)
    }

    /// Whether the index is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Vectors allocated at the last enable: the highest vector NORESIZE can set without
    /// re-enabling, plus one.
    pub fn allocated(&self) -> u32 {
        self.allocated
    }

    /// The fd vector `vector` signals, as far as this cache knows.
    pub fn trigger(&self, vector: u32) -> Option<RawFd> {
        match self.slots.get(vector as usize) {
            Some(Slot::Known(fd)) => *fd,
            _ => None,
        }
    }

    /// Forget what vector `vector` signals, so the next [`MsixTriggers::set_trigger`] calls
    /// through whatever fd it names.
    pub fn forget(&mut self, vector: u32) {
        if let Some(slot) = self.slots.get_mut(vector as usize) {
            *slot = Slot::Unknown;
        }
    }

    fn range_error(&self) -> Error {
        Error::SetIrqs {
            index: MSIX_IRQ_INDEX,
            source: errno(libc::EINVAL),
        }
    }

    fn poison(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = Slot::Unknown);
    }

    fn issue(&mut self, device: &dyn VfioDevice, set: &IrqSet) -> Result<()> {
        device.set_irqs(set).inspect_err(|_| self.poison())
    }

    /// Enable MSI-X with `fds[i]` on vector `i`, in one SET_IRQS, in either mode. If the index
    /// is already enabled with fewer vectors under NORESIZE it is disabled first (one more
    /// call). With no fds, enables vector 0 with no trigger (`fd -1`), which allocates MSI-X on
    /// the device without binding anything.
    pub fn enable_all(&mut self, device: &dyn VfioDevice, fds: &[Option<RawFd>]) -> Result<()> {
        if fds.len() > self.table_size as usize {
            return Err(self.range_error());
        }
        let fds: Vec<Option<RawFd>> = if fds.is_empty() {
            vec![None]
        } else {
            fds.to_vec()
        };
        let count = u32::try_from(fds.len()).map_err(|_| self.range_error())?;
        if self.enabled && self.noresize && count > self.allocated {
            self.disable(device)?;
        }
        self.issue(device, &IrqSet::eventfds(MSIX_IRQ_INDEX, 0, fds.clone()))?;
        if !self.enabled {
            self.allocated = count;
        }
        self.enabled = true;
        for (slot, fd) in self.slots.iter_mut().zip(fds) {
            *slot = Slot::Known(fd);
        }
        Ok(())
    }

    /// Point vector `vector` at `fd` (`None`: no trigger), calling the device only if that
    /// changes something. Enables the index if needed. Under NORESIZE, a vector past the
    /// allocated count regrows the index: disable, then one enable with every cached vector.
    pub fn set_trigger(
        &mut self,
        device: &dyn VfioDevice,
        vector: u32,
        fd: Option<RawFd>,
    ) -> Result<TriggerUpdate> {
        let current = *self
            .slots
            .get(vector as usize)
            .ok_or_else(|| self.range_error())?;
        let fits = !self.noresize || vector < self.allocated;
        if self.enabled && fits && current == Slot::Known(fd) {
            return Ok(TriggerUpdate::Unchanged);
        }
        if !self.enabled && fd.is_none() && current == Slot::Known(None) {
            return Ok(TriggerUpdate::Unchanged);
        }
        if self.enabled && fits {
            self.issue(device, &IrqSet::eventfds(MSIX_IRQ_INDEX, vector, vec![fd]))?;
            if let Some(slot) = self.slots.get_mut(vector as usize) {
                *slot = Slot::Known(fd);
            }
            return Ok(TriggerUpdate::Set);
        }
        if !self.noresize {
            // Dynamic MSI-X, index disabled: enabling with this one vector is one call.
            self.issue(device, &IrqSet::eventfds(MSIX_IRQ_INDEX, vector, vec![fd]))?;
            self.enabled = true;
            self.allocated = vector + 1;
            if let Some(slot) = self.slots.get_mut(vector as usize) {
                *slot = Slot::Known(fd);
            }
            return Ok(TriggerUpdate::Set);
        }
        // NORESIZE: (re-)enable with every vector up to this one, keeping the fds the lower
        // vectors had before the disable.
        let mut fds: Vec<Option<RawFd>> = self
            .slots
            .iter()
            .take(vector as usize + 1)
            .map(|s| match s {
                Slot::Known(fd) => *fd,
                Slot::Unknown => None,
            })
            .collect();
        if let Some(last) = fds.last_mut() {
            *last = fd;
        }
        let regrow = self.enabled;
        if regrow {
            self.disable(device)?;
        }
        self.enable_all(device, &fds)?;
        Ok(if regrow {
            TriggerUpdate::Regrown
        } else {
            TriggerUpdate::Set
        })
    }

    /// Disable the index (`DATA_NONE | ACTION_TRIGGER`, count 0): every vector is released.
    pub fn disable(&mut self, device: &dyn VfioDevice) -> Result<()> {
        self.issue(device, &IrqSet::disable(MSIX_IRQ_INDEX))?;
        self.enabled = false;
        self.allocated = 0;
        self.slots.iter_mut().for_each(|s| *s = Slot::Known(None));
        Ok(())
    }
}
