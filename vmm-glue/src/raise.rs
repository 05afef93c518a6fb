// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Raising a guest vector from the VMM side, and MSI per-vector pending bits.
//!
//! * [`PassthroughDevice::raise_vector`] delivers one interrupt on a vector of the mode the
//!   guest enabled (MSI-X entry or MSI vector), exactly as if the device had fired it: through
//!   the vector's irqfd when it has a KVM route, as a userspace message otherwise, or into its
//!   pending bit when masked. The guest migration notice uses it.
//! * MSI with per-vector masking: a masked vector that fires (its trigger then points at the
//!   userspace eventfd) sets its bit in the emulated Pending Bits register; when the guest
//!   clears the mask bit the interrupt is delivered once and the pending bit cleared, as for
//!   MSI-X. The Pending Bits register is read-only to the guest.

use crate::irq_mode::IrqMode;
use crate::vectors::{Delivery, Wanted};
use crate::PassthroughDevice;

/// What [`PassthroughDevice::raise_vector`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raised {
    /// Delivered: its irqfd was signalled, or a message was queued for
    /// [`PassthroughDevice::take_userspace_messages`].
    Delivered,
    /// The vector is masked: its pending bit is set and unmasking delivers it once.
    Pending,
    /// Not raised: no MSI or MSI-X is enabled, or the vector is beyond what the guest enabled
    /// (the MSI-X table size, or MSI's Multiple Message Enable).
    NoSuchVector,
}

impl PassthroughDevice {
    /// Raises `vector` of the enabled MSI or MSI-X mode once. Guest-chosen vectors are
    /// validated here: out of range gives [`Raised::NoSuchVector`] and changes nothing.
    pub fn raise_vector(&mut self, vector: u16) -> Raised {
        match self.mode {
            IrqMode::Msix => {
                let wanted = self.msix_wanted();
                let Some(w) = wanted.get(usize::from(vector)).copied() else {
                    return Raised::NoSuchVector;
                };
                if w.masked {
                    if let Some(t) = &mut self.msix {
                        t.set_pending(vector);
                        self.stats.pending_set += 1;
                    }
                    return Raised::Pending;
                }
                self.deliver(true, vector, w);
                Raised::Delivered
            }
            IrqMode::Msi => {
                if usize::from(vector) >= self.msi_live() {
                    return Raised::NoSuchVector;
                }
                let wanted = self.msi_wanted();
                let Some(w) = wanted.get(usize::from(vector)).copied() else {
                    return Raised::NoSuchVector;
                };
                if w.masked {
                    self.set_msi_pending(vector, true);
                    self.stats.pending_set += 1;
                    return Raised::Pending;
                }
                self.deliver(false, vector, w);
                Raised::Delivered
            }
            IrqMode::Intx | IrqMode::None => Raised::NoSuchVector,
        }
    }

    /// The irqfd of MSI vector `vector` (bound to its GSI once it is routed).
    pub fn msi_irqfd(&self, vector: u16) -> Option<&vmm_sys_util::eventfd::EventFd> {
        self.msi_vectors.as_ref()?.irqfd(vector)
    }

    /// The userspace eventfd of MSI vector `vector` (its trigger while masked).
    pub fn msi_user_eventfd(&self, vector: u16) -> Option<&vmm_sys_util::eventfd::EventFd> {
        self.msi_vectors.as_ref()?.user_eventfd(vector)
    }

    /// Delivers an unmasked vector of the MSI-X (`msix`) or MSI set.
    pub(crate) fn deliver(&mut self, msix: bool, vector: u16, w: Wanted) {
        let vs = if msix {
            &self.msix_vectors
        } else {
            &self.msi_vectors
        };
        let Some(vs) = vs else {
            return;
        };
        match vs.delivery(&self.router, vector, w.msg) {
            Delivery::Kvm => {
                if !vs.kick_irqfd(vector) {
                    self.stats.device_access_errors += 1;
                }
            }
            Delivery::Userspace(m) => self.userspace_msgs.push(m),
            Delivery::Unprogrammed => self.stats.unprogrammed_dropped += 1,
        }
    }

    /// MSI vectors the guest enabled (Multiple Message Enable, capped by the capability).
    pub(crate) fn msi_live(&self) -> usize {
        self.cfg.msi.map_or(0, |cap| {
            let ctrl = self.cfg.read_u16(cap.offset + 2);
            1usize << ((ctrl >> 4) & 7).min(u16::from(cap.mmc))
        })
    }

    /// The emulated MSI Pending Bits, or 0 without per-vector masking.
    pub(crate) fn msi_pending_bits(&self) -> u32 {
        match self.cfg.msi {
            Some(cap) if cap.per_vector_mask => self.cfg.read_u32(cap.mask_offset() + 4),
            _ => 0,
        }
    }

    pub(crate) fn set_msi_pending(&mut self, vector: u16, pending: bool) {
        let Some(cap) = self.cfg.msi.filter(|c| c.per_vector_mask) else {
            return;
        };
        let bit = 1u32.checked_shl(u32::from(vector)).unwrap_or(0);
        let old = self.msi_pending_bits();
        let new = if pending { old | bit } else { old & !bit };
        if new != old {
            let off = usize::from(cap.mask_offset() + 4);
            if self
                .cfg
                .space
                .set_emulated_bytes(off, &new.to_le_bytes())
                .is_err()
            {
                self.stats.device_access_errors += 1;
            }
        }
    }

    /// MSI: services the userspace eventfds (masked vectors that fired set their pending bit,
    /// unmasked ones are delivered). Returns how many vectors had fired.
    pub(crate) fn poll_msi_user(&mut self) -> usize {
        if self.mode != IrqMode::Msi {
            return 0;
        }
        let wanted = self.msi_wanted();
        let live = self.msi_live();
        let mut fired = 0;
        for (v, w) in (0u16..).zip(wanted.iter().copied()) {
            let drained = self
                .msi_vectors
                .as_ref()
                .map_or(0, |vs| vs.drain_user(v) + vs.drain_parked(v));
            if drained == 0 || usize::from(v) >= live {
                continue;
            }
            fired += 1;
            if w.masked {
                self.set_msi_pending(v, true);
                self.stats.pending_set += 1;
            } else {
                self.deliver(false, v, w);
            }
        }
        fired
    }

    /// MSI: delivers once each pending vector the guest has unmasked, clearing its bit.
    pub(crate) fn deliver_msi_pending(&mut self, wanted: &[Wanted]) {
        let pending = self.msi_pending_bits();
        if pending == 0 {
            return;
        }
        for (v, w) in (0u16..).zip(wanted.iter().copied()) {
            let bit = 1u32.checked_shl(u32::from(v)).unwrap_or(0);
            if w.masked || pending & bit == 0 {
                continue;
            }
            self.set_msi_pending(v, false);
            self.stats.pending_delivered += 1;
            self.deliver(false, v, w);
        }
    }
}
