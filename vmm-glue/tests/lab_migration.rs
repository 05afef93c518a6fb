// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lab: live migration of the kernel's mtty mdevs (Linux 6.12's migration v2 with PRE_COPY and
//! P2P) through `vmm_glue::live_migration`, and dirty tracking with a real NVMe VF doing DMA.
//!
//! * One mtty to a second mtty in another process: this binary run again as the destination
//!   (`lab_destination_process`), the stream through a pipe; pre-copy iterated until
//!   `VFIO_MIG_GET_PRECOPY_INFO` reports nothing left, then stop-copy and resume; UART values
//!   written through the source's I/O BARs read back the same through the destination's, and
//!   the destination's VMM-side state equals the source's.
//! * Two mttys to two others together (threads over a socketpair): the P2P order, as the
//!   devices' own calls recorded it.
//! * Bad streams (cut short, for another device, version-skewed, and data the device itself
//!   refuses on RESUMING -> STOP): typed errors, the destination back in RUNNING.
//! * Dirty tracking with an NVMe VF that DMAs into guest memory: the container reports every
//!   page of every mapping (the kernel's rule for vfio-pci groups), never a page outside them,
//!   and the VMM's bitmap ends up the union of that and its own.
//!
//! Figures (stop-copy estimate against bytes read, STOP to RUNNING on the destination for one
//! and two devices) are printed as `@@LAB-JSON` lines for `cargo xtask lab`; TCG times are not
//! hardware times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/passthrough.rs"]
mod example;
mod live;
mod nvme;

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use live::lab::{
    lab, mark, mttys, order, precopy_mttys, Figures, MTTY_PRECOPY, MTTY_STOP_COPY, MTTY_STREAM,
    RAM, REPS,
};
use live::{
    entered_order, frames, guest_boots, hex, memory_vm, migratable, stream_error, uart, unhex,
    Journal, Recorded, Vm,
};
use migration_state::{stream, DeviceState, Error as StreamError, State};
use vfio_core::{
    Container, DirtySource, KernelDevice, MigState, VfioContainer, VfioDevice, VfioMigration,
};
use vmm_glue::live_migration::{DestinationReport, SourceReport};
use vmm_glue::{
    DirtyBitmap, DirtyLog, Error, Incoming, MigrationOptions, Outgoing, PassthroughDevice, Strategy,
};

/// Set in the destination process's environment.
const ROLE: &str = "VMM_GLUE_LAB_MIGRATION_ROLE";

