// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The targets and the verdict on each: a ratio of medians over reps, judged twice, on
//! host-side times (the time inside the simulated VFs left out) and on whole times.
//!
//! The simulator validates every eventfd it is handed through /proc, which costs about as much
//! as everything else in a VM-wide restore and is the same for every strategy that enables
//! vectors (one SET_IRQS per device each), so whole-time ratios mostly measure the simulator;
//! host-side ratios measure the routing work the strategies differ in.

use super::model::{Report, Spread, Strategy, StrategyResult};

/// Which way a ratio must lie.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The ratio must be at most this.
    AtMost(f64),
}

impl Target {
    /// Whether `ratio` meets the target.
    pub fn met_by(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(t) => ratio >= t,
            Target::AtMost(t) => ratio <= t,
        }
    }

    /// The target as printed: `>= 25`, `<= 0.1`.
    pub fn text(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {t}"),
            Target::AtMost(t) => format!("<= {t}"),
        }
    }
}

/// One comparison against a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is compared, e.g. "per_vector / vm_wide".
    pub what: &'static str,
    /// The ratio on host-side times.
    pub host: Option<f64>,
    /// The ratio on whole times, simulated device included.
    pub total: Option<f64>,
    /// The target.
    pub target: Target,
    /// Whether the host-side ratio meets the target (`None`: not measured).
    pub met: Option<bool>,
    /// Whether the whole-time ratio meets the target.
    pub met_total: Option<bool>,
}

/// The figure of a strategy a check compares: the downtime window, or all the work.
#[derive(Debug, Clone, Copy)]
enum Figure {
    Window,
    Work,
}

