// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Differential test against the real `lspci -F FILE -vvv`: generated 4 KiB configuration
//! spaces with random standard and extended capability chains decode to the same offsets and
//! IDs in lspci and in this crate.
//!
//! Skips with a printed reason when `lspci` cannot run, unless `PASSTHROUGH_REQUIRE_LSPCI=1`
//! is set (CI sets it), in which case it fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

fn lspci_available() -> bool {
    let ok = Command::new("lspci")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let reason = "lspci (pciutils) cannot be run";
        if std::env::var("PASSTHROUGH_REQUIRE_LSPCI").as_deref() == Ok("1") {
            panic!("{reason}, and PASSTHROUGH_REQUIRE_LSPCI=1");
        }
        eprintln!("skipping the lspci differential test: {reason}");
    }
    ok
}

static FILES: AtomicUsize = AtomicUsize::new(0);

/// Writes `dump` to a fresh temporary file, runs lspci on it and returns its output.
fn run_lspci(dump: &str) -> String {
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("pci-config-lspci-{}-{n}.dump", std::process::id()));
    std::fs::write(&path, dump).unwrap();
    let out = Command::new("lspci")
        .arg("-F")
        .arg(&path)
        .arg("-vvv")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "lspci failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

static COMPARED: AtomicUsize = AtomicUsize::new(0);

#[test]
fn random_chains_decode_like_lspci() {
    if !lspci_available() {
        return;
    }
    let config = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        std_caps in prop::collection::vec((0usize..9, any::<u8>()), 0..6),
        ext_caps in prop::collection::vec((0usize..64, any::<u8>(), any::<u8>()), 0..10),
        gaps in prop::collection::vec(any::<u8>(), 16),
        seed in any::<u64>(),
    )| {
        let (cs, placed) = common::random_space(&std_caps, &ext_caps, &gaps, seed);
        let dump = pci_config::lspci::write_dump([("00:00.0 Generated device", &cs)]);
        let output = run_lspci(&dump);
        common::assert_same_as_lspci(&cs, &output, "generated space");
        // The generator's own layout is what both decoders found.
        let found = cs.capabilities().unwrap();
        prop_assert_eq!(
            found.iter().map(|c| (c.offset, c.id)).collect::<Vec<_>>(),
            placed.iter().map(|p| (p.offset, p.id)).collect::<Vec<_>>()
        );
        COMPARED.fetch_add(found.len(), Ordering::Relaxed);
    });
    assert!(
        COMPARED.load(Ordering::Relaxed) > 96,
        "capabilities compared"
    );
}

#[test]
fn edited_chains_decode_like_lspci() {
    if !lspci_available() {
        return;
    }
    // Hide and insert, then dump the guest view: lspci must see the edited chains.
    let (mut cs, placed) = common::random_space(
        &[(0, 1), (1, 0xc3), (3, 7), (2, 9)],
        &[(0, 1, 0), (1, 1, 2), (2, 1, 1), (13, 1, 0)],
        &[1, 0, 2, 3, 0, 1, 2, 0],
        42,
    );
    let first_ext = cs.walk_extended().unwrap()[0];
    cs.hide(&first_ext).unwrap();
    let msi = cs.find_standard(pci_config::ids::CAP_MSI).unwrap();
    cs.hide(&msi).unwrap();
    let vendor = pci_config::views::VendorCap::build(b"migration").unwrap();
    let at = cs
        .insert_capability(pci_config::CapabilityKind::Standard, &vendor)
        .unwrap();
    let at_ext = cs
        .insert_capability(
            pci_config::CapabilityKind::Extended,
            &[0x0b, 0, 0x11, 0, 0, 0, 0x80, 0],
        )
        .unwrap();
    let output = run_lspci(&pci_config::lspci::write_dump([("00:00.0 Edited", &cs)]));
    common::assert_same_as_lspci(&cs, &output, "edited space");
    let lspci = common::lspci_capabilities(&output);
    assert!(lspci.iter().any(|c| c.offset == at && c.ids == [0x09]));
    assert!(lspci.iter().any(|c| c.offset == at_ext && c.ids == [0x0b]));
    assert!(!lspci.iter().any(|c| c.offset == msi.offset));
    assert_eq!(
        lspci.len(),
        placed.len() + 2 - 1,
        "one hidden, one Null head, two inserted"
    );
}
