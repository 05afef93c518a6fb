// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `--json` output, written by hand (the workspace declares no serde).

use std::fmt::Write as _;

use super::model::{Report, StrategyResult};
use super::table::{checks, irqfds_assigned};

/// A JSON number, or `null` for values JSON cannot carry.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.6}")
    } else {
        "null".to_string()
    }
}

/// A JSON string literal.
pub fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn list<T>(items: impl IntoIterator<Item = T>, f: impl Fn(T) -> String) -> String {
    let v: Vec<String> = items.into_iter().map(f).collect();
    format!("[{}]", v.join(","))
}

fn strategy(s: &StrategyResult, vectors: u32) -> String {
    format!(
        "{{\"total_ms\":{},\"per_vf_ms\":{},\"gsi_routing_commits\":{},\"set_irqs_calls\":{},\
         \"closing_ms\":{},\"device_ms\":{},\"host_ms\":{},\"staged_commits\":{},\"irqfds\":{},\"irqfds_already_assigned\":{},\
         \"deferred_commit_ms\":{},\"deferred_gsi_routing_commits\":{},\"deferred_set_irqs_calls\":{}}}",
        num(s.total_ms),
        list(s.per_vf_ms.iter().copied(), num),
        s.gsi_routing_commits,
        s.set_irqs_calls,
        num(s.closing_ms),
        num(s.device_ms),
        num(s.host_ms),
        s.staged_commits,
        s.irqfds,
        list(0..s.per_vf_ms.len(), |i| irqfds_assigned(i, vectors)
            .to_string()),
        num(s.deferred_commit_ms),
        s.deferred_gsi_routing_commits,
        s.deferred_set_irqs_calls,
    )
}

fn strategies(v: &[StrategyResult], vectors: u32) -> String {
    let fields: Vec<String> = v
        .iter()
        .map(|s| format!("{}:{}", string(s.strategy.name()), strategy(s, vectors)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The report as one JSON object: the shape first, extra fields after.
pub fn render(r: &Report) -> String {
    let ratios: Vec<String> = checks(r)
        .iter()
        .map(|c| {
            format!(
                "{}:{{\"measured\":{},\"measured_incl_device\":{},\"target\":{},\"met\":{},\"met_incl_device\":{}}}",
                string(c.what),
                c.host.map(num).unwrap_or_else(|| "null".into()),
                c.total.map(num).unwrap_or_else(|| "null".into()),
                string(c.target),
                c.met
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "null".into()),
                c.met_total
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "null".into())
            )
        })
        .collect();
    let growth = list(&r.growth, |g| {
        format!(
            "{{\"how\":{},\"set_irqs_calls\":{},\"vector_bindings\":{}}}",
            string(&g.label),
            g.set_irqs_calls,
            g.vector_bindings
        )
    });
    format!(
        "{{\"vfs\":{},\"vectors\":{},\"reps\":{},\"kvm\":{},\"floor_ms\":{},\"strategies\":{},\
         \"backend\":{},\"driver\":{},\"raw\":{},\"ratios\":{{{}}},\"growth\":{}}}\n",
        r.vfs,
        r.vectors,
        r.reps,
        r.kvm,
        r.floor_ms.map(num).unwrap_or_else(|| "null".into()),
        strategies(&r.strategies, r.vectors),
        string(&r.backend_label()),
        string(&r.driver),
        strategies(&r.raw, r.vectors),
        ratios.join(","),
        growth,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn non_finite_numbers_become_null() {
        assert_eq!(num(f64::NAN), "null");
        assert_eq!(num(1.5), "1.500000");
    }
}
