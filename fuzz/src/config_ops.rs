// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `config_space`: sequences of guest reads and writes, interleaved with VMM-side mask
//! and capability changes, against a [`ConfigSpace`] built from a fixture.
//!
//! After every guest write the target checks the mask invariants bit by bit against a model
//! computed from the state before the write:
//!
//! * a bit that is neither writable nor write-1-to-clear keeps its guest-visible value;
//! * a W1C bit is cleared where the guest wrote 1 and kept where it wrote 0 (W1C wins over a
//!   write mask on the same bit);
//! * a writable bit takes the written value;
//! * a guest write never changes a physical bit that is emulated, an emulated value that is
//!   not emulated, any mask, or any byte outside the written range;
//! * the forwarded bytes are the guest's on unemulated bits and the emulated view elsewhere,
//!   and nothing is forwarded when every written bit is emulated;
//! * reported BAR moves and command changes agree with the space after the write;
//! * out-of-range accesses fail and change nothing.
//!
//! Input: one selector byte (which fixture, or an empty space), then operations (see
//! [`Op`]) until the bytes run out.

use pci_config::{BarKind, CapabilityKind, ConfigSpace};

use crate::{Bytes, FIXTURES};

/// One operation of the `config_space` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Guest read of `len` bytes.
    Read {
        /// Offset.
        offset: u16,
        /// Length in bytes.
        len: u8,
    },
    /// Guest write.
    Write {
        /// Offset.
        offset: u16,
        /// Bytes written.
        data: Vec<u8>,
    },
    /// VMM: emulate the bits of `mask` with `value`.
    SetEmulated {
        /// Offset.
        offset: u16,
        /// Emulated value.
        value: Vec<u8>,
        /// Bits to emulate.
        mask: Vec<u8>,
    },
    /// VMM: stop emulating the bits of `mask`.
    ClearEmulated {
        /// Offset.
        offset: u16,
        /// Bits to stop emulating.
        mask: Vec<u8>,
    },
    /// VMM: replace write mask bytes.
    SetWriteMask {
        /// Offset.
        offset: u16,
        /// New mask.
        mask: Vec<u8>,
    },
    /// VMM: replace W1C mask bytes.
    SetW1cMask {
        /// Offset.
        offset: u16,
        /// New mask.
        mask: Vec<u8>,
    },
    /// VMM: define a BAR.
    DefineBar {
        /// Index (6 is the ROM).
        index: u8,
        /// 0 Mem32, 1 Mem64, 2 I/O, 3 ROM.
        kind: u8,
        /// log2 of the size.
        size_log2: u8,
        /// Prefetchable.
        prefetchable: bool,
    },
    /// VMM: hide every capability with this ID.
    Hide {
        /// Extended chain.
        extended: bool,
        /// Capability ID.
        id: u16,
    },
    /// VMM: insert a virtual capability.
    Insert {
        /// Extended chain.
        extended: bool,
        /// Its bytes, header included.
        bytes: Vec<u8>,
    },
    /// Device side: set physical bytes.
    SetPhysical {
        /// Offset.
        offset: u16,
        /// Bytes.
        data: Vec<u8>,
    },
}

const READ: u8 = 0;
const WRITE: u8 = 1;
const SET_EMULATED: u8 = 2;
const CLEAR_EMULATED: u8 = 3;
const SET_WRITE_MASK: u8 = 4;
const SET_W1C_MASK: u8 = 5;
const DEFINE_BAR: u8 = 6;
const HIDE: u8 = 7;
const INSERT: u8 = 8;
const SET_PHYSICAL: u8 = 9;
const OPS: u8 = 10;