#[test]
fn an_mtty_migrates_to_a_second_mtty_in_another_process() {
    // The same test, run again by itself as the child, plays the destination.
    if std::env::var(ROLE).as_deref() == Ok("destination") {
        lab_destination_process();
        return;
    }
    let vm = memory_vm();
    let (container, _ram, devs) = mttys(&[0]);
    let kernel = devs[0].clone();
    let mut src = migratable(&vm, &kernel, 1, false);
    src.set_dma_logging(kernel.clone()).unwrap();
    guest_boots(&mut src);
    uart::program(&mut src);
    let registers = uart::registers(&mut src);

    let mut child = live::spawn_destination(
        "an_mtty_migrates_to_a_second_mtty_in_another_process",
        ROLE,
        "destination",
    );
    let pipe = child.stdin.take().unwrap();
    let mut bits = [1u64 << 5, 1 << 63];
    let vmm_own = bits;
    let mut out = Outgoing::start(
        pipe,
        &[&src],
        Some(container.clone()),
        MigrationOptions::default(),
    )
    .unwrap();
    // mtty's DMA logging starts, but this kernel (no CONFIG_IOMMUFD_DRIVER) cannot report it,
    // so the container tracks; a container of mdevs reports only the pages they pinned, and
    // mtty pins none: the VMM's own bits are all that is set.
    assert_eq!(out.dirty_source(), Some(DirtySource::Container));
    precopy_mttys(
        &mut out,
        1,
        &mut [DirtyBitmap {
            gpa: 0,
            bits: &mut bits,
        }],
    );
    assert_eq!(bits, vmm_own);
    let report = out.switchover(&[&src], &mut []).unwrap();
    let t = report.devices[0];
    assert_eq!(
        (t.stop_copy_estimate, t.precopy_bytes, t.stop_copy_bytes),
        (MTTY_STREAM, MTTY_PRECOPY, MTTY_STOP_COPY)
    );
    assert_eq!(
        order(&report.log),
        ["1:PRE_COPY", "1:PRE_COPY_P2P", "1:STOP_COPY", "1:STOP"]
    );
    assert_eq!(kernel.migration_state().unwrap(), MigState::Stop);
    let stream_bytes = report.stream_bytes;
    let source_report = report;
    // Closing the pipe: the destination reads to EOF after the end frame.
    let SourceReport {
        writer,
        devices,
        rounds,
        stream_bytes: _,
        log,
        switchover_time,
    } = source_report;
    drop(writer);
    let report = SourceReport {
        writer: (),
        devices,
        rounds,
        stream_bytes,
        log,
        switchover_time,
    };

    let got = live::reports(child);
    let state = DeviceState::decode(&unhex(&got["STATE"])).unwrap();
    assert_eq!(state, src.save(), "config space, BARs, interrupt state");
    assert_eq!(
        unhex(&got["REGISTERS"]),
        registers,
        "LCR, MCR, IER, SCR, LSR"
    );
    for port in 0..2u8 {
        let mut want = uart::TEXT[usize::from(port)].to_vec();
        want.push(0x60);
        assert_eq!(unhex(&got[&format!("FIFO{port}")]), want, "port {port}");
    }
    assert_eq!(
        got["RECEIVED"],
        format!("{MTTY_PRECOPY} {MTTY_STOP_COPY} {stream_bytes}")
    );
    assert_eq!(
        got["ORDER"],
        "1:RUNNING_P2P 1:STOP 1:RESUMING 1:STOP 1:RUNNING_P2P 1:RUNNING"
    );
    let stop_to_running = Duration::from_micros(got["STOP_TO_RUNNING_US"].parse().unwrap());
    Figures::of(&report, stop_to_running).print("1 mtty, two processes (one run)");
    kernel.reset().unwrap();
    drop(container);
}

/// The destination of `an_mtty_migrates_to_a_second_mtty_in_another_process`, which its child
/// process runs: the lab's second mtty, the stream on stdin, `@@KEY value` lines on stdout.
fn lab_destination_process() {
    let vm = memory_vm();
    let (_container, _ram, devs) = mttys(&[1]);
    mark(&devs[0], 0xee); // overwritten by the stream
    let mut dst = migratable(&vm, &devs[0], 1, false);
    let mut input = live::CountingRead::new(std::io::stdin().lock());
    let received = Incoming::start(&mut input, &[&dst], MigrationOptions::default())
        .unwrap()
        .receive()
        .unwrap();
    let r = received.receipts()[0];
    let done = received.resume(&mut [&mut dst], Strategy::VmWide).unwrap();
    println!(
        "@@RECEIVED {} {} {}",
        r.precopy_bytes,
        r.stop_copy_bytes,
        input.bytes()
    );
    println!("@@ORDER {}", order(&done.log).join(" "));
    println!("@@STOP_TO_RUNNING_US {}", done.stop_to_running.as_micros());
    println!("@@STATE {}", hex(&dst.save().encode().unwrap()));
    println!("@@REGISTERS {}", hex(&uart::registers(&mut dst)));
    for port in 0..2u8 {
        let n = uart::TEXT[usize::from(port)].len();
        println!("@@FIFO{port} {}", hex(&uart::drain(&mut dst, port, n)));
    }
}

