// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The opt-in guest migration notice, VMM-raised vectors and MSI pending bits, on both routing
//! backends from one body: a raised vector is checked where the guest gets it (KVM: its
//! vector pending in the local APIC; in-memory: the irqfd's signal and its committed route).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use irq_routing::testing::TestBackend;
use irq_routing::MsiMessage;
use migration_state::{NoticeStatus, ProceedReason};
use vfio_core::sim::SimDevice;
use vmm_glue::{
    restore_all, scripted_guest, DeviceOptions, Error, NoticeDelivery, PassthroughDevice, Raised,
    Strategy,
};

use common::{msix_sim, vm_on, Vm};

irq_routing::both_backends!(
    a_guest_that_never_answers_is_passed_at_the_deadline_and_reset_after_resume,
    a_guest_that_acknowledges_lets_migration_proceed_before_the_deadline,
    guest_chosen_vectors_are_validated_and_masked_ones_go_pending,
    without_the_option_there_is_no_capability_and_no_notice,
    msi_masked_vectors_set_pending_bits_and_unmask_delivers_once,
);

const MS: Duration = Duration::from_millis(1);
const STATUS_PENDING: u8 = 1;
const STATUS_RESET: u8 = 2;

fn notice_device(vm: &Vm, sim: &Arc<SimDevice>, notice: bool) -> PassthroughDevice {
    let opts = DeviceOptions {
        id: 3,
        strategy: Strategy::VmWide,
        guest_notice: notice,
        ..DeviceOptions::default()
    };
    PassthroughDevice::new(sim.clone(), &vm.res, opts).unwrap()
}

/// Places BARs and programs MSI-X with every vector unmasked but `masked`.
fn guest_boots(dev: &mut PassthroughDevice, masked: u16) -> scripted_guest::MsixProgram {
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(dev, &mut mmio, &mut pio, false);
    scripted_guest::program_msix(dev, 0, |v| v != masked).unwrap()
}

/// The MSI message of vector `i` as `scripted_guest::program_msi` programs device 0.
fn msi_msg(i: u32) -> MsiMessage {
    let (address, data) = scripted_guest::message_for(0, 0);
    MsiMessage::new(address, (data & !0x1f) | i)
}

fn a_guest_that_never_answers_is_passed_at_the_deadline_and_reset_after_resume(
    backend: TestBackend,
) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let sim = msix_sim(8);
    let mut dev = notice_device(&vm, &sim, true);
    assert!(dev.has_guest_notice());
    guest_boots(&mut dev, 7);
    scripted_guest::opt_in_notice(&mut dev, 4).unwrap();

    let now = Duration::from_secs(100);
    let d = dev.request_migration_notice(now, 50 * MS).unwrap();
    assert_eq!(
        d,
        NoticeDelivery::Announced {
            vector: 4,
            raised: Raised::Delivered
        }
    );
    assert!(vm.received(&dev, 0, 4));
    assert_eq!(scripted_guest::notice_status(&dev), Some(STATUS_PENDING));
    // The guest never acknowledges: waiting until the deadline, then proceed.
    assert_eq!(
        dev.poll_migration_notice(now + 49 * MS),
        NoticeStatus::Waiting {
            deadline: now + 50 * MS
        }
    );
    assert_eq!(
        dev.poll_migration_notice(now + 50 * MS),
        NoticeStatus::Proceed(ProceedReason::DeadlineExpired)
    );

    // The notice travels with the state; the destination raises the guest's vector.
    let state = dev.save_stopped().unwrap();
    let n = state.notice.unwrap();
    assert_eq!((n.vector, n.guest_enabled), (4, true));
    let vm2 = vm_on(backend).unwrap();
    let mut dst = notice_device(&vm2, &msix_sim(8), true);
    restore_all(&vm2.router, [(&mut dst, &state)], Strategy::VmWide).unwrap();
    let d = dst.notify_guest_resumed().unwrap();
    assert_eq!(
        d,
        NoticeDelivery::Announced {
            vector: 4,
            raised: Raised::Delivered
        }
    );
    assert!(vm2.received(&dst, 0, 4));
    assert_eq!(scripted_guest::notice_status(&dst), Some(STATUS_RESET));
    assert_eq!(
        dst.guest_notice().unwrap().generation(),
        n.generation.wrapping_add(1)
    );
    // The guest resets its driver and acknowledges.
    scripted_guest::ack_notice(&mut dst).unwrap();
    assert_eq!(
        dst.poll_migration_notice(Duration::ZERO),
        NoticeStatus::Idle
    );
}

