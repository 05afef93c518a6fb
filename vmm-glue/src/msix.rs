// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The emulated MSI-X table and Pending Bit Array (PBA).
//!
//! The guest programs MSI-X vectors by writing the table, which lives in one of the device's BARs
//! and is always trapped. This module holds the guest-visible state (the entries, the per-vector
//! mask bits, the pending bits, and the function mask) and decodes accesses; it issues no
//! ioctl. [`crate::PassthroughDevice`] turns the [`VectorChange`]s it reports into route and
//! trigger updates.
//!
//! # Access rules (guest-hostile input)
//!
//! The PCI specification allows software to access the table and the PBA with aligned DWORD or
//! aligned QWORD accesses only, and leaves everything else undefined. This model defines it:
//!
//! * an access whose size is not 4 or 8, or whose offset is not a multiple of its size, is
//!   ignored: a write changes nothing, a read returns all zero bytes;
//! * an access that lies (even partly) past the end of the table or the PBA is ignored the same
//!   way;
//! * the PBA is read-only: writes to it are ignored;
//! * in the Vector Control word only bit 0 (mask) is writable; the reserved bits read as zero;
//! * Message Address, Upper Address and Data are stored as written. A write to the message of an
//!   unmasked vector (which the specification calls undefined) is applied, like QEMU does: the
//!   route is updated.
//!
//! The PBA is emulated for the whole life of the device: it is never switched on and off per
//! mask/unmask (seed 001 measured that toggling dominated the cost of masking guests).

/// Size in bytes of one MSI-X table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;

/// Maximum number of MSI-X vectors a function can have (Table Size is 11 bits, N-1 encoded).
pub const MSIX_MAX_VECTORS: u16 = 2048;

/// Vector Control bit 0: the vector is masked.
const VECTOR_CTRL_MASK: u32 = 1;

/// One MSI-X table entry, as the guest wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixEntry {
    /// Message Address (low 32 bits).
    pub addr_lo: u32,
    /// Message Upper Address.
    pub addr_hi: u32,
    /// Message Data.
    pub data: u32,
    /// Vector Control (only bit 0, the mask, is kept).
    pub vector_control: u32,
}

impl Default for MsixEntry {
    /// The reset value of an entry: zero message, vector masked (PCI spec: mask bit is set
    /// after reset).
    fn default() -> Self {
        MsixEntry {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            vector_control: VECTOR_CTRL_MASK,
        }
    }
}

impl MsixEntry {
    /// Whether this entry's own mask bit is set.
    pub fn masked(&self) -> bool {
        self.vector_control & VECTOR_CTRL_MASK != 0
    }

    /// The 64-bit message address.
    pub fn address(&self) -> u64 {
        (u64::from(self.addr_hi) << 32) | u64::from(self.addr_lo)
    }

    fn dword(&self, index: u64) -> u32 {
        match index {
            0 => self.addr_lo,
            1 => self.addr_hi,
            2 => self.data,
            _ => self.vector_control & VECTOR_CTRL_MASK,
        }
    }

    fn set_dword(&mut self, index: u64, value: u32) {
        match index {
            0 => self.addr_lo = value,
            1 => self.addr_hi = value,
            2 => self.data = value,
            _ => self.vector_control = value & VECTOR_CTRL_MASK,
        }
    }
}

/// What a table write changed for one vector, for the device to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorChange {
    /// The vector the write hit.
    pub vector: u16,
    /// Whether the entry's mask bit was set before the write.
    pub was_masked: bool,
    /// Whether the entry's mask bit is set after the write.
    pub now_masked: bool,
    /// Whether the message (address or data) changed.
    pub message_changed: bool,
}

/// The guest-visible MSI-X state of one function: table, PBA and function mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsixTable {
    entries: Vec<MsixEntry>,
    pba: Vec<u64>,
    function_mask: bool,
    enabled: bool,
}

/// Checks size and alignment; returns the size as u64 when the access is well formed.
fn access_size(offset: u64, len: usize) -> Option<u64> {
    let size = match len {
        4 => 4u64,
        8 => 8u64,
        _ => return None,
    };
    (offset % size == 0).then_some(size)
}

