// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Helpers for tests that need a real KVM VM (features `test-utils` and
//! `kvm`).

use std::sync::Arc;

use kvm_bindings::{
    kvm_ioapic_state, kvm_ioapic_state__bindgen_ty_1, kvm_irqchip, kvm_irqchip__bindgen_ty_1,
    kvm_lapic_state, KVM_IRQCHIP_IOAPIC,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

/// The environment variable that turns "no /dev/kvm" from a skip into a
/// failure (CI sets it to `1`).
pub const REQUIRE_KVM_ENV: &str = "PASSTHROUGH_REQUIRE_KVM";

/// A VM with an in-kernel irqchip (`KVM_CREATE_IRQCHIP`), ready for GSI
/// routing and irqfds, or `None` when KVM is unavailable here.
///
/// When `/dev/kvm` cannot be opened or the VM cannot be set up, prints the
/// reason to stderr and returns `None`, so a test can return early; with
/// `PASSTHROUGH_REQUIRE_KVM=1` in the environment it panics with the reason
/// instead.
#[allow(clippy::panic)]
pub fn kvm_vm_with_irqchip() -> Option<(Kvm, Arc<VmFd>)> {
    match try_vm() {
        Ok(pair) => Some(pair),
        Err(reason) => {
            if std::env::var(REQUIRE_KVM_ENV).as_deref() == Ok("1") {
                panic!("{REQUIRE_KVM_ENV}=1 but KVM is unusable: {reason}");
            }
            eprintln!("skipping: KVM is unusable: {reason}");
            None
        }
    }
}

fn try_vm() -> std::result::Result<(Kvm, Arc<VmFd>), String> {
    let kvm = Kvm::new().map_err(|e| format!("opening /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    Ok((kvm, Arc::new(vm)))
}

const APIC_SVR: usize = 0xf0;
const APIC_IRR: usize = 0x200;

/// The local APIC of a vCPU that never runs: interrupts KVM delivers to it show up in its
/// interrupt request register (`KVM_GET_LAPIC`), which is how tests see delivery.
#[derive(Debug)]
pub struct LocalApic {
    vcpu: VcpuFd,
}

fn lapic_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(state.regs.iter().skip(offset)) {
        *b = *r as u8;
    }
    u32::from_le_bytes(bytes)
}

fn set_lapic_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in state.regs.iter_mut().skip(offset).zip(value.to_le_bytes()) {
        *dst = src as _;
    }
}

impl LocalApic {
    /// vCPU 0 of `vm` (APIC ID 0) with its local APIC software-enabled and nothing pending.
    pub fn new(vm: &VmFd) -> vmm_sys_util::errno::Result<Self> {
        let apic = LocalApic {
            vcpu: vm.create_vcpu(0)?,
        };
        apic.clear()?;
        Ok(apic)
    }

    /// Enable the APIC (SVR bit 8) and clear every pending request.
    pub fn clear(&self) -> vmm_sys_util::errno::Result<()> {
        let mut state = self.vcpu.get_lapic()?;
        set_lapic_reg(&mut state, APIC_SVR, 0x1ff);
        for i in 0..8 {
            set_lapic_reg(&mut state, APIC_IRR + 0x10 * i, 0);
        }
        self.vcpu.set_lapic(&state)
    }

    /// Whether `vector` is pending.
    pub fn pending(&self, vector: u32) -> vmm_sys_util::errno::Result<bool> {
        let state = self.vcpu.get_lapic()?;
        let word = lapic_reg(&state, APIC_IRR + 0x10 * (vector as usize / 32));
        Ok(word & (1 << (vector % 32)) != 0)
    }

    /// Wait (bounded: KVM may inject from a work item) until `vector` is pending.
    pub fn wait_pending(&self, vector: u32) -> vmm_sys_util::errno::Result<bool> {
        for _ in 0..200 {
            if self.pending(vector)? {
                return Ok(true);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(false)
    }
}

/// Program the in-kernel IOAPIC so pin `pin` is level-triggered, active high, unmasked, with
/// fixed delivery of `vector` to APIC ID 0, and every other pin masked.
pub fn route_ioapic_pin(vm: &VmFd, pin: usize, vector: u8) -> vmm_sys_util::errno::Result<()> {
    let masked = kvm_ioapic_state__bindgen_ty_1 { bits: 1 << 16 };
    let mut redirtbl = [masked; 24];
    if let Some(entry) = redirtbl.get_mut(pin) {
        *entry = kvm_ioapic_state__bindgen_ty_1 {
            bits: u64::from(vector) | (1 << 15),
        };
    }
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
    vm.set_irqchip(&chip)
}
