// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The conformance suite (feature `sim`): scenarios written once against [`VfioDevice`] and
//! [`VfioMigration`] that run, with the same assertions, against the simulator configured like
//! a lab device ([`sim_subject`], in `cargo test`) and against the real device in the lab
//! (`vfio_core::lab::kernel_subject`, in `cargo xtask lab`).
//!
//! A scenario is `fn(&Subject) -> Outcome`: it drives the device through the traits only,
//! asserts return values and errnos, eventfd counts after a device interrupt or a loopback
//! trigger, bytes read back from regions and the state after, and returns the first
//! [`Failure`] (with its file and line) instead of panicking. Device interrupts come from the
//! device's own registers on both backends (the simulator models the registers a scenario
//! uses), never from a simulator-only hook.
//!
//! [`conformance_suite!`](crate::conformance_suite) expands to one `#[test]` per scenario; it
//! holds the one list of scenarios:
//!
//! ```text
//! vfio_core::conformance_suite!(vfio_core::conformance::sim_subject);
//! ```
//!
//! Where the lab and the simulator disagree the simulator changes to match the kernel; where
//! the difference is QEMU's emulated device rather than Linux, the scenario says so in a
//! comment and the simulator's profile models QEMU's device.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::Location;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::device::{VfioDevice, VfioMigration};
use crate::error::Error;
use crate::info::CONFIG_REGION_INDEX;

/// `ensure!(cond, "format", args..)`: fail the scenario here unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failure::new(format!($($fmt)+)));
        }
    };
}

/// `ensure_eq!(left, right)` or `ensure_eq!(left, right, "format", args..)`: fail the scenario
/// here unless `left == right`, showing both.
macro_rules! ensure_eq {
    ($left:expr, $right:expr $(,)?) => {
        ensure_eq!($left, $right, "")
    };
    ($left:expr, $right:expr, $($fmt:tt)+) => {
        match (&$left, &$right) {
            (l, r) => {
                if l != r {
                    return Err($crate::conformance::Failure::new(format!(
                        "{} == {}: {:?} != {:?} {}",
                        stringify!($left),
                        stringify!($right),
                        l,
                        r,
                        format!($($fmt)+)
                    )));
                }
            }
        }
    };
}

pub mod e1000e;
pub mod growth;
pub mod mtty;
mod mtty_device;
mod mtty_fsm;
pub mod nvme_vf;
mod profiles;

pub use profiles::{e1000e_profile, nvme_pf_profile, nvme_vf_profile};

/// The lab device a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QEMU's e1000e (vfio-pci): INTx, MSI, MSI-X (5, dynamic), its interrupt registers.
    E1000e,
    /// A VF of QEMU's NVMe controller with SR-IOV (vfio-pci): MSI-X 1 vector, no INTx.
    NvmeVf,
    /// The kernel's mtty sample (an mdev with migration v2 and PRE_COPY).
    Mtty,
}

/// Which implementation of the traits a subject is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The simulated device (`sim::SimDevice`) with the lab device's profile.
    Sim,
    /// The real device through Linux VFIO (`KernelDevice`), in the lab.
    Kernel,
}

/// A device to run a scenario on.
pub struct Subject {
    /// The device, as the rest of the workspace sees one.
    pub device: Arc<dyn VfioMigration>,
    /// Which lab device it is.
    pub kind: Kind,
    /// Which backend.
    pub backend: Backend,
    /// How long to wait before asserting that no further interrupt arrives (0 on the
    /// simulator, whose signals are synchronous; long enough under TCG for the kernel's).
    pub settle: Duration,
    /// A second device of the same kind, for scenarios that need two (a migration's
    /// destination).
    peer: Option<Arc<dyn VfioMigration>>,
    /// What must outlive the device and be undone after it closes (the lab's SR-IOV VF).
    /// Fields drop in declaration order: the device closes first.
    guard: Option<Box<dyn Send + Sync>>,
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subject")
            .field("kind", &self.kind)
            .field("backend", &self.backend)
            .field("settle", &self.settle)
            .field("device", &self.device)
            .finish()
    }
}

