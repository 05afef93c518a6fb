// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every real dump in `fixtures/pci-config`: the capabilities this crate finds equal what
//! `lspci -vvv` printed for the same device (the `.lspci-vvv` file beside each dump).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/pci-config");

#[test]
fn every_fixture_matches_lspci_decoding() {
    let mut checked = 0;
    let mut caps_seen = 0;
    let mut entries: Vec<_> = std::fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for dump in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "lspci-x"))
    {
        let vvv = dump.with_extension("lspci-vvv");
        let text = std::fs::read_to_string(dump).unwrap();
        let decoded = std::fs::read_to_string(&vvv).unwrap();
        let devices = pci_config::parse_dump(&text).unwrap();
        assert_eq!(devices.len(), 1, "{}", dump.display());
        let name = dump.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        common::assert_same_as_lspci(&devices[0].space, &decoded, name);
        // The device line is lspci's own first line.
        assert_eq!(Some(devices[0].header.as_str()), decoded.lines().next());
        caps_seen += common::lspci_capabilities(&decoded).len();
        checked += 1;
    }
    assert_eq!(
        checked,
        6,
        "fixture dumps found in {}",
        Path::new(FIXTURES).display()
    );
    assert!(caps_seen > 0, "the fixtures hold capabilities to compare");
}

#[test]
fn fixture_dumps_round_trip_through_the_writer() {
    for entry in std::fs::read_dir(FIXTURES).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "lspci-x") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let devices = pci_config::parse_dump(&text).unwrap();
        let written =
            pci_config::lspci::write_dump(devices.iter().map(|d| (d.header.as_str(), &d.space)));
        assert_eq!(written.trim_end(), text.trim_end(), "{}", path.display());
    }
}

#[test]
fn virtio_msix_view_matches_lspci() {
    // lspci: "MSI-X: Enable+ Count=3 Masked-", table BAR=0 offset=00008000, PBA offset=00048000.
    let path = format!("{FIXTURES}/00-03-0_1af4-1041.lspci-x");
    let devices = pci_config::parse_dump(&std::fs::read_to_string(path).unwrap()).unwrap();
    let msix = devices[0].space.msix().unwrap().unwrap();
    assert_eq!(msix.table_size(), 3);
    assert!(msix.enabled() && !msix.function_masked());
    assert_eq!((msix.table_bir, msix.table_offset), (0, 0x8000));
    assert_eq!((msix.pba_bir, msix.pba_offset), (0, 0x48000));
}
