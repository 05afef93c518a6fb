// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Scenarios on a VF of QEMU's NVMe controller (SR-IOV), bound to vfio-pci.
