// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The simulated device against Linux vfio-pci's SET_IRQS and region semantics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::fd::AsRawFd;
use std::sync::Arc;

use common::{eventfds, msix_device, raw, take_count};
use vfio_bindings::bindings::vfio as b;
use vfio_core::info::{CONFIG_REGION_INDEX, MSIX_IRQ_INDEX, MSI_IRQ_INDEX};
use vfio_core::sim::{MsixMode, RaiseOutcome, SimDevice};
use vfio_core::{IrqAction, IrqData, IrqSet, VfioDevice};

#[test]
fn a_raised_vector_arrives_on_exactly_its_eventfd() {
    let sim = msix_device(16, MsixMode::NoResize);
    let fds = eventfds(16);
    sim.set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, raw(&fds)))
        .unwrap();
    for v in [0u32, 5, 15, 5] {
        assert_eq!(
            sim.raise(v),
            RaiseOutcome::Signalled(fds[v as usize].as_raw_fd())
        );
        let counts: Vec<u64> = fds.iter().map(take_count).collect();
        for (i, n) in counts.iter().enumerate() {
            assert_eq!(*n, u64::from(i == v as usize), "raise {v}: eventfd {i}");
        }
    }
    assert_eq!(sim.counters().signals, 4);
}

#[test]
fn a_raise_with_nothing_bound_latches_until_a_trigger_is_bound() {
    let sim = msix_device(4, MsixMode::NoResize);
    let fds = eventfds(4);
    // Vector 2 de-assigned (fd -1) at enable.
    sim.set_irqs(&IrqSet::eventfds(
        MSIX_IRQ_INDEX,
        0,
        vec![
            Some(fds[0].as_raw_fd()),
            Some(fds[1].as_raw_fd()),
            None,
            None,
        ],
    ))
    .unwrap();
    assert_eq!(sim.raise(2), RaiseOutcome::Latched);
    assert!(sim.is_pending(2));
    // The PBA in BAR 2 shows bit 2.
    let pba_offset = vfio_core::sim::MsixPlacement::in_bar(4, 2).pba_offset;
    let mut pba = [0u8; 8];
    sim.region_read(2, u64::from(pba_offset), &mut pba).unwrap();
    assert_eq!(pba[0], 0b100);
    assert!(fds.iter().all(|f| take_count(f) == 0));
    sim.set_irqs(&IrqSet::eventfds(
        MSIX_IRQ_INDEX,
        2,
        vec![Some(fds[2].as_raw_fd())],
    ))
    .unwrap();
    assert_eq!(take_count(&fds[2]), 1);
    assert!(!sim.is_pending(2));
    assert_eq!(sim.raise(9), RaiseOutcome::NoSuchVector);
}

/// What a malformed request must leave alone.
fn snapshot(sim: &SimDevice, n: u32) -> (Vec<Option<i32>>, u64, u64, Option<u32>, u32) {
    let c = sim.counters();
    (
        (0..n).map(|v| sim.msix_trigger(v)).collect(),
        c.request_irq,
        c.free_irq,
        sim.active_irq_index(),
        sim.allocated_vectors(),
    )
}

#[test]
fn malformed_set_irqs_is_einval_and_changes_nothing() {
    let sim = msix_device(8, MsixMode::NoResize);
    let fds = eventfds(9);
    sim.set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, raw(&fds[..4])))
        .unwrap();
    let before = snapshot(&sim, 8);
    let extra = Some(fds[8].as_raw_fd());
    let malformed = [
        // count past the vector count
        IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![extra; 9]),
        // start + count past the vector count
        IrqSet::eventfds(MSIX_IRQ_INDEX, 6, vec![extra; 3]),
        // start at the vector count, even with count 0
        IrqSet {
            start: 8,
            ..IrqSet::disable(MSIX_IRQ_INDEX)
        },
        // two DATA flags
        IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![extra]).with_raw_flags(
            b::VFIO_IRQ_SET_DATA_EVENTFD
                | b::VFIO_IRQ_SET_DATA_BOOL
                | b::VFIO_IRQ_SET_ACTION_TRIGGER,
        ),
        // no DATA flag
        IrqSet::disable(MSIX_IRQ_INDEX).with_raw_flags(b::VFIO_IRQ_SET_ACTION_TRIGGER),
        // an unknown flag bit
        IrqSet::disable(MSIX_IRQ_INDEX)
            .with_raw_flags(b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_ACTION_TRIGGER | 0x100),
        // unknown index
        IrqSet::eventfds(9, 0, vec![extra]),
        // payload shorter than count
        IrqSet {
            count: 3,
            ..IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![extra])
        },
    ];
    for (i, set) in malformed.iter().enumerate() {
        let err = sim.set_irqs(set).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL), "case {i}: {set:?}");
        assert_eq!(snapshot(&sim, 8), before, "case {i} changed device state");
    }
    let c = sim.counters();
    assert_eq!(c.set_irqs, 1 + malformed.len() as u64);
    assert_eq!(c.set_irqs_failed, malformed.len() as u64);
}

