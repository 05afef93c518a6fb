// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Replays every committed corpus file of every target through the target's checks, without
//! libFuzzer: a crash found once and added to `corpus/` stays fixed. The generated
//! `migration_stream` seeds are valid streams of a named version, and must keep decoding: a
//! format change that breaks a released stream fails here.

use std::fs;
use std::path::{Path, PathBuf};

use migration_state::DeviceState;

/// The committed corpus files of `target`, sorted.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for path in corpus(target) {
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

/// The `stream_reader` corpus, and its committed seeds are the ones `stream_ops::seeds`
/// generates now (a stream format change shows here, not only in the target's checks).
#[test]
fn stream_reader_corpus() {
    assert!(replay("stream_reader", passthrough_fuzz::stream_ops::run) >= 10);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/stream_reader");
    let seeds = passthrough_fuzz::stream_ops::seeds();
    assert_eq!(seeds.len(), 10);
    for (name, bytes) in seeds {
        let committed = fs::read(dir.join(format!("seed-{name}")))
            .unwrap_or_else(|e| panic!("seed-{name}: {e} (run `cargo xtask fuzz seed`)"));
        assert_eq!(
            committed, bytes,
            "seed-{name} is stale (run `cargo xtask fuzz seed`)"
        );
    }
}

/// Every generated `migration_stream` seed (`seed-NAME-vVERSION-modeMODE`, the mode byte then
/// a stream `seed-corpus` encoded as VERSION) decodes, as the reader its mode names, to a
/// state of that version. The target itself returns early on a stream that does not decode
/// (most fuzzed inputs), so without this a format break would pass the replay.
#[test]
fn migration_stream_seeds_still_decode() {
    let mut per_version = [0usize; 3];
    for path in corpus("migration_stream") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("seed-") {
            continue;
        }
        let (rest, mode) = name.rsplit_once("-mode").unwrap();
        let (_, version) = rest.rsplit_once("-v").unwrap();
        let mode: u8 = mode.parse().unwrap();
        let version: u16 = version.parse().unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.first(), Some(&mode), "{name}: mode byte");
        let (stream, reader) = passthrough_fuzz::migration_ops::stream_and_reader(&bytes).unwrap();
        let state = DeviceState::decode_up_to(&stream, reader)
            .unwrap_or_else(|e| panic!("{name} no longer decodes: {e}"));
        assert_eq!(
            u16::from_le_bytes([stream[8], stream[9]]),
            version,
            "{name}: version"
        );
        assert!(state.validate().is_ok(), "{name}");
        per_version[usize::from(version).min(2)] += 1;
    }
    // default, msi, msix-65 and extended in both versions (three modes of version 1, two of
    // version 2), extended-notice in version 2 only.
    assert_eq!(per_version, [0, 4 * 3, 5 * 2]);
}
