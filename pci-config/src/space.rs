// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`ConfigSpace`]: the bytes of a function's configuration space and the masks that decide
//! what a guest sees and may change.

use crate::bar::{BarDef, BarMove, BAR_SLOTS};
use crate::capability::Capability;
use crate::regs::{self, Command, Status};
use crate::{Error, Result};

/// The configuration space of one PCI function, as a VMM presents it to a guest.
///
/// Five byte arrays of the same length (256 or 4096) make up the model:
///
/// * `physical`: the device's own bytes (for passthrough, what the VMM last read from or
///   forwarded to the device);
/// * `emulated` and `emulated_mask`: bits the VMM answers itself. A read returns
///   `(emulated & emulated_mask) | (physical & !emulated_mask)`;
/// * `write_mask`: bits a guest write may change;
/// * `w1c_mask`: write-1-to-clear bits; a guest write clears them where it writes a 1.
///
/// A guest write ([`ConfigSpace::write`]) never changes a bit that is neither writable nor
/// W1C, and never touches a `physical` bit that is emulated: emulated bits live in the
/// `emulated` array. The device side updates `physical` with [`ConfigSpace::set_physical`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSpace {
    physical: Vec<u8>,
    emulated: Vec<u8>,
    emulated_mask: Vec<u8>,
    write_mask: Vec<u8>,
    w1c_mask: Vec<u8>,
    pub(crate) bars: [Option<BarDef>; BAR_SLOTS],
}

/// What a guest write did besides changing bytes, for the VMM to act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteEffects {
    /// BARs (and the expansion ROM, index 6) whose decoded address changed, in index order.
    pub bar_moves: Vec<BarMove>,
    /// `(old, new)` command register when the write changed it.
    pub command: Option<(Command, Command)>,
    /// Capabilities (standard and extended) the write touched at least one byte of, in chain
    /// order. Empty when the chains are malformed.
    pub capabilities: Vec<Capability>,
    /// The bytes a passthrough VMM forwards to the device: the guest's data on bits that are
    /// not emulated, the emulated view on emulated bits. `None` when every written bit is
    /// emulated (nothing to forward).
    pub forward: Option<ForwardWrite>,
}

/// A write to pass on to the physical device (see [`WriteEffects::forward`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardWrite {
    /// Offset of the first byte.
    pub offset: u16,
    /// Bytes to write.
    pub data: Vec<u8>,
}

impl ConfigSpace {
    fn zeroed(size: usize) -> Self {
        ConfigSpace {
            physical: vec![0; size],
            emulated: vec![0; size],
            emulated_mask: vec![0; size],
            write_mask: vec![0; size],
            w1c_mask: vec![0; size],
            bars: [None; BAR_SLOTS],
        }
    }

    /// An all-zero 256-byte conventional space with the default header masks (see
    /// [`ConfigSpace::from_bytes`]).
    pub fn new_conventional() -> Self {
        let mut cs = Self::zeroed(regs::CONVENTIONAL_SIZE);
        cs.apply_default_masks();
        cs
    }

    /// An all-zero 4 KiB PCI Express space with the default header masks.
    pub fn new_extended() -> Self {
        let mut cs = Self::zeroed(regs::EXTENDED_SIZE);
        cs.apply_default_masks();
        cs
    }

