// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The lab's side of the live-migration rig (feature `lab`): the lab's mttys opened through a
//! container, the pre-copy every mtty gives, and the figures `cargo xtask lab` prints.

use std::sync::Arc;
use std::time::Duration;

use vfio_core::lab::LabDevices;
use vfio_core::{Container, KernelDevice, MigState, VfioContainer, VfioDevice, VfioMigration};
use vm_memory::GuestRegionMmap;
use vmm_glue::live_migration::{RoundEnd, SourceReport};
use vmm_glue::{DirtyBitmap, Outgoing};

/// mtty-2: header 24 bytes (all its pre-copy data), 36 bytes per port.
pub const MTTY_PRECOPY: u64 = 24;
pub const MTTY_STOP_COPY: u64 = 72;
pub const MTTY_STREAM: u64 = 96;
/// Guest RAM of the mtty VMs (for dirty tracking): 4 MiB at 0.
pub const RAM: u64 = 4 << 20;

pub fn lab() -> LabDevices {
    LabDevices::from_env().expect("run inside the lab guest (cargo xtask lab)")
}

/// The lab's mttys `indexes` opened through one new container with guest RAM mapped, each
/// reset first (an mdev keeps its state between opens; a reset is RUNNING, files closed).
pub fn mttys(indexes: &[usize]) -> (Arc<Container>, GuestRegionMmap, Vec<Arc<KernelDevice>>) {
    let lab = lab();
    let container = Container::new().unwrap();
    let devs: Vec<Arc<KernelDevice>> = indexes
        .iter()
        .map(|&i| Arc::new(container.open_device(&lab.mtty(i).unwrap()).unwrap()))
        .collect();
    for d in &devs {
        d.reset().unwrap();
        assert_eq!(d.migration_state().unwrap(), MigState::Running);
    }
    let ram = vfio_core::memfd_guest_region(0, RAM).unwrap();
    container.map_guest_region(&ram).unwrap();
    (container, ram, devs)
}

/// Port 0's scratch register, through the device (tells devices apart).
pub fn mark(dev: &KernelDevice, value: u8) {
    dev.region_write(0, 7, &[value]).unwrap();
}

/// The successful arcs of a log as "id:STATE" items.
pub fn order(log: &vmm_glue::TransitionLog) -> Vec<String> {
    log.entries()
        .iter()
        .filter_map(|c| c.entered().map(|s| format!("{}:{s}", c.device)))
        .collect()
}

/// Repetitions of each socketpair scenario (times are reported as median, min and max).
pub const REPS: usize = 5;

/// What the source and destination measured over `reps` runs, for the migration table.
pub struct Figures {
    devices: usize,
    estimate: u64,
    precopy: u64,
    stop_copy: u64,
    stream: u64,
    rounds: u32,
    switchover: Vec<Duration>,
    stop_to_running: Vec<Duration>,
}

impl Figures {
    /// One run: the source's report and the destination's STOP to RUNNING.
    pub fn of<W>(src: &SourceReport<W>, stop_to_running: Duration) -> Self {
        let sum = |f: fn(&vmm_glue::live_migration::DeviceTransfer) -> u64| -> u64 {
            src.devices.iter().map(f).sum()
        };
        Figures {
            devices: src.devices.len(),
            estimate: sum(|d| d.stop_copy_estimate),
            precopy: sum(|d| d.precopy_bytes),
            stop_copy: sum(|d| d.stop_copy_bytes),
            stream: src.stream_bytes,
            rounds: src.rounds,
            switchover: vec![src.switchover_time],
            stop_to_running: vec![stop_to_running],
        }
    }

    /// Another run of the same scenario: its byte counts must be the same.
    pub fn add(&mut self, other: Figures) {
        let key = |f: &Figures| (f.devices, f.estimate, f.precopy, f.stop_copy, f.stream);
        assert_eq!(key(self), key(&other), "the same bytes every run");
        self.switchover.extend(other.switchover);
        self.stop_to_running.extend(other.stop_to_running);
    }

    /// One `@@LAB-JSON` line of the migration table.
    pub fn print(&self, scenario: &str) {
        let stats = |v: &[Duration]| {
            let mut us: Vec<u128> = v.iter().map(Duration::as_micros).collect();
            us.sort_unstable();
            (us[us.len() / 2], us[0], us[us.len() - 1])
        };
        let (sw, sw_min, sw_max) = stats(&self.switchover);
        let (sr, sr_min, sr_max) = stats(&self.stop_to_running);
        println!();
        println!(
            "@@LAB-JSON {{\"table\":\"migration\",\"scenario\":\"{scenario}\",\"devices\":{},\
             \"estimate\":{},\"precopy\":{},\"stop_copy\":{},\"stream\":{},\"rounds\":{},\
             \"reps\":{},\"switchover_us\":{sw},\"switchover_min_us\":{sw_min},\
             \"switchover_max_us\":{sw_max},\"stop_to_running_us\":{sr},\
             \"stop_to_running_min_us\":{sr_min},\"stop_to_running_max_us\":{sr_max}}}",
            self.devices,
            self.estimate,
            self.precopy,
            self.stop_copy,
            self.stream,
            self.rounds,
            self.switchover.len(),
        );
    }
}

/// The source side of a pre-copy on mttys: one round reads each device's 24-byte header and
/// `PRECOPY_INFO` then reports nothing left; mtty's `MIG_DATA_SIZE` is its whole stream.
pub fn precopy_mttys<W: std::io::Write>(
    out: &mut Outgoing<W>,
    n: usize,
    dirty: &mut [DirtyBitmap],
) {
    let rounds = out.precopy_until_converged(8, dirty, |_| {}).unwrap();
    assert_eq!(rounds.len(), 1, "{rounds:?}");
    assert_eq!(rounds[0].devices.len(), n);
    for d in &rounds[0].devices {
        assert_eq!(
            (d.before.initial_bytes, d.before.dirty_bytes),
            (MTTY_PRECOPY, 0)
        );
        assert_eq!((d.read, d.end), (MTTY_PRECOPY, RoundEnd::NothingMoreForNow));
        assert!(d.after.is_empty(), "{d:?}");
        assert_eq!(d.stop_copy_estimate, MTTY_STREAM);
    }
    assert!(rounds[0].converged());
}