/// Migrates the lab's mttys `from` to `to` (same count) over a socketpair, the destination on
/// a thread; returns both reports and the journals of the devices' own calls.
fn over_socketpair(
    from: &[usize],
    to: &[usize],
) -> (
    SourceReport<UnixStream>,
    DestinationReport,
    Journal,
    Journal,
) {
    let (src_vm, dst_vm) = (memory_vm(), memory_vm());
    let (src_journal, dst_journal) = (Journal::default(), Journal::default());
    let (_c1, _r1, sources) = mttys(from);
    let (_c2, _r2, dests) = mttys(to);
    let ids = 1u32..;
    let srcs_rec: Vec<_> = sources
        .iter()
        .zip(ids.clone())
        .map(|(d, id)| Recorded::new(d.clone(), id, &src_journal))
        .collect();
    let dsts_rec: Vec<_> = dests
        .iter()
        .zip(ids)
        .map(|(d, id)| Recorded::new(d.clone(), id, &dst_journal))
        .collect();
    let mut srcs: Vec<PassthroughDevice> = srcs_rec
        .iter()
        .map(|r| migratable(&src_vm, r, r.id, false))
        .collect();
    for (d, r) in srcs.iter_mut().zip(&srcs_rec) {
        guest_boots(d);
        uart::program(d);
        mark(&r.dev, 0x10 + r.id as u8);
    }
    let mut dsts: Vec<PassthroughDevice> = dsts_rec
        .iter()
        .map(|r| migratable(&dst_vm, r, r.id, false))
        .collect();
    let (a, b) = UnixStream::pair().unwrap();
    let (source, destination) = std::thread::scope(|s| {
        let dsts = &mut dsts;
        let receiver = s.spawn(move || {
            let refs: Vec<&PassthroughDevice> = dsts.iter().collect();
            let received = Incoming::start(b, &refs, MigrationOptions::default())
                .unwrap()
                .receive()
                .unwrap();
            let mut muts: Vec<&mut PassthroughDevice> = dsts.iter_mut().collect();
            received.resume(&mut muts, Strategy::VmWide).unwrap()
        });
        let refs: Vec<&PassthroughDevice> = srcs.iter().collect();
        let mut out = Outgoing::start(a, &refs, None, MigrationOptions::default()).unwrap();
        precopy_mttys(&mut out, refs.len(), &mut []);
        src_journal.clear();
        let report = out.switchover(&refs, &mut []).unwrap();
        report.writer.shutdown(std::net::Shutdown::Write).unwrap();
        (report, receiver.join().unwrap())
    });
    for ((s, d), r) in srcs.iter_mut().zip(dsts.iter_mut()).zip(&dsts_rec) {
        assert_eq!(d.save(), s.save(), "device {}", r.id);
        assert_eq!(uart::registers(d), uart::registers(s), "device {}", r.id);
        let mut scr = [0u8];
        r.dev.region_read(0, 7, &mut scr).unwrap();
        assert_eq!(scr, [0x10 + r.id as u8], "device {}'s own UART", r.id);
    }
    for d in sources.iter().chain(&dests) {
        d.reset().unwrap();
    }
    (source, destination, src_journal, dst_journal)
}

#[test]
fn two_mttys_migrate_together_in_the_p2p_order() {
    // One device first, the same way, for the figure to compare with; each scenario REPS
    // times, every run checked.
    let mut one: Option<Figures> = None;
    for _ in 0..REPS {
        let (src, dst, _, _) = over_socketpair(&[0], &[2]);
        let f = Figures::of(&src, dst.stop_to_running);
        match one.as_mut() {
            Some(all) => all.add(f),
            None => one = Some(f),
        }
    }
    one.unwrap().print("1 mtty, threads over a socketpair");
    let mut two: Option<Figures> = None;
    for _ in 0..REPS {
        let f = two_devices_in_the_p2p_order();
        match two.as_mut() {
            Some(all) => all.add(f),
            None => two = Some(f),
        }
    }
    two.unwrap().print("2 mttys, threads over a socketpair");
}