fn a_guest_that_acknowledges_lets_migration_proceed_before_the_deadline(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let sim = msix_sim(8);
    let mut dev = notice_device(&vm, &sim, true);
    guest_boots(&mut dev, 7);
    scripted_guest::opt_in_notice(&mut dev, 2).unwrap();
    dev.request_migration_notice(Duration::ZERO, Duration::from_secs(10))
        .unwrap();
    assert!(vm.received(&dev, 0, 2));
    assert!(matches!(
        dev.poll_migration_notice(MS),
        NoticeStatus::Waiting { .. }
    ));
    let generation = scripted_guest::ack_notice(&mut dev).unwrap();
    assert_eq!(generation, dev.guest_notice().unwrap().generation());
    assert_eq!(
        dev.poll_migration_notice(2 * MS),
        NoticeStatus::Proceed(ProceedReason::Acknowledged)
    );
    // Cancelled: the guest is told, on its vector.
    let d = dev.cancel_migration_notice().unwrap();
    assert!(matches!(d, NoticeDelivery::Announced { vector: 2, .. }));
    assert!(vm.received(&dev, 0, 2));
    assert_eq!(dev.poll_migration_notice(3 * MS), NoticeStatus::Idle);
}

fn guest_chosen_vectors_are_validated_and_masked_ones_go_pending(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let sim = msix_sim(8);
    let mut dev = notice_device(&vm, &sim, true);
    let prog = guest_boots(&mut dev, 7);

    // Not opted in: nothing announced, nothing raised, proceed at once.
    let d = dev.request_migration_notice(Duration::ZERO, MS).unwrap();
    assert_eq!(d, NoticeDelivery::GuestNotEnabled);
    assert_eq!(
        dev.poll_migration_notice(Duration::ZERO),
        NoticeStatus::Proceed(ProceedReason::GuestNotEnabled)
    );

    // A vector past the table: announced, not raised; the migration is not held up.
    scripted_guest::opt_in_notice(&mut dev, 500).unwrap();
    let pending_before = dev.stats().pending_set;
    let d = dev.request_migration_notice(Duration::ZERO, MS).unwrap();
    assert_eq!(
        d,
        NoticeDelivery::Announced {
            vector: 500,
            raised: Raised::NoSuchVector
        }
    );
    assert_eq!(dev.stats().pending_set, pending_before);
    assert_eq!(
        dev.poll_migration_notice(MS),
        NoticeStatus::Proceed(ProceedReason::DeadlineExpired)
    );

    // A masked vector: its PBA bit is set, and unmasking delivers it once.
    scripted_guest::opt_in_notice(&mut dev, 7).unwrap();
    let d = dev.request_migration_notice(Duration::ZERO, MS).unwrap();
    assert!(matches!(
        d,
        NoticeDelivery::Announced {
            raised: Raised::Pending,
            ..
        }
    ));
    assert!(dev.msix_table().unwrap().is_pending(7));
    assert_eq!(dev.stats().pending_set, pending_before + 1);
    let bar = dev.bar_address(0).unwrap();
    let ctrl = prog.table_address - bar + 16 * 7 + 12;
    use vm_device::MutDeviceMmio;
    dev.mmio_write(vm_device::bus::MmioAddress(bar), ctrl, &0u32.to_le_bytes());
    assert!(!dev.msix_table().unwrap().is_pending(7));
    assert_eq!(dev.stats().pending_delivered, 1);
    assert!(vm.received(&dev, 0, 7));
    assert!(vm.received_nothing(&dev, 0, 7));
}