    /// A space whose physical bytes are `bytes` (256 or 4096 of them), nothing emulated, and
    /// the default header masks: the [`Command::DEFAULT_WRITABLE`] command bits, cache line
    /// size, latency timer and interrupt line are writable; the [`Status::W1C`] status bits are
    /// write-1-to-clear. Everything else is read-only until the caller defines BARs
    /// ([`ConfigSpace::define_bar`]) or changes masks.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != regs::CONVENTIONAL_SIZE && bytes.len() != regs::EXTENDED_SIZE {
            return Err(Error::BadSpaceSize(bytes.len()));
        }
        let mut cs = Self::zeroed(bytes.len());
        cs.physical.copy_from_slice(bytes);
        cs.apply_default_masks();
        Ok(cs)
    }

    fn apply_default_masks(&mut self) {
        let cmd = Command::DEFAULT_WRITABLE.bits().to_le_bytes();
        let w1c = Status::W1C.bits().to_le_bytes();
        self.write_mask[regs::COMMAND..regs::COMMAND + 2].copy_from_slice(&cmd);
        self.w1c_mask[regs::STATUS..regs::STATUS + 2].copy_from_slice(&w1c);
        self.write_mask[regs::CACHE_LINE_SIZE] = 0xff;
        self.write_mask[regs::LATENCY_TIMER] = 0xff;
        self.write_mask[regs::INTERRUPT_LINE] = 0xff;
    }

    /// Size in bytes: 256 or 4096.
    pub fn size(&self) -> usize {
        self.physical.len()
    }

    /// Whether this is a 4 KiB PCI Express space (with room for extended capabilities).
    pub fn is_extended(&self) -> bool {
        self.size() == regs::EXTENDED_SIZE
    }

    pub(crate) fn check(&self, offset: usize, len: usize) -> Result<std::ops::Range<usize>> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(offset..end),
            _ => Err(Error::OutOfRange {
                offset,
                len,
                size: self.size(),
            }),
        }
    }

    fn composed(&self, i: usize) -> u8 {
        let (Some(p), Some(e), Some(m)) = (
            self.physical.get(i),
            self.emulated.get(i),
            self.emulated_mask.get(i),
        ) else {
            return 0;
        };
        (e & m) | (p & !m)
    }

    /// Reads what the guest sees at `offset` into `data`.
    pub fn read(&self, offset: usize, data: &mut [u8]) -> Result<()> {
        let range = self.check(offset, data.len())?;
        for (d, i) in data.iter_mut().zip(range) {
            *d = self.composed(i);
        }
        Ok(())
    }

    /// Reads one byte of the guest view.
    pub fn read_u8(&self, offset: usize) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read(offset, &mut b)?;
        Ok(b[0])
    }

    /// Reads a little-endian 16-bit value of the guest view.
    pub fn read_u16(&self, offset: usize) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian 32-bit value of the guest view.
    pub fn read_u32(&self, offset: usize) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// The whole guest view as one buffer.
    pub fn guest_view(&self) -> Vec<u8> {
        (0..self.size()).map(|i| self.composed(i)).collect()
    }

    /// A guest write of `data` at `offset`.
    ///
    /// Per bit: writable bits take the written value (in `emulated` when the bit is emulated,
    /// in `physical` otherwise); W1C bits are cleared where `data` has a 1; all other bits keep
    /// their value. Returns what the write did ([`WriteEffects`]): BAR moves, a command
    /// change, the capabilities touched and what to forward to a real device.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<WriteEffects> {
        let range = self.check(offset, data.len())?;
        let watches_bars = self.write_touches_decode(range.clone());
        let bars_before = if watches_bars {
            self.mapped_bars()
        } else {
            [None; BAR_SLOTS]
        };
        let command_before = self.command();

        let mut forward = Vec::with_capacity(data.len());
        let mut any_forward = false;
        for (&d, i) in data.iter().zip(range.clone()) {
            let (Some(p), Some(e), Some(&em), Some(&wm), Some(&w1c)) = (
                self.physical.get_mut(i),
                self.emulated.get_mut(i),
                self.emulated_mask.get(i),
                self.write_mask.get(i),
                self.w1c_mask.get(i),
            ) else {
                continue;
            };
            let wm = wm & !w1c;
            let clear = d & w1c;
            *e = ((*e & !(wm & em)) | (d & wm & em)) & !(clear & em);
            *p = ((*p & !(wm & !em)) | (d & wm & !em)) & !(clear & !em);
            if em != 0xff {
                any_forward = true;
            }
            forward.push((d & !em) | (*e & em));
        }

        let mut effects = WriteEffects::default();
        if watches_bars {
            let after = self.mapped_bars();
            for (index, (old, new)) in bars_before.iter().zip(after.iter()).enumerate() {
                if old != new {
                    effects.bar_moves.push(BarMove {
                        index: index as u8,
                        old: *old,
                        new: *new,
                    });
                }
            }
        }
        let command_after = self.command();
        if command_after != command_before {
            effects.command = Some((command_before, command_after));
        }
        effects.capabilities = self.capabilities_touching(range);
        if any_forward {
            effects.forward = Some(ForwardWrite {
                offset: offset as u16,
                data: forward,
            });
        }
        Ok(effects)
    }

    fn capabilities_touching(&self, range: std::ops::Range<usize>) -> Vec<Capability> {
        let mut caps = self.walk_standard().unwrap_or_default();
        caps.extend(self.walk_extended().unwrap_or_default());
        caps.retain(|c| {
            let start = usize::from(c.offset);
            let end = start + usize::from(c.len);
            start < range.end && range.start < end
        });
        caps
    }

    /// Device-side update of the physical bytes, ignoring every mask.
    pub fn set_physical(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        let range = self.check(offset, data.len())?;
        self.physical
            .get_mut(range)
            .map(|dst| dst.copy_from_slice(data))
            .ok_or(Error::OutOfRange {
                offset,
                len: data.len(),
                size: self.size(),
            })
    }

    fn masked_update(target: &mut [u8], mask_target: Option<&mut [u8]>, value: &[u8], mask: &[u8]) {
        for ((t, v), m) in target.iter_mut().zip(value).zip(mask) {
            *t = (*t & !m) | (v & m);
        }
        if let Some(mt) = mask_target {
            for (t, m) in mt.iter_mut().zip(mask) {
                *t |= m;
            }
        }
    }

    /// Emulates the bits of `mask` at `offset`: from now on they read as `value` and guest
    /// writes to them (where writable) stay in the emulated copy.
    pub fn set_emulated(&mut self, offset: usize, value: &[u8], mask: &[u8]) -> Result<()> {
        if value.len() != mask.len() {
            return Err(Error::MaskLength {
                mask: mask.len(),
                data: value.len(),
            });
        }
        let range = self.check(offset, value.len())?;
        let (Some(e), Some(m)) = (
            self.emulated.get_mut(range.clone()),
            self.emulated_mask.get_mut(range),
        ) else {
            return Ok(());
        };
        Self::masked_update(e, Some(m), value, mask);
        Ok(())
    }

    /// Emulates `value` in full (every bit of every byte) at `offset`.
    pub fn set_emulated_bytes(&mut self, offset: usize, value: &[u8]) -> Result<()> {
        self.set_emulated(offset, value, &vec![0xff; value.len()])
    }

    /// Stops emulating the bits of `mask` at `offset`: they read from `physical` again.
    pub fn clear_emulated(&mut self, offset: usize, mask: &[u8]) -> Result<()> {
        let range = self.check(offset, mask.len())?;
        if let Some(m) = self.emulated_mask.get_mut(range) {
            for (t, c) in m.iter_mut().zip(mask) {
                *t &= !c;
            }
        }
        Ok(())
    }

    /// Replaces the guest write mask of the bytes at `offset`.
    pub fn set_write_mask(&mut self, offset: usize, mask: &[u8]) -> Result<()> {
        let range = self.check(offset, mask.len())?;
        if let Some(m) = self.write_mask.get_mut(range) {
            m.copy_from_slice(mask);
        }
        Ok(())
    }

    /// Replaces the write-1-to-clear mask of the bytes at `offset`.
    pub fn set_w1c_mask(&mut self, offset: usize, mask: &[u8]) -> Result<()> {
        let range = self.check(offset, mask.len())?;
        if let Some(m) = self.w1c_mask.get_mut(range) {
            m.copy_from_slice(mask);
        }
        Ok(())
    }

    /// The physical bytes.
    pub fn physical(&self) -> &[u8] {
        &self.physical
    }

    /// The emulated values (meaningful only where [`ConfigSpace::emulated_mask`] is set).
    pub fn emulated(&self) -> &[u8] {
        &self.emulated
    }

    /// Per-bit emulation mask.
    pub fn emulated_mask(&self) -> &[u8] {
        &self.emulated_mask
    }

    /// Per-bit guest write mask.
    pub fn write_mask(&self) -> &[u8] {
        &self.write_mask
    }

    /// Per-bit write-1-to-clear mask.
    pub fn w1c_mask(&self) -> &[u8] {
        &self.w1c_mask
    }

    /// Replaces the emulated values and the emulation mask in full (for restoring a saved
    /// state). Both must be [`ConfigSpace::size`] bytes long; on error nothing changes.
    pub fn restore_emulated(&mut self, values: &[u8], mask: &[u8]) -> Result<()> {
        for len in [values.len(), mask.len()] {
            if len != self.size() {
                return Err(Error::MaskLength {
                    mask: len,
                    data: self.size(),
                });
            }
        }
        self.emulated.copy_from_slice(values);
        self.emulated_mask.copy_from_slice(mask);
        Ok(())
    }

    /// Vendor ID as the guest sees it.
    pub fn vendor_id(&self) -> u16 {
        self.read_u16(regs::VENDOR_ID).unwrap_or(0xffff)
    }

    /// Device ID as the guest sees it.
    pub fn device_id(&self) -> u16 {
        self.read_u16(regs::DEVICE_ID).unwrap_or(0xffff)
    }

    /// Header type without the multi-function bit (0 endpoint, 1 bridge, 2 CardBus).
    pub fn header_type(&self) -> u8 {
        self.read_u8(regs::HEADER_TYPE).unwrap_or(0) & 0x7f
    }

    /// Command register as the guest sees it (unknown bits dropped).
    pub fn command(&self) -> Command {
        Command::from_bits_truncate(self.read_u16(regs::COMMAND).unwrap_or(0))
    }

    /// Status register as the guest sees it (unknown bits dropped).
    pub fn status(&self) -> Status {
        Status::from_bits_truncate(self.read_u16(regs::STATUS).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_composes_emulated_over_physical() {
        let mut cs = ConfigSpace::new_conventional();
        cs.set_physical(0x40, &[0xaa, 0x55]).unwrap();
        cs.set_emulated(0x40, &[0x0f, 0xff], &[0x0f, 0x00]).unwrap();
        assert_eq!(cs.read_u16(0x40).unwrap(), 0x55af);
        cs.clear_emulated(0x40, &[0xff, 0xff]).unwrap();
        assert_eq!(cs.read_u16(0x40).unwrap(), 0x55aa);
    }

    #[test]
    fn write_respects_write_and_w1c_masks() {
        let mut cs = ConfigSpace::new_conventional();
        cs.set_physical(0x06, &[0x10, 0xf9]).unwrap(); // cap list + all error bits
                                                       // Status: write 1 to bit 15 only; bit 4 is read-only.
        let fx = cs.write(0x06, &[0xff, 0x80]).unwrap();
        assert_eq!(cs.read_u16(0x06).unwrap(), 0x7910);
        assert_eq!(fx.forward.map(|f| f.data), Some(vec![0xff, 0x80]));
        // Command: only the default writable bits stick.
        cs.write(0x04, &[0xff, 0xff]).unwrap();
        assert_eq!(cs.command(), Command::DEFAULT_WRITABLE);
    }

    #[test]
    fn emulated_writable_bits_stay_in_the_emulated_copy() {
        let mut cs = ConfigSpace::new_conventional();
        cs.set_physical(0x50, &[0x11]).unwrap();
        cs.set_emulated(0x50, &[0x00], &[0xf0]).unwrap();
        cs.set_write_mask(0x50, &[0xff]).unwrap();
        let fx = cs.write(0x50, &[0xab]).unwrap();
        assert_eq!(cs.read_u8(0x50).unwrap(), 0xab);
        assert_eq!(cs.physical()[0x50], 0x1b);
        assert_eq!(cs.emulated()[0x50] & 0xf0, 0xa0);
        // Forwarded: guest data on the low nibble, emulated view on the high one.
        assert_eq!(fx.forward.map(|f| f.data), Some(vec![0xab]));
    }

    #[test]
    fn fully_emulated_write_forwards_nothing() {
        let mut cs = ConfigSpace::new_conventional();
        cs.set_emulated_bytes(0x60, &[0; 4]).unwrap();
        assert_eq!(cs.write(0x60, &[1, 2, 3, 4]).unwrap().forward, None);
    }

    #[test]
    fn out_of_range_is_an_error_and_changes_nothing() {
        let mut cs = ConfigSpace::new_conventional();
        let before = cs.clone();
        assert!(matches!(
            cs.write(0xfe, &[0; 4]),
            Err(Error::OutOfRange {
                offset: 0xfe,
                len: 4,
                size: 256
            })
        ));
        assert!(cs.read_u32(usize::MAX).is_err());
        assert_eq!(cs, before);
        assert_eq!(
            ConfigSpace::from_bytes(&[0; 100]),
            Err(Error::BadSpaceSize(100))
        );
    }

    #[test]
    fn restore_emulated_round_trips() {
        let mut cs = ConfigSpace::new_extended();
        cs.set_emulated_bytes(0x200, &[9, 8, 7]).unwrap();
        let (values, mask) = (cs.emulated().to_vec(), cs.emulated_mask().to_vec());
        let mut other = ConfigSpace::new_extended();
        other.restore_emulated(&values, &mask).unwrap();
        assert_eq!(other.read_u32(0x200).unwrap(), 0x0007_0809);
        assert!(other.restore_emulated(&values[..10], &mask).is_err());
    }
}
