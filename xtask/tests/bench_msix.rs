// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Runs `xtask bench-msix` at a tiny size and checks the JSON's shape, the counts its code
//! took from the router's, the devices' and the simulated VFs' counters (never its times), and
//! that each verdict printed follows from the ratio and target printed next to it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

/// A parsed JSON value: just enough of JSON for the bench's output.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("no key {key:?} in {self:?}")),
            other => panic!("{key:?} looked up in a non-object {other:?}"),
        }
    }
    fn keys(&self) -> Vec<&str> {
        match self {
            Json::Obj(fields) => fields.iter().map(|(k, _)| k.as_str()).collect(),
            other => panic!("not an object: {other:?}"),
        }
    }
    fn num(&self) -> f64 {
        match self {
            Json::Num(n) => *n,
            other => panic!("not a number: {other:?}"),
        }
    }
    fn count(&self) -> u64 {
        let n = self.num();
        assert!(n >= 0.0 && n.fract() == 0.0, "not a count: {n}");
        n as u64
    }
    fn bool_or_null(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            Json::Null => None,
            other => panic!("not a bool or null: {other:?}"),
        }
    }
    fn num_or_null(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            Json::Null => None,
            other => panic!("not a number or null: {other:?}"),
        }
    }
    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
    fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            other => panic!("not an array: {other:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(
            self.s.get(self.i),
            Some(&c),
            "expected {:?} at {}",
            c as char,
            self.i
        );
        self.i += 1;
    }
    fn lit(&mut self, word: &str, v: Json) -> Json {
        assert!(
            self.s[self.i..].starts_with(word.as_bytes()),
            "bad literal at {}",
            self.i
        );
        self.i += word.len();
        v
    }
    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = String::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return out,
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    match e {
                        b'n' => out.push('\n'),
                        b'u' => {
                            let hex = std::str::from_utf8(&self.s[self.i..self.i + 4]).unwrap();
                            out.push(
                                char::from_u32(u32::from_str_radix(hex, 16).unwrap()).unwrap(),
                            );
                            self.i += 4;
                        }
                        other => out.push(other as char),
                    }
                }
                _ => {
                    // Re-decode multi-byte UTF-8 sequences whole.
                    let start = self.i - 1;
                    let len = match c {
                        0..=0x7f => 1,
                        0xc0..=0xdf => 2,
                        0xe0..=0xef => 3,
                        _ => 4,
                    };
                    out.push_str(std::str::from_utf8(&self.s[start..start + len]).unwrap());
                    self.i = start + len;
                }
            }
        }
    }
    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s[self.i] == b'}' {
                    self.i += 1;
                    return Json::Obj(fields);
                }
                loop {
                    let k = self.string();
                    self.eat(b':');
                    let v = self.value();
                    assert!(fields.iter().all(|(f, _)| f != &k), "duplicate key {k}");
                    fields.push((k, v));
                    self.ws();
                    match self.s[self.i] {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Json::Obj(fields);
                        }
                        c => panic!("unexpected {:?} at {}", c as char, self.i),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s[self.i] == b']' {
                    self.i += 1;
                    return Json::Arr(items);
                }
                loop {
                    items.push(self.value());
                    self.ws();
                    match self.s[self.i] {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Json::Arr(items);
                        }
                        c => panic!("unexpected {:?} at {}", c as char, self.i),
                    }
                }
            }
            b'"' => Json::Str(self.string()),
            b't' => self.lit("true", Json::Bool(true)),
            b'f' => self.lit("false", Json::Bool(false)),
            b'n' => self.lit("null", Json::Null),
            _ => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| b"+-.eE0123456789".contains(c))
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                Json::Num(
                    text.parse()
                        .unwrap_or_else(|_| panic!("bad number {text:?}")),
                )
            }
        }
    }
}

fn parse(text: &str) -> Json {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value();
    p.ws();
    assert_eq!(p.i, text.len(), "trailing bytes after the JSON value");
    v
}

