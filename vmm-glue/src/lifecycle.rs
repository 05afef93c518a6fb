// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The end of a device's life and its resets: hot-unplug ([`PassthroughDevice::unplug`], and
//! the same teardown when a device is dropped), the kernel's request to have the device back
//! (the REQ eventfd), `VFIO_DEVICE_RESET` and a guest's function-level reset.
//!
//! Teardown gives back everything the device took from the VM: its interrupts are disabled
//! (one `SET_IRQS` per enabled index), its routes removed (their GSIs freed and irqfds detached,
//! with one routing commit), its INTx line detached, its BARs taken out of the guest page map
//! and their memory slots removed, its host reservations released, and its VFIO device closed
//! (so its group leaves the VM's container once no other device holds it).

use bar_mmap::{MapChange, RegionId};
use vfio_core::info::{CONFIG_REGION_INDEX, REQ_IRQ_INDEX};
use vfio_core::{IrqSet, VfioDevice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use std::os::fd::AsRawFd;

use crate::irq_mode::IrqMode;
use crate::msix::MsixTable;
use crate::{Error, PassthroughDevice, Result};

/// What [`PassthroughDevice::unplug`] gave back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnplugReport {
    /// GSIs freed (the router's GSIs in use before, minus after).
    pub gsis_released: u32,
    /// irqfd detaches issued (MSI/MSI-X routes and the INTx line).
    pub irqfds_detached: u64,
    /// Routing table commits issued.
    pub routing_commits: u64,
    /// `VFIO_DEVICE_SET_IRQS` calls issued (disables).
    pub set_irqs_calls: u64,
    /// Memory slots removed.
    pub slots_removed: u64,
    /// Host address ranges released (sub-page BAR reservations).
    pub reservations_released: usize,
    /// Changes to other devices' guest mappings that this device's BARs leaving caused (a
    /// BAR that shared a page with one of them may be mappable now). Already applied when the
    /// VM has guest mappings; the VMM applies them otherwise.
    pub map_changes: Vec<MapChange>,
}

/// A new eventfd bound to the device's REQ index.
fn bind_request(dev: &dyn VfioDevice) -> Result<EventFd> {
    let has_req = dev.info().irq(REQ_IRQ_INDEX).is_some_and(|i| i.count > 0);
    if !has_req {
        return Err(Error::NoRequestIndex);
    }
    let fd = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    dev.set_irqs(&IrqSet::eventfds(
        REQ_IRQ_INDEX,
        0,
        vec![Some(fd.as_raw_fd())],
    ))
    .map_err(Error::SetIrqs)?;
    Ok(fd)
}

impl PassthroughDevice {
    /// The eventfd the kernel signals when it asks for the device back (vfio-pci's
    /// `vfio_pci_core_request`: the device is being unbound, or its PF's VFs removed with
    /// `sriov_numvfs`); bound to the device's REQ index on the first call (one `SET_IRQS`).
    /// The kernel waits until the device is closed: answer with [`PassthroughDevice::unplug`].
    /// [`Error::NoRequestIndex`] for a device without a REQ index.
    pub fn request_eventfd(&mut self) -> Result<&EventFd> {
        if self.request.is_none() {
            self.stats.set_irqs_calls += 1;
            self.request = Some(bind_request(&*self.dev)?);
        }
        self.request.as_ref().ok_or(Error::NoRequestIndex)
    }

    /// The device's INTx line, when it took one from the router (`DeviceOptions::intx_gsi`).
    pub fn intx_line(&self) -> Option<&irq_routing::IntxLine> {
        self.intx_line.as_ref()
    }

    /// Hot-unplug: disable the device's interrupts and give back everything it holds (see the
    /// module docs), then close it. Dropping a device does the same, without the report.
    pub fn unplug(mut self) -> UnplugReport {
        self.teardown()
    }

    pub(crate) fn teardown(&mut self) -> UnplugReport {
        if self.torn_down {
            return UnplugReport::default();
        }
        self.torn_down = true;
        let before = (self.router.stats(), self.router.gsis_in_use());
        let set_irqs_before = self.stats.set_irqs_calls;
        self.release_interrupts();
        if let Some(fd) = self.request.take() {
            self.stats.set_irqs_calls += 1;
            if self.dev.set_irqs(&IrqSet::disable(REQ_IRQ_INDEX)).is_err() {
                self.stats.device_access_errors += 1;
            }
            drop(fd);
        }
        let (map_changes, slots_removed) = self.release_bars();
        let reservations_released = self.bars.release_host_plan();
        let after = (self.router.stats(), self.router.gsis_in_use());
        UnplugReport {
            gsis_released: before.1.saturating_sub(after.1),
            irqfds_detached: after.0.irqfd_detaches - before.0.irqfd_detaches,
            routing_commits: after.0.commits - before.0.commits,
            set_irqs_calls: self.stats.set_irqs_calls - set_irqs_before,
            slots_removed,
            reservations_released,
            map_changes,
        }
    }

