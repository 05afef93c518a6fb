// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `lscap` example: one `[OFF] ID name` line per capability, standard chain first, and a
//! non-zero exit with the typed error for a malformed chain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

use pci_config::views::{MsixCap, PcieCap, PciePortType};
use pci_config::{ConfigSpace, ConfigSpaceBuilder};

/// The example binary: built next to the test binary by `cargo test`, else built now.
fn lscap() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let path = profile_dir
        .join("examples")
        .join(format!("lscap{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "pci-config", "--example", "lscap"])
            .status()
            .unwrap();
        assert!(status.success(), "building the lscap example");
    }
    path
}

fn run_on(name: &str, space: &ConfigSpace) -> Output {
    let path = std::env::temp_dir().join(format!(
        "pci-config-lscap-{}-{name}.dump",
        std::process::id()
    ));
    std::fs::write(
        &path,
        pci_config::lspci::write_dump([("00:00.0 lscap test", space)]),
    )
    .unwrap();
    let out = Command::new(lscap()).arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    out
}

#[test]
fn lists_standard_then_extended() {
    let cs = ConfigSpaceBuilder::new(0x1af4, 0x1041)
        .capability(PcieCap::build(PciePortType::Endpoint))
        .capability(MsixCap::build(4, 0, 0, 0, 0x800).unwrap())
        .extended_capability(vec![0x01, 0x00, 0x02, 0x00])
        .extended_capability(vec![0x0e, 0x00, 0x01, 0x00])
        .build()
        .unwrap();
    let out = run_on("good", &cs);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let expected: Vec<String> = cs
        .capabilities()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(lines, expected);
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with("[40] 10 "), "{lines:?}");
    assert!(lines[2].starts_with("[100] 0001 "), "{lines:?}");
}

#[test]
fn malformed_chain_exits_non_zero_with_the_error() {
    let mut cs = ConfigSpace::new_conventional();
    cs.set_physical(0x06, &[0x10]).unwrap();
    cs.set_physical(0x34, &[0x40]).unwrap();
    cs.set_physical(0x40, &[0x13, 0x40]).unwrap();
    let out = run_on("loop", &cs);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("CapabilityLoop"), "{stderr}");
}
