// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Save and restore through `migration-state`, in QEMU's order: config space, COMMAND, BARs
//! (sub-page ones included), then interrupts.
//!
//! Restoring is idempotent and incremental: restoring a state onto a device that already
//! holds it changes no route and issues no SET_IRQS. That is what makes [`StagedRestore`]
//! work: [`StagedRestore::stage`] restores a precopied state before the switchover (routes,
//! irqfds and triggers all set up), and [`StagedRestore::switchover`] restores the final
//! state, which costs only what changed in between: no routing commit at all in the downtime
//! (the changed vectors deliver through userspace until [`DeferredCommit::commit`] commits
//! their routes after the VM resumed), or one with [`StagedRestore::commit`].
//!
//! [`restore_all`] restores every device of a VM; with [`Strategy::VmWide`] or
//! [`Strategy::Staged`] it holds one outer `RouteBatch`, so the whole VM commits its routing
//! table once.

use migration_state::{
    BarKind as StateBarKind, BarState, ConfigState, DeviceState, InterruptMode, MsiState,
    MsixEntry as StateEntry, MsixState,
};
use pci_config::BarKind;
use vfio_core::info::CONFIG_REGION_INDEX;

use crate::irq_mode::IrqMode;
use crate::msix::MsixEntry;
use crate::{Error, PassthroughDevice, Result, Strategy};

/// What a VM-wide restore cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Devices restored.
    pub devices: usize,
    /// Routing table commits (`KVM_SET_GSI_ROUTING`) issued by the router during the restore.
    pub gsi_routing_commits: u64,
    /// SET_IRQS calls the devices asked for during the restore, per device, in order.
    pub set_irqs_per_device: Vec<u64>,
}

impl RestoreReport {
    /// SET_IRQS calls of all devices.
    pub fn set_irqs_calls(&self) -> u64 {
        self.set_irqs_per_device.iter().sum()
    }
}

/// The router's commit count and each device's SET_IRQS count when a restore step starts, to
/// report what the step cost once it ends.
struct CostStart {
    commits: u64,
    set_irqs: Vec<u64>,
}

impl CostStart {
    fn now<'d>(
        router: &irq_routing::Router,
        devs: impl Iterator<Item = &'d PassthroughDevice>,
    ) -> Self {
        CostStart {
            commits: router.stats().commits,
            set_irqs: devs.map(|d| d.stats.set_irqs_calls).collect(),
        }
    }

    /// What happened since [`CostStart::now`] to `devs` (the same devices, in order).
    fn report(
        self,
        router: &irq_routing::Router,
        devs: &[&mut PassthroughDevice],
    ) -> RestoreReport {
        RestoreReport {
            devices: devs.len(),
            gsi_routing_commits: router.stats().commits.saturating_sub(self.commits),
            set_irqs_per_device: devs
                .iter()
                .zip(self.set_irqs)
                .map(|(d, s)| d.stats.set_irqs_calls.saturating_sub(s))
                .collect(),
        }
    }
}

fn mode_to_state(m: IrqMode) -> InterruptMode {
    match m {
        IrqMode::None => InterruptMode::None,
        IrqMode::Intx => InterruptMode::Intx,
        IrqMode::Msi => InterruptMode::Msi,
        IrqMode::Msix => InterruptMode::Msix,
    }
}

