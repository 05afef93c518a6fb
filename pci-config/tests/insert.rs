// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `insert_capability` is all or nothing: a successful insert leaves both chains walking with
//! the new capability in them, a refused one leaves the space as it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use pci_config::{ids, CapabilityKind, ConfigSpace, Error};
use proptest::prelude::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/pci-config");

fn fixture(name: &str) -> ConfigSpace {
    let text = std::fs::read_to_string(format!("{FIXTURES}/{name}.lspci-x")).unwrap();
    pci_config::parse_dump(&text).unwrap().remove(0).space
}

/// The fuzzer's smallest reproducer: a vendor-specific capability whose length byte (0xff)
/// runs past 0x100 from the only free offset, 0x40.
#[test]
fn vendor_length_past_the_end_is_refused_on_a_real_dump() {
    let mut cs = fixture("00-00-0_8086-0d57");
    let before = cs.clone();
    let bytes = [0x09, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        cs.insert_capability(CapabilityKind::Standard, &bytes),
        Err(Error::MalformedCapability { .. })
    ));
    assert_eq!(cs, before);
    assert!(cs.capabilities().unwrap().is_empty());
    // The same capability with a length byte that matches its bytes goes in and walks.
    let at = cs
        .insert_capability(
            CapabilityKind::Standard,
            &[0x09, 0x00, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff],
        )
        .unwrap();
    let caps = cs.capabilities().unwrap();
    assert_eq!(caps.len(), 1);
    assert_eq!((caps[0].offset, caps[0].id, caps[0].len), (at, 0x09, 8));
    assert_eq!(cs.physical(), before.physical(), "emulated only");
}

/// An all-zero extended header would read as the end of the chain: the insert "succeeded"
/// before, but the walk did not contain it.
#[test]
fn zero_extended_header_is_refused_on_a_real_dump() {
    let mut cs = fixture("00-00-0_8086-0d57");
    let before = cs.clone();
    assert!(matches!(
        cs.insert_capability(CapabilityKind::Extended, &[0, 0, 0, 0, 0x35]),
        Err(Error::MalformedCapability { .. })
    ));
    assert_eq!(cs, before);
}

/// Capability IDs the property test draws from: every ID whose length the walk computes from
/// its bytes, plus some it does not know.
const STD_IDS: &[u8] = &[0x00, 0x01, 0x03, 0x05, 0x09, 0x0d, 0x10, 0x11, 0x13, 0x2a];
const EXT_IDS: &[u16] = &[0x00, 0x01, 0x03, 0x0b, 0x0e, 0x2a, 0xffff];

/// One insert attempt: kind, ID pick, raw bytes, and whether the length fields are made to
/// agree with the bytes (so that both outcomes are common).
fn attempts() -> impl Strategy<Value = Vec<(bool, usize, Vec<u8>, bool)>> {
    prop::collection::vec(
        (
            any::<bool>(),
            any::<usize>(),
            prop::collection::vec(any::<u8>(), 0..72),
            any::<bool>(),
        ),
        1..16,
    )
}

fn shape(extended: bool, pick: usize, mut bytes: Vec<u8>, consistent: bool) -> Vec<u8> {
    let len = bytes.len();
    if extended {
        let id = EXT_IDS[pick % EXT_IDS.len()].to_le_bytes();
        for (b, v) in bytes.iter_mut().zip(id) {
            *b = v;
        }
        if consistent && len >= 8 {
            let field = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let field = (field & 0x000f_ffff) | ((len as u32) << 20);
            bytes[4..8].copy_from_slice(&field.to_le_bytes());
        }
    } else {
        if let Some(b) = bytes.first_mut() {
            *b = STD_IDS[pick % STD_IDS.len()];
        }
        if consistent && len >= 3 && bytes[0] == ids::CAP_VENDOR {
            bytes[2] = len as u8;
        }
    }
    bytes
}

