// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Helpers for tests that need a real KVM VM (features `test-utils` and
//! `kvm`), and for tests that run one body on both routing backends.
//!
//! [`TestVm`] is a VM a test routes on: the in-memory backend, or a real KVM
//! VM with an in-kernel irqchip and eight vCPUs (never run) whose local APICs
//! are software-enabled, so that delivery can be observed. [`both_backends!`](crate::both_backends)
//! instantiates a test body `fn name(backend: TestBackend)` once per backend.
//!
//! # How delivery is observed on KVM
//!
//! KVM has no call to read the routing table back, and `KVM_SIGNAL_MSI` needs
//! a vCPU. So [`TestVm::delivers`] signals an irqfd: KVM's irqfd wakeup
//! consumes the eventfd counter (a non-blocking read of the eventfd then fails
//! with `EAGAIN`: the irqfd is bound), looks up the GSI's route and injects the
//! MSI, whose vector then shows up in the IRR of the destination's local APIC
//! (read with `KVM_GET_LAPIC`). That proves the route is in KVM's committed
//! table with the message the router gave it and that the irqfd is bound to
//! its GSI. A message KVM does not put in an IRR (a delivery mode other than
//! fixed or lowest priority, a destination past the eight vCPUs) is checked
//! by consumption alone. On the in-memory backend the same calls check the
//! backend's committed table and irqfd bindings instead.

use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::{KvmBackend, MemoryBackend, MsiMessage, Router};

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
pub fn kvm_vm_with_irqchip() -> Option<(Kvm, Arc<VmFd>)> {
    unusable_is_a_skip(try_vm())
}

#[allow(clippy::panic)]
fn unusable_is_a_skip<T>(r: std::result::Result<T, String>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
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

/// Instantiates each test body `fn name(backend: TestBackend)` twice, as
/// `memory::name` and `kvm::name`, so one body runs on the in-memory backend
/// and on real KVM. A KVM test skips where KVM is unusable (the body gets
/// `None` from [`TestVm::new`]) and fails with `PASSTHROUGH_REQUIRE_KVM=1`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::testing::TestBackend::Memory)
                }
            )*
        }
        mod kvm {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::testing::TestBackend::Kvm)
                }
            )*
        }
    };
}

/// Which backend a test body runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    /// [`MemoryBackend`]: counts, failure injection, a readable table.
    Memory,
    /// [`KvmBackend`] on a real VM; delivery observed through local APICs.
    Kvm,
}

/// vCPUs (APIC IDs 0..) a KVM [`TestVm`] creates to observe delivery.
pub const TEST_VCPUS: u8 = 8;

const APIC_SVR: usize = 0xf0;
const APIC_IRR: usize = 0x200;

/// How long a check waits for KVM to inject (KVM may inject from a work
/// item) before it concludes nothing came.
const INJECT_POLLS: u32 = 200;
const POLL: Duration = Duration::from_millis(5);
/// How long a check that expects nothing waits before it looks.
const SETTLE: Duration = Duration::from_millis(20);

/// The local APIC of a vCPU that never runs: interrupts KVM delivers to it show up in its
/// interrupt request register (`KVM_GET_LAPIC`), which is how tests see delivery.
#[derive(Debug)]
pub struct LocalApic {
    vcpu: VcpuFd,
}

impl LocalApic {
    /// vCPU `id` of `vm` (APIC ID `id`) with its local APIC software-enabled and nothing
    /// pending.
    pub fn new(vm: &VmFd, id: u8) -> std::result::Result<Self, String> {
        let vcpu = vm
            .create_vcpu(u64::from(id))
            .map_err(|e| format!("KVM_CREATE_VCPU {id}: {e}"))?;
        let apic = LocalApic { vcpu };
        apic.clear()?;
        Ok(apic)
    }

    fn reg(state: &kvm_lapic_state, offset: usize) -> u32 {
        let mut bytes = [0u8; 4];
        for (b, r) in bytes.iter_mut().zip(state.regs.iter().skip(offset)) {
            *b = *r as u8;
        }
        u32::from_le_bytes(bytes)
    }

