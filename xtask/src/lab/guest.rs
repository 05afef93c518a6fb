// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Booting the guest in QEMU (TCG, q35, an emulated intel-iommu) with the lab's devices, and
//! reading what its `/init` reports on the second serial port.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::host::vmlinuz;
use super::Lab;

/// The guest's devices: e1000e at 00:03.0 (no ROM, no netdev); an NVMe controller behind a
/// root port with two SR-IOV VFs (flexible queue and interrupt resources so VFs get some); and
/// two multifunction slots of QEMU's pci-testdev for the group rules: 04.0 shares its group
/// with a virtio device the guest's built-in virtio-pci driver binds (never viable), 05.0 and
/// 05.1 share one group both bound to vfio-pci.
const DEVICES: &[&str] = &[
    "-device",
    "e1000e,addr=03.0,romfile=",
    "-device",
    "pcie-root-port,id=rp1,chassis=1,slot=1",
    "-device",
    "nvme-subsys,id=s0",
    "-device",
    "nvme,serial=vf1,subsys=s0,bus=rp1,sriov_max_vfs=2,sriov_vq_flexible=4,sriov_vi_flexible=2",
    "-device",
    "pci-testdev,addr=04.0,multifunction=on",
    "-device",
    "virtio-rng-pci,addr=04.1",
    "-device",
    "pci-testdev,addr=05.0,multifunction=on",
    "-device",
    "pci-testdev,addr=05.1",
];

/// Lines QEMU prints that are expected for this command line.
const EXPECTED_QEMU_WARNINGS: &[&str] = &["has no peer"];

/// What the guest reported.
#[derive(Debug, Default)]
pub struct Report {
    /// `uname -r` and `-v` in the guest.
    pub kernel: Option<String>,
    /// `@@DEVICE` lines: what each PCI function and mdev is bound to.
    pub devices: Vec<String>,
    /// `/dev/vfio` entries.
    pub vfio_nodes: Option<String>,
    /// Per suite: its name, exit status and everything it printed.
    pub suites: Vec<SuiteRun>,
    /// `@@ERROR` lines from `/init`.
    pub errors: Vec<String>,
    /// Whether `/init` got to the end.
    pub finished: bool,
    /// Guest uptime at boot and at the end, in seconds.
    pub uptime: (Option<f64>, Option<f64>),
}

/// One suite's run in the guest.
#[derive(Debug, Default)]
pub struct SuiteRun {
    /// The suite's name.
    pub name: String,
    /// Its exit status (`None`: the guest stopped before it ended).
    pub rc: Option<i32>,
    /// What it printed.
    pub output: String,
}

impl SuiteRun {
    /// Passed and failed test counts from libtest's `test result:` line.
    pub fn counts(&self) -> Option<(u32, u32)> {
        let line = self
            .output
            .lines()
            .rev()
            .find(|l| l.starts_with("test result:"))?;
        let number_before = |word: &str| {
            let words: Vec<&str> = line.split([' ', ';']).filter(|w| !w.is_empty()).collect();
            words
                .windows(2)
                .find(|w| w.get(1) == Some(&word))
                .and_then(|w| w.first()?.parse().ok())
        };
        Some((number_before("passed")?, number_before("failed")?))
    }
}

