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

use crate::capability::{extended_len_of, standard_len_of, Capability, CapabilityKind};
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

/// Checks the bytes of a capability to insert as a walk will read them once placed; returns its
/// ID and the length the walk will give it.
fn checked_new_capability(kind: CapabilityKind, bytes: &[u8]) -> Result<(u16, u16)> {
    let bad = |reason| Error::MalformedCapability { offset: 0, reason };
    let [b0, b1, b2, _, ..] = *bytes else {
        return Err(bad("a capability has at least a 4-byte header"));
    };
    let (id, walked_len) = match kind {
        CapabilityKind::Standard => {
            if b0 == ids::CAP_VENDOR && b2 < 3 {
                return Err(bad("vendor-specific length byte below its 3-byte header"));
            }
            (u16::from(b0), standard_len_of(bytes))
        }
        CapabilityKind::Extended => {
            let id = u16::from_le_bytes([b0, b1]);
            if id == 0 && b2 & 0x0f == 0 {
                return Err(bad(
                    "an extended header with ID 0 and version 0 reads as the end of the chain",
                ));
            }
            let vsec_len = bytes
                .get(4..8)
                .and_then(|d| <[u8; 4]>::try_from(d).ok())
                .map_or(0, |d| u32::from_le_bytes(d) >> 20);
            if id == ids::EXT_VSEC && vsec_len < 8 {
                return Err(bad("VSEC length below its 8-byte header"));
            }
            (id, extended_len_of(bytes))
        }
    };
    let walked = usize::from(walked_len);
    if bytes.len() < walked {
        return Err(bad("fewer bytes than the length its header gives"));
    }
    // Padding up to the next dword is harmless: nothing else can be placed there.
    if exact_len(kind, id) && bytes.len() > (walked + 3) & !3 {
        return Err(bad("more bytes than the length its header gives"));
    }
    Ok((id, walked_len))
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
    /// The bytes are checked the way a walk will read them once placed (see
    /// [`Capability::len`]): the length the walk computes from the header (a vendor-specific
    /// length byte, the MSI control bits, the PCI Express capability version, a VSEC length
    /// field, the fixed PM, MSI-X and DSN sizes) must be covered by `bytes`, and for those IDs
    /// `bytes` may run past it only up to the next dword boundary. A vendor-specific length
    /// below 3, a VSEC length below 8 and an extended header with ID 0 and version 0 (which a
    /// walk reads as the end of the chain) are refused.
    ///
    /// The edit is made on a copy of the space and committed only when both chains of the copy
    /// walk, the chain edited is the old one plus the new capability at its end, and the walk
    /// gives the new capability the ID and length checked above. So a successful insert always
    /// leaves [`ConfigSpace::capabilities`] succeeding with the new capability in it, and a
    /// failed one changes nothing. As a consequence, the whole space must walk beforehand:
    /// inserting a standard capability into a space whose extended chain is malformed fails
    /// with the extended walk's error.
    ///
    /// Returns its offset. Errors: [`Error::MalformedCapability`] (bytes that do not walk as
    /// given), [`Error::NotExtended`], [`Error::NoRoom`], or the walk error of either chain.
    pub fn insert_capability(&mut self, kind: CapabilityKind, bytes: &[u8]) -> Result<u16> {
        let (lo, hi) = match kind {
            CapabilityKind::Standard => (regs::HEADER_END, regs::CONVENTIONAL_SIZE),
            CapabilityKind::Extended if self.is_extended() => {
                (regs::EXTENDED_START, regs::EXTENDED_SIZE)
            }
            CapabilityKind::Extended => return Err(Error::NotExtended),
        };
        let (id, walked_len) = checked_new_capability(kind, bytes)?;
        let before = self.capabilities()?;
        let chain: Vec<Capability> = before.iter().filter(|c| c.kind == kind).copied().collect();
        let offset = self
            .free_offset(kind, &chain, lo, hi, bytes.len())
            .ok_or(Error::NoRoom {
                kind,
                len: bytes.len(),
            })?;
        let mut scratch = self.clone();
        scratch.place(kind, &chain, offset, bytes)?;
        let new = scratch.check_inserted(kind, &chain, offset, id, walked_len)?;
        *self = scratch;
        Ok(new)
    }

    /// Writes `bytes` at `offset` (emulated, read-only) and links them after the chain's tail.
    fn place(
        &mut self,
        kind: CapabilityKind,
        chain: &[Capability],
        offset: usize,
        bytes: &[u8],
    ) -> Result<()> {
        let new = u16::try_from(offset).map_err(|_| Error::NoRoom {
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
        match (kind, chain.last()) {
            (CapabilityKind::Standard, None) => {
                self.set_emulated_bytes(regs::CAPABILITY_POINTER, &[offset as u8])?;
                let bit = Status::CAPABILITY_LIST.bits() as u8;
                self.set_emulated(regs::STATUS, &[bit], &[bit])?;
            }
            (CapabilityKind::Standard, Some(tail)) => {
                self.set_emulated_bytes(usize::from(tail.offset) + 1, &[offset as u8])?;
            }
            // An empty extended chain: the capability went to 0x100 itself.
            (CapabilityKind::Extended, None) => {}
            (CapabilityKind::Extended, Some(tail)) => self.set_extended_next(tail.offset, new)?,
        }
        Ok(())
    }

    /// After [`ConfigSpace::place`]: both chains walk, the edited one is `chain` followed by
    /// exactly one capability at `offset` with this ID and walked length.
    fn check_inserted(
        &self,
        kind: CapabilityKind,
        chain: &[Capability],
        offset: usize,
        id: u16,
        walked_len: u16,
    ) -> Result<u16> {
        let not_walked = Error::MalformedCapability {
            offset: offset as u16,
            reason: "the inserted capability does not walk as its bytes say",
        };
        let after = self.capabilities()?;
        let edited: Vec<&Capability> = after.iter().filter(|c| c.kind == kind).collect();
        let Some((last, rest)) = edited.split_last() else {
            return Err(not_walked);
        };
        let same_prefix = rest.len() == chain.len()
            && rest
                .iter()
                .zip(chain)
                .all(|(a, b)| a.offset == b.offset && a.id == b.id);
        if !same_prefix
            || usize::from(last.offset) != offset
            || last.id != id
            || last.len != walked_len
        {
            return Err(not_walked);
        }
        Ok(last.offset)
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
    use crate::views::{MsiCap, MsixCap, PcieCap, PciePortType, PmCap, VendorCap};
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

    /// Inserting `bytes` fails with a malformed-capability error naming `reason` and changes
    /// nothing.
    fn assert_refused(cs: &mut ConfigSpace, kind: CapabilityKind, bytes: &[u8], reason: &str) {
        let before = cs.clone();
        match cs.insert_capability(kind, bytes) {
            Err(Error::MalformedCapability { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("{bytes:02x?}: expected a refusal ({reason}), got {other:?}"),
        }
        assert_eq!(*cs, before, "a refused insert changed the space");
    }

    /// Inserting `bytes` succeeds; the walk then has it last in its chain with this length.
    fn assert_walks(cs: &mut ConfigSpace, kind: CapabilityKind, bytes: &[u8], len: u16) -> u16 {
        let at = cs.insert_capability(kind, bytes).unwrap();
        let caps = cs.capabilities().unwrap();
        let last = caps.iter().rfind(|c| c.kind == kind).unwrap();
        assert_eq!((last.offset, last.len), (at, len), "{bytes:02x?}");
        at
    }

    #[test]
    fn vendor_length_byte_must_cover_the_bytes_and_fit() {
        let kind = CapabilityKind::Standard;
        let mut cs = ConfigSpace::new_conventional();
        // Length 0xff at 0x40 would run past 0x100; 0xf6 past the 9 bytes given.
        let too_long = "fewer bytes than the length its header gives";
        assert_refused(
            &mut cs,
            kind,
            &[0x09, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            too_long,
        );
        assert_refused(&mut cs, kind, &[0x09, 0, 0xf6, 0, 0, 0, 0, 0, 0], too_long);
        let below = "vendor-specific length byte below its 3-byte header";
        for len in 0..3 {
            assert_refused(&mut cs, kind, &[0x09, 0, len, 0], below);
        }
        // Bytes past the length byte, beyond the dword padding, would be outside the walk.
        let extra = "more bytes than the length its header gives";
        assert_refused(&mut cs, kind, &[0x09, 0, 4, 0, 0, 0, 0, 0], extra);
        assert_walks(&mut cs, kind, &[0x09, 0, 3, 0], 3);
        assert_walks(&mut cs, kind, &[0x09, 0, 5, 1, 2, 0, 0, 0], 5);
        // Exactly filling the space up to 0x100 is fine.
        let mut fill = vec![0x09, 0, 0xb4];
        fill.resize(0xb4, 0);
        assert_eq!(assert_walks(&mut cs, kind, &fill, 0xb4), 0x4c);
        assert!(matches!(
            cs.insert_capability(kind, &[0x09, 0, 4, 0]),
            Err(Error::NoRoom { .. })
        ));
    }

    #[test]
    fn msi_msix_pcie_lengths_follow_their_headers() {
        let kind = CapabilityKind::Standard;
        let mut cs = ConfigSpace::new_conventional();
        let short = "fewer bytes than the length its header gives";
        let long = "more bytes than the length its header gives";
        // MSI: 64-bit and per-vector masking make it 24 bytes.
        let mut msi = vec![ids::CAP_MSI, 0, 0x80, 0x01];
        msi.resize(10, 0);
        assert_refused(&mut cs, kind, &msi, short);
        msi.resize(24, 0);
        assert_walks(&mut cs, kind, &msi, 24);
        let plain = MsiCap::build(0, false, false);
        assert_eq!(plain.len(), 10);
        assert_walks(&mut cs, kind, &plain, 10);
        let mut padded = plain.clone();
        padded.resize(12, 0);
        assert_walks(&mut cs, kind, &padded, 10);
        padded.resize(16, 0);
        assert_refused(&mut cs, kind, &padded, long);
        // MSI-X is 12 bytes.
        assert_refused(&mut cs, kind, &[ids::CAP_MSIX, 0, 0, 0, 0, 0, 0, 0], short);
        let mut msix = MsixCap::build(4, 0, 0, 0, 0x800).unwrap();
        msix.resize(16, 0);
        assert_refused(&mut cs, kind, &msix, long);
        msix.truncate(12);
        assert_walks(&mut cs, kind, &msix, 12);
        // PCI Express: version 2 is 0x3c bytes, version 1 is 0x14.
        let mut exp = PcieCap::build(PciePortType::Endpoint);
        exp.truncate(0x14);
        assert_refused(&mut cs, kind, &exp, short);
        exp[2] = 1;
        assert_walks(&mut cs, kind, &exp, 0x14);
        // PM is 8 bytes.
        assert_refused(&mut cs, kind, &PmCap::build()[..4], short);
        assert_eq!(cs.walk_standard().unwrap().len(), 5);
    }

    #[test]
    fn extended_headers_are_checked_as_walked() {
        let kind = CapabilityKind::Extended;
        let mut cs = ConfigSpace::new_extended();
        let end = "an extended header with ID 0 and version 0 reads as the end of the chain";
        // The next pointer bits are ignored, so these all read as 0x0000_0000 once placed.
        assert_refused(&mut cs, kind, &[0, 0, 0, 0], end);
        assert_refused(&mut cs, kind, &[0, 0, 0, 0xff, 0xff, 0xff], end);
        assert_refused(&mut cs, kind, &[0, 0, 0xf0, 0, 0x35], end);
        let vsec = "VSEC length below its 8-byte header";
        assert_refused(
            &mut cs,
            kind,
            &[0x0b, 0, 0xfb, 0xff, 0xff, 0x01, 0x66, 0],
            vsec,
        );
        assert_refused(&mut cs, kind, &[0x0b, 0, 1, 0], vsec);
        let short = "fewer bytes than the length its header gives";
        // A VSEC saying 0x10 bytes, given 8.
        assert_refused(&mut cs, kind, &[0x0b, 0, 1, 0, 0, 0, 0, 0x01], short);
        assert_refused(&mut cs, kind, &[0x03, 0, 1, 0, 0, 0, 0, 0], short);
        let mut v = vec![0x0b, 0, 1, 0, 0, 0, 0, 0x01];
        v.resize(0x10, 0);
        assert_eq!(assert_walks(&mut cs, kind, &v, 0x10), 0x100);
        let dsn = [0x03, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(assert_walks(&mut cs, kind, &dsn, 12), 0x110);
        // A Null capability with a version is a header like any other.
        assert_eq!(assert_walks(&mut cs, kind, &[0, 0, 1, 0], 4), 0x11c);
        assert_eq!(cs.walk_extended().unwrap().len(), 3);
    }

    #[test]
    fn insert_needs_both_chains_to_walk() {
        let mut cs = ConfigSpace::new_extended();
        let header = |id: u32, next: u32| (id | (1 << 16) | (next << 20)).to_le_bytes();
        cs.set_physical(0x100, &header(1, 0x200)).unwrap();
        cs.set_physical(0x200, &header(2, 0x100)).unwrap();
        let before = cs.clone();
        let loop_err = Error::CapabilityLoop {
            kind: CapabilityKind::Extended,
            offset: 0x100,
        };
        let vendor = VendorCap::build(&[1]).unwrap();
        assert_eq!(
            cs.insert_capability(CapabilityKind::Standard, &vendor),
            Err(loop_err.clone())
        );
        assert_eq!(
            cs.insert_capability(CapabilityKind::Extended, &[1, 0, 1, 0]),
            Err(loop_err)
        );
        assert_eq!(cs, before);
        // Once the extended chain is emptied, the standard insert goes through.
        cs.set_emulated_bytes(0x100, &[0; 4]).unwrap();
        assert_eq!(
            cs.insert_capability(CapabilityKind::Standard, &vendor),
            Ok(0x40)
        );
        assert_eq!(cs.capabilities().unwrap().len(), 1);
    }

    #[test]
    fn insert_after_a_long_tail_lands_past_it() {
        // The walk's length of the tail (vendor, 0x20 bytes) decides where the new one goes.
        let mut cs = ConfigSpaceBuilder::new(1, 2)
            .capability(VendorCap::build(&[7; 0x1d]).unwrap())
            .build()
            .unwrap();
        let at = cs
            .insert_capability(CapabilityKind::Standard, &PmCap::build())
            .unwrap();
        assert_eq!(at, 0x60);
        assert_eq!(
            offsets(&cs.walk_standard().unwrap()),
            vec![(0x40, 9), (0x60, 1)]
        );
    }
}
