// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `--svg` chart: cost per VF (log scale) against irqfds already assigned, one line per
//! strategy, plus the raw floor's per-VF share as a dashed reference.

use std::fmt::Write as _;

use super::model::Report;

const W: f64 = 820.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 210.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 70.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the chart.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    // One x position per VF; the ticks say how many irqfds were bound once it was restored
    // (measured in the per_device run), or which VF it is when that did not run.
    let xmax = f64::from(r.vfs.max(1));
    let xmin = 1.0;
    let axis = r.irqfd_axis();
    let tick = |i: usize| match axis.and_then(|a| a.get(i)) {
        Some(c) => c.cell(),
        None => format!("VF {}", i + 1),
    };
    let values = r
        .strategies
        .iter()
        .flat_map(|s| s.per_vf_ms.iter().copied())
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo > hi { (0.001, 1.0) } else { (lo, hi) };
    let dlo = lo.log10().floor();
    let dhi = hi.log10().ceil().max(dlo + 1.0);
    let x = |v: f64| {
        if xmax > xmin {
            LEFT + (v - xmin) / (xmax - xmin) * pw
        } else {
            LEFT + pw / 2.0
        }
    };
    let y = |v: f64| {
        let l = v.max(10f64.powf(dlo)).log10();
        TOP + ph - (l - dlo) / (dhi - dlo) * ph
    };

    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(o, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        o,
        "<text x=\"{LEFT}\" y=\"24\" font-size=\"15\">MSI-X restore cost per VF: {} VFs x {} vectors, \
         median of {} reps</text>",
        r.vfs, r.vectors, r.reps
    );
    let _ = writeln!(
        o,
        "<text x=\"{LEFT}\" y=\"42\" fill=\"{}\">backend: {}; driver: {}</text>",
        if r.kvm { "#444" } else { "#c00" },
        esc(&r.backend_label()),
        esc(&r.driver)
    );
    let _ = writeln!(
        o,
        "<text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#666\" font-size=\"11\">points: each VF's own \
         restore; vm_wide's closing commit is only in the totals (legend); staged's commit is deferred past the resume</text>",
        H - 6.0
    );
    // Decade grid and y labels.
    let mut d = dlo;
    while d <= dhi {
        let v = 10f64.powf(d);
        let yy = y(v);
        let _ = writeln!(
            o,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v} ms</text>",
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0
        );
        d += 1.0;
    }
    // X ticks at every VF.
    for i in 0..r.vfs as usize {
        let xx = x(i as f64 + 1.0);
        let _ = writeln!(
            o,
            "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{xx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 16.0,
            esc(&tick(i))
        );
    }
    let _ = writeln!(
        o,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>"
    );
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        LEFT + pw / 2.0,
        H - 24.0,
        if axis.is_some() {
            "irqfds bound once the VF was restored (per_device run, incl. this VF's)"
        } else {
            "VF"
        }
    );
    let _ = writeln!(
        o,
        "<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">ms per VF (log scale)</text>",
        TOP + ph / 2.0
    );
    // Lines and legend.
    for (k, s) in r.strategies.iter().enumerate() {
        let c = super::model::colour(s.strategy);
        let pts: Vec<String> = s
            .per_vf_ms
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64 + 1.0), y(*v)))
            .collect();
        let _ = writeln!(
            o,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        for p in &pts {
            if let Some((px, py)) = p.split_once(',') {
                let _ = writeln!(o, "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{c}\"/>");
            }
        }
        let ly = TOP + 10.0 + 22.0 * k as f64;
        let lx = LEFT + pw + 16.0;
        let _ = writeln!(
            o,
            "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{c}\" stroke-width=\"2\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{} ({:.2} ms)</text>",
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            esc(s.strategy.name()),
            s.total.median
        );
    }
    if let Some(f) = r.floor().map(|f| f.median) {
        let k = r.strategies.len() as f64;
        let ly = TOP + 10.0 + 22.0 * k;
        let lx = LEFT + pw + 16.0;
        let _ = writeln!(
            o,
            "<text x=\"{lx:.1}\" y=\"{:.1}\" fill=\"#444\">raw floor total: {f:.2} ms</text>",
            ly + 4.0
        );
    }
    let _ = writeln!(o, "</svg>");
    o
}