/// Parse the second serial port's text.
pub fn parse(text: &str) -> Report {
    let mut report = Report::default();
    let mut current: Option<SuiteRun> = None;
    let uptime = |l: &str| {
        l.split("uptime=")
            .nth(1)
            .and_then(|v| v.trim().parse().ok())
    };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("@@SUITE-BEGIN ") {
            report.suites.extend(current.take());
            current = Some(SuiteRun {
                name: rest.trim().to_owned(),
                ..SuiteRun::default()
            });
        } else if let Some(rest) = line.strip_prefix("@@SUITE-END ") {
            if let Some(mut run) = current.take() {
                run.rc = rest.split("rc=").nth(1).and_then(|v| v.trim().parse().ok());
                report.suites.push(run);
            }
        } else if let Some(run) = current.as_mut() {
            run.output.push_str(line);
            run.output.push('\n');
        } else if let Some(rest) = line.strip_prefix("@@KERNEL ") {
            report.kernel = Some(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("@@DEVICE ") {
            report.devices.push(rest.to_owned());
        } else if let Some(rest) = line.strip_prefix("@@VFIO-NODES ") {
            report.vfio_nodes = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("@@ERROR ") {
            report.errors.push(rest.to_owned());
        } else if line.starts_with("@@LAB-BOOT") {
            report.uptime.0 = uptime(line);
        } else if line.starts_with("@@LAB-END") {
            report.uptime.1 = uptime(line);
            report.finished = true;
        }
    }
    report.suites.extend(current);
    report
}

/// Boot the guest, streaming suite progress to stderr, and return what it reported. Fails
/// when QEMU cannot start or the guest does not finish within `timeout`.
pub fn boot(lab: &Lab, initramfs: &Path, timeout: Duration) -> Result<Report, String> {
    let logs = lab.cache().join("logs");
    fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let console = logs.join("console.log");
    let results = logs.join("results.log");
    let _ = fs::remove_file(&results);
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-machine", "q35,kernel-irqchip=split"])
        .args(["-device", "intel-iommu,intremap=on,caching-mode=on"])
        .args(["-m", "1G", "-smp", "2", "-no-reboot", "-nic", "none"])
        .args(["-vga", "none", "-display", "none", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .arg("-kernel")
        .arg(vmlinuz(lab))
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            "console=ttyS0 intel_iommu=on iommu=pt panic=-1 loglevel=6",
        ])
        .args(DEVICES)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("lab: booting the guest (QEMU TCG, q35, intel-iommu)");
    let mut child = qemu
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let started = Instant::now();
    let mut seen = 0usize;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the guest did not finish within {} s (logs in {})",
                timeout.as_secs(),
                logs.display()
            ));
        }
        seen = progress(&results, seen);
        std::thread::sleep(Duration::from_millis(200));
    };
    progress(&results, seen);
    let mut qemu_err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut qemu_err);
    }
    let text = fs::read_to_string(&results).unwrap_or_default();
    if text.is_empty() {
        return Err(format!(
            "QEMU exited ({status}) before the guest reported anything: {}",
            qemu_err.trim()
        ));
    }
    let mut report = parse(&text);
    for line in qemu_err.lines().filter(|l| !l.trim().is_empty()) {
        if !EXPECTED_QEMU_WARNINGS.iter().any(|w| line.contains(w)) {
            report.errors.push(format!("qemu: {line}"));
        }
    }
    Ok(report)
}

/// Print the marker lines of `results` after byte `seen`; returns the new position.
fn progress(results: &Path, seen: usize) -> usize {
    let Ok(text) = fs::read(results) else {
        return seen;
    };
    let Some(new) = text.get(seen..) else {
        return seen;
    };
    // Only whole lines.
    let Some(end) = new.iter().rposition(|&b| b == b'\n') else {
        return seen;
    };
    for line in String::from_utf8_lossy(&new[..=end]).lines() {
        if let Some(rest) = line.strip_prefix("@@SUITE-BEGIN ") {
            eprintln!("lab: running {}", rest.trim());
        } else if line.starts_with("@@LAB-BOOT") {
            eprintln!("lab: guest up ({})", line.trim_start_matches("@@LAB-BOOT "));
        }
    }
    seen + end + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_parse_into_suites_with_counts() {
        let text = "@@LAB-BOOT uptime=2.80\n@@KERNEL 6.12.117+deb12-amd64 #1 SMP\n\
            @@DEVICE 0000:00:03.0 0x8086:0x10d3 driver=vfio-pci group=2\n\
            @@ERROR mdev x\n@@SUITE-BEGIN vfio-core/lab_open\nrunning 3 tests\n\
            test a ... ok\n\ntest result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; \
            0 filtered out; finished in 0.10s\n\n@@SUITE-END vfio-core/lab_open rc=101\n\
            @@SUITE-BEGIN other\nrunning 1 test\n";
        let r = parse(text);
        assert_eq!(r.kernel.as_deref(), Some("6.12.117+deb12-amd64 #1 SMP"));
        assert_eq!(r.devices.len(), 1);
        assert_eq!(r.errors, ["mdev x"]);
        assert_eq!(r.uptime.0, Some(2.8));
        assert!(!r.finished);
        assert_eq!(r.suites.len(), 2);
        assert_eq!(r.suites[0].rc, Some(101));
        assert_eq!(r.suites[0].counts(), Some((2, 1)));
        assert_eq!(r.suites[1].rc, None, "the guest stopped inside it");
        assert_eq!(r.suites[1].counts(), None);
    }
}
