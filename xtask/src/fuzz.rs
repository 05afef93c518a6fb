// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `cargo xtask fuzz`: builds the `fuzz/` crate's libFuzzer targets on the stable toolchain and
//! runs them for a bounded time on their seed corpora.
//!
//! What cargo-fuzz would do, without needing cargo-fuzz or a nightly compiler: the targets link
//! `libfuzzer-sys` (which compiles libFuzzer with the system C++ compiler) and are built in
//! release mode with debug assertions and the sanitizer-coverage passes libFuzzer reads. The
//! `--target` triple is passed explicitly so the instrumentation flags reach only the target's
//! code and not build scripts. `--asan` adds AddressSanitizer, which is an unstable flag: it is
//! enabled on a stable compiler through `RUSTC_BOOTSTRAP=1` and is therefore opt-in.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Usage of `cargo xtask fuzz`, appended to the xtask usage text.
pub const USAGE: &str = "
  fuzz --list                      list the fuzz targets
  fuzz seed                        regenerate the generated seed files under fuzz/corpus/
  fuzz promote TARGET|all          copy into fuzz/corpus/TARGET/ (as unit-SHA1) the fewest
                                   units of fuzz/corpus-run/TARGET/ that reach edges the
                                   committed corpus does not
  fuzz TARGET|all [options] [-- LIBFUZZER_ARGS...]
      --seconds S                  run each target for S seconds (default 60)
      --runs N                     stop each target after N executions instead
      --asan                       build with AddressSanitizer (RUSTC_BOOTSTRAP=1 on stable)
      --clean                      start from the seed corpus, dropping units found earlier
      --reproduce FILE             run TARGET once on FILE (a crash artifact) and exit
";

/// The sanitizer-coverage flags cargo-fuzz passes to rustc for libFuzzer.
const COVERAGE_FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "--cfg",
    "fuzzing",
];

/// Options of one `cargo xtask fuzz` invocation.
#[derive(Debug, Default)]
struct Options {
    targets: Vec<String>,
    seconds: Option<u64>,
    runs: Option<u64>,
    asan: bool,
    clean: bool,
    reproduce: Option<PathBuf>,
    extra: Vec<String>,
}

/// What one target's run reported.
#[derive(Debug)]
struct Outcome {
    target: String,
    executions: Option<u64>,
    corpus_units: usize,
    crash: Option<String>,
}

/// Entry point of `cargo xtask fuzz ARGS`.
pub fn run(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let all = list_targets(&fuzz_dir)?;
    match args.first().map(String::as_str) {
        Some("--list") => {
            for t in &all {
                println!("{t}");
            }
            return Ok(());
        }
        Some("seed") => return seed(&fuzz_dir),
        Some("promote") => {
            let opts = parse(args.get(1..).unwrap_or_default(), &all)?;
            build(&fuzz_dir, &opts)?;
            for target in &opts.targets {
                let n = promote(&fuzz_dir, &opts, target)?;
                eprintln!("{target}: {n} unit(s) promoted to fuzz/corpus/{target}/");
            }
            return Ok(());
        }
        None => return Err(format!("fuzz: missing TARGET{USAGE}")),
        _ => {}
    }
    let opts = parse(args, &all)?;
    build(&fuzz_dir, &opts)?;
    if let Some(file) = &opts.reproduce {
        let target = opts.targets.first().ok_or("--reproduce needs one TARGET")?;
        return reproduce(&fuzz_dir, &opts, target, file);
    }
    let mut outcomes = Vec::new();
    for target in &opts.targets {
        outcomes.push(run_one(&fuzz_dir, &opts, target)?);
    }
    eprintln!("\nfuzz summary:");
    let mut failed = Vec::new();
    for o in &outcomes {
        let execs = o
            .executions
            .map_or_else(|| "unknown".to_string(), |n| n.to_string());
        eprintln!(
            "  {:<24} executions {:>12}   corpus units {:>6}   crashes {}",
            o.target,
            execs,
            o.corpus_units,
            u8::from(o.crash.is_some())
        );
        if let Some(c) = &o.crash {
            failed.push(format!("{}: {c}", o.target));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzzing found crashes:\n  {}", failed.join("\n  ")))
    }
}

/// The workspace root: xtask's parent directory.
fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.clone(), Path::to_path_buf)
}

/// The fuzz targets: every `[[bin]]` of `fuzz/Cargo.toml` whose source is in `fuzz_targets/`.
fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>, String> {
    let manifest = fuzz_dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest)
        .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
    let mut targets = Vec::new();
    let mut name: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            name = None;
        } else if let Some(v) = value_of(line, "name") {
            name = Some(v);
        } else if let Some(v) = value_of(line, "path") {
            if v.starts_with("fuzz_targets/") {
                if let Some(n) = name.take() {
                    targets.push(n);
                }
            }
        }
    }
    if targets.is_empty() {
        return Err(format!("no fuzz targets in {}", manifest.display()));
    }
    Ok(targets)
}