fn check_attempts(
    cs: &mut ConfigSpace,
    attempts: Vec<(bool, usize, Vec<u8>, bool)>,
) -> Result<usize, TestCaseError> {
    let physical = cs.physical().to_vec();
    let mut ok = 0;
    for (extended, pick, raw, consistent) in attempts {
        let kind = if extended {
            CapabilityKind::Extended
        } else {
            CapabilityKind::Standard
        };
        let bytes = shape(extended, pick, raw, consistent);
        let before = cs.clone();
        match cs.insert_capability(kind, &bytes) {
            Ok(at) => {
                ok += 1;
                let caps = cs.capabilities();
                prop_assert!(
                    caps.is_ok(),
                    "after inserting {:02x?} at {:#x}: {:?}",
                    bytes,
                    at,
                    caps
                );
                let caps = caps.unwrap();
                let found = caps.iter().find(|c| c.kind == kind && c.offset == at);
                prop_assert!(
                    found.is_some(),
                    "{:02x?} at {:#x} not walked: {:?}",
                    bytes,
                    at,
                    caps
                );
                let found = found.unwrap();
                prop_assert_eq!(
                    found.id,
                    u16::from_le_bytes([bytes[0], if extended { bytes[1] } else { 0 }])
                );
                prop_assert!(usize::from(found.len) <= bytes.len());
                let old = before.capabilities().unwrap();
                prop_assert_eq!(caps.len(), old.len() + 1, "the insert dropped a capability");
            }
            Err(e) => prop_assert_eq!(&*cs, &before, "refused insert ({}) changed the space", e),
        }
    }
    prop_assert_eq!(
        cs.physical(),
        &physical[..],
        "inserts never write physical bytes"
    );
    Ok(ok)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// On well-formed spaces: after any successful insert both chains walk and contain the
    /// new capability; after any refused one the space is unchanged.
    #[test]
    fn insert_is_all_or_nothing(
        std_caps in prop::collection::vec((0usize..9, any::<u8>()), 0..6),
        ext_caps in prop::collection::vec((0usize..64, any::<u8>(), any::<u8>()), 0..10),
        gaps in prop::collection::vec(any::<u8>(), 16),
        seed in any::<u64>(),
        attempts in attempts(),
    ) {
        let (mut cs, _) = common::random_space(&std_caps, &ext_caps, &gaps, seed);
        check_attempts(&mut cs, attempts)?;
    }

    /// The same on an empty space, where most well-shaped attempts succeed.
    #[test]
    fn insert_into_empty_space_is_all_or_nothing(attempts in attempts(), extended in any::<bool>()) {
        let mut cs = if extended { ConfigSpace::new_extended() } else { ConfigSpace::new_conventional() };
        check_attempts(&mut cs, attempts)?;
    }

    /// On random bytes (usually malformed chains): never a success that does not walk.
    #[test]
    fn insert_into_random_bytes_is_all_or_nothing(
        bytes in prop::collection::vec(any::<u8>(), 4096),
        attempts in attempts(),
    ) {
        let mut cs = ConfigSpace::from_bytes(&bytes).unwrap();
        check_attempts(&mut cs, attempts)?;
    }
}

/// The property tests above would pass vacuously if every insert were refused: count the
/// successes of a fixed, well-formed set of attempts.
#[test]
fn well_formed_attempts_succeed() {
    let mut cs = ConfigSpace::new_extended();
    let attempts = vec![
        (false, 4, vec![0; 12], true), // vendor, length 12
        (false, 9, vec![0; 8], true),  // unknown ID 0x2a
        (true, 3, vec![0; 16], true),  // VSEC, length 16
        (true, 2, vec![0; 12], true),  // DSN
        (true, 0, vec![0; 8], true),   // ID 0 version 0: refused
        (false, 4, vec![0; 8], false), // vendor length byte 0: refused
    ];
    assert_eq!(check_attempts(&mut cs, attempts).unwrap(), 4);
    assert_eq!(cs.capabilities().unwrap().len(), 4);
}
