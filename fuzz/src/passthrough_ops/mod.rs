// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `passthrough_mmio`: MSI-X table, PBA and BAR accesses of any offset, size (0..=16)
//! and alignment against a whole [`PassthroughDevice`] on the simulated backend.
//!
//! Each input builds a `vfio_core::sim::SimDevice` with a 16 KiB 64-bit BAR 0, a sub-page
//! (2 KiB) BAR 2, MSI-X with 1..=72 vectors placed in one of four table/PBA layouts over
//! those BARs, and optionally MSI; a `PassthroughDevice` over it, sharing an
//! `irq_routing::Router` on the in-memory backend. vmm-glue's scripted guest places the BARs
//! and (usually) programs MSI-X; then the input's operations ([`Op`]) run: MMIO reads and
//! writes anywhere around the BARs, structured table accesses, raw config writes (BAR moves,
//! COMMAND, MSI and MSI-X control), device-side raises (through the simulated device's bound
//! trigger, then the VMM's poll), VMM-side raises and injected routing-backend failures.
//!
//! After every operation these checks run (`rig.rs`):
//! * the interrupt mode matches the enable bits the guest reads back, and MSI and MSI-X never
//!   both read as enabled;
//! * the device's MSI-X table equals a reference model fed by the same accesses (the access
//!   rules of `vmm_glue::msix`), and MMIO reads of the table return the model's bytes;
//! * MSI-X routes: outside MSI-X mode no vector holds one; a routed vector that is unmasked
//!   with a valid message routes its current message; without injected failures, exactly
//!   the vectors unmasked with a valid message since MSI-X was enabled hold a route (masking
//!   keeps a route);
//! * the router, the backend and the device agree: no route is left staged between
//!   operations, no GSI is shared, every routed vector is in the committed table with its
//!   message and has its irqfd attached at its GSI; without injected failures also GSIs in
//!   use = routed routes = committed table entries = attached irqfds, each attached irqfd a
//!   routed vector's (after a failed commit or detach irq-routing documents a stale table
//!   entry or a kept GSI, which are allowed);
//! * each VFIO trigger (as the simulated device holds it, and as the trigger cache believes)
//!   points at the vector's irqfd when it is unmasked, routed, and its GSI holds the
//!   vector's current message in the committed table (no stale message is ever injected), at
//!   its userspace eventfd otherwise; no MSI-X trigger is bound outside MSI-X mode;
//! * PBA bits are set only for vectors that fired, never for a vector unmasked in MSI-X mode,
//!   never past the last vector; PBA reads return the PBA;
//! * BAR reads outside the table and PBA return what was written there; accesses that hit no
//!   BAR read zeros; `ignored_mmio` counts exactly the ignored accesses;
//! * userspace messages are the current message of an unmasked vector (in MSI-X mode);
//! * a BAR holding the MSI-X table or PBA is never offered for mapping.
//!
//! Inputs are capped at [`MAX_OPS`] operations so executions stay fast.

mod rig;

use vfio_core::sim::MsixPlacement;

use crate::Bytes;
use rig::Rig;

/// Most operations one input runs.
pub const MAX_OPS: usize = 96;
/// Most MSI-X vectors a device gets (more than one PBA QWORD).
pub const MAX_VECTORS: usize = 72;
/// Size of BAR 0 (64-bit memory).
pub const BAR0_SIZE: u64 = 0x4000;
/// Size of BAR 2 (32-bit memory, smaller than a page).
pub const BAR2_SIZE: u64 = 0x800;

/// The device an input builds, from its three header bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// Table and PBA placement, 0..=3: both in BAR 0; table in BAR 0 and PBA in BAR 2; both
    /// in BAR 2; table in BAR 2 and PBA in BAR 0.
    pub layout: u8,
    /// Whether the device also has an MSI capability (4 vectors, per-vector masking).
    pub msi: bool,
    /// Index into [`Strategy::ALL`].
    pub strategy: u8,
    /// Whether BAR 2's host address is known and the device allows sub-page mmap (BAR 2 is
    /// then mappable when it holds no MSI-X structure).
    pub sub_page_mmap: bool,
    /// Whether the scripted firmware packs sub-page BARs.
    pub pack: bool,
    /// MSI-X vectors, 1..=[`MAX_VECTORS`].
    pub vectors: u16,
    /// Whether the scripted guest places the BARs.
    pub place: bool,
    /// Whether the scripted guest programs MSI-X after placing the BARs.
    pub program: bool,
    /// Which vectors the scripted guest unmasks: 0 all, 1 none, 2 even, 3 odd.
    pub unmask: u8,
}

