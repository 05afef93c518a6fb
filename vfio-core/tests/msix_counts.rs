// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What MSI-X setup costs in ioctls and kernel vector bindings (seeds 000 and 001).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;

use common::{eventfds, msix_device, raw};
use vfio_core::sim::MsixMode;
use vfio_core::{MsixTriggers, TriggerUpdate, VfioDevice};

const VECTORS: u16 = 65;

/// Cost of growing a NORESIZE index one vector at a time, 0..n, as a VMM without batching
/// does: the first vector enables the index with one vector; each later vector k disables the
/// index (freeing the k bound vectors) and enables it again with k + 1 vectors (binding all).
fn incremental_growth_cost(n: u64) -> (u64, u64, u64) {
    let (mut calls, mut requests, mut frees) = (0, 0, 0);
    let mut bound = 0;
    for k in 0..n {
        if k > 0 {
            calls += 1; // disable
            frees += bound;
        }
        calls += 1; // enable with k + 1 vectors
        requests += k + 1;
        bound = k + 1;
    }
    (calls, requests, frees)
}

#[test]
fn enabling_65_vectors_is_one_set_irqs_in_both_modes() {
    for mode in [MsixMode::NoResize, MsixMode::Dynamic] {
        let sim = msix_device(VECTORS, mode);
        let dev: &dyn VfioDevice = sim.as_ref();
        let fds = eventfds(VECTORS.into());
        let mut msix = MsixTriggers::for_device(dev).unwrap();
        msix.enable_all(dev, &raw(&fds)).unwrap();
        let c = sim.counters();
        assert_eq!(c.set_irqs, 1, "{mode:?}");
        assert_eq!(c.request_irq, u64::from(VECTORS), "{mode:?}");
        assert_eq!(c.free_irq, 0, "{mode:?}");
        assert_eq!(c.index_enables, 1);
        assert!(c.vector_bindings.iter().all(|&n| n == 1));
    }
}

#[test]
fn incremental_growth_under_noresize_costs_what_the_formula_says() {
    let n = u64::from(VECTORS);
    let (calls, requests, frees) = incremental_growth_cost(n);
    // Closed forms of the same walk: 2n - 1 calls, n(n+1)/2 bindings, n(n-1)/2 releases.
    assert_eq!(calls, 2 * n - 1);
    assert_eq!(requests, n * (n + 1) / 2);
    assert_eq!(frees, n * (n - 1) / 2);

    let sim = msix_device(VECTORS, MsixMode::NoResize);
    let dev: &dyn VfioDevice = sim.as_ref();
    let fds = eventfds(VECTORS.into());
    let mut msix = MsixTriggers::for_device(dev).unwrap();
    for (v, fd) in fds.iter().enumerate() {
        let update = msix
            .set_trigger(dev, v as u32, Some(fd.as_raw_fd()))
            .unwrap();
        let expected = if v == 0 {
            TriggerUpdate::Set
        } else {
            TriggerUpdate::Regrown
        };
        assert_eq!(update, expected, "vector {v}");
    }
    let c = sim.counters();
    assert_eq!(c.set_irqs, calls);
    assert_eq!(c.request_irq, requests);
    assert_eq!(c.free_irq, frees);
    // Vector 0 was bound n times, the last vector once.
    assert_eq!(c.vector_bindings[0], n);
    assert_eq!(c.vector_bindings[usize::from(VECTORS) - 1], 1);
    // Same end state as the batched enable, at (2n - 1)x the calls.
    for (v, fd) in fds.iter().enumerate() {
        assert_eq!(sim.msix_trigger(v as u32), Some(fd.as_raw_fd()));
    }
}