impl PassthroughDevice {
    /// Captures the device's VMM-side state (config, BARs, MSI with its pending bits, MSI-X
    /// with its PBA, the guest notice). The device-internal blob (`device_data`) is left
    /// empty and the device is not touched: [`PassthroughDevice::save_stopped`] stops the
    /// device and adds the blob.
    pub fn save(&self) -> DeviceState {
        let s = &self.cfg.space;
        // The guest's view: the emulated bits, and the device's bits as the VMM last read or
        // wrote them (COMMAND among them, which `restore` writes back to the device).
        let config = ConfigState {
            bytes: s.guest_view(),
            emulated_mask: s.emulated_mask().to_vec(),
            write_mask: s.write_mask().to_vec(),
            write1c_mask: s.w1c_mask().to_vec(),
        };
        let bars = self
            .cfg
            .bars
            .iter()
            .filter_map(|b| {
                let bar = s.bar(b.index)?;
                Some(BarState {
                    index: b.index,
                    kind: match bar.kind {
                        BarKind::Io => StateBarKind::Io,
                        BarKind::Mem64 => StateBarKind::Memory64,
                        BarKind::Mem32 | BarKind::Rom => StateBarKind::Memory32,
                    },
                    prefetchable: bar.prefetchable,
                    address: bar.address,
                    size: bar.size,
                })
            })
            .collect();
        let msi = self.cfg.msi.map(|cap| {
            let ctrl = self.cfg.read_u16(cap.offset + 2);
            let mut address = u64::from(self.cfg.read_u32(cap.offset + 4));
            if cap.is64 {
                address |= u64::from(self.cfg.read_u32(cap.offset + 8)) << 32;
            }
            MsiState {
                enabled: ctrl & 1 != 0,
                address_64bit: cap.is64,
                per_vector_masking: cap.per_vector_mask,
                multiple_message_capable: cap.mmc,
                multiple_message_enable: (((ctrl >> 4) & 7) as u8).min(cap.mmc),
                address,
                data: self.cfg.read_u16(cap.data_offset()),
                mask_bits: if cap.per_vector_mask {
                    self.cfg.read_u32(cap.mask_offset())
                } else {
                    0
                },
                pending_bits: self.msi_pending_bits(),
            }
        });
        let msix = self.msix.as_ref().map(|t| MsixState {
            enabled: t.enabled(),
            function_mask: t.function_masked(),
            entries: t
                .entries()
                .iter()
                .map(|e| StateEntry {
                    address: e.address(),
                    data: e.data,
                    masked: e.masked(),
                })
                .collect(),
            pba: t.pba_words().to_vec(),
        });
        DeviceState {
            config,
            bars,
            interrupt_mode: mode_to_state(self.mode),
            msi,
            msix,
            device_data: Vec::new(),
            notice: self.notice.as_ref().map(|n| n.save(&self.cfg.space)),
        }
    }

    /// Checks that `state` is valid and fits this device, without changing anything: what
    /// [`PassthroughDevice::restore`] checks before it starts, and what
    /// [`restore_all`] checks for every device before it touches any.
    ///
    /// # Errors
    /// [`Error::InvalidState`] or [`Error::StateMismatch`].
    pub fn check_state_fits(&self, state: &DeviceState) -> Result<()> {
        state.validate().map_err(Error::InvalidState)?;
        if state.config.bytes.len() != self.cfg.space.size() {
            return Err(Error::StateMismatch("config space size"));
        }
        // Which bytes are emulated follows from the device and the options (hidden
        // capabilities, emulated MSI/MSI-X, the notice): a stream may not change it.
        if state.config.emulated_mask != self.cfg.space.emulated_mask() {
            return Err(Error::StateMismatch("emulated config mask"));
        }
        if state.msi.is_some() != self.cfg.msi.is_some() {
            return Err(Error::StateMismatch("MSI capability"));
        }
        let our_notice = self.notice.as_ref().map(|n| n.offset());
        let their_notice = state.notice.map(|n| u16::from(n.capability_offset));
        if our_notice != their_notice {
            return Err(Error::StateMismatch("guest migration notice"));
        }
        for b in &state.bars {
            let ours = self.cfg.bars.iter().find(|h| h.index == b.index);
            if ours.is_none_or(|h| h.size != b.size) {
                return Err(Error::StateMismatch("BAR layout"));
            }
        }
        let ours = self.msix.as_ref().map(|t| usize::from(t.vector_count()));
        let theirs = state.msix.as_ref().map(|m| m.entries.len());
        if theirs.is_some() && ours != theirs {
            return Err(Error::StateMismatch("MSI-X vector count"));
        }
        Ok(())
    }

