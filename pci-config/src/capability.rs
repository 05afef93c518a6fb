// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Walking and validating the standard and extended capability chains.
//!
//! Both walks read the guest view, so hidden or inserted capabilities (whose next pointers are
//! emulated, see [`crate::chain`]) are seen exactly as a guest sees them.
//!
//! A walk either returns every capability of the chain or a typed error; it never loops: each
//! dword offset is visited at most once, so a walk costs at most 48 (standard) or 960
//! (extended) steps. Documented truncations, matching what Linux and `lspci` do:
//! * the standard chain is empty when the status register's capability-list bit is clear;
//! * the extended chain is empty on a 256-byte space, and ends at a header that reads
//!   `0x0000_0000` or `0xffff_ffff` (including at 0x100).

use crate::ids;
use crate::regs::{self, Status};
use crate::{ConfigSpace, Error, Result};

/// Which chain a capability belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CapabilityKind {
    /// Conventional capability (8-bit ID, 8-bit next pointer, in `0x40..0x100`).
    Standard,
    /// PCI Express extended capability (16-bit ID, 4-bit version, 12-bit next pointer, in
    /// `0x100..0x1000`).
    Extended,
}

/// One capability found by a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capability {
    /// Standard or extended.
    pub kind: CapabilityKind,
    /// Offset of its header.
    pub offset: u16,
    /// Capability ID (8 bits for standard capabilities).
    pub id: u16,
    /// Capability version (extended capabilities; 0 for standard ones).
    pub version: u8,
    /// Next pointer as read (0 ends the chain).
    pub next: u16,
    /// Its length in bytes, as far as this crate knows it: the exact length for capabilities
    /// whose layout says it (PM, MSI, MSI-X, PCI Express, vendor-specific, DSN, VSEC), else
    /// the 4-byte header. Overlap checks use this length.
    pub len: u16,
}

impl Capability {
    /// Human-readable name of its ID.
    pub fn name(&self) -> &'static str {
        match self.kind {
            CapabilityKind::Standard => ids::standard_name(self.id as u8),
            CapabilityKind::Extended => ids::extended_name(self.id),
        }
    }

    /// One past its last byte.
    pub fn end(&self) -> usize {
        usize::from(self.offset) + usize::from(self.len)
    }
}

impl std::fmt::Display for Capability {
    /// `[OFF] ID name`: the offset in hex (2 digits standard, 3 extended), the ID in hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            CapabilityKind::Standard => {
                write!(f, "[{:02x}] {:02x} {}", self.offset, self.id, self.name())
            }
            CapabilityKind::Extended => {
                write!(f, "[{:03x}] {:04x} {}", self.offset, self.id, self.name())
            }
        }
    }
}

/// Length a walk gives a standard capability whose first bytes are `head` (the ID at index 0,
/// the 16-bit control word or length byte at 2; bytes missing from `head` read as 0).
///
/// The walk and [`ConfigSpace::insert_capability`] both use this, so a capability is checked
/// before it is inserted exactly as the walk will read it afterwards.
pub(crate) fn standard_len_of(head: &[u8]) -> u16 {
    let byte = |i: usize| head.get(i).copied().unwrap_or(0);
    let control = u16::from_le_bytes([byte(2), byte(3)]);
    match byte(0) {
        ids::CAP_PM | ids::CAP_VPD | ids::CAP_SSVID => 8,
        ids::CAP_MSI => {
            let is64 = control & (1 << 7) != 0;
            let pvm = control & (1 << 8) != 0;
            10 + if is64 { 4 } else { 0 } + if pvm { 10 } else { 0 }
        }
        ids::CAP_MSIX => 12,
        ids::CAP_EXP => {
            if control & 0xf >= 2 {
                0x3c
            } else {
                0x14
            }
        }
        ids::CAP_VENDOR => u16::from(byte(2)).max(3),
        _ => 4,
    }
}

