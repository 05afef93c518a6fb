// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A VFIO passthrough PCI device that a VMM attaches to its bus, composed from the
//! workspace's crates, with batched interrupt setup and a fast resume path.