impl Setup {
    /// Decodes the header, `None` when the input is too short.
    pub fn decode(b: &mut Bytes<'_>) -> Option<Setup> {
        let flags = b.u8()?;
        let vectors = b.u8()?;
        let guest = b.u8()?;
        Some(Setup {
            layout: flags & 3,
            msi: flags & 4 != 0,
            strategy: (flags >> 3) & 3,
            sub_page_mmap: flags & 0x20 != 0,
            pack: flags & 0x40 != 0,
            vectors: Self::vectors_from(vectors),
            place: guest & 4 == 0,
            program: guest & 8 == 0,
            unmask: guest & 3,
        })
    }

    /// Vector counts: mostly 1..=8 (cheap to build), sometimes 9..=72 (past one PBA QWORD).
    fn vectors_from(b: u8) -> u16 {
        if b < 0xc0 {
            1 + u16::from(b % 8)
        } else {
            9 + u16::from(b - 0xc0) % (MAX_VECTORS as u16 - 8)
        }
    }

    fn vectors_to(n: u16) -> u8 {
        let n = n.clamp(1, MAX_VECTORS as u16);
        if n <= 8 {
            (n - 1) as u8
        } else {
            0xc0 + (n - 9) as u8
        }
    }

    /// Appends the header [`Setup::decode`] reads back.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(
            (self.layout & 3)
                | u8::from(self.msi) << 2
                | (self.strategy & 3) << 3
                | u8::from(self.sub_page_mmap) << 5
                | u8::from(self.pack) << 6,
        );
        out.push(Self::vectors_to(self.vectors));
        out.push((self.unmask & 3) | u8::from(!self.place) << 2 | u8::from(!self.program) << 3);
    }

    fn placement(&self) -> MsixPlacement {
        let n = self.vectors;
        let (table_bar, table_offset, pba_bar, pba_offset) = match self.layout & 3 {
            0 => return MsixPlacement::in_bar(n, 0),
            1 => (0, 0, 2, 0x400),
            2 => (2, 0, 2, 0x600),
            _ => (2, 0x100, 0, 0x3000),
        };
        MsixPlacement {
            vectors: n,
            table_bar,
            table_offset,
            pba_bar,
            pba_offset,
        }
    }

    fn unmasked_by_guest(&self, v: u16) -> bool {
        match self.unmask & 3 {
            0 => true,
            1 => false,
            2 => v % 2 == 0,
            _ => v % 2 == 1,
        }
    }
}

/// Where an MMIO operation's address is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// BAR 0's guest address.
    Bar0,
    /// BAR 2's guest address.
    Bar2,
    /// The MSI-X table's guest address.
    Table,
    /// The PBA's guest address.
    Pba,
}

impl Base {
    fn from_u8(b: u8) -> Base {
        match b % 4 {
            0 => Base::Bar0,
            1 => Base::Bar2,
            2 => Base::Table,
            _ => Base::Pba,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Base::Bar0 => 0,
            Base::Bar2 => 1,
            Base::Table => 2,
            Base::Pba => 3,
        }
    }
}

