// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The seed-000 axis: how many `VFIO_DEVICE_SET_IRQS` calls and vector bindings (a
//! `free_irq` + `request_irq` pair each in the kernel) enabling M MSI-X vectors costs one device,
//! growing the vector count one vector at a time versus setting every vector in one call,
//! under `VFIO_IRQ_INFO_NORESIZE` and with dynamic MSI-X. Counted by vfio-core's simulated
//! device, through vfio-core's trigger cache, the code vmm-glue enables vectors with.

use std::os::fd::AsRawFd;

use vfio_core::sim::{MsixMode, MsixPlacement, SimDevice};
use vfio_core::MsixTriggers;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::model::GrowthRow;

fn device(vectors: u16, mode: MsixMode) -> Result<SimDevice, String> {
    SimDevice::builder(0x8086, 0x154c)
        .bar(3, pci_config::BarKind::Mem64, 0x4000, false)
        .msix(MsixPlacement::in_bar(vectors, 3))
        .msix_mode(mode)
        .build()
        .map_err(|e| format!("simulated VF: {e}"))
}

fn row(vectors: u16, mode: MsixMode, one_call: bool) -> Result<GrowthRow, String> {
    let dev = device(vectors, mode)?;
    let fds = (0..vectors)
        .map(|_| EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let raw: Vec<Option<i32>> = fds.iter().map(|f| Some(f.as_raw_fd())).collect();
    let mut cache =
        MsixTriggers::for_device(&dev).ok_or("the simulated VF reports no MSI-X index")?;
    dev.reset_counters();
    if one_call {
        cache
            .enable_all(&dev, &raw)
            .map_err(|e| format!("enable_all: {e}"))?;
    } else {
        for (v, fd) in (0u32..).zip(&raw) {
            cache
                .set_trigger(&dev, v, *fd)
                .map_err(|e| format!("set_trigger {v}: {e}"))?;
        }
    }
    let c = dev.counters();
    let how = match (one_call, mode) {
        (false, MsixMode::NoResize) => "one vector at a time, NORESIZE (before seed 000)",
        (true, MsixMode::NoResize) => "all vectors in one call, NORESIZE (vmm-glue)",
        (false, MsixMode::Dynamic) => "one vector at a time, dynamic MSI-X",
        (true, MsixMode::Dynamic) => "all vectors in one call, dynamic MSI-X (vmm-glue)",
    };
    Ok(GrowthRow {
        label: how.to_string(),
        set_irqs_calls: c.set_irqs,
        vector_bindings: c.request_irq,
    })
}

/// The four rows for a device with `vectors` vectors.
pub fn rows(vectors: u32) -> Result<Vec<GrowthRow>, String> {
    let vectors = u16::try_from(vectors).map_err(|_| format!("{vectors} vectors"))?;
    let mut out = Vec::new();
    for mode in [MsixMode::NoResize, MsixMode::Dynamic] {
        for one_call in [false, true] {
            out.push(row(vectors, mode, one_call)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_call_binds_each_vector_once_and_growth_rebinds() {
        let r = rows(8).unwrap();
        // NORESIZE growth: every regrow disables and re-enables all vectors so far:
        // 1 + (2 calls for each of the 7 regrows) calls, 1 + 2 + ... + 8 bindings.
        assert_eq!((r[0].set_irqs_calls, r[0].vector_bindings), (1 + 2 * 7, 36));
        // One call: one SET_IRQS, one binding per vector.
        assert_eq!((r[1].set_irqs_calls, r[1].vector_bindings), (1, 8));
        // Dynamic MSI-X: one call per vector, each vector bound once.
        assert_eq!(r[2].vector_bindings, 8);
        assert!(r[2].set_irqs_calls >= 8);
        assert_eq!((r[3].set_irqs_calls, r[3].vector_bindings), (1, 8));
    }
}