/// Length a walk gives an extended capability whose first bytes are `head` (the 4-byte header,
/// then for a VSEC the dword whose bits 31:20 are its length; missing bytes read as 0).
pub(crate) fn extended_len_of(head: &[u8]) -> u16 {
    let byte = |i: usize| head.get(i).copied().unwrap_or(0);
    match u16::from_le_bytes([byte(0), byte(1)]) {
        ids::EXT_DSN => 12,
        ids::EXT_VSEC => {
            let dword = u32::from_le_bytes([byte(4), byte(5), byte(6), byte(7)]);
            ((dword >> 20) as u16).max(8)
        }
        _ => 4,
    }
}

/// Length of the standard capability at `offset` whose ID is `id`, as the guest sees it.
fn standard_len(cs: &ConfigSpace, offset: usize, id: u8) -> u16 {
    let control = cs.read_u16(offset + 2).unwrap_or(0).to_le_bytes();
    standard_len_of(&[id, 0, control[0], control[1]])
}

/// Length of the extended capability at `offset` whose ID is `id`, as the guest sees it.
fn extended_len(cs: &ConfigSpace, offset: usize, id: u16) -> u16 {
    let mut head = [0u8; 8];
    head[..2].copy_from_slice(&id.to_le_bytes());
    head[4..].copy_from_slice(&cs.read_u32(offset + 4).unwrap_or(0).to_le_bytes());
    extended_len_of(&head)
}

fn check_overlaps(kind: CapabilityKind, caps: &[Capability]) -> Result<()> {
    let mut sorted: Vec<&Capability> = caps.iter().collect();
    sorted.sort_by_key(|c| c.offset);
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if a.end() > usize::from(b.offset) {
                return Err(Error::CapabilityOverlap {
                    kind,
                    first: a.offset,
                    second: b.offset,
                });
            }
        }
    }
    Ok(())
}

fn check_pointer(kind: CapabilityKind, from: u16, to: u16, lo: usize, hi: usize) -> Result<()> {
    if usize::from(to) < lo {
        return Err(Error::PointerIntoHeader { kind, from, to });
    }
    if to & 3 != 0 {
        return Err(Error::MisalignedPointer { kind, from, to });
    }
    if usize::from(to) + 4 > hi {
        return Err(Error::PointerPastEnd { kind, from, to });
    }
    Ok(())
}

/// Marks the capability at `ptr` (reached from `from`) visited; a second visit is a loop.
fn mark_visited(visited: &mut [bool], kind: CapabilityKind, from: u16, ptr: u16) -> Result<()> {
    let seen = visited
        .get_mut(usize::from(ptr) / 4)
        .ok_or(Error::PointerPastEnd {
            kind,
            from,
            to: ptr,
        })?;
    if *seen {
        return Err(Error::CapabilityLoop { kind, offset: ptr });
    }
    *seen = true;
    Ok(())
}

/// Checks that the `len` bytes of the capability at `ptr` (reached from `from`) end within
/// the first `end` bytes of config space.
fn check_fits(kind: CapabilityKind, from: u16, ptr: u16, len: u16, end: usize) -> Result<()> {
    if usize::from(ptr) + usize::from(len) > end {
        return Err(Error::PointerPastEnd {
            kind,
            from,
            to: ptr,
        });
    }
    Ok(())
}

impl ConfigSpace {
    /// The standard capability chain, in chain order, validated.
    ///
    /// Errors: [`Error::CapabilityLoop`], [`Error::PointerIntoHeader`] (below 0x40),
    /// [`Error::MisalignedPointer`] (the two reserved low bits set),
    /// [`Error::PointerPastEnd`] (a capability that does not fit below 0x100),
    /// [`Error::CapabilityOverlap`].
    pub fn walk_standard(&self) -> Result<Vec<Capability>> {
        let kind = CapabilityKind::Standard;
        let mut caps = Vec::new();
        if !self.status().contains(Status::CAPABILITY_LIST) {
            return Ok(caps);
        }
        let mut visited = [false; regs::CONVENTIONAL_SIZE / 4];
        let mut from = regs::CAPABILITY_POINTER as u16;
        let mut ptr = u16::from(self.read_u8(regs::CAPABILITY_POINTER)?);
        while ptr != 0 {
            check_pointer(kind, from, ptr, regs::HEADER_END, regs::CONVENTIONAL_SIZE)?;
            let off = usize::from(ptr);
            mark_visited(&mut visited, kind, from, ptr)?;
            let id = self.read_u8(off)?;
            let next = u16::from(self.read_u8(off + 1)?);
            let len = standard_len(self, off, id);
            check_fits(kind, from, ptr, len, regs::CONVENTIONAL_SIZE)?;
            caps.push(Capability {
                kind,
                offset: ptr,
                id: u16::from(id),
                version: 0,
                next,
                len,
            });
            from = ptr + 1;
            ptr = next;
        }
        check_overlaps(kind, &caps)?;
        Ok(caps)
    }

