// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Device-internal state through VFIO migration v2, and the all-or-nothing VM-wide restore.
//! The tests that restore routes run on both routing backends from one body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod live;

use std::sync::Arc;

use irq_routing::testing::TestBackend;
use migration_state::{DeviceState, State};
use vfio_core::sim::SimDevice;
use vfio_core::{MigrationFeatures, VfioMigration};
use vmm_glue::{restore_all, scripted_guest, DeviceOptions, Error, PassthroughDevice, Strategy};

use live::msix_sim as migratable_sim;

use common::{device, msix_sim, vm, vm_on, Vm};

irq_routing::both_backends!(
    device_blob_round_trips_byte_exact_to_a_second_device,
    restore_all_is_all_or_nothing_for_bad_states,
);

fn migratable(vm: &Vm, sim: &Arc<SimDevice>, id: u32) -> PassthroughDevice {
    let opts = DeviceOptions {
        id,
        strategy: Strategy::VmWide,
        ..DeviceOptions::default()
    };
    PassthroughDevice::new_migratable(sim.clone(), &vm.res, opts).unwrap()
}

fn guest_programs(dev: &mut PassthroughDevice, id: usize) {
    let (mut mmio, mut pio) = (0xc000_0000u64 + 0x10_0000 * id as u64, 0x1000u64);
    scripted_guest::place_bars(dev, &mut mmio, &mut pio, false);
    scripted_guest::program_msix(dev, id, |v| v % 3 != 0).unwrap();
}

fn device_blob_round_trips_byte_exact_to_a_second_device(backend: TestBackend) {
    let blob: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    for features in [MigrationFeatures::STOP_COPY, MigrationFeatures::P2P] {
        let Some(src_vm) = vm_on(backend) else {
            return;
        };
        let src_sim = migratable_sim(features, &blob);
        let mut src = migratable(&src_vm, &src_sim, 1);
        assert!(src.is_migratable());
        guest_programs(&mut src, 1);
        let before = src_sim.counters().migration_set_state;

        let state = src.save_stopped().unwrap();
        // RUNNING -> [RUNNING_P2P ->] STOP -> STOP_COPY, then STOP_COPY -> STOP: one set
        // per arc.
        let p2p = usize::from(features.contains(MigrationFeatures::P2P));
        let arcs = src_sim.counters().migration_set_state - before;
        assert_eq!(arcs, 3 + p2p as u64, "{features:?}");
        assert_eq!(src.device_migration_state().unwrap(), Some(State::Stop));
        assert!(!state.device_data.is_empty());
        // The VMM side is what save() captures.
        assert_eq!(
            DeviceState {
                device_data: Vec::new(),
                ..state.clone()
            },
            src.save()
        );

        // Through the versioned stream, as a real migration would carry it.
        let wire = state.encode().unwrap();
        let state = DeviceState::decode(&wire).unwrap();

        let dst_vm = vm_on(backend).unwrap();
        let dst_sim = migratable_sim(features, b"fresh device");
        let mut dst = migratable(&dst_vm, &dst_sim, 1);
        dst.load_device_data(&state).unwrap();
        assert_eq!(dst.device_migration_state().unwrap(), Some(State::Stop));
        assert_eq!(dst_sim.device_state_blob().unwrap(), blob);
        let report = restore_all(&dst_vm.router, [(&mut dst, &state)], Strategy::VmWide).unwrap();
        assert_eq!(report.gsi_routing_commits, 1);
        assert_eq!(report.set_irqs_calls(), 1);
        // The guest programmed vectors 1, 2, 4, 5, 7 unmasked (not those divisible by 3).
        assert_eq!(dst_vm.table().len(), 5);
        assert!(dst_vm.delivers(&dst, 1, 4));
        assert!(dst.msix_route(3).is_none());
        dst.run_device().unwrap();
        assert_eq!(dst.device_migration_state().unwrap(), Some(State::Running));
        assert_eq!(dst.save(), src.save());

        // The source, if the migration is abandoned, runs again.
        src.run_device().unwrap();
        assert_eq!(src_sim.device_state_blob().unwrap(), blob);
        assert_eq!(src.device_migration_state().unwrap(), Some(State::Running));
    }
}

