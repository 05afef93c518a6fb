// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Base address registers: definition, the sizing protocol and move detection.
//!
//! A defined BAR's register is fully emulated. Its write mask holds exactly the address bits
//! (`!(size - 1)`), so the sizing protocol works on its own: a guest writes all-ones and reads
//! back the size mask with the read-only flag bits (I/O, 64-bit, prefetchable). A 64-bit BAR
//! uses two consecutive registers; the upper one is part of the same [`Bar`].
//!
//! After every guest write touching the command register or a BAR register, the decoded
//! address of each BAR is compared with its address before; each change is reported as a
//! [`BarMove`] in [`WriteEffects`](crate::WriteEffects). A BAR is decoded (has `Some`
//! address) when its space is enabled in the command register (I/O or memory; for the ROM also
//! its enable bit), its address is not zero, the low register does not hold the sizing
//! pattern (all address bits set) and the region does not wrap past the top of its address
//! space. This is the rule QEMU applies before mapping a BAR.

use crate::regs::{self, Command};
use crate::{ConfigSpace, Error, Result};

/// Number of BAR slots: six BARs and the expansion ROM.
pub const BAR_SLOTS: usize = 7;
/// Index of the expansion ROM (the same number VFIO uses for its ROM region).
pub const ROM_INDEX: u8 = 6;

/// What kind of space a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// 32-bit memory BAR.
    Mem32,
    /// 64-bit memory BAR, using this register and the next one.
    Mem64,
    /// I/O port BAR (at most 256 bytes).
    Io,
    /// Expansion ROM (index [`ROM_INDEX`], at least 2 KiB).
    Rom,
}

/// A defined BAR and its current (guest-programmed) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bar {
    /// BAR index 0-5, or [`ROM_INDEX`].
    pub index: u8,
    /// Memory, I/O or ROM.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// The address bits currently in the register(s), decoded or not.
    pub address: u64,
}

/// A BAR whose decoded address changed after a guest write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarMove {
    /// BAR index 0-5, or [`ROM_INDEX`].
    pub index: u8,
    /// Decoded address before the write (`None`: not decoded).
    pub old: Option<u64>,
    /// Decoded address after the write (`None`: not decoded).
    pub new: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BarDef {
    Base {
        kind: BarKind,
        prefetchable: bool,
        size: u64,
    },
    UpperHalf,
}

impl BarKind {
    /// Mask of the address bits of a register for this kind (before applying the size).
    fn address_bits(self) -> u64 {
        match self {
            BarKind::Mem32 => 0xffff_fff0,
            BarKind::Mem64 => !0xf,
            BarKind::Io => 0xffff_fffc,
            BarKind::Rom => 0xffff_f800,
        }
    }

    fn min_size(self) -> u64 {
        match self {
            BarKind::Mem32 | BarKind::Mem64 => 16,
            BarKind::Io => 4,
            BarKind::Rom => 2048,
        }
    }

    fn max_size(self) -> u64 {
        match self {
            BarKind::Mem32 | BarKind::Rom => 1 << 31,
            BarKind::Mem64 => 1 << 63,
            BarKind::Io => 256,
        }
    }
}

impl ConfigSpace {
    /// Offset of BAR register `index` for this header type.
    fn bar_register(&self, index: u8) -> Result<usize> {
        let (count, rom) = match self.header_type() {
            0 => (6, regs::ROM_ADDRESS),
            1 => (2, regs::BRIDGE_ROM_ADDRESS),
            _ => {
                return Err(Error::InvalidBar {
                    index,
                    reason: "header type has no BARs",
                })
            }
        };
        if index == ROM_INDEX {
            Ok(rom)
        } else if index < count {
            Ok(regs::BAR0 + 4 * usize::from(index))
        } else {
            Err(Error::InvalidBar {
                index,
                reason: "index past the header's last BAR",
            })
        }
    }

