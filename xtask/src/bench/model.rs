// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What one run measures, and the minimum, median and maximum over reps that every output is
//! built from.

use std::time::Duration;

pub use vmm_glue::strategy::Strategy;

/// Column heading, with the seed's names where the seed has them.
pub fn heading(s: Strategy) -> &'static str {
    match s {
        Strategy::PerVector => "per_vector (Original)",
        Strategy::PerDevice => "per_device (With patch)",
        Strategy::VmWide => "vm_wide",
        Strategy::Staged => "staged",
    }
}

/// SVG line colour.
pub fn colour(s: Strategy) -> &'static str {
    match s {
        Strategy::PerVector => "#d62728",
        Strategy::PerDevice => "#ff7f0e",
        Strategy::VmWide => "#2ca02c",
        Strategy::Staged => "#1f77b4",
    }
}

/// One timed run of one strategy in a fresh VM.
#[derive(Debug, Clone, Default)]
pub struct RunSample {
    /// Time to restore each VF's interrupts, in VF order.
    pub per_vf: Vec<Duration>,
    /// Time inside the timed window but outside every VF's own slot: the closing commit of a
    /// VM-wide batch (a staged switchover has none: its commit is [`RunSample::deferred`]).
    pub closing: Duration,
    /// Part of the window spent inside the (simulated) VFIO device: SET_IRQS and region
    /// accesses.
    pub device: Duration,
    /// KVM_SET_GSI_ROUTING calls inside the timed window.
    pub gsi_routing_commits: u64,
    /// VFIO_DEVICE_SET_IRQS calls inside the timed window.
    pub set_irqs_calls: u64,
    /// Before the window: a staged restore's staging from the precopied state (zero for the
    /// other strategies).
    pub staging: Duration,
    /// Part of [`RunSample::staging`] spent inside the simulated devices.
    pub staging_device: Duration,
    /// KVM_SET_GSI_ROUTING calls made before the window (staging).
    pub staged_commits: u64,
    /// KVM_IRQFD assignments made in the run (before, inside and after the window).
    pub irqfds: u64,
    /// Irqfds bound in the VM when each VF's slot of the window ended, in VF order: what the
    /// next VF's commits walk.
    pub irqfds_after_vf: Vec<u64>,
    /// After the window (the VM has resumed): a staged switchover's deferred commit, with the
    /// triggers moved back to the irqfds. Not part of [`RunSample::total`].
    pub deferred: Duration,
    /// Part of [`RunSample::deferred`] spent inside the simulated devices.
    pub deferred_device: Duration,
    /// KVM_SET_GSI_ROUTING calls of the deferred commit.
    pub deferred_commits: u64,
    /// VFIO_DEVICE_SET_IRQS calls of the deferred commit.
    pub deferred_set_irqs: u64,
    /// MSI routes in force at the end of the run.
    pub routes: u64,
    /// Vectors without a KVM route at the end of the run (beyond the route limit): they
    /// deliver through userspace.
    pub userspace_vectors: u64,
}

impl RunSample {
    /// Total time of the window.
    pub fn total(&self) -> Duration {
        self.per_vf.iter().sum::<Duration>() + self.closing
    }

    /// The window without the time inside the simulated devices.
    pub fn host(&self) -> Duration {
        self.total().saturating_sub(self.device)
    }

    /// Everything the strategy did for the resume: staging, the window and the deferred
    /// commit (for the strategies other than `staged`, just the window).
    pub fn work(&self) -> Duration {
        self.staging + self.total() + self.deferred
    }

    /// [`RunSample::work`] without the time inside the simulated devices.
    pub fn work_host(&self) -> Duration {
        self.work()
            .saturating_sub(self.staging_device + self.device + self.deferred_device)
    }
}

/// Minimum, median and maximum of one figure over the reps, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spread {
    /// Smallest value.
    pub min: f64,
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (all zero when empty).
    pub fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Spread {
            min: values.first().copied().unwrap_or(0.0),
            median: median(&mut values),
            max: values.last().copied().unwrap_or(0.0),
        }
    }
}

