// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Rules of Linux vfio-pci (`drivers/vfio/pci/vfio_pci_intrs.c`) and of the migration v2
//! drivers that the simulated device follows, one test per rule, each naming the kernel code
//! it mirrors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;

use common::{eventfds, msix_device, take_count};
use vfio_core::info::{CONFIG_REGION_INDEX, INTX_IRQ_INDEX, MSIX_IRQ_INDEX, REQ_IRQ_INDEX};
use vfio_core::sim::{ArcFailure, MigrationArc, MsixMode, RaiseOutcome, SimDevice};
use vfio_core::{
    DataChunk, IrqAction, IrqData, IrqSet, MigState, MigrationFeatures as F, VfioDevice,
    VfioMigration,
};

fn intx_device() -> SimDevice {
    SimDevice::builder(0x8086, 0x10d3).build().unwrap()
}

fn intx_unmask_fd(fd: Option<i32>) -> IrqSet {
    IrqSet {
        index: INTX_IRQ_INDEX,
        action: IrqAction::Unmask,
        start: 0,
        count: 1,
        data: IrqData::Eventfds(vec![fd]),
        raw_flags: None,
    }
}

/// `vfio_pci_set_intx_mask`/`_unmask` return EINVAL unless INTx is the enabled type and the
/// request is `start 0, count 1`; MASK with DATA_EVENTFD is ENOTTY ("implement me").
#[test]
fn intx_mask_and_unmask_need_enabled_intx_and_count_one() {
    let sim = intx_device();
    let fds = eventfds(1);
    for masked in [true, false] {
        let err = sim
            .set_irqs(&IrqSet::mask(INTX_IRQ_INDEX, 0, 1, masked))
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL), "INTx off, masked={masked}");
    }
    sim.set_irqs(&IrqSet::eventfds(
        INTX_IRQ_INDEX,
        0,
        vec![Some(fds[0].as_raw_fd())],
    ))
    .unwrap();
    let err = sim
        .set_irqs(&IrqSet::mask(INTX_IRQ_INDEX, 0, 0, true))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert!(!sim.is_intx_masked());
    let mask_fd = IrqSet {
        action: IrqAction::Mask,
        ..intx_unmask_fd(Some(fds[0].as_raw_fd()))
    };
    assert_eq!(
        sim.set_irqs(&mask_fd).unwrap_err().errno(),
        Some(libc::ENOTTY)
    );
    sim.set_irqs(&IrqSet::mask(INTX_IRQ_INDEX, 0, 1, true))
        .unwrap();
    assert!(sim.is_intx_masked());
    // A TRIGGER other than the count-0 disable must also name exactly vector 0.
    let err = sim
        .set_irqs(&IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![]))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    assert_eq!(sim.counters().set_irqs_failed, 5);
}

/// `vfio_pci_set_intx_unmask` with DATA_EVENTFD installs a virqfd: a signal on that eventfd
/// runs `vfio_pci_intx_unmask_handler`, which re-sends the interrupt while the line is still
/// asserted (and stays masked) or unmasks. This is the resample eventfd KVM's level-triggered irqfd writes.
#[test]
fn intx_unmask_eventfd_unmasks_and_redelivers_a_pending_line() {
    let sim = intx_device();
    let fds = eventfds(2);
    let (trigger, unmask) = (&fds[0], &fds[1]);
    sim.set_irqs(&IrqSet::eventfds(
        INTX_IRQ_INDEX,
        0,
        vec![Some(trigger.as_raw_fd())],
    ))
    .unwrap();
    sim.set_irqs(&intx_unmask_fd(Some(unmask.as_raw_fd())))
        .unwrap();

    assert!(matches!(sim.assert_intx(), RaiseOutcome::Signalled(_)));
    assert!(sim.is_intx_masked(), "INTx is automasked when it fires");
    assert_eq!(sim.assert_intx(), RaiseOutcome::Latched);
    assert_eq!(take_count(trigger), 1);

    // EOI: the line is still asserted, so the interrupt is sent again and INTx stays masked.
    unmask.write(1).unwrap();
    assert!(sim.is_intx_masked());
    assert_eq!(take_count(trigger), 1);
    assert_eq!(
        take_count(unmask),
        0,
        "the device consumed the unmask signal"
    );
    // The device deasserts; the next EOI unmasks, and the next assertion is delivered.
    sim.deassert_intx();
    unmask.write(1).unwrap();
    assert!(!sim.is_intx_masked());
    assert!(matches!(sim.assert_intx(), RaiseOutcome::Signalled(_)));
    assert_eq!(take_count(trigger), 1);

    // fd -1 removes the unmask eventfd: signals on it no longer unmask.
    sim.set_irqs(&intx_unmask_fd(None)).unwrap();
    unmask.write(1).unwrap();
    assert!(sim.is_intx_masked());
    assert_eq!(sim.counters().signals, 3);
}

