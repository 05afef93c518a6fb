// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `cargo xtask bench-msix`: the seed-002 table (per-VF cost of enabling MSI-X at migration
//! resume against the irqfds already assigned), measured on real KVM with simulated VFs for
//! every route-commit strategy, next to a raw-ioctl floor.
//!
//! `staged` reports the switchover, the part of a staged restore inside the downtime. The
//! switchover issues no `KVM_SET_GSI_ROUTING`: a vector retargeted after the precopy moves its
//! VFIO trigger to its userspace eventfd (one SET_IRQS) and is delivered by the VMM with its
//! new message until the routing commit, which vmm-glue's `DeferredCommit` issues after the VM
//! resumes. That commit (and the SET_IRQS moving the triggers back) is measured after the
//! window and reported apart: `deferred_commit_ms`, `deferred_gsi_routing_commits` and
//! `deferred_set_irqs_calls` in the JSON, the `after resume` row in the table. The raw floor's
//! `staged` defers its commit the same way.

mod backends;
mod cli;
mod glue;
mod growth;
mod json;
mod model;
mod msg;
mod raw;
mod svg;
mod table;
mod timed_device;

use std::path::Path;

use kvm_ioctls::Kvm;

pub use cli::Options;
use model::{GrowthRow, Report, RunSample, Strategy, StrategyResult};

/// Something that restores the simulated VFs under a strategy and times it.
trait Driver {
    /// Name printed with every output.
    fn name(&self) -> String;
    /// Strategies this driver can run.
    fn strategies(&self) -> Vec<Strategy>;
    /// One timed run in a fresh VM.
    fn run(&mut self, strategy: Strategy) -> Result<RunSample, String>;
    /// The seed-000 rows (SET_IRQS calls and vector bindings per device).
    fn growth(&mut self) -> Result<Vec<GrowthRow>, String>;
}

/// The raw-ioctl floor: every strategy issued with kvm-ioctls alone.
struct RawDriver<'a> {
    kvm: &'a Kvm,
    vfs: u32,
    vectors: u32,
}

impl Driver for RawDriver<'_> {
    fn name(&self) -> String {
        "raw kvm-ioctls floor".into()
    }
    fn strategies(&self) -> Vec<Strategy> {
        Strategy::ALL.to_vec()
    }
    fn run(&mut self, strategy: Strategy) -> Result<RunSample, String> {
        raw::run(self.kvm, strategy, self.vfs, self.vectors)
    }
    fn growth(&mut self) -> Result<Vec<GrowthRow>, String> {
        Ok(Vec::new())
    }
}

/// The library: vmm-glue's resume path.
impl Driver for glue::GlueDriver<'_> {
    fn name(&self) -> String {
        "vmm-glue restore_all / StagedRestore on vfio-core simulated VFs".into()
    }
    fn strategies(&self) -> Vec<Strategy> {
        Strategy::ALL.to_vec()
    }
    fn run(&mut self, strategy: Strategy) -> Result<RunSample, String> {
        glue::GlueDriver::run(self, strategy)
    }
    fn growth(&mut self) -> Result<Vec<GrowthRow>, String> {
        growth::rows(self.vectors())
    }
}

/// Opens /dev/kvm for a unit test, or prints why not and returns `None` — unless
/// `PASSTHROUGH_REQUIRE_KVM=1`, which turns the skip into a failure.
#[cfg(test)]
pub(crate) fn kvm_or_skip(test: &str) -> Option<Kvm> {
    match Kvm::new() {
        Ok(k) => Some(k),
        Err(e) => {
            let msg = format!("{test}: /dev/kvm unavailable ({e})");
            if std::env::var("PASSTHROUGH_REQUIRE_KVM").as_deref() == Ok("1") {
                panic!("{msg} and PASSTHROUGH_REQUIRE_KVM=1");
            }
            eprintln!("skipping {msg}");
            None
        }
    }
}

fn write_file(path: &Path, contents: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
}

/// The strategies one driver runs, and what they measured so far.
struct Group<'a> {
    what: &'static str,
    driver: &'a mut dyn Driver,
    strategies: Vec<Strategy>,
    samples: Vec<Vec<RunSample>>,
}

impl<'a> Group<'a> {
    fn new(what: &'static str, driver: &'a mut dyn Driver, only: &[Strategy]) -> Self {
        let mut strategies = driver.strategies();
        strategies.retain(|s| only.contains(s));
        let samples = vec![Vec::new(); strategies.len()];
        Group {
            what,
            driver,
            strategies,
            samples,
        }
    }

    fn results(&self) -> Vec<StrategyResult> {
        self.strategies
            .iter()
            .zip(&self.samples)
            .map(|(s, v)| StrategyResult::from_samples(*s, v))
            .collect()
    }
}

