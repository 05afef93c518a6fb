// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shared by the integration tests: reading `lspci -vvv` capability lines, and generating
//! configuration spaces with random capability chains.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pci_config::views::{MsiCap, MsixCap, PcieCap, PciePortType, PmCap, VendorCap};
use pci_config::{CapabilityKind, ConfigSpace};

/// Names `lspci` prints for standard capabilities (pciutils `ls-caps.c`), as line prefixes.
const LSPCI_STANDARD: &[(&str, u16)] = &[
    ("Null", 0x00),
    ("Power Management version", 0x01),
    ("AGP version", 0x02),
    ("Vital Product Data", 0x03),
    ("Slot ID", 0x04),
    ("MSI-X:", 0x11),
    ("MSI:", 0x05),
    ("CompactPCI hot-swap", 0x06),
    ("PCI-X", 0x07),
    ("HyperTransport", 0x08),
    ("Vendor Specific Information", 0x09),
    ("Debug port", 0x0a),
    ("CompactPCI central resource control", 0x0b),
    ("Hot-plug capable", 0x0c),
    ("Subsystem:", 0x0d),
    ("AGP3", 0x0e),
    ("Secure device", 0x0f),
    ("Express", 0x10),
    ("SATA HBA", 0x12),
    ("PCI Advanced Features", 0x13),
    ("Enhanced Allocation", 0x14),
    ("Flattening Portal Bridge", 0x15),
];

/// Names `lspci` prints for extended capabilities (pciutils `ls-ecaps.c`), as line prefixes.
/// "Virtual Channel" is printed for both 0x0002 and 0x0009.
const LSPCI_EXTENDED: &[(&str, &[u16])] = &[
    ("Null", &[0x00]),
    ("Advanced Error Reporting", &[0x01]),
    ("Virtual Channel", &[0x02, 0x09]),
    ("Device Serial Number", &[0x03]),
    ("Power Budgeting", &[0x04]),
    ("Root Complex Link", &[0x05]),
    ("Root Complex Internal Link", &[0x06]),
    ("Root Complex Event Collector", &[0x07]),
    ("Multi-Function Virtual Channel", &[0x08]),
    ("Root Complex Register Block", &[0x0a]),
    ("Vendor Specific Information", &[0x0b]),
    ("Access Control Services", &[0x0d]),
    ("Alternative Routing-ID Interpretation", &[0x0e]),
    ("Address Translation Service", &[0x0f]),
    ("Single Root I/O Virtualization", &[0x10]),
    ("Multi-Root I/O Virtualization", &[0x11]),
    ("Multicast", &[0x12]),
    ("Page Request Interface", &[0x13]),
    ("Physical Resizable BAR", &[0x15]),
    ("Dynamic Power Allocation", &[0x16]),
    ("Transaction Processing Hints", &[0x17]),
    ("Latency Tolerance Reporting", &[0x18]),
    ("Secondary PCI Express", &[0x19]),
    ("Protocol Multiplexing", &[0x1a]),
    ("Process Address Space ID", &[0x1b]),
    ("LN Requester", &[0x1c]),
    ("Downstream Port Containment", &[0x1d]),
    ("L1 PM Substates", &[0x1e]),
    ("Precision Time Measurement", &[0x1f]),
    ("PCI Express over M_PHY", &[0x20]),
    ("FRS Queueing", &[0x21]),
    ("Readiness Time Reporting", &[0x22]),
    ("Designated Vendor-Specific", &[0x23]),
    ("Virtual Resizable BAR", &[0x24]),
    ("Data Link Feature", &[0x25]),
    ("Physical Layer 16.0 GT/s", &[0x26]),
    ("Lane Margining at the Receiver", &[0x27]),
    ("Hierarchy ID", &[0x28]),
    ("Native PCIe Enclosure Management", &[0x29]),
    ("Data Object Exchange", &[0x2e]),
];

/// One `Capabilities:` line of `lspci -vvv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LspciCap {
    pub kind: CapabilityKind,
    pub offset: u16,
    /// IDs lspci's name stands for (usually one).
    pub ids: Vec<u16>,
    pub line: String,
}

