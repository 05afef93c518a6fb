// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Replays the committed corpus of the `stream_reader` target through its checks, without
//! libFuzzer, and checks the committed seeds are the ones `stream_ops::seeds` generates.

use std::fs;
use std::path::Path;

#[test]
fn stream_reader_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/stream_reader");
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in &entries {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("stream_reader: {}", path.display());
        passthrough_fuzz::stream_ops::run(&bytes);
    }
    let seeds = passthrough_fuzz::stream_ops::seeds();
    assert_eq!(seeds.len(), 10);
    for (name, bytes) in seeds {
        let committed = fs::read(dir.join(format!("seed-{name}")))
            .unwrap_or_else(|e| panic!("seed-{name}: {e} (run `cargo xtask fuzz seed`)"));
        assert_eq!(committed, bytes, "seed-{name} is stale (run `cargo xtask fuzz seed`)");
    }
    assert!(entries.len() >= 10);
}
