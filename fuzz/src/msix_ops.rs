// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `msix_mmio`: MSI-X table and PBA accesses of any offset, size and alignment.
//!
//! The accesses go to `vmm_glue`'s emulated [`MsixTable`], and every result is compared with a
//! reference model written here from the access rules `vmm_glue::msix` documents: only aligned
//! 4- and 8-byte accesses inside the table or PBA take effect, a write meant for the PBA never
//! reaches the table, only the mask bit of Vector Control is kept, ignored reads return zeros.
//!
//! Input: one byte of vector count (1..=256, scaled), then operations (see [`Op`]).

use vmm_glue::msix::{MsixTable, MSIX_ENTRY_SIZE};

use crate::Bytes;

/// One operation of the `msix_mmio` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Guest read of the table.
    ReadTable {
        /// Offset from the table start.
        offset: u32,
        /// Access size in bytes.
        len: u8,
    },
    /// Guest write of the table.
    WriteTable {
        /// Offset from the table start.
        offset: u32,
        /// Bytes written.
        data: Vec<u8>,
    },
    /// Guest read of the PBA.
    ReadPba {
        /// Offset from the PBA start.
        offset: u32,
        /// Access size in bytes.
        len: u8,
    },
    /// Guest write of the PBA (must be ignored).
    WritePba {
        /// Offset from the PBA start.
        offset: u32,
        /// Bytes written.
        data: Vec<u8>,
    },
    /// The device fired `vector` while it was masked: its pending bit is set.
    SetPending(u16),
    /// The VMM delivered a pending vector after unmask.
    TakePending(u16),
    /// The capability's control bits.
    Control {
        /// MSI-X Enable.
        enabled: bool,
        /// Function Mask.
        function_mask: bool,
    },
}

impl Op {
    /// Decodes the next operation, `None` when the input is exhausted.
    pub fn decode(b: &mut Bytes<'_>) -> Option<Op> {
        let code = b.u8()?;
        Some(match code % 7 {
            0 | 2 => {
                let offset = b.u32()?;
                let len = b.u8()? % 17;
                if code % 7 == 0 {
                    Op::ReadTable { offset, len }
                } else {
                    Op::ReadPba { offset, len }
                }
            }
            1 | 3 => {
                let offset = b.u32()?;
                let n = usize::from(b.u8()? % 17);
                let data = b.take(n)?.to_vec();
                if code % 7 == 1 {
                    Op::WriteTable { offset, data }
                } else {
                    Op::WritePba { offset, data }
                }
            }
            4 => Op::SetPending(b.u16()?),
            5 => Op::TakePending(b.u16()?),
            _ => {
                let bits = b.u8()?;
                Op::Control {
                    enabled: bits & 1 != 0,
                    function_mask: bits & 2 != 0,
                }
            }
        })
    }

    /// Appends the encoding [`Op::decode`] reads back (for seed files).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::ReadTable { offset, len } | Op::ReadPba { offset, len } => {
                out.push(if matches!(self, Op::ReadTable { .. }) {
                    0
                } else {
                    2
                });
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(*len);
            }
            Op::WriteTable { offset, data } | Op::WritePba { offset, data } => {
                out.push(if matches!(self, Op::WriteTable { .. }) {
                    1
                } else {
                    3
                });
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(data.len() as u8);
                out.extend_from_slice(data);
            }
            Op::SetPending(v) => {
                out.push(4);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Op::TakePending(v) => {
                out.push(5);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Op::Control {
                enabled,
                function_mask,
            } => {
                out.push(6);
                out.push(u8::from(*enabled) | (u8::from(*function_mask) << 1));
            }
        }
    }
}

/// The reference: table bytes and pending bits, per the documented access rules.
struct Model {
    table: Vec<u8>,
    pending: Vec<bool>,
}

impl Model {
    fn new(vectors: usize) -> Self {
        let mut table = vec![0u8; vectors * 16];
        for v in 0..vectors {
            table[v * 16 + 12] = 1; // masked after reset
        }
        Model {
            table,
            pending: vec![false; vectors],
        }
    }

    fn pba_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.pending.len().div_ceil(64) * 8];
        for (v, p) in self.pending.iter().enumerate() {
            if *p {
                out[v / 8] |= 1 << (v % 8);
            }
        }
        out
    }

    fn well_formed(offset: u64, len: usize, limit: usize) -> bool {
        (len == 4 || len == 8) && offset % len as u64 == 0 && offset + len as u64 <= limit as u64
    }

    fn read(bytes: &[u8], offset: u64, len: usize) -> Vec<u8> {
        if Self::well_formed(offset, len, bytes.len()) {
            let o = offset as usize;
            bytes[o..o + len].to_vec()
        } else {
            vec![0; len]
        }
    }

    fn write_table(&mut self, offset: u64, data: &[u8]) -> bool {
        if !Self::well_formed(offset, data.len(), self.table.len()) {
            return false;
        }
        let o = offset as usize;
        self.table[o..o + data.len()].copy_from_slice(data);
        // Vector Control keeps only the mask bit.
        let entry = o / 16 * 16;
        self.table[entry + 12] &= 1;
        self.table[entry + 13..entry + 16].fill(0);
        true
    }

    fn masked(&self, v: usize) -> bool {
        self.table[v * 16 + 12] & 1 != 0
    }
}

