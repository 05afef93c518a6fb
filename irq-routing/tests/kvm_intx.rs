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
use std::thread::sleep;
use std::time::Duration;

use irq_routing::testing::kvm_vm_with_irqchip;
use irq_routing::{Error, KvmBackend, Router, RoutingBackend};
use kvm_bindings::{
    kvm_enable_cap, kvm_ioapic_state, kvm_ioapic_state__bindgen_ty_1, kvm_irqchip,
    kvm_irqchip__bindgen_ty_1, kvm_lapic_state, KVM_CAP_SPLIT_IRQCHIP, KVM_IRQCHIP_IOAPIC,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

const APIC_SVR: usize = 0xf0;
const APIC_IRR: usize = 0x200;
const PIN: u32 = 5;
const VECTOR: u32 = 0x45;

fn lapic_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let b: Vec<u8> = state.regs[offset..offset + 4]
        .iter()
        .map(|b| *b as u8)
        .collect();
    u32::from_le_bytes(b.try_into().unwrap())
}

fn set_lapic_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in state.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

/// vCPU 0 with its local APIC software-enabled and nothing pending.
fn enabled_apic(vm: &VmFd) -> VcpuFd {
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut state = vcpu.get_lapic().unwrap();
    set_lapic_reg(&mut state, APIC_SVR, 0x1ff);
    for i in 0..8 {
        set_lapic_reg(&mut state, APIC_IRR + 0x10 * i, 0);
    }
    vcpu.set_lapic(&state).unwrap();
    vcpu
}

fn pending(vcpu: &VcpuFd, vector: u32) -> bool {
    let state = vcpu.get_lapic().unwrap();
    lapic_reg(&state, APIC_IRR + 0x10 * (vector as usize / 32)) & (1 << (vector % 32)) != 0
}

/// An IOAPIC whose pin `PIN` is level-triggered, active high, unmasked, fixed delivery of
/// `VECTOR` to APIC ID 0; every other pin masked.
fn program_ioapic(vm: &VmFd) {
    let masked = kvm_ioapic_state__bindgen_ty_1 { bits: 1 << 16 };
    let mut redirtbl = [masked; 24];
    redirtbl[PIN as usize] = kvm_ioapic_state__bindgen_ty_1 {
        bits: u64::from(VECTOR) | (1 << 15),
    };
    let chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        pad: 0,
        chip: kvm_irqchip__bindgen_ty_1 {
            ioapic: kvm_ioapic_state {
                base_address: 0xfec0_0000,
                ioregsel: 0,
                id: 0,
                irr: 0,
                pad: 0,
                redirtbl,
            },
        },
    };
    vm.set_irqchip(&chip).unwrap();
}

fn wait_pending(vcpu: &VcpuFd, vector: u32) -> bool {
    (0..200).any(|_| {
        let hit = pending(vcpu, vector);
        if !hit {
            sleep(Duration::from_millis(5));
        }
        hit
    })
}

#[test]
fn an_intx_line_asserts_its_ioapic_pin_and_is_refused_on_an_msi_gsi() {
    let Some((_kvm, vm)) = kvm_vm_with_irqchip() else {
        return;
    };
    let vcpu = enabled_apic(&vm);
    program_ioapic(&vm);
    let router = Arc::new(Router::new(KvmBackend::new(vm.clone()).unwrap()).unwrap());
    let line = router.attach_intx(PIN).unwrap();
    assert_eq!(line.gsi(), PIN);
    assert_eq!(router.stats().irqfd_attaches, 1);
    assert!(!pending(&vcpu, VECTOR));
    line.trigger().write(1).unwrap();
    assert!(
        wait_pending(&vcpu, VECTOR),
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
