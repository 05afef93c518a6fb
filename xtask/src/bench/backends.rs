// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where each run's fresh router comes from: a new KVM VM, or the in-memory backend, with the
//! MSI routes it offers optionally capped (`--route-limit`).

use std::ops::Range;
use std::sync::Arc;

use irq_routing::{RouteEntry, Router, RoutingBackend};
use kvm_ioctls::Kvm;
use vmm_sys_util::errno;
use vmm_sys_util::eventfd::EventFd;

/// Where each run gets its fresh routing backend from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A fresh KVM VM with an in-kernel irqchip per run.
    Kvm(&'a Kvm),
    /// A fresh in-memory backend per run (no /dev/kvm).
    Memory,
}

/// A source of fresh routers, and the route cap they share.
#[derive(Debug, Clone, Copy)]
pub struct Backends<'a> {
    /// Where the backend comes from.
    pub source: Source<'a>,
    /// At most this many MSI routes (`None`: what the backend offers).
    pub cap: Option<u32>,
}

impl Backends<'_> {
    /// An in-memory source with no cap (the source VM the states are saved from).
    pub fn memory() -> Backends<'static> {
        Backends {
            source: Source::Memory,
            cap: None,
        }
    }

    /// A router over a fresh backend.
    pub fn fresh_router(&self) -> Result<Router, String> {
        match self.source {
            Source::Kvm(kvm) => {
                let vm = super::raw::fresh_vm(kvm)?;
                let backend = irq_routing::KvmBackend::new(Arc::new(vm))
                    .map_err(|e| format!("KvmBackend: {e}"))?;
                router(Capped::new(backend, self.cap))
            }
            Source::Memory => router(Capped::new(irq_routing::MemoryBackend::new(), self.cap)),
        }
    }

    /// The MSI routes each fresh router offers.
    pub fn route_limit(&self) -> Result<u32, String> {
        Ok(self.fresh_router()?.route_limit())
    }
}

fn router(backend: impl RoutingBackend + 'static) -> Result<Router, String> {
    Router::new(backend).map_err(|e| format!("Router::new: {e}"))
}

/// A backend that offers at most `cap` of the inner backend's MSI GSIs (the lowest ones), so a
/// small run can reach the route limit; everything else goes to the inner backend as is.
#[derive(Debug)]
struct Capped<B> {
    inner: B,
    gsis: Range<u32>,
}

impl<B: RoutingBackend> Capped<B> {
    fn new(inner: B, cap: Option<u32>) -> Self {
        let all = inner.msi_gsi_range();
        let end = match cap {
            Some(c) => all.start.saturating_add(c).min(all.end),
            None => all.end,
        };
        Capped {
            inner,
            gsis: all.start..end,
        }
    }
}

impl<B: RoutingBackend> RoutingBackend for Capped<B> {
    fn msi_gsi_range(&self) -> Range<u32> {
        self.gsis.clone()
    }

    fn commit_table(&self, routes: &[RouteEntry]) -> errno::Result<()> {
        self.inner.commit_table(routes)
    }

    fn attach_irqfd(&self, fd: &EventFd, gsi: u32) -> errno::Result<()> {
        self.inner.attach_irqfd(fd, gsi)
    }

    fn detach_irqfd(&self, fd: &EventFd, gsi: u32) -> errno::Result<()> {
        self.inner.detach_irqfd(fd, gsi)
    }

    fn attach_resample_irqfd(
        &self,
        fd: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> errno::Result<()> {
        self.inner.attach_resample_irqfd(fd, resample, gsi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_lowers_the_route_limit_and_never_raises_it() {
        let capped = Backends {
            source: Source::Memory,
            cap: Some(6),
        };
        assert_eq!(capped.route_limit().unwrap(), 6);
        let router = capped.fresh_router().unwrap();
        for v in 0..6 {
            router
                .add_msi_route(irq_routing::MsiMessage::new(0xfee0_0000, v), None)
                .unwrap();
        }
        assert!(matches!(
            router.add_msi_route(irq_routing::MsiMessage::new(0xfee0_0000, 6), None),
            Err(irq_routing::Error::RouteLimit { limit: 6 })
        ));
        let huge = Backends {
            source: Source::Memory,
            cap: Some(1 << 20),
        };
        assert_eq!(huge.route_limit().unwrap(), 4096 - 40);
        assert_eq!(Backends::memory().route_limit().unwrap(), 4096 - 40);
    }
}
