// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The workspace's build system: `cargo xtask <command>`.

mod bench;
mod fuzz;
mod lab;

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci          fmt --check, clippy -D warnings, tests, rustdoc -D warnings, fuzz replay and a
              60 s run per fuzz target (PASSTHROUGH_FUZZ_SECONDS), then the lab — what
              .ci/run runs
  bench-msix  per-VF MSI-X restore cost per route-commit strategy on KVM (--help for options)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench-msix") => bench::run(args.get(1..).unwrap_or_default()),
        Some("fuzz") => fuzz::run(args.get(1..).unwrap_or_default()),
        Some("lab") => lab::run(args.get(1..).unwrap_or_default()),
        _ => {
            eprint!("{USAGE}{}{}", lab::USAGE, fuzz::USAGE);
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one cargo step, echoing it first, and fails if it fails.
fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    eprintln!("$ cargo {}", args.join(" "));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed: {status}", args.join(" ")))
    }
}

/// The features that build every crate's lab test binaries.
const LAB_FEATURES: &str = "vfio-core/lab,vmm-glue/lab";

/// What CI runs, in order.
fn ci() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // The lab's test binaries build only with their crates' `lab` feature.
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            LAB_FEATURES,
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--no-default-features",
            "--lib",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    cargo(&["test", "--workspace"], &[])?;
    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // The fuzz crate is a workspace of its own: lint it, replay its committed corpora,
    // then give every target a bounded coverage-guided run.
    let fuzz_manifest = ["--manifest-path", "fuzz/Cargo.toml"];
    cargo(
        &[&["fmt"][..], &fuzz_manifest, &["--", "--check"]].concat(),
        &[],
    )?;
    cargo(
        &[
            &["clippy"][..],
            &fuzz_manifest,
            &["--all-targets", "--", "-D", "warnings"],
        ]
        .concat(),
        &[],
    )?;
    cargo(
        &[&["test"][..], &fuzz_manifest, &["--release"]].concat(),
        &[],
    )?;
    let seconds = std::env::var("PASSTHROUGH_FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
    fuzz::run(&["all".into(), "--seconds".into(), seconds])?;
    // Last, the lab: the kernel backend and the conformance suite against a real Linux VFIO.
    lab::run(&[])?;
    Ok(())
}