fn hex_after(name: &str, prefix: &str) -> Option<u16> {
    let rest = name.strip_prefix(prefix)?.trim_start();
    let rest = rest.strip_prefix("0x").unwrap_or(rest);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
    u16::from_str_radix(&digits, 16).ok()
}

/// Every capability line of one device's `lspci -vvv` output, in order. Panics on a line it
/// cannot map to an ID (a name missing from the tables, `<chain broken>`, ...).
pub fn lspci_capabilities(text: &str) -> Vec<LspciCap> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("Capabilities: [") else {
            continue;
        };
        let (bracket, name) = rest.split_once("] ").expect("lspci capability line");
        let (off, extended) = match bracket.split_once(' ') {
            Some((off, _version)) => (off, true),
            None => (bracket, false),
        };
        let offset = u16::from_str_radix(off, 16).expect("lspci offset");
        let (kind, ids) = if extended {
            let ids = LSPCI_EXTENDED
                .iter()
                .find(|(p, _)| name.starts_with(p))
                .map(|(_, ids)| ids.to_vec())
                .or_else(|| hex_after(name, "Extended Capability ID").map(|id| vec![id]));
            (CapabilityKind::Extended, ids)
        } else {
            let ids = LSPCI_STANDARD
                .iter()
                .find(|(p, _)| name.starts_with(p))
                .map(|(_, id)| vec![*id])
                .or_else(|| hex_after(name, "Capability ID").map(|id| vec![id]));
            (CapabilityKind::Standard, ids)
        };
        let ids = ids.unwrap_or_else(|| panic!("lspci name not in the test's table: {line:?}"));
        out.push(LspciCap {
            kind,
            offset,
            ids,
            line: line.to_string(),
        });
    }
    out
}

/// Asserts that a walk of `cs` finds exactly the capabilities `lspci` printed.
pub fn assert_same_as_lspci(cs: &ConfigSpace, lspci_text: &str, what: &str) {
    let expected = lspci_capabilities(lspci_text);
    let found = cs
        .capabilities()
        .unwrap_or_else(|e| panic!("{what}: walk failed: {e}"));
    let summary: Vec<String> = found.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        found.len(),
        expected.len(),
        "{what}: walk {summary:?} vs lspci {:?}",
        expected.iter().map(|e| &e.line).collect::<Vec<_>>()
    );
    for (f, e) in found.iter().zip(&expected) {
        assert_eq!(
            (f.kind, f.offset),
            (e.kind, e.offset),
            "{what}: {f} vs {}",
            e.line
        );
        assert!(e.ids.contains(&f.id), "{what}: {f} vs {}", e.line);
    }
}

/// Standard capability kinds the generator draws from: (ID, bytes for a parameter).
pub fn standard_cap(choice: usize, param: u8) -> Vec<u8> {
    match choice % 9 {
        0 => PmCap::build(),
        1 => MsiCap::build(param % 6, param & 0x40 != 0, param & 0x80 != 0),
        2 => VendorCap::build(&vec![param; usize::from(param % 24)]).unwrap(),
        3 => MsixCap::build(u16::from(param) + 1, param % 6, 0x1000, param % 6, 0x2000).unwrap(),
        4 => vec![0x0c, 0, 0, 0],
        5 => vec![0x0d, 0, 0, 0, 0xf4, 0x1a, param, 0],
        6 => vec![0x12, 0, 0x10, 0, 0, 0, 0, 0],
        7 => vec![0x13, 0, 6, 0, 0, 0],
        // No capability is defined with these IDs: lspci prints "Capability ID 0x..".
        _ => vec![0x20 + (param % 0x20), 0, param, 0],
    }
}

/// Extended capability IDs the generator draws from (all named in `LSPCI_EXTENDED`, except
/// 0x0c and 0x14 which lspci prints as "Extended Capability ID").
pub const EXTENDED_POOL: &[u16] = &[
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
    0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20,
    0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
];

/// A capability the generator placed: its true extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub kind: CapabilityKind,
    pub offset: u16,
    pub id: u16,
    pub len: usize,
}