impl Subject {
    /// A subject for `device`.
    pub fn new(
        device: Arc<dyn VfioMigration>,
        kind: Kind,
        backend: Backend,
        settle: Duration,
    ) -> Self {
        Subject {
            device,
            kind,
            backend,
            settle,
            peer: None,
            guard: None,
        }
    }

    /// Give the subject a second device of its kind.
    pub fn with_peer(mut self, peer: Arc<dyn VfioMigration>) -> Self {
        self.peer = Some(peer);
        self
    }

    /// The second device, if the subject has one.
    pub fn peer(&self) -> Option<&dyn VfioMigration> {
        self.peer.as_deref()
    }

    /// Keep `guard` until the device has closed, then drop it.
    pub fn with_guard(mut self, guard: Box<dyn Send + Sync>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The device as a plain [`VfioDevice`].
    pub fn dev(&self) -> &dyn VfioDevice {
        self.device.as_ref()
    }

    /// Wait [`Subject::settle`]: long enough for anything asynchronous the device or the
    /// kernel still has to deliver.
    pub fn wait_settle(&self) {
        if !self.settle.is_zero() {
            std::thread::sleep(self.settle);
        }
    }

    /// How long to wait for an interrupt that must come (a wait ends as soon as it came, so
    /// this costs time only when a scenario fails). The simulator delivers synchronously
    /// except on the INTx unmask eventfd, which a thread serves as the kernel's virqfd does.
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Read a little-endian config register of `N` bytes (1, 2 or 4) at `offset`.
    pub fn config_read(&self, offset: u64, len: usize) -> Result<u32, Failure> {
        let mut buf = [0u8; 4];
        let slot = buf
            .get_mut(..len)
            .ok_or_else(|| Failure::new("bad length"))?;
        self.dev().region_read(CONFIG_REGION_INDEX, offset, slot)?;
        Ok(u32::from_le_bytes(buf))
    }

    /// Write the low `len` bytes (1, 2 or 4) of `value` to config space at `offset`.
    pub fn config_write(&self, offset: u64, len: usize, value: u32) -> Result<(), Failure> {
        let bytes = value.to_le_bytes();
        let data = bytes.get(..len).ok_or_else(|| Failure::new("bad length"))?;
        self.dev().region_write(CONFIG_REGION_INDEX, offset, data)?;
        Ok(())
    }

    /// Read a 32-bit register at `offset` of region `index`.
    pub fn read32(&self, index: u32, offset: u64) -> Result<u32, Failure> {
        let mut buf = [0u8; 4];
        self.dev().region_read(index, offset, &mut buf)?;
        Ok(u32::from_le_bytes(buf))
    }

    /// Write a 32-bit register at `offset` of region `index`.
    pub fn write32(&self, index: u32, offset: u64, value: u32) -> Result<(), Failure> {
        self.dev()
            .region_write(index, offset, &value.to_le_bytes())?;
        Ok(())
    }
}

/// Why a scenario failed, and where.
pub struct Failure {
    location: &'static Location<'static>,
    message: String,
}

impl Failure {
    /// A failure at the caller's location.
    #[track_caller]
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            location: Location::caller(),
            message: message.into(),
        }
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            self.location.file(),
            self.location.line(),
            self.message
        )
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Failure {}

/// A device call that should have succeeded failed (`?` on a `vfio_core::Result`).
impl From<Error> for Failure {
    #[track_caller]
    fn from(e: Error) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(&format!(": {s}"));
            source = s.source();
        }
        Failure::new(message)
    }
}

/// A scenario's result.
pub type Outcome = Result<(), Failure>;

/// A scenario.
pub type Scenario = fn(&Subject) -> Outcome;