    fn set_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
        for (dst, src) in state.regs.iter_mut().skip(offset).zip(value.to_le_bytes()) {
            *dst = src as _;
        }
    }

    /// Enables the APIC (SVR bit 8) and clears every pending request.
    pub fn clear(&self) -> std::result::Result<(), String> {
        let mut state = self
            .vcpu
            .get_lapic()
            .map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
        Self::set_reg(&mut state, APIC_SVR, 0x1ff);
        for i in 0..8 {
            Self::set_reg(&mut state, APIC_IRR + 0x10 * i, 0);
        }
        self.vcpu
            .set_lapic(&state)
            .map_err(|e| format!("KVM_SET_LAPIC: {e}"))
    }

    /// Whether `vector` is pending.
    pub fn pending(&self, vector: u8) -> bool {
        self.vcpu.get_lapic().is_ok_and(|state| {
            let word = Self::reg(&state, APIC_IRR + 0x10 * (usize::from(vector) / 32));
            word & (1 << (vector % 32)) != 0
        })
    }

    /// Waits (about a second at most: KVM may inject from a work item) until `vector` is
    /// pending.
    pub fn wait_pending(&self, vector: u8) -> bool {
        (0..INJECT_POLLS).any(|_| {
            let hit = self.pending(vector);
            if !hit {
                sleep(POLL);
            }
            hit
        })
    }
}

