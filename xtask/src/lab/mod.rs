// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `cargo xtask lab`: the workspace's lab tests against a real Linux VFIO.
//!
//! The host has no `/dev/vfio`, so a stock Debian 6.12 kernel is booted in QEMU (TCG, q35,
//! emulated intel-iommu) with an e1000e, an NVMe controller with SR-IOV and the kernel's mtty
//! sample (an mdev with migration v2). The guest's `/init` binds them to vfio-pci, creates the
//! mdevs and runs the lab test binaries, built on the host, reporting on a second serial port.
//! Everything downloaded or built is cached under `target/vfio-lab/`; nothing is installed on
//! the host but the tools (QEMU, busybox, kmod, cpio).

mod guest;
mod host;
mod image;
mod migration;
mod seed000;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Usage of `cargo xtask lab`.
pub const USAGE: &str = "
  lab [--timeout S] [--only SUITE[,SUITE...]]
                                   boot Linux 6.12 in QEMU with e1000e, NVMe SR-IOV and mtty
                                   bound to VFIO and run the lab suites there; exits non-zero
                                   unless every suite ran and passed (PASSTHROUGH_REQUIRE_LAB=1:
                                   a lab that cannot run is a failure, not a skip)
";

/// Where the lab keeps what it downloads and builds.
#[derive(Debug)]
pub struct Lab {
    cache: PathBuf,
}

impl Lab {
    fn cache(&self) -> &Path {
        &self.cache
    }

    fn debs(&self) -> PathBuf {
        self.cache.join("debs")
    }

    fn root(&self) -> PathBuf {
        self.cache.join("root")
    }
}

/// One lab test binary: a `[[test]]` target of a workspace crate, built with its `lab` feature.
#[derive(Debug, Clone)]
pub struct Suite {
    /// `crate/target`.
    name: String,
    /// The built binary.
    binary: PathBuf,
    /// Seconds the guest gives it.
    timeout_s: u32,
    /// Extra libtest arguments.
    args: &'static str,
}

impl Suite {
    fn file_name(&self) -> String {
        self.name.replace('/', "-")
    }
}

/// A lab suite: package, test target, seconds allowed under TCG, extra libtest arguments.
type SuiteSpec = (&'static str, &'static str, u32, &'static str);

/// The lab suites, in the order the guest runs them.
const SUITES: &[SuiteSpec] = &[
    ("vfio-core", "lab_open", 300, ""),
    ("vfio-core", "lab_iommu", 120, ""),
    // Prints the config spaces the simulator's lab profiles are built from.
    ("vfio-core", "lab_fixtures", 120, "--nocapture"),
    // The conformance suite: the scenarios `tests/conformance.rs` runs on the simulator.
    ("vfio-core", "lab_conformance", 600, ""),
    // Seed 000 on the real kernel: prints `@@LAB-JSON` lines the table is made of. It opens
    // the NVMe PF, so it runs while no VF exists (before lab_nvme creates its own).
    ("vfio-core", "lab_msix_growth", 600, "--nocapture"),
    // A real NVMe VF through PassthroughDevice: provisioning, DMA, MSI-X, storm, teardown.
    ("vmm-glue", "lab_nvme", 600, ""),
    // INTx of the e1000e through an INTx line: trigger and resample eventfds on real vfio-pci.
    ("vmm-glue", "lab_intx", 120, ""),
    // Live migration of the mttys through vmm_glue::live_migration, dirty tracking with an
    // NVMe VF doing DMA; prints `@@LAB-JSON` lines the migration table is made of.
    ("vmm-glue", "lab_migration", 600, "--nocapture"),
];

/// Why the lab did not pass.
enum Failure {
    /// It could not run at all (no QEMU, no download, no boot).
    Unavailable(String),
    /// It ran and something failed.
    Failed(String),
}

/// Entry point of `cargo xtask lab ARGS`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut timeout = Duration::from_secs(1200);
    let mut only: Option<Vec<String>> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--timeout" => {
                let s = it.next().ok_or("--timeout needs seconds")?;
                timeout = Duration::from_secs(s.parse().map_err(|_| "bad --timeout")?);
            }
            "--only" => {
                let s = it.next().ok_or("--only needs suite names")?;
                only = Some(s.split(',').map(str::to_owned).collect());
            }
            other => return Err(format!("unknown lab option {other}{USAGE}")),
        }
    }
    let required = std::env::var("PASSTHROUGH_REQUIRE_LAB").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let result = lab(timeout, only.as_deref());
    eprintln!("lab: {:.0} s", started.elapsed().as_secs_f64());
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Failed(why)) => Err(format!("lab failed: {why}")),
        Err(Failure::Unavailable(why)) if required => Err(format!(
            "lab could not run and PASSTHROUGH_REQUIRE_LAB=1 makes that a failure: {why}"
        )),
        Err(Failure::Unavailable(why)) => Err(format!(
            "lab could not run (not a pass; set PASSTHROUGH_REQUIRE_LAB=1 to make it a \
             failure): {why}"
        )),
    }
}

