// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The emulated device's own config registers, under vfio-pci: what `pci_read_config_*` reads
//! and how a write that reaches the device is taken (QEMU's `wmask` and `w1cmask`).

/// The emulated device's own config registers.
#[derive(Debug, Clone)]
pub(crate) struct PhysConfig {
    bytes: Vec<u8>,
    /// Bits a config write changes.
    wmask: Vec<u8>,
    /// Bits a config write of 1 clears.
    w1c: Vec<u8>,
}

impl PhysConfig {
    /// `bytes` with nothing writable.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        let n = bytes.len();
        PhysConfig {
            bytes,
            wmask: vec![0; n],
            w1c: vec![0; n],
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Make the bits of `mask` (`len` bytes at `at`) writable.
    pub(crate) fn writable(&mut self, at: usize, len: usize, mask: u32) {
        for (i, b) in mask.to_le_bytes().iter().take(len).enumerate() {
            if let Some(m) = self.wmask.get_mut(at + i) {
                *m |= *b;
            }
        }
    }

    /// Make the bits of `mask` write-1-to-clear.
    pub(crate) fn write_one_to_clear(&mut self, at: usize, len: usize, mask: u32) {
        for (i, b) in mask.to_le_bytes().iter().take(len).enumerate() {
            if let Some(m) = self.w1c.get_mut(at + i) {
                *m |= *b;
            }
        }
    }

    pub(crate) fn read(&self, at: usize, len: usize) -> u32 {
        let mut v = [0u8; 4];
        for (i, slot) in v.iter_mut().take(len).enumerate() {
            *slot = self.bytes.get(at + i).copied().unwrap_or(0);
        }
        u32::from_le_bytes(v)
    }

    /// A config write as the device takes it (`pci_default_write_config()` in QEMU terms).
    pub(crate) fn write(&mut self, at: usize, len: usize, value: u32) {
        for (i, b) in value.to_le_bytes().iter().take(len).enumerate() {
            let (Some(cur), Some(&wm), Some(&w1)) = (
                self.bytes.get_mut(at + i),
                self.wmask.get(at + i),
                self.w1c.get(at + i),
            ) else {
                continue;
            };
            *cur = ((*cur & !wm) | (b & wm)) & !(b & w1);
        }
    }

    /// The device itself sets or clears bits (status bits, state the host kernel programs).
    pub(crate) fn set_bits(&mut self, at: usize, len: usize, mask: u32, on: bool) {
        let v = self.read(at, len);
        let v = if on { v | mask } else { v & !mask };
        for (i, b) in v.to_le_bytes().iter().take(len).enumerate() {
            if let Some(cur) = self.bytes.get_mut(at + i) {
                *cur = *b;
            }
        }
    }
}