#[test]
fn msix_mask_is_enotty_and_other_types_are_einval_while_msix_is_on() {
    let sim = msix_device(4, MsixMode::NoResize);
    let fds = eventfds(4);
    sim.set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, raw(&fds)))
        .unwrap();
    let mask = IrqSet::mask(MSIX_IRQ_INDEX, 0, 1, true);
    assert_eq!(sim.set_irqs(&mask).unwrap_err().errno(), Some(libc::ENOTTY));
    let two_actions = IrqSet::fire(MSIX_IRQ_INDEX, 0, 1).with_raw_flags(
        b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_ACTION_MASK | b::VFIO_IRQ_SET_ACTION_TRIGGER,
    );
    assert_eq!(
        sim.set_irqs(&two_actions).unwrap_err().errno(),
        Some(libc::ENOTTY)
    );
    // INTx cannot be enabled while MSI-X is.
    let intx = IrqSet::eventfds(0, 0, vec![Some(fds[0].as_raw_fd())]);
    assert_eq!(sim.set_irqs(&intx).unwrap_err().errno(), Some(libc::EINVAL));
    assert_eq!(sim.active_irq_index(), Some(MSIX_IRQ_INDEX));
    // The device has no MSI capability: count 0 vectors, so any MSI request is EINVAL.
    let msi = IrqSet::eventfds(MSI_IRQ_INDEX, 0, vec![None]);
    assert_eq!(sim.set_irqs(&msi).unwrap_err().errno(), Some(libc::EINVAL));
}

#[test]
fn userspace_fire_and_disable() {
    let sim = msix_device(4, MsixMode::NoResize);
    let fds = eventfds(4);
    sim.set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, raw(&fds)))
        .unwrap();
    sim.set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 1, 2)).unwrap();
    sim.set_irqs(&IrqSet {
        index: MSIX_IRQ_INDEX,
        action: IrqAction::Trigger,
        start: 0,
        count: 4,
        data: IrqData::Bool(vec![false, false, false, true]),
        raw_flags: None,
    })
    .unwrap();
    let counts: Vec<u64> = fds.iter().map(take_count).collect();
    assert_eq!(counts, [0, 1, 1, 1]);
    sim.set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX)).unwrap();
    let c = sim.counters();
    assert_eq!((c.request_irq, c.free_irq, c.index_disables), (4, 4, 1));
    assert_eq!(sim.active_irq_index(), None);
    // Firing a disabled index is EINVAL.
    assert_eq!(
        sim.set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, 1))
            .unwrap_err()
            .errno(),
        Some(libc::EINVAL)
    );
}

#[test]
fn a_failing_request_irq_undoes_the_block_and_the_enable() {
    let sim = msix_device(8, MsixMode::NoResize);
    let fds = eventfds(8);
    sim.fail_request_irq(5, libc::ENOSPC);
    let err = sim
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, raw(&fds)))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOSPC));
    let c = sim.counters();
    // Vectors 0..5 were bound, then released by the unwind; the enable was undone.
    assert_eq!((c.request_irq, c.free_irq), (5, 5));
    assert_eq!(sim.active_irq_index(), None);
    sim.clear_faults();
    sim.set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, raw(&fds)))
        .unwrap();
    assert_eq!(sim.msix_trigger(7), Some(fds[7].as_raw_fd()));
}

#[test]
fn a_non_eventfd_trigger_is_rejected() {
    let sim = msix_device(2, MsixMode::NoResize);
    let file = std::fs::File::open("/dev/null").unwrap();
    let err = sim
        .set_irqs(&IrqSet::eventfds(
            MSIX_IRQ_INDEX,
            0,
            vec![Some(file.as_raw_fd())],
        ))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    // Sockets are not eventfds either.
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let dgram = std::os::unix::net::UnixDatagram::unbound().unwrap();
    for fd in [sock.as_raw_fd(), dgram.as_raw_fd()] {
        let err = sim
            .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![Some(fd)]))
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EINVAL));
    }
    assert_eq!(sim.msix_trigger(0), None);
    let err = sim
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![Some(100_000)]))
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EBADF));
}

#[test]
fn the_device_keeps_its_own_reference_to_a_trigger() {
    let sim = msix_device(2, MsixMode::NoResize);
    let fds = eventfds(1);
    let reader = fds[0].try_clone().unwrap();
    sim.set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, raw(&fds)))
        .unwrap();
    drop(fds);
    assert!(matches!(sim.raise(0), RaiseOutcome::Signalled(_)));
    assert_eq!(take_count(&reader), 1);
}

