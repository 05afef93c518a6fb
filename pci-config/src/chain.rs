// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Editing the capability chains: hiding a capability and inserting a virtual one.
//!
//! Both edits only touch emulated bytes, so the physical device is never written: a hidden
//! capability is skipped by emulating the next pointer that led to it, an inserted one lives
//! entirely in emulated bytes and is appended at the end of its chain.
//!
//! The extended chain always starts at 0x100, so hiding the capability there replaces its
//! header with a Null capability (ID 0, version 0) whose next pointer skips it, as QEMU does;
//! when it was the only one, the header becomes zero and the chain is empty.

use crate::capability::{Capability, CapabilityKind};
use crate::ids;
use crate::regs::{self, Status};
use crate::{ConfigSpace, Error, Result};

fn walk(cs: &ConfigSpace, kind: CapabilityKind) -> Result<Vec<Capability>> {
    match kind {
        CapabilityKind::Standard => cs.walk_standard(),
        CapabilityKind::Extended => cs.walk_extended(),
    }
}

/// Whether this crate knows the exact length of a capability with this ID (see
/// [`Capability::len`]). Capabilities of unknown length are taken to extend up to the next
/// capability (or the end of the space) when looking for free room.
fn exact_len(kind: CapabilityKind, id: u16) -> bool {
    match kind {
        CapabilityKind::Standard => matches!(
            u8::try_from(id),
            Ok(ids::CAP_PM
                | ids::CAP_VPD
                | ids::CAP_SSVID
                | ids::CAP_MSI
                | ids::CAP_MSIX
                | ids::CAP_EXP
                | ids::CAP_VENDOR)
        ),
        CapabilityKind::Extended => matches!(id, ids::EXT_DSN | ids::EXT_VSEC),
    }
}

impl ConfigSpace {
    /// Removes `cap` from its chain by relinking the next pointer that leads to it.
    ///
    /// `cap` must be in the chain as walked now ([`Error::NotInChain`] otherwise); a chain that
    /// does not walk returns its walk error. Hiding the Null placeholder left at 0x100 by an
    /// earlier hide changes nothing.
    pub fn hide(&mut self, cap: &Capability) -> Result<()> {
        let chain = walk(self, cap.kind)?;
        let pos = chain
            .iter()
            .position(|c| c.offset == cap.offset)
            .ok_or(Error::NotInChain {
                kind: cap.kind,
                offset: cap.offset,
            })?;
        let found = chain.get(pos).copied().ok_or(Error::NotInChain {
            kind: cap.kind,
            offset: cap.offset,
        })?;
        let prev = pos.checked_sub(1).and_then(|p| chain.get(p));
        match (found.kind, prev) {
            (CapabilityKind::Standard, None) => {
                self.set_emulated_bytes(regs::CAPABILITY_POINTER, &[found.next as u8])?;
                if found.next == 0 {
                    let bit = Status::CAPABILITY_LIST.bits() as u8;
                    self.set_emulated(regs::STATUS, &[0], &[bit])?;
                }
            }
            (CapabilityKind::Standard, Some(p)) => {
                self.set_emulated_bytes(usize::from(p.offset) + 1, &[found.next as u8])?;
            }
            (CapabilityKind::Extended, None) => {
                if found.id == 0 && found.version == 0 {
                    return Ok(());
                }
                let header = u32::from(found.next) << 20;
                self.set_emulated_bytes(usize::from(found.offset), &header.to_le_bytes())?;
            }
            (CapabilityKind::Extended, Some(p)) => {
                self.set_extended_next(p.offset, found.next)?;
            }
        }
        Ok(())
    }

    fn set_extended_next(&mut self, at: u16, next: u16) -> Result<()> {
        let bytes = (u32::from(next) << 20).to_le_bytes();
        self.set_emulated(usize::from(at) + 2, &bytes[2..4], &[0xf0, 0xff])
    }

    /// Hides every capability of `kind` with this ID; returns how many were hidden.
    pub fn hide_all(&mut self, kind: CapabilityKind, id: u16) -> Result<usize> {
        let targets: Vec<Capability> = walk(self, kind)?
            .into_iter()
            .filter(|c| c.id == id && !(c.id == 0 && usize::from(c.offset) == regs::EXTENDED_START))
            .collect();
        for cap in &targets {
            self.hide(cap)?;
        }
        Ok(targets.len())
    }

