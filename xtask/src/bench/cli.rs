// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command-line options of `cargo xtask bench-msix`.

use std::path::PathBuf;

/// Help text for `cargo xtask bench-msix --help`.
pub const HELP: &str =
    "usage: cargo xtask bench-msix [--vfs N] [--vectors M] [--reps R] [--json FILE] [--svg FILE]
                              [--only LIST] [--route-limit N] [--in-memory] [--no-release]

Restores N simulated VFs with M unmasked MSI-X vectors each into a fresh KVM VM per strategy
and rep, and reports the per-VF cost against the number of irqfds already assigned (the table
of the QEMU patch \"defer to commit kvm irq routing when enable msi/msix\"). The strategies
(and the raw floor's runs) are interleaved within each rep, in an order that rotates from rep
to rep; every figure is reported as the median with its minimum and maximum over the reps.
Vectors past the route limit get no KVM route and deliver through userspace (counted).

options:
  --vfs N        simulated VFs (default 8)
  --vectors M    MSI-X vectors per VF (default 65)
  --reps R       repetitions (default 5)
  --json FILE    also write the results as JSON
  --svg FILE     where to draw cost per VF vs irqfds already assigned
                 (default target/bench-msix.svg)
  --only LIST    run only these strategies (comma-separated), e.g. to profile one
  --route-limit N
                 offer at most N MSI routes (default: what KVM offers, 4056 on x86), to
                 reach the route limit with a small shape
  --in-memory    use the in-memory routing backend even where /dev/kvm works
  --no-release   measure this build as is; by default an unoptimised build re-runs
                 itself with `cargo run --release` so the library is timed optimised
";

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Number of simulated VFs.
    pub vfs: u32,
    /// MSI-X vectors per VF, all unmasked.
    pub vectors: u32,
    /// Repetitions; every strategy gets a fresh VM per rep.
    pub reps: u32,
    /// Where to write the JSON, if anywhere.
    pub json: Option<PathBuf>,
    /// Where to write the SVG chart.
    pub svg: PathBuf,
    /// Measure this build even if it is unoptimised.
    pub no_release: bool,
    /// Run on the in-memory routing backend even if /dev/kvm works.
    pub in_memory: bool,
    /// Strategies to run (all by default).
    pub only: Vec<super::model::Strategy>,
    /// At most this many MSI routes, below what the backend offers.
    pub route_limit: Option<u32>,
}

impl Options {
    /// Parses the arguments after `bench-msix`. `Ok(None)` means help was asked for.
    pub fn parse(args: &[String]) -> Result<Option<Self>, String> {
        let mut opts = Options {
            vfs: 8,
            vectors: 65,
            reps: 5,
            json: None,
            svg: default_svg_path(),
            no_release: false,
            in_memory: false,
            only: super::model::Strategy::ALL.to_vec(),
            route_limit: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            if flag == "-h" || flag == "--help" {
                return Ok(None);
            }
            if flag == "--no-release" {
                opts.no_release = true;
                continue;
            }
            if flag == "--in-memory" {
                opts.in_memory = true;
                continue;
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "--vfs" => opts.vfs = parse_count(flag, &value()?)?,
                "--vectors" => opts.vectors = parse_count(flag, &value()?)?,
                "--reps" => opts.reps = parse_count(flag, &value()?)?,
                "--route-limit" => opts.route_limit = Some(parse_count(flag, &value()?)?),
                "--json" => opts.json = Some(PathBuf::from(value()?)),
                "--svg" => opts.svg = PathBuf::from(value()?),
                "--only" => {
                    opts.only = value()?
                        .split(',')
                        .map(|s| s.trim().parse().map_err(|e| format!("--only: {e}")))
                        .collect::<Result<_, String>>()?;
                }
                other => return Err(format!("unknown option `{other}`\n{HELP}")),
            }
        }
        if opts.vectors > 2048 {
            return Err(format!(
                "--vectors {} is more than MSI-X allows (2048)",
                opts.vectors
            ));
        }
        // Each vector holds two eventfds (irqfd and userspace) and the raw floor one more.
        if u64::from(opts.vfs) * u64::from(opts.vectors) > MAX_VECTORS {
            return Err(format!(
                "{} VFs x {} vectors is more than this bench sets up ({MAX_VECTORS} vectors)",
                opts.vfs, opts.vectors
            ));
        }
        Ok(Some(opts))
    }
}

/// Most vectors one run sets up (a few eventfds each, under a 20000-fd limit).
pub const MAX_VECTORS: u64 = 4800;

fn parse_count(flag: &str, s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err(format!("{flag} must be at least 1")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{flag} {s}: {e}")),
    }
}

/// `target/bench-msix.svg` under the workspace's target directory (CARGO_TARGET_DIR if set).
fn default_svg_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("bench-msix.svg")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_are_the_seed_shape() {
        let o = Options::parse(&[]).unwrap().unwrap();
        assert_eq!((o.vfs, o.vectors, o.reps), (8, 65, 5));
        assert!(o.json.is_none());
        assert!(o.svg.ends_with("bench-msix.svg"));
    }

    #[test]
    fn parses_every_option_both_spellings() {
        let o = Options::parse(&args(
            "--vfs 2 --vectors=4 --reps 1 --json a.json --svg=b.svg --no-release",
        ))
        .unwrap()
        .unwrap();
        assert!(o.no_release);
        assert_eq!(o.only.len(), 4);
        assert_eq!((o.vfs, o.vectors, o.reps), (2, 4, 1));
        assert_eq!(o.json.as_deref(), Some(std::path::Path::new("a.json")));
        assert_eq!(o.svg, PathBuf::from("b.svg"));
    }

    #[test]
    fn shapes_over_the_route_limit_are_accepted() {
        let o = Options::parse(&args("--vfs 64 --vectors 65 --route-limit 100"))
            .unwrap()
            .unwrap();
        assert_eq!((o.vfs, o.vectors, o.route_limit), (64, 65, Some(100)));
        assert_eq!(Options::parse(&[]).unwrap().unwrap().route_limit, None);
    }

    #[test]
    fn only_selects_strategies() {
        use super::super::model::Strategy;
        let o = Options::parse(&args("--only vm_wide,staged"))
            .unwrap()
            .unwrap();
        assert_eq!(o.only, [Strategy::VmWide, Strategy::Staged]);
        assert!(Options::parse(&args("--only fast")).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Options::parse(&args("--vfs 0")).is_err());
        assert!(Options::parse(&args("--vfs x")).is_err());
        assert!(Options::parse(&args("--vfs")).is_err());
        assert!(Options::parse(&args("--bogus 1")).is_err());
        assert!(Options::parse(&args("--vectors 2049")).is_err());
        assert!(Options::parse(&args("--vfs 80 --vectors 65")).is_err());
        assert!(Options::parse(&args("--route-limit 0")).is_err());
        assert!(Options::parse(&args("--help")).unwrap().is_none());
    }
}