impl Op {
    /// Decodes the next operation, `None` when the input is exhausted.
    pub fn decode(b: &mut Bytes<'_>) -> Option<Op> {
        let code = b.u8()? % OPS;
        Some(match code {
            READ => Op::Read {
                offset: b.u16()?,
                len: b.u8()?,
            },
            WRITE => {
                let offset = b.u16()?;
                let n = usize::from(b.u8()?);
                Op::Write {
                    offset,
                    data: b.take(n)?.to_vec(),
                }
            }
            SET_EMULATED => {
                let offset = b.u16()?;
                let n = usize::from(b.u8()?);
                Op::SetEmulated {
                    offset,
                    value: b.take(n)?.to_vec(),
                    mask: b.take(n)?.to_vec(),
                }
            }
            CLEAR_EMULATED | SET_WRITE_MASK | SET_W1C_MASK | SET_PHYSICAL => {
                let offset = b.u16()?;
                let n = usize::from(b.u8()?);
                let data = b.take(n)?.to_vec();
                match code {
                    CLEAR_EMULATED => Op::ClearEmulated { offset, mask: data },
                    SET_WRITE_MASK => Op::SetWriteMask { offset, mask: data },
                    SET_W1C_MASK => Op::SetW1cMask { offset, mask: data },
                    _ => Op::SetPhysical { offset, data },
                }
            }
            DEFINE_BAR => {
                let index = b.u8()?;
                let kind = b.u8()?;
                let size_log2 = b.u8()?;
                Op::DefineBar {
                    index: index & 0x7f,
                    kind: kind % 4,
                    size_log2: size_log2 % 64,
                    prefetchable: index & 0x80 != 0,
                }
            }
            HIDE => {
                let id = b.u16()?;
                Op::Hide {
                    extended: id & 0x8000 != 0,
                    id: id & 0x7fff,
                }
            }
            _ => {
                let n = b.u8()?;
                Op::Insert {
                    extended: n & 0x80 != 0,
                    bytes: b.take(usize::from(n & 0x7f))?.to_vec(),
                }
            }
        })
    }

    /// Appends the encoding [`Op::decode`] reads back (for seed files).
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn with_data(out: &mut Vec<u8>, code: u8, offset: u16, data: &[u8]) {
            out.push(code);
            out.extend_from_slice(&offset.to_le_bytes());
            out.push(data.len() as u8);
            out.extend_from_slice(data);
        }
        match self {
            Op::Read { offset, len } => {
                out.push(READ);
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(*len);
            }
            Op::Write { offset, data } => with_data(out, WRITE, *offset, data),
            Op::SetEmulated {
                offset,
                value,
                mask,
            } => {
                with_data(out, SET_EMULATED, *offset, value);
                out.extend_from_slice(mask);
            }
            Op::ClearEmulated { offset, mask } => with_data(out, CLEAR_EMULATED, *offset, mask),
            Op::SetWriteMask { offset, mask } => with_data(out, SET_WRITE_MASK, *offset, mask),
            Op::SetW1cMask { offset, mask } => with_data(out, SET_W1C_MASK, *offset, mask),
            Op::SetPhysical { offset, data } => with_data(out, SET_PHYSICAL, *offset, data),
            Op::DefineBar {
                index,
                kind,
                size_log2,
                prefetchable,
            } => {
                out.push(DEFINE_BAR);
                out.push(index | if *prefetchable { 0x80 } else { 0 });
                out.push(*kind);
                out.push(*size_log2);
            }
            Op::Hide { extended, id } => {
                out.push(HIDE);
                let raw = id | if *extended { 0x8000 } else { 0 };
                out.extend_from_slice(&raw.to_le_bytes());
            }
            Op::Insert { extended, bytes } => {
                out.push(INSERT);
                out.push(bytes.len() as u8 | if *extended { 0x80 } else { 0 });
                out.extend_from_slice(bytes);
            }
        }
    }
}

/// Parses the hex rows of an `lspci -x` fixture (the target's own small reader, so this target
/// does not depend on the dump parser it is not testing).
pub fn fixture_bytes(text: &str) -> Vec<u8> {
    let mut bytes = vec![0u8; 256];
    for line in text.lines() {
        let Some((off, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(off) = usize::from_str_radix(off.trim(), 16) else {
            continue;
        };
        for (i, tok) in rest.split_whitespace().enumerate() {
            if let (Ok(v), Some(slot)) = (u8::from_str_radix(tok, 16), bytes.get_mut(off + i)) {
                *slot = v;
            }
        }
    }
    bytes
}

/// The space a run starts from: selector `sel` picks a fixture, or an empty 256-byte or
/// 4 KiB space. A fixture with the selector's high bit set is placed in a 4 KiB space.
pub fn base_space(sel: u8) -> ConfigSpace {
    let n = FIXTURES.len() + 2;
    let which = usize::from(sel & 0x7f) % n;
    match FIXTURES.get(which) {
        Some((_, text)) => {
            let mut bytes = fixture_bytes(text);
            if sel & 0x80 != 0 {
                bytes.resize(4096, 0);
            }
            ConfigSpace::from_bytes(&bytes).unwrap_or_else(|_| ConfigSpace::new_conventional())
        }
        None if which == FIXTURES.len() => ConfigSpace::new_conventional(),
        None => ConfigSpace::new_extended(),
    }
}

/// Runs one input: decode, apply, check invariants. Panics on a violated invariant.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    let Some(sel) = input.u8() else {
        return;
    };
    let mut cs = base_space(sel);
    let trace = std::env::var_os("PASSTHROUGH_FUZZ_TRACE").is_some();
    if trace {
        eprintln!("base {sel}");
    }
    while let Some(op) = Op::decode(&mut input) {
        if trace {
            eprintln!("{op:?}");
        }
        apply(&mut cs, &op);
    }
}

