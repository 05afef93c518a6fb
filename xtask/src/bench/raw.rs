// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The raw-ioctl floor: the same routes and irqfds the library sets up, issued directly with
//! kvm-ioctls and nothing in between. The library's cost is reported as a ratio to this.

use std::time::Instant;

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{Kvm, VmFd};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::model::{RunSample, Strategy};
use super::msg::{guest_message, retargeted_message, FIRST_MSI_GSI};

/// The routes KVM_CREATE_IRQCHIP installs on x86: GSI 0-15 to both PICs and the IOAPIC,
/// 16-23 to the IOAPIC only. KVM_SET_GSI_ROUTING replaces the whole table, so they go first.
pub fn irqchip_routes() -> Vec<kvm_irq_routing_entry> {
    let chip = |gsi: u32, irqchip: u32, pin: u32| kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            irqchip: kvm_irq_routing_irqchip { irqchip, pin },
        },
        ..Default::default()
    };
    let mut v = Vec::with_capacity(40);
    for gsi in 0..24u32 {
        if gsi < 8 {
            v.push(chip(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            v.push(chip(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
        v.push(chip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    v
}

fn msi_route(vf: u32, vector: u32, vectors: u32) -> kvm_irq_routing_entry {
    let m = guest_message(vf, vector);
    kvm_irq_routing_entry {
        gsi: FIRST_MSI_GSI + vf * vectors + vector,
        type_: KVM_IRQ_ROUTING_MSI,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            msi: kvm_irq_routing_msi {
                address_lo: m.address as u32,
                address_hi: (m.address >> 32) as u32,
                data: m.data,
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

/// A fresh VM with an in-kernel irqchip.
pub fn fresh_vm(kvm: &Kvm) -> Result<VmFd, String> {
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    vm.create_irq_chip()
        .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
    Ok(vm)
}

struct Table<'a> {
    vm: &'a VmFd,
    entries: Vec<kvm_irq_routing_entry>,
    commits: u64,
}

impl Table<'_> {
    fn commit(&mut self) -> Result<(), String> {
        let routing = KvmIrqRouting::from_entries(&self.entries)
            .map_err(|e| format!("routing table of {}: {e:?}", self.entries.len()))?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|e| format!("KVM_SET_GSI_ROUTING: {e}"))?;
        self.commits += 1;
        Ok(())
    }
}

fn eventfd() -> Result<EventFd, String> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))
}

/// The eventfds the VFs' devices hold when the window opens, made as vmm-glue's devices make
/// theirs when they are opened (`VectorSet::new`): VF by VF, vector by vector, the vector's
/// irqfd and then its userspace eventfd. The floor binds the irqfds of the routed vectors and
/// never touches the userspace ones. They are there because what the window's
/// `KVM_SET_GSI_ROUTING` and `KVM_IRQFD`s cost depends on the kernel objects made just before
/// it (README's benchmark section has the measurement): so both windows start from the same
/// kernel state.
struct DeviceEventfds {
    /// Every vector's irqfd, in VF order.
    irqfds: std::vec::IntoIter<EventFd>,
    /// Every vector's userspace eventfd: held, never used.
    _userspace: Vec<EventFd>,
}

impl DeviceEventfds {
    fn new(vectors: u32) -> Result<Self, String> {
        let mut irqfds = Vec::with_capacity(vectors as usize);
        let mut userspace = Vec::with_capacity(vectors as usize);
        for _ in 0..vectors {
            irqfds.push(eventfd()?);
            userspace.push(eventfd()?);
        }
        Ok(DeviceEventfds {
            irqfds: irqfds.into_iter(),
            _userspace: userspace,
        })
    }

    /// The next vector's irqfd.
    fn next_irqfd(&mut self) -> Result<EventFd, String> {
        self.irqfds
            .next()
            .ok_or_else(|| "no irqfd left".to_string())
    }
}

/// Binds `fd` to `gsi` and keeps it for the rest of the run.
fn attach(vm: &VmFd, fd: EventFd, gsi: u32, fds: &mut Vec<EventFd>) -> Result<(), String> {
    vm.register_irqfd(&fd, gsi)
        .map_err(|e| format!("KVM_IRQFD gsi {gsi}: {e}"))?;
    fds.push(fd);
    Ok(())
}

/// One timed raw run of `strategy` in a fresh VM. Only the first `limit` vectors (in VF
/// order) get a route and an irqfd, as the library's router hands out GSIs; the others are
/// counted as delivered through userspace.
pub fn run(
    kvm: &Kvm,
    strategy: Strategy,
    vfs: u32,
    vectors: u32,
    limit: u32,
) -> Result<RunSample, String> {
    let vm = fresh_vm(kvm)?;
    let mut t = Table {
        vm: &vm,
        entries: irqchip_routes(),
        commits: 0,
    };
    let total = vfs * vectors;
    let routed = total.min(limit);
    let mut fds = Vec::with_capacity(routed as usize);
    // The eventfds exist before the window, as a device's do once it is opened; the routed
    // vectors (the first `routed`, in VF order) take theirs in order.
    let mut devices = DeviceEventfds::new(total)?;
    let mut eventfd = || devices.next_irqfd();
    let mut sample = RunSample {
        userspace_vectors: u64::from(total - routed),
        ..RunSample::default()
    };
    // Irqfds are bound once their routes are committed. Vector `v` of VF `vf` is vector
    // `vf * vectors + v` of the VM; it has a route only below `limit`.
    let index = |vf: u32, v: u32| vf * vectors + v;
    let gsi = |vf: u32, v: u32| FIRST_MSI_GSI + index(vf, v);
    let has_route = |vf: u32, v: u32| index(vf, v) < limit;
    match strategy {
        Strategy::PerVector => {
            for vf in 0..vfs {
                let start = Instant::now();
                for v in (0..vectors).filter(|v| has_route(vf, *v)) {
                    let fd = eventfd()?;
                    t.entries.push(msi_route(vf, v, vectors));
                    t.commit()?;
                    attach(&vm, fd, gsi(vf, v), &mut fds)?;
                }
                sample.per_vf.push(start.elapsed());
                sample.irqfds_after_vf.push(fds.len() as u64);
            }
        }
        Strategy::PerDevice => {
            for vf in 0..vfs {
                let start = Instant::now();
                let mine: Vec<u32> = (0..vectors).filter(|v| has_route(vf, *v)).collect();
                let new: Vec<EventFd> = mine.iter().map(|_| eventfd()).collect::<Result<_, _>>()?;
                t.entries
                    .extend(mine.iter().map(|v| msi_route(vf, *v, vectors)));
                if !mine.is_empty() {
                    t.commit()?;
                }
                for (v, fd) in mine.iter().zip(new) {
                    attach(&vm, fd, gsi(vf, *v), &mut fds)?;
                }
                sample.per_vf.push(start.elapsed());
                sample.irqfds_after_vf.push(fds.len() as u64);
            }
        }
        Strategy::VmWide => {
            // Per VF: its eventfds and routes. The one commit and every irqfd close the window.
            let mut pending = Vec::with_capacity(routed as usize);
            for vf in 0..vfs {
                let start = Instant::now();
                for v in (0..vectors).filter(|v| has_route(vf, *v)) {
                    pending.push((eventfd()?, gsi(vf, v)));
                    t.entries.push(msi_route(vf, v, vectors));
                }
                sample.per_vf.push(start.elapsed());
                sample.irqfds_after_vf.push(fds.len() as u64);
            }
            let start = Instant::now();
            t.commit()?;
            for (fd, g) in pending {
                attach(&vm, fd, g, &mut fds)?;
            }
            sample.closing = start.elapsed();
        }
        Strategy::Staged => {
            // Before the window: the precopied routes committed and every irqfd bound.
            let start = Instant::now();
            for vf in 0..vfs {
                t.entries.extend(
                    (0..vectors)
                        .filter(|v| has_route(vf, *v))
                        .map(|v| msi_route(vf, v, vectors)),
                );
            }
            t.commit()?;
            for vf in 0..vfs {
                for v in (0..vectors).filter(|v| has_route(vf, *v)) {
                    attach(&vm, eventfd()?, gsi(vf, v), &mut fds)?;
                }
            }
            sample.staging = start.elapsed();
            sample.staged_commits = t.commits;
            // Window: the difference (vector 0 of each VF retargeted) staged in the table; the
            // commit is deferred past the resume, as the library's switchover does.
            let chip = irqchip_routes().len();
            for vf in 0..vfs {
                let start = Instant::now();
                if has_route(vf, 0) {
                    let m = retargeted_message(vf, 0);
                    if let Some(e) = t.entries.get_mut(chip + index(vf, 0) as usize) {
                        e.u.msi = kvm_irq_routing_msi {
                            address_lo: m.address as u32,
                            address_hi: (m.address >> 32) as u32,
                            data: m.data,
                            ..Default::default()
                        };
                    }
                }
                sample.per_vf.push(start.elapsed());
                sample.irqfds_after_vf.push(fds.len() as u64);
            }
            sample.gsi_routing_commits = t.commits - sample.staged_commits;
            let start = Instant::now();
            let before = t.commits;
            t.commit()?;
            sample.deferred = start.elapsed();
            sample.deferred_commits = t.commits - before;
            sample.irqfds = fds.len() as u64;
            sample.routes = (t.entries.len() - chip) as u64;
            return Ok(sample);
        }
    }
    sample.gsi_routing_commits = t.commits;
    sample.irqfds = fds.len() as u64;
    sample.routes = (t.entries.len() - irqchip_routes().len()) as u64;
    // Tear the VM down outside the window.
    drop(fds);
    drop(vm);
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KVM's route limit for MSI routes: `KVM_CAP_IRQ_ROUTING` entries minus the irqchip routes
    /// every table carries.
    fn msi_route_limit(kvm: &Kvm) -> Result<u32, String> {
        let vm = fresh_vm(kvm)?;
        let cap = vm.check_extension_int(kvm_ioctls::Cap::IrqRouting);
        let cap = u32::try_from(cap).map_err(|_| format!("KVM_CAP_IRQ_ROUTING is {cap}"))?;
        let chip = u32::try_from(irqchip_routes().len()).unwrap_or(u32::MAX);
        Ok(cap.saturating_sub(chip))
    }

    #[test]
    fn irqchip_table_has_forty_routes_without_duplicates() {
        let r = irqchip_routes();
        assert_eq!(r.len(), 40);
        assert!(r.iter().all(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP));
        // Sixteen GSIs reach a PIC and the IOAPIC, eight the IOAPIC only.
        let gsis: std::collections::BTreeSet<u32> = r.iter().map(|e| e.gsi).collect();
        assert_eq!(gsis.len(), 24);
    }

    #[test]
    fn raw_counts_match_the_strategy() {
        let Some(kvm) = super::super::kvm_or_skip("raw_counts_match_the_strategy") else {
            return;
        };
        let limit = msi_route_limit(&kvm).unwrap();
        // KVM_CAP_IRQ_ROUTING is 4096 on x86, 40 entries of which the irqchip's.
        assert_eq!(limit, 4096 - 40);
        let pv = run(&kvm, Strategy::PerVector, 2, 3, limit).unwrap();
        assert_eq!((pv.gsi_routing_commits, pv.irqfds), (6, 6));
        assert_eq!(pv.irqfds_after_vf, [3, 6]);
        let pd = run(&kvm, Strategy::PerDevice, 2, 3, limit).unwrap();
        assert_eq!((pd.gsi_routing_commits, pd.irqfds), (2, 6));
        assert_eq!(pd.irqfds_after_vf, [3, 6]);
        let vw = run(&kvm, Strategy::VmWide, 2, 3, limit).unwrap();
        assert_eq!((vw.gsi_routing_commits, vw.irqfds), (1, 6));
        assert_eq!(vw.irqfds_after_vf, [0, 0]);
        let st = run(&kvm, Strategy::Staged, 2, 3, limit).unwrap();
        assert_eq!(
            (
                st.staged_commits,
                st.gsi_routing_commits,
                st.deferred_commits,
                st.irqfds
            ),
            (1, 0, 1, 6)
        );
        assert_eq!(st.irqfds_after_vf, [6, 6]);
        assert!(st.staging > std::time::Duration::ZERO);
        for s in [&pv, &pd, &vw, &st] {
            assert_eq!((s.routes, s.userspace_vectors), (6, 0));
        }
    }

    #[test]
    fn vectors_past_the_limit_get_no_route_and_no_irqfd() {
        let Some(kvm) = super::super::kvm_or_skip("vectors_past_the_limit_get_no_route") else {
            return;
        };
        // Two VFs of three vectors, four routes allowed: the second VF keeps one.
        for strategy in Strategy::ALL {
            let s = run(&kvm, strategy, 2, 3, 4).unwrap();
            assert_eq!((s.routes, s.irqfds), (4, 4), "{strategy}");
            assert_eq!(s.userspace_vectors, 2, "{strategy}");
        }
        let pv = run(&kvm, Strategy::PerVector, 2, 3, 4).unwrap();
        assert_eq!(pv.gsi_routing_commits, 4);
        assert_eq!(pv.irqfds_after_vf, [3, 4]);
    }
}
