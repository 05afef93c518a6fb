// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An mtty (the simulator's profile of the lab's mdev) live-migrated to another process: the
//! source writes the stream into a pipe, the destination is this test binary run again as a
//! child (`destination_process`), reading the stream on its stdin and reporting the state it
//! resumed with on its stdout. UART values the guest wrote through the source's I/O BARs read
//! back the same through the destination's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod live;

use std::sync::Arc;

use live::{guest_boots, hex, memory_vm, migratable, uart, unhex};
use migration_state::{DeviceState, State};
use vfio_core::sim::SimDevice;
use vmm_glue::{Incoming, MigrationOptions, Outgoing, Strategy};

/// Set in the child's environment: the role it plays.
const ROLE: &str = "VMM_GLUE_LIVE_MIGRATION_ROLE";

#[test]
fn an_mtty_migrates_to_another_process_through_a_pipe() {
    // The same test, run again by itself as the child, plays the destination.
    if std::env::var(ROLE).as_deref() == Ok("destination") {
        destination_process();
        return;
    }
    let mut child = live::spawn_destination(
        "an_mtty_migrates_to_another_process_through_a_pipe",
        ROLE,
        "destination",
    );
    let pipe = child.stdin.take().unwrap();

    let vm = memory_vm();
    let sim = Arc::new(SimDevice::mtty(2).unwrap());
    let mut src = migratable(&vm, &sim, 1, false);
    guest_boots(&mut src);
    uart::program(&mut src);
    let registers = uart::registers(&mut src);

    let mut out = Outgoing::start(pipe, &[&src], None, MigrationOptions::default()).unwrap();
    let rounds = out.precopy_until_converged(8, &mut [], |_| {}).unwrap();
    // mtty: the 24-byte header is all its pre-copy data, and it reports no dirty bytes.
    assert_eq!(rounds.len(), 1);
    let d = rounds[0].devices[0];
    assert_eq!((d.before.initial_bytes, d.before.dirty_bytes), (24, 0));
    assert_eq!(d.read, 24);
    assert!(d.after.is_empty());
    assert_eq!(
        d.stop_copy_estimate, 96,
        "mtty's MIG_DATA_SIZE is its whole stream"
    );
    let report = out.switchover(&[&src], &mut []).unwrap();
    assert_eq!(
        report.devices[0].stop_copy_bytes, 72,
        "the ports, after the header"
    );
    let stream_bytes = report.stream_bytes;
    drop(report.writer); // EOF for the child

    let got = live::reports(child);
    let state = DeviceState::decode(&unhex(&got["STATE"])).unwrap();
    assert_eq!(
        state,
        src.save(),
        "the VMM-side state (config space, MSI, BARs)"
    );
    assert_eq!(unhex(&got["REGISTERS"]), registers);
    for port in 0..2u8 {
        let mut want = uart::TEXT[usize::from(port)].to_vec();
        want.push(0x60); // LSR once the FIFO is empty: THRE | TEMT
        assert_eq!(unhex(&got[&format!("FIFO{port}")]), want, "port {port}");
    }
    assert_eq!(got["RECEIVED"], format!("24 72 {stream_bytes}"));
    assert_eq!(got["DEVICE"], format!("{:?}", Some(State::Running)));
}

/// The destination of `an_mtty_migrates_to_another_process_through_a_pipe`, which its child
/// process runs: the stream comes on stdin, the results go to stdout as `@@KEY value` lines.
fn destination_process() {
    let vm = memory_vm();
    let sim = Arc::new(SimDevice::mtty(2).unwrap());
    let mut dst = migratable(&vm, &sim, 1, false);
    let stdin = std::io::stdin().lock();
    let mut counted = live::CountingRead::new(stdin);
    let received = Incoming::start(&mut counted, &[&dst], MigrationOptions::default())
        .unwrap()
        .receive()
        .unwrap();
    let r = received.receipts()[0];
    received.resume(&mut [&mut dst], Strategy::VmWide).unwrap();
    println!(
        "@@RECEIVED {} {} {}",
        r.precopy_bytes,
        r.stop_copy_bytes,
        counted.bytes()
    );
    println!("@@DEVICE {:?}", dst.device_migration_state().unwrap());
    println!("@@STATE {}", hex(&dst.save().encode().unwrap()));
    println!("@@REGISTERS {}", hex(&uart::registers(&mut dst)));
    for port in 0..2u8 {
        let n = uart::TEXT[usize::from(port)].len();
        println!("@@FIFO{port} {}", hex(&uart::drain(&mut dst, port, n)));
    }
}