/// A count over the reps: the code path is deterministic, so every rep should count the same;
/// when they do not, every rep's value is kept and reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// Every rep counted this.
    Same(u64),
    /// The reps disagreed: each rep's value, in rep order.
    Varied(Vec<u64>),
}

impl Count {
    /// The count of `values` (0 when there is none).
    pub fn of(values: impl IntoIterator<Item = u64>) -> Self {
        let values: Vec<u64> = values.into_iter().collect();
        match values.first() {
            None => Count::Same(0),
            Some(&first) if values.iter().all(|v| *v == first) => Count::Same(first),
            Some(_) => Count::Varied(values),
        }
    }

    /// The value for a table cell: the count, or every rep's value joined with `/`.
    pub fn cell(&self) -> String {
        match self {
            Count::Same(v) => v.to_string(),
            Count::Varied(v) => v.iter().map(u64::to_string).collect::<Vec<_>>().join("/"),
        }
    }
}

/// One strategy over all reps.
#[derive(Debug, Clone)]
pub struct StrategyResult {
    /// Which strategy.
    pub strategy: Strategy,
    /// The window's total, ms.
    pub total: Spread,
    /// Per VF, the median over reps, ms.
    pub per_vf_ms: Vec<f64>,
    /// The closing commit, ms (0 for strategies that have none).
    pub closing: Spread,
    /// Time inside the simulated devices during the window, ms.
    pub device: Spread,
    /// The window without the time inside the simulated devices, ms.
    pub host: Spread,
    /// Staging before the window, ms (0 but for `staged`).
    pub staging: Spread,
    /// The deferred commit after the resume, ms (0 but for `staged`).
    pub deferred: Spread,
    /// Staging + window + deferred commit, ms.
    pub work: Spread,
    /// [`StrategyResult::work`] without the time inside the simulated devices, ms.
    pub work_host: Spread,
    /// KVM_SET_GSI_ROUTING calls per run (inside the window).
    pub gsi_routing_commits: Count,
    /// SET_IRQS calls per run (inside the window).
    pub set_irqs_calls: Count,
    /// Commits made before the window, per run.
    pub staged_commits: Count,
    /// Irqfds assigned per run.
    pub irqfds: Count,
    /// Irqfds bound when each VF's slot ended.
    pub irqfds_after_vf: Vec<Count>,
    /// KVM_SET_GSI_ROUTING calls of the deferred commit, per run.
    pub deferred_gsi_routing_commits: Count,
    /// SET_IRQS calls of the deferred commit, per run.
    pub deferred_set_irqs_calls: Count,
    /// MSI routes in force at the end of a run.
    pub routes: Count,
    /// Vectors left to userspace delivery (beyond the route limit), per run.
    pub userspace_vectors: Count,
}

