// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What one run measures, and the medians over reps that every output is built from.

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
    /// KVM_SET_GSI_ROUTING calls made before the window (staging).
    pub staged_commits: u64,
    /// KVM_IRQFD assignments made in the run (inside and before the window).
    pub irqfds: u64,
    /// After the window (the VM has resumed): a staged switchover's deferred commit, with the
    /// triggers moved back to the irqfds. Not part of [`RunSample::total`].
    pub deferred: Duration,
    /// KVM_SET_GSI_ROUTING calls of the deferred commit.
    pub deferred_commits: u64,
    /// VFIO_DEVICE_SET_IRQS calls of the deferred commit.
    pub deferred_set_irqs: u64,
}

impl RunSample {
    /// Total time of the window.
    pub fn total(&self) -> Duration {
        self.per_vf.iter().sum::<Duration>() + self.closing
    }
}

/// Medians of one strategy over all reps.
#[derive(Debug, Clone)]
pub struct StrategyResult {
    /// Which strategy.
    pub strategy: Strategy,
    /// Median of the per-rep totals, ms.
    pub total_ms: f64,
    /// Per VF, the median over reps, ms.
    pub per_vf_ms: Vec<f64>,
    /// Median closing commit, ms (0 for strategies that have none).
    pub closing_ms: f64,
    /// Median time inside the simulated device, ms.
    pub device_ms: f64,
    /// Median of the per-rep totals without the time inside the simulated device, ms.
    pub host_ms: f64,
    /// KVM_SET_GSI_ROUTING calls per run (inside the window).
    pub gsi_routing_commits: u64,
    /// SET_IRQS calls per run (inside the window).
    pub set_irqs_calls: u64,
    /// Commits made before the window, per run.
    pub staged_commits: u64,
    /// Irqfds assigned per run.
    pub irqfds: u64,
    /// Median deferred commit after the resume, ms (0 for strategies that have none).
    pub deferred_commit_ms: f64,
    /// KVM_SET_GSI_ROUTING calls of the deferred commit, per run.
    pub deferred_gsi_routing_commits: u64,
    /// SET_IRQS calls of the deferred commit, per run.
    pub deferred_set_irqs_calls: u64,
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
    /// Folds the reps of one strategy into medians. Counts must agree across reps (the code
    /// path is deterministic); if they do not, the largest is reported.
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
        let mut totals: Vec<f64> = samples.iter().map(|s| ms(s.total())).collect();
        let mut closing: Vec<f64> = samples.iter().map(|s| ms(s.closing)).collect();
        let mut device: Vec<f64> = samples.iter().map(|s| ms(s.device)).collect();
        let mut deferred: Vec<f64> = samples.iter().map(|s| ms(s.deferred)).collect();
        let mut host: Vec<f64> = samples
            .iter()
            .map(|s| ms(s.total().saturating_sub(s.device)))
            .collect();
        let max = |f: fn(&RunSample) -> u64| samples.iter().map(f).max().unwrap_or(0);
        StrategyResult {
            strategy,
            total_ms: median(&mut totals),
            per_vf_ms,
            closing_ms: median(&mut closing),
            device_ms: median(&mut device),
            host_ms: median(&mut host),
            gsi_routing_commits: max(|s| s.gsi_routing_commits),
            set_irqs_calls: max(|s| s.set_irqs_calls),
            staged_commits: max(|s| s.staged_commits),
            irqfds: max(|s| s.irqfds),
            deferred_commit_ms: median(&mut deferred),
            deferred_gsi_routing_commits: max(|s| s.deferred_commits),
            deferred_set_irqs_calls: max(|s| s.deferred_set_irqs),
        }
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
    /// Median raw-ioctl time for the same routes and irqfds committed once, ms.
    pub floor_ms: Option<f64>,
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

    /// `a.total / b.total` among the library strategies.
    pub fn ratio(&self, slow: Strategy, fast: Strategy) -> Option<f64> {
        let a = self.strategy(slow)?.total_ms;
        let b = self.strategy(fast)?.total_ms;
        (b > 0.0).then(|| a / b)
    }

    /// The same ratio on host-side times (without the time inside the simulated devices).
    pub fn host_ratio(&self, slow: Strategy, fast: Strategy) -> Option<f64> {
        let a = self.strategy(slow)?.host_ms;
        let b = self.strategy(fast)?.host_ms;
        (b > 0.0).then(|| a / b)
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
    fn medians_are_per_vf_and_totals_are_median_of_totals() {
        let s = |a: u64, b: u64, c: u64| RunSample {
            per_vf: vec![Duration::from_millis(a), Duration::from_millis(b)],
            closing: Duration::from_millis(c),
            gsi_routing_commits: 3,
            set_irqs_calls: 2,
            ..Default::default()
        };
        let r = StrategyResult::from_samples(
            Strategy::VmWide,
            &[s(1, 10, 0), s(2, 20, 1), s(30, 3, 5)],
        );
        assert_eq!(r.per_vf_ms, vec![2.0, 10.0]);
        // Totals 11, 23, 38 -> 23.
        assert!((r.total_ms - 23.0).abs() < 1e-9);
        assert!((r.closing_ms - 1.0).abs() < 1e-9);
        assert_eq!((r.gsi_routing_commits, r.set_irqs_calls), (3, 2));
    }
}