/// One operation of the `passthrough_mmio` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Guest MMIO read of `len` bytes at `base + offset`.
    MmioRead {
        /// Where the address is relative to.
        base: Base,
        /// Signed offset from `base`.
        offset: i16,
        /// Access size, 0..=16.
        len: u8,
    },
    /// Guest MMIO write of `data` at `base + offset`.
    MmioWrite {
        /// Where the address is relative to.
        base: Base,
        /// Signed offset from `base`.
        offset: i16,
        /// Bytes written, 0..=16.
        data: Vec<u8>,
    },
    /// Guest write of dword `dword` (0..=3) of table entry `vector` (up to one past the last),
    /// 4 bytes or (`qword`) 8.
    TableWrite {
        /// Entry.
        vector: u8,
        /// Dword within the entry.
        dword: u8,
        /// 8-byte access.
        qword: bool,
        /// Value (little-endian, truncated to the access size).
        value: u64,
    },
    /// Guest read of dword `dword` of table entry `vector`, 4 bytes or 8.
    TableRead {
        /// Entry.
        vector: u8,
        /// Dword within the entry.
        dword: u8,
        /// 8-byte access.
        qword: bool,
    },
    /// Guest config write of `data` (0..=8 bytes: ill-formed sizes included) at `offset`.
    ConfigWrite {
        /// Config offset.
        offset: u8,
        /// Bytes written.
        data: Vec<u8>,
    },
    /// Guest write of the MSI-X Message Control word.
    MsixControl(u16),
    /// Guest write into the MSI capability (offset `reg` from its start), if it has one.
    MsiWrite {
        /// Offset within the capability (taken modulo 24).
        reg: u8,
        /// Bytes written (1, 2 or 4 for a well-formed access).
        data: Vec<u8>,
    },
    /// The device raises MSI-X vector `vector` (through whatever trigger is bound), then the
    /// VMM services the userspace eventfds.
    DeviceRaise(u16),
    /// The VMM raises `vector` of the enabled MSI or MSI-X mode.
    VmmRaise(u16),
    /// The VMM services the userspace eventfds.
    Poll,
    /// The routing backend fails its `k`-th next operation of a kind (0 commit, 1 irqfd
    /// attach, 2 irqfd detach).
    Fault {
        /// Operation kind, modulo 3.
        op: u8,
        /// Which future operation (1-based, 1..=4).
        k: u8,
    },
    /// The guest moves BAR 0 (`bar` even) or BAR 2 (odd) to `address`.
    MoveBar {
        /// Which BAR.
        bar: u8,
        /// New low address dword.
        address: u32,
    },
}

const OP_KINDS: u8 = 12;

impl Op {
    /// Decodes the next operation, `None` when the input is exhausted.
    pub fn decode(b: &mut Bytes<'_>) -> Option<Op> {
        let code = b.u8()?;
        Some(match code % OP_KINDS {
            0 => Op::MmioRead {
                base: Base::from_u8(b.u8()?),
                offset: b.u16()? as i16,
                len: b.u8()? % 17,
            },
            1 => {
                let base = Base::from_u8(b.u8()?);
                let offset = b.u16()? as i16;
                let n = usize::from(b.u8()? % 17);
                Op::MmioWrite {
                    base,
                    offset,
                    data: b.take(n)?.to_vec(),
                }
            }
            2 => {
                let vector = b.u8()?;
                let sel = b.u8()?;
                Op::TableWrite {
                    vector,
                    dword: sel & 3,
                    qword: sel & 4 != 0,
                    value: b.u64()?,
                }
            }
            3 => {
                let vector = b.u8()?;
                let sel = b.u8()?;
                Op::TableRead {
                    vector,
                    dword: sel & 3,
                    qword: sel & 4 != 0,
                }
            }
            4 => {
                let offset = b.u8()?;
                let n = usize::from(b.u8()? % 9);
                Op::ConfigWrite {
                    offset,
                    data: b.take(n)?.to_vec(),
                }
            }
            5 => Op::MsixControl(b.u16()?),
            6 => {
                let reg = b.u8()? % 24;
                let n = usize::from(b.u8()? % 5);
                Op::MsiWrite {
                    reg,
                    data: b.take(n)?.to_vec(),
                }
            }
            7 => Op::DeviceRaise(b.u16()?),
            8 => Op::VmmRaise(b.u16()?),
            9 => Op::Poll,
            10 => Op::Fault {
                op: b.u8()? % 3,
                k: 1 + b.u8()? % 4,
            },
            _ => Op::MoveBar {
                bar: b.u8()?,
                address: b.u32()?,
            },
        })
    }