    /// The extended capability chain starting at 0x100, in chain order, validated.
    ///
    /// Empty on a 256-byte space. Errors as for [`ConfigSpace::walk_standard`], with 0x100 as
    /// the header boundary and 0x1000 as the end.
    pub fn walk_extended(&self) -> Result<Vec<Capability>> {
        let kind = CapabilityKind::Extended;
        let mut caps = Vec::new();
        if !self.is_extended() {
            return Ok(caps);
        }
        let mut visited = vec![false; regs::EXTENDED_SIZE / 4];
        let mut from = 0u16;
        let mut ptr = regs::EXTENDED_START as u16;
        loop {
            check_pointer(kind, from, ptr, regs::EXTENDED_START, regs::EXTENDED_SIZE)?;
            let off = usize::from(ptr);
            let header = self.read_u32(off)?;
            if header == 0 || header == u32::MAX {
                break;
            }
            mark_visited(&mut visited, kind, from, ptr)?;
            let id = (header & 0xffff) as u16;
            let next = (header >> 20) as u16;
            let len = extended_len(self, off, id);
            check_fits(kind, from, ptr, len, regs::EXTENDED_SIZE)?;
            caps.push(Capability {
                kind,
                offset: ptr,
                id,
                version: ((header >> 16) & 0xf) as u8,
                next,
                len,
            });
            if next == 0 {
                break;
            }
            from = ptr + 2;
            ptr = next;
        }
        check_overlaps(kind, &caps)?;
        Ok(caps)
    }

    /// Both chains, standard first.
    pub fn capabilities(&self) -> Result<Vec<Capability>> {
        let mut caps = self.walk_standard()?;
        caps.extend(self.walk_extended()?);
        Ok(caps)
    }

    /// The first capability of `kind` with this ID.
    pub fn find_capability(&self, kind: CapabilityKind, id: u16) -> Result<Capability> {
        let caps = match kind {
            CapabilityKind::Standard => self.walk_standard()?,
            CapabilityKind::Extended => self.walk_extended()?,
        };
        caps.into_iter()
            .find(|c| c.id == id)
            .ok_or(Error::CapabilityNotFound { kind, id })
    }

    /// The first standard capability with this ID.
    pub fn find_standard(&self, id: u8) -> Result<Capability> {
        self.find_capability(CapabilityKind::Standard, u16::from(id))
    }

