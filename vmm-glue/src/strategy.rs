// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How route changes are grouped into `KVM_SET_GSI_ROUTING` commits.
//!
//! `KVM_SET_GSI_ROUTING` replaces a VM's whole routing table and walks every irqfd the VM has,
//! so the number of commits, not the number of routes, sets the cost of enabling MSI-X (seed
//! 002: 8 VFs x 65 vectors went from 258 ms to 21 ms by committing once per device). A
//! [`Strategy`] picks how the *same* enable and restore code groups its commits, so that a
//! benchmark compares like with like: every strategy runs the same per-vector work and the same
//! one `VFIO_DEVICE_SET_IRQS` per device; only the batch boundaries move.

use std::fmt;
use std::str::FromStr;

/// How a device's interrupt setup groups its route commits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// One commit per vector, no batch: the behaviour before the seed-002 patch ("Original").
    PerVector,
    /// One batch per device, committed when the device's enable ends: QEMU upstream since
    /// the seed-002 patch.
    #[default]
    PerDevice,
    /// One batch spanning every device of the VM, committed once: the caller holds an outer
    /// `RouteBatch` (see [`crate::restore_all`]).
    VmWide,
    /// Routes and irqfds are set up from a precopied state before the switchover; at the
    /// switchover only the difference is committed (see [`crate::StagedRestore`]).
    Staged,
}

impl Strategy {
    /// Every strategy, in the order benchmarks report them.
    pub const ALL: [Strategy; 4] = [
        Strategy::PerVector,
        Strategy::PerDevice,
        Strategy::VmWide,
        Strategy::Staged,
    ];

    /// The snake_case name used on command lines and in JSON (`per_vector`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::PerVector => "per_vector",
            Strategy::PerDevice => "per_device",
            Strategy::VmWide => "vm_wide",
            Strategy::Staged => "staged",
        }
    }

    /// Whether a device's own enable path opens a `RouteBatch` (all but `PerVector`).
    pub fn batches_per_device(self) -> bool {
        !matches!(self, Strategy::PerVector)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown strategy name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownStrategy(pub String);

impl fmt::Display for UnknownStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown strategy `{}` (expected per_vector, per_device, vm_wide or staged)",
            self.0
        )
    }
}

impl std::error::Error for UnknownStrategy {}

impl FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| UnknownStrategy(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
        }
        assert!("per-vector".parse::<Strategy>().is_err());
    }

    #[test]
    fn only_per_vector_skips_the_device_batch() {
        let batching: Vec<_> = Strategy::ALL
            .iter()
            .filter(|s| s.batches_per_device())
            .collect();
        assert_eq!(batching.len(), 3);
        assert!(!Strategy::PerVector.batches_per_device());
    }
}
