// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The measured path: vmm-glue's resume (`restore_all`, `StagedRestore`) on simulated VFs.
//!
//! Once, untimed: N simulated VFs with M vectors are programmed by vmm-glue's scripted guest
//! (config and MSI-X table writes, every vector unmasked) on a source VM and saved. Then, for
//! each strategy and rep: a fresh VM and router, fresh devices over fresh simulated VFs
//! (opening and probing a device, which creates its eventfds, happens before a real resume
//! too), and the timed restore, one VF at a time so each VF's cost is seen.
//!
//! `staged`'s window is the switchover only (the downtime): `StagedRestore::switchover` opened
//! with no device and each VF restored inside it, which is what `switchover` does for all
//! devices at once. The staging before it (`StagedRestore::stage` from the precopied state)
//! and the deferred routing commit after the resume (`DeferredCommit::commit`) are timed and
//! counted apart, so the strategy's whole work is known too.
//!
//! With more vectors than the backend has routes, the vectors past the limit get no route
//! (the router refuses them) and deliver through userspace; each run counts them from the
//! devices' routes.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use bar_mmap::{HostResourceSpace, PageSize};
use irq_routing::{RouteState, Router};
use migration_state::DeviceState;
use vfio_core::sim::{MsixPlacement, SimDevice};
use vmm_glue::{
    restore_all, scripted_guest, DeferredCommit, DeviceOptions, PassthroughDevice, StagedRestore,
    VmResources,
};

use super::backends::Backends;
use super::model::{RunSample, Strategy};
use super::timed_device::{spent, TimedDevice};

/// A simulated VF: two 16 KiB BARs, MSI-X with `vectors` entries in BAR 3.
pub fn sim_vf(vectors: u16) -> Result<Arc<SimDevice>, String> {
    SimDevice::builder(0x8086, 0x154c)
        .bar(0, pci_config::BarKind::Mem64, 0x4000, false)
        .bar(3, pci_config::BarKind::Mem64, 0x4000, false)
        .msix(MsixPlacement::in_bar(vectors, 3))
        .build()
        .map(Arc::new)
        .map_err(|e| format!("simulated VF: {e}"))
}

fn resources(router: Arc<Router>) -> Result<VmResources, String> {
    let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)
        .map_err(|e| format!("host resource space: {e}"))?
        .into_shared();
    Ok(VmResources::new(router, host, PageSize::SIZE_4K))
}

struct Vm {
    router: Arc<Router>,
    sims: Vec<Arc<SimDevice>>,
    devs: Vec<PassthroughDevice>,
    /// Nanoseconds spent inside the simulated devices.
    device_nanos: Arc<AtomicU64>,
}

fn build_vm(router: Router, vfs: u32, vectors: u16) -> Result<Vm, String> {
    let router = Arc::new(router);
    let res = resources(router.clone())?;
    let sims = (0..vfs)
        .map(|_| sim_vf(vectors))
        .collect::<Result<Vec<_>, _>>()?;
    let device_nanos = Arc::new(AtomicU64::new(0));
    let devs = sims
        .iter()
        .zip(0u32..)
        .map(|(s, id)| {
            let opts = DeviceOptions {
                id,
                ..DeviceOptions::default()
            };
            let timed = TimedDevice::new(s.clone(), device_nanos.clone());
            PassthroughDevice::new(Arc::new(timed), &res, opts)
                .map_err(|e| format!("PassthroughDevice {id}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Vm {
        router,
        sims,
        devs,
        device_nanos,
    })
}

/// Drives vmm-glue's restore for every strategy.
#[derive(Debug)]
pub struct GlueDriver<'a> {
    backends: Backends<'a>,
    vfs: u32,
    vectors: u16,
    /// What the source VM's devices looked like when precopied.
    precopy: Vec<DeviceState>,
    /// What they looked like at the switchover: vector 0 of each VF was retargeted in between.
    last: Vec<DeviceState>,
}

impl<'a> GlueDriver<'a> {
    /// Programs and saves the source VM's devices (untimed).
    pub fn new(backends: Backends<'a>, vfs: u32, vectors: u32) -> Result<Self, String> {
        let vectors =
            u16::try_from(vectors).map_err(|_| format!("{vectors} vectors do not fit MSI-X"))?;
        let mut src = build_vm(Backends::memory().fresh_router()?, vfs, vectors)?;
        let (mut mmio, mut pio) = (0xc000_0000u64, 0x1000u64);
        for (i, d) in src.devs.iter_mut().enumerate() {
            scripted_guest::place_bars(d, &mut mmio, &mut pio, false);
            let prog = scripted_guest::program_msix(d, i, |_| true)
                .ok_or_else(|| format!("VF {i}: the guest found no MSI-X table"))?;
            if prog.vectors != vectors {
                return Err(format!("VF {i}: guest sees {} vectors", prog.vectors));
            }
        }
        let precopy: Vec<DeviceState> = src.devs.iter().map(|d| d.save()).collect();
        // Between the precopy and the switchover the guest moves one vector per VF (an IRQ
        // balancer's retarget): the difference a staged restore commits.
        let last = precopy
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if let Some(e) = s.msix.as_mut().and_then(|m| m.entries.first_mut()) {
                    e.address = super::msg::retargeted(e.address);
                }
                s
            })
            .collect();
        Ok(GlueDriver {
            backends,
            vfs,
            vectors,
            precopy,
            last,
        })
    }

    /// MSI-X vectors per VF.
    pub fn vectors(&self) -> u32 {
        u32::from(self.vectors)
    }

    /// One timed restore of every VF into a fresh VM under `strategy`.
    pub fn run(&self, strategy: Strategy) -> Result<RunSample, String> {
        let mut vm = build_vm(self.backends.fresh_router()?, self.vfs, self.vectors)?;
        let router = vm.router.clone();
        let mut sample = RunSample::default();
        let mut staged = None;
        if strategy == Strategy::Staged {
            // Off the critical path: everything from the precopied state, one commit.
            let device0 = spent(&vm.device_nanos);
            let start = Instant::now();
            staged = Some(
                StagedRestore::stage(&router, vm.devs.iter_mut().zip(&self.precopy))
                    .map_err(|e| format!("staging: {e}"))?,
            );
            sample.staging = start.elapsed();
            sample.staging_device = spent(&vm.device_nanos).saturating_sub(device0);
            sample.staged_commits = router.stats().commits;
        }
        let states = match strategy {
            Strategy::Staged => &self.last,
            _ => &self.precopy,
        };
        let deferred = window(&router, &mut vm, strategy, staged, states, &mut sample)?;
        if let Some(deferred) = deferred {
            // The VM has resumed: the commit of the switchover's difference, then the triggers
            // of the retargeted vectors move back to their irqfds.
            let (commits1, set_irqs1) = (router.stats().commits, set_irqs(&vm.sims));
            let device1 = spent(&vm.device_nanos);
            let start = Instant::now();
            deferred
                .commit(vm.devs.iter_mut())
                .map_err(|e| format!("deferred commit: {e}"))?;
            sample.deferred = start.elapsed();
            sample.deferred_device = spent(&vm.device_nanos).saturating_sub(device1);
            sample.deferred_commits = router.stats().commits - commits1;
            sample.deferred_set_irqs = set_irqs(&vm.sims) - set_irqs1;
        }
        sample.irqfds = router.stats().irqfd_attaches;
        // Where every vector stands now: on its KVM route, or delivered through userspace
        // (past the route limit).
        let mut routed = 0u64;
        for d in &vm.devs {
            for v in 0..self.vectors {
                let state = d.msix_route(v).and_then(|id| router.route_state(id));
                if matches!(state, Some(RouteState::Routed { .. })) {
                    routed += 1;
                } else {
                    sample.userspace_vectors += 1;
                }
            }
        }
        sample.routes = router.committed_table().len() as u64;
        if routed != sample.routes {
            return Err(format!(
                "{}: {routed} vectors routed but {} routes committed",
                strategy.name(),
                sample.routes
            ));
        }
        Ok(sample)
    }
}