/// Tiny deterministic shuffle key.
fn mix(seed: u64, i: usize) -> u64 {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Lays out `caps` (bytes, chain order) in `[lo, hi)` in a shuffled memory order with gaps,
/// dropping what does not fit. Returns (offset, bytes) in chain order.
fn layout(
    caps: Vec<Vec<u8>>,
    gaps: &[u8],
    seed: u64,
    lo: usize,
    hi: usize,
) -> Vec<(usize, Vec<u8>)> {
    let mut order: Vec<usize> = (0..caps.len()).collect();
    order.sort_by_key(|&i| mix(seed, i));
    if lo == 0x100 {
        // The extended chain starts at 0x100: its first capability is placed first.
        order.retain(|&i| i != 0);
        if !caps.is_empty() {
            order.insert(0, 0);
        }
    }
    let mut at = lo;
    let mut placed: Vec<(usize, usize)> = Vec::new(); // (chain index, offset)
    for (n, &i) in order.iter().enumerate() {
        let len = (caps[i].len() + 3) & !3;
        let gap = 4 * usize::from(gaps.get(n).copied().unwrap_or(0) % 4);
        // The first extended capability must sit at 0x100 itself: give it no gap.
        let start = if n == 0 && lo == 0x100 { at } else { at + gap };
        if start + len > hi {
            continue;
        }
        placed.push((i, start));
        at = start + len;
    }
    placed.sort_by_key(|&(i, _)| i);
    placed
        .into_iter()
        .map(|(i, off)| (off, caps[i].clone()))
        .collect()
}

/// A 4 KiB space with a random standard chain (always containing a PCI Express capability,
/// so lspci decodes the extended chain) and a random extended chain.
/// `std_caps`: (kind choice, parameter); `ext_caps`: (pool index, version, body dwords).
pub fn random_space(
    std_caps: &[(usize, u8)],
    ext_caps: &[(usize, u8, u8)],
    gaps: &[u8],
    seed: u64,
) -> (ConfigSpace, Vec<Placed>) {
    let mut cs = ConfigSpace::new_extended();
    cs.set_physical(0, &[0xf4, 0x1a, 0x00, 0x10]).unwrap();
    let mut caps = vec![PcieCap::build(PciePortType::Endpoint)];
    caps.extend(std_caps.iter().map(|&(c, p)| standard_cap(c, p)));
    let std_layout = layout(caps, gaps, seed, 0x40, 0x100);
    let mut placed = Vec::new();
    for (i, (off, bytes)) in std_layout.iter().enumerate() {
        let mut b = bytes.clone();
        b[1] = std_layout.get(i + 1).map_or(0, |(n, _)| *n as u8);
        cs.set_physical(*off, &b).unwrap();
        placed.push(Placed {
            kind: CapabilityKind::Standard,
            offset: *off as u16,
            id: u16::from(b[0]),
            len: b.len(),
        });
    }
    if let Some((first, _)) = std_layout.first() {
        cs.set_physical(0x34, &[*first as u8]).unwrap();
        cs.set_physical(0x06, &[0x10]).unwrap();
    }
    let ext: Vec<Vec<u8>> = ext_caps
        .iter()
        .map(|&(pick, version, dwords)| {
            let id = EXTENDED_POOL[pick % EXTENDED_POOL.len()];
            // A Device Serial Number capability is exactly 12 bytes long.
            let len = if id == 0x03 {
                12
            } else {
                12 + 4 * usize::from(dwords % 8)
            };
            let mut b = vec![0u8; len];
            let header = u32::from(id) | (u32::from(version % 15 + 1) << 16);
            b[..4].copy_from_slice(&header.to_le_bytes());
            if id == 0x0b {
                b[4..8].copy_from_slice(&((len as u32) << 20).to_le_bytes());
            }
            b
        })
        .collect();
    let ext_layout = layout(ext, gaps, seed.rotate_left(17), 0x100, 0x1000);
    for (i, (off, bytes)) in ext_layout.iter().enumerate() {
        let mut b = bytes.clone();
        let next = ext_layout.get(i + 1).map_or(0, |(n, _)| *n as u32);
        let header = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) | (next << 20);
        b[..4].copy_from_slice(&header.to_le_bytes());
        cs.set_physical(*off, &b).unwrap();
        placed.push(Placed {
            kind: CapabilityKind::Extended,
            offset: *off as u16,
            id: u16::from_le_bytes([b[0], b[1]]),
            len: b.len(),
        });
    }
    (cs, placed)
}
