// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lab: seed 000 on the real kernel. On the NVMe PF's MSI-X (63 vectors, dynamic) and on the
//! e1000e's (5), enable every vector three ways (grow one vector at a time as a NORESIZE
//! index must: disable and re-enable with all so far; add each vector to a dynamic index; all
//! in one call), count the SET_IRQS calls and the eventfds handed over, and time them. Each
//! result is checked (a loopback reaches every vector once) and printed as an `@@LAB-JSON`
//! line, which `cargo xtask lab` prints beside the simulator's counts for the same device.
//! Run with `--nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use vfio_core::conformance::growth::{grow, Growth};
use vfio_core::conformance::Signals;
use vfio_core::info::MSIX_IRQ_INDEX;
use vfio_core::lab::LabDevices;
use vfio_core::{Container, IrqSet, KernelDevice, VfioDevice};

/// Repetitions per strategy (times are reported as the median).
const REPS: usize = 5;

fn measure(name: &str, dev: &KernelDevice) {
    let msix = dev.info().irq(MSIX_IRQ_INDEX).unwrap();
    let n = msix.count as usize;
    let bar0 = dev.info().region(0).map_or(0, |r| r.size);
    for how in Growth::ALL {
        let mut times = Vec::new();
        let mut counts = None;
        for rep in 0..REPS {
            let sig = Signals::many(n).unwrap();
            let fds: Vec<i32> = sig.iter().map(Signals::raw).collect();
            let run = grow(dev, &fds, how).unwrap();
            // The vectors are really enabled and bound: a loopback reaches each once.
            dev.set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, n as u32))
                .unwrap();
            for (v, s) in sig.iter().enumerate() {
                let got = s.wait_for(1, Duration::from_secs(2)).unwrap();
                assert_eq!(got, 1, "{name} {} rep {rep} vector {v}", how.name());
            }
            dev.set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX)).unwrap();
            let c = (run.set_irqs, run.bindings);
            assert!(counts.is_none_or(|p| p == c), "counts differ between reps");
            counts = Some(c);
            times.push(run.elapsed.as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let (calls, bindings) = counts.unwrap();
        println!(
            "\n@@LAB-JSON {{\"device\":\"{name}\",\"vectors\":{n},\"noresize\":{},\"bar0\":{bar0},\
             \"strategy\":\"{}\",\"set_irqs\":{calls},\"bindings\":{bindings},\"reps\":{REPS},\
             \"median_ms\":{:.3},\"min_ms\":{:.3},\"max_ms\":{:.3}}}",
            msix.is_noresize(),
            how.name(),
            times[REPS / 2],
            times[0],
            times[REPS - 1],
        );
    }
}

#[test]
fn msix_growth_on_the_nvme_pf_and_the_e1000e() {
    let lab = LabDevices::from_env().unwrap();
    let container = Container::new().unwrap();
    // The PF first and alone (no VF exists: the conformance suite removes its VFs).
    let pf = container.open_device(&lab.nvme_pf().unwrap()).unwrap();
    assert_eq!(pf.info().irq(MSIX_IRQ_INDEX).map(|i| i.count), Some(63));
    measure("nvme-pf", &pf);
    drop(pf);
    let e1000e = container.open_device(&lab.e1000e().unwrap()).unwrap();
    measure("e1000e", &e1000e);
}