#[test]
fn a_device_without_migration_saves_an_empty_blob_and_never_walks() {
    let vm = vm();
    let sim = msix_sim(8);
    let mut dev = device(&vm, &sim, 0, Strategy::VmWide);
    guest_programs(&mut dev, 0);
    assert!(!dev.is_migratable());
    let state = dev.save_stopped().unwrap();
    assert!(state.device_data.is_empty());
    assert_eq!(state, dev.save());
    dev.load_device_data(&state).unwrap();
    dev.run_device().unwrap();
    assert_eq!(dev.device_migration_state().unwrap(), None);
    assert_eq!(sim.counters().migration_set_state, 0);

    let with_blob = DeviceState {
        device_data: vec![1, 2, 3],
        ..state
    };
    assert!(matches!(
        dev.load_device_data(&with_blob),
        Err(Error::StateMismatch(_))
    ));
    assert_eq!(sim.counters().migration_set_state, 0);
}

#[test]
fn with_migration_refuses_another_device() {
    let vm = vm();
    let a = migratable_sim(MigrationFeatures::STOP_COPY, b"a");
    let b = migratable_sim(MigrationFeatures::STOP_COPY, b"b");
    let mut dev = PassthroughDevice::new(a.clone(), &vm.res, DeviceOptions::default()).unwrap();
    let other: Arc<dyn VfioMigration> = b;
    assert!(matches!(
        dev.with_migration(other),
        Err(Error::NotSameDevice)
    ));
    assert!(!dev.is_migratable());
    let same: Arc<dyn VfioMigration> = a.clone();
    dev.with_migration(same).unwrap();
    assert!(dev.is_migratable());
    let state = dev.save_stopped().unwrap();
    // The sim streams one frame: a u32 length, then the blob.
    assert_eq!(state.device_data.len(), 4 + 1);
}

#[test]
fn a_blob_the_device_refuses_fails_typed_and_resets_the_device() {
    let src_vm = vm();
    let src_sim = migratable_sim(MigrationFeatures::STOP_COPY, b"0123456789");
    let mut src = migratable(&src_vm, &src_sim, 0);
    let mut state = src.save_stopped().unwrap();
    state.device_data.pop(); // truncated frame: the sim refuses it on RESUMING -> STOP

    let dst_vm = vm();
    let dst_sim = migratable_sim(MigrationFeatures::STOP_COPY, b"untouched");
    let mut dst = migratable(&dst_vm, &dst_sim, 0);
    let err = dst.load_device_data(&state).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MigrationWalk {
                to: State::Stop,
                ..
            }
        ),
        "{err:?}"
    );
    // No recovery state on the destination: QEMU's rule resets the device.
    assert_eq!(dst_sim.counters().resets, 1);
    assert_eq!(dst.device_migration_state().unwrap(), Some(State::Running));
    assert_eq!(dst_sim.device_state_blob().unwrap(), b"untouched");
}

