// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The KVM-VFIO pseudo device (`KVM_CREATE_DEVICE` with `KVM_DEV_TYPE_VFIO`): tells KVM which
//! VFIO groups the VM uses, so KVM knows when a device may do non-coherent DMA (and must
//! honour the guest's cache flushes) and hands the VM to the devices of those groups.
//!
//! Rules (Linux v6.12.117 virt/kvm/vfio.c): one such device per VM (a second is EBUSY);
//! `KVM_DEV_VFIO_FILE_ADD` takes a VFIO group fd (EINVAL for any other file, EEXIST for one
//! added already), `KVM_DEV_VFIO_FILE_DEL` one that was added (ENOENT otherwise). For the
//! group API the VM reaches a device only if its group was added before the device was opened
//! (group.c, `vfio_df_group_open`): add the group first.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_VFIO, KVM_DEV_VFIO_FILE,
    KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL,
};
use kvm_ioctls::{DeviceFd, VmFd};

use crate::{Error, Result};

/// A VM's KVM-VFIO device and the VFIO files (group fds) added to it.
#[derive(Debug)]
pub struct KvmVfioDevice {
    device: DeviceFd,
    /// Files added, by fd number, with how many devices use each.
    files: BTreeMap<RawFd, usize>,
}

impl KvmVfioDevice {
    /// Create the VM's KVM-VFIO device.
    pub fn new(vm: &VmFd) -> Result<Self> {
        let mut create = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let device = vm
            .create_device(&mut create)
            .map_err(|e| Error::KvmVfio(std::io::Error::from_raw_os_error(e.errno())))?;
        Ok(KvmVfioDevice {
            device,
            files: BTreeMap::new(),
        })
    }

    fn attr(&self, attr: u32, fd: RawFd) -> Result<()> {
        let fd: i32 = fd;
        let arg = kvm_device_attr {
            flags: 0,
            group: KVM_DEV_VFIO_FILE,
            attr: u64::from(attr),
            addr: std::ptr::addr_of!(fd) as u64,
        };
        self.device
            .set_device_attr(&arg)
            .map_err(|e| Error::KvmVfio(std::io::Error::from_raw_os_error(e.errno())))
    }

    /// Add a VFIO group (`KVM_DEV_VFIO_FILE_ADD`), once for every device of the group: the
    /// first call tells KVM, later ones only count.
    pub fn add_group(&mut self, group: BorrowedFd<'_>) -> Result<()> {
        let fd = group.as_raw_fd();
        if let Some(users) = self.files.get_mut(&fd) {
            *users += 1;
            return Ok(());
        }
        self.attr(KVM_DEV_VFIO_FILE_ADD, fd)?;
        self.files.insert(fd, 1);
        Ok(())
    }

    /// Remove a group added with [`KvmVfioDevice::add_group`] once its last device is gone
    /// (`KVM_DEV_VFIO_FILE_DEL`).
    pub fn remove_group(&mut self, group: BorrowedFd<'_>) -> Result<()> {
        let fd = group.as_raw_fd();
        match self.files.get_mut(&fd) {
            Some(users) if *users > 1 => {
                *users -= 1;
                Ok(())
            }
            Some(_) => {
                self.attr(KVM_DEV_VFIO_FILE_DEL, fd)?;
                self.files.remove(&fd);
                Ok(())
            }
            None => self.attr(KVM_DEV_VFIO_FILE_DEL, fd),
        }
    }

    /// Groups added and not removed.
    pub fn groups(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    use irq_routing::testing::kvm_vm_with_irqchip;

    /// Creation on the real /dev/kvm, and the kernel's answers for files that are not VFIO
    /// groups. A real group cannot be added on this host: it has no /dev/vfio (and the lab,
    /// which has VFIO, has no KVM).
    #[test]
    fn created_on_real_kvm_and_non_vfio_files_are_refused() {
        let Some((_kvm, vm)) = kvm_vm_with_irqchip() else {
            return;
        };
        let mut dev = KvmVfioDevice::new(&vm).unwrap();
        // One per VM.
        let err = KvmVfioDevice::new(&vm).unwrap_err();
        assert!(
            matches!(&err, Error::KvmVfio(e) if e.raw_os_error() == Some(libc::EBUSY)),
            "{err:?}"
        );
        let not_vfio = std::fs::File::open("/dev/null").unwrap();
        let err = dev.add_group(not_vfio.as_fd()).unwrap_err();
        assert!(
            matches!(&err, Error::KvmVfio(e) if e.raw_os_error() == Some(libc::EINVAL)),
            "{err:?}"
        );
        assert_eq!(dev.groups(), 0);
        let err = dev.remove_group(not_vfio.as_fd()).unwrap_err();
        assert!(
            matches!(&err, Error::KvmVfio(e) if e.raw_os_error() == Some(libc::ENOENT)),
            "{err:?}"
        );
    }
}