    /// Defines BAR `index` (or the ROM, [`ROM_INDEX`]): its register becomes emulated, with
    /// the address bits writable and the flag bits read-only. The address bits already in the
    /// guest view (e.g. from a dump) are kept.
    ///
    /// Errors ([`Error::InvalidBar`]): size not a power of two or out of the kind's range, an
    /// index the header type does not have, a 64-bit BAR in the last slot, a slot already
    /// defined, ROM kind and ROM index not matching.
    pub fn define_bar(
        &mut self,
        index: u8,
        kind: BarKind,
        size: u64,
        prefetchable: bool,
    ) -> Result<()> {
        let invalid = |reason| Error::InvalidBar { index, reason };
        if (kind == BarKind::Rom) != (index == ROM_INDEX) {
            return Err(invalid("the ROM kind goes with index 6 only"));
        }
        if !size.is_power_of_two() || size < kind.min_size() || size > kind.max_size() {
            return Err(invalid("size is not a power of two in the kind's range"));
        }
        if kind == BarKind::Io && prefetchable {
            return Err(invalid("I/O BARs are not prefetchable"));
        }
        let reg = self.bar_register(index)?;
        let slots = if kind == BarKind::Mem64 {
            if index + 1 >= ROM_INDEX || self.bar_register(index + 1).is_err() {
                return Err(invalid("a 64-bit BAR needs the next register"));
            }
            2
        } else {
            1
        };
        let slot = usize::from(index);
        for s in slot..slot + slots {
            if self.bars.get(s).copied().flatten().is_some() {
                return Err(invalid("slot already defined"));
            }
        }
        let addr_mask = kind.address_bits() & !(size - 1);
        let flags: u64 = match kind {
            BarKind::Io => 1,
            BarKind::Mem32 => u64::from(prefetchable) << 3,
            BarKind::Mem64 => 0b100 | (u64::from(prefetchable) << 3),
            BarKind::Rom => 0,
        };
        let mut current = u64::from(self.read_u32(reg)?);
        if slots == 2 {
            current |= u64::from(self.read_u32(reg + 4)?) << 32;
        }
        let mut value = (current & addr_mask) | flags;
        let mut wmask = addr_mask;
        if kind == BarKind::Rom {
            value |= current & 1;
            wmask |= 1;
        }
        let len = 4 * slots;
        let value = &value.to_le_bytes()[..len];
        let wmask = &wmask.to_le_bytes()[..len];
        self.set_emulated_bytes(reg, value)?;
        self.set_write_mask(reg, wmask)?;
        self.set_w1c_mask(reg, &vec![0; len])?;
        if let Some(s) = self.bars.get_mut(slot) {
            *s = Some(BarDef::Base {
                kind,
                prefetchable,
                size,
            });
        }
        if slots == 2 {
            if let Some(s) = self.bars.get_mut(slot + 1) {
                *s = Some(BarDef::UpperHalf);
            }
        }
        Ok(())
    }

    /// The kind and prefetchable flag that BAR register `index` advertises in its read-only
    /// low bits (as in a dump of a real device), for passing to [`ConfigSpace::define_bar`]
    /// together with the size the device reports. Index [`ROM_INDEX`] is always
    /// [`BarKind::Rom`].
    pub fn advertised_bar_kind(&self, index: u8) -> Result<(BarKind, bool)> {
        let reg = self.bar_register(index)?;
        if index == ROM_INDEX {
            return Ok((BarKind::Rom, false));
        }
        let low = self.read_u32(reg)?;
        if low & 1 == 1 {
            return Ok((BarKind::Io, false));
        }
        let kind = match (low >> 1) & 3 {
            0 => BarKind::Mem32,
            2 => BarKind::Mem64,
            _ => {
                return Err(Error::InvalidBar {
                    index,
                    reason: "reserved memory type in the register",
                })
            }
        };
        Ok((kind, low & 8 != 0))
    }

    /// The defined BAR at `index`, with its current address; `None` if not defined (or the
    /// upper half of a 64-bit BAR).
    pub fn bar(&self, index: u8) -> Option<Bar> {
        let Some(BarDef::Base {
            kind,
            prefetchable,
            size,
        }) = self.bars.get(usize::from(index)).copied().flatten()
        else {
            return None;
        };
        let reg = self.bar_register(index).ok()?;
        let mut raw = u64::from(self.read_u32(reg).ok()?);
        if kind == BarKind::Mem64 {
            raw |= u64::from(self.read_u32(reg + 4).ok()?) << 32;
        }
        Some(Bar {
            index,
            kind,
            prefetchable,
            size,
            address: raw & kind.address_bits() & !(size - 1),
        })
    }

    /// Every defined BAR, ROM last.
    pub fn bars(&self) -> Vec<Bar> {
        (0..BAR_SLOTS as u8).filter_map(|i| self.bar(i)).collect()
    }