/// Median of a set of milliseconds (mean of the middle two for an even count; 0 when empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values.get(n / 2).copied().unwrap_or(0.0),
        _ => {
            let lo = values.get(n / 2 - 1).copied().unwrap_or(0.0);
            let hi = values.get(n / 2).copied().unwrap_or(0.0);
            (lo + hi) / 2.0
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl StrategyResult {
    /// Folds the reps of one strategy: minimum, median and maximum of every time, and every
    /// count (reported per rep where the reps disagree).
    pub fn from_samples(strategy: Strategy, samples: &[RunSample]) -> Self {
        let vfs = samples.iter().map(|s| s.per_vf.len()).max().unwrap_or(0);
        let per_vf_ms = (0..vfs)
            .map(|i| {
                let mut v: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| s.per_vf.get(i).copied().map(ms))
                    .collect();
                median(&mut v)
            })
            .collect();
        let spread =
            |f: fn(&RunSample) -> Duration| Spread::of(samples.iter().map(|s| ms(f(s))).collect());
        let count = |f: fn(&RunSample) -> u64| Count::of(samples.iter().map(f));
        let irqfds_after_vf = (0..vfs)
            .map(|i| {
                Count::of(
                    samples
                        .iter()
                        .map(|s| s.irqfds_after_vf.get(i).copied().unwrap_or(0)),
                )
            })
            .collect();
        StrategyResult {
            strategy,
            total: spread(RunSample::total),
            per_vf_ms,
            closing: spread(|s| s.closing),
            device: spread(|s| s.device),
            host: spread(RunSample::host),
            staging: spread(|s| s.staging),
            deferred: spread(|s| s.deferred),
            work: spread(RunSample::work),
            work_host: spread(RunSample::work_host),
            gsi_routing_commits: count(|s| s.gsi_routing_commits),
            set_irqs_calls: count(|s| s.set_irqs_calls),
            staged_commits: count(|s| s.staged_commits),
            irqfds: count(|s| s.irqfds),
            irqfds_after_vf,
            deferred_gsi_routing_commits: count(|s| s.deferred_commits),
            deferred_set_irqs_calls: count(|s| s.deferred_set_irqs),
            routes: count(|s| s.routes),
            userspace_vectors: count(|s| s.userspace_vectors),
        }
    }

    /// Every count with its name, for the reports and for spotting reps that disagree.
    pub fn counts(&self) -> Vec<(&'static str, &Count)> {
        vec![
            ("gsi_routing_commits", &self.gsi_routing_commits),
            ("set_irqs_calls", &self.set_irqs_calls),
            ("staged_commits", &self.staged_commits),
            ("irqfds", &self.irqfds),
            (
                "deferred_gsi_routing_commits",
                &self.deferred_gsi_routing_commits,
            ),
            ("deferred_set_irqs_calls", &self.deferred_set_irqs_calls),
            ("routes", &self.routes),
            ("userspace_vectors", &self.userspace_vectors),
        ]
    }

    /// The counts whose reps disagreed, with their per-rep values (`irqfds_after_vf[i]` for
    /// the per-VF counts).
    pub fn varied_counts(&self) -> Vec<(String, Vec<u64>)> {
        let mut out: Vec<(String, Vec<u64>)> = self
            .counts()
            .into_iter()
            .filter_map(|(name, c)| match c {
                Count::Varied(v) => Some((name.to_string(), v.clone())),
                Count::Same(_) => None,
            })
            .collect();
        for (i, c) in self.irqfds_after_vf.iter().enumerate() {
            if let Count::Varied(v) = c {
                out.push((format!("irqfds_after_vf[{i}]"), v.clone()));
            }
        }
        out
    }
}

/// One row of the seed-000 table: how MSI-X vectors reach the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowthRow {
    /// What was done, e.g. "incremental, NORESIZE".
    pub label: String,
    /// VFIO_DEVICE_SET_IRQS calls for one device.
    pub set_irqs_calls: u64,
    /// Vector trigger bindings the (simulated) kernel performed: each is a free_irq +
    /// request_irq on real hardware.
    pub vector_bindings: u64,
}

/// Everything one invocation measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// VFs per VM.
    pub vfs: u32,
    /// Vectors per VF.
    pub vectors: u32,
    /// Reps per strategy.
    pub reps: u32,
    /// Whether /dev/kvm was used (false: the in-memory routing backend).
    pub kvm: bool,
    /// Why KVM was not used, when it was not.
    pub kvm_reason: Option<String>,
    /// What ran the library strategies.
    pub driver: String,
    /// MSI routes the backend offers (KVM_CAP_IRQ_ROUTING minus the irqchip routes, or the
    /// `--route-limit` cap).
    pub route_limit: u32,
    /// Raw-ioctl runs of the commit strategies, for the library's overhead per strategy.
    pub raw: Vec<StrategyResult>,
    /// The library's strategies.
    pub strategies: Vec<StrategyResult>,
    /// The seed-000 axis.
    pub growth: Vec<GrowthRow>,
}

impl Report {
    /// A strategy's result, if it ran.
    pub fn strategy(&self, s: Strategy) -> Option<&StrategyResult> {
        self.strategies.iter().find(|r| r.strategy == s)
    }

    /// A raw-floor strategy's result, if it ran.
    pub fn raw_strategy(&self, s: Strategy) -> Option<&StrategyResult> {
        self.raw.iter().find(|r| r.strategy == s)
    }

    /// The floor: the raw vm_wide window (same routes and irqfds, one commit), if it ran.
    pub fn floor(&self) -> Option<Spread> {
        self.raw_strategy(Strategy::VmWide).map(|r| r.total)
    }