impl Figure {
    fn of(self, r: &StrategyResult, host: bool) -> Spread {
        match (self, host) {
            (Figure::Window, true) => r.host,
            (Figure::Window, false) => r.total,
            (Figure::Work, true) => r.work_host,
            (Figure::Work, false) => r.work,
        }
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// The targets, evaluated on a report (ratios of medians).
///
/// * `per_vector / vm_wide >= 25` and `per_device / vm_wide >= 1.5`: what one VM-wide commit
///   saves over committing per vector (QEMU before the seed-002 patch) and per device (QEMU
///   today).
/// * `staged window / per_device <= 0.1`: the downtime the staged switchover leaves.
/// * `staged work / per_device <= 1`: staging, switchover and deferred commit together must not
///   cost more than `per_device`'s whole restore, so the downtime is not bought with more work.
/// * `vm_wide / floor <= 1.2`: the library's VM-wide restore against the same routes and irqfds
///   issued with kvm-ioctls alone (the floor has no VFIO device, so only the host-side ratio
///   compares like with like).
pub fn checks(r: &Report) -> Vec<Check> {
    use Strategy::*;
    let lib = |s: Strategy, f: Figure, host: bool| r.strategy(s).map(|x| f.of(x, host).median);
    let pair = |a: Strategy, fa: Figure, b: Strategy, host: bool| {
        ratio(lib(a, fa, host)?, lib(b, Figure::Window, host)?)
    };
    let floor = |host: bool| ratio(lib(VmWide, Figure::Window, host)?, r.floor()?.median);
    let check = |what, host: Option<f64>, total: Option<f64>, target: Target| Check {
        what,
        host,
        total,
        target,
        met: host.map(|x| target.met_by(x)),
        met_total: total.map(|x| target.met_by(x)),
    };
    let lib_pair =
        |what, a, fa, b, target| check(what, pair(a, fa, b, true), pair(a, fa, b, false), target);
    vec![
        lib_pair(
            "per_vector / vm_wide",
            PerVector,
            Figure::Window,
            VmWide,
            Target::AtLeast(25.0),
        ),
        lib_pair(
            "per_device / vm_wide",
            PerDevice,
            Figure::Window,
            VmWide,
            Target::AtLeast(1.5),
        ),
        lib_pair(
            "staged window / per_device",
            Staged,
            Figure::Window,
            PerDevice,
            Target::AtMost(0.1),
        ),
        lib_pair(
            "staged work / per_device",
            Staged,
            Figure::Work,
            PerDevice,
            Target::AtMost(1.0),
        ),
        check(
            "vm_wide / floor",
            floor(true),
            floor(false),
            Target::AtMost(1.2),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::model::{Count, Report, Spread, Strategy, StrategyResult};
    use super::*;

    fn flat(ms: f64) -> Spread {
        Spread {
            min: ms,
            median: ms,
            max: ms,
        }
    }

    /// A result whose window takes `host` ms on the host plus `device` ms in the simulated
    /// devices, and whose other work (staging, deferred commit) takes `extra` ms more.
    fn result(strategy: Strategy, host: f64, device: f64, extra: f64) -> StrategyResult {
        StrategyResult {
            strategy,
            total: flat(host + device),
            per_vf_ms: Vec::new(),
            closing: flat(0.0),
            device: flat(device),
            host: flat(host),
            staging: flat(extra),
            deferred: flat(0.0),
            work: flat(host + device + extra),
            work_host: flat(host + extra),
            gsi_routing_commits: Count::Same(0),
            set_irqs_calls: Count::Same(0),
            staged_commits: Count::Same(0),
            irqfds: Count::Same(0),
            irqfds_after_vf: Vec::new(),
            deferred_gsi_routing_commits: Count::Same(0),
            deferred_set_irqs_calls: Count::Same(0),
            routes: Count::Same(0),
            userspace_vectors: Count::Same(0),
        }
    }

    fn report(strategies: Vec<StrategyResult>, floor: Option<f64>) -> Report {
        Report {
            vfs: 1,
            vectors: 1,
            reps: 1,
            kvm: floor.is_some(),
            kvm_reason: None,
            driver: String::new(),
            route_limit: 4056,
            raw: floor
                .map(|f| vec![result(Strategy::VmWide, f, 0.0, 0.0)])
                .unwrap_or_default(),
            strategies,
            growth: Vec::new(),
        }
    }

    fn verdicts(r: &Report) -> Vec<(&'static str, Option<bool>, Option<bool>)> {
        checks(r)
            .into_iter()
            .map(|c| (c.what, c.met, c.met_total))
            .collect()
    }

    #[test]
    fn targets_compare_the_right_way() {
        assert!(Target::AtLeast(1.5).met_by(1.5));
        assert!(!Target::AtLeast(1.5).met_by(1.49));
        assert!(Target::AtMost(1.2).met_by(1.2));
        assert!(!Target::AtMost(1.2).met_by(1.21));
        assert_eq!(Target::AtLeast(25.0).text(), ">= 25");
        assert_eq!(Target::AtMost(0.1).text(), "<= 0.1");
    }

    #[test]
    fn a_report_that_meets_every_target_is_judged_met() {
        let r = report(
            vec![
                result(Strategy::PerVector, 60.0, 1.0, 0.0),
                result(Strategy::PerDevice, 2.0, 1.0, 0.0),
                result(Strategy::VmWide, 1.0, 1.0, 0.0),
                // Window 0.05 of per_device's; with staging, 0.75 of its work on the host.
                result(Strategy::Staged, 0.1, 0.0, 1.4),
            ],
            Some(0.9),
        );
        let host: Vec<_> = verdicts(&r).into_iter().map(|(w, h, _)| (w, h)).collect();
        assert!(host.iter().all(|(_, h)| *h == Some(true)), "{host:?}");
        // On whole times the simulated device's 1 ms counts against vm_wide, which the floor
        // (no device) does not have.
        let whole: Vec<_> = verdicts(&r).into_iter().map(|(_, _, t)| t).collect();
        assert_eq!(
            whole,
            [Some(true), Some(true), Some(true), Some(true), Some(false)]
        );
        let c = checks(&r);
        assert!((c[0].host.unwrap() - 60.0).abs() < 1e-9);
        assert!((c[0].total.unwrap() - 30.5).abs() < 1e-9);
        assert!((c[3].host.unwrap() - 0.75).abs() < 1e-9);
        assert!((c[3].total.unwrap() - 0.5).abs() < 1e-9);
        assert!((c[4].host.unwrap() - 1.0 / 0.9).abs() < 1e-9);
    }

    #[test]
    fn a_report_that_misses_every_target_is_judged_short() {
        let r = report(
            vec![
                result(Strategy::PerVector, 24.0, 0.0, 0.0),
                result(Strategy::PerDevice, 1.4, 0.0, 0.0),
                result(Strategy::VmWide, 1.0, 0.0, 0.0),
                // A short window, but staging costs more than per_device's whole restore.
                result(Strategy::Staged, 0.15, 0.0, 1.3),
            ],
            Some(0.8),
        );
        for (what, host, total) in verdicts(&r) {
            assert_eq!(host, Some(false), "{what}: host side");
            assert_eq!(total, Some(false), "{what}: whole times");
        }
    }

    #[test]
    fn the_staged_window_and_its_work_are_judged_apart() {
        // Window well within 0.1 of per_device, but all the work 1.5 times per_device's.
        let r = report(
            vec![
                result(Strategy::PerDevice, 2.0, 0.0, 0.0),
                result(Strategy::Staged, 0.1, 0.0, 2.9),
            ],
            None,
        );
        let c = checks(&r);
        let window = c
            .iter()
            .find(|c| c.what == "staged window / per_device")
            .unwrap();
        let work = c
            .iter()
            .find(|c| c.what == "staged work / per_device")
            .unwrap();
        assert_eq!(window.met, Some(true));
        assert_eq!(work.met, Some(false));
        assert!((work.host.unwrap() - 1.5).abs() < 1e-9);
    }

    #[test]
    fn missing_strategies_and_floor_are_not_measured() {
        let r = report(vec![result(Strategy::VmWide, 1.0, 0.0, 0.0)], None);
        for c in checks(&r) {
            assert_eq!(
                (c.host, c.met, c.met_total),
                (None, None, None),
                "{}",
                c.what
            );
        }
        // A zero denominator is no ratio either.
        let r = report(
            vec![
                result(Strategy::PerVector, 1.0, 0.0, 0.0),
                result(Strategy::VmWide, 0.0, 0.0, 0.0),
            ],
            Some(0.0),
        );
        assert!(checks(&r).iter().all(|c| c.met.is_none()));
    }
}
