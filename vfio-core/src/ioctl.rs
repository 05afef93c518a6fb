// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The crate's only `unsafe` code: raw VFIO ioctls on a device fd, and taking ownership of file
//! descriptors. Callers build every argument buffer in safe code; this module only hands the
//! buffers to the kernel.

#![allow(unsafe_code)]

#[cfg(any(feature = "kernel", feature = "sim"))]
use std::io;
#[cfg(any(feature = "kernel", feature = "sim"))]
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Duplicate `raw` into a new descriptor this process owns (close-on-exec).
///
/// Used where the kernel would take a reference to a caller's fd (eventfd triggers) or where
/// vfio-ioctls only lends its device fd.
#[cfg(any(feature = "kernel", feature = "sim"))]
pub(crate) fn dup_fd(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; on an fd that is not open it fails with EBADF.
    let new = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just returned by fcntl, so it is open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Consume an eventfd's counter if it is non-zero, without blocking even when the file is in
/// blocking mode (as the kernel's virqfd does when the eventfd is signalled). Returns the value
/// read, 0 when nothing was pending.
#[cfg(feature = "sim")]
pub(crate) fn eventfd_take(file: &std::fs::File) -> io::Result<u64> {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid, writable pollfd and nfds is 1; a zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    if ready == 0 || pfd.revents & libc::POLLIN == 0 {
        return Ok(0);
    }
    let mut buf = [0u8; 8];
    // Readable: an eventfd read returns its 8-byte counter at once. Another reader may have
    // raced us to it; in non-blocking mode that is EAGAIN.
    match (&*file).read(&mut buf) {
        Ok(8) => Ok(u64::from_ne_bytes(buf)),
        Ok(_) => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(feature = "kernel")]
pub(crate) use kernel::*;

#[cfg(feature = "kernel")]
mod kernel {
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};

    use vfio_bindings::bindings::vfio as b;
    use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ptr, ioctl_with_ptr};
    use vmm_sys_util::ioctl_io_nr;

    ioctl_io_nr!(VFIO_DEVICE_GET_INFO, b::VFIO_TYPE as u32, b::VFIO_BASE + 7);
    ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, b::VFIO_TYPE as u32, b::VFIO_BASE + 10);
    ioctl_io_nr!(VFIO_DEVICE_RESET, b::VFIO_TYPE as u32, b::VFIO_BASE + 11);
    ioctl_io_nr!(VFIO_DEVICE_FEATURE, b::VFIO_TYPE as u32, b::VFIO_BASE + 17);

    fn check(ret: i32) -> io::Result<()> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `VFIO_DEVICE_GET_INFO`.
    pub(crate) fn get_device_info(device: &File) -> io::Result<b::vfio_device_info> {
        let mut info = b::vfio_device_info {
            argsz: std::mem::size_of::<b::vfio_device_info>() as u32,
            ..Default::default()
        };
        // SAFETY: `info` is a valid, writable vfio_device_info whose argsz covers exactly its
        // size, so the kernel writes within it.
        check(unsafe { ioctl_with_mut_ptr(device, VFIO_DEVICE_GET_INFO(), &mut info) })?;
        Ok(info)
    }

    /// `VFIO_DEVICE_SET_IRQS` with a `struct vfio_irq_set` encoded in `arg`.
    pub(crate) fn set_irqs(device: &File, arg: &[u8]) -> io::Result<()> {
        if arg.len() < std::mem::size_of::<b::vfio_irq_set>() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `arg` holds at least a full header; the kernel reads at most `argsz` bytes,
        // which IrqSet::to_bytes sets to `arg.len()`, and does not write to the buffer.
        check(unsafe { ioctl_with_ptr(device, VFIO_DEVICE_SET_IRQS(), arg.as_ptr()) })
    }

    /// `VFIO_DEVICE_RESET`.
    pub(crate) fn reset(device: &File) -> io::Result<()> {
        // SAFETY: VFIO_DEVICE_RESET takes no argument and touches no user memory.
        check(unsafe { ioctl(device, VFIO_DEVICE_RESET()) })
    }

    /// `VFIO_DEVICE_FEATURE` with a `struct vfio_device_feature` and payload encoded in `arg`;
    /// the kernel may write the payload back (GET, and the data fd of a state change).
    pub(crate) fn device_feature(device: &File, arg: &mut [u8]) -> io::Result<()> {
        if arg.len() < std::mem::size_of::<b::vfio_device_feature>() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `arg` is writable for `arg.len()` bytes and the encoded argsz equals that
        // length, so the kernel reads and writes inside the buffer.
        check(unsafe { ioctl_with_mut_ptr(device, VFIO_DEVICE_FEATURE(), arg.as_mut_ptr()) })
    }

    /// Take ownership of a data fd the kernel returned in a migration state change.
    pub(crate) fn file_from_returned_fd(fd: RawFd) -> io::Result<File> {
        if fd < 0 {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        // SAFETY: the kernel installed `fd` in this process for us and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        debug_assert!(file.as_raw_fd() == fd);
        Ok(file)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// `_IO(VFIO_TYPE, VFIO_BASE + n)`: VFIO ioctls carry no size or direction bits, type
        /// ';' (0x3b) in bits 8..16 and the number in bits 0..8, as include/uapi/linux/vfio.h
        /// defines them.
        #[test]
        fn ioctl_numbers_match_the_uapi() {
            assert_eq!(b::VFIO_TYPE, b';');
            assert_eq!(b::VFIO_BASE, 100);
            assert_eq!(VFIO_DEVICE_GET_INFO(), 0x3b6b);
            assert_eq!(VFIO_DEVICE_SET_IRQS(), 0x3b6e);
            assert_eq!(VFIO_DEVICE_RESET(), 0x3b6f);
            assert_eq!(VFIO_DEVICE_FEATURE(), 0x3b75);
        }

        #[test]
        fn device_info_argsz_covers_the_whole_struct() {
            // argsz, flags, num_regions, num_irqs, cap_offset, pad.
            assert_eq!(std::mem::size_of::<b::vfio_device_info>(), 24);
            assert_eq!(std::mem::offset_of!(b::vfio_device_info, num_irqs), 12);
        }

        #[test]
        fn short_arguments_are_refused_before_the_kernel_sees_them() {
            let f = File::open("/dev/null").unwrap();
            let err = set_irqs(&f, &[0u8; 19]).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
            let err = device_feature(&f, &mut [0u8; 7]).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
            assert_eq!(
                file_from_returned_fd(-1).unwrap_err().raw_os_error(),
                Some(libc::EBADF)
            );
        }
    }
}
