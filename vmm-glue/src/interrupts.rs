// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The interrupt lifecycle of a [`PassthroughDevice`]: INTx, MSI and MSI-X enabled and
//! disabled by guest config writes, MSI-X vectors masked and unmasked by table writes.
//!
//! * Enabling runs inside a `RouteBatch` (nested in the caller's when it holds one), then
//!   binds every vector with one `VFIO_DEVICE_SET_IRQS`.
//! * A vector gets a route the first time it is unmasked with a valid message; from then on
//!   masking keeps the route, its GSI and the VFIO trigger on the irqfd, and only takes the
//!   irqfd off the GSI (`Router::park_irqfd`: one irqfd detach, no `VFIO_DEVICE_SET_IRQS`,
//!   no routing commit); unmasking puts it back. A mask/unmask storm issues no device call.
//! * A masked vector that fires leaves the signal in its irqfd (or, never routed, in its
//!   userspace eventfd); [`PassthroughDevice::poll_userspace_interrupts`] and unmasking find
//!   it and set its PBA bit, and unmasking delivers it once and clears the bit. Nothing is
//!   switched on or off per interrupt.

use irq_routing::MsiMessage;
use pci_config::Command;
use vfio_core::info::INTX_IRQ_INDEX;
use vfio_core::{IrqAction, IrqData, IrqSet};
use vmm_sys_util::eventfd::EventFd;

use std::os::fd::AsRawFd;

use crate::irq_mode::{resolve_mode, IrqMode, ModeBits};
use crate::msix::VectorChange;
use crate::vectors::{router_failures, Delivery, Wanted};
use crate::PassthroughDevice;

impl PassthroughDevice {
    fn msg(&self, address: u64, data: u32) -> MsiMessage {
        let m = MsiMessage::new(address, data);
        match self.opts.devid {
            Some(d) => m.with_devid(d),
            None => m,
        }
    }

    /// What the guest wants for each MSI-X vector.
    pub(crate) fn msix_wanted(&self) -> Vec<Wanted> {
        let Some(t) = &self.msix else {
            return Vec::new();
        };
        // One entry per vector (`MsixTable::is_masked`: the function mask or its own bit).
        let function_masked = t.function_masked();
        t.entries()
            .iter()
            .map(|e| Wanted {
                masked: function_masked || e.masked(),
                msg: self.msg(e.address(), e.data),
            })
            .collect()
    }

    /// What the guest wants for each MSI vector (multiple-message enable decides how many
    /// are live; the others stay masked).
    pub(crate) fn msi_wanted(&self) -> Vec<Wanted> {
        let (Some(cap), Some(vs)) = (self.cfg.msi, &self.msi_vectors) else {
            return Vec::new();
        };
        let ctrl = self.cfg.read_u16(cap.offset + 2);
        let live = 1usize << ((ctrl >> 4) & 7).min(u16::from(cap.mmc));
        let mut addr = u64::from(self.cfg.read_u32(cap.offset + 4));
        if cap.is64 {
            addr |= u64::from(self.cfg.read_u32(cap.offset + 8)) << 32;
        }
        let data = u32::from(self.cfg.read_u16(cap.data_offset()));
        let mask = if cap.per_vector_mask {
            self.cfg.read_u32(cap.mask_offset())
        } else {
            0
        };
        (0..vs.len())
            .map(|i| {
                let base = data & !((live as u32).saturating_sub(1));
                Wanted {
                    masked: i >= live || mask & (1u32 << (i % 32)) != 0,
                    msg: self.msg(addr, base | i as u32),
                }
            })
            .collect()
    }

    /// Re-reads the three mode bits and moves to the mode they select (see
    /// [`crate::irq_mode`] for the refusal rule).
    pub(crate) fn update_irq_mode(&mut self) {
        let (msix_en, fmask) = self.cfg.msix_control().unwrap_or((false, false));
        let bits = ModeBits {
            msi_enable: self.cfg.msi_enabled(),
            msix_enable: msix_en,
            intx_disable: self.cfg.space.command().contains(Command::INTX_DISABLE),
            has_intx: self.cfg.has_intx,
        };
        let d = resolve_mode(self.mode, bits);
        if d.msi_refused {
            if let Some(cap) = self.cfg.msi {
                self.cfg.clear_bits(cap.offset + 2, 1);
            }
            self.stats.refused_enables += 1;
        }
        if d.msix_refused {
            if let Some(cap) = self.cfg.msix {
                self.cfg.clear_bits(cap.offset + 2, 0x8000);
            }
            self.stats.refused_enables += 1;
        }
        if let Some(t) = &mut self.msix {
            t.set_control(d.mode == IrqMode::Msix, fmask);
        }
        if d.mode != self.mode {
            self.leave_mode(self.mode);
            self.mode = d.mode;
        }
        self.apply_mode();
    }

