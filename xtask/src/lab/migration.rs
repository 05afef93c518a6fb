// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The live-migration table of the lab: what `vmm-glue/lab_migration` measured on the lab's
//! mtty mdevs (its `@@LAB-JSON` lines with `"table":"migration"`): the stop-copy size
//! estimate (`VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` at the switchover) against the bytes read,
//! and the time from STOP to RUNNING on the destination.

use super::guest::Report;
use super::seed000::number;

/// One scenario's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    scenario: String,
    devices: u64,
    estimate: u64,
    precopy: u64,
    stop_copy: u64,
    stream: u64,
    rounds: u64,
    reps: u64,
    /// Median, min and max of the switchover (source) in µs.
    switchover_us: [u64; 3],
    /// Median, min and max of STOP to RUNNING (destination) in µs.
    stop_to_running_us: [u64; 3],
}

/// A row from a line holding `@@LAB-JSON {...}` (libtest may have printed
/// `test NAME ... ` before it on the same line).
fn parse_row(line: &str) -> Option<Row> {
    let (_, json) = line.split_once("@@LAB-JSON ")?;
    if super::json_string(json, "table")? != "migration" {
        return None;
    }
    let n = |key: &str| number(json, key).map(|v| v as u64);
    Some(Row {
        scenario: super::json_string(json, "scenario")?,
        devices: n("devices")?,
        estimate: n("estimate")?,
        precopy: n("precopy")?,
        stop_copy: n("stop_copy")?,
        stream: n("stream")?,
        rounds: n("rounds")?,
        reps: n("reps")?,
        switchover_us: [
            n("switchover_us")?,
            n("switchover_min_us")?,
            n("switchover_max_us")?,
        ],
        stop_to_running_us: [
            n("stop_to_running_us")?,
            n("stop_to_running_min_us")?,
            n("stop_to_running_max_us")?,
        ],
    })
}

/// Every migration row the suites printed.
pub fn rows(report: &Report) -> Vec<Row> {
    report
        .suites
        .iter()
        .flat_map(|s| s.output.lines())
        .filter_map(parse_row)
        .collect()
}

/// `median [min, max]` in ms.
fn ms(us: [u64; 3]) -> String {
    let m = |v: u64| v as f64 / 1000.0;
    format!("{:.3} [{:.3}, {:.3}]", m(us[0]), m(us[1]), m(us[2]))
}

/// Print the table; an error when the suite printed no rows.
pub fn print(rows: &[Row]) -> Result<(), String> {
    if rows.is_empty() {
        return Err("vmm-glue/lab_migration printed no migration @@LAB-JSON rows".into());
    }
    println!("lab: live migration of mtty mdevs through vmm_glue::live_migration (as measured)");
    println!(
        "{:<40} {:>4} {:>8} {:>7} {:>9} {:>5} {:>6} {:>6} {:>4}  {:<25} {:<25}",
        "scenario",
        "devs",
        "estimate",
        "precopy",
        "stop-copy",
        "total",
        "stream",
        "rounds",
        "reps",
        "switchover ms",
        "STOP->RUNNING ms"
    );
    for r in rows {
        println!(
            "{:<40} {:>4} {:>8} {:>7} {:>9} {:>5} {:>6} {:>6} {:>4}  {:<25} {:<25}",
            r.scenario,
            r.devices,
            r.estimate,
            r.precopy,
            r.stop_copy,
            r.precopy + r.stop_copy,
            r.stream,
            r.rounds,
            r.reps,
            ms(r.switchover_us),
            ms(r.stop_to_running_us)
        );
    }
    println!(
        "lab: estimate = MIG_DATA_SIZE at the switchover, in bytes; stop-copy = bytes read in \
         STOP_COPY; total = pre-copy + stop-copy; STOP->RUNNING = destination, first device out \
         of RESUMING to the last in RUNNING; times are median [min, max] over the reps. Times \
         under TCG are not hardware times: compare within one run"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_rows_parse_and_others_do_not() {
        let line = "@@LAB-JSON {\"table\":\"migration\",\"scenario\":\"2 mttys, threads\",\
                    \"devices\":2,\"estimate\":192,\"precopy\":48,\"stop_copy\":144,\
                    \"stream\":1234,\"rounds\":1,\"reps\":5,\"switchover_us\":5300,\
                    \"switchover_min_us\":5000,\"switchover_max_us\":9000,\
                    \"stop_to_running_us\":870,\"stop_to_running_min_us\":800,\
                    \"stop_to_running_max_us\":1200}";
        let r = parse_row(line).unwrap();
        assert_eq!(r.scenario, "2 mttys, threads");
        assert_eq!(
            (r.devices, r.estimate, r.precopy, r.stop_copy, r.stream),
            (2, 192, 48, 144, 1234)
        );
        assert_eq!(r.switchover_us, [5300, 5000, 9000]);
        assert_eq!(r.stop_to_running_us, [870, 800, 1200]);
        assert_eq!(ms(r.stop_to_running_us), "0.870 [0.800, 1.200]");
        let prefixed = format!("test two_mttys ... {line}");
        assert_eq!(parse_row(&prefixed), Some(r.clone()));
        assert_eq!(
            parse_row("@@LAB-JSON {\"device\":\"e1000e\",\"vectors\":5}"),
            None
        );
        assert_eq!(parse_row("@@LAB-JSON {\"table\":\"migration\"}"), None);
        assert!(print(&[]).is_err());
        assert!(print(&[r]).is_ok());
    }
}
