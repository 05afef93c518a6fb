// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Replays every committed corpus file of every target through the target's checks, without
//! libFuzzer: a crash found once and added to `corpus/` stays fixed.

use std::fs;
use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut n = 0;
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("{target}: {}", path.display());
        run(&bytes);
        n += 1;
    }
    n
}

#[test]
fn config_space_corpus() {
    assert!(replay("config_space", passthrough_fuzz::config_ops::run) >= 8);
}

#[test]
fn msix_mmio_corpus() {
    assert!(replay("msix_mmio", passthrough_fuzz::msix_ops::run) >= 4);
}

#[test]
fn passthrough_mmio_corpus() {
    assert!(replay("passthrough_mmio", passthrough_fuzz::passthrough_ops::run) >= 8);
}

#[test]
fn migration_stream_corpus() {
    assert!(replay("migration_stream", passthrough_fuzz::migration_ops::run) >= 4);
}

#[test]
fn lspci_dump_corpus() {
    assert!(replay("lspci_dump", passthrough_fuzz::lspci_ops::run) >= 6);
}