    pub(crate) fn leave_mode(&mut self, old: IrqMode) {
        let strategy = self.opts.strategy;
        match old {
            IrqMode::None => {}
            IrqMode::Intx => {
                if self.intx_bound {
                    self.stats.set_irqs_calls += 1;
                    if self.dev.set_irqs(&IrqSet::disable(INTX_IRQ_INDEX)).is_err() {
                        self.stats.device_access_errors += 1;
                    }
                    self.intx_bound = false;
                }
            }
            IrqMode::Msi | IrqMode::Msix => {
                let vs = if old == IrqMode::Msi {
                    &mut self.msi_vectors
                } else {
                    &mut self.msix_vectors
                };
                if let Some(vs) = vs {
                    vs.release_routes(&self.router, strategy);
                    if vs.disable(&*self.dev, &mut self.stats).is_err() {
                        self.stats.device_access_errors += 1;
                    }
                }
            }
        }
    }

    /// Brings routes and triggers of the current mode in line with the guest's state: routes
    /// for unmasked vectors (one batch), then triggers (one SET_IRQS when several change, none
    /// when nothing does), then pending MSI-X vectors that are now unmasked are delivered.
    pub(crate) fn apply_mode(&mut self) {
        match self.mode {
            IrqMode::Msix => {
                let n = self.msix.as_ref().map_or(0, |t| t.vector_count());
                self.apply_msix(0..n);
            }
            IrqMode::Msi => self.apply_msi(),
            IrqMode::Intx => self.bind_intx(),
            IrqMode::None => {}
        }
    }