    /// The first extended capability with this ID.
    pub fn find_extended(&self, id: u16) -> Result<Capability> {
        self.find_capability(CapabilityKind::Extended, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 KiB space with the capability-list bit set and `links` as (offset, id, next).
    fn with_chain(first: u8, links: &[(usize, u8, u8)]) -> ConfigSpace {
        let mut cs = ConfigSpace::new_extended();
        cs.set_physical(regs::STATUS, &[0x10, 0]).unwrap();
        cs.set_physical(regs::CAPABILITY_POINTER, &[first]).unwrap();
        for &(off, id, next) in links {
            cs.set_physical(off, &[id, next]).unwrap();
        }
        cs
    }

    #[test]
    fn malformed_standard_chains_get_typed_errors() {
        let kind = CapabilityKind::Standard;
        let cases = [
            (
                with_chain(0x40, &[(0x40, 0x13, 0x50), (0x50, 0x13, 0x40)]),
                Error::CapabilityLoop { kind, offset: 0x40 },
            ),
            (
                with_chain(0x40, &[(0x40, 0x13, 0x20)]),
                Error::PointerIntoHeader {
                    kind,
                    from: 0x41,
                    to: 0x20,
                },
            ),
            (
                with_chain(0x41, &[]),
                Error::MisalignedPointer {
                    kind,
                    from: 0x34,
                    to: 0x41,
                },
            ),
            (
                with_chain(0xf8, &[(0xf8, ids::CAP_MSIX, 0)]),
                Error::PointerPastEnd {
                    kind,
                    from: 0x34,
                    to: 0xf8,
                },
            ),
            (
                with_chain(0x40, &[(0x40, ids::CAP_MSIX, 0x48), (0x48, 0x13, 0)]),
                Error::CapabilityOverlap {
                    kind,
                    first: 0x40,
                    second: 0x48,
                },
            ),
        ];
        for (cs, expected) in cases {
            assert_eq!(cs.walk_standard(), Err(expected.clone()));
            assert_eq!(cs.capabilities(), Err(expected));
        }
    }

    #[test]
    fn capability_list_bit_gates_the_standard_walk() {
        let mut cs = with_chain(0x40, &[(0x40, 0x13, 0)]);
        assert_eq!(cs.walk_standard().unwrap().len(), 1);
        cs.set_physical(regs::STATUS, &[0, 0]).unwrap();
        assert!(cs.walk_standard().unwrap().is_empty());
    }

    #[test]
    fn malformed_extended_chains_get_typed_errors() {
        let kind = CapabilityKind::Extended;
        let header = |id: u32, next: u32| (id | (1 << 16) | (next << 20)).to_le_bytes();
        let mut cs = ConfigSpace::new_extended();
        cs.set_physical(0x100, &header(1, 0x200)).unwrap();
        cs.set_physical(0x200, &header(2, 0x100)).unwrap();
        assert_eq!(
            cs.walk_extended(),
            Err(Error::CapabilityLoop {
                kind,
                offset: 0x100
            })
        );
        cs.set_physical(0x200, &header(2, 0x80)).unwrap();
        assert_eq!(
            cs.walk_extended(),
            Err(Error::PointerIntoHeader {
                kind,
                from: 0x202,
                to: 0x80
            })
        );
        cs.set_physical(0x200, &header(2, 0x302)).unwrap();
        assert_eq!(
            cs.walk_extended(),
            Err(Error::MisalignedPointer {
                kind,
                from: 0x202,
                to: 0x302
            })
        );
        cs.set_physical(0x200, &header(u32::from(ids::EXT_DSN), 0x204))
            .unwrap();
        cs.set_physical(0x204, &header(1, 0)).unwrap();
        assert_eq!(
            cs.walk_extended(),
            Err(Error::CapabilityOverlap {
                kind,
                first: 0x200,
                second: 0x204
            })
        );
        cs.set_physical(0x200, &header(2, 0xffc)).unwrap();
        cs.set_physical(0xffc, &header(u32::from(ids::EXT_DSN), 0))
            .unwrap();
        assert_eq!(
            cs.walk_extended(),
            Err(Error::PointerPastEnd {
                kind,
                from: 0x202,
                to: 0xffc
            })
        );
        // An all-ones header ends the chain (device gone), as in lspci.
        cs.set_physical(0x100, &[0xff; 4]).unwrap();
        assert!(cs.walk_extended().unwrap().is_empty());
    }

    #[test]
    fn display_formats_offsets_and_ids() {
        let cs = with_chain(0x40, &[(0x40, ids::CAP_VENDOR, 0)]);
        let cap = cs.find_standard(ids::CAP_VENDOR).unwrap();
        assert_eq!(cap.to_string(), "[40] 09 Vendor Specific");
        let mut cs = ConfigSpace::new_extended();
        cs.set_physical(0x100, &[0x0e, 0x00, 0x01, 0x00]).unwrap();
        let cap = cs.find_extended(ids::EXT_ARI).unwrap();
        assert_eq!(
            cap.to_string(),
            "[100] 000e Alternative Routing-ID Interpretation"
        );
        assert!(matches!(
            cs.find_extended(ids::EXT_AER),
            Err(Error::CapabilityNotFound { id: 1, .. })
        ));
    }
}
