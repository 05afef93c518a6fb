// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Support for the lab's test binaries (feature `lab`): the devices the lab guest's `/init`
//! bound to VFIO, named by the environment it exports, and the sysfs steps that only the
//! lab's tests take (creating SR-IOV VFs).
//!
//! `cargo xtask lab` builds the `lab_*` test targets with this feature and runs them inside
//! the guest; outside the lab the variables are unset and [`LabDevices::from_env`] fails, so a
//! lab test never passes by skipping.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conformance::{Backend, Failure, Kind, Subject};
use crate::error::{Error, Result};
use crate::kernel::{Container, DeviceAddress, Uuid};

/// The lab guest's devices, from the `LAB_*` variables `/init` exports.
#[derive(Debug, Clone)]
pub struct LabDevices {
    /// The e1000e's PCI address.
    pub e1000e: String,
    /// The NVMe PF's PCI address.
    pub nvme_pf: String,
    /// The mtty mdevs' UUIDs.
    pub mtty: Vec<Uuid>,
    /// A pci-testdev bound to vfio-pci whose group also holds a device a host driver has.
    pub unviable: String,
    /// Two pci-testdev functions of one group, both bound to vfio-pci.
    pub shared_group: Vec<String>,
}

impl LabDevices {
    /// Read the devices `/init` exported; an error outside the lab.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::InvalidAddress(format!("{name} is not set: not in the lab")))
        };
        let mtty = var("LAB_MTTY")?
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<Uuid>>>()?;
        Ok(LabDevices {
            e1000e: var("LAB_E1000E")?,
            nvme_pf: var("LAB_NVME_PF")?,
            mtty,
            unviable: var("LAB_UNVIABLE")?,
            shared_group: var("LAB_SHARED_GROUP")?
                .split(',')
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The e1000e's address.
    pub fn e1000e(&self) -> Result<DeviceAddress> {
        DeviceAddress::pci(&self.e1000e)
    }

    /// The NVMe PF's address.
    pub fn nvme_pf(&self) -> Result<DeviceAddress> {
        DeviceAddress::pci(&self.nvme_pf)
    }

    /// The `i`-th mtty mdev.
    pub fn mtty(&self, i: usize) -> Result<DeviceAddress> {
        self.mtty
            .get(i)
            .map(|u| DeviceAddress::mdev(*u))
            .ok_or_else(|| Error::InvalidAddress(format!("the lab has no mtty #{i}")))
    }
}

fn sysfs_pci(bdf: &str) -> PathBuf {
    PathBuf::from("/sys/bus/pci/devices").join(bdf)
}

/// Write `sriov_numvfs` of the PF at `pf` (0 removes its VFs; the kernel then asks every open
/// VF's user to release it through the REQ eventfd and waits until they have).
pub fn set_numvfs(pf: &str, n: u32) -> Result<()> {
    std::fs::write(sysfs_pci(pf).join("sriov_numvfs"), format!("{n}\n")).map_err(|source| {
        Error::OpenDevice {
            device: pf.to_owned(),
            source,
        }
    })
}

/// The PCI address of VF `n` of the PF at `pf`, once it is bound to vfio-pci (the kernel
/// probes it asynchronously after `sriov_numvfs` is written). Waits up to `timeout`.
pub fn vf_address(pf: &str, n: u32, timeout: Duration) -> Result<String> {
    let link = sysfs_pci(pf).join(format!("virtfn{n}"));
    let started = Instant::now();
    loop {
        let bdf = std::fs::read_link(&link)
            .ok()
            .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(str::to_owned));
        if let Some(bdf) = bdf {
            let driver = std::fs::read_link(sysfs_pci(&bdf).join("driver")).ok();
            if driver.is_some_and(|d| d.ends_with("vfio-pci")) {
                return Ok(bdf);
            }
        }
        if started.elapsed() > timeout {
            return Err(Error::NoIommuGroup {
                device: format!("{pf} virtfn{n}"),
                source: std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long the lab waits before asserting that no further interrupt arrives: the kernel
/// signals eventfds from interrupt handlers and workqueues, and the guest runs under TCG.
const LAB_SETTLE: Duration = Duration::from_millis(150);

/// The lab's SR-IOV VF for one scenario: created (`sriov_numvfs=1`) after the PF was opened
/// with a VF token, removed again (`sriov_numvfs=0`) when the scenario's VF fd has closed, so
/// no VF outlives the process (QEMU 7.2 drops VFs when the PF is next opened and reset, which
/// stalls the kernel: LAB.md).
struct VfGuard {
    /// The PF stays open while its VF exists (its VF token lives in the PF's vfio-pci state).
    _pf: crate::kernel::KernelDevice,
    pf_bdf: String,
}

impl Drop for VfGuard {
    fn drop(&mut self) {
        // Nothing to report to: a failure shows in the next scenario's sriov_numvfs=1.
        let _ = set_numvfs(&self.pf_bdf, 0);
    }
}

/// The real lab device `kind`, opened through its group and a new type1 container (the
/// conformance suite's lab backend; see `crate::conformance`). For the NVMe VF the PF is
/// opened, given a VF token, one VF is created and opened with the token; the VF is removed
/// after the subject is dropped.
pub fn kernel_subject(kind: Kind) -> std::result::Result<Subject, Failure> {
    let lab = LabDevices::from_env()?;
    let container = Container::new()?;
    let subject = |dev: crate::kernel::KernelDevice| {
        Subject::new(Arc::new(dev), kind, Backend::Kernel, LAB_SETTLE)
    };
    match kind {
        Kind::E1000e => Ok(subject(container.open_device(&lab.e1000e()?)?)),
        Kind::NvmeVf => {
            let pf = container.open_device(&lab.nvme_pf()?)?;
            let token = Uuid::random()?;
            pf.set_vf_token(token)?;
            set_numvfs(&lab.nvme_pf, 1)?;
            let guard = VfGuard {
                _pf: pf,
                pf_bdf: lab.nvme_pf.clone(),
            };
            let vf = vf_address(&lab.nvme_pf, 0, Duration::from_secs(30))?;
            let dev = container.open_device(&DeviceAddress::pci(&vf)?.with_vf_token(token))?;
            Ok(subject(dev).with_guard(Box::new(guard)))
        }
        // Two mdevs: the migration scenarios' source and destination.
        Kind::Mtty => {
            let peer = container.open_device(&lab.mtty(1)?)?;
            Ok(subject(container.open_device(&lab.mtty(0)?)?).with_peer(Arc::new(peer)))
        }
    }
}