    fn bind_intx(&mut self) {
        if self.intx_bound {
            return;
        }
        let from_line = self.intx_line.as_ref().map(|l| crate::IntxEventFds {
            trigger: l.trigger().clone(),
            unmask: Some(l.resample().clone()),
        });
        let Some(fds) = from_line.or_else(|| self.opts.intx.clone()) else {
            return;
        };
        let trig = IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![Some(fds.trigger.as_raw_fd())]);
        self.stats.set_irqs_calls += 1;
        if self.dev.set_irqs(&trig).is_err() {
            self.stats.device_access_errors += 1;
            return;
        }
        self.intx_bound = true;
        if let Some(unmask) = fds.unmask {
            let set = IrqSet {
                index: INTX_IRQ_INDEX,
                action: IrqAction::Unmask,
                start: 0,
                count: 1,
                data: IrqData::Eventfds(vec![Some(unmask.as_raw_fd())]),
                raw_flags: None,
            };
            self.stats.set_irqs_calls += 1;
            if self.dev.set_irqs(&set).is_err() {
                self.stats.device_access_errors += 1;
            }
        }
    }

    fn apply_msi(&mut self) {
        let wanted = self.msi_wanted();
        let strategy = self.opts.strategy;
        if let Some(vs) = &mut self.msi_vectors {
            let n = u16::try_from(vs.len()).unwrap_or(u16::MAX);
            vs.ensure_routes(&self.router, strategy, &wanted, 0..n, &mut self.stats);
        }
        self.reconcile_vectors(false, &wanted);
        self.deliver_msi_pending(&wanted);
    }

    /// Routes `which` MSI-X vectors as needed, syncs every trigger, delivers pending vectors
    /// that are unmasked.
    pub(crate) fn apply_msix(&mut self, which: impl Iterator<Item = u16>) {
        let wanted = self.msix_wanted();
        let strategy = self.opts.strategy;
        let Some(vs) = &mut self.msix_vectors else {
            return;
        };
        vs.ensure_routes(&self.router, strategy, &wanted, which, &mut self.stats);
        self.reconcile_vectors(true, &wanted);
        self.deliver_unmasked_pending(&wanted);
    }

    /// Once a batch has ended (its own, or an outer one; committed or refused), or a route
    /// change outside any batch has returned: points the triggers of the MSI-X (`msix`) or
    /// MSI vectors where their routes' final states say (irqfd when staged or routed,
    /// userspace eventfd otherwise), then delivers the signals stranded on the irqfds of
    /// vectors whose route fell back while their trigger still pointed there: a masked vector
    /// gets its pending bit, an unmasked one a userspace message with the guest's message.
    pub(crate) fn reconcile_vectors(&mut self, msix: bool, wanted: &[Wanted]) {
        let vs = if msix {
            &mut self.msix_vectors
        } else {
            &mut self.msi_vectors
        };
        let Some(vs) = vs else {
            return;
        };
        // Failures first, then one snapshot for the pass: the triggers follow it, and only a
        // route it shows off the KVM path can have stranded signals.
        let failures = router_failures(&self.router);
        let snapshot = self.router.snapshot();
        let fired_parked = vs.sync_parking(&self.router, &snapshot, wanted, &mut self.stats);
        let off_path =
            match vs.sync_triggers(&*self.dev, &snapshot, failures, wanted, &mut self.stats) {
                Ok(off_path) => off_path,
                Err(_) => {
                    self.stats.device_access_errors += 1;
                    true
                }
            };
        // What masked vectors raised while parked is pending now that they are unmasked.
        for v in fired_parked {
            self.stats.pending_set += 1;
            if msix {
                if let Some(t) = &mut self.msix {
                    t.set_pending(v);
                }
            } else {
                self.set_msi_pending(v, true);
            }
        }
        let Some(vs) = (if msix {
            &mut self.msix_vectors
        } else {
            &mut self.msi_vectors
        }) else {
            return;
        };
        if !off_path {
            return;
        }
        // After the triggers moved: a signal from now on reaches the userspace eventfd.
        let stranded = vs.take_stranded(&snapshot);
        let live = if msix { usize::MAX } else { self.msi_live() };
        for v in stranded {
            let Some(w) = wanted.get(usize::from(v)).copied() else {
                continue;
            };
            if usize::from(v) >= live {
                continue;
            }
            self.stats.stranded_signals += 1;
            if !w.masked {
                self.deliver(msix, v, w);
            } else if msix {
                if let Some(t) = &mut self.msix {
                    t.set_pending(v);
                    self.stats.pending_set += 1;
                }
            } else {
                self.set_msi_pending(v, true);
                self.stats.pending_set += 1;
            }
        }
    }

    fn deliver_unmasked_pending(&mut self, wanted: &[Wanted]) {
        let (Some(t), Some(vs)) = (&mut self.msix, &self.msix_vectors) else {
            return;
        };
        if t.pba_words().iter().all(|w| *w == 0) {
            // Nothing pending (the common case of a resume): no vector to look at.
            return;
        }
        for (v, w) in (0u16..).zip(wanted.iter()) {
            if w.masked || !t.is_pending(v) {
                continue;
            }
            t.take_pending(v);
            self.stats.pending_delivered += 1;
            match vs.delivery(&self.router, v, w.msg) {
                Delivery::Kvm => {
                    if !vs.kick_irqfd(v) {
                        self.stats.device_access_errors += 1;
                    }
                }
                Delivery::Userspace(m) => self.userspace_msgs.push(m),
                Delivery::Unprogrammed => self.stats.unprogrammed_dropped += 1,
            }
        }
    }

    /// Acts on a table write the MSI-X model accepted.
    pub(crate) fn msix_table_written(&mut self, change: VectorChange) {
        if self.mode != IrqMode::Msix {
            return;
        }
        let masked_now = self
            .msix
            .as_ref()
            .is_none_or(|t| t.is_masked(change.vector));
        let mask_flip = change.was_masked != change.now_masked;
        if mask_flip || (change.message_changed && !masked_now) {
            self.apply_msix(std::iter::once(change.vector));
        }
    }

    /// Services the userspace eventfds of the MSI-X vectors, and of the MSI vectors in MSI
    /// mode (call it when one is readable): a masked vector that fired gets its PBA (or MSI
    /// Pending Bits) bit set; an unmasked one is delivered through its irqfd, or queued for
    /// [`PassthroughDevice::take_userspace_messages`] when it has no KVM route. Returns how
    /// many vectors had fired.
    pub fn poll_userspace_interrupts(&mut self) -> usize {
        self.poll_msix_user() + self.poll_msi_user()
    }

    fn poll_msix_user(&mut self) -> usize {
        let wanted = self.msix_wanted();
        let (Some(t), Some(vs)) = (&mut self.msix, &self.msix_vectors) else {
            return 0;
        };
        let mut fired = 0;
        for (v, w) in (0u16..).zip(wanted.iter()) {
            if vs.drain_user(v) + vs.drain_parked(v) == 0 {
                continue;
            }
            fired += 1;
            if w.masked || self.mode != IrqMode::Msix {
                t.set_pending(v);
                self.stats.pending_set += 1;
                continue;
            }
            match vs.delivery(&self.router, v, w.msg) {
                Delivery::Kvm => {
                    vs.kick_irqfd(v);
                }
                Delivery::Userspace(m) => self.userspace_msgs.push(m),
                Delivery::Unprogrammed => self.stats.unprogrammed_dropped += 1,
            }
        }
        fired
    }

    /// MSI messages the VMM must inject itself (vectors with no KVM route), oldest first.
    pub fn take_userspace_messages(&mut self) -> Vec<MsiMessage> {
        std::mem::take(&mut self.userspace_msgs)
    }

    /// The irqfd of MSI-X vector `vector`: the eventfd bound to its GSI once it is routed.
    pub fn msix_irqfd(&self, vector: u16) -> Option<&EventFd> {
        self.msix_vectors.as_ref()?.irqfd(vector)
    }

    /// The userspace eventfd of MSI-X vector `vector` (its trigger while masked).
    pub fn msix_user_eventfd(&self, vector: u16) -> Option<&EventFd> {
        self.msix_vectors.as_ref()?.user_eventfd(vector)
    }

    /// The route of MSI-X vector `vector`, if it holds one.
    pub fn msix_route(&self, vector: u16) -> Option<irq_routing::RouteId> {
        self.msix_vectors.as_ref()?.route(vector)
    }

    /// The fd MSI-X vector `vector`'s VFIO trigger points at, as the trigger cache knows it.
    pub fn msix_trigger(&self, vector: u16) -> Option<std::os::fd::RawFd> {
        self.msix_vectors.as_ref()?.trigger(vector)
    }

    /// The guest-visible MSI-X table and PBA.
    pub fn msix_table(&self) -> Option<&crate::MsixTable> {
        self.msix.as_ref()
    }
}