impl MsixTable {
    /// A table of `vectors` entries in reset state (all masked, nothing pending).
    ///
    /// `vectors` is clamped to 1..=[`MSIX_MAX_VECTORS`].
    pub fn new(vectors: u16) -> Self {
        let n = vectors.clamp(1, MSIX_MAX_VECTORS);
        MsixTable {
            entries: vec![MsixEntry::default(); usize::from(n)],
            pba: vec![0; usize::from(n).div_ceil(64)],
            function_mask: false,
            enabled: false,
        }
    }

    /// Number of vectors.
    pub fn vector_count(&self) -> u16 {
        // The length is bounded by MSIX_MAX_VECTORS at construction.
        u16::try_from(self.entries.len()).unwrap_or(MSIX_MAX_VECTORS)
    }

    /// Size of the table in bytes.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * MSIX_ENTRY_SIZE
    }

    /// Size of the PBA in bytes (whole QWORDs, as the spec lays it out).
    pub fn pba_size(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    /// The entry of `vector`, if it exists.
    pub fn entry(&self, vector: u16) -> Option<&MsixEntry> {
        self.entries.get(usize::from(vector))
    }

    /// All entries.
    pub fn entries(&self) -> &[MsixEntry] {
        &self.entries
    }

    /// Whether MSI-X Enable is set in the capability.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the Function Mask bit is set in the capability.
    pub fn function_masked(&self) -> bool {
        self.function_mask
    }

    /// Records the capability's MSI-X Enable and Function Mask bits.
    pub fn set_control(&mut self, enabled: bool, function_mask: bool) {
        self.enabled = enabled;
        self.function_mask = function_mask;
    }

    /// Whether `vector` is masked, by its own bit or by the function mask.
    /// A vector that does not exist reads as masked.
    pub fn is_masked(&self, vector: u16) -> bool {
        self.function_mask || self.entry(vector).is_none_or(MsixEntry::masked)
    }

    /// Whether the pending bit of `vector` is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        let v = usize::from(vector);
        self.pba
            .get(v / 64)
            .is_some_and(|word| word & (1u64 << (v % 64)) != 0)
    }

    /// Sets the pending bit of `vector` (a masked vector fired). Returns false when the
    /// vector does not exist.
    pub fn set_pending(&mut self, vector: u16) -> bool {
        let v = usize::from(vector);
        match self.pba.get_mut(v / 64) {
            Some(word) if v < self.entries.len() => {
                *word |= 1u64 << (v % 64);
                true
            }
            _ => false,
        }
    }

    /// Clears the pending bit of `vector` and returns whether it was set.
    pub fn take_pending(&mut self, vector: u16) -> bool {
        let v = usize::from(vector);
        match self.pba.get_mut(v / 64) {
            Some(word) => {
                let bit = 1u64 << (v % 64);
                let was = *word & bit != 0;
                *word &= !bit;
                was
            }
            None => false,
        }
    }

    /// The PBA as QWORDs (for migration).
    pub fn pba_words(&self) -> &[u64] {
        &self.pba
    }

    /// Replaces an entry wholesale (restore path). Returns false when the vector does not exist.
    pub fn set_entry(&mut self, vector: u16, entry: MsixEntry) -> bool {
        match self.entries.get_mut(usize::from(vector)) {
            Some(e) => {
                *e = MsixEntry {
                    vector_control: entry.vector_control & VECTOR_CTRL_MASK,
                    ..entry
                };
                true
            }
            None => false,
        }
    }

    /// Replaces the PBA words (restore path). Extra words are ignored, missing ones read as
    /// zero, and bits past the last vector are cleared.
    pub fn set_pba_words(&mut self, words: &[u64]) {
        let n = self.entries.len();
        for (i, w) in self.pba.iter_mut().enumerate() {
            let mut v = words.get(i).copied().unwrap_or(0);
            let valid = n.saturating_sub(i * 64);
            if valid < 64 {
                v &= (1u64 << valid) - 1;
            }
            *w = v;
        }
    }

    /// Decodes a guest read of the table at `offset` (relative to the table start).
    /// Ill-formed or out-of-range reads fill `data` with zeros (see the module docs).
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(size) = access_size(offset, data.len()) else {
            return;
        };
        if offset.saturating_add(size) > self.table_size() {
            return;
        }
        let Some(entry) = usize::try_from(offset / MSIX_ENTRY_SIZE)
            .ok()
            .and_then(|i| self.entries.get(i))
        else {
            return;
        };
        let first = (offset % MSIX_ENTRY_SIZE) / 4;
        let mut value = u64::from(entry.dword(first));
        if size == 8 {
            value |= u64::from(entry.dword(first + 1)) << 32;
        }
        let bytes = value.to_le_bytes();
        for (d, s) in data.iter_mut().zip(bytes.iter()) {
            *d = *s;
        }
    }

    /// Decodes a guest write of the table at `offset`. Returns what changed for the vector it
    /// hit, or `None` for an ignored access (see the module docs).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Option<VectorChange> {
        let size = access_size(offset, data.len())?;
        if offset.saturating_add(size) > self.table_size() {
            return None;
        }
        let index = usize::try_from(offset / MSIX_ENTRY_SIZE).ok()?;
        let vector = u16::try_from(index).ok()?;
        let entry = self.entries.get_mut(index)?;
        let before = *entry;
        let mut raw = [0u8; 8];
        for (d, s) in raw.iter_mut().zip(data.iter()) {
            *d = *s;
        }
        let value = u64::from_le_bytes(raw);
        let first = (offset % MSIX_ENTRY_SIZE) / 4;
        entry.set_dword(first, value as u32);
        if size == 8 {
            entry.set_dword(first + 1, (value >> 32) as u32);
        }
        let after = *entry;
        Some(VectorChange {
            vector,
            was_masked: before.masked(),
            now_masked: after.masked(),
            message_changed: before.addr_lo != after.addr_lo
                || before.addr_hi != after.addr_hi
                || before.data != after.data,
        })
    }

    /// Decodes a guest read of the PBA at `offset` (relative to the PBA start).
    /// Ill-formed or out-of-range reads fill `data` with zeros.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(size) = access_size(offset, data.len()) else {
            return;
        };
        if offset.saturating_add(size) > self.pba_size() {
            return;
        }
        let Some(word) = usize::try_from(offset / 8)
            .ok()
            .and_then(|i| self.pba.get(i))
        else {
            return;
        };
        let value = if size == 8 {
            *word
        } else {
            (*word >> ((offset % 8) * 8)) & 0xffff_ffff
        };
        let bytes = value.to_le_bytes();
        for (d, s) in data.iter_mut().zip(bytes.iter()) {
            *d = *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(t: &MsixTable, off: u64, len: usize) -> u64 {
        let mut buf = vec![0xaau8; len];
        t.read_table(off, &mut buf);
        let mut raw = [0u8; 8];
        raw[..len.min(8)].copy_from_slice(&buf[..len.min(8)]);
        u64::from_le_bytes(raw)
    }

    #[test]
    fn reset_state_is_all_masked_nothing_pending() {
        let t = MsixTable::new(65);
        assert_eq!(t.vector_count(), 65);
        assert_eq!(t.table_size(), 65 * 16);
        assert_eq!(t.pba_size(), 16);
        for v in 0..65 {
            assert!(t.is_masked(v));
            assert!(!t.is_pending(v));
        }
        // Vector Control reads 1 after reset.
        assert_eq!(rd(&t, 12, 4), 1);
    }

    #[test]
    fn dword_writes_program_an_entry_and_report_changes() {
        let mut t = MsixTable::new(4);
        let c = t.write_table(16, &0xfee0_1000u32.to_le_bytes()).unwrap();
        assert_eq!(c.vector, 1);
        assert!(c.message_changed);
        assert!(c.was_masked && c.now_masked);
        t.write_table(24, &0x4041u32.to_le_bytes()).unwrap();
        let c = t.write_table(28, &0u32.to_le_bytes()).unwrap();
        assert!(c.was_masked && !c.now_masked && !c.message_changed);
        let e = t.entry(1).unwrap();
        assert_eq!(e.address(), 0xfee0_1000);
        assert_eq!(e.data, 0x4041);
        assert!(!t.is_masked(1));
        assert_eq!(rd(&t, 16, 4), 0xfee0_1000);
        assert_eq!(rd(&t, 24, 8), 0x4041);
    }

    #[test]
    fn qword_write_sets_data_and_control_together() {
        let mut t = MsixTable::new(2);
        let c = t
            .write_table(8, &0x0000_0000_0000_0077u64.to_le_bytes())
            .unwrap();
        assert_eq!(c.vector, 0);
        assert!(c.message_changed && c.was_masked && !c.now_masked);
        assert_eq!(rd(&t, 8, 8), 0x77);
    }

    #[test]
    fn reserved_vector_control_bits_read_zero() {
        let mut t = MsixTable::new(1);
        t.write_table(12, &0xffff_fffeu32.to_le_bytes()).unwrap();
        assert_eq!(rd(&t, 12, 4), 0);
        assert!(!t.is_masked(0));
    }

    #[test]
    fn misaligned_or_odd_sized_table_accesses_are_ignored() {
        let mut t = MsixTable::new(2);
        let before = t.clone();
        for (off, len) in [
            (1u64, 4usize),
            (2, 4),
            (4, 8),
            (0, 1),
            (0, 2),
            (0, 3),
            (0, 16),
            (13, 1),
        ] {
            assert_eq!(t.write_table(off, &vec![0x55; len]), None, "{off}/{len}");
            assert_eq!(t, before);
            let mut buf = vec![0xaa; len];
            t.read_table(off, &mut buf);
            assert!(buf.iter().all(|b| *b == 0), "{off}/{len}");
        }
    }

    #[test]
    fn out_of_range_table_accesses_are_ignored() {
        let mut t = MsixTable::new(2);
        let before = t.clone();
        for off in [32u64, 36, 40, 4096, u64::MAX - 3, u64::MAX - 7] {
            assert_eq!(t.write_table(off, &[0x11; 4]), None);
            assert_eq!(t.write_table(off & !7, &[0x11; 8]), None);
        }
        assert_eq!(t, before);
        let mut buf = [0xaa; 4];
        t.read_table(32, &mut buf);
        assert_eq!(buf, [0; 4]);
    }

    #[test]
    fn pending_bits_set_read_and_clear() {
        let mut t = MsixTable::new(65);
        assert!(t.set_pending(64));
        assert!(t.set_pending(3));
        assert!(!t.set_pending(65));
        let mut q = [0u8; 8];
        t.read_pba(0, &mut q);
        assert_eq!(u64::from_le_bytes(q), 1 << 3);
        let mut d = [0u8; 4];
        t.read_pba(8, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1);
        assert!(t.take_pending(64));
        assert!(!t.take_pending(64));
        assert!(!t.is_pending(64));
        assert!(t.is_pending(3));
    }

    /// Reads only: the model has no PBA write entry point (the MMIO dispatch drops PBA writes;
    /// `tests/guest_hostile.rs` writes the PBA through MMIO and checks no bit changes).
    #[test]
    fn pba_reads_are_bounds_checked() {
        let mut t = MsixTable::new(3);
        t.set_pending(1);
        let mut d = [0xaa; 4];
        t.read_pba(4, &mut d);
        assert_eq!(d, [0; 4]);
        t.read_pba(8, &mut d);
        assert_eq!(d, [0; 4]);
        t.read_pba(2, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn function_mask_masks_every_vector() {
        let mut t = MsixTable::new(2);
        t.write_table(12, &0u32.to_le_bytes());
        assert!(!t.is_masked(0));
        t.set_control(true, true);
        assert!(t.is_masked(0));
        t.set_control(true, false);
        assert!(!t.is_masked(0));
        assert!(t.is_masked(1));
        assert!(t.is_masked(7));
    }

    #[test]
    fn restore_helpers_clamp_input() {
        let mut t = MsixTable::new(3);
        t.set_pba_words(&[u64::MAX, u64::MAX]);
        assert_eq!(t.pba_words(), &[0b111]);
        assert!(t.set_entry(
            2,
            MsixEntry {
                addr_lo: 1,
                addr_hi: 2,
                data: 3,
                vector_control: 0xf0
            }
        ));
        assert!(!t.is_masked(2));
        assert!(!t.set_entry(3, MsixEntry::default()));
    }
}
