// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Bad migration streams at the destination: each gives its typed error, a header the
//! destination refuses touches no device, anything later resets the devices to RUNNING (the
//! uAPI's way out of RESUMING), and the same devices then take a good stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod live;

use std::sync::Arc;

use live::{
    frames, guest_boots, memory_vm, migratable, stream_error, uart, Vm, FRAME_HEAD,
    STREAM_HEADER as HEADER,
};
use migration_state::{Error as StreamError, State};
use vfio_core::sim::SimDevice;
use vmm_glue::{
    Error, Incoming, MigrationOptions, Outgoing, PassthroughDevice, Rollback, Strategy,
};

/// A whole migration of an mtty with id `id` whose guest programmed its UART, as bytes.
fn good_stream(id: u32) -> Vec<u8> {
    let vm = memory_vm();
    let sim = Arc::new(SimDevice::mtty(2).unwrap());
    let mut src = migratable(&vm, &sim, id, false);
    guest_boots(&mut src);
    uart::program(&mut src);
    let mut out = Outgoing::start(Vec::new(), &[&src], None, MigrationOptions::default()).unwrap();
    out.precopy_until_converged(4, &mut [], |_| {}).unwrap();
    out.switchover(&[&src], &mut []).unwrap().writer
}

struct Destination {
    _vm: Vm,
    sim: Arc<SimDevice>,
    dev: PassthroughDevice,
}

fn destination(id: u32, ports: u32) -> Destination {
    let vm = memory_vm();
    let sim = Arc::new(SimDevice::mtty(ports).unwrap());
    let dev = migratable(&vm, &sim, id, false);
    Destination { _vm: vm, sim, dev }
}

/// Runs the destination on `stream`, which it refuses.
fn refused(d: &mut Destination, stream: &[u8]) -> (Error, Rollback) {
    live::refused(&mut d.dev, stream)
}

/// After a failure the device runs again and takes a good stream.
fn recovers(d: &mut Destination, good: &[u8]) {
    assert_eq!(
        d.dev.device_migration_state().unwrap(),
        Some(State::Running)
    );
    let received = Incoming::start(good, &[&d.dev], MigrationOptions::default())
        .unwrap()
        .receive()
        .unwrap();
    received
        .resume(&mut [&mut d.dev], Strategy::VmWide)
        .unwrap();
    assert_eq!(
        d.dev.device_migration_state().unwrap(),
        Some(State::Running)
    );
    let mut scr = [0u8];
    vfio_core::VfioDevice::region_read(&*d.sim, 0, 7, &mut scr).unwrap();
    assert_eq!(scr, [0x5a], "port 0's SCR came with the stream");
}

#[test]
fn a_stream_cut_anywhere_is_truncated_and_the_device_is_reset_after_resuming() {
    let good = good_stream(1);
    let mut d = destination(1, 2);
    let mut resets = 0;
    for cut in 0..good.len() {
        let arcs = d.sim.migration_arcs().len();
        let (e, rb) = refused(&mut d, &good[..cut]);
        assert!(
            matches!(stream_error(&e), StreamError::StreamTruncated { .. }),
            "{cut}: {e:?}"
        );
        if cut < HEADER {
            // The header is read before any device moves.
            assert_eq!(rb.untouched, [1], "{cut}");
            assert_eq!(d.sim.migration_arcs().len(), arcs, "{cut}: no arc");
        } else {
            assert_eq!(rb.reset, [1], "{cut}");
            resets += 1;
        }
        assert_eq!(d.sim.counters().resets, resets, "{cut}");
        assert_eq!(
            d.dev.device_migration_state().unwrap(),
            Some(State::Running),
            "{cut}"
        );
    }
    recovers(&mut d, &good);
}

