// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The Linux backend (feature `kernel`): type1 containers, IOMMU groups and VFIO device fds.
//!
//! A device is opened the way the kernel's group API expects: its IOMMU group is read from
//! sysfs, the group's character device (`/dev/vfio/N`) is opened and attached to a
//! [`Container`], the container's IOMMU is set to type1v2 when its first group joins, and the
//! device fd is taken from the group by name (`"BDF"`, `"BDF vf_token=UUID"` for an SR-IOV VF of
//! a vfio-pci PF, or an mdev's UUID). Two devices of one group share one [`Group`]; the group
//! leaves the container when its last device is closed.
//!
//! Only the container/group API is implemented: the kernels this was run against (Debian's
//! 6.12 in the lab) have no iommufd and no VFIO device cdev. Every ioctl is issued by this
//! crate (the `unsafe` is in its `ioctl` module), not through vfio-ioctls, because vfio-ioctls
//! 0.10 cannot name a VF token, does not report the IOVA ranges or refuse a positive
//! `SET_IRQS` return, and swallows region i/o errors.

mod address;
mod caps;
mod container;
mod device;

pub use address::{DeviceAddress, Uuid};
pub use container::{Container, Group};
pub use device::KernelDevice;