/// One migration of two mttys over a socketpair, its order checked.
fn two_devices_in_the_p2p_order() -> Figures {
    let (src, dst, src_journal, dst_journal) = over_socketpair(&[0, 1], &[2, 3]);
    assert_eq!(
        src_journal.entered(),
        live::TWO_P2P_SWITCHOVER,
        "every device P2P-quiesced before any stops"
    );
    // The destination's journal: the walks to RESUMING, then the resume.
    let entered = dst_journal.entered();
    let resume = &entered[6..];
    assert_eq!(
        resume,
        live::TWO_P2P_RESUME,
        "every device in RUNNING_P2P before any runs"
    );
    // The library's logs saw the same order.
    assert_eq!(entered_order(&dst.log), entered);
    assert_eq!(entered_order(&src.log)[2..], src_journal.entered());
    assert_eq!(
        src.devices.iter().map(|d| d.stop_copy_bytes).sum::<u64>(),
        2 * MTTY_STOP_COPY
    );
    Figures::of(&src, dst.stop_to_running)
}

/// A good stream from the lab's first mtty (its UART programmed), as bytes.
fn good_stream(id: u32) -> Vec<u8> {
    let vm = memory_vm();
    let (_c, _r, devs) = mttys(&[0]);
    let mut src = migratable(&vm, &devs[0], id, false);
    guest_boots(&mut src);
    uart::program(&mut src);
    let mut out = Outgoing::start(Vec::new(), &[&src], None, MigrationOptions::default()).unwrap();
    precopy_mttys(&mut out, 1, &mut []);
    let bytes = out.switchover(&[&src], &mut []).unwrap().writer;
    devs[0].reset().unwrap();
    bytes
}

/// The destination (device 1 over `dev`) on `stream`, which it refuses.
fn refused(vm: &Vm, dev: &Arc<KernelDevice>, stream: &[u8]) -> (Error, vmm_glue::Rollback) {
    live::refused(&mut migratable(vm, dev, 1, false), stream)
}

#[test]
fn bad_streams_give_typed_errors_and_leave_the_destination_running() {
    let good = good_stream(1);
    let f = frames(&good);
    let vm = memory_vm();
    let (_c, _r, devs) = mttys(&[1]);
    let dev = &devs[0];
    let running = || assert_eq!(dev.migration_state().unwrap(), MigState::Running);

    // Cut in the middle of the stop-copy data: the stream ends early; the device, RESUMING
    // with part of its data, is reset.
    let cut = f[1].1 + 30;
    let (e, rb) = refused(&vm, dev, &good[..cut]);
    assert!(matches!(
        stream_error(&e),
        StreamError::StreamTruncated { .. }
    ));
    assert_eq!(rb.reset, [1]);
    running();

    // A whole, well-formed stream whose stop-copy data lacks its last byte: only the device can
    // tell. mtty refuses RESUMING -> STOP (mtty_load_state(): EINVAL) and stays in RESUMING;
    // the kernel's way out is VFIO_DEVICE_RESET.
    let mut short = good[..f[1].1 - 11].to_vec();
    let stop = &good[f[1].1..f[1].1 + f[1].2 - 1];
    short.push(2);
    short.extend_from_slice(&0u16.to_le_bytes());
    short.extend_from_slice(&(stop.len() as u32).to_le_bytes());
    short.extend_from_slice(&[0; 4]);
    short.extend_from_slice(stop);
    short.extend_from_slice(&good[f[1].1 + f[1].2..]);
    stream::reseal(&mut short);
    let (e, rb) = refused(&vm, dev, &short);
    let Error::MigrationWalk { to, source } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(*to, State::Stop);
    let migration_state::Error::Transition {
        failed_at, source, ..
    } = source
    else {
        panic!("{source:?}");
    };
    assert_eq!(
        (*failed_at, source.errno()),
        (State::Stop, Some(libc::EINVAL))
    );
    assert_eq!(rb.reset, [1]);
    running();

    // A stream for another device (the VMM's device 7): refused before the device moves.
    let other = good_stream(7);
    let (e, rb) = refused(&vm, dev, &other);
    assert!(matches!(
        stream_error(&e),
        StreamError::StreamWrongDevice { index: 0, .. }
    ));
    assert_eq!(rb.untouched, [1]);
    running();

    // Version skew: a newer stream, and a newer device-state format inside a current stream.
    let (e, rb) = refused(&vm, dev, &live::newer_stream_version(&good));
    assert!(live::is_newer_stream(&e), "{e:?}");
    assert_eq!(rb.untouched, [1]);
    running();
    let (e, rb) = refused(&vm, dev, &live::newer_state_format(&good));
    assert!(live::is_newer_state(&e), "{e:?}");
    assert_eq!(rb.reset, [1]);
    running();

    // The same device then takes the good stream.
    mark(dev, 0xee);
    let mut dst = migratable(&vm, dev, 1, false);
    let received = Incoming::start(&good[..], &[&dst], MigrationOptions::default())
        .unwrap()
        .receive()
        .unwrap();
    received.resume(&mut [&mut dst], Strategy::VmWide).unwrap();
    running();
    let mut scr = [0u8];
    dev.region_read(0, 7, &mut scr).unwrap();
    assert_eq!(scr, [0x5a], "port 0's SCR as the source's guest wrote it");
    dev.reset().unwrap();
}