    /// Inserts a virtual capability made of `bytes` (header included; its next pointer field
    /// is ignored) at the lowest free, dword-aligned offset that overlaps no capability of the
    /// chain and no header, and links it at the end of the chain. Its bytes are emulated and
    /// read-only to the guest (change the masks afterwards to make fields writable).
    ///
    /// Returns its offset. Errors: [`Error::MalformedCapability`] (fewer than 4 bytes),
    /// [`Error::NotExtended`], [`Error::NoRoom`], or the chain's walk error.
    pub fn insert_capability(&mut self, kind: CapabilityKind, bytes: &[u8]) -> Result<u16> {
        if bytes.len() < 4 {
            return Err(Error::MalformedCapability {
                offset: 0,
                reason: "a capability has at least a 4-byte header",
            });
        }
        let (lo, hi) = match kind {
            CapabilityKind::Standard => (regs::HEADER_END, regs::CONVENTIONAL_SIZE),
            CapabilityKind::Extended if self.is_extended() => {
                (regs::EXTENDED_START, regs::EXTENDED_SIZE)
            }
            CapabilityKind::Extended => return Err(Error::NotExtended),
        };
        let chain = walk(self, kind)?;
        let offset = self
            .free_offset(kind, &chain, lo, hi, bytes.len())
            .ok_or(Error::NoRoom {
                kind,
                len: bytes.len(),
            })?;
        let mut body = bytes.to_vec();
        match kind {
            CapabilityKind::Standard => {
                if let Some(b) = body.get_mut(1) {
                    *b = 0;
                }
            }
            CapabilityKind::Extended => {
                if let Some(b) = body.get_mut(2) {
                    *b &= 0x0f;
                }
                if let Some(b) = body.get_mut(3) {
                    *b = 0;
                }
            }
        }
        self.set_emulated_bytes(offset, &body)?;
        self.set_write_mask(offset, &vec![0; body.len()])?;
        self.set_w1c_mask(offset, &vec![0; body.len()])?;
        let new = offset as u16;
        match (kind, chain.last()) {
            (CapabilityKind::Standard, None) => {
                self.set_emulated_bytes(regs::CAPABILITY_POINTER, &[new as u8])?;
                let bit = Status::CAPABILITY_LIST.bits() as u8;
                self.set_emulated(regs::STATUS, &[bit], &[bit])?;
            }
            (CapabilityKind::Standard, Some(tail)) => {
                self.set_emulated_bytes(usize::from(tail.offset) + 1, &[new as u8])?;
            }
            // An empty extended chain: the capability went to 0x100 itself.
            (CapabilityKind::Extended, None) => {}
            (CapabilityKind::Extended, Some(tail)) => self.set_extended_next(tail.offset, new)?,
        }
        Ok(new)
    }