#[test]
fn a_stream_for_another_device_is_refused_before_any_device_moves() {
    let good = good_stream(1);
    // The VMM's other device (id 2) at the destination.
    let mut d = destination(2, 2);
    let (e, rb) = refused(&mut d, &good);
    let StreamError::StreamWrongDevice {
        index,
        expected,
        found,
    } = stream_error(&e)
    else {
        panic!("{e:?}");
    };
    assert_eq!((*index, expected.id, found.id), (0, 2, 1));
    assert_eq!(rb.untouched, [2]);
    assert!(d.sim.migration_arcs().is_empty());
    assert_eq!(d.sim.counters().resets, 0);

    // Another kind of device altogether: an MSI-X device's stream into an mtty.
    let vm = memory_vm();
    let other = live::msix_sim(vfio_core::MigrationFeatures::all(), b"x");
    let src = migratable(&vm, &other, 1, false);
    let out = Outgoing::start(Vec::new(), &[&src], None, MigrationOptions::default()).unwrap();
    let foreign = out.switchover(&[&src], &mut []).unwrap().writer;
    let mut d = destination(1, 2);
    let (e, _) = refused(&mut d, &foreign);
    let StreamError::StreamWrongDevice {
        expected, found, ..
    } = stream_error(&e)
    else {
        panic!("{e:?}");
    };
    assert_eq!((expected.vendor, found.vendor), (0x4348, 0x8086));
    assert!(d.sim.migration_arcs().is_empty());

    // A stream of two devices for a destination of one.
    let (a, b) = (
        Arc::new(SimDevice::mtty(2).unwrap()),
        Arc::new(SimDevice::mtty(2).unwrap()),
    );
    let (da, db) = (migratable(&vm, &a, 1, false), migratable(&vm, &b, 2, false));
    let out = Outgoing::start(Vec::new(), &[&da, &db], None, MigrationOptions::default()).unwrap();
    let two = out.switchover(&[&da, &db], &mut []).unwrap().writer;
    let (e, rb) = refused(&mut d, &two);
    assert!(matches!(
        stream_error(&e),
        StreamError::StreamDeviceCount {
            found: 2,
            expected: 1
        }
    ));
    assert_eq!(rb.untouched, [1]);
    recovers(&mut d, &good);
}

#[test]
fn version_skew_is_refused_by_name() {
    let good = good_stream(1);
    let mut d = destination(1, 2);

    // A newer stream writer (version 2), checksums right.
    let (e, rb) = refused(&mut d, &live::newer_stream_version(&good));
    assert!(live::is_newer_stream(&e), "{e:?}");
    assert_eq!(rb.untouched, [1]);
    assert!(d.sim.migration_arcs().is_empty());

    // A VMM-side state in a newer device-state format (3), inside a current stream: found
    // once the device is already RESUMING, which is then reset.
    let (e, rb) = refused(&mut d, &live::newer_state_format(&good));
    assert!(live::is_newer_state(&e), "{e:?}");
    assert_eq!(rb.reset, [1]);
    assert_eq!(d.sim.counters().resets, 1);
    recovers(&mut d, &good);
}

#[test]
fn corrupt_reordered_and_oversized_frames_and_refused_data_reset_the_device() {
    let good = good_stream(1);
    let f = frames(&good);
    assert_eq!(
        f.iter()
            .map(|(k, _, len)| (*k, *len))
            .take(2)
            .collect::<Vec<_>>(),
        [(1, 24), (2, 72)],
        "mtty: 24 bytes of pre-copy, 72 of stop-copy"
    );
    let mut d = destination(1, 2);
    let mut resets = 0;

    // A flipped bit in the stop-copy data.
    let mut corrupt = good.clone();
    corrupt[f[1].1 + 7] ^= 0x10;
    let (e, rb) = refused(&mut d, &corrupt);
    assert!(matches!(
        stream_error(&e),
        StreamError::StreamCorrupt { frame: Some(1) }
    ));
    assert_eq!(rb.reset, [1]);
    resets += 1;

    // The state frame before the stop-copy data.
    let whole = |i: usize| good[f[i].1 - FRAME_HEAD..f[i].1 + f[i].2].to_vec();
    let mut reordered = good[..HEADER].to_vec();
    for i in [0, 2, 1, 3] {
        reordered.extend_from_slice(&whole(i));
    }
    assert_eq!(reordered.len(), good.len());
    let (e, _) = refused(&mut d, &reordered);
    assert!(matches!(
        stream_error(&e),
        StreamError::StreamOrder { device: 0 }
    ));
    resets += 1;

    // A frame longer than the destination accepts.
    let small = MigrationOptions {
        max_frame: 64,
        ..MigrationOptions::default()
    };
    let result = Incoming::start(&good[..], &[&d.dev], small).and_then(Incoming::receive);
    let Err(Error::MigrationFailed { source, .. }) = result else {
        panic!("{result:?}");
    };
    assert!(matches!(
        stream_error(&source),
        StreamError::StreamFrameTooLarge {
            length: 72,
            max: 64
        }
    ));
    resets += 1;
    assert_eq!(d.sim.counters().resets, resets);
    recovers(&mut d, &good);

    // Data the device refuses: a two-port mtty's stream into a one-port mtty (same IDs and
    // features), whose header check answers EFAULT.
    let mut one = destination(1, 1);
    let (e, rb) = refused(&mut one, &good);
    let Error::MigrationData(device) = &e else {
        panic!("{e:?}");
    };
    assert_eq!(device.errno(), Some(libc::EFAULT));
    assert_eq!(rb.reset, [1]);
    assert_eq!(one.sim.counters().resets, 1);
    assert_eq!(
        one.dev.device_migration_state().unwrap(),
        Some(State::Running)
    );
}