/// Sets bit `n` of `bits`.
fn set(bits: &mut [u64], n: u64) {
    bits[(n / 64) as usize] |= 1 << (n % 64);
}

#[test]
fn dirty_pages_of_an_nvme_vf_doing_dma_are_every_mapped_page_and_the_vmms_own() {
    use nvme::{identify, AdminQueue, ControllerId, CNS_CONTROLLER};
    let lab = lab();
    let vf = nvme::pf::provision_vf(&lab);
    let router = Arc::new(irq_routing::Router::new(irq_routing::MemoryBackend::new()).unwrap());
    let container = Container::new().unwrap();
    let mut vm = example::Vm::new(router, container.clone()).unwrap();
    let kernel = example::open_pci(&container, &vf.bdf, Some(vf.token)).unwrap();
    // A second guest memory region above a gap: 16 pages at 256 MiB.
    const HIGH: u64 = 256 << 20;
    let high = vfio_core::memfd_guest_region(HIGH, 16 * 4096).unwrap();
    container.map_guest_region(&high).unwrap();
    let dev = vm.plug(kernel.clone(), 1).unwrap();
    dev.lock().unwrap().set_dma_logging(kernel.clone()).unwrap();

    let page = 4096u64;
    let pages = (HIGH + 32 * page) / page;
    let words = pages.div_ceil(64) as usize;
    let ram_pages = example::RAM / page;
    let mut vmm_own = vec![0u64; words];
    // The VMM's own dirty pages: one in RAM, one in the gap, one above everything.
    for n in [7, ram_pages + 100, HIGH / page + 20] {
        set(&mut vmm_own, n);
    }
    let mut kernel_bits = vec![0u64; words];
    for n in (0..ram_pages).chain(HIGH / page..HIGH / page + 16) {
        set(&mut kernel_bits, n);
    }
    let union: Vec<u64> = kernel_bits
        .iter()
        .zip(&vmm_own)
        .map(|(k, v)| k | v)
        .collect();

    let log = {
        let d = dev.lock().unwrap();
        DirtyLog::start(container.clone(), &[&d]).unwrap()
    };
    assert_eq!(
        log.source(),
        DirtySource::Container,
        "vfio-pci has no DMA logging"
    );
    assert_eq!(log.page_size(), page);
    // The device DMAs into guest RAM: an Identify into page 0x202 of the first region.
    // The guest's driver stand-in: the VF's registers through its VFIO region.
    let regs = nvme::pf::PfRegs(&kernel);
    let mut aq = AdminQueue::enable(regs, &vm.ram, 0x20_0000, 0x20_1000, 8).unwrap();
    aq.run(identify(CNS_CONTROLLER, 0, 0x20_2000)).unwrap();
    let id = ControllerId::parse(&aq.read_page(0x20_2000).unwrap());
    assert_eq!((id.vid, id.cntlid), (0x1b36, vf.scid), "{id:?}");
    for round in 0..2 {
        let mut bits = vmm_own.clone();
        log.report_all(&mut [DirtyBitmap {
            gpa: 0,
            bits: &mut bits,
        }])
        .unwrap();
        // Every page of every mapping, at every report (the IOMMU cannot see the writes);
        // pages outside the mappings only where the VMM set them.
        assert_eq!(bits, union, "round {round}");
        aq.run(identify(CNS_CONTROLLER, 0, 0x20_2000)).unwrap();
    }
    log.stop().unwrap();

    // An mtty in the same container (its log starts, the VF has none): the container again.
    let mtty = Arc::new(container.open_device(&lab.mtty(0).unwrap()).unwrap());
    let mut mtty_dev = migratable_in(&vm.res, &mtty, 2);
    mtty_dev.set_dma_logging(mtty.clone()).unwrap();
    let log = {
        let d = dev.lock().unwrap();
        DirtyLog::start(container.clone(), &[&d, &mtty_dev]).unwrap()
    };
    assert_eq!(log.source(), DirtySource::Container);
    let mut bits = vmm_own.clone();
    log.report(0, &mut bits).unwrap();
    assert_eq!(bits, union);
    log.stop().unwrap();
    drop(mtty_dev);
    drop(mtty);
    let report = vm.unplug(dev).unwrap();
    assert_eq!(report.gsis_released, 0, "no vector was routed");
    drop(vm);
    drop(kernel);
    drop(container);
    drop(high);
    drop(vf);
}