fn lab(timeout: Duration, only: Option<&[String]>) -> Result<(), Failure> {
    let unavailable = Failure::Unavailable;
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let lab = Lab {
        cache: target.join("vfio-lab"),
    };
    host::install_host_packages().map_err(unavailable)?;
    host::fetch_kernel(&lab).map_err(unavailable)?;
    let mtty = host::build_mtty(&lab).map_err(unavailable)?;
    let wanted: Vec<_> = SUITES
        .iter()
        .filter(|(p, t, _, _)| only.is_none_or(|o| o.iter().any(|n| *n == format!("{p}/{t}"))))
        .collect();
    if wanted.is_empty() {
        return Err(Failure::Failed("--only names no suite".into()));
    }
    let suites = build_suites(&root, &wanted).map_err(Failure::Failed)?;
    let initramfs = image::build(&lab, &mtty, &suites).map_err(unavailable)?;
    let report = guest::boot(&lab, &initramfs, timeout).map_err(unavailable)?;
    let logs = lab.cache().join("logs");
    println!(
        "lab: kernel {}",
        report.kernel.as_deref().unwrap_or("(not reported)")
    );
    for device in &report.devices {
        println!("lab: device {device}");
    }
    println!(
        "lab: /dev/vfio: {}",
        report.vfio_nodes.as_deref().unwrap_or("(not reported)")
    );
    for error in &report.errors {
        println!("lab: guest error: {error}");
    }
    let saved = save_fixtures(&lab, &report).map_err(Failure::Failed)?;
    if saved > 0 {
        println!(
            "lab: {saved} config-space dumps in {}",
            lab.cache().join("fixtures").display()
        );
    }
    let mut failures = Vec::new();
    if suites.iter().any(|s| s.name == "vfio-core/lab_msix_growth") {
        if let Err(e) = seed000::print(&seed000::rows(&report)) {
            failures.push(format!("seed-000 table: {e}"));
        }
    }
    if suites.iter().any(|s| s.name == "vmm-glue/lab_migration") {
        if let Err(e) = migration::print(&migration::rows(&report)) {
            failures.push(format!("migration table: {e}"));
        }
    }
    for suite in &suites {
        let ran = report.suites.iter().find(|r| r.name == suite.name);
        match ran.map(|r| (r.rc, r.counts())) {
            Some((Some(0), Some((passed, failed)))) if failed == 0 && passed > 0 => {
                println!("{}: {passed} passed, {failed} failed", suite.name);
            }
            Some((rc, counts)) => {
                let (passed, failed) = counts.unwrap_or((0, 0));
                println!(
                    "{}: {passed} passed, {failed} failed (exit {})",
                    suite.name,
                    rc.map_or("none: the guest stopped".into(), |c| c.to_string())
                );
                if let Some(run) = ran {
                    print_failures(&run.output);
                }
                failures.push(suite.name.clone());
            }
            None => {
                println!("{}: did not run", suite.name);
                failures.push(suite.name.clone());
            }
        }
    }
    if let (Some(up), Some(end)) = report.uptime {
        println!(
            "lab: guest at /init after {up:.1} s, suites took {:.1} s",
            end - up
        );
    }
    println!(
        "lab: guest logs in {} (console.log, results.log)",
        logs.display()
    );
    if !report.finished {
        failures.push("the guest's /init did not finish".into());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failure::Failed(failures.join(", ")))
    }
}