/// Since Linux 6.9 ("vfio/pci: Create persistent INTx handler") `vfio_intx_enable` requests
/// the irq once, even with fd -1, and `vfio_intx_set_signal` only swaps the eventfd; the irq is
/// freed by `vfio_intx_disable`.
#[test]
fn intx_handler_is_requested_once_and_eventfd_changes_are_free() {
    let sim = intx_device();
    let fds = eventfds(2);
    sim.set_irqs(&IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![None]))
        .unwrap();
    assert_eq!(sim.active_irq_index(), Some(INTX_IRQ_INDEX));
    for fd in [&fds[0], &fds[1], &fds[0]] {
        sim.set_irqs(&IrqSet::eventfds(
            INTX_IRQ_INDEX,
            0,
            vec![Some(fd.as_raw_fd())],
        ))
        .unwrap();
    }
    sim.assert_intx();
    assert_eq!((take_count(&fds[0]), take_count(&fds[1])), (1, 0));
    let c = sim.counters();
    assert_eq!((c.request_irq, c.free_irq, c.index_enables), (1, 0, 1));
    sim.set_irqs(&IrqSet::disable(INTX_IRQ_INDEX)).unwrap();
    let c = sim.counters();
    assert_eq!((c.request_irq, c.free_irq, c.index_disables), (1, 1, 1));
    assert_eq!(sim.active_irq_index(), None);
}

/// `vfio_intx_enable` starts INTx masked when the user's COMMAND register has INTx Disable
/// set (`ctx->masked = vdev->virq_disabled`).
#[test]
fn intx_starts_masked_when_command_disables_it() {
    let sim = intx_device();
    let fds = eventfds(1);
    sim.region_write(CONFIG_REGION_INDEX, 4, &(1u16 << 10).to_le_bytes())
        .unwrap();
    sim.set_irqs(&IrqSet::eventfds(
        INTX_IRQ_INDEX,
        0,
        vec![Some(fds[0].as_raw_fd())],
    ))
    .unwrap();
    assert!(sim.is_intx_masked());
    assert_eq!(sim.assert_intx(), RaiseOutcome::Latched);
    assert_eq!(take_count(&fds[0]), 0);
}

/// Enabling MSI-X with DATA_EVENTFD and `start + count == 0` asks `pci_alloc_irq_vectors` for
/// zero vectors, which it refuses (ERANGE); nothing is enabled.
#[test]
fn msix_enable_with_no_vectors_is_refused() {
    let sim = msix_device(4, MsixMode::NoResize);
    let err = sim
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![]))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ERANGE));
    assert_eq!(sim.active_irq_index(), None);
    assert_eq!(sim.counters().index_enables, 0);
}

