// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! VFIO migration v2 (`VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE`): device states, feature flags,
//! the kernel's state machine ([`fsm`]), and the data fd a saving or resuming state hands out.

use vfio_bindings::bindings::vfio as b;

mod data_fd;
pub mod fsm;

pub use data_fd::{DataChunk, MigrationDataFd, PrecopyInfo};

/// A migration v2 device state (`enum vfio_device_mig_state`); the discriminant is the uAPI
/// number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MigState {
    /// The device failed a transition; only reset leaves it.
    Error = b::vfio_device_mig_state_VFIO_DEVICE_STATE_ERROR,
    /// Stopped: no DMA, no interrupts, state not changing.
    Stop = b::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP,
    /// Running normally.
    Running = b::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING,
    /// Stopped, saving the final device state through the data fd.
    StopCopy = b::vfio_device_mig_state_VFIO_DEVICE_STATE_STOP_COPY,
    /// Stopped, loading device state from the data fd.
    Resuming = b::vfio_device_mig_state_VFIO_DEVICE_STATE_RESUMING,
    /// Running, but no longer initiating peer-to-peer DMA.
    RunningP2p = b::vfio_device_mig_state_VFIO_DEVICE_STATE_RUNNING_P2P,
    /// Running, saving device state ahead of the stop (optional feature).
    PreCopy = b::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY,
    /// `PreCopy` without peer-to-peer DMA.
    PreCopyP2p = b::vfio_device_mig_state_VFIO_DEVICE_STATE_PRE_COPY_P2P,
}

/// `MigState::ALL[i]` is the state numbered `i`, so a state's number indexes the kernel's tables.
const _: () = {
    let mut i = 0;
    while i < MigState::ALL.len() {
        assert!(
            MigState::ALL[i] as usize == i,
            "MigState::ALL is not in uAPI order"
        );
        i += 1;
    }
};

impl MigState {
    /// All states, in uAPI order.
    pub const ALL: [MigState; 8] = [
        MigState::Error,
        MigState::Stop,
        MigState::Running,
        MigState::StopCopy,
        MigState::Resuming,
        MigState::RunningP2p,
        MigState::PreCopy,
        MigState::PreCopyP2p,
    ];

    /// The uAPI value.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }

    /// The state for a uAPI value, if it names one.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        if (raw as usize) < Self::ALL.len() {
            Some(Self::ALL[raw as usize])
        } else {
            None
        }
    }

    /// This state's index in the kernel's tables: its number, always below
    /// [`fsm::NUM_STATES`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the device produces migration data in this state (STOP_COPY, PRE_COPY,
    /// PRE_COPY_P2P).
    pub const fn is_saving(self) -> bool {
        matches!(
            self,
            MigState::StopCopy | MigState::PreCopy | MigState::PreCopyP2p
        )
    }

    /// Whether this is one of the two pre-copy states.
    pub const fn is_pre_copy(self) -> bool {
        matches!(self, MigState::PreCopy | MigState::PreCopyP2p)
    }

    /// Whether entering this state hands out a data fd (saving or resuming).
    pub const fn has_data_fd(self) -> bool {
        matches!(
            self,
            MigState::StopCopy | MigState::Resuming | MigState::PreCopy | MigState::PreCopyP2p
        )
    }
}

bitflags::bitflags! {
    /// `vfio_device_feature_migration.flags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct MigrationFeatures: u64 {
        /// STOP, STOP_COPY and RESUMING (mandatory).
        const STOP_COPY = b::VFIO_MIGRATION_STOP_COPY as u64;
        /// RUNNING_P2P.
        const P2P = b::VFIO_MIGRATION_P2P as u64;
        /// PRE_COPY (and PRE_COPY_P2P with `P2P`).
        const PRE_COPY = b::VFIO_MIGRATION_PRE_COPY as u64;
    }
}

impl MigrationFeatures {
    /// The flag word as the kernel keeps it (`unsigned int migration_flags` of
    /// `struct vfio_device`); bits above 31 cannot come from the kernel and are dropped.
    pub const fn migration_flags(self) -> u32 {
        self.bits() as u32
    }

    /// Whether a device with these features supports `state`, by the kernel's
    /// `state_flags_table` (never for ERROR).
    pub const fn supports(self, state: MigState) -> bool {
        fsm::kernel_supports(self.migration_flags(), state)
    }

    /// The next single arc from `cur` towards `target`: Linux v6.12.117
    /// `vfio_mig_get_next_state()` (see [`fsm`]).
    pub const fn next_state(self, cur: MigState, target: MigState) -> fsm::KernelHop {
        fsm::vfio_mig_get_next_state(self.migration_flags(), cur, target)
    }
}