/// The string value of `key = "value"`, if `line` is that assignment.
fn value_of(line: &str, key: &str) -> Option<String> {
    let rest = line.strip_prefix(key)?.trim_start().strip_prefix('=')?;
    let v = rest.trim().strip_prefix('"')?.strip_suffix('"')?;
    Some(v.to_string())
}

/// Parses `TARGET|all [options] [-- extra]`.
fn parse(args: &[String], all: &[String]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut it = args.iter();
    let mut names = Vec::new();
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{flag} needs a number"))
        };
        match a.as_str() {
            "--seconds" => opts.seconds = Some(number("--seconds")?),
            "--runs" => opts.runs = Some(number("--runs")?),
            "--asan" => opts.asan = true,
            "--clean" => opts.clean = true,
            "--reproduce" => {
                let f = it.next().ok_or("--reproduce needs a FILE")?;
                opts.reproduce = Some(PathBuf::from(f));
            }
            "--" => {
                opts.extra = it.by_ref().cloned().collect();
            }
            s if s.starts_with('-') => return Err(format!("fuzz: unknown option {s}{USAGE}")),
            s => names.push(s.to_string()),
        }
    }
    let mut seen = BTreeSet::new();
    for n in names {
        if n == "all" {
            for t in all {
                if seen.insert(t.clone()) {
                    opts.targets.push(t.clone());
                }
            }
        } else if all.contains(&n) {
            if seen.insert(n.clone()) {
                opts.targets.push(n);
            }
        } else {
            return Err(format!(
                "unknown fuzz target `{n}`; targets: {}",
                all.join(", ")
            ));
        }
    }
    if opts.targets.is_empty() {
        return Err(format!("fuzz: missing TARGET{USAGE}"));
    }
    if opts.seconds.is_none() && opts.runs.is_none() {
        opts.seconds = Some(60);
    }
    Ok(opts)
}

/// The host triple, from `rustc -vV`.
fn host_triple() -> Result<String, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| "rustc -vV printed no host triple".to_string())
}

/// Where the instrumented binaries land.
fn target_dir(fuzz_dir: &Path, opts: &Options) -> PathBuf {
    let base = fuzz_dir.join("target");
    if opts.asan {
        base.join("asan")
    } else {
        base
    }
}

fn binary(fuzz_dir: &Path, opts: &Options, target: &str) -> Result<PathBuf, String> {
    Ok(target_dir(fuzz_dir, opts)
        .join(host_triple()?)
        .join("release")
        .join(target))
}