/// Runs every strategy of every group `reps` times, rep-major and interleaved (raw and
/// library alternate), so drift on a noisy shared machine hits all of them alike.
fn measure(groups: &mut [Group<'_>], reps: u32) -> Result<(), String> {
    for rep in 1..=reps {
        let mut line = format!("bench-msix: rep {rep}/{reps}:");
        let longest = groups.iter().map(|g| g.strategies.len()).max().unwrap_or(0);
        for i in 0..longest {
            for g in groups.iter_mut() {
                let Some(s) = g.strategies.get(i).copied() else {
                    continue;
                };
                let sample = g
                    .driver
                    .run(s)
                    .map_err(|e| format!("{} ({}): {e}", s.name(), g.what))?;
                line.push_str(&format!(
                    " {}/{} {:.2}ms",
                    g.what,
                    s.name(),
                    sample.total().as_secs_f64() * 1e3
                ));
                if let Some(v) = g.samples.get_mut(i) {
                    v.push(sample);
                }
                // Let the kernel finish tearing the last VM down (irqfd shutdown runs on a
                // workqueue) before the next window opens.
                std::thread::sleep(SETTLE);
            }
        }
        eprintln!("{line}");
    }
    Ok(())
}

/// Pause between runs, outside every timed window.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(20);

/// Re-runs the command from an optimised build, unless this build is one or the caller
/// asked to measure it as is. Returns `None` when this process should measure itself.
fn rerun_optimised(opts: &Options, args: &[String]) -> Option<Result<(), String>> {
    if !cfg!(debug_assertions) || opts.no_release || std::env::var_os(REEXEC_ENV).is_some() {
        return None;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("bench-msix: unoptimised build; re-running with `cargo run --release` (--no-release to skip)");
    let status = std::process::Command::new(cargo)
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "bench-msix",
        ])
        .args(args)
        .env(REEXEC_ENV, "1")
        .status();
    Some(match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("optimised bench-msix failed: {s}")),
        Err(e) => Err(format!("cannot run cargo: {e}")),
    })
}

/// Set in the environment of the optimised re-run, so it never re-runs itself.
const REEXEC_ENV: &str = "XTASK_BENCH_MSIX_OPTIMISED";

/// Entry point of `cargo xtask bench-msix ARGS`.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(opts) = Options::parse(args)? else {
        print!("{}", cli::HELP);
        return Ok(());
    };
    if let Some(done) = rerun_optimised(&opts, args) {
        return done;
    }
    let kvm = if opts.in_memory {
        Err("--in-memory given".to_string())
    } else {
        Kvm::new().map_err(|e| format!("cannot open /dev/kvm: {e}"))
    };
    let (kvm, kvm_reason) = match kvm {
        Ok(k) => (Some(k), None),
        Err(reason) => {
            eprintln!(
                "bench-msix: {reason}; running on the IN-MEMORY routing backend (\"kvm\": false)"
            );
            (None, Some(reason))
        }
    };
    eprintln!(
        "bench-msix: {} VFs x {} vectors, {} reps, fresh VM per strategy per rep",
        opts.vfs, opts.vectors, opts.reps
    );

    let backends = match kvm.as_ref() {
        Some(k) => backends::Backends::Kvm(k),
        None => backends::Backends::Memory,
    };
    let mut lib_driver = glue::GlueDriver::new(backends, opts.vfs, opts.vectors)?;
    let mut raw_driver = kvm.as_ref().map(|k| RawDriver {
        kvm: k,
        vfs: opts.vfs,
        vectors: opts.vectors,
    });
    let driver_name = lib_driver.name();
    let growth = lib_driver.growth()?;
    let mut groups = Vec::new();
    if let Some(d) = raw_driver.as_mut() {
        groups.push(Group::new("raw", d, &opts.only));
    }
    groups.push(Group::new("lib", &mut lib_driver, &opts.only));
    measure(&mut groups, opts.reps)?;
    let raw_results = groups
        .iter()
        .find(|g| g.what == "raw")
        .map(Group::results)
        .unwrap_or_default();
    let strategies = groups
        .iter()
        .find(|g| g.what == "lib")
        .map(Group::results)
        .unwrap_or_default();
    drop(groups);
    let floor_ms = raw_results
        .iter()
        .find(|r| r.strategy == Strategy::VmWide)
        .map(|r| r.total_ms);

    let report = Report {
        vfs: opts.vfs,
        vectors: opts.vectors,
        reps: opts.reps,
        kvm: kvm.is_some(),
        kvm_reason,
        driver: driver_name,
        floor_ms,
        raw: raw_results,
        strategies,
        growth,
    };
    print!("{}", table::render(&report));
    write_file(&opts.svg, &svg::render(&report))?;
    eprintln!("bench-msix: chart written to {}", opts.svg.display());
    if let Some(path) = &opts.json {
        write_file(path, &json::render(&report))?;
        eprintln!("bench-msix: JSON written to {}", path.display());
    }
    Ok(())
}