/// Run `scenario` on the subject `open` gave (a failure to open is the scenario's failure).
/// The subject is dropped (the device closed) after the scenario, also when it failed.
pub fn run(scenario: Scenario, open: Result<Subject, Failure>) -> Outcome {
    let subject = open?;
    let result = scenario(&subject);
    // Anything still in flight (QEMU's e1000e keeps a 128 us MSI-X throttling timer, and
    // aborts if MSI-X is disabled while it runs: LAB.md) lands before the close tears down
    // the interrupts.
    subject.wait_settle();
    drop(subject);
    result
}

/// `result` must be the error `errno`.
#[track_caller]
pub fn expect_errno<T: fmt::Debug>(result: crate::Result<T>, errno: i32) -> Outcome {
    match result {
        Err(e) if e.errno() == Some(errno) => Ok(()),
        Err(e) => Err(Failure::new(format!(
            "expected errno {errno} ({}), got {e:?}",
            std::io::Error::from_raw_os_error(errno)
        ))),
        Ok(v) => Err(Failure::new(format!(
            "expected errno {errno} ({}), got Ok({v:?})",
            std::io::Error::from_raw_os_error(errno)
        ))),
    }
}

/// An eventfd a scenario binds to a vector, with the count of signals it has seen so far.
#[derive(Debug)]
pub struct Signals {
    fd: EventFd,
    seen: std::cell::Cell<u64>,
}

impl Signals {
    /// A new non-blocking eventfd.
    #[track_caller]
    pub fn new() -> Result<Self, Failure> {
        let fd = EventFd::new(EFD_NONBLOCK).map_err(|e| Failure::new(format!("eventfd: {e}")))?;
        Ok(Signals {
            fd,
            seen: std::cell::Cell::new(0),
        })
    }

    /// `n` of them.
    #[track_caller]
    pub fn many(n: usize) -> Result<Vec<Self>, Failure> {
        (0..n).map(|_| Signals::new()).collect()
    }

    /// The fd number to hand to SET_IRQS.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Signals seen so far (reads what arrived since the last look).
    #[track_caller]
    pub fn count(&self) -> Result<u64, Failure> {
        match self.fd.read() {
            Ok(n) => self.seen.set(self.seen.get() + n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Failure::new(format!("eventfd read: {e}"))),
        }
        Ok(self.seen.get())
    }

    /// Signal the eventfd from userspace (as KVM's resampler or a VMM would).
    #[track_caller]
    pub fn write(&self, n: u64) -> Outcome {
        self.fd
            .write(n)
            .map_err(|e| Failure::new(format!("eventfd write: {e}")))
    }