    /// Restores `state` onto this device, in QEMU's order: emulated config, COMMAND (written
    /// to the device), BAR placements, then interrupts (routes in one batch per the device's
    /// strategy, nested in the caller's batch if it holds one; one SET_IRQS).
    ///
    /// A state that fails validation or does not fit this device is refused before anything
    /// changes. Restoring the state the device already holds changes nothing.
    pub fn restore(&mut self, state: &DeviceState) -> Result<()> {
        self.check_state_fits(state)?;
        self.restore_fitting(state)
    }

    /// [`PassthroughDevice::restore`] of a state [`PassthroughDevice::check_state_fits`]
    /// accepted already.
    fn restore_fitting(&mut self, state: &DeviceState) -> Result<()> {
        // 1. Config space (the emulated bytes as they were, to put back if the device refuses
        //    COMMAND).
        let prior = (
            self.cfg.space.emulated().to_vec(),
            self.cfg.space.emulated_mask().to_vec(),
        );
        self.cfg
            .space
            .restore_emulated(&state.config.bytes, &state.config.emulated_mask)
            .map_err(Error::ConfigModel)?;
        // 2. COMMAND, to the device: the guest's value from the state (its decode and bus
        //    master bits are the device's, not emulated), then the model's copy of it.
        let command = match state.config.bytes.get(0x04..0x06) {
            Some(&[lo, hi]) => [lo, hi],
            _ => self.cfg.read_u16(0x04).to_le_bytes(),
        };
        if let Err(e) = self.dev.region_write(CONFIG_REGION_INDEX, 0x04, &command) {
            // Same sizes as the ones just replaced: this cannot fail.
            let _ = self.cfg.space.restore_emulated(&prior.0, &prior.1);
            return Err(Error::ConfigWrite(e));
        }
        if self.cfg.space.set_physical(0x04, &command).is_err() {
            self.stats.device_access_errors += 1;
        }
        // 3. BARs (the registers came with the config bytes).
        let indexes: Vec<u8> = self.cfg.bars.iter().map(|b| b.index).collect();
        for i in indexes {
            self.bar_moved(i);
        }
        // 4. Interrupts.
        if let (Some(t), Some(m)) = (&mut self.msix, &state.msix) {
            for (v, e) in (0u16..).zip(m.entries.iter()) {
                t.set_entry(
                    v,
                    MsixEntry {
                        addr_lo: e.address as u32,
                        addr_hi: (e.address >> 32) as u32,
                        data: e.data,
                        vector_control: u32::from(e.masked),
                    },
                );
            }
            t.set_pba_words(&m.pba);
        }
        if let Some(n) = &state.notice {
            self.notice = Some(migration_state::GuestNotice::restore(n));
        }
        self.update_irq_mode();
        Ok(())
    }

    /// After an outer batch this device took part in has ended, committed **or refused**:
    /// brings every vector's VFIO trigger in line with its route's final state. A routed
    /// vector triggers its irqfd; a vector whose route fell back to userspace (a refused
    /// commit undoes the batch's routes, a failed irqfd attach leaves one route behind)
    /// triggers its userspace eventfd, so [`PassthroughDevice::poll_userspace_interrupts`]
    /// keeps delivering it. Signals the device sent to the irqfd of such a vector before its
    /// trigger moved are delivered too (a userspace message, or the pending bit if masked).
    ///
    /// Costs one SET_IRQS when several triggers move, one per-vector call when one does, and
    /// nothing when every route was committed. [`restore_all`] and [`StagedRestore`] call it
    /// for every device they restored; a VMM that holds its own outer
    /// [`RouteBatch`](irq_routing::RouteBatch) across [`PassthroughDevice::restore`] calls
    /// it for every device once the batch ends, whether `commit` succeeded or not.
    pub fn sync_after_commit(&mut self) {
        // Nothing to do when no commit since the last trigger sync can have moved a trigger
        // (every route it saw staged was committed as it was): the common case of a restore.
        let failures = crate::vectors::router_failures(&self.router);
        let vectors = match self.mode {
            IrqMode::Msix => self.msix_vectors.as_ref(),
            IrqMode::Msi => self.msi_vectors.as_ref(),
            IrqMode::Intx | IrqMode::None => None,
        };
        if vectors.is_some_and(|v| v.settled(failures)) {
            return;
        }
        match self.mode {
            IrqMode::Msix => {
                let wanted = self.msix_wanted();
                self.reconcile_vectors(true, &wanted);
            }
            IrqMode::Msi => {
                let wanted = self.msi_wanted();
                self.reconcile_vectors(false, &wanted);
            }
            IrqMode::Intx | IrqMode::None => {}
        }
    }
}

