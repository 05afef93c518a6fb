// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! INTx lines (`Router::attach_intx`) on a real KVM VM: a resample irqfd on an IOAPIC pin,
//! delivery through the IOAPIC to a local APIC, the refusal without a full irqchip, and the
//! line de-asserted when the irqfd goes.
//!
//! What cannot be shown here: the guest's EOI, which makes KVM de-assert the line and signal
//! the resample eventfd. No vCPU runs on this host (its KVM cannot enter a guest), so nothing
//! acknowledges the interrupt; the resample eventfd is checked to stay quiet instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use irq_routing::testing::{kvm_vm_with_irqchip, route_ioapic_pin, LocalApic};
use irq_routing::{Error, KvmBackend, Router, RoutingBackend};
use kvm_bindings::{kvm_enable_cap, KVM_CAP_SPLIT_IRQCHIP};
use kvm_ioctls::Kvm;

const PIN: u32 = 5;
const VECTOR: u32 = 0x45;

#[test]
fn an_intx_line_asserts_its_ioapic_pin_and_is_refused_on_an_msi_gsi() {
    let Some((_kvm, vm)) = kvm_vm_with_irqchip() else {
        return;
    };
    let apic = LocalApic::new(&vm, 0).unwrap();
    route_ioapic_pin(&vm, PIN as usize, VECTOR as u8).unwrap();
    let router = Arc::new(Router::new(KvmBackend::new(vm.clone()).unwrap()).unwrap());
    let line = router.attach_intx(PIN).unwrap();
    assert_eq!(line.gsi(), PIN);
    assert_eq!(router.stats().irqfd_attaches, 1);
    assert!(!apic.pending(VECTOR as u8));
    line.trigger().write(1).unwrap();
    assert!(
        apic.wait_pending(VECTOR as u8),
        "the IOAPIC delivered the line's vector"
    );
    // KVM consumed the trigger; nothing acknowledged the interrupt, so no resample.
    assert!(line.trigger().read().is_err());
    assert!(line.resample().read().is_err());
    // MSI GSIs are never acknowledged: refused before KVM is asked.
    let first_msi = 24;
    assert!(matches!(
        router.attach_intx(first_msi),
        Err(Error::NotAnIrqchipGsi { gsi: 24 })
    ));
    assert_eq!(router.stats().irqfd_attaches, 1);
    line.detach().unwrap();
    assert_eq!(router.stats().irqfd_detaches, 1);
    // The pin is free again: a new line binds to it.
    let again = router.attach_intx(PIN).unwrap();
    drop(again);
    assert_eq!(
        router.stats().irqfd_detaches,
        2,
        "dropping a line detaches it"
    );
}

/// With the IOAPIC in userspace (split irqchip) KVM cannot resample a line: EINVAL.
#[test]
fn a_split_irqchip_refuses_resample_irqfds() {
    // kvm_vm_with_irqchip creates a full irqchip; this test needs the other kind.
    if kvm_vm_with_irqchip().is_none() {
        return;
    }
    let kvm = Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = 24;
    vm.enable_cap(&cap).unwrap();
    // No irqchip pins are the router's to give here, so ask the backend directly.
    let backend = KvmBackend::without_irqchip_routes(Arc::new(vm)).unwrap();
    let fd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let resample = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let err = backend
        .attach_resample_irqfd(&fd, &resample, PIN)
        .unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    // A plain irqfd is fine there.
    backend.attach_irqfd(&fd, PIN).unwrap();
    backend.detach_irqfd(&fd, PIN).unwrap();
}
