// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The seed-000 table of the lab: what `vfio-core/lab_msix_growth` counted and measured on the
//! real kernel (its `@@LAB-JSON` lines), beside the simulator's counts for the same device
//! profile and strategy, computed here on the host with the same code
//! (`vfio_core::conformance::growth`).

use std::os::fd::AsRawFd;

use vfio_core::conformance::growth::{grow, Growth};
use vfio_core::conformance::{e1000e_profile, nvme_pf_profile};
use vfio_core::sim::SimDevice;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::guest::Report;

/// One `@@LAB-JSON` line.
#[derive(Debug, Clone, PartialEq)]
pub struct LabRow {
    device: String,
    vectors: u32,
    strategy: String,
    set_irqs: u64,
    bindings: u64,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

/// The number after `"key":` in a one-line JSON object.
pub(super) fn number(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line.get(at..)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    rest.get(..end)?.parse().ok()
}

fn parse_row(line: &str) -> Option<LabRow> {
    let json = line.strip_prefix("@@LAB-JSON ")?;
    Some(LabRow {
        device: super::json_string(json, "device")?,
        vectors: number(json, "vectors")? as u32,
        strategy: super::json_string(json, "strategy")?,
        set_irqs: number(json, "set_irqs")? as u64,
        bindings: number(json, "bindings")? as u64,
        median_ms: number(json, "median_ms")?,
        min_ms: number(json, "min_ms")?,
        max_ms: number(json, "max_ms")?,
    })
}

/// Every `@@LAB-JSON` row the suites printed.
pub fn rows(report: &Report) -> Vec<LabRow> {
    report
        .suites
        .iter()
        .flat_map(|s| s.output.lines())
        .filter_map(parse_row)
        .collect()
}

/// The simulator's SET_IRQS calls and `request_irq`s for `strategy` on `device`'s profile.
fn sim_counts(device: &str, strategy: Growth) -> Result<(u64, u64), String> {
    let sim: SimDevice = match device {
        "nvme-pf" => nvme_pf_profile(),
        "e1000e" => e1000e_profile(),
        other => return Err(format!("no simulator profile for {other}")),
    }
    .map_err(|e| e.to_string())?;
    let n = vfio_core::VfioDevice::info(&sim)
        .irq(vfio_core::info::MSIX_IRQ_INDEX)
        .map_or(0, |i| i.count);
    let fds = (0..n)
        .map(|_| EventFd::new(EFD_NONBLOCK).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let raw: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    grow(&sim, &raw, strategy).map_err(|e| e.to_string())?;
    let c = sim.counters();
    Ok((c.set_irqs, c.request_irq))
}

/// Print the table; an error when the lab printed no rows or the simulator cannot run one.
pub fn print(rows: &[LabRow]) -> Result<(), String> {
    if rows.is_empty() {
        return Err("vfio-core/lab_msix_growth printed no @@LAB-JSON rows".into());
    }
    println!("lab: seed 000, MSI-X enabled to every vector: real kernel (lab, TCG guest) beside the simulator (host)");
    println!(
        "{:<8} {:>4}  {:<12} {:>9} {:>9} {:>22}  {:>9} {:>11}",
        "device",
        "vecs",
        "strategy",
        "SET_IRQS",
        "eventfds",
        "ms median [min, max]",
        "sim calls",
        "sim binds"
    );
    let mut differ = Vec::new();
    for r in rows {
        let how = Growth::from_name(&r.strategy)
            .ok_or_else(|| format!("unknown strategy {}", r.strategy))?;
        let (calls, binds) = sim_counts(&r.device, how)?;
        if (calls, binds) != (r.set_irqs, r.bindings) {
            differ.push(format!("{} {}", r.device, r.strategy));
        }
        println!(
            "{:<8} {:>4}  {:<12} {:>9} {:>9} {:>8.2} [{:.2}, {:.2}]  {:>9} {:>11}",
            r.device,
            r.vectors,
            r.strategy,
            r.set_irqs,
            r.bindings,
            r.median_ms,
            r.min_ms,
            r.max_ms,
            calls,
            binds
        );
    }
    println!("lab: times under TCG are not hardware times: compare strategies within one run");
    if differ.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the simulator's counts differ from the kernel's for {}",
            differ.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_json_rows_parse_and_the_simulator_counts_the_same_strategies() {
        let line = "@@LAB-JSON {\"device\":\"e1000e\",\"vectors\":5,\"noresize\":false,\
                    \"bar0\":131072,\"strategy\":\"regrow\",\"set_irqs\":9,\"bindings\":15,\
                    \"reps\":5,\"median_ms\":1.250,\"min_ms\":1.000,\"max_ms\":2.500}";
        let r = parse_row(line).unwrap();
        assert_eq!((r.vectors, r.set_irqs, r.bindings), (5, 9, 15));
        assert_eq!((r.median_ms, r.max_ms), (1.25, 2.5));
        assert_eq!(parse_row("@@LAB-JSON {\"device\":\"x\"}"), None);
        // The simulator, counting what it was asked: regrow is 1 + 2 x 4 calls binding
        // 1 + 2 + .. + 5 vectors; dynamic add one call per vector; one call, one.
        assert_eq!(sim_counts("e1000e", Growth::Regrow).unwrap(), (9, 15));
        assert_eq!(sim_counts("e1000e", Growth::DynamicAdd).unwrap(), (5, 5));
        assert_eq!(sim_counts("e1000e", Growth::OneCall).unwrap(), (1, 5));
        assert_eq!(sim_counts("nvme-pf", Growth::OneCall).unwrap(), (1, 63));
    }
}
