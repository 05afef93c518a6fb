// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shared pieces of the workspace's fuzz targets: a cursor over the fuzzer's bytes, the
//! operation encodings the targets decode (so the seed generator writes exactly what the
//! targets read), and the config-space fixtures compiled in.
//!
//! The targets live in `fuzz_targets/`; `cargo xtask fuzz` builds and runs them.

#![forbid(unsafe_code)]

pub mod config_ops;
pub mod lspci_ops;
pub mod migration_ops;
pub mod msix_ops;
pub mod passthrough_ops;
pub mod stream_ops;

/// A cursor over fuzzer input. Every read returns `None` once the bytes run out, which ends
/// the target's operation loop.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.data.len() {
            return None;
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Some(head)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).and_then(|b| b.first().copied())
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }
}

/// The `lspci -x` dumps of `fixtures/pci-config/`, by file name.
pub const FIXTURES: &[(&str, &str)] = &[
    (
        "00-00-0_8086-0d57",
        include_str!("../../fixtures/pci-config/00-00-0_8086-0d57.lspci-x"),
    ),
    (
        "00-01-0_1af4-1045",
        include_str!("../../fixtures/pci-config/00-01-0_1af4-1045.lspci-x"),
    ),
    (
        "00-02-0_1af4-1042",
        include_str!("../../fixtures/pci-config/00-02-0_1af4-1042.lspci-x"),
    ),
    (
        "00-03-0_1af4-1041",
        include_str!("../../fixtures/pci-config/00-03-0_1af4-1041.lspci-x"),
    ),
    (
        "00-04-0_1af4-1053",
        include_str!("../../fixtures/pci-config/00-04-0_1af4-1053.lspci-x"),
    ),
    (
        "00-05-0_1af4-1044",
        include_str!("../../fixtures/pci-config/00-05-0_1af4-1044.lspci-x"),
    ),
];
