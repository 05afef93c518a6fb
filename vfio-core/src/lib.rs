// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VFIO device boundary of the workspace.
//!
//! This crate will hold a narrow trait for a VFIO device (region and irq info, region access,
//! `VFIO_DEVICE_SET_IRQS`, reset, migration v2), a kernel backend over vfio-ioctls, and a
//! simulated vfio-pci device that follows Linux's semantics for tests and benchmarks.
