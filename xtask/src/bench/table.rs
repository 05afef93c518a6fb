// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The text report: the seed-format table, counts, the raw floor, ratios against the issue's
//! targets, and the seed-000 table.

use std::fmt::Write as _;

use super::model::{Report, Strategy, StrategyResult};

/// English ordinal, as the seed writes its VF column.
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Irqfds already assigned when VF `i` (0-based) is restored, counted the way the seed does:
/// those of the earlier VFs plus the VF's own, since its commits walk them too.
pub fn irqfds_assigned(i: usize, vectors: u32) -> u64 {
    (i as u64 + 1) * u64::from(vectors)
}

/// One comparison against a target of the issue.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is compared, e.g. "per_vector / vm_wide".
    pub what: &'static str,
    /// The ratio on host-side times (the simulated devices' own time left out), which the
    /// verdict uses.
    pub host: Option<f64>,
    /// The ratio on whole times, simulated device included.
    pub total: Option<f64>,
    /// The target, as text.
    pub target: &'static str,
    /// Whether the host-side ratio meets the target.
    pub met: Option<bool>,
    /// Whether the whole-time ratio meets the target.
    pub met_total: Option<bool>,
}

/// The four targets, evaluated on a report.
///
/// Each ratio is judged twice: on whole times, and on host-side times (the time inside the
/// simulated VFs left out). The simulator validates every eventfd it is handed through /proc,
/// which costs about as much as everything else in a VM-wide restore and is the same for every
/// strategy that enables vectors (one SET_IRQS per device each), so whole-time ratios mostly
/// measure the simulator; host-side ratios measure the routing work the strategies differ in.
pub fn checks(r: &Report) -> Vec<Check> {
    use Strategy::*;
    let floor = |host: bool| match (r.strategy(VmWide), r.floor_ms) {
        (Some(v), Some(f)) if f > 0.0 => Some(if host { v.host_ms } else { v.total_ms } / f),
        _ => None,
    };
    let check = |what, host: Option<f64>, total, target, ok: fn(f64) -> bool| Check {
        what,
        host,
        total,
        target,
        met: host.map(ok),
        met_total: total.map(ok),
    };
    vec![
        check(
            "per_vector / vm_wide",
            r.host_ratio(PerVector, VmWide),
            r.ratio(PerVector, VmWide),
            ">= 25",
            |x| x >= 25.0,
        ),
        check(
            "per_device / vm_wide",
            r.host_ratio(PerDevice, VmWide),
            r.ratio(PerDevice, VmWide),
            ">= 1.5",
            |x| x >= 1.5,
        ),
        check(
            "staged / per_device",
            r.host_ratio(Staged, PerDevice),
            r.ratio(Staged, PerDevice),
            "<= 0.1",
            |x| x <= 0.1,
        ),
        check(
            "vm_wide / floor",
            floor(true),
            floor(false),
            "<= 1.2",
            |x| x <= 1.2,
        ),
    ]
}

/// Reads one count of a strategy's result.
type CountOf = fn(&StrategyResult) -> u64;