/// Three devices saved on one VM; restored on a fresh VM where one state does not fit.
fn restore_all_is_all_or_nothing_for_bad_states(backend: TestBackend) {
    let Some(src_vm) = vm_on(backend) else {
        return;
    };
    let sims: Vec<_> = (0..3).map(|_| msix_sim(8)).collect();
    let mut states = Vec::new();
    for (i, sim) in sims.iter().enumerate() {
        let mut d = device(&src_vm, sim, i as u32, Strategy::VmWide);
        guest_programs(&mut d, i);
        states.push(d.save());
    }
    // A state from a device with another vector count, for the last device.
    let mut odd = device(&src_vm, &msix_sim(16), 9, Strategy::VmWide);
    guest_programs(&mut odd, 9);
    let odd_state = odd.save();

    let dst_vm = vm_on(backend).unwrap();
    let dst_sims: Vec<_> = (0..3).map(|_| msix_sim(8)).collect();
    let mut devs: Vec<_> = dst_sims
        .iter()
        .enumerate()
        .map(|(i, s)| device(&dst_vm, s, i as u32, Strategy::PerDevice))
        .collect();
    let fresh: Vec<_> = devs.iter().map(|d| d.save()).collect();

    for strategy in [Strategy::VmWide, Strategy::PerDevice, Strategy::PerVector] {
        let commits = dst_vm.router.stats().commits;
        let bad = [&states[0], &states[1], &odd_state];
        let err = restore_all(&dst_vm.router, devs.iter_mut().zip(bad), strategy).unwrap_err();
        assert!(matches!(err, Error::StateMismatch(_)), "{err:?}");
        assert_eq!(dst_vm.router.stats().commits - commits, 0, "{strategy:?}");
        assert!(dst_vm.router.committed_table().is_empty());
        for (i, (d, s)) in devs.iter().zip(&dst_sims).enumerate() {
            assert_eq!(s.counters().set_irqs, 0);
            assert_eq!(d.save(), fresh[i]);
            assert_eq!(d.strategy(), Strategy::PerDevice);
        }
    }

    // A state the stream changed so another set of bytes would be emulated.
    let mut tampered = states[1].clone();
    if let Some(b) = tampered.config.emulated_mask.get_mut(0x00) {
        *b ^= 0xff;
    }
    let err = restore_all(
        &dst_vm.router,
        devs.iter_mut().zip([&states[0], &tampered, &states[2]]),
        Strategy::VmWide,
    )
    .unwrap_err();
    assert!(matches!(err, Error::StateMismatch(_)), "{err:?}");
    assert_eq!(dst_vm.router.stats().commits, 0);

    // A device of another VM in the batch.
    let other_vm = vm_on(backend).unwrap();
    let other_sim = msix_sim(8);
    let mut other = device(&other_vm, &other_sim, 7, Strategy::VmWide);
    let (first, _) = devs.split_at_mut(1);
    let err = restore_all(
        &dst_vm.router,
        [(&mut first[0], &states[0]), (&mut other, &states[2])],
        Strategy::VmWide,
    )
    .unwrap_err();
    assert!(matches!(err, Error::RouterMismatch { id: 7 }), "{err:?}");
    assert_eq!(dst_vm.router.stats().commits, 0);
    assert_eq!(dst_sims[0].counters().set_irqs, 0);
    assert_eq!(other_sim.counters().set_irqs, 0);

    // The right states then restore with one commit and one SET_IRQS per device.
    let report = restore_all(
        &dst_vm.router,
        devs.iter_mut().zip(states.iter()),
        Strategy::VmWide,
    )
    .unwrap();
    assert_eq!(report.gsi_routing_commits, 1);
    assert_eq!(report.set_irqs_per_device, vec![1, 1, 1]);
    for (d, s) in devs.iter().zip(&states) {
        assert_eq!(&d.save(), s);
    }
    assert_eq!(dst_vm.table().len(), 3 * 5);
    for (i, d) in devs.iter().enumerate() {
        assert!(dst_vm.delivers(d, i, 5), "device {i}");
    }
}

/// The simulator's mtty profile (the lab's mdev): a 255-byte config region, I/O BARs of UART
/// registers, and mtty's own migration stream. A passthrough device builds on it, and
/// `save_stopped`/`load_device_data` carry the UART state to a second mtty.
#[test]
fn an_mtty_builds_and_its_uart_state_migrates() {
    use vfio_core::VfioDevice;

    let (src_vm, dst_vm) = (vm(), vm());
    let src_sim = Arc::new(SimDevice::mtty(2).unwrap());
    let dst_sim = Arc::new(SimDevice::mtty(2).unwrap());
    assert_eq!(src_sim.info().region(7).unwrap().size, 0xff);
    let mut src = migratable(&src_vm, &src_sim, 1);
    let mut dst = migratable(&dst_vm, &dst_sim, 1);
    // SCR (register 7) of each port, through the device.
    src_sim.region_write(0, 7, &[0x5a]).unwrap();
    src_sim.region_write(1, 7, &[0xa5]).unwrap();

    let state = src.save_stopped().unwrap();
    assert_eq!(
        state.device_data.len(),
        96,
        "24-byte header, 36 bytes per port"
    );
    assert_eq!(
        state.device_data.len() as u64,
        src_sim.migration_data_size().unwrap()
    );
    dst.load_device_data(&state).unwrap();
    dst.run_device().unwrap();
    let mut scr = [0u8; 1];
    dst_sim.region_read(0, 7, &mut scr).unwrap();
    assert_eq!(scr, [0x5a]);
    dst_sim.region_read(1, 7, &mut scr).unwrap();
    assert_eq!(scr, [0xa5]);
    assert_eq!(dst.save().config, src.save().config);
}
