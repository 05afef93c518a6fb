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
//! `staged` defers its commit the same way. The staging before the window is timed too, and
//! `staged` is judged on its window and on its whole work (staging + window + deferred commit)
//! against `per_device`.
//!
//! Every rep runs every strategy of the library and of the raw floor once, each in a fresh
//! VM, in an order that rotates from rep to rep (see [`schedule`]); times are reported as
//! minimum, median and maximum over the reps, counts as one value, or one per rep where the
//! reps disagree.

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
mod verdict;

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
    /// Routes the library's router offers: the floor routes as many vectors.
    limit: u32,
}

impl Driver for RawDriver<'_> {
    fn name(&self) -> String {
        "raw kvm-ioctls floor".into()
    }
    fn strategies(&self) -> Vec<Strategy> {
        Strategy::ALL.to_vec()
    }
    fn run(&mut self, strategy: Strategy) -> Result<RunSample, String> {
        raw::run(self.kvm, strategy, self.vfs, self.vectors, self.limit)
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

/// The order of rep `rep` (1-based): every (group, strategy) pair once. The strategies are
/// rotated by one position per rep, and the groups (raw floor and library) alternate which
/// goes first, so no strategy always runs first, last, or right after the same other one.
fn schedule(groups: &[usize], rep: u32) -> Vec<(usize, usize)> {
    let longest = groups.iter().copied().max().unwrap_or(0);
    let mut order = Vec::new();
    for k in 0..longest {
        let i = (k + rep as usize - 1) % longest;
        let mut pairs: Vec<(usize, usize)> = (0..groups.len())
            .filter(|g| groups.get(*g).is_some_and(|n| i < *n))
            .map(|g| (g, i))
            .collect();
        if rep % 2 == 0 {
            pairs.reverse();
        }
        order.extend(pairs);
    }
    order
}

/// Runs every strategy of every group `reps` times, each rep in the order [`schedule`] gives,
/// so drift on a noisy shared machine hits all of them alike.
fn measure(groups: &mut [Group<'_>], reps: u32) -> Result<(), String> {
    let sizes: Vec<usize> = groups.iter().map(|g| g.strategies.len()).collect();
    for rep in 1..=reps {
        let mut line = format!("bench-msix: rep {rep}/{reps}:");
        for (gi, i) in schedule(&sizes, rep) {
            let Some(g) = groups.get_mut(gi) else {
                continue;
            };
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

    let backends = backends::Backends {
        source: match kvm.as_ref() {
            Some(k) => backends::Source::Kvm(k),
            None => backends::Source::Memory,
        },
        cap: opts.route_limit,
    };
    let route_limit = backends.route_limit()?;
    let vectors_wanted = u64::from(opts.vfs) * u64::from(opts.vectors);
    if vectors_wanted > u64::from(route_limit) {
        eprintln!(
            "bench-msix: {vectors_wanted} vectors, {route_limit} MSI routes: {} vectors past the \
             limit deliver through userspace",
            vectors_wanted - u64::from(route_limit)
        );
    }
    let mut lib_driver = glue::GlueDriver::new(backends, opts.vfs, opts.vectors)?;
    let mut raw_driver = kvm.as_ref().map(|k| RawDriver {
        kvm: k,
        vfs: opts.vfs,
        vectors: opts.vectors,
        limit: route_limit,
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

    let report = Report {
        vfs: opts.vfs,
        vectors: opts.vectors,
        reps: opts.reps,
        kvm: kvm.is_some(),
        kvm_reason,
        driver: driver_name,
        route_limit,
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

#[cfg(test)]
mod tests {
    use super::schedule;

    #[test]
    fn every_rep_runs_every_pair_once_in_a_rotating_order() {
        let sizes = [4, 4];
        let reps: Vec<_> = (1..=4).map(|rep| schedule(&sizes, rep)).collect();
        for order in &reps {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            let all: Vec<_> = (0..2).flat_map(|g| (0..4).map(move |i| (g, i))).collect();
            assert_eq!(sorted, all);
        }
        // Rep 1: strategies in order, raw first; rep 2: rotated by one, library first.
        assert_eq!(&reps[0][..4], [(0, 0), (1, 0), (0, 1), (1, 1)]);
        assert_eq!(&reps[1][..4], [(1, 1), (0, 1), (1, 2), (0, 2)]);
        // No strategy opens two reps in a row.
        let firsts: Vec<usize> = reps.iter().map(|o| o[0].1).collect();
        assert_eq!(firsts, [0, 1, 2, 3]);
        // A group with fewer strategies (the in-memory run has no raw floor) still runs all.
        assert_eq!(schedule(&[3], 2), [(0, 1), (0, 2), (0, 0)]);
    }
}
