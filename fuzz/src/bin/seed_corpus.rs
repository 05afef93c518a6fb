// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Writes the generated seed files of every fuzz target into `CORPUS_DIR/<target>/`:
//! `cargo xtask fuzz seed` runs it. Seeds are named by what they exercise, so rerunning it
//! rewrites the same files.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use migration_state::{
    BarKind as SavedBarKind, BarState, ConfigState, DeviceState, FormatVersion, InterruptMode,
    MsiState, MsixEntry, MsixState, NoticeState,
};
use passthrough_fuzz::{config_ops, msix_ops, passthrough_ops, FIXTURES};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> Result<(), String> {
    let d = dir.join(target);
    fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let p = d.join(format!("seed-{name}"));
    fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))
}

fn config_seeds(dir: &Path) -> Result<usize, String> {
    use config_ops::Op;
    let mut n = 0;
    let scenarios: Vec<(&str, Vec<Op>)> = vec![
        (
            "header-reads",
            vec![
                Op::Read { offset: 0, len: 4 },
                Op::Read { offset: 4, len: 2 },
                Op::Read { offset: 6, len: 2 },
                Op::Read {
                    offset: 0x34,
                    len: 1,
                },
                Op::Read {
                    offset: 0xfc,
                    len: 4,
                },
                Op::Read {
                    offset: 0xfe,
                    len: 4,
                },
            ],
        ),
        (
            "bar-sizing",
            vec![
                Op::DefineBar {
                    index: 0,
                    kind: 0,
                    size_log2: 12,
                    prefetchable: false,
                },
                Op::DefineBar {
                    index: 2,
                    kind: 1,
                    size_log2: 14,
                    prefetchable: true,
                },
                Op::DefineBar {
                    index: 6,
                    kind: 3,
                    size_log2: 16,
                    prefetchable: false,
                },
                Op::Write {
                    offset: 0x10,
                    data: vec![0xff; 4],
                },
                Op::Read {
                    offset: 0x10,
                    len: 4,
                },
                Op::Write {
                    offset: 0x18,
                    data: vec![0xff; 8],
                },
                Op::Read {
                    offset: 0x18,
                    len: 8,
                },
                Op::Write {
                    offset: 0x10,
                    data: 0xfe00_0000u32.to_le_bytes().to_vec(),
                },
                Op::Write {
                    offset: 0x04,
                    data: vec![0x07, 0x00],
                },
                Op::Write {
                    offset: 0x30,
                    data: vec![0x01, 0x00, 0x00, 0xfd],
                },
                Op::Write {
                    offset: 0x04,
                    data: vec![0x00, 0x00],
                },
            ],
        ),
        (
            "status-w1c",
            vec![
                Op::SetPhysical {
                    offset: 6,
                    data: vec![0xff, 0xff],
                },
                Op::Write {
                    offset: 0x04,
                    data: vec![0x06, 0x04, 0x00, 0x80],
                },
                Op::Read { offset: 6, len: 2 },
                Op::Write {
                    offset: 0x06,
                    data: vec![0xff, 0xff],
                },
                Op::SetW1cMask {
                    offset: 0x40,
                    mask: vec![0xff, 0x00],
                },
                Op::Write {
                    offset: 0x40,
                    data: vec![0xaa, 0x55],
                },
            ],
        ),
        (
            "emulated-masks",
            vec![
                Op::SetEmulated {
                    offset: 0x04,
                    value: vec![0x00, 0x04],
                    mask: vec![0x00, 0x04],
                },
                Op::SetWriteMask {
                    offset: 0x44,
                    mask: vec![0xff, 0x0f, 0xf0, 0x00],
                },
                Op::SetW1cMask {
                    offset: 0x46,
                    mask: vec![0x0f, 0xff],
                },
                Op::SetEmulated {
                    offset: 0x44,
                    value: vec![1, 2, 3, 4],
                    mask: vec![0xf0; 4],
                },
                Op::Write {
                    offset: 0x44,
                    data: vec![0xff; 4],
                },
                Op::Write {
                    offset: 0x42,
                    data: vec![0x55; 8],
                },
                Op::ClearEmulated {
                    offset: 0x44,
                    mask: vec![0xff; 4],
                },
                Op::Write {
                    offset: 0x44,
                    data: vec![0; 4],
                },
            ],
        ),
        (
            "capabilities",
            vec![
                Op::Hide {
                    extended: false,
                    id: 0x09,
                },
                Op::Hide {
                    extended: false,
                    id: 0x11,
                },
                Op::Insert {
                    extended: false,
                    bytes: vec![0x09, 0x00, 0x08, 0x01, 0, 0, 0, 0],
                },
                Op::Insert {
                    extended: true,
                    bytes: vec![0x0b, 0x00, 0x01, 0x00, 1, 2, 3, 4],
                },
                Op::Hide {
                    extended: true,
                    id: 0x0b,
                },
                Op::Write {
                    offset: 0x40,
                    data: vec![0xff; 16],
                },
            ],
        ),
    ];
    for sel in 0..(FIXTURES.len() as u8 + 2) {
        let name = FIXTURES.get(usize::from(sel)).map_or(
            if usize::from(sel) == FIXTURES.len() {
                "empty-256"
            } else {
                "empty-4096"
            },
            |(n, _)| *n,
        );
        for (scenario, ops) in &scenarios {
            for big in [false, true] {
                if big && usize::from(sel) >= FIXTURES.len() {
                    continue;
                }
                let mut bytes = vec![sel | if big { 0x80 } else { 0 }];
                for op in ops {
                    op.encode(&mut bytes);
                }
                let suffix = if big { "-4k" } else { "" };
                write(
                    dir,
                    "config_space",
                    &format!("{name}{suffix}-{scenario}"),
                    &bytes,
                )?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn msix_seeds(dir: &Path) -> Result<usize, String> {
    use msix_ops::Op;
    let mut n = 0;
    for vectors in [1u16, 3, 64, 65, 256] {
        let mut ops = vec![Op::Control {
            enabled: true,
            function_mask: true,
        }];
        for v in 0..u32::from(vectors.min(4)) {
            let base = v * 16;
            ops.push(Op::WriteTable {
                offset: base,
                data: (0xfee0_0000u64 | u64::from(v) << 12).to_le_bytes().to_vec(),
            });
            ops.push(Op::WriteTable {
                offset: base + 8,
                data: (0x4020 + v).to_le_bytes().to_vec(),
            });
            ops.push(Op::WriteTable {
                offset: base + 12,
                data: 0u32.to_le_bytes().to_vec(),
            });
            ops.push(Op::ReadTable {
                offset: base,
                len: 8,
            });
            ops.push(Op::ReadTable {
                offset: base + 12,
                len: 4,
            });
        }
        let last = u32::from(vectors - 1);
        ops.extend([
            Op::Control {
                enabled: true,
                function_mask: false,
            },
            Op::SetPending(vectors - 1),
            Op::ReadPba { offset: 0, len: 8 },
            Op::ReadPba { offset: 4, len: 4 },
            Op::WritePba {
                offset: 0,
                data: vec![0xff; 8],
            },
            Op::TakePending(vectors - 1),
            Op::WriteTable {
                offset: last * 16 + 12,
                data: vec![1, 0, 0, 0],
            },
            Op::WriteTable {
                offset: last * 16 + 8,
                data: vec![0xff; 8],
            },
            Op::WriteTable {
                offset: 2,
                data: vec![0xaa; 4],
            },
            Op::WriteTable {
                offset: 0,
                data: vec![0xbb; 2],
            },
            Op::WriteTable {
                offset: last * 16 + 16,
                data: vec![0xcc; 4],
            },
            Op::ReadTable { offset: 6, len: 2 },
            Op::ReadTable {
                offset: last * 16 + 12,
                len: 8,
            },
            Op::ReadPba {
                offset: 8 * u32::from(vectors.div_ceil(64)),
                len: 4,
            },
        ]);
        let mut bytes = vec![(vectors - 1) as u8];
        for op in &ops {
            op.encode(&mut bytes);
        }
        write(dir, "msix_mmio", &format!("{vectors}-vectors"), &bytes)?;
        n += 1;
    }
    Ok(n)
}

fn passthrough_seeds(dir: &Path) -> Result<usize, String> {
    use passthrough_ops::{Base, Op, Setup};
    let table_rw = vec![
        Op::TableRead {
            vector: 0,
            dword: 0,
            qword: true,
        },
        Op::TableRead {
            vector: 0,
            dword: 2,
            qword: false,
        },
        Op::TableWrite {
            vector: 0,
            dword: 2,
            qword: false,
            value: 0x4055,
        },
        Op::TableWrite {
            vector: 0,
            dword: 0,
            qword: true,
            value: 0xfee0_3000,
        },
        Op::TableWrite {
            vector: 0,
            dword: 3,
            qword: false,
            value: 1,
        },
        Op::TableWrite {
            vector: 0,
            dword: 3,
            qword: false,
            value: 0xffff_fffe,
        },
        Op::TableWrite {
            vector: 0,
            dword: 1,
            qword: true,
            value: u64::MAX,
        },
        Op::MmioWrite {
            base: Base::Table,
            offset: 2,
            data: vec![0xaa; 2],
        },
        Op::MmioWrite {
            base: Base::Table,
            offset: -4,
            data: vec![0xbb; 8],
        },
        Op::MmioRead {
            base: Base::Table,
            offset: -4,
            len: 8,
        },
        Op::MmioRead {
            base: Base::Table,
            offset: 12,
            len: 16,
        },
        Op::MmioRead {
            base: Base::Pba,
            offset: 0,
            len: 8,
        },
        Op::MmioRead {
            base: Base::Pba,
            offset: 4,
            len: 4,
        },
        Op::MmioWrite {
            base: Base::Pba,
            offset: 0,
            data: vec![0xff; 8],
        },
        Op::MmioRead {
            base: Base::Pba,
            offset: -2,
            len: 4,
        },
    ];
    let raise = vec![
        Op::DeviceRaise(0),
        Op::DeviceRaise(1),
        Op::VmmRaise(0),
        Op::TableWrite {
            vector: 1,
            dword: 3,
            qword: false,
            value: 1,
        },
        Op::DeviceRaise(1),
        Op::VmmRaise(1),
        Op::Poll,
        Op::MmioRead {
            base: Base::Pba,
            offset: 0,
            len: 8,
        },
        Op::TableWrite {
            vector: 1,
            dword: 3,
            qword: false,
            value: 0,
        },
        Op::MmioRead {
            base: Base::Pba,
            offset: 0,
            len: 8,
        },
        Op::DeviceRaise(70),
        Op::VmmRaise(0xffff),
    ];
    let control = vec![
        Op::MsixControl(0xc000),
        Op::DeviceRaise(0),
        Op::MsixControl(0x8000),
        Op::MsixControl(0),
        Op::DeviceRaise(0),
        Op::MsiWrite {
            reg: 4,
            data: 0xfee0_0000u32.to_le_bytes().to_vec(),
        },
        Op::MsiWrite {
            reg: 2,
            data: vec![0x21, 0],
        },
        Op::VmmRaise(1),
        Op::MsixControl(0x8000),
        Op::MsiWrite {
            reg: 2,
            data: vec![0, 0],
        },
        Op::MsixControl(0x8000),
        Op::ConfigWrite {
            offset: 0x04,
            data: vec![0x06, 0x04],
        },
        Op::MsixControl(0),
    ];
    let bars = vec![
        Op::MmioWrite {
            base: Base::Bar2,
            offset: 0x10,
            data: 0x1234_5678u32.to_le_bytes().to_vec(),
        },
        Op::MmioRead {
            base: Base::Bar2,
            offset: 0x10,
            len: 4,
        },
        Op::MmioWrite {
            base: Base::Bar0,
            offset: 0x3ffe,
            data: vec![1, 2, 3, 4],
        },
        Op::MmioRead {
            base: Base::Bar0,
            offset: 0x3ff8,
            len: 8,
        },
        Op::MoveBar {
            bar: 1,
            address: 0xc000_0000,
        },
        Op::MmioRead {
            base: Base::Table,
            offset: 0,
            len: 4,
        },
        Op::ConfigWrite {
            offset: 0x04,
            data: vec![0, 0],
        },
        Op::MmioRead {
            base: Base::Table,
            offset: 0,
            len: 4,
        },
        Op::ConfigWrite {
            offset: 0x04,
            data: vec![0x06, 0],
        },
        Op::MoveBar {
            bar: 1,
            address: 0xc001_0000,
        },
        Op::MoveBar {
            bar: 0,
            address: u32::MAX,
        },
        Op::MmioRead {
            base: Base::Bar2,
            offset: 0,
            len: 16,
        },
        Op::ConfigWrite {
            offset: 0x11,
            data: vec![0xff; 3],
        },
    ];
    let faults = vec![
        Op::TableWrite {
            vector: 0,
            dword: 3,
            qword: false,
            value: 1,
        },
        Op::Fault { op: 0, k: 1 },
        Op::TableWrite {
            vector: 0,
            dword: 3,
            qword: false,
            value: 0,
        },
        Op::DeviceRaise(0),
        Op::Fault { op: 1, k: 1 },
        Op::MsixControl(0),
        Op::MsixControl(0x8000),
        Op::DeviceRaise(0),
        Op::Fault { op: 2, k: 1 },
        Op::MsixControl(0),
        Op::MsixControl(0x8000),
        Op::VmmRaise(0),
    ];
    let scenarios: [(&str, &[Op]); 5] = [
        ("table-rw", &table_rw),
        ("raise", &raise),
        ("control", &control),
        ("bars", &bars),
        ("faults", &faults),
    ];
    let mut n = 0;
    for layout in 0..4u8 {
        for (vectors, unmask) in [(1u16, 0u8), (4, 2), (65, 3)] {
            let setup = Setup {
                layout,
                msi: layout % 2 == 0,
                strategy: (layout + unmask) % 4,
                sub_page_mmap: layout != 2,
                pack: vectors == 4,
                vectors,
                place: true,
                program: true,
                unmask,
            };
            for (name, ops) in &scenarios {
                let mut bytes = Vec::new();
                setup.encode(&mut bytes);
                for op in *ops {
                    op.encode(&mut bytes);
                }
                write(
                    dir,
                    "passthrough_mmio",
                    &format!("layout{layout}-{vectors}v-{name}"),
                    &bytes,
                )?;
                n += 1;
            }
        }
    }
    // A guest that programs MSI-X itself, through the ops.
    let mut bytes = Vec::new();
    Setup {
        layout: 0,
        msi: true,
        strategy: 1,
        sub_page_mmap: false,
        pack: false,
        vectors: 2,
        place: true,
        program: false,
        unmask: 1,
    }
    .encode(&mut bytes);
    let by_hand = [
        Op::MsixControl(0xc000),
        Op::TableWrite {
            vector: 0,
            dword: 0,
            qword: true,
            value: 0xfee0_1000,
        },
        Op::TableWrite {
            vector: 0,
            dword: 2,
            qword: true,
            value: 0x4021,
        },
        Op::MsixControl(0x8000),
        Op::TableWrite {
            vector: 1,
            dword: 3,
            qword: false,
            value: 0,
        },
        Op::DeviceRaise(0),
        Op::DeviceRaise(1),
        Op::Poll,
    ];
    for op in &by_hand {
        op.encode(&mut bytes);
    }
    write(dir, "passthrough_mmio", "guest-programs", &bytes)?;
    Ok(n + 1)
}

fn states() -> Vec<(&'static str, DeviceState)> {
    let mut config = ConfigState::zeroed();
    if let Some((_, text)) = FIXTURES.get(3) {
        config.bytes = config_ops::fixture_bytes(text);
    }
    config.emulated_mask[0x10..0x18].fill(0xff);
    config.write_mask[0x04] = 0x07;
    config.write1c_mask[0x07] = 0xf9;
    let bars = vec![
        BarState {
            index: 0,
            kind: SavedBarKind::Memory32,
            prefetchable: false,
            address: 0xfe00_0000,
            size: 0x1000,
        },
        BarState {
            index: 2,
            kind: SavedBarKind::Memory64,
            prefetchable: true,
            address: 0x8_0000_0000,
            size: 0x4000,
        },
    ];
    let mut msix = MsixState::with_vectors(65);
    msix.enabled = true;
    for (v, e) in msix.entries.iter_mut().enumerate().take(4) {
        *e = MsixEntry {
            address: 0xfee0_0000 | (v as u64) << 12,
            data: 0x4020 + v as u32,
            masked: v == 3,
        };
    }
    msix.pba[1] = 1;
    let msi = MsiState {
        enabled: true,
        address_64bit: true,
        per_vector_masking: true,
        multiple_message_capable: 3,
        multiple_message_enable: 2,
        address: 0xfee0_1000,
        data: 0x41,
        mask_bits: 0b10,
        pending_bits: 0b01,
    };
    let mut extended = ConfigState::zeroed();
    for v in [
        &mut extended.bytes,
        &mut extended.emulated_mask,
        &mut extended.write_mask,
        &mut extended.write1c_mask,
    ] {
        v.resize(4096, 0);
    }
    extended.bytes[0x100..0x104].copy_from_slice(&[0x01, 0x00, 0x01, 0x00]);
    vec![
        ("default", DeviceState::default()),
        (
            "msix-65",
            DeviceState {
                config: config.clone(),
                bars: bars.clone(),
                interrupt_mode: InterruptMode::Msix,
                msix: Some(msix.clone()),
                device_data: vec![0xde, 0xad, 0xbe, 0xef],
                ..DeviceState::default()
            },
        ),
        (
            "msi",
            DeviceState {
                config: config.clone(),
                bars,
                interrupt_mode: InterruptMode::Msi,
                msi: Some(msi),
                device_data: (0..64).collect(),
                ..DeviceState::default()
            },
        ),
        // A 4 KiB config space in a stream a version-1 reader loads (the notice, which
        // version 1 cannot carry, is in the next one).
        (
            "extended",
            DeviceState {
                config: extended.clone(),
                interrupt_mode: InterruptMode::Intx,
                msix: Some(MsixState::with_vectors(1)),
                ..DeviceState::default()
            },
        ),
        (
            "extended-notice",
            DeviceState {
                config: extended,
                interrupt_mode: InterruptMode::Intx,
                msix: Some(MsixState::with_vectors(1)),
                notice: Some(NoticeState {
                    capability_offset: 0x80,
                    guest_enabled: true,
                    vector: 2,
                    generation: 7,
                }),
                ..DeviceState::default()
            },
        ),
    ]
}

fn migration_seeds(dir: &Path) -> Result<usize, String> {
    let mut n = 0;
    for (name, state) in states() {
        for version in [FormatVersion::V1, FormatVersion::V2] {
            let Ok(stream) = state.encode_as(version) else {
                continue; // a notice is not representable in version 1
            };
            for mode in [0u8, 1, 2] {
                if mode == 2 && version != FormatVersion::V1 {
                    continue;
                }
                let mut bytes = vec![mode];
                bytes.extend_from_slice(&stream);
                let v = version.number();
                write(
                    dir,
                    "migration_stream",
                    &format!("{name}-v{v}-mode{mode}"),
                    &bytes,
                )?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn lspci_seeds(dir: &Path) -> Result<usize, String> {
    let mut n = 0;
    let mut all = String::new();
    for (name, text) in FIXTURES {
        write(dir, "lspci_dump", name, text.as_bytes())?;
        all.push_str(text);
        all.push('\n');
        n += 1;
    }
    write(dir, "lspci_dump", "all-fixtures", all.as_bytes())?;
    n += 1;
    let mut big = config_ops::base_space(0x83);
    let _ = big.set_physical(0x100, &[0x01, 0x00, 0x01, 0x14, 0, 0, 0, 0]);
    let dump = pci_config::lspci::write_dump([("00:03.0 Ethernet controller: 4k", &big)]);
    write(dir, "lspci_dump", "extended-4k", dump.as_bytes())?;
    Ok(n + 1)
}

/// Writes one target's seed files into a corpus directory and counts them.
type SeedStep = fn(&Path) -> Result<usize, String>;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: seed-corpus CORPUS_DIR");
        return ExitCode::from(2);
    };
    let dir = Path::new(&dir);
    let steps: [(&str, SeedStep); 6] = [
        ("config_space", config_seeds),
        ("msix_mmio", msix_seeds),
        ("passthrough_mmio", passthrough_seeds),
        ("migration_stream", migration_seeds),
        ("lspci_dump", lspci_seeds),
        ("stream_reader", passthrough_fuzz::stream_ops::write_seeds),
    ];
    for (target, step) in steps {
        match step(dir) {
            Ok(n) => eprintln!("{target}: {n} seed file(s)"),
            Err(e) => {
                eprintln!("{target}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
