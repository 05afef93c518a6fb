// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where each run's fresh router comes from: a new KVM VM, or the in-memory backend.

use std::sync::Arc;

use irq_routing::{Router, RoutingBackend};
use kvm_ioctls::Kvm;

/// Where each run gets its fresh routing backend from.
#[derive(Debug)]
pub enum Backends<'a> {
    /// A fresh KVM VM with an in-kernel irqchip per run.
    Kvm(&'a Kvm),
    /// A fresh in-memory backend per run (no /dev/kvm).
    Memory,
}

impl Backends<'_> {
    /// A router over a fresh backend.
    pub fn fresh_router(&self) -> Result<Router, String> {
        match self {
            Backends::Kvm(kvm) => {
                let vm = super::raw::fresh_vm(kvm)?;
                let backend = irq_routing::KvmBackend::new(Arc::new(vm))
                    .map_err(|e| format!("KvmBackend: {e}"))?;
                router(backend)
            }
            Backends::Memory => router(irq_routing::MemoryBackend::new()),
        }
    }
}

fn router(backend: impl RoutingBackend + 'static) -> Result<Router, String> {
    Router::new(backend).map_err(|e| format!("Router::new: {e}"))
}