fn cell(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Renders the whole text report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let label = r.backend_label();
    let _ = writeln!(
        o,
        "bench-msix: {} VFs x {} MSI-X vectors, {} reps (medians), backend: {label}, driver: {}",
        r.vfs, r.vectors, r.reps, r.driver
    );
    if !r.kvm {
        let _ = writeln!(
            o,
            "!! NOT KVM: times below are the in-memory routing backend, not KVM_SET_GSI_ROUTING."
        );
    }
    let _ = writeln!(o);

    // The seed-format table.
    let strategies = &r.strategies;
    let w = 24;
    let _ = write!(o, "{:<6}{:>10}", "VF", "irqfds[*]");
    for s in strategies {
        let _ = write!(o, "{:>w$}", super::model::heading(s.strategy));
    }
    let _ = writeln!(o);
    for i in 0..r.vfs as usize {
        let _ = write!(
            o,
            "{:<6}{:>10}",
            ordinal(i + 1),
            irqfds_assigned(i, r.vectors)
        );
        for s in strategies {
            let v = s.per_vf_ms.get(i).copied().unwrap_or(f64::NAN);
            let _ = write!(o, "{:>w$}", cell(v));
        }
        let _ = writeln!(o);
    }
    if strategies.iter().any(|s| s.closing_ms > 0.0) {
        let _ = write!(o, "{:<16}", "commit[+]");
        for s in strategies {
            let _ = write!(o, "{:>w$}", cell(s.closing_ms));
        }
        let _ = writeln!(o);
    }
    let _ = write!(o, "{:<16}", "Total");
    for s in strategies {
        let _ = write!(o, "{:>w$}", format!("{}ms", cell(s.total_ms)));
    }
    let _ = writeln!(o);
    let _ = write!(o, "{:<16}", "in device[~]");
    for s in strategies {
        let _ = write!(o, "{:>w$}", format!("{}ms", cell(s.device_ms)));
    }
    let _ = writeln!(o);
    let deferred = strategies
        .iter()
        .any(|s| s.deferred_gsi_routing_commits > 0 || s.deferred_set_irqs_calls > 0);
    if deferred {
        let _ = write!(o, "{:<16}", "after resume[^]");
        for s in strategies {
            let _ = write!(o, "{:>w$}", format!("{}ms", cell(s.deferred_commit_ms)));
        }
        let _ = writeln!(o);
    }
    let mut counts: Vec<(&str, CountOf)> = vec![
        ("SET_GSI_ROUTING", |s| s.gsi_routing_commits),
        ("SET_IRQS", |s| s.set_irqs_calls),
        ("pre-commits[#]", |s| s.staged_commits),
    ];
    if deferred {
        counts.push(("GSI_ROUTING[^]", |s| s.deferred_gsi_routing_commits));
        counts.push(("SET_IRQS[^]", |s| s.deferred_set_irqs_calls));
    }
    counts.push(("irqfds", |s| s.irqfds));
    for (name, f) in counts {
        let _ = write!(o, "{name:<16}");
        for s in strategies {
            let _ = write!(o, "{:>w$}", f(s));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(
        o,
        "[*] irqfds already assigned that this VF's commits walk: earlier VFs' plus its own \
         (the seed's \"Count of irqfds\").\n[+] time in the window outside every VF's slot: the \
         VM-wide batch's closing commit (staged: opening the switchover, no commit).\n[#] \
         commits made before the timed window (staging from the precopied state); counts are \
         per run.\n[^] after the window, once the VM has resumed: the staged switchover's \
         deferred routing commit and the trigger moves back to the irqfds (not in Total).\n[~] \
         part of the total spent inside the simulated VFIO devices (SET_IRQS, region access)."
    );

    // Raw floor.
    let _ = writeln!(o);
    if r.raw.is_empty() {
        let _ = writeln!(o, "raw-ioctl floor: not measured ({label})");
    } else {
        let _ = writeln!(
            o,
            "raw-ioctl floor (kvm-ioctls only, same routes and irqfds, fresh VM per rep):"
        );
        let _ = writeln!(
            o,
            "{:<14}{:>10}{:>9}{:>13}{:>11}{:>14}{:>11}",
            "strategy", "raw ms", "commits", "library ms", "lib / raw", "lib host ms", "host / raw"
        );
        for raw in &r.raw {
            let lib = r.strategy(raw.strategy);
            let ratio = |x: Option<f64>| {
                x.filter(|_| raw.total_ms > 0.0)
                    .map(|v| format!("{:.2}x", v / raw.total_ms))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                o,
                "{:<14}{:>10}{:>9}{:>13}{:>11}{:>14}{:>11}",
                raw.strategy.name(),
                cell(raw.total_ms),
                raw.gsi_routing_commits,
                lib.map(|l| cell(l.total_ms)).unwrap_or_else(|| "-".into()),
                ratio(lib.map(|l| l.total_ms)),
                lib.map(|l| cell(l.host_ms)).unwrap_or_else(|| "-".into()),
                ratio(lib.map(|l| l.host_ms)),
            );
        }
        let _ = writeln!(
            o,
            "(host = library time minus the time inside the simulated devices; the floor has no \
             VFIO device)"
        );
        if let Some(f) = r.floor_ms {
            let _ = writeln!(o, "floor (raw vm_wide): {}ms", cell(f));
        }
    }

    // Ratios.
    let _ = writeln!(o);
    let _ = writeln!(o, "ratios ({label}):");
    let _ = writeln!(
        o,
        "  {:<24}{:>12}{:>16}   {:<10}{:<14}verdict incl. sim dev",
        "", "host side", "incl. sim dev", "target", "verdict host"
    );
    let x = |v: Option<f64>| v.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into());
    let verdict = |m: Option<bool>| match m {
        Some(true) => "met",
        Some(false) => "SHORT",
        None => "not measured",
    };
    for c in checks(r) {
        let _ = writeln!(
            o,
            "  {:<24}{:>12}{:>16}   {:<10}{:<14}{}",
            c.what,
            x(c.host),
            x(c.total),
            c.target,
            verdict(c.met),
            verdict(c.met_total)
        );
    }

    // Seed-000 axis.
    if !r.growth.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "enabling {} MSI-X vectors on one VF (vfio-core sim counters, per device):",
            r.vectors
        );
        let _ = writeln!(
            o,
            "{:<52}{:>10}{:>18}",
            "how", "SET_IRQS", "vector bindings"
        );
        for g in &r.growth {
            let _ = writeln!(
                o,
                "{:<52}{:>10}{:>18}",
                g.label, g.set_irqs_calls, g.vector_bindings
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_follow_english() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111]
            .iter()
            .map(|&n| ordinal(n))
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
                "111th"
            ]
        );
    }

    #[test]
    fn irqfd_column_matches_the_seed() {
        // The seed: 65, 130, ..., 520 for 8 VFs of 65 vectors.
        let col: Vec<u64> = (0..8).map(|i| irqfds_assigned(i, 65)).collect();
        assert_eq!(col, [65, 130, 195, 260, 325, 390, 455, 520]);
    }
}
