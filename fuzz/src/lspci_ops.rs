// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `lspci_dump`: parsing `lspci -x`/`-xxxx` dump text from untrusted bytes.
//!
//! Checks: parsing never panics; whatever parses writes back to text that parses to the same
//! headers and the same bytes (write/parse round trip), and writing is a fixed point.

use pci_config::lspci::{parse_dump, write_dump};

/// Runs one input. Panics on a violated property.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = parse_dump(text) else {
        return;
    };
    for e in &entries {
        let size = e.space.size();
        assert!(size == 256 || size == 4096, "space of {size} bytes");
    }
    let written = write_dump(entries.iter().map(|e| (e.header.as_str(), &e.space)));
    let reparsed = match parse_dump(&written) {
        Ok(r) => r,
        Err(err) => panic!("written dump does not parse: {err:?}\n{written}"),
    };
    assert_eq!(
        reparsed.len(),
        entries.len(),
        "device count after round trip"
    );
    for (a, b) in entries.iter().zip(&reparsed) {
        assert_eq!(a.header, b.header, "header after round trip");
        assert_eq!(
            a.space.physical(),
            b.space.physical(),
            "bytes after round trip of {}",
            a.header
        );
    }
    let rewritten = write_dump(reparsed.iter().map(|e| (e.header.as_str(), &e.space)));
    assert_eq!(rewritten, written, "writing is not a fixed point");
}