fn kind_of(k: u8) -> BarKind {
    match k {
        0 => BarKind::Mem32,
        1 => BarKind::Mem64,
        2 => BarKind::Io,
        _ => BarKind::Rom,
    }
}

fn apply(cs: &mut ConfigSpace, op: &Op) {
    let size = cs.size();
    let fits = |offset: u16, len: usize| usize::from(offset) + len <= size;
    match op {
        Op::Read { offset, len } => {
            let mut buf = vec![0u8; usize::from(*len)];
            let r = cs.read(usize::from(*offset), &mut buf);
            assert_eq!(r.is_ok(), fits(*offset, buf.len()), "read {op:?}: {r:?}");
            if r.is_ok() {
                let view = cs.guest_view();
                let start = usize::from(*offset);
                assert_eq!(
                    Some(&buf[..]),
                    view.get(start..start + buf.len()),
                    "read disagrees with guest_view"
                );
            }
        }
        Op::Write { offset, data } => check_write(cs, usize::from(*offset), data),
        Op::SetEmulated {
            offset,
            value,
            mask,
        } => {
            let before = cs.clone();
            let r = cs.set_emulated(usize::from(*offset), value, mask);
            if r.is_err() {
                assert_eq!(*cs, before, "failed set_emulated changed the space");
            }
        }
        Op::ClearEmulated { offset, mask } => {
            let before = cs.clone();
            if cs.clear_emulated(usize::from(*offset), mask).is_err() {
                assert_eq!(*cs, before, "failed clear_emulated changed the space");
            }
        }
        Op::SetWriteMask { offset, mask } => {
            let r = cs.set_write_mask(usize::from(*offset), mask);
            assert_eq!(r.is_ok(), fits(*offset, mask.len()));
        }
        Op::SetW1cMask { offset, mask } => {
            let r = cs.set_w1c_mask(usize::from(*offset), mask);
            assert_eq!(r.is_ok(), fits(*offset, mask.len()));
        }
        Op::SetPhysical { offset, data } => {
            let before = cs.clone();
            let r = cs.set_physical(usize::from(*offset), data);
            assert_eq!(r.is_ok(), fits(*offset, data.len()));
            if r.is_err() {
                assert_eq!(*cs, before, "failed set_physical changed the space");
            }
        }
        Op::DefineBar {
            index,
            kind,
            size_log2,
            prefetchable,
        } => {
            let before = cs.clone();
            let size = 1u64 << size_log2;
            match cs.define_bar(*index, kind_of(*kind), size, *prefetchable) {
                Ok(_) => {
                    let bar = cs.bar(*index);
                    assert!(bar.is_some(), "defined BAR {index} not reported");
                    if let Some(bar) = bar {
                        assert_eq!(bar.size, size, "BAR {index} size");
                    }
                }
                Err(_) => assert_eq!(*cs, before, "failed define_bar changed the space"),
            }
        }
        Op::Hide { extended, id } => {
            let kind = if *extended {
                CapabilityKind::Extended
            } else {
                CapabilityKind::Standard
            };
            let before = cs.clone();
            match cs.hide_all(kind, *id) {
                Ok(_) => {
                    // Whatever was hidden is gone from the walk (a Null placeholder may stay).
                    if let Ok(caps) = cs.capabilities() {
                        assert!(
                            !caps
                                .iter()
                                .any(|c| c.kind == kind && c.id == *id && *id != 0),
                            "capability {id:#x} still in the chain after hide_all"
                        );
                    }
                }
                Err(_) => assert_eq!(*cs, before, "failed hide_all changed the space"),
            }
        }
        Op::Insert { extended, bytes } => {
            let kind = if *extended {
                CapabilityKind::Extended
            } else {
                CapabilityKind::Standard
            };
            let before = cs.clone();
            match cs.insert_capability(kind, bytes) {
                Ok(at) => {
                    let caps = cs.capabilities();
                    assert!(
                        caps.as_ref()
                            .is_ok_and(|c| c.iter().any(|c| c.kind == kind && c.offset == at)),
                        "inserted capability at {at:#x} not in the walk: {caps:?}"
                    );
                }
                Err(_) => assert_eq!(*cs, before, "failed insert_capability changed the space"),
            }
        }
    }
}

