// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Shared helpers for the integration tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use pci_config::BarKind;
use vfio_core::sim::{MsixMode, MsixPlacement, SimDevice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A device with `vectors` MSI-X vectors in BAR 2 (64-bit) and a 4 KiB BAR 0.
pub fn msix_device(vectors: u16, mode: MsixMode) -> Arc<SimDevice> {
    Arc::new(
        SimDevice::builder(0x8086, 0x1521)
            .bar(0, BarKind::Mem32, 0x1000, false)
            .bar(2, BarKind::Mem64, 0x10000, true)
            .msix(MsixPlacement::in_bar(vectors, 2))
            .msix_mode(mode)
            .build()
            .unwrap(),
    )
}

/// `n` non-blocking eventfds.
pub fn eventfds(n: usize) -> Vec<EventFd> {
    (0..n)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect()
}

/// The fds' numbers, as SET_IRQS takes them.
pub fn raw(fds: &[EventFd]) -> Vec<Option<RawFd>> {
    fds.iter().map(|f| Some(f.as_raw_fd())).collect()
}

/// How many times `fd` was signalled since last read (0 if never).
pub fn take_count(fd: &EventFd) -> u64 {
    match fd.read() {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("eventfd read: {e}"),
    }
}
