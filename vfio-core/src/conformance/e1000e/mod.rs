// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Scenarios on QEMU's e1000e bound to vfio-pci: 1 INTx, 1 MSI vector, 5 MSI-X vectors
//! (dynamic), ERR and REQ; BAR0/BAR1 memory, BAR2 I/O, BAR3 the MSI-X table (0x0) and PBA
//! (0x2000).
//!
//! Device interrupts come from the e1000e's own registers on both backends (LAB.md): IVAR
//! (0xE4) maps the RXQ0, RXQ1, TXQ0, TXQ1 and OTHER causes (ICR bits 20-24) to MSI-X vectors
//! 0-4 with 0x000CBA98; IMS (0xD0) enables causes, IMC (0xD8) disables them; ICR (0xC0) is
//! cleared by writing ones, ICS (0xC8) sets causes. INTx is asserted while ICR & IMS is
//! non-zero; MSI and MSI-X messages need COMMAND's Bus Master \[QEMU\]. QEMU 7.2's e1000e aborts
//! if MSI-X is disabled while its 128 us throttling timer runs, so a scenario waits
//! ([`Subject::wait_settle`]) after the last MSI-X interrupt before disabling MSI-X, and
//! [`run`](super::run) waits before closing the device \[QEMU\].

mod config;
mod intx;
mod irqs;
mod regions;

pub use config::{
    bar_sizing, command_at_open, config_bounds_and_extended_header, msi_control_is_virtualized,
    msix_control_is_read_only, pcie_devctl, power_state_d3hot_disables_memory,
    read_only_header_fields,
};
pub use intx::{
    intx_automask_and_level, intx_command_disable_after_enable, intx_enabled_while_disabled,
    intx_mask_holds_and_loopback_ignores_it, intx_unmask_eventfd, intx_without_eventfd,
};
pub use irqs::{
    count_zero_rules_on_every_index, err_and_req_triggers, index_switching,
    msix_all_vectors_in_one_call_and_loopback, msix_bad_fds_change_nothing, msix_dynamic_growth,
    msix_enable_with_fd_minus_one, set_irqs_validation,
};
pub use regions::{
    bar_bounds, device_and_region_info, memory_decode_off, msi_device_interrupt,
    msix_device_interrupts_need_bus_master, msix_table_window_and_pba, reset_keeps_interrupts,
};

use super::{set_command, Outcome, Subject};

/// MSI-X vectors of the e1000e.
const VECTORS: usize = 5;
/// The MSI-X BAR.
const MSIX_BAR: u32 = 3;
/// Where the PBA is in the MSI-X BAR.
const PBA: u64 = 0x2000;

const ICR: u64 = 0xc0;
const ICS: u64 = 0xc8;
const IMS: u64 = 0xd0;
const IMC: u64 = 0xd8;
const IVAR: u64 = 0xe4;
/// RXQ0, RXQ1, TXQ0, TXQ1, OTHER to vectors 0-4, each entry valid (LAB.md).
const IVAR_ALL: u32 = 0x000c_ba98;
/// TXDW, the cause the scenarios use for INTx and MSI.
const TXDW: u32 = 1;
/// COMMAND's Bus Master bit.
const BUS_MASTER: u16 = 0x4;
/// COMMAND's Memory Space bit.
const MEMORY: u16 = 0x2;
/// COMMAND's INTx Disable bit.
const INTX_DISABLE: u16 = 0x400;

/// The ICR cause that IVAR_ALL maps to MSI-X vector `v`.
fn cause_of(v: usize) -> u32 {
    1 << (20 + v)
}

/// Leave exactly `ims` enabled, nothing pending, IVAR mapping every vector.
fn arm(s: &Subject, ims: u32) -> Outcome {
    s.write32(0, IMC, !0)?;
    s.write32(0, ICR, !0)?;
    s.write32(0, IVAR, IVAR_ALL)?;
    s.write32(0, IMS, ims)
}

/// Nothing enabled, nothing pending: the device asserts nothing. Done before an interrupt
/// type is disabled, so that the device never falls back to INTx with a cause pending (with
/// no INTx handler the host would see an unhandled level interrupt).
fn quiesce(s: &Subject) -> Outcome {
    s.write32(0, IMC, !0)?;
    s.write32(0, ICR, !0)
}

/// Raise `causes` afresh: clear ICR, then set them through ICS.
fn raise(s: &Subject, causes: u32) -> Outcome {
    s.write32(0, ICR, !0)?;
    s.write32(0, ICS, causes)
}

/// Bus Master on or off.
fn bus_master(s: &Subject, on: bool) -> Outcome {
    set_command(s, BUS_MASTER, on)
}
