// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Routing 8 devices x 65 MSI-X vectors on a fresh KVM VM (in-kernel
//! irqchip), three ways: one commit per vector, one batch per device, and
//! one VM-wide batch (a whole VM's resume). Each iteration gets a new VM so
//! the irqfd count KVM walks per commit starts at zero every time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use irq_routing::testing::kvm_vm_with_irqchip;
use irq_routing::{KvmBackend, MsiMessage, Router};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

const DEVICES: u32 = 8;
const VECTORS: u32 = 65;

#[derive(Clone, Copy, Debug)]
enum Strategy {
    PerVector,
    PerDevice,
    VmWide,
}

struct Setup {
    router: Router,
    _vm: Arc<VmFd>,
    irqfds: Vec<Vec<Arc<EventFd>>>,
}

fn setup() -> Setup {
    let (_kvm, vm) = kvm_vm_with_irqchip().expect("KVM vanished during the bench");
    let router = Router::new(KvmBackend::new(vm.clone()).unwrap()).unwrap();
    let irqfds = (0..DEVICES)
        .map(|_| {
            (0..VECTORS)
                .map(|_| Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()))
                .collect()
        })
        .collect();
    Setup {
        router,
        _vm: vm,
        irqfds,
    }
}

fn msi(device: u32, vector: u32) -> MsiMessage {
    MsiMessage::new(0xfee0_0000 | (u64::from(vector % 4) << 12), 0x30 + vector)
        .with_devid(device << 3)
}

fn add_device(router: &Router, device: u32, irqfds: &[Arc<EventFd>]) {
    for (vector, fd) in (0..).zip(irqfds) {
        router
            .add_msi_route(msi(device, vector), Some(fd.clone()))
            .unwrap();
    }
}

fn run(setup: Setup, strategy: Strategy) -> Setup {
    let router = &setup.router;
    match strategy {
        Strategy::PerVector => {
            for (device, fds) in (0..).zip(&setup.irqfds) {
                add_device(router, device, fds);
            }
        }
        Strategy::PerDevice => {
            for (device, fds) in (0..).zip(&setup.irqfds) {
                let batch = router.batch();
                add_device(router, device, fds);
                batch.commit().unwrap();
            }
        }
        Strategy::VmWide => {
            let vm = router.batch();
            for (device, fds) in (0..).zip(&setup.irqfds) {
                let batch = router.batch();
                add_device(router, device, fds);
                batch.commit().unwrap();
            }
            vm.commit().unwrap();
        }
    }
    setup
}

fn expected_commits(strategy: Strategy) -> u64 {
    match strategy {
        Strategy::PerVector => u64::from(DEVICES * VECTORS),
        Strategy::PerDevice => u64::from(DEVICES),
        Strategy::VmWide => 1,
    }
}

fn commit_strategies(c: &mut Criterion) {
    // Skips (prints why) without /dev/kvm, fails under PASSTHROUGH_REQUIRE_KVM=1.
    if kvm_vm_with_irqchip().is_none() {
        return;
    }
    let mut group = c.benchmark_group("route_8x65");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (name, strategy) in [
        ("commit_per_vector", Strategy::PerVector),
        ("batch_per_device", Strategy::PerDevice),
        ("batch_vm_wide", Strategy::VmWide),
    ] {
        // Make sure the strategy issues what it claims before timing it.
        let done = run(setup(), strategy);
        let stats = done.router.stats();
        assert_eq!(stats.commits, expected_commits(strategy), "{name}");
        assert_eq!(stats.irqfd_attaches, u64::from(DEVICES * VECTORS), "{name}");
        drop(done);

        group.bench_function(name, |b| {
            // The VM and its teardown stay out of the timed section: the
            // setup builds them, and criterion drops the returned value after
            // timing.
            b.iter_batched(setup, |s| run(s, strategy), BatchSize::PerIteration)
        });
    }
    group.finish();
}

criterion_group!(benches, commit_strategies);
criterion_main!(benches);