fn check_write(cs: &mut ConfigSpace, offset: usize, data: &[u8]) {
    let before = cs.clone();
    let view_before = cs.guest_view();
    let result = cs.write(offset, data);
    let in_range = offset + data.len() <= cs.size();
    let Ok(effects) = result else {
        assert!(
            !in_range,
            "in-range write at {offset:#x} failed: {result:?}"
        );
        assert_eq!(*cs, before, "failed write changed the space");
        return;
    };
    assert!(in_range, "out-of-range write at {offset:#x} accepted");

    // Masks never move under a guest write.
    assert_eq!(cs.write_mask(), before.write_mask(), "write mask changed");
    assert_eq!(cs.w1c_mask(), before.w1c_mask(), "W1C mask changed");
    assert_eq!(
        cs.emulated_mask(),
        before.emulated_mask(),
        "emulation mask changed"
    );

    let view = cs.guest_view();
    let mut any_unemulated = false;
    for i in 0..cs.size() {
        let (old, new) = (view_before[i], view[i]);
        let em = before.emulated_mask()[i];
        if i < offset || i >= offset + data.len() {
            assert_eq!(new, old, "byte {i:#x} outside the write changed");
            assert_eq!(cs.physical()[i], before.physical()[i], "physical {i:#x}");
            assert_eq!(cs.emulated()[i], before.emulated()[i], "emulated {i:#x}");
            continue;
        }
        let d = data[i - offset];
        let w1c = before.w1c_mask()[i];
        let wm = before.write_mask()[i] & !w1c;
        let ro = !(wm | w1c);
        let expected = (old & ro) | (d & wm) | (old & !d & w1c);
        assert_eq!(
            new, expected,
            "byte {i:#x}: was {old:#04x}, wrote {d:#04x} (wm {wm:#04x} w1c {w1c:#04x}): got {new:#04x}"
        );
        assert_eq!(
            cs.physical()[i] & em,
            before.physical()[i] & em,
            "byte {i:#x}: guest write changed an emulated physical bit"
        );
        assert_eq!(
            cs.emulated()[i] & !em,
            before.emulated()[i] & !em,
            "byte {i:#x}: guest write changed an unemulated emulated-value bit"
        );
        if em != 0xff {
            any_unemulated = true;
        }
    }

    match &effects.forward {
        Some(fw) => {
            assert!(
                any_unemulated,
                "forwarded a write whose bits are all emulated"
            );
            assert_eq!(usize::from(fw.offset), offset, "forward offset");
            assert_eq!(fw.data.len(), data.len(), "forward length");
            for (k, (&f, &d)) in fw.data.iter().zip(data).enumerate() {
                let i = offset + k;
                let em = cs.emulated_mask()[i];
                assert_eq!(
                    f,
                    (d & !em) | (cs.emulated()[i] & em),
                    "forward byte {i:#x}"
                );
            }
        }
        None => assert!(
            !any_unemulated || data.is_empty(),
            "a write with unemulated bits forwarded nothing"
        ),
    }

    for mv in &effects.bar_moves {
        assert_ne!(mv.old, mv.new, "reported a BAR move that moved nothing");
        assert_eq!(
            cs.decoded_bar_address(mv.index),
            mv.new,
            "BAR {} move",
            mv.index
        );
        assert_eq!(
            before.decoded_bar_address(mv.index),
            mv.old,
            "BAR {} old address",
            mv.index
        );
    }
    for index in 0..7u8 {
        if !effects.bar_moves.iter().any(|m| m.index == index) {
            assert_eq!(
                cs.decoded_bar_address(index),
                before.decoded_bar_address(index),
                "BAR {index} moved without a report"
            );
        }
    }
    match effects.command {
        Some((old, new)) => {
            assert_eq!(old, before.command());
            assert_eq!(new, cs.command());
            assert_ne!(old, new);
        }
        None => assert_eq!(cs.command(), before.command(), "unreported command change"),
    }
}