    /// Lowest dword-aligned offset in `[lo, hi)` where `len` bytes overlap no capability.
    fn free_offset(
        &self,
        kind: CapabilityKind,
        chain: &[Capability],
        lo: usize,
        hi: usize,
        len: usize,
    ) -> Option<usize> {
        let mut sorted: Vec<&Capability> = chain.iter().collect();
        sorted.sort_by_key(|c| c.offset);
        let mut busy: Vec<(usize, usize)> = Vec::with_capacity(sorted.len());
        for (i, c) in sorted.iter().enumerate() {
            let start = usize::from(c.offset);
            let end = if exact_len(kind, c.id) {
                c.end()
            } else {
                sorted
                    .get(i + 1)
                    .map_or(hi, |n| usize::from(n.offset))
                    .max(c.end())
            };
            busy.push((start, end));
        }
        let mut candidate = lo;
        while candidate + len <= hi {
            match busy
                .iter()
                .find(|(s, e)| *s < candidate + len && candidate < *e)
            {
                Some((_, e)) => candidate = (*e + 3) & !3,
                None => return Some(candidate),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{MsixCap, PcieCap, PciePortType, PmCap, VendorCap};
    use crate::ConfigSpaceBuilder;

    fn sample() -> ConfigSpace {
        ConfigSpaceBuilder::new(0x8086, 0x1234)
            .capability(PmCap::build())
            .capability(PcieCap::build(PciePortType::Endpoint))
            .capability(MsixCap::build(8, 0, 0, 0, 0x800).unwrap())
            .extended_capability(vec![0x01, 0x00, 0x02, 0x00])
            .extended_capability(vec![0x0e, 0x00, 0x01, 0x00])
            .extended_capability(vec![0x10, 0x00, 0x01, 0x00])
            .build()
            .unwrap()
    }

    fn offsets(caps: &[Capability]) -> Vec<(u16, u16)> {
        caps.iter().map(|c| (c.offset, c.id)).collect()
    }

    #[test]
    fn hide_standard_first_middle_last() {
        let mut cs = sample();
        let before = cs.physical().to_vec();
        let caps = cs.walk_standard().unwrap();
        assert_eq!(offsets(&caps), vec![(0x40, 1), (0x48, 0x10), (0x84, 0x11)]);
        cs.hide(&caps[1]).unwrap();
        assert_eq!(
            offsets(&cs.walk_standard().unwrap()),
            vec![(0x40, 1), (0x84, 0x11)]
        );
        cs.hide(&caps[0]).unwrap();
        cs.hide(&caps[2]).unwrap();
        assert!(cs.walk_standard().unwrap().is_empty());
        assert!(!cs.status().contains(Status::CAPABILITY_LIST));
        assert_eq!(
            cs.physical(),
            &before[..],
            "hiding never touches physical bytes"
        );
        assert!(matches!(cs.hide(&caps[0]), Err(Error::NotInChain { .. })));
    }

    #[test]
    fn hide_extended_head_becomes_null() {
        let mut cs = sample();
        assert_eq!(cs.hide_all(CapabilityKind::Extended, 0x01).unwrap(), 1);
        let ext = cs.walk_extended().unwrap();
        assert_eq!(
            offsets(&ext),
            vec![(0x100, 0), (0x104, 0x0e), (0x108, 0x10)]
        );
        assert_eq!(cs.hide_all(CapabilityKind::Extended, 0x10).unwrap(), 1);
        assert_eq!(
            offsets(&cs.walk_extended().unwrap()),
            vec![(0x100, 0), (0x104, 0x0e)]
        );
        // A Null head without a next pointer is an all-zero header: the chain is empty.
        cs.hide_all(CapabilityKind::Extended, 0x0e).unwrap();
        assert!(cs.walk_extended().unwrap().is_empty());
    }

    #[test]
    fn hide_only_extended_empties_chain() {
        let mut cs = ConfigSpaceBuilder::new(1, 2)
            .extended_capability(vec![0x0b, 0, 1, 0, 0, 0, 0x80, 0])
            .build()
            .unwrap();
        assert_eq!(cs.hide_all(CapabilityKind::Extended, 0x0b).unwrap(), 1);
        assert!(cs.walk_extended().unwrap().is_empty());
    }

    #[test]
    fn insert_into_gaps_and_empty_chains() {
        let mut cs = ConfigSpace::new_extended();
        let v = VendorCap::build(&[1, 2, 3, 4, 5]).unwrap();
        assert_eq!(
            cs.insert_capability(CapabilityKind::Standard, &v).unwrap(),
            0x40
        );
        assert_eq!(
            cs.insert_capability(CapabilityKind::Standard, &v).unwrap(),
            0x48
        );
        let e = [0x0b, 0, 1, 0, 0, 0, 0x80, 0];
        assert_eq!(
            cs.insert_capability(CapabilityKind::Extended, &e).unwrap(),
            0x100
        );
        assert_eq!(
            cs.insert_capability(CapabilityKind::Extended, &e).unwrap(),
            0x108
        );
        let caps = cs.capabilities().unwrap();
        assert_eq!(
            offsets(&caps),
            vec![(0x40, 9), (0x48, 9), (0x100, 0x0b), (0x108, 0x0b)]
        );
        assert!(
            cs.physical().iter().all(|&b| b == 0),
            "insertion is emulated only"
        );
        // The inserted bytes are read-only to the guest.
        cs.write(0x43, &[0xee]).unwrap();
        assert_eq!(cs.read_u8(0x43).unwrap(), 1);
    }

    #[test]
    fn insert_reports_no_room() {
        let mut cs = ConfigSpace::new_conventional();
        let big = vec![0x09, 0, 0xbc];
        let mut big = big;
        big.resize(0xbc, 0);
        assert_eq!(
            cs.insert_capability(CapabilityKind::Standard, &big)
                .unwrap(),
            0x40
        );
        let before = cs.clone();
        assert_eq!(
            cs.insert_capability(CapabilityKind::Standard, &[0x09, 0, 8, 0, 0, 0, 0, 0]),
            Err(Error::NoRoom {
                kind: CapabilityKind::Standard,
                len: 8
            })
        );
        assert_eq!(cs, before);
        assert_eq!(
            cs.insert_capability(CapabilityKind::Extended, &[1, 0, 1, 0]),
            Err(Error::NotExtended)
        );
    }
}
