// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests of the configuration space model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use pci_config::{CapabilityKind, ConfigSpace, Error};
use proptest::prelude::*;

fn bytes256() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 256)
}

fn writes() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    prop::collection::vec(
        (0usize..256, prop::collection::vec(any::<u8>(), 1..=4)),
        1..24,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random masks and random guest writes: read-only bits never change, emulated physical
    /// bits never change, W1C bits clear exactly where 1s are written, writable bits take the
    /// written value, and bytes outside the write are untouched.
    #[test]
    fn guest_writes_obey_the_masks(
        physical in bytes256(),
        emulated in bytes256(),
        emu_mask in bytes256(),
        write_mask in bytes256(),
        w1c_mask in bytes256(),
        writes in writes(),
    ) {
        let mut cs = ConfigSpace::from_bytes(&physical).unwrap();
        cs.restore_emulated(&emulated, &emu_mask).unwrap();
        cs.set_write_mask(0, &write_mask).unwrap();
        cs.set_w1c_mask(0, &w1c_mask).unwrap();
        for (offset, data) in writes {
            let offset = offset.min(256 - data.len());
            let view_before = cs.guest_view();
            let phys_before = cs.physical().to_vec();
            cs.write(offset, &data).unwrap();
            let view_after = cs.guest_view();
            for i in 0..256 {
                let (vb, va) = (view_before[i], view_after[i]);
                let (pb, pa) = (phys_before[i], cs.physical()[i]);
                let Some(d) = i.checked_sub(offset).and_then(|k| data.get(k)).copied() else {
                    prop_assert_eq!((vb, pb), (va, pa), "byte {:#x} outside the write", i);
                    continue;
                };
                let (wm, w1c, em) = (write_mask[i], w1c_mask[i], emu_mask[i]);
                let read_only = !(wm | w1c);
                prop_assert_eq!(va & read_only, vb & read_only, "read-only bits at {:#x}", i);
                prop_assert_eq!(pa & em, pb & em, "emulated physical bits at {:#x}", i);
                prop_assert_eq!(va & w1c, vb & w1c & !d, "W1C bits at {:#x}", i);
                let writable = wm & !w1c;
                prop_assert_eq!(va & writable, d & writable, "writable bits at {:#x}", i);
            }
        }
    }

    /// Hidden capabilities never appear in a walk; the others stay, in order.
    #[test]
    fn hidden_capabilities_never_appear(
        std_caps in prop::collection::vec((0usize..9, any::<u8>()), 0..6),
        ext_caps in prop::collection::vec((0usize..64, any::<u8>(), any::<u8>()), 0..10),
        gaps in prop::collection::vec(any::<u8>(), 16),
        seed in any::<u64>(),
        hide in prop::collection::vec(any::<bool>(), 16),
    ) {
        let (mut cs, placed) = common::random_space(&std_caps, &ext_caps, &gaps, seed);
        let physical = cs.physical().to_vec();
        let hidden: Vec<_> = placed.iter().zip(hide.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, &h)| h).map(|(p, _)| *p).collect();
        for p in &hidden {
            let cap = cs.capabilities().unwrap().into_iter()
                .find(|c| c.kind == p.kind && c.offset == p.offset).unwrap();
            cs.hide(&cap).unwrap();
        }
        let walk = cs.capabilities().unwrap();
        for p in &hidden {
            prop_assert!(!walk.iter().any(|c| c.kind == p.kind && c.offset == p.offset && c.id == p.id),
                "hidden {:?} still in {:?}", p, walk);
        }
        let kept: Vec<_> = placed.iter().filter(|p| !hidden.contains(p)).map(|p| (p.kind, p.offset, p.id)).collect();
        // A hidden head of the extended chain leaves a Null capability at 0x100.
        let seen: Vec<_> = walk.iter().filter(|c| !(c.id == 0 && c.offset == 0x100))
            .map(|c| (c.kind, c.offset, c.id)).collect();
        prop_assert_eq!(seen, kept);
        prop_assert_eq!(cs.physical(), &physical[..], "hiding writes no physical byte");
    }

    /// Inserted capabilities never overlap each other or any existing capability, and stay
    /// reachable.
    #[test]
    fn inserted_capabilities_never_overlap(
        std_caps in prop::collection::vec((0usize..9, any::<u8>()), 0..6),
        ext_caps in prop::collection::vec((0usize..64, any::<u8>(), any::<u8>()), 0..10),
        gaps in prop::collection::vec(any::<u8>(), 16),
        seed in any::<u64>(),
        inserts in prop::collection::vec((any::<bool>(), 1usize..24, 0x20u8..0x40), 1..24),
    ) {
        let (mut cs, placed) = common::random_space(&std_caps, &ext_caps, &gaps, seed);
        let mut extents: Vec<(CapabilityKind, usize, usize)> = placed.iter()
            .map(|p| (p.kind, usize::from(p.offset), usize::from(p.offset) + p.len)).collect();
        let mut inserted = 0;
        for (extended, dwords, id) in inserts {
            let len = 4 * dwords;
            let (kind, bytes) = if extended {
                let mut b = vec![0u8; len.max(8)];
                b[0] = 0x0b;
                b[2] = 1;
                let vsec_len = (b.len() as u32) << 20;
                b[4..8].copy_from_slice(&vsec_len.to_le_bytes());
                (CapabilityKind::Extended, b)
            } else {
                let mut b = vec![0u8; len];
                b[0] = id;
                (CapabilityKind::Standard, b)
            };
            match cs.insert_capability(kind, &bytes) {
                Ok(at) => {
                    let (start, end) = (usize::from(at), usize::from(at) + bytes.len());
                    prop_assert_eq!(start % 4, 0);
                    let lo = if extended { 0x100 } else { 0x40 };
                    prop_assert!(start >= lo && end <= cs.size());
                    for &(k, s, e) in &extents {
                        prop_assert!(k != kind || e <= start || end <= s,
                            "{:?} [{:#x},{:#x}) overlaps [{:#x},{:#x})", kind, start, end, s, e);
                    }
                    extents.push((kind, start, end));
                    inserted += 1;
                    let walk = cs.capabilities().unwrap();
                    prop_assert!(walk.iter().any(|c| c.kind == kind && usize::from(c.offset) == start));
                }
                Err(Error::NoRoom { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
        prop_assert_eq!(cs.capabilities().unwrap().len(), placed.len() + inserted);
    }

    /// Walks of arbitrary bytes return (capabilities or a typed error) without panicking or
    /// looping, and never report overlapping capabilities.
    #[test]
    fn walks_of_random_bytes_terminate(bytes in prop::collection::vec(any::<u8>(), 4096), status_cap in any::<bool>()) {
        let mut cs = ConfigSpace::from_bytes(&bytes).unwrap();
        if status_cap {
            cs.set_physical(0x06, &[0x10]).unwrap();
        }
        if let Ok(caps) = cs.capabilities() {
            prop_assert!(caps.len() <= 48 + 960);
            for (i, a) in caps.iter().enumerate() {
                for b in &caps[i + 1..] {
                    prop_assert!(a.kind != b.kind || a.end() <= usize::from(b.offset) || b.end() <= usize::from(a.offset));
                }
            }
        }
    }

    /// Dump parsing never panics, whatever the text.
    #[test]
    fn parse_dump_never_panics(text in "(([0-9a-f]{1,4}:( [0-9a-fA-F]{1,3}){0,18})|[ -~]{0,20}|)(\n(([0-9a-f]{1,4}:( [0-9a-f]{2}){0,18})|[ -~]{0,20}|)){0,40}") {
        if let Ok(devices) = pci_config::parse_dump(&text) {
            for d in devices {
                prop_assert!(d.space.size() == 256 || d.space.size() == 4096);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Sizing: after writing all-ones, a driver decodes the defined size from the read-back
    /// value; flag bits never change under any write.
    #[test]
    fn bar_sizing_reads_back_the_size(
        index in 0u8..5,
        kind in 0usize..3,
        log2 in 4u32..40,
        prefetchable in any::<bool>(),
        writes in prop::collection::vec((0usize..8, any::<u32>()), 0..8),
    ) {
        use pci_config::BarKind;
        let (kind, log2, prefetchable) = match kind {
            0 => (BarKind::Mem32, log2.min(31), prefetchable),
            1 => (BarKind::Mem64, log2, prefetchable),
            _ => (BarKind::Io, log2.clamp(2, 8), false),
        };
        let size = 1u64 << log2;
        let mut cs = ConfigSpace::new_conventional();
        cs.define_bar(index, kind, size, prefetchable).unwrap();
        let reg = 0x10 + 4 * usize::from(index);
        let flags_before = cs.read_u32(reg).unwrap() & if kind == BarKind::Io { 0x3 } else { 0xf };
        for (dword, value) in writes {
            cs.write(0x10 + 4 * (dword % 6), &value.to_le_bytes()).unwrap();
        }
        cs.write(reg, &[0xff; 4]).unwrap();
        let low = cs.read_u32(reg).unwrap();
        let flag_bits = if kind == BarKind::Io { 0x3 } else { 0xf };
        prop_assert_eq!(low & flag_bits, flags_before);
        let decoded = if kind == BarKind::Mem64 {
            cs.write(reg + 4, &[0xff; 4]).unwrap();
            let high = u64::from(cs.read_u32(reg + 4).unwrap());
            (!((high << 32) | u64::from(low & !flag_bits))).wrapping_add(1)
        } else {
            let mask = if kind == BarKind::Io { 0xffffu32 } else { u32::MAX };
            u64::from((!(low & !flag_bits) & mask).wrapping_add(1))
        };
        prop_assert_eq!(decoded, size);
        prop_assert_eq!(cs.bar(index).map(|b| b.size), Some(size));
    }
}