    /// Wait until at least `n` signals were seen, or `timeout`; returns the count then.
    #[track_caller]
    pub fn wait_for(&self, n: u64, timeout: Duration) -> Result<u64, Failure> {
        let start = Instant::now();
        loop {
            let seen = self.count()?;
            if seen >= n || start.elapsed() >= timeout {
                return Ok(seen);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The offset of standard capability `id` in the config space the device shows (its chain
/// as the user walks it), or a failure.
#[track_caller]
pub fn find_cap(s: &Subject, id: u8) -> Result<u64, Failure> {
    let mut pos = s.config_read(0x34, 1)? as u64;
    for _ in 0..48 {
        if pos == 0 {
            break;
        }
        if s.config_read(pos, 1)? as u8 == id {
            return Ok(pos);
        }
        pos = u64::from(s.config_read(pos + 1, 1)? as u8);
    }
    Err(Failure::new(format!("no capability {id:#x}")))
}

/// Set (`on`) or clear the bits of `mask` in COMMAND, as a guest driver does (read, modify,
/// write the word).
#[track_caller]
pub fn set_command(s: &Subject, mask: u16, on: bool) -> Outcome {
    let cmd = s.config_read(0x04, 2)? as u16;
    let new = if on { cmd | mask } else { cmd & !mask };
    s.config_write(0x04, 2, u32::from(new))
}

/// The fd numbers of `signals`, as a SET_IRQS eventfd payload.
pub fn fds(signals: &[Signals]) -> Vec<Option<RawFd>> {
    signals.iter().map(|s| Some(s.raw())).collect()
}

/// The counts of `signals`.
#[track_caller]
pub fn counts(signals: &[Signals]) -> Result<Vec<u64>, Failure> {
    signals.iter().map(Signals::count).collect()
}

/// The simulator configured like the lab device `kind` (see [`e1000e_profile`],
/// [`nvme_vf_profile`]).
pub fn sim_subject(kind: Kind) -> Result<Subject, Failure> {
    let device: Arc<dyn VfioMigration> = match kind {
        Kind::E1000e => Arc::new(e1000e_profile()?),
        Kind::NvmeVf => Arc::new(nvme_vf_profile()?),
        Kind::Mtty => {
            let peer: Arc<dyn VfioMigration> = Arc::new(crate::sim::SimDevice::mtty(2)?);
            let device = Arc::new(crate::sim::SimDevice::mtty(2)?);
            return Ok(Subject::new(device, kind, Backend::Sim, Duration::ZERO).with_peer(peer));
        }
    };
    Ok(Subject::new(device, kind, Backend::Sim, Duration::ZERO))
}

/// One `#[test]` per scenario of the conformance suite, each opening its device with
/// `$open` (a path to a `fn(Kind) -> Result<Subject, Failure>`, such as
/// `vfio_core::conformance::sim_subject` or `vfio_core::lab::kernel_subject`). This is the
/// one list of scenarios.
#[macro_export]
#[rustfmt::skip]
macro_rules! conformance_suite {
    ($open:path) => {
        $crate::__conformance_tests!($open, e1000e, E1000e, [
            device_and_region_info,
            set_irqs_validation,
            count_zero_rules_on_every_index,
            err_and_req_triggers,
            msix_all_vectors_in_one_call_and_loopback,
            msix_enable_with_fd_minus_one,
            msix_dynamic_growth,
            index_switching,
            msix_bad_fds_change_nothing,
            intx_automask_and_level,
            intx_mask_holds_and_loopback_ignores_it,
            intx_unmask_eventfd,
            intx_command_disable_after_enable,
            intx_enabled_while_disabled,
            intx_without_eventfd,
            msi_device_interrupt,
            msix_device_interrupts_need_bus_master,
            read_only_header_fields,
            bar_sizing,
            command_at_open,
            msi_control_is_virtualized,
            msix_control_is_read_only,
            pcie_devctl,
            power_state_d3hot_disables_memory,
            config_bounds_and_extended_header,
            msix_table_window_and_pba,
            memory_decode_off,
            bar_bounds,
            reset_keeps_interrupts,
        ]);
        $crate::__conformance_tests!($open, nvme_vf, NvmeVf, [
            shape,
            no_intx_no_msi,
            virtualized_ids_and_bars,
            memory_enable_is_virtual,
            msix_one_vector_and_table,
            flr_through_devctl,
        ]);
        $crate::__conformance_tests!($open, mtty, Mtty, [
            info_regions_and_irqs,
            config_writes_follow_mtty,
            uart_registers_read_back,
            set_irqs_follow_mtty,
            every_request_walks_as_the_kernel_answers,
            pre_copy_data_fd_to_stop_copy,
            stop_copy_reads_the_whole_stream,
            save_restore_between_two_devices,
            truncated_resume_and_recovery,
            resume_writes_are_checked,
            stale_fds_answer_enodev,
        ]);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($open:path, $module:ident, $kind:ident, [$($name:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $name() -> ::std::result::Result<(), $crate::conformance::Failure> {
                    $crate::conformance::run(
                        $crate::conformance::$module::$name,
                        $open($crate::conformance::Kind::$kind),
                    )
                }
            )*
        }
    };
}
