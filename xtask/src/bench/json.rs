// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `--json` output, written by hand (the workspace declares no serde).

use std::fmt::Write as _;

use super::model::{Count, Report, Spread, StrategyResult};
use super::verdict::checks;

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

/// A count: a number when every rep counted the same, else the array of each rep's value.
fn count(c: &Count) -> String {
    match c {
        Count::Same(v) => v.to_string(),
        Count::Varied(v) => list(v.iter(), u64::to_string),
    }
}

/// `"name_ms":median,"name_ms_min":min,"name_ms_max":max`.
fn spread(name: &str, s: Spread) -> String {
    format!(
        "\"{name}_ms\":{},\"{name}_ms_min\":{},\"{name}_ms_max\":{}",
        num(s.median),
        num(s.min),
        num(s.max)
    )
}

fn strategy(s: &StrategyResult) -> String {
    let spreads = [
        ("total", s.total),
        ("host", s.host),
        ("device", s.device),
        ("closing", s.closing),
        ("staging", s.staging),
        ("deferred_commit", s.deferred),
        ("work", s.work),
        ("work_host", s.work_host),
    ]
    .map(|(n, v)| spread(n, v))
    .join(",");
    let counts = s
        .counts()
        .into_iter()
        .map(|(n, c)| format!("\"{n}\":{}", count(c)))
        .collect::<Vec<_>>()
        .join(",");
    let varied = s
        .varied_counts()
        .into_iter()
        .map(|(n, v)| format!("{}:{}", string(&n), list(v.iter(), u64::to_string)))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{{{spreads},\"per_vf_ms\":{},{counts},\"irqfds_after_vf\":{},\"varied_counts\":{{{varied}}}}}",
        list(s.per_vf_ms.iter().copied(), num),
        list(&s.irqfds_after_vf, count),
    )
}

fn strategies(v: &[StrategyResult]) -> String {
    let fields: Vec<String> = v
        .iter()
        .map(|s| format!("{}:{}", string(s.strategy.name()), strategy(s)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn opt_num(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "null".into())
}

fn opt_bool(v: Option<bool>) -> String {
    v.map(|b| b.to_string()).unwrap_or_else(|| "null".into())
}

/// The report as one JSON object: the shape first, extra fields after.
pub fn render(r: &Report) -> String {
    let ratios: Vec<String> = checks(r)
        .iter()
        .map(|c| {
            format!(
                "{}:{{\"measured\":{},\"measured_incl_device\":{},\"target\":{},\"met\":{},\"met_incl_device\":{}}}",
                string(c.what),
                opt_num(c.host),
                opt_num(c.total),
                string(&c.target.text()),
                opt_bool(c.met),
                opt_bool(c.met_total),
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
    let floor = r.floor();
    format!(
        "{{\"vfs\":{},\"vectors\":{},\"reps\":{},\"kvm\":{},\"floor_ms\":{},\"strategies\":{},\
         \"floor_ms_min\":{},\"floor_ms_max\":{},\"route_limit\":{},\"backend\":{},\"driver\":{},\
         \"raw\":{},\"ratios\":{{{}}},\"growth\":{}}}\n",
        r.vfs,
        r.vectors,
        r.reps,
        r.kvm,
        opt_num(floor.map(|f| f.median)),
        strategies(&r.strategies),
        opt_num(floor.map(|f| f.min)),
        opt_num(floor.map(|f| f.max)),
        r.route_limit,
        string(&r.backend_label()),
        string(&r.driver),
        strategies(&r.raw),
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
    fn counts_are_numbers_or_per_rep_arrays() {
        assert_eq!(count(&Count::Same(8)), "8");
        assert_eq!(count(&Count::Varied(vec![8, 9, 8])), "[8,9,8]");
    }

    #[test]
    fn non_finite_numbers_become_null() {
        assert_eq!(num(f64::NAN), "null");
        assert_eq!(num(1.5), "1.500000");
    }
}