/// Restores every device of a VM from its state, with `strategy` deciding the batches:
/// `PerVector` (a commit per route), `PerDevice` (a batch per device), `VmWide` and `Staged`
/// (one outer batch: one commit for the whole VM). All devices must share `router`.
///
/// All or nothing for bad input: every state is checked against its device
/// ([`PassthroughDevice::check_state_fits`]), and every device against `router`, before any
/// device is touched. One bad state fails the whole restore with nothing changed: no route,
/// no commit, no SET_IRQS, no device's strategy or config.
///
/// Whatever happens once devices are touched, the batch is ended and every device restored
/// so far is reconciled ([`PassthroughDevice::sync_after_commit`]) before this returns: no
/// vector is left triggering an irqfd that no GSI injects. If the caller holds its own
/// `RouteBatch` around this call, this call's batch only defers (its routes stay staged, and
/// each device has already pointed its triggers at them): reconciling is then the caller's
/// job once its batch ends, as for a VMM that calls [`PassthroughDevice::restore`] itself.
///
/// # Errors
/// [`Error::InvalidState`], [`Error::StateMismatch`] or [`Error::RouterMismatch`] (nothing
/// changed); [`Error::ConfigWrite`] when a device fails the COMMAND write (devices before it
/// are restored and their routes committed, that device and the later ones are left with
/// their config and strategy as they were); or [`Error::Route`] when the outer commit is
/// refused (every device is restored VMM-side, the routes of the batch are undone by the
/// router and their vectors deliver through userspace until a retry routes them).
pub fn restore_all<'a>(
    router: &irq_routing::Router,
    devices: impl IntoIterator<Item = (&'a mut PassthroughDevice, &'a DeviceState)>,
    strategy: Strategy,
) -> Result<RestoreReport> {
    let pairs: Vec<(&'a mut PassthroughDevice, &'a DeviceState)> = devices.into_iter().collect();
    for (dev, state) in &pairs {
        if !std::ptr::eq(std::sync::Arc::as_ptr(&dev.router), router) {
            return Err(Error::RouterMismatch { id: dev.id() });
        }
        dev.check_state_fits(state)?;
    }
    let cost = CostStart::now(router, pairs.iter().map(|(d, _)| &**d));
    let mut devs: Vec<&mut PassthroughDevice> = Vec::with_capacity(pairs.len());
    let mut failed = None;
    // Whether this call's batch was the outermost one; when a caller holds a batch around
    // it, nothing is committed here and the caller reconciles once its batch ends.
    let mut ended_outermost = true;
    {
        let outer = matches!(strategy, Strategy::VmWide | Strategy::Staged).then(|| router.batch());
        for (dev, state) in pairs {
            let previous = dev.strategy();
            dev.set_strategy(strategy);
            // Checked against this device above.
            if let Err(e) = dev.restore_fitting(state) {
                dev.set_strategy(previous);
                failed = Some(e);
                break;
            }
            devs.push(dev);
        }
        if let Some(b) = outer {
            match b.finish() {
                Ok(false) => ended_outermost = false,
                Ok(true) => {}
                Err(e) => {
                    failed.get_or_insert(Error::Route(e));
                }
            }
        }
    }
    // Success or not, the batch has ended: every restored device's triggers follow the final
    // state of its routes (a refused commit left them on userspace). A deferred batch changed
    // no route state since each device synced its triggers (its routes are still staged), so
    // the reconciliation is left to the caller that ends the outer batch.
    if ended_outermost {
        for d in devs.iter_mut() {
            d.sync_after_commit();
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(cost.report(router, &devs))
}

/// A restore split around the switchover: routes, irqfds and triggers are set up from a
/// precopied state while the source still runs; at the switchover only the difference between
/// the precopied and the final state is applied.
///
/// Two ways to end it:
///
/// * [`StagedRestore::switchover`] (the fast one) leaves no routing commit in the downtime.
///   Vectors whose message changed since the precopy get their route update staged in a
///   batch that stays open, and their VFIO trigger moved to their userspace eventfd (one
///   SET_IRQS per changed vector, through the trigger cache, as a mask does): until the
///   update is committed their irqfd would inject the previous message, so the VMM delivers
///   them with the current one ([`PassthroughDevice::poll_userspace_interrupts`],
///   [`PassthroughDevice::take_userspace_messages`]). Once the VM runs again,
///   [`DeferredCommit::commit`] issues the one `KVM_SET_GSI_ROUTING` and moves those triggers
///   back to their irqfds.
/// * [`StagedRestore::commit`] commits the difference inside the downtime (one
///   `KVM_SET_GSI_ROUTING` when any message changed, which walks every irqfd of the VM).
///
/// Either way no interrupt is ever injected with a stale message: a vector's trigger points at
/// its irqfd only while its GSI holds the vector's current message (or has no message yet,
/// for a route whose first commit is pending: its irqfd is not attached, a signal waits in it).
#[derive(Debug)]
pub struct StagedRestore {
    staged: RestoreReport,
}

impl StagedRestore {
    /// Before the switchover: restores every device from its precopied state in one VM-wide
    /// batch.
    ///
    /// # Errors
    /// As [`restore_all`]; on a refused commit the devices are reconciled with their routes'
    /// final states (userspace delivery) before this returns.
    pub fn stage<'a>(
        router: &irq_routing::Router,
        devices: impl IntoIterator<Item = (&'a mut PassthroughDevice, &'a DeviceState)>,
    ) -> Result<Self> {
        let staged = restore_all(router, devices, Strategy::Staged)?;
        Ok(StagedRestore { staged })
    }

    /// What staging cost (off the switchover's critical path).
    pub fn staged_report(&self) -> &RestoreReport {
        &self.staged
    }

    /// At the switchover: restores the final states; only what changed since the precopy
    /// costs a commit or a SET_IRQS (nothing changed: zero of each).
    ///
    /// # Errors
    /// As [`restore_all`]. When the commit of the difference is refused, the router undoes
    /// the routes it added or updated (those vectors lose their GSI), and every device's
    /// triggers are reconciled before this returns: those vectors deliver through userspace,
    /// the untouched ones stay on their KVM routes. A retry with [`restore_all`] and the same
    /// final states routes them again.
    pub fn commit<'a>(
        self,
        router: &irq_routing::Router,
        devices: impl IntoIterator<Item = (&'a mut PassthroughDevice, &'a DeviceState)>,
    ) -> Result<RestoreReport> {
        restore_all(router, devices, Strategy::Staged)
    }

    /// At the switchover, with no routing commit in the downtime: restores the final states
    /// inside a batch that the returned [`DeferredCommit`] keeps open. What did not change
    /// since the precopy costs nothing; a vector whose message changed costs one SET_IRQS (its
    /// trigger moves to its userspace eventfd) and its route update waits in the batch; a
    /// vector masked or unmasked in between moves its trigger as a guest write would.
    ///
    /// Resume the VM, then call [`DeferredCommit::commit`] with the same devices: the one
    /// `KVM_SET_GSI_ROUTING` and the trigger moves back to the irqfds happen there, off the
    /// downtime. Meanwhile the changed vectors deliver through the VMM with their current
    /// message, and any route change the guest makes joins the deferred commit (a vector it
    /// unmasks for the first time signals an irqfd that the commit attaches: delivered then).
    ///
    /// A VMM that restores its devices one by one (to interleave other work) can call this
    /// with no device and restore each device itself with [`restore_all`] or
    /// [`PassthroughDevice::restore`] while the [`DeferredCommit`] is alive: the costs are the
    /// same.
    ///
    /// # Errors
    /// As [`restore_all`]. On any error the batch is ended (committed) here and every device
    /// passed in is reconciled with its routes' final state before this returns, as
    /// [`StagedRestore::commit`] does.
    pub fn switchover<'r, 'a>(
        self,
        router: &'r irq_routing::Router,
        devices: impl IntoIterator<Item = (&'a mut PassthroughDevice, &'a DeviceState)>,
    ) -> Result<DeferredCommit<'r>> {
        let mut pairs: Vec<(&'a mut PassthroughDevice, &'a DeviceState)> =
            devices.into_iter().collect();
        let batch = router.batch();
        let restored = restore_all(
            router,
            pairs.iter_mut().map(|(d, s)| (&mut **d, *s)),
            Strategy::Staged,
        );
        match restored {
            Ok(switchover) => Ok(DeferredCommit {
                router,
                batch,
                switchover,
            }),
            Err(e) => {
                let _ = batch.finish();
                for (d, _) in pairs {
                    if std::ptr::eq(std::sync::Arc::as_ptr(&d.router), router) {
                        d.sync_after_commit();
                    }
                }
                Err(e)
            }
        }
    }
}

