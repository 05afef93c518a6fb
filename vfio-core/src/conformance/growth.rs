// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The seed-000 measurement: enabling every MSI-X vector of a device by growing the index one
//! vector at a time versus one call. The same code runs on the real kernel in the lab
//! (`tests/lab_msix_growth.rs`) and on the simulator on the host (`cargo xtask lab` prints both
//! side by side): the calls and bindings are counted as they are issued, the time is measured
//! around them.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::device::VfioDevice;
use crate::error::{errno, Error, Result};
use crate::info::MSIX_IRQ_INDEX;
use crate::irq_set::IrqSet;

/// How the vectors are enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// One vector more at a time, as a NORESIZE index needs: disable the index, enable it
    /// again with every vector so far (what QEMU did before seed 000's fix).
    Regrow,
    /// Dynamic MSI-X: enable vector 0, then add each further vector with its own call.
    DynamicAdd,
    /// Every vector in one SET_IRQS.
    OneCall,
}

impl Growth {
    /// All three, in the order the table prints them.
    pub const ALL: [Growth; 3] = [Growth::Regrow, Growth::DynamicAdd, Growth::OneCall];

    /// A short name (the lab's JSON and the table).
    pub fn name(self) -> &'static str {
        match self {
            Growth::Regrow => "regrow",
            Growth::DynamicAdd => "dynamic-add",
            Growth::OneCall => "one-call",
        }
    }

    /// The strategy a name stands for.
    pub fn from_name(name: &str) -> Option<Growth> {
        Growth::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// What enabling the vectors cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrowthRun {
    /// `VFIO_DEVICE_SET_IRQS` calls issued.
    pub set_irqs: u64,
    /// Eventfds handed to the kernel in those calls (each one a `request_irq` there).
    pub bindings: u64,
    /// Wall time of the calls.
    pub elapsed: Duration,
}

/// Enable MSI-X vectors `0..fds.len()` of `dev` (index disabled before), bound to `fds`, the
/// way `how` says. The index is left enabled.
pub fn grow(dev: &dyn VfioDevice, fds: &[RawFd], how: Growth) -> Result<GrowthRun> {
    let mut run = GrowthRun {
        set_irqs: 0,
        bindings: 0,
        elapsed: Duration::ZERO,
    };
    let issue = |set: &IrqSet, run: &mut GrowthRun| {
        run.set_irqs += 1;
        if let crate::irq_set::IrqData::Eventfds(v) = &set.data {
            run.bindings += v.iter().filter(|fd| fd.is_some()).count() as u64;
        }
        dev.set_irqs(set)
    };
    let all: Vec<Option<RawFd>> = fds.iter().map(|&fd| Some(fd)).collect();
    if how == Growth::DynamicAdd
        && dev
            .info()
            .irq(MSIX_IRQ_INDEX)
            .is_none_or(|i| i.is_noresize())
    {
        return Err(Error::SetIrqs {
            index: MSIX_IRQ_INDEX,
            source: errno(libc::EINVAL),
        });
    }
    let start = Instant::now();
    match how {
        Growth::Regrow => {
            for n in 1..=all.len() {
                if n > 1 {
                    issue(&IrqSet::disable(MSIX_IRQ_INDEX), &mut run)?;
                }
                let set = IrqSet::eventfds(MSIX_IRQ_INDEX, 0, all.get(..n).unwrap_or(&[]).to_vec());
                issue(&set, &mut run)?;
            }
        }
        Growth::DynamicAdd => {
            for (v, fd) in (0u32..).zip(&all) {
                issue(&IrqSet::eventfds(MSIX_IRQ_INDEX, v, vec![*fd]), &mut run)?;
            }
        }
        Growth::OneCall => {
            issue(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, all.clone()), &mut run)?;
        }
    }
    run.elapsed = start.elapsed();
    Ok(run)
}
