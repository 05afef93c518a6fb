// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lab: the conformance suite against the real devices through Linux 6.12's VFIO (run inside
//! the lab guest by `cargo xtask lab`). The same scenarios run against the simulator in
//! `tests/conformance.rs`.

vfio_core::conformance_suite!(vfio_core::lab::kernel_subject);