#[test]
fn shared_through_arc_dyn() {
    let sim = msix_device(4, MsixMode::NoResize);
    let shared: Arc<dyn VfioDevice> = sim.clone();
    let handler = {
        let d = shared.clone();
        std::thread::spawn(move || {
            let mut id = [0u8; 2];
            d.region_read(CONFIG_REGION_INDEX, 0, &mut id).unwrap();
            u16::from_le_bytes(id)
        })
    };
    assert_eq!(handler.join().unwrap(), 0x8086);
    assert_eq!(sim.counters().region_reads, 1);
}

#[test]
fn regions_report_mmap_msix_and_bounds() {
    let sim = msix_device(4, MsixMode::NoResize);
    let info = sim.info();
    let bar2 = info.region(2).unwrap();
    assert!(bar2.is_mmappable() && bar2.msix_mappable && bar2.sparse_mmap.is_none());
    assert!(info.region(3).is_none(), "upper half of a 64-bit BAR");
    assert!(!info.region(CONFIG_REGION_INDEX).unwrap().is_mmappable());
    let mut buf = [0u8; 8];
    let err = sim.region_read(0, 0x1000 - 4, &mut buf).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    let err = sim.region_write(4, 0, &buf).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL));
    // BAR sizing through the config region.
    sim.region_write(CONFIG_REGION_INDEX, 0x10, &[0xff; 4])
        .unwrap();
    sim.region_read(CONFIG_REGION_INDEX, 0x10, &mut buf[..4])
        .unwrap();
    assert_eq!(
        u32::from_le_bytes(buf[..4].try_into().unwrap()),
        0xffff_f000
    );
}

#[test]
fn older_kernels_report_sparse_areas_around_the_msix_pages() {
    let sim = SimDevice::builder(0x8086, 0x1521)
        .bar(0, pci_config::BarKind::Mem32, 0x4000, false)
        .msix(vfio_core::sim::MsixPlacement {
            vectors: 16,
            table_bar: 0,
            table_offset: 0x2000,
            pba_bar: 0,
            pba_offset: 0x3800,
        })
        .msix_mappable(false)
        .build()
        .unwrap();
    let bar0 = sim.info().region(0).unwrap();
    assert!(!bar0.msix_mappable);
    let areas = bar0.sparse_mmap.as_ref().unwrap();
    assert_eq!(areas.len(), 1);
    assert_eq!((areas[0].offset, areas[0].size), (0, 0x2000));
}

#[test]
fn sub_page_bars_are_mmappable_only_when_allowed() {
    let build = |allowed| {
        SimDevice::builder(1, 2)
            .bar(0, pci_config::BarKind::Mem32, 0x100, false)
            .sub_page_mmap(allowed)
            .build()
            .unwrap()
    };
    assert!(!build(false).info().region(0).unwrap().is_mmappable());
    assert!(build(true).info().region(0).unwrap().is_mmappable());
}

/// The BARs' bytes live in the memory file the device hands out as its fd, each region at its
/// vfio-pci offset: what region_write stores, pread on the fd reads, and the other way round;
/// reset zeroes them.
#[test]
fn bar_bytes_are_in_the_device_fd_at_the_region_offset() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    let sim = SimDevice::builder(0x1af4, 0x1041)
        .bar(0, pci_config::BarKind::Mem32, 0x1000, false)
        .bar(2, pci_config::BarKind::Mem64, 0x4000, false)
        .build()
        .unwrap();
    let file = std::fs::File::from(sim.as_fd().try_clone_to_owned().unwrap());
    let bar2 = sim.info().region(2).unwrap().offset;
    assert_eq!(bar2, 2 << 40);
    sim.region_write(2, 0x3ffc, &[1, 2, 3, 4]).unwrap();
    let mut got = [0u8; 4];
    file.read_exact_at(&mut got, bar2 + 0x3ffc).unwrap();
    assert_eq!(got, [1, 2, 3, 4]);
    file.write_all_at(&[9, 8], 0x10).unwrap();
    let mut bar0 = [0u8; 2];
    sim.region_read(0, 0x10, &mut bar0).unwrap();
    assert_eq!(bar0, [9, 8]);
    // Sparse: the file ends with the last BAR, and the untouched bytes read as zero.
    assert_eq!(file.metadata().unwrap().len(), bar2 + 0x4000);
    sim.region_read(2, 0, &mut got).unwrap();
    assert_eq!(got, [0; 4]);
    sim.reset().unwrap();
    file.read_exact_at(&mut got, bar2 + 0x3ffc).unwrap();
    assert_eq!(got, [0; 4]);
    sim.region_read(0, 0x10, &mut bar0).unwrap();
    assert_eq!(bar0, [0, 0]);
}
