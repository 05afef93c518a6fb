// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The text report: the seed-format table, counts, the raw floor, ratios against the issue's
//! targets (judged in [`super::verdict`]), and the seed-000 table.

use std::fmt::Write as _;

use super::model::{Count, Report, Spread, Strategy, StrategyResult};
use super::verdict::checks;

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

/// Reads one count of a strategy's result.
type CountOf = fn(&StrategyResult) -> &Count;

fn cell(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `median (min-max)`, ms.
fn spread_cell(s: Spread) -> String {
    format!("{} ({}-{})", cell(s.median), cell(s.min), cell(s.max))
}

/// `min-max`, ms.
fn range_cell(s: Spread) -> String {
    format!("{}-{}", cell(s.min), cell(s.max))
}

/// Width of a strategy column.
const W: usize = 24;

fn row(
    o: &mut String,
    name: &str,
    strategies: &[StrategyResult],
    f: impl Fn(&StrategyResult) -> String,
) {
    let _ = write!(o, "{name:<16}");
    for s in strategies {
        let _ = write!(o, "{:>W$}", f(s));
    }
    let _ = writeln!(o);
}

/// Renders the whole text report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let label = r.backend_label();
    let _ = writeln!(
        o,
        "bench-msix: {} VFs x {} MSI-X vectors, {} reps, backend: {label}, driver: {}",
        r.vfs, r.vectors, r.reps, r.driver
    );
    if !r.kvm {
        let _ = writeln!(
            o,
            "!! NOT KVM: times below are the in-memory routing backend, not KVM_SET_GSI_ROUTING."
        );
    }
    let wanted = u64::from(r.vfs) * u64::from(r.vectors);
    let _ = writeln!(
        o,
        "{} MSI routes offered for {wanted} vectors{}",
        r.route_limit,
        if wanted > u64::from(r.route_limit) {
            format!(
                ": {} vectors past the limit deliver through userspace (row userspace[!])",
                wanted - u64::from(r.route_limit)
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(o);

    // The seed-format table: per VF, the median over reps.
    let strategies = &r.strategies;
    let _ = write!(o, "{:<6}{:>10}", "VF", "irqfds[*]");
    for s in strategies {
        let _ = write!(o, "{:>W$}", super::model::heading(s.strategy));
    }
    let _ = writeln!(o);
    let axis = r.irqfd_axis();
    for i in 0..r.vfs as usize {
        let x = axis
            .and_then(|a| a.get(i))
            .map(Count::cell)
            .unwrap_or_else(|| "-".into());
        let _ = write!(o, "{:<6}{x:>10}", ordinal(i + 1));
        for s in strategies {
            let v = s.per_vf_ms.get(i).copied().unwrap_or(f64::NAN);
            let _ = write!(o, "{:>W$}", cell(v));
        }
        let _ = writeln!(o);
    }
    if strategies.iter().any(|s| s.closing.max > 0.0) {
        row(&mut o, "commit[+]", strategies, |s| cell(s.closing.median));
    }
    row(&mut o, "Total", strategies, |s| {
        format!("{}ms", cell(s.total.median))
    });
    row(&mut o, "  min-max", strategies, |s| range_cell(s.total));
    row(&mut o, "in device[~]", strategies, |s| {
        format!("{}ms", cell(s.device.median))
    });
    let staged_extra = strategies
        .iter()
        .any(|s| s.staging.max > 0.0 || s.deferred.max > 0.0);
    if staged_extra {
        row(&mut o, "staging[#]", strategies, |s| {
            format!("{}ms", cell(s.staging.median))
        });
        row(&mut o, "after resume[^]", strategies, |s| {
            format!("{}ms", cell(s.deferred.median))
        });
        row(&mut o, "work[=]", strategies, |s| {
            format!("{}ms", cell(s.work.median))
        });
        row(&mut o, "  min-max", strategies, |s| range_cell(s.work));
        row(&mut o, "  host side", strategies, |s| {
            format!("{}ms", cell(s.work_host.median))
        });
    }
    let deferred = strategies.iter().any(|s| {
        s.deferred_gsi_routing_commits != Count::Same(0)
            || s.deferred_set_irqs_calls != Count::Same(0)
    });
    let mut counts: Vec<(&str, CountOf)> = vec![
        ("SET_GSI_ROUTING", |s| &s.gsi_routing_commits),
        ("SET_IRQS", |s| &s.set_irqs_calls),
        ("pre-commits[#]", |s| &s.staged_commits),
    ];
    if deferred {
        counts.push(("GSI_ROUTING[^]", |s| &s.deferred_gsi_routing_commits));
        counts.push(("SET_IRQS[^]", |s| &s.deferred_set_irqs_calls));
    }
    counts.push(("irqfds", |s| &s.irqfds));
    counts.push(("routes", |s| &s.routes));
    counts.push(("userspace[!]", |s| &s.userspace_vectors));
    for (name, f) in counts {
        row(&mut o, name, strategies, |s| f(s).cell());
    }
    let _ = writeln!(
        o,
        "[*] irqfds bound once this VF's restore ended, counted in the per_device run: the ones \
         this VF's commits walk (the seed's \"Count of irqfds\").\n[+] time in the window \
         outside every VF's slot: the VM-wide batch's closing commit (staged: opening the \
         switchover, no commit).\n[#] before the timed window: staging from the precopied \
         state; counts are per run.\n[^] after the window, once the VM has resumed: the staged \
         switchover's deferred routing commit and the trigger moves back to the irqfds (not in \
         Total).\n[=] all the work of the resume: staging + Total + after resume.\n[~] part of \
         the total spent inside the simulated VFIO devices (SET_IRQS, region access).\n[!] \
         vectors left without a KVM route (past the route limit): they deliver through \
         userspace.\nTimes are medians over the reps; min-max rows give the range."
    );
    varied(&mut o, "library", strategies);

    // Raw floor.
    let _ = writeln!(o);
    if r.raw.is_empty() {
        let _ = writeln!(o, "raw-ioctl floor: not measured ({label})");
    } else {
        let _ = writeln!(
            o,
            "raw-ioctl floor (kvm-ioctls only, same routes and irqfds, fresh VM per rep; ms as \
             median (min-max)):"
        );
        let _ = writeln!(
            o,
            "{:<12}{:>24}{:>8}{:>24}{:>9}{:>24}{:>9}",
            "strategy", "raw ms", "commits", "library ms", "lib/raw", "lib host ms", "host/raw"
        );
        for raw in &r.raw {
            let lib = r.strategy(raw.strategy);
            let ratio = |x: Option<f64>| {
                x.filter(|_| raw.total.median > 0.0)
                    .map(|v| format!("{:.2}x", v / raw.total.median))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                o,
                "{:<12}{:>24}{:>8}{:>24}{:>9}{:>24}{:>9}",
                raw.strategy.name(),
                spread_cell(raw.total),
                raw.gsi_routing_commits.cell(),
                lib.map(|l| spread_cell(l.total))
                    .unwrap_or_else(|| "-".into()),
                ratio(lib.map(|l| l.total.median)),
                lib.map(|l| spread_cell(l.host))
                    .unwrap_or_else(|| "-".into()),
                ratio(lib.map(|l| l.host.median)),
            );
        }
        if let Some(raw) = r.raw_strategy(Strategy::Staged) {
            let _ = writeln!(
                o,
                "{:<12}{:>24}{:>8}{:>24}{:>9}{:>24}{:>9}",
                "staged work",
                spread_cell(raw.work),
                "",
                r.strategy(Strategy::Staged)
                    .map(|l| spread_cell(l.work))
                    .unwrap_or_else(|| "-".into()),
                "",
                r.strategy(Strategy::Staged)
                    .map(|l| spread_cell(l.work_host))
                    .unwrap_or_else(|| "-".into()),
                "",
            );
        }
        let _ = writeln!(
            o,
            "(host = library time minus the time inside the simulated devices; the floor has no \
             VFIO device)"
        );
        if let Some(f) = r.floor() {
            let _ = writeln!(o, "floor (raw vm_wide): {}ms", spread_cell(f));
        }
        varied(&mut o, "raw floor", &r.raw);
    }

    // Ratios.
    let _ = writeln!(o);
    let _ = writeln!(o, "ratios of medians ({label}):");
    let _ = writeln!(
        o,
        "  {:<28}{:>12}{:>16}   {:<10}{:<14}verdict incl. sim dev",
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
            "  {:<28}{:>12}{:>16}   {:<10}{:<14}{}",
            c.what,
            x(c.host),
            x(c.total),
            c.target.text(),
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

/// Names every count whose reps disagreed (the code path is deterministic, so this is a
/// finding, not noise).
fn varied(o: &mut String, what: &str, strategies: &[StrategyResult]) {
    for s in strategies {
        for (name, values) in s.varied_counts() {
            let _ = writeln!(
                o,
                "!! {what} {}: {name} differed between reps: {values:?}",
                s.strategy.name()
            );
        }
    }
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
}