#[test]
fn mask_unmask_cycles_issue_no_redundant_trigger() {
    const CYCLES: u64 = 10_000;
    let sim = msix_device(8, MsixMode::NoResize);
    let dev: &dyn VfioDevice = sim.as_ref();
    let irqfds = eventfds(8);
    let userfd = eventfds(1);
    let mut msix = MsixTriggers::for_device(dev).unwrap();
    msix.enable_all(dev, &raw(&irqfds)).unwrap();
    sim.reset_counters();

    let v = 3u32;
    let (irq, user) = (irqfds[3].as_raw_fd(), userfd[0].as_raw_fd());
    let mut current = irq;
    let mut changes = 0u64;
    for i in 0..CYCLES {
        // A guest masking on every interrupt, sometimes writing the same mask state twice:
        // masked vectors signal the userspace fd (PBA emulation), unmasked ones the irqfd.
        let mut writes = vec![user, irq];
        if i % 3 == 0 {
            writes = vec![user, user, irq, irq];
        }
        for fd in writes {
            if fd != current {
                changes += 1;
                current = fd;
            }
            msix.set_trigger(dev, v, Some(fd)).unwrap();
        }
    }
    let c = sim.counters();
    assert_eq!(changes, 2 * CYCLES);
    assert_eq!(c.set_irqs, changes);
    assert_eq!(c.request_irq, changes);
    assert_eq!(c.free_irq, changes);
    assert_eq!(c.vector_bindings[3], changes);
    assert_eq!(c.vector_bindings[2], 0);

    // A VMM that keeps the irqfd on a masked vector: the cycle costs nothing at all.
    sim.reset_counters();
    for _ in 0..CYCLES {
        msix.set_trigger(dev, v, Some(irq)).unwrap();
        msix.set_trigger(dev, v, Some(irq)).unwrap();
    }
    assert_eq!(sim.counters().set_irqs, 0);
}

#[test]
fn dynamic_mode_sets_sparse_vectors_one_call_each() {
    let sim = msix_device(64, MsixMode::Dynamic);
    let dev: &dyn VfioDevice = sim.as_ref();
    assert!(!dev
        .info()
        .irq(vfio_core::info::MSIX_IRQ_INDEX)
        .unwrap()
        .is_noresize());
    let fds = eventfds(64);
    let mut msix = MsixTriggers::for_device(dev).unwrap();
    // Enable with vector 0 and fd -1: allocates one vector, binds nothing.
    msix.enable_all(dev, &[]).unwrap();
    let c = sim.counters();
    assert_eq!((c.set_irqs, c.request_irq, c.vectors_allocated), (1, 0, 1));

    let sparse = [5u32, 17, 40, 63];
    for &v in &sparse {
        let fd = fds[v as usize].as_raw_fd();
        assert_eq!(
            msix.set_trigger(dev, v, Some(fd)).unwrap(),
            TriggerUpdate::Set
        );
    }
    let c = sim.counters();
    let n = sparse.len() as u64;
    assert_eq!(c.set_irqs, 1 + n);
    assert_eq!(c.request_irq, n);
    assert_eq!(c.free_irq, 0);
    assert_eq!(c.index_enables, 1);
    assert_eq!(c.vectors_allocated, 1 + n);
    assert_eq!(sim.allocated_vectors(), 1 + n as u32);

    // The same sparse vectors under NORESIZE regrow the index each time a vector is past the
    // allocated count.
    let sim = msix_device(64, MsixMode::NoResize);
    let dev: &dyn VfioDevice = sim.as_ref();
    let mut msix = MsixTriggers::for_device(dev).unwrap();
    msix.enable_all(dev, &[]).unwrap();
    for &v in &sparse {
        let fd = fds[v as usize].as_raw_fd();
        assert_eq!(
            msix.set_trigger(dev, v, Some(fd)).unwrap(),
            TriggerUpdate::Regrown
        );
    }
    // 1 enable + 2 per sparse vector; each regrow rebinds the vectors bound so far.
    let c = sim.counters();
    assert_eq!(c.set_irqs, 1 + 2 * n);
    assert_eq!(c.request_irq, n * (n + 1) / 2);
}

#[test]
fn a_failed_call_is_not_cached() {
    let sim = msix_device(4, MsixMode::NoResize);
    let dev: &dyn VfioDevice = sim.as_ref();
    let fds = eventfds(5);
    let mut msix = MsixTriggers::for_device(dev).unwrap();
    msix.enable_all(dev, &raw(&fds[..4])).unwrap();
    sim.fail_nth_set_irqs(1, libc::EIO);
    let err = msix
        .set_trigger(dev, 1, Some(fds[4].as_raw_fd()))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EIO));
    // The injected failure changed nothing on the device.
    assert_eq!(sim.msix_trigger(1), Some(fds[1].as_raw_fd()));
    // After a failure the cache calls through even for the fd it believed was set.
    let before = sim.counters().set_irqs;
    assert_eq!(
        msix.set_trigger(dev, 1, Some(fds[1].as_raw_fd())).unwrap(),
        TriggerUpdate::Set
    );
    assert_eq!(sim.counters().set_irqs, before + 1);
}