/// The routing commit of a [`StagedRestore::switchover`], left for after the VM resumes.
///
/// It holds the router's batch open: route changes stay staged until
/// [`DeferredCommit::commit`], which commits them (one `KVM_SET_GSI_ROUTING`) and moves the
/// triggers of the vectors that were delivered through userspace back to their irqfds.
/// Dropping it commits too, so no staged route is left behind; the triggers then stay on the
/// userspace eventfds (still delivering the current message, through the irqfd from then on)
/// until the next [`PassthroughDevice::sync_after_commit`] or interrupt-setup change of each
/// device moves them.
#[derive(Debug)]
#[must_use = "dropping a DeferredCommit commits at once and leaves the changed vectors on userspace"]
pub struct DeferredCommit<'r> {
    router: &'r irq_routing::Router,
    batch: irq_routing::RouteBatch<'r>,
    switchover: RestoreReport,
}

impl DeferredCommit<'_> {
    /// What the switchover cost (no routing commit; SET_IRQS only for the vectors whose
    /// trigger moved).
    pub fn switchover_report(&self) -> &RestoreReport {
        &self.switchover
    }

    /// After the VM resumed: commits the staged route changes (one `KVM_SET_GSI_ROUTING`, none
    /// when nothing changed) and reconciles every device's triggers with the committed routes
    /// (one SET_IRQS per device whose triggers move, none when none does). Pass the devices the
    /// switchover restored.
    ///
    /// If the caller holds another batch of the router around this call, the commit happens
    /// when that batch ends, and reconciling is then the caller's job
    /// ([`PassthroughDevice::sync_after_commit`]).
    ///
    /// # Errors
    /// [`Error::Route`] when the commit is refused: the router undoes the staged updates (those
    /// vectors lose their GSI), every device is reconciled (they stay on userspace delivery)
    /// and [`restore_all`] with the final states retries. [`Error::RouterMismatch`] for a
    /// device of another router (it is left alone; the others are reconciled).
    pub fn commit<'a>(
        self,
        devices: impl IntoIterator<Item = &'a mut PassthroughDevice>,
    ) -> Result<RestoreReport> {
        let DeferredCommit { router, batch, .. } = self;
        let mut devs: Vec<&'a mut PassthroughDevice> = devices.into_iter().collect();
        let cost = CostStart::now(router, devs.iter().map(|d| &**d));
        let ended = batch.finish();
        let mut failed = None;
        if !matches!(ended, Ok(false)) {
            for d in devs.iter_mut() {
                if std::ptr::eq(std::sync::Arc::as_ptr(&d.router), router) {
                    d.sync_after_commit();
                } else {
                    failed.get_or_insert(Error::RouterMismatch { id: d.id() });
                }
            }
        }
        if let Err(e) = ended {
            return Err(Error::Route(e));
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(cost.report(router, &devs))
    }
}

#[cfg(test)]
#[path = "migration_tests.rs"]
mod tests;
