// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Scenarios on QEMU's e1000e bound to vfio-pci.

use super::{counts, fds, Outcome, Signals, Subject};
use crate::info::MSIX_IRQ_INDEX;
use crate::irq_set::{IrqData, IrqSet};

/// MSI-X vectors of the e1000e.
const VECTORS: usize = 5;

/// Every MSI-X vector enabled with one SET_IRQS; loopback triggers (DATA_NONE and DATA_BOOL)
/// signal exactly the vectors they name; a vector de-assigned with fd -1 stays silent; the
/// index disables once, and a second disable is EINVAL (Linux v6.12.117
/// drivers/vfio/pci/vfio_pci_intrs.c, vfio_pci_set_msi_trigger()).
pub fn msix_all_vectors_in_one_call_and_loopback(s: &Subject) -> Outcome {
    let sig = Signals::many(VECTORS)?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, fds(&sig)))?;
    s.wait_settle();
    ensure_eq!(counts(&sig)?, vec![0; VECTORS], "nothing fires at enable");
    s.dev()
        .set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, VECTORS as u32))?;
    for (v, x) in sig.iter().enumerate() {
        ensure_eq!(x.wait_for(1, s.deadline())?, 1, "vector {v}");
    }
    let mut bools = IrqSet::fire(MSIX_IRQ_INDEX, 0, VECTORS as u32);
    bools.data = IrqData::Bool(vec![true, false, true, false, true]);
    s.dev().set_irqs(&bools)?;
    for v in [0, 2, 4] {
        ensure_eq!(sig[v].wait_for(2, s.deadline())?, 2, "vector {v}");
    }
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 2, vec![None]))?;
    s.dev()
        .set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, VECTORS as u32))?;
    ensure_eq!(sig[4].wait_for(3, s.deadline())?, 3);
    s.wait_settle();
    ensure_eq!(counts(&sig)?, vec![3, 2, 2, 2, 3]);
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    super::expect_errno(
        s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX)),
        libc::EINVAL,
    )
}