fn without_the_option_there_is_no_capability_and_no_notice(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let sim = msix_sim(8);
    let mut plain = notice_device(&vm, &sim, false);
    assert!(!plain.has_guest_notice());
    assert_eq!(scripted_guest::find_notice_capability(&plain), None);
    assert!(matches!(
        plain.request_migration_notice(Duration::ZERO, MS),
        Err(Error::NoticeDisabled)
    ));
    assert!(matches!(
        plain.notify_guest_resumed(),
        Err(Error::NoticeDisabled)
    ));
    assert_eq!(
        plain.poll_migration_notice(Duration::ZERO),
        NoticeStatus::Idle
    );
    assert!(plain.save().notice.is_none());

    // A state with the notice does not fit a device without it, and the reverse.
    let vm2 = vm_on(backend).unwrap();
    let mut with = notice_device(&vm2, &msix_sim(8), true);
    let cap = scripted_guest::find_notice_capability(&with).unwrap();
    assert!(cap >= 0x40);
    let with_state = with.save();
    assert_eq!(
        with_state.notice.map(|n| u16::from(n.capability_offset)),
        Some(cap)
    );
    assert!(matches!(
        plain.restore(&with_state),
        Err(Error::StateMismatch(_))
    ));
    assert!(matches!(
        with.restore(&plain.save()),
        Err(Error::StateMismatch(_))
    ));
    assert_eq!(sim.counters().set_irqs, 0);
}

fn msi_masked_vectors_set_pending_bits_and_unmask_delivers_once(backend: TestBackend) {
    let Some(vm) = vm_on(backend) else {
        return;
    };
    let sim = msix_sim(8); // MSI with 4 vectors, 64-bit, per-vector masking
    let mut dev = notice_device(&vm, &sim, false);
    let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
    scripted_guest::place_bars(&mut dev, &mut mmio, &mut pio, false);
    let cap = scripted_guest::program_msi(&mut dev, 0, 2, 0b0010).unwrap();
    assert_eq!(dev.irq_mode(), vmm_glue::IrqMode::Msi);
    let (mask_reg, pending_reg) = (cap + 16, cap + 20);

    let t = &vm.test_vm;
    assert_eq!(dev.raise_vector(0), Raised::Delivered);
    assert!(t.received(dev.msi_irqfd(0).unwrap(), msi_msg(0)));
    assert_eq!(dev.raise_vector(4), Raised::NoSuchVector);
    assert_eq!(dev.raise_vector(1), Raised::Pending);
    assert!(t.received_nothing(dev.msi_irqfd(1).unwrap(), msi_msg(1)));
    assert_eq!(scripted_guest::config_read_u32(&dev, pending_reg), 0b0010);
    // Pending Bits are read-only to the guest.
    dev.config_write(pending_reg, &0u32.to_le_bytes());
    assert_eq!(scripted_guest::config_read_u32(&dev, pending_reg), 0b0010);
    // Saved with the state.
    assert_eq!(dev.save().msi.unwrap().pending_bits, 0b0010);

    // Unmask: delivered once, bit cleared.
    dev.config_write(mask_reg, &0u32.to_le_bytes());
    assert_eq!(scripted_guest::config_read_u32(&dev, pending_reg), 0);
    assert_eq!(dev.stats().pending_delivered, 1);
    assert!(t.received(dev.msi_irqfd(1).unwrap(), msi_msg(1)));
    // A further mask write changes nothing more.
    dev.config_write(mask_reg, &0u32.to_le_bytes());
    assert_eq!(dev.stats().pending_delivered, 1);
    assert!(t.received_nothing(dev.msi_irqfd(1).unwrap(), msi_msg(1)));

    // The device fires a masked vector: its trigger is the userspace eventfd, which the
    // VMM's poll turns into the pending bit.
    dev.config_write(mask_reg, &0b1000u32.to_le_bytes());
    dev.msi_user_eventfd(3).unwrap().write(1).unwrap();
    assert_eq!(dev.poll_userspace_interrupts(), 1);
    assert_eq!(scripted_guest::config_read_u32(&dev, pending_reg), 0b1000);
    assert!(t.received_nothing(dev.msi_irqfd(3).unwrap(), msi_msg(3)));
    dev.config_write(mask_reg, &0u32.to_le_bytes());
    assert!(t.received(dev.msi_irqfd(3).unwrap(), msi_msg(3)));
    assert_eq!(dev.stats().pending_delivered, 2);
}
