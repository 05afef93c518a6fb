// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The conformance suite against the simulator configured like each lab device. The same
//! scenarios run against the real devices in the lab (`tests/lab_conformance.rs`).

vfio_core::conformance_suite!(vfio_core::conformance::sim_subject);