#[test]
fn the_checker_parses_what_it_should() {
    let v = parse(r#" {"a":[1,2.5e1,-3],"b":{"c":null,"d":true},"e":"x\"\u0041"} "#);
    assert_eq!(v.get("a").arr().len(), 3);
    assert_eq!(v.get("a").arr()[1].num(), 25.0);
    assert_eq!(v.get("b").get("c"), &Json::Null);
    assert_eq!(v.get("e"), &Json::Str("x\"A".into()));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-bench-msix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs the bench at 2 x 4, 2 reps, with `extra` arguments; returns (stdout, JSON, SVG).
fn tiny_run(tag: &str, extra: &[&str]) -> (String, String, String) {
    let json_path = scratch(&format!("{tag}.json"));
    let svg_path = scratch(&format!("{tag}.svg"));
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench-msix", "--vfs", "2", "--vectors", "4", "--reps", "2"])
        .arg("--json")
        .arg(&json_path)
        .arg("--svg")
        .arg(&svg_path)
        .arg("--no-release")
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench-msix failed:\n{stdout}\n{stderr}"
    );
    (
        stdout,
        std::fs::read_to_string(&json_path).unwrap(),
        std::fs::read_to_string(&svg_path).unwrap(),
    )
}

#[test]
fn tiny_run_writes_the_issue_shape_and_the_strategy_counts() {
    let run = tiny_run("kvm", &[]);
    if std::env::var("PASSTHROUGH_REQUIRE_KVM").as_deref() == Ok("1") {
        let v = parse(&run.1);
        assert_eq!(
            v.get("kvm"),
            &Json::Bool(true),
            "PASSTHROUGH_REQUIRE_KVM=1 but the bench ran without KVM"
        );
    }
    check_tiny_run(run, 8);
}

#[test]
fn a_shape_over_the_route_limit_runs_and_counts_the_userspace_vectors() {
    let (stdout, text, svg) = tiny_run("limit", &["--route-limit", "6"]);
    assert!(
        stdout.contains("2 vectors past the limit deliver through userspace"),
        "{stdout}"
    );
    check_tiny_run((stdout, text, svg), 6);
}

#[test]
fn the_in_memory_fallback_is_labelled_everywhere_and_counts_the_same() {
    let (stdout, text, svg) = tiny_run("memory", &["--in-memory"]);
    let v = parse(&text);
    assert_eq!(v.get("kvm"), &Json::Bool(false));
    assert_eq!(v.get("floor_ms"), &Json::Null);
    for out in [&stdout, &text, &svg] {
        assert!(out.contains("IN-MEMORY"), "unlabelled output: {out}");
    }
    check_tiny_run((stdout, text, svg), 8);
}

/// Checks one tiny run whose backend offered `limit` MSI routes for its 2 x 4 vectors.
fn check_tiny_run((stdout, text, svg): (String, String, String), limit: u64) {
    const VFS: u64 = 2;
    const VECTORS: u64 = 4;
    let routed = limit.min(VFS * VECTORS);
    let v = parse(&text);

    // The issue's shape, in its order.
    assert_eq!(
        &v.keys()[..6],
        ["vfs", "vectors", "reps", "kvm", "floor_ms", "strategies"]
    );
    assert_eq!(v.get("vfs").count(), VFS);
    assert_eq!(v.get("vectors").count(), VECTORS);
    assert_eq!(v.get("reps").count(), 2);
    if limit < VFS * VECTORS {
        assert_eq!(v.get("route_limit").count(), limit);
    } else {
        // KVM_CAP_IRQ_ROUTING minus the irqchip's routes (the in-memory backend copies it).
        assert_eq!(v.get("route_limit").count(), 4096 - 40);
    }
    let kvm = match v.get("kvm") {
        Json::Bool(b) => *b,
        other => panic!("kvm is not a bool: {other:?}"),
    };
    // Never silently without KVM: the label is in the JSON, the table and the chart.
    let label_present = |s: &str| s.contains("IN-MEMORY");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    if kvm {
        assert!(v.get("floor_ms").num() > 0.0);
    } else {
        assert!(label_present(&text) && label_present(&stdout) && label_present(&svg));
    }

    let strategies = v.get("strategies");
    assert_eq!(
        strategies.keys(),
        ["per_vector", "per_device", "vm_wide", "staged"]
    );
    for key in strategies.keys() {
        let s = strategies.get(key);
        for figure in ["total", "host", "device", "work", "work_host"] {
            let (lo, mid, hi) = (
                s.get(&format!("{figure}_ms_min")).num(),
                s.get(&format!("{figure}_ms")).num(),
                s.get(&format!("{figure}_ms_max")).num(),
            );
            assert!(
                0.0 <= lo && lo <= mid && mid <= hi,
                "{key} {figure}: {lo} {mid} {hi}"
            );
        }
        let per_vf = s.get("per_vf_ms").arr();
        assert_eq!(per_vf.len() as u64, VFS, "{key}");
        assert!(per_vf.iter().all(|t| t.num() >= 0.0), "{key}");
        // The two reps counted the same everywhere (a count they disagree on is an array).
        assert_eq!(s.get("varied_counts").keys().len(), 0, "{key}");
        // Every vector within the limit is restored with its own irqfd; the others deliver
        // through userspace, counted from the devices' routes.
        assert_eq!(s.get("irqfds").count(), routed, "{key}");
        assert_eq!(s.get("routes").count(), routed, "{key}");
        assert_eq!(
            s.get("userspace_vectors").count(),
            VFS * VECTORS - routed,
            "{key}"
        );
    }
    // Irqfds bound once each VF's slot of the window ended, from the router's counters:
    // per vector and per device, each VF's own join the earlier ones'; VM-wide binds them
    // all at the closing commit; staged bound them all before the window.
    let after_vf = |k: &str| -> Vec<u64> {
        strategies
            .get(k)
            .get("irqfds_after_vf")
            .arr()
            .iter()
            .map(Json::count)
            .collect()
    };
    let first = VECTORS.min(routed);
    assert_eq!(after_vf("per_vector"), [first, routed]);
    assert_eq!(after_vf("per_device"), [first, routed]);
    assert_eq!(after_vf("vm_wide"), [0, 0]);
    assert_eq!(after_vf("staged"), [routed, routed]);
    // The table's first column is the per_device run's.
    let table_axis: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("1st") || l.starts_with("2nd"))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(table_axis, [first.to_string(), routed.to_string()]);
    // Staging and the deferred commit are staged's alone, and part of its work.
    for k in ["per_vector", "per_device", "vm_wide"] {
        let s = strategies.get(k);
        assert_eq!(s.get("staging_ms_max").num(), 0.0, "{k}");
        assert_eq!(s.get("work_ms").num(), s.get("total_ms").num(), "{k}");
    }
    let staged = strategies.get("staged");
    assert!(staged.get("staging_ms").num() > 0.0);
    assert!(staged.get("deferred_commit_ms").num() > 0.0);
    assert!(staged.get("work_ms_min").num() > staged.get("total_ms_max").num());

    let commits = |k: &str| strategies.get(k).get("gsi_routing_commits").count();
    let set_irqs = |k: &str| strategies.get(k).get("set_irqs_calls").count();
    let staged_before = |k: &str| strategies.get(k).get("staged_commits").count();
    // Per vector: each vector's route is committed on its own.
    assert_eq!(commits("per_vector"), routed);
    // Per device: one commit as each device's enable ends.
    assert_eq!(commits("per_device"), VFS);
    // VM-wide: the outer batch commits once for the whole VM.
    assert_eq!(commits("vm_wide"), 1);
    let deferred_commits = |k: &str| {
        strategies
            .get(k)
            .get("deferred_gsi_routing_commits")
            .count()
    };
    let deferred_set_irqs = |k: &str| strategies.get(k).get("deferred_set_irqs_calls").count();
    // Staged: everything committed once before the window; no commit at the switchover. The
    // difference (one vector per VF retargeted after the precopy) is committed once after the
    // resume.
    assert_eq!(staged_before("staged"), 1);
    assert_eq!(commits("staged"), 0);
    assert_eq!(deferred_commits("staged"), 1);
    for k in ["per_vector", "per_device", "vm_wide"] {
        assert_eq!(deferred_commits(k), 0, "{k}");
        assert_eq!(deferred_set_irqs(k), 0, "{k}");
        assert_eq!(
            strategies.get(k).get("deferred_commit_ms").num(),
            0.0,
            "{k}"
        );
    }
    for k in ["per_vector", "per_device", "vm_wide"] {
        assert_eq!(staged_before(k), 0, "{k}");
    }
    // All vectors of a device are enabled with one SET_IRQS, whatever the commit grouping.
    for k in ["per_vector", "per_device", "vm_wide"] {
        assert_eq!(set_irqs(k), VFS, "{k}");
    }
    // At the switchover each retargeted vector's trigger moves to its userspace eventfd (its
    // GSI still holds the old message until the deferred commit): one SET_IRQS per VF. The
    // deferred commit moves them back: one more per VF.
    assert_eq!(set_irqs("staged"), VFS);
    assert_eq!(deferred_set_irqs("staged"), VFS);

    // The raw floor ran the same routes with the same commit counts.
    if kvm {
        let raw = v.get("raw");
        assert_eq!(
            raw.get("per_vector").get("gsi_routing_commits").count(),
            routed
        );
        for k in raw.keys() {
            let r = raw.get(k);
            assert_eq!(r.get("irqfds").count(), routed, "raw {k}");
            assert_eq!(
                r.get("userspace_vectors").count(),
                VFS * VECTORS - routed,
                "raw {k}"
            );
            assert_eq!(r.get("varied_counts").keys().len(), 0, "raw {k}");
        }
        assert_eq!(
            raw.get("per_device")
                .get("irqfds_after_vf")
                .arr()
                .iter()
                .map(Json::count)
                .collect::<Vec<_>>(),
            [first, routed]
        );
        assert_eq!(
            raw.get("per_device").get("gsi_routing_commits").count(),
            VFS
        );
        assert_eq!(raw.get("vm_wide").get("gsi_routing_commits").count(), 1);
        assert_eq!(raw.get("vm_wide").get("set_irqs_calls").count(), 0);
        assert_eq!(raw.get("staged").get("gsi_routing_commits").count(), 0);
        assert_eq!(
            raw.get("staged")
                .get("deferred_gsi_routing_commits")
                .count(),
            1
        );
    }

    // Every target is judged, on host-side and on whole times, and each verdict follows from
    // its ratio and its target (the verdict logic itself is unit-tested in the bench).
    let ratios = v.get("ratios");
    assert_eq!(
        ratios.keys(),
        [
            "per_vector / vm_wide",
            "per_device / vm_wide",
            "staged window / per_device",
            "staged work / per_device",
            "vm_wide / floor"
        ]
    );
    for k in ratios.keys() {
        let c = ratios.get(k);
        let target = c.get("target").str();
        let (op, bound) = target.split_once(' ').unwrap();
        let bound: f64 = bound.parse().unwrap();
        for (measured, met) in [
            ("measured", "met"),
            ("measured_incl_device", "met_incl_device"),
        ] {
            let ratio = c.get(measured).num_or_null();
            let verdict = c.get(met).bool_or_null();
            // Every strategy ran; only the floor is missing without KVM.
            let expect_measured = kvm || k != "vm_wide / floor";
            assert_eq!(ratio.is_some(), expect_measured, "{k} {measured}");
            let want = ratio.map(|x| match op {
                ">=" => x >= bound,
                "<=" => x <= bound,
                other => panic!("{k}: unknown target {other}"),
            });
            assert_eq!(verdict, want, "{k}: {measured} {ratio:?} against {target}");
        }
    }
    // The table prints the same verdicts.
    let verdict_word = |m: Option<bool>| match m {
        Some(true) => "met",
        Some(false) => "SHORT",
        None => "not measured",
    };
    for k in ratios.keys() {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(k))
            .unwrap_or_else(|| panic!("no table line for {k}"));
        let host = verdict_word(ratios.get(k).get("met").bool_or_null());
        assert!(line.contains(host), "{line}");
    }

    // The seed-000 table: one call beats one call per vector.
    let growth = v.get("growth").arr();
    assert_eq!(growth.len(), 4);
    let calls = |i: usize| growth[i].get("set_irqs_calls").count();
    let binds = |i: usize| growth[i].get("vector_bindings").count();
    // NORESIZE growth re-enables every vector so far at each step: 1 + 2 + ... + M bindings,
    // one enable plus a disable/enable pair per regrow.
    assert_eq!(binds(0), VECTORS * (VECTORS + 1) / 2);
    assert_eq!(calls(0), 1 + 2 * (VECTORS - 1));
    // One call binds each vector once, in either mode.
    assert_eq!((calls(1), binds(1)), (1, VECTORS));
    assert_eq!((calls(3), binds(3)), (1, VECTORS));
    // Dynamic MSI-X growth binds each vector once, one call each.
    assert_eq!((calls(2), binds(2)), (VECTORS, VECTORS));
}