/// Program the in-kernel IOAPIC so pin `pin` is level-triggered, active high, unmasked, with
/// fixed delivery of `vector` to APIC ID 0, and every other pin masked.
pub fn route_ioapic_pin(vm: &VmFd, pin: usize, vector: u8) -> vmm_sys_util::errno::Result<()> {
    use kvm_bindings::{
        kvm_ioapic_state, kvm_ioapic_state__bindgen_ty_1, kvm_irqchip, kvm_irqchip__bindgen_ty_1,
        KVM_IRQCHIP_IOAPIC,
    };
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

/// Where an x86 MSI lands in a local APIC's IRR, if it does: the destination
/// APIC ID (physical mode, address bits 12-19) and the vector (data bits
/// 0-7), for fixed and lowest-priority delivery (data bits 8-10).
pub fn irr_target(msg: MsiMessage) -> Option<(u8, u8)> {
    let mode = (msg.data >> 8) & 7;
    let logical = msg.address & (1 << 2) != 0;
    let dest = ((msg.address >> 12) & 0xff) as u8;
    (mode <= 1 && !logical && dest < TEST_VCPUS).then_some((dest, (msg.data & 0xff) as u8))
}

enum Kind {
    Memory(MemoryBackend),
    Kvm {
        _kvm: Kvm,
        vm: Arc<VmFd>,
        apics: Vec<LocalApic>,
    },
}

/// A VM one test routes on (see the module docs).
pub struct TestVm {
    kind: Kind,
}

impl std::fmt::Debug for TestVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestVm")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl TestVm {
    /// A fresh VM on `backend`. On KVM: `None` (a printed skip) where KVM is
    /// unusable, and a panic instead with `PASSTHROUGH_REQUIRE_KVM=1`.
    pub fn new(backend: TestBackend) -> Option<Self> {
        let kind = match backend {
            TestBackend::Memory => Kind::Memory(MemoryBackend::new()),
            TestBackend::Kvm => {
                let (kvm, vm) = kvm_vm_with_irqchip()?;
                let apics = (0..TEST_VCPUS)
                    .map(|id| LocalApic::new(&vm, id))
                    .collect::<std::result::Result<Vec<_>, _>>();
                Kind::Kvm {
                    _kvm: kvm,
                    apics: unusable_is_a_skip(apics)?,
                    vm,
                }
            }
        };
        Some(TestVm { kind })
    }

    /// Which backend this is.
    pub fn backend(&self) -> TestBackend {
        match self.kind {
            Kind::Memory(_) => TestBackend::Memory,
            Kind::Kvm { .. } => TestBackend::Kvm,
        }
    }

    /// Whether this is a real KVM VM.
    pub fn is_kvm(&self) -> bool {
        self.backend() == TestBackend::Kvm
    }

    /// The in-memory backend, when this is one (to read its table and
    /// bindings, or to inject failures).
    pub fn memory(&self) -> Option<&MemoryBackend> {
        match &self.kind {
            Kind::Memory(m) => Some(m),
            Kind::Kvm { .. } => None,
        }
    }

    /// The KVM VM, when this is one.
    pub fn kvm_vm(&self) -> Option<&Arc<VmFd>> {
        match &self.kind {
            Kind::Memory(_) => None,
            Kind::Kvm { vm, .. } => Some(vm),
        }
    }

    /// A router for this VM (every call makes another one over the same VM or
    /// in-memory state).
    #[allow(clippy::expect_used)]
    pub fn router(&self) -> Router {
        match &self.kind {
            Kind::Memory(m) => Router::new(m.clone()).expect("router over the in-memory backend"),
            Kind::Kvm { vm, .. } => {
                Router::new(KvmBackend::new(vm.clone()).expect("KvmBackend")).expect("router")
            }
        }
    }

    /// Memory: whether `fd` is attached at a GSI whose committed entry holds
    /// `msg`'s address and data.
    fn memory_routes(m: &MemoryBackend, fd: &EventFd, msg: MsiMessage) -> bool {
        m.attached_gsi(fd).is_some_and(|gsi| {
            m.table()
                .iter()
                .any(|e| e.gsi == gsi && (e.msi.address, e.msi.data) == (msg.address, msg.data))
        })
    }

    /// KVM: waits until KVM has consumed `fd`'s counter and, where the
    /// message lands in an IRR, until its vector is pending there; then
    /// clears that APIC. False if that did not happen in about a second.
    fn kvm_took(apics: &[LocalApic], fd: &EventFd, msg: MsiMessage) -> bool {
        let target = irr_target(msg).and_then(|(dest, v)| Some((apics.get(usize::from(dest))?, v)));
        let mut consumed = false;
        for _ in 0..INJECT_POLLS {
            consumed = consumed || fd.read().is_err();
            if consumed && target.is_none_or(|(apic, v)| apic.pending(v)) {
                if let Some((apic, _)) = target {
                    let _ = apic.clear();
                }
                return true;
            }
            sleep(POLL);
        }
        false
    }

    /// Whether signalling `fd` now makes the VM receive `msg`: `fd` is bound
    /// to a GSI whose committed route injects `msg`. On KVM this signals `fd`
    /// and watches KVM consume it and the vector arrive.
    pub fn delivers(&self, fd: &EventFd, msg: MsiMessage) -> bool {
        match &self.kind {
            Kind::Memory(m) => Self::memory_routes(m, fd, msg),
            Kind::Kvm { apics, .. } => {
                if let Some(apic) =
                    irr_target(msg).and_then(|(dest, _)| apics.get(usize::from(dest)))
                {
                    let _ = apic.clear();
                }
                fd.write(1).is_ok() && Self::kvm_took(apics, fd, msg)
            }
        }
    }

    /// Whether a signal already sent to `fd` (by the device or the VMM) has
    /// reached the VM as `msg` through its committed route: on the in-memory
    /// backend, `fd` holds a signal (drained here) and is bound as
    /// [`TestVm::delivers`] checks; on KVM, KVM consumed it and the vector is
    /// pending.
    pub fn received(&self, fd: &EventFd, msg: MsiMessage) -> bool {
        match &self.kind {
            Kind::Memory(m) => fd.read().is_ok_and(|n| n > 0) && Self::memory_routes(m, fd, msg),
            Kind::Kvm { apics, .. } => Self::kvm_took(apics, fd, msg),
        }
    }

    /// Whether nothing sent to `fd` has reached the VM as `msg`: no signal
    /// waits in `fd` (memory) or, after a short wait, `msg`'s vector is not
    /// pending and no signal was consumed into it (KVM).
    pub fn received_nothing(&self, fd: &EventFd, msg: MsiMessage) -> bool {
        match &self.kind {
            Kind::Memory(_) => fd.read().is_err(),
            Kind::Kvm { apics, .. } => {
                sleep(SETTLE);
                let waiting = fd.read().is_ok();
                let pending = irr_target(msg)
                    .and_then(|(dest, v)| Some(apics.get(usize::from(dest))?.pending(v)))
                    .unwrap_or(false);
                !waiting && !pending
            }
        }
    }

    /// Whether `fd` is bound to no GSI: memory, it is not attached; KVM, a
    /// signal stays in the eventfd (drained here) and `msg`'s vector does not
    /// arrive.
    pub fn unbound(&self, fd: &EventFd, msg: MsiMessage) -> bool {
        match &self.kind {
            Kind::Memory(m) => m.attached_gsi(fd).is_none(),
            Kind::Kvm { apics, .. } => {
                let target =
                    irr_target(msg).and_then(|(dest, v)| Some((apics.get(usize::from(dest))?, v)));
                if let Some((apic, _)) = target {
                    let _ = apic.clear();
                }
                if fd.write(1).is_err() {
                    return false;
                }
                sleep(SETTLE);
                let kept = fd.read().is_ok_and(|n| n == 1);
                kept && target.is_none_or(|(apic, v)| !apic.pending(v))
            }
        }
    }
}