    /// The address BAR `index` decodes at right now, or `None` (see the module docs).
    pub fn decoded_bar_address(&self, index: u8) -> Option<u64> {
        let bar = self.bar(index)?;
        let command = self.command();
        let enabled = match bar.kind {
            BarKind::Io => command.contains(Command::IO_SPACE),
            BarKind::Mem32 | BarKind::Mem64 => command.contains(Command::MEMORY_SPACE),
            BarKind::Rom => {
                let reg = self.bar_register(index).ok()?;
                command.contains(Command::MEMORY_SPACE) && self.read_u32(reg).ok()? & 1 == 1
            }
        };
        let addr_mask = bar.kind.address_bits() & !(bar.size - 1);
        let low_mask = addr_mask & 0xffff_ffff;
        let limit = match bar.kind {
            BarKind::Mem64 => u64::MAX,
            BarKind::Io => 0xffff,
            BarKind::Mem32 | BarKind::Rom => 0xffff_ffff,
        };
        let sizing = bar.address & low_mask == low_mask;
        let fits = bar
            .address
            .checked_add(bar.size - 1)
            .is_some_and(|end| end <= limit);
        (enabled && bar.address != 0 && !sizing && fits).then_some(bar.address)
    }

    pub(crate) fn mapped_bars(&self) -> [Option<u64>; BAR_SLOTS] {
        let mut out = [None; BAR_SLOTS];
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.decoded_bar_address(i as u8);
        }
        out
    }

    pub(crate) fn write_touches_decode(&self, range: std::ops::Range<usize>) -> bool {
        let overlaps = |start: usize, len: usize| start < range.end && range.start < start + len;
        // COMMAND enables decode; the header type says which registers are BARs (read-only on
        // a real function, but a VMM may give it a write mask).
        if overlaps(regs::COMMAND, 2) || overlaps(regs::HEADER_TYPE, 1) {
            return true;
        }
        self.bars().iter().any(|b| {
            let len = if b.kind == BarKind::Mem64 { 8 } else { 4 };
            self.bar_register(b.index)
                .is_ok_and(|reg| overlaps(reg, len))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem_enable() -> [u8; 2] {
        Command::MEMORY_SPACE.bits().to_le_bytes()
    }

    /// Found by the config_space fuzz target: a write that changes the header type (writable
    /// only if a VMM gave it a write mask) changes which registers are BARs, and so what
    /// decodes; it must report the moves like a BAR or COMMAND write.
    #[test]
    fn a_header_type_write_that_changes_decoding_reports_the_moves() {
        let mut cs = ConfigSpace::new_conventional();
        cs.define_bar(0, BarKind::Mem32, 0x10_0000, false).unwrap();
        cs.write(0x10, &0x0010_0000u32.to_le_bytes()).unwrap();
        cs.write(regs::COMMAND, &mem_enable()).unwrap();
        assert_eq!(cs.decoded_bar_address(0), Some(0x10_0000));
        let mut mask = [0u8; 1];
        mask[0] = 0x7f;
        cs.set_write_mask(regs::HEADER_TYPE, &mask).unwrap();
        // Header type 2 (CardBus) has no BARs: BAR 0 stops decoding.
        let effects = cs.write(regs::HEADER_TYPE, &[2]).unwrap();
        assert_eq!(cs.decoded_bar_address(0), None);
        assert_eq!(
            effects.bar_moves,
            [BarMove {
                index: 0,
                old: Some(0x10_0000),
                new: None
            }]
        );
        let effects = cs.write(regs::HEADER_TYPE, &[0]).unwrap();
        assert_eq!(effects.bar_moves.len(), 1);
        assert_eq!(cs.decoded_bar_address(0), Some(0x10_0000));
    }

    #[test]
    fn sizing_protocol_for_each_kind() {
        let mut cs = ConfigSpace::new_conventional();
        cs.define_bar(0, BarKind::Mem32, 0x1000, true).unwrap();
        cs.define_bar(1, BarKind::Io, 0x20, false).unwrap();
        cs.define_bar(2, BarKind::Mem64, 1 << 33, false).unwrap();
        cs.define_bar(ROM_INDEX, BarKind::Rom, 0x8000, false)
            .unwrap();
        for reg in [0x10, 0x14, 0x18, 0x1c, 0x30] {
            cs.write(reg, &[0xff; 4]).unwrap();
        }
        assert_eq!(cs.read_u32(0x10).unwrap(), 0xffff_f008);
        assert_eq!(cs.read_u32(0x14).unwrap(), 0xffff_ffe1);
        assert_eq!(cs.read_u32(0x18).unwrap(), 0x0000_0004);
        assert_eq!(cs.read_u32(0x1c).unwrap(), 0xffff_fffe);
        assert_eq!(cs.read_u32(0x30).unwrap(), 0xffff_8001);
        assert_eq!(cs.bars().len(), 4);
        assert_eq!(cs.bar(3), None);
    }

    #[test]
    fn bar_moves_are_reported() {
        let mut cs = ConfigSpace::new_conventional();
        cs.define_bar(0, BarKind::Mem64, 0x4000, false).unwrap();
        cs.write(0x10, &0xc000_0000u32.to_le_bytes()).unwrap();
        cs.write(0x14, &0x1u32.to_le_bytes()).unwrap();
        let fx = cs.write(0x04, &mem_enable()).unwrap();
        assert_eq!(
            fx.bar_moves,
            vec![BarMove {
                index: 0,
                old: None,
                new: Some(0x1_c000_0000)
            }]
        );
        assert_eq!(fx.command, Some((Command::empty(), Command::MEMORY_SPACE)));
        let fx = cs.write(0x14, &0x2u32.to_le_bytes()).unwrap();
        assert_eq!(
            fx.bar_moves,
            vec![BarMove {
                index: 0,
                old: Some(0x1_c000_0000),
                new: Some(0x2_c000_0000)
            }]
        );
        // Sizing while decoding is on: the BAR is reported unmapped, not moved to the mask.
        let fx = cs.write(0x10, &[0xff; 4]).unwrap();
        assert_eq!(fx.bar_moves[0].new, None);
        // A write elsewhere reports nothing.
        assert!(cs.write(0x3c, &[5]).unwrap().bar_moves.is_empty());
    }

    #[test]
    fn rom_needs_its_enable_bit() {
        let mut cs = ConfigSpace::new_conventional();
        cs.define_bar(ROM_INDEX, BarKind::Rom, 0x800, false)
            .unwrap();
        cs.write(0x04, &mem_enable()).unwrap();
        let fx = cs.write(0x30, &0xd000_0000u32.to_le_bytes()).unwrap();
        assert!(fx.bar_moves.is_empty());
        let fx = cs.write(0x30, &0xd000_0001u32.to_le_bytes()).unwrap();
        assert_eq!(fx.bar_moves[0].new, Some(0xd000_0000));
        assert_eq!(fx.bar_moves[0].index, ROM_INDEX);
    }

    #[test]
    fn invalid_definitions_are_rejected() {
        let mut cs = ConfigSpace::new_conventional();
        let bad = |r: Result<()>| matches!(r, Err(Error::InvalidBar { .. }));
        assert!(bad(cs.define_bar(0, BarKind::Mem32, 0x1800, false)));
        assert!(bad(cs.define_bar(5, BarKind::Mem64, 0x1000, false)));
        assert!(bad(cs.define_bar(0, BarKind::Io, 0x1000, false)));
        assert!(bad(cs.define_bar(6, BarKind::Mem32, 0x1000, false)));
        assert!(bad(cs.define_bar(0, BarKind::Rom, 0x1000, false)));
        cs.define_bar(0, BarKind::Mem64, 0x1000, false).unwrap();
        assert!(bad(cs.define_bar(1, BarKind::Mem32, 0x1000, false)));
        cs.set_physical(crate::regs::HEADER_TYPE, &[1]).unwrap();
        assert!(bad(cs.define_bar(2, BarKind::Mem32, 0x1000, false)));
    }

    #[test]
    fn advertised_kind_is_read_from_the_register() {
        let mut cs = ConfigSpace::new_conventional();
        cs.set_physical(0x10, &[0x0c, 0, 0, 0xfe]).unwrap();
        cs.set_physical(0x18, &[0x01, 0xc0, 0, 0]).unwrap();
        cs.set_physical(0x1c, &[0x02, 0, 0, 0]).unwrap();
        assert_eq!(cs.advertised_bar_kind(0).unwrap(), (BarKind::Mem64, true));
        assert_eq!(cs.advertised_bar_kind(2).unwrap(), (BarKind::Io, false));
        assert_eq!(cs.advertised_bar_kind(4).unwrap(), (BarKind::Mem32, false));
        assert!(cs.advertised_bar_kind(3).is_err());
        assert_eq!(
            cs.advertised_bar_kind(ROM_INDEX).unwrap(),
            (BarKind::Rom, false)
        );
    }

    #[test]
    fn dump_address_is_kept() {
        let mut cs = ConfigSpace::new_conventional();
        cs.set_physical(0x10, &0xfebf_100cu32.to_le_bytes())
            .unwrap();
        cs.define_bar(0, BarKind::Mem32, 0x1000, true).unwrap();
        assert_eq!(cs.bar(0).map(|b| b.address), Some(0xfebf_1000));
    }
}
