// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Helpers for tests that need a real KVM VM (features `test-utils` and
//! `kvm`).

use std::sync::Arc;

use kvm_ioctls::{Kvm, VmFd};

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