/// Write the `@@FIXTURE-BEGIN name` ... `@@FIXTURE-END` blocks the suites printed to
/// `fixtures/name` in the lab's cache; returns how many.
fn save_fixtures(lab: &Lab, report: &guest::Report) -> Result<usize, String> {
    let dir = lab.cache().join("fixtures");
    let mut saved = 0;
    for run in &report.suites {
        let mut current: Option<(String, String)> = None;
        for line in run.output.lines() {
            if let Some(name) = line.strip_prefix("@@FIXTURE-BEGIN ") {
                current = Some((name.trim().to_owned(), String::new()));
            } else if line.starts_with("@@FIXTURE-END") {
                if let Some((name, text)) = current.take() {
                    if name.contains('/') || name.starts_with('.') {
                        return Err(format!("bad fixture name {name:?}"));
                    }
                    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                    std::fs::write(dir.join(&name), text).map_err(|e| e.to_string())?;
                    saved += 1;
                }
            } else if let Some((_, text)) = current.as_mut() {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    Ok(saved)
}

/// Print the failing tests' output of a libtest run.
fn print_failures(output: &str) {
    let mut printing = false;
    for line in output.lines() {
        if line.starts_with("failures:") {
            printing = true;
        }
        if printing {
            println!("    {line}");
        }
    }
}

/// Build the suites' test binaries with the `lab` profile and their crate's `lab` feature.
fn build_suites(root: &Path, wanted: &[&SuiteSpec]) -> Result<Vec<Suite>, String> {
    eprintln!("lab: building the lab test binaries");
    let mut suites = Vec::new();
    for (package, test, timeout_s, args) in wanted {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["test", "--no-run", "--profile", "lab"])
            .args(["--message-format", "json-render-diagnostics"])
            .args(["-p", package, "--features", &format!("{package}/lab")])
            .args(["--test", test])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!("building {package}/{test} failed"));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let binary = stdout
            .lines()
            .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
            .filter(|l| l.contains(&format!("\"name\":\"{test}\"")))
            .find_map(|l| json_string(l, "executable"))
            .ok_or_else(|| format!("cargo built no executable for {package}/{test}"))?;
        suites.push(Suite {
            name: format!("{package}/{test}"),
            binary: PathBuf::from(binary),
            timeout_s: *timeout_s,
            args,
        });
    }
    Ok(suites)
}

/// The string value of `"key":"..."` in one line of cargo's JSON (paths carry no quotes).
fn json_string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let rest = line.get(start..)?;
    Some(rest.get(..rest.find('"')?)?.replace("\\\\", "\\"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Run a command, failing with its stderr if it fails.
fn sh(cmd: &mut Command) -> Result<(), String> {
    run_output(cmd).map(drop)
}

/// Run a command and return its stdout, failing with its stderr if it fails.
fn run_output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_json_strings_are_read() {
        let line = r#"{"reason":"compiler-artifact","target":{"name":"lab_open"},"executable":"/x/target/lab/deps/lab_open-1234","fresh":true}"#;
        assert_eq!(
            json_string(line, "executable").as_deref(),
            Some("/x/target/lab/deps/lab_open-1234")
        );
        assert_eq!(json_string(line, "missing"), None);
        assert_eq!(json_string(r#"{"executable":null}"#, "executable"), None);
    }
}