/// `vfio_pci_set_ctx_trigger_single` (ERR and REQ): DATA_NONE with no eventfd is EINVAL;
/// with one, count 1 signals it and count 0 releases it; fd -1 de-assigns and any other
/// negative fd is EINVAL, the eventfd left in place. No irq is requested for either index.
#[test]
fn req_index_follows_ctx_trigger_single() {
    let sim = msix_device(1, MsixMode::NoResize);
    let fds = eventfds(1);
    let fire = IrqSet::fire(REQ_IRQ_INDEX, 0, 1);
    assert_eq!(sim.set_irqs(&fire).unwrap_err().errno(), Some(libc::EINVAL));
    sim.set_irqs(&IrqSet::eventfds(
        REQ_IRQ_INDEX,
        0,
        vec![Some(fds[0].as_raw_fd())],
    ))
    .unwrap();
    let err = sim
        .set_irqs(&IrqSet::eventfds(REQ_IRQ_INDEX, 0, vec![Some(-2)]))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    sim.set_irqs(&fire).unwrap();
    assert_eq!(take_count(&fds[0]), 1);
    sim.set_irqs(&IrqSet::disable(REQ_IRQ_INDEX)).unwrap();
    assert_eq!(sim.set_irqs(&fire).unwrap_err().errno(), Some(libc::EINVAL));
    let c = sim.counters();
    assert_eq!((c.request_irq, c.free_irq, c.signals), (0, 0, 1));
}

fn mig_device(features: F) -> SimDevice {
    SimDevice::builder(0x15b3, 0x101e)
        .migration(features, b"device state".to_vec())
        .build()
        .unwrap()
}

fn arc(from: MigState, to: MigState, succeeded: bool) -> MigrationArc {
    MigrationArc {
        from,
        to,
        succeeded,
    }
}

/// mlx5/hisi_acc/pds step `vfio_mig_get_next_state` in a loop and stop at the first failing
/// arc with `device_state` at the last state reached; a GET then reports that state.
#[test]
fn an_injected_arc_failure_leaves_the_last_state_reached() {
    use MigState::*;
    let sim = mig_device(F::P2P);
    sim.fail_migration_arc(Stop, StopCopy, libc::EIO, ArcFailure::StaysInSource)
        .unwrap();
    let err = sim.set_migration_state(StopCopy).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EIO));
    assert_eq!(sim.migration_state().unwrap(), Stop);
    assert_eq!(
        sim.migration_arcs(),
        [
            arc(Running, RunningP2p, true),
            arc(RunningP2p, Stop, true),
            arc(Stop, StopCopy, false)
        ]
    );
    // The fault stays until cleared; other arcs still work.
    assert!(sim.set_migration_state(StopCopy).is_err());
    sim.set_migration_state(Running).unwrap();
    sim.clear_faults();
    assert!(sim.set_migration_state(StopCopy).unwrap().is_some());
    assert_eq!(sim.migration_arcs().len(), 3 + 1 + 2 + 3);
}

/// A driver that cannot continue reports ERROR; only VFIO_DEVICE_RESET leaves it (the
/// drivers' `reset_done` puts the device back in RUNNING).
#[test]
fn an_arc_failure_into_error_needs_a_reset() {
    use MigState::*;
    let sim = mig_device(F::STOP_COPY);
    sim.fail_migration_arc(Running, Stop, libc::EIO, ArcFailure::EntersError)
        .unwrap();
    assert!(sim.set_migration_state(Stop).is_err());
    assert_eq!(sim.migration_state().unwrap(), Error);
    sim.clear_faults();
    assert_eq!(
        sim.set_migration_state(Running).unwrap_err().errno(),
        Some(libc::EINVAL)
    );
    sim.reset().unwrap();
    assert_eq!(sim.migration_state().unwrap(), Running);
    assert!(SimDevice::builder(1, 2)
        .build()
        .unwrap()
        .fail_migration_arc(Running, Stop, libc::EIO, ArcFailure::EntersError)
        .is_err());
}

/// A driver has its initial PRE_COPY data ready when the state change returns (mlx5 saves it
/// before handing out the fd), so the first read gets it, not "nothing more for now".
#[test]
fn pre_copy_data_is_readable_as_soon_as_the_fd_is_returned() {
    let sim = mig_device(F::PRE_COPY);
    let mut fd = sim.set_migration_state(MigState::PreCopy).unwrap().unwrap();
    let mut buf = [0u8; 64];
    let want = 4 + b"device state".len();
    assert_eq!(
        fd.read_chunk(MigState::PreCopy, &mut buf).unwrap(),
        DataChunk::Bytes(want)
    );
    assert_eq!(&buf[4..want], b"device state");
    assert_eq!(
        fd.read_chunk(MigState::PreCopy, &mut buf).unwrap(),
        DataChunk::NothingMoreForNow
    );
}