    /// Appends the encoding [`Op::decode`] reads back (for seed files).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::MmioRead { base, offset, len } => {
                out.push(0);
                out.push(base.to_u8());
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(*len);
            }
            Op::MmioWrite { base, offset, data } => {
                out.push(1);
                out.push(base.to_u8());
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(data.len() as u8);
                out.extend_from_slice(data);
            }
            Op::TableWrite {
                vector,
                dword,
                qword,
                value,
            } => {
                out.extend_from_slice(&[2, *vector, (dword & 3) | u8::from(*qword) << 2]);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Op::TableRead {
                vector,
                dword,
                qword,
            } => out.extend_from_slice(&[3, *vector, (dword & 3) | u8::from(*qword) << 2]),
            Op::ConfigWrite { offset, data } => {
                out.extend_from_slice(&[4, *offset, data.len() as u8]);
                out.extend_from_slice(data);
            }
            Op::MsixControl(v) => {
                out.push(5);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Op::MsiWrite { reg, data } => {
                out.extend_from_slice(&[6, *reg, data.len() as u8]);
                out.extend_from_slice(data);
            }
            Op::DeviceRaise(v) => {
                out.push(7);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Op::VmmRaise(v) => {
                out.push(8);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Op::Poll => out.push(9),
            Op::Fault { op, k } => out.extend_from_slice(&[10, *op, k.saturating_sub(1)]),
            Op::MoveBar { bar, address } => {
                out.extend_from_slice(&[11, *bar]);
                out.extend_from_slice(&address.to_le_bytes());
            }
        }
    }
}

/// Runs one input. Panics when a check fails.
pub fn run(data: &[u8]) {
    let mut input = Bytes::new(data);
    let Some(setup) = Setup::decode(&mut input) else {
        return;
    };
    // Crash triage: `PASSTHROUGH_FUZZ_TRACE=1` prints the decoded input.
    let trace = std::env::var_os("PASSTHROUGH_FUZZ_TRACE").is_some();
    if trace {
        eprintln!("{setup:?}");
    }
    let mut rig = Rig::new(setup);
    rig.check(&Op::Poll);
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut input) else {
            break;
        };
        if trace {
            eprintln!("{op:?}");
        }
        rig.apply(&op);
        rig.check(&op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setups_and_ops_decode_as_encoded() {
        for vectors in [1u16, 8, 9, 64, 65, 72] {
            let setup = Setup {
                layout: 3,
                msi: true,
                strategy: 2,
                sub_page_mmap: true,
                pack: false,
                vectors,
                place: true,
                program: false,
                unmask: 2,
            };
            let mut bytes = Vec::new();
            setup.encode(&mut bytes);
            assert_eq!(Setup::decode(&mut Bytes::new(&bytes)), Some(setup));
        }
        let ops = [
            Op::MmioRead {
                base: Base::Pba,
                offset: -3,
                len: 16,
            },
            Op::MmioWrite {
                base: Base::Bar2,
                offset: 0x7ff,
                data: vec![1, 2, 3],
            },
            Op::TableWrite {
                vector: 9,
                dword: 3,
                qword: true,
                value: 1 << 40,
            },
            Op::TableRead {
                vector: 1,
                dword: 1,
                qword: false,
            },
            Op::ConfigWrite {
                offset: 0x10,
                data: vec![0xff; 8],
            },
            Op::MsixControl(0xc000),
            Op::MsiWrite {
                reg: 23,
                data: vec![1],
            },
            Op::DeviceRaise(7),
            Op::VmmRaise(0xffff),
            Op::Poll,
            Op::Fault { op: 2, k: 4 },
            Op::MoveBar {
                bar: 1,
                address: 0xdead_b000,
            },
        ];
        let mut bytes = Vec::new();
        for op in &ops {
            op.encode(&mut bytes);
        }
        let mut input = Bytes::new(&bytes);
        for op in &ops {
            assert_eq!(Op::decode(&mut input).as_ref(), Some(op));
        }
        assert!(input.is_empty());
    }
}