/// Runs one input against [`MsixTable`] and the reference model. Panics on a disagreement.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    let Some(n) = input.u8() else {
        return;
    };
    // 1..=256 vectors, biased towards small tables and the 64-vector PBA word boundary.
    let vectors = usize::from(n) + 1;
    let mut table = MsixTable::new(vectors as u16);
    let mut model = Model::new(vectors);
    assert_eq!(usize::from(table.vector_count()), vectors);
    assert_eq!(table.table_size(), vectors as u64 * MSIX_ENTRY_SIZE);
    assert_eq!(table.pba_size(), vectors.div_ceil(64) as u64 * 8);

    while let Some(op) = Op::decode(&mut input) {
        match &op {
            Op::ReadTable { offset, len } => {
                let mut buf = vec![0xa5u8; usize::from(*len)];
                table.read_table(u64::from(*offset), &mut buf);
                let want = Model::read(&model.table, u64::from(*offset), buf.len());
                assert_eq!(buf, want, "{op:?}");
            }
            Op::ReadPba { offset, len } => {
                let mut buf = vec![0xa5u8; usize::from(*len)];
                table.read_pba(u64::from(*offset), &mut buf);
                let want = Model::read(&model.pba_bytes(), u64::from(*offset), buf.len());
                assert_eq!(buf, want, "{op:?}");
            }
            Op::WriteTable { offset, data } => {
                let o = u64::from(*offset);
                let vector = (o / 16) as usize;
                let was_masked = vector < vectors && model.masked(vector);
                let old_msg =
                    (vector < vectors).then(|| model.table[vector * 16..vector * 16 + 12].to_vec());
                let applied = model.write_table(o, data);
                let change = table.write_table(o, data);
                assert_eq!(change.is_some(), applied, "{op:?}: applied");
                if let Some(c) = change {
                    assert_eq!(usize::from(c.vector), vector, "{op:?}: vector");
                    assert_eq!(c.was_masked, was_masked, "{op:?}: was_masked");
                    assert_eq!(c.now_masked, model.masked(vector), "{op:?}: now_masked");
                    let new_msg = model.table[vector * 16..vector * 16 + 12].to_vec();
                    assert_eq!(
                        c.message_changed,
                        old_msg.as_deref() != Some(&new_msg[..]),
                        "{op:?}: message_changed"
                    );
                }
            }
            Op::WritePba { offset, data } => {
                // `MsixTable` has no PBA write entry point: the PBA's read-only rule is kept
                // by vmm-glue's MMIO dispatch, which `passthrough_mmio` fuzzes. What the table
                // must not do is take a PBA write for a table write: the write goes where the
                // PBA sits in the usual layout, right after the table, and must be refused;
                // the PBA then reads back as before (and the whole state is compared below).
                let pba_before = model.pba_bytes();
                let at = table.table_size().saturating_add(u64::from(*offset));
                assert_eq!(
                    table.write_table(at, data),
                    None,
                    "{op:?}: a write past the table's end was taken"
                );
                let mut buf = vec![0xa5u8; data.len()];
                table.read_pba(u64::from(*offset), &mut buf);
                let want = Model::read(&pba_before, u64::from(*offset), buf.len());
                assert_eq!(buf, want, "{op:?}: the PBA read after the write");
            }
            Op::SetPending(v) => {
                let v = usize::from(*v);
                let ok = table.set_pending(v as u16);
                assert_eq!(ok, v < vectors, "{op:?}");
                if let Some(p) = model.pending.get_mut(v) {
                    *p = true;
                }
            }
            Op::TakePending(v) => {
                let was = table.take_pending(*v);
                let want = model
                    .pending
                    .get_mut(usize::from(*v))
                    .map(std::mem::take)
                    .unwrap_or(false);
                assert_eq!(was, want, "{op:?}");
            }
            Op::Control {
                enabled,
                function_mask,
            } => {
                table.set_control(*enabled, *function_mask);
                assert_eq!(table.enabled(), *enabled);
                assert_eq!(table.function_masked(), *function_mask);
            }
        }
        // Whole-state agreement after every operation.
        for v in 0..vectors {
            let e = table.entry(v as u16).copied();
            let m = &model.table[v * 16..v * 16 + 16];
            let dw = |k: usize| u32::from_le_bytes([m[k], m[k + 1], m[k + 2], m[k + 3]]);
            let e = e.unwrap_or_else(|| panic!("vector {v} missing"));
            assert_eq!(
                (e.addr_lo, e.addr_hi, e.data, e.vector_control),
                (dw(0), dw(4), dw(8), dw(12)),
                "entry {v}"
            );
            assert_eq!(table.is_pending(v as u16), model.pending[v], "pending {v}");
            assert_eq!(
                table.is_masked(v as u16),
                table.function_masked() || model.masked(v),
                "is_masked {v}"
            );
        }
        let words: Vec<u8> = table
            .pba_words()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(words, model.pba_bytes(), "PBA words");
    }
}