fn set_irqs(sims: &[Arc<SimDevice>]) -> u64 {
    sims.iter().map(|s| s.counters().set_irqs).sum()
}

/// Irqfds bound in the VM now, from the router's counters.
fn live_irqfds(router: &Router) -> u64 {
    let s = router.stats();
    s.irqfd_attaches
        .saturating_sub(s.failed_irqfd_attaches)
        .saturating_sub(s.irqfd_detaches)
}

/// The timed window of one run: every VF restored one at a time (each VF's cost seen), then
/// the VM-wide batch's closing commit; for `staged`, the switchover, whose deferred commit is
/// returned for after the window. Kept out of line so a profiler can be pointed at it
/// (`valgrind --tool=callgrind --toggle-collect='xtask::bench::glue::window'`).
#[inline(never)]
fn window<'r>(
    router: &'r Router,
    vm: &mut Vm,
    strategy: Strategy,
    staged: Option<StagedRestore>,
    states: &[DeviceState],
    sample: &mut RunSample,
) -> Result<Option<DeferredCommit<'r>>, String> {
    let commits0 = router.stats().commits;
    let device0 = spent(&vm.device_nanos);
    let set_irqs0 = set_irqs(&vm.sims);
    // Staged: the switchover's batch, held until the deferred commit after the window.
    let deferred = match staged {
        Some(st) => {
            let start = Instant::now();
            let d = st
                .switchover(router, std::iter::empty())
                .map_err(|e| format!("switchover: {e}"))?;
            sample.closing = start.elapsed();
            Some(d)
        }
        None => None,
    };
    // VM-wide holds one outer batch across every device (as restore_all does), staged the
    // switchover's; each device is restored on its own here so its cost can be timed.
    let outer = (strategy == Strategy::VmWide).then(|| router.batch());
    for (vf, (dev, state)) in vm.devs.iter_mut().zip(states).enumerate() {
        let start = Instant::now();
        restore_all(router, std::iter::once((dev, state)), strategy)
            .map_err(|e| format!("restore VF {vf}: {e}"))?;
        sample.per_vf.push(start.elapsed());
        sample.irqfds_after_vf.push(live_irqfds(router));
    }
    if let Some(outer) = outer {
        let start = Instant::now();
        // Ended as restore_all ends its own: without the per-route report.
        outer.finish().map_err(|e| format!("outer commit: {e}"))?;
        for d in vm.devs.iter_mut() {
            d.sync_after_commit();
        }
        sample.closing = start.elapsed();
    }
    sample.device = spent(&vm.device_nanos).saturating_sub(device0);
    sample.gsi_routing_commits = router.stats().commits - commits0;
    sample.set_irqs_calls = set_irqs(&vm.sims) - set_irqs0;
    Ok(deferred)
}