/// Builds the requested targets with coverage instrumentation.
fn build(fuzz_dir: &Path, opts: &Options) -> Result<(), String> {
    let triple = host_triple()?;
    let mut flags: Vec<&str> = COVERAGE_FLAGS.to_vec();
    if opts.asan {
        flags.push("-Zsanitizer=address");
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(fuzz_dir.join("Cargo.toml"))
        .arg("--target")
        .arg(&triple)
        .arg("--target-dir")
        .arg(target_dir(fuzz_dir, opts));
    for t in &opts.targets {
        cmd.arg("--bin").arg(t);
    }
    cmd.env("RUSTFLAGS", flags.join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    if opts.asan {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    eprintln!(
        "$ RUSTFLAGS='{}' cargo build --release --target {triple} (fuzz/, {} target(s))",
        flags.join(" "),
        opts.targets.len()
    );
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the fuzz targets failed: {status}"))
    }
}

/// Copies every file of `from` into `to` (flat), returning how many were copied.
fn copy_flat(from: &Path, to: &Path) -> Result<usize, String> {
    let Ok(entries) = fs::read_dir(from) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_file() {
            if let Some(name) = p.file_name() {
                fs::copy(&p, to.join(name))
                    .map_err(|err| format!("cannot copy {}: {err}", p.display()))?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.flatten().filter(|e| e.path().is_file()).count())
}

/// Runs one target on a scratch copy of its seed corpus and reads libFuzzer's final stats.
fn run_one(fuzz_dir: &Path, opts: &Options, target: &str) -> Result<Outcome, String> {
    let seeds = fuzz_dir.join("corpus").join(target);
    let scratch = fuzz_dir.join("corpus-run").join(target);
    let artifacts = fuzz_dir.join("artifacts").join(target);
    if opts.clean && scratch.exists() {
        fs::remove_dir_all(&scratch)
            .map_err(|e| format!("cannot clean {}: {e}", scratch.display()))?;
    }
    for d in [&scratch, &artifacts] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let seeded = copy_flat(&seeds, &scratch)?;
    let log_dir = fuzz_dir.join("target").join("logs");
    fs::create_dir_all(&log_dir).map_err(|e| format!("cannot create log dir: {e}"))?;
    let log_path = log_dir.join(format!("{target}.log"));

    let bin = binary(fuzz_dir, opts, target)?;
    let mut cmd = Command::new(&bin);
    if let Some(s) = opts.seconds {
        cmd.arg(format!("-max_total_time={s}"));
    }
    if let Some(r) = opts.runs {
        cmd.arg(format!("-runs={r}"));
    }
    let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    cmd.arg("-print_final_stats=1")
        .arg("-timeout=10")
        .arg("-rss_limit_mb=2048")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .args(&opts.extra)
        .arg(&scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if opts.asan {
        cmd.env("ASAN_OPTIONS", "detect_leaks=0");
    }
    eprintln!(
        "fuzz {target}: {} seed file(s), {} unit(s) in the scratch corpus; log in fuzz/target/logs/{target}.log",
        seeded,
        count_files(&scratch)
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let mut log = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Keep CI logs short: echo only the periodic pulses and what follows a failure.
            if line.contains("pulse") || line.contains("DONE") {
                eprintln!("  {target}: {line}");
            }
            log.push(line);
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {target}: {e}"))?;
    let text = log.join("\n");
    fs::write(&log_path, &text).map_err(|e| format!("cannot write {}: {e}", log_path.display()))?;

    let executions = log.iter().find_map(|l| {
        l.strip_prefix("stat::number_of_executed_units:")
            .and_then(|v| v.trim().parse().ok())
    });
    let crash = if status.success() {
        None
    } else {
        // Print the report: everything from the first error line on.
        let start = log
            .iter()
            .position(|l| {
                l.contains("panicked at")
                    || l.contains("ERROR: libFuzzer")
                    || l.contains("ERROR: AddressSanitizer")
                    || l.contains("==ERROR")
            })
            .unwrap_or(log.len().saturating_sub(40));
        for l in log.get(start..).unwrap_or(&[]) {
            eprintln!("  {target}| {l}");
        }
        let artifact = log
            .iter()
            .find_map(|l| {
                l.split_once("Test unit written to ")
                    .map(|(_, p)| p.trim().to_string())
            })
            .unwrap_or_else(|| "no artifact written".to_string());
        Some(format!(
            "{status}; input in {artifact}; rerun with `cargo xtask fuzz {target} --reproduce {artifact}`"
        ))
    };
    Ok(Outcome {
        target: target.to_string(),
        executions,
        corpus_units: count_files(&scratch),
        crash,
    })
}

/// Runs a target once on one input file, showing its full output.
fn reproduce(fuzz_dir: &Path, opts: &Options, target: &str, file: &Path) -> Result<(), String> {
    let bin = binary(fuzz_dir, opts, target)?;
    let status = Command::new(&bin)
        .arg(file)
        .env("RUST_BACKTRACE", "1")
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if status.success() {
        eprintln!("{target}: {} ran clean", file.display());
        Ok(())
    } else {
        Err(format!("{target}: {} fails: {status}", file.display()))
    }
}

/// Regenerates the generated seed files (valid serialized states and the like) under
/// `fuzz/corpus/` by running the fuzz crate's uninstrumented `seed-corpus` binary.
fn seed(fuzz_dir: &Path) -> Result<(), String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.arg("run")
        .arg("--release")
        .arg("--manifest-path")
        .arg(fuzz_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(fuzz_dir.join("target").join("plain"))
        .arg("--bin")
        .arg("seed-corpus")
        .arg("--")
        .arg(fuzz_dir.join("corpus"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("seed-corpus failed: {status}"))
    }
}

/// Copies into the committed corpus the units of the scratch corpus that reach coverage edges
/// the committed corpus does not: libFuzzer's set-cover merge on edges only (no hit counters),
/// into a directory that starts with the committed corpus. Returns how many were copied.
fn promote(fuzz_dir: &Path, opts: &Options, target: &str) -> Result<usize, String> {
    let committed = fuzz_dir.join("corpus").join(target);
    let scratch = fuzz_dir.join("corpus-run").join(target);
    let work = fuzz_dir.join("target").join("promote").join(target);
    if work.exists() {
        fs::remove_dir_all(&work).map_err(|e| format!("cannot clean {}: {e}", work.display()))?;
    }
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    copy_flat(&committed, &work)?;
    let before: BTreeSet<_> = fs::read_dir(&work)
        .map_err(|e| format!("cannot list {}: {e}", work.display()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let bin = binary(fuzz_dir, opts, target)?;
    // Inputs that crash during the merge are written beside the run's own crashes, never
    // into the working directory.
    let artifacts = fuzz_dir.join("artifacts").join(target);
    fs::create_dir_all(&artifacts)
        .map_err(|e| format!("cannot create {}: {e}", artifacts.display()))?;
    let status = Command::new(&bin)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-merge=1")
        .arg("-set_cover_merge=1")
        .arg("-use_counters=0")
        .arg(&work)
        .arg(&scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !status.success() {
        return Err(format!("{target}: merge failed: {status}"));
    }
    let mut n = 0;
    for e in fs::read_dir(&work)
        .map_err(|e| format!("cannot list {}: {e}", work.display()))?
        .flatten()
    {
        let name = e.file_name();
        if before.contains(&name) {
            continue;
        }
        let dest = committed.join(format!("unit-{}", name.to_string_lossy()));
        fs::copy(e.path(), &dest)
            .map_err(|err| format!("cannot copy to {}: {err}", dest.display()))?;
        n += 1;
    }
    Ok(n)
}