/// A migratable passthrough device over `dev` in a VM of the example's kind.
fn migratable_in(
    res: &vmm_glue::VmResources,
    dev: &Arc<KernelDevice>,
    id: u32,
) -> PassthroughDevice {
    let opts = vmm_glue::DeviceOptions {
        id,
        ..Default::default()
    };
    PassthroughDevice::new_migratable(dev.clone(), res, opts).unwrap()
}

#[test]
fn the_p2p_order_needs_at_most_one_device_without_p2p() {
    // The lab's mttys all have P2P: the order protects every pair.
    let (_c, _r, devs) = mttys(&[0, 1]);
    let flags: Vec<_> = devs
        .iter()
        .map(|d| migration_state::driver::device_flags(&**d).unwrap())
        .collect();
    assert!(flags.iter().all(|f| f.p2p() && f.pre_copy()));
    assert!(vmm_glue::live_migration::p2p_order_holds(&flags));
}

/// What the simulator's mtty profile models by default: mtty's DMA logging starts and stops,
/// and its report fails with EOPNOTSUPP on this kernel (no CONFIG_IOMMUFD_DRIVER, so the
/// kernel's iova_bitmap_for_each() is a stub), after the core's checks.
#[test]
fn mttys_dma_logging_starts_but_this_kernel_cannot_report_it() {
    use vfio_core::DmaLogging;
    let (_c, _r, devs) = mttys(&[0]);
    let d = &devs[0];
    d.dma_logging_start(4096, &[(0, RAM)]).unwrap();
    let mut bits = vec![0u64; (RAM / 4096 / 64) as usize];
    let err = d.dma_logging_report(0, RAM, 4096, &mut bits).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "{err:?}");
    let err = d.dma_logging_report(0, RAM, 2048, &mut bits).unwrap_err();
    assert_eq!(
        err.errno(),
        Some(libc::EINVAL),
        "the core's page-size check comes first"
    );
    d.dma_logging_stop().unwrap();
    let sim = vfio_core::sim::SimDevice::mtty(2).unwrap();
    sim.dma_logging_start(4096, &[(0, RAM)]).unwrap();
    let err = sim.dma_logging_report(0, RAM, 4096, &mut bits).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EOPNOTSUPP), "the simulator agrees");
}