    /// The seed's x axis: irqfds bound when each VF's restore ended, as counted in the
    /// `per_device` run (or `per_vector`'s), where each VF's commits walk those of the VFs
    /// before it and its own. `None` when neither ran.
    pub fn irqfd_axis(&self) -> Option<&[Count]> {
        [Strategy::PerDevice, Strategy::PerVector]
            .into_iter()
            .find_map(|s| self.strategy(s))
            .map(|r| r.irqfds_after_vf.as_slice())
    }

    /// "kvm" or "in-memory (no /dev/kvm: reason)": printed on every output.
    pub fn backend_label(&self) -> String {
        match (&self.kvm, &self.kvm_reason) {
            (true, _) => "KVM (/dev/kvm)".to_string(),
            (false, Some(r)) => format!("IN-MEMORY routing backend, no KVM: {r}"),
            (false, None) => "IN-MEMORY routing backend, no KVM".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn spreads_are_min_median_max() {
        assert_eq!(
            Spread::of(vec![5.0, 1.0, 3.0, 9.0]),
            Spread {
                min: 1.0,
                median: 4.0,
                max: 9.0
            }
        );
        assert_eq!(Spread::of(Vec::new()), Spread::default());
    }

    fn sample(a: u64, b: u64, c: u64) -> RunSample {
        RunSample {
            per_vf: vec![Duration::from_millis(a), Duration::from_millis(b)],
            closing: Duration::from_millis(c),
            gsi_routing_commits: 3,
            set_irqs_calls: 2,
            irqfds_after_vf: vec![4, 8],
            ..Default::default()
        }
    }

    #[test]
    fn medians_are_per_vf_and_totals_spread_over_reps() {
        let r = StrategyResult::from_samples(
            Strategy::VmWide,
            &[sample(1, 10, 0), sample(2, 20, 1), sample(30, 3, 5)],
        );
        assert_eq!(r.per_vf_ms, vec![2.0, 10.0]);
        // Totals 11, 23, 38.
        assert_eq!(
            r.total,
            Spread {
                min: 11.0,
                median: 23.0,
                max: 38.0
            }
        );
        assert!((r.closing.median - 1.0).abs() < 1e-9);
        assert_eq!(r.gsi_routing_commits, Count::Same(3));
        assert_eq!(r.set_irqs_calls, Count::Same(2));
        assert_eq!(r.irqfds_after_vf, vec![Count::Same(4), Count::Same(8)]);
        assert!(r.varied_counts().is_empty());
    }

    #[test]
    fn counts_that_differ_between_reps_are_kept_per_rep() {
        let mut odd = sample(1, 1, 0);
        odd.gsi_routing_commits = 5;
        odd.irqfds_after_vf = vec![4, 7];
        let r = StrategyResult::from_samples(
            Strategy::PerDevice,
            &[sample(1, 1, 0), odd, sample(1, 1, 0)],
        );
        assert_eq!(r.gsi_routing_commits, Count::Varied(vec![3, 5, 3]));
        assert_eq!(r.gsi_routing_commits.cell(), "3/5/3");
        assert_eq!(r.set_irqs_calls, Count::Same(2));
        assert_eq!(
            r.varied_counts(),
            vec![
                ("gsi_routing_commits".to_string(), vec![3, 5, 3]),
                ("irqfds_after_vf[1]".to_string(), vec![8, 7, 8]),
            ]
        );
    }

    #[test]
    fn staged_work_adds_staging_window_and_deferred_commit() {
        let s = RunSample {
            per_vf: vec![Duration::from_millis(1)],
            closing: Duration::from_millis(1),
            device: Duration::from_millis(1),
            staging: Duration::from_millis(10),
            staging_device: Duration::from_millis(4),
            deferred: Duration::from_millis(3),
            deferred_device: Duration::from_millis(2),
            ..Default::default()
        };
        assert_eq!(s.total(), Duration::from_millis(2));
        assert_eq!(s.host(), Duration::from_millis(1));
        assert_eq!(s.work(), Duration::from_millis(15));
        assert_eq!(s.work_host(), Duration::from_millis(8));
    }
}