    /// Leave the interrupt mode (disabling its index), remove every route in one commit, and
    /// detach the INTx line.
    fn release_interrupts(&mut self) {
        let router = self.router.clone();
        let batch = router.batch();
        let mode = self.mode;
        self.leave_mode(mode);
        self.mode = IrqMode::None;
        let strategy = self.opts.strategy;
        for vs in [&mut self.msi_vectors, &mut self.msix_vectors]
            .into_iter()
            .flatten()
        {
            vs.release_routes(&self.router, strategy);
        }
        if batch.finish().is_err() {
            self.stats.route_failures += 1;
        }
        if let Some(line) = self.intx_line.take() {
            if line.detach().is_err() {
                self.stats.device_access_errors += 1;
            }
        }
    }

    /// Take the device's BARs out of the guest page map and their slots out of the VM.
    fn release_bars(&mut self) -> (Vec<MapChange>, u64) {
        let changes = match self.bars.guest_pages.lock() {
            Ok(mut map) => map.remove_device(self.opts.id),
            Err(_) => {
                self.stats.device_access_errors += 1;
                Vec::new()
            }
        };
        let mut slots_removed = 0;
        if let Some(maps) = &self.vm_mappings {
            let Ok(mut maps) = maps.lock() else {
                self.stats.device_access_errors += 1;
                return (changes, 0);
            };
            let before = maps.stats().removed;
            for bar in 0..6u8 {
                let region = RegionId {
                    device: self.opts.id,
                    bar,
                };
                if maps.unregister(region).is_err() {
                    self.stats.device_access_errors += 1;
                }
            }
            let others: Vec<MapChange> = changes
                .iter()
                .filter(|c| match c {
                    MapChange::Map(m) | MapChange::Unmap(m) => m.region.device != self.opts.id,
                })
                .copied()
                .collect();
            if maps.apply(&others).is_err() {
                self.stats.device_access_errors += 1;
            }
            slots_removed = maps.stats().removed - before;
        }
        let others = changes
            .into_iter()
            .filter(|c| match c {
                MapChange::Map(m) | MapChange::Unmap(m) => m.region.device != self.opts.id,
            })
            .collect();
        (others, slots_removed)
    }

    /// `VFIO_DEVICE_RESET`, and the emulated state back to what it was when the device was
    /// built: interrupts disabled and their routes removed, config space (BARs unassigned,
    /// MSI and MSI-X disabled), MSI-X table and PBA cleared, INTx live again if the device has
    /// a pin. On a reset failure nothing emulated changes but the interrupts, which are
    /// already disabled.
    pub fn reset(&mut self) -> Result<()> {
        self.release_interrupts_for_reset();
        // Decode and bus master off first, so the device does no DMA across the reset.
        self.clear_command();
        self.dev.reset().map_err(Error::Reset)?;
        self.reset_emulated();
        Ok(())
    }

    /// COMMAND as after power-on: I/O, memory and bus master off, INTx enabled. The kernel
    /// opens a device with decode on (as the host left it), and its resets
    /// (`pci_try_reset_function`, for VFIO_DEVICE_RESET and an FLR alike) save and restore the
    /// function's config space around the reset, so without this the device would come back
    /// decoding at the addresses it had.
    pub(crate) fn clear_command(&mut self) {
        use crate::config::{POWER_ON_CLEARED_COMMAND_HIGH, POWER_ON_CLEARED_COMMAND_LOW};
        let at = pci_config::regs::COMMAND;
        let off = at as u64;
        let mut cmd = [0u8; 2];
        let result = self
            .dev
            .region_read(CONFIG_REGION_INDEX, off, &mut cmd)
            .and_then(|()| {
                cmd[0] &= !POWER_ON_CLEARED_COMMAND_LOW;
                cmd[1] &= !POWER_ON_CLEARED_COMMAND_HIGH;
                self.dev.region_write(CONFIG_REGION_INDEX, off, &cmd)
            });
        if result.is_err() || self.cfg.space.set_physical(at, &cmd).is_err() {
            self.stats.device_access_errors += 1;
        }
    }

    fn release_interrupts_for_reset(&mut self) {
        let line = self.intx_line.take();
        self.release_interrupts();
        self.intx_line = line;
    }

    /// The device was reset underneath (a guest function-level reset, which the kernel
    /// carried out): interrupts and emulated state go back to their initial values.
    pub(crate) fn reset_emulated(&mut self) {
        if self.mode != IrqMode::None {
            self.release_interrupts_for_reset();
        }
        self.clear_command();
        self.cfg.space = self.cfg.initial.clone();
        if let Some(t) = &self.msix {
            self.msix = Some(MsixTable::new(t.vector_count()));
        }
        for index in self.cfg.bars.iter().map(|b| b.index).collect::<Vec<_>>() {
            self.bar_moved(index);
        }
        self.stats.resets += 1;
        self.update_irq_mode();
    }
}

impl Drop for PassthroughDevice {
    fn drop(&mut self) {
        self.teardown();
    }
}
