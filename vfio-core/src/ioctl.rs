// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The crate's only `unsafe` code: raw VFIO ioctls on a device fd, and taking ownership of file
//! descriptors. Callers build every argument buffer in safe code; this module only hands the
//! buffers to the kernel.

#![allow(unsafe_code)]

use std::io;
#[cfg(feature = "sim")]
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

vmm_sys_util::ioctl_io_nr!(
    VFIO_MIG_GET_PRECOPY_INFO,
    vfio_bindings::bindings::vfio::VFIO_TYPE as u32,
    vfio_bindings::bindings::vfio::VFIO_BASE + 21
);

/// `VFIO_MIG_GET_PRECOPY_INFO` on a migration data fd: `(initial_bytes, dirty_bytes)`.
///
/// Not gated on the `kernel` feature: a data fd can be handed to
/// `MigrationDataFd::new` by any caller.
pub(crate) fn mig_get_precopy_info(data_fd: &std::fs::File) -> io::Result<(u64, u64)> {
    use vfio_bindings::bindings::vfio::vfio_precopy_info;

    let mut info = vfio_precopy_info {
        argsz: std::mem::size_of::<vfio_precopy_info>() as u32,
        flags: 0,
        initial_bytes: 0,
        dirty_bytes: 0,
    };
    // SAFETY: `info` is a valid, writable vfio_precopy_info whose argsz is its size; the
    // kernel reads and writes at most that many bytes through the pointer.
    let ret = unsafe {
        vmm_sys_util::ioctl::ioctl_with_mut_ptr(
            data_fd,
            VFIO_MIG_GET_PRECOPY_INFO(),
            std::ptr::addr_of_mut!(info),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((info.initial_bytes, info.dirty_bytes))
}

/// Duplicate `raw` into a new descriptor this process owns (close-on-exec).
///
/// Used where the kernel would take a reference to a caller's fd (eventfd triggers) or where
/// a caller only lends its fd.
#[cfg(feature = "sim")]
pub(crate) fn dup_fd(raw: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC reads no memory; on an fd that is not open it fails with EBADF.
    let new = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just returned by fcntl, so it is open and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Wait up to `timeout_ms` for `file` to become readable (or hung up); whether it did.
#[cfg(feature = "sim")]
pub(crate) fn wait_readable(file: &std::fs::File, timeout_ms: i32) -> io::Result<bool> {
    use std::os::fd::AsRawFd;

    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid, writable pollfd and nfds is 1.
    let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if ready < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(ready > 0)
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

/// A new anonymous memory file (`memfd_create`, close-on-exec), empty: the simulated device's
/// BAR memory, and guest RAM for DMA. Grow it with `File::set_len`; holes read as zeros and
/// take no memory.
pub(crate) fn memfd(name: &std::ffi::CStr) -> io::Result<std::fs::File> {
    #[cfg(not(feature = "sim"))]
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call and the
    // kernel only reads it.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create, so it is open and nothing else owns it.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Give `len` bytes at `offset` of `file` back to the system: they read as zeros afterwards,
/// in mappings too, and the file keeps its size (`fallocate` PUNCH_HOLE | KEEP_SIZE).
#[cfg(feature = "sim")]
pub(crate) fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: fallocate reads no user memory; an invalid fd or range is reported as an error.
    let ret = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fill `buf` from the kernel's random source (`getrandom`).
#[cfg(feature = "kernel")]
pub(crate) fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = buf.get_mut(done..).unwrap_or_default();
        // SAFETY: `rest` is writable for `rest.len()` bytes and getrandom writes at most that.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) => done += n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

#[cfg(feature = "kernel")]
pub(crate) use kernel::*;

#[cfg(feature = "kernel")]
mod kernel {
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, RawFd};

    use vfio_bindings::bindings::vfio as b;
    use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ptr, ioctl_with_ptr, ioctl_with_val};
    use vmm_sys_util::ioctl_io_nr;

    ioctl_io_nr!(VFIO_GET_API_VERSION, b::VFIO_TYPE as u32, b::VFIO_BASE);
    ioctl_io_nr!(VFIO_CHECK_EXTENSION, b::VFIO_TYPE as u32, b::VFIO_BASE + 1);
    ioctl_io_nr!(VFIO_SET_IOMMU, b::VFIO_TYPE as u32, b::VFIO_BASE + 2);
    ioctl_io_nr!(VFIO_GROUP_GET_STATUS, b::VFIO_TYPE as u32, b::VFIO_BASE + 3);
    ioctl_io_nr!(
        VFIO_GROUP_SET_CONTAINER,
        b::VFIO_TYPE as u32,
        b::VFIO_BASE + 4
    );
    ioctl_io_nr!(
        VFIO_GROUP_UNSET_CONTAINER,
        b::VFIO_TYPE as u32,
        b::VFIO_BASE + 5
    );
    ioctl_io_nr!(
        VFIO_GROUP_GET_DEVICE_FD,
        b::VFIO_TYPE as u32,
        b::VFIO_BASE + 6
    );
    ioctl_io_nr!(VFIO_DEVICE_GET_INFO, b::VFIO_TYPE as u32, b::VFIO_BASE + 7);
    ioctl_io_nr!(
        VFIO_DEVICE_GET_REGION_INFO,
        b::VFIO_TYPE as u32,
        b::VFIO_BASE + 8
    );
    ioctl_io_nr!(
        VFIO_DEVICE_GET_IRQ_INFO,
        b::VFIO_TYPE as u32,
        b::VFIO_BASE + 9
    );
    ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, b::VFIO_TYPE as u32, b::VFIO_BASE + 10);
    ioctl_io_nr!(VFIO_DEVICE_RESET, b::VFIO_TYPE as u32, b::VFIO_BASE + 11);
    ioctl_io_nr!(VFIO_IOMMU_GET_INFO, b::VFIO_TYPE as u32, b::VFIO_BASE + 12);
    ioctl_io_nr!(VFIO_IOMMU_MAP_DMA, b::VFIO_TYPE as u32, b::VFIO_BASE + 13);
    ioctl_io_nr!(VFIO_IOMMU_UNMAP_DMA, b::VFIO_TYPE as u32, b::VFIO_BASE + 14);
    ioctl_io_nr!(
        VFIO_IOMMU_DIRTY_PAGES,
        b::VFIO_TYPE as u32,
        b::VFIO_BASE + 17
    );
    ioctl_io_nr!(VFIO_DEVICE_FEATURE, b::VFIO_TYPE as u32, b::VFIO_BASE + 17);

    fn check(ret: i32) -> io::Result<()> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The non-negative value an ioctl returned, or its errno.
    fn value(ret: i32) -> io::Result<u32> {
        u32::try_from(ret).map_err(|_| io::Error::last_os_error())
    }

    /// `VFIO_GET_API_VERSION` on a container.
    pub(crate) fn get_api_version(container: &File) -> io::Result<u32> {
        // SAFETY: VFIO_GET_API_VERSION takes no argument and touches no user memory.
        value(unsafe { ioctl(container, VFIO_GET_API_VERSION()) })
    }

    /// `VFIO_CHECK_EXTENSION` on a container: the kernel's answer (0 when unsupported).
    pub(crate) fn check_extension(container: &File, extension: u32) -> io::Result<u32> {
        // SAFETY: the argument is passed by value; the kernel reads no user memory.
        value(unsafe {
            ioctl_with_val(
                container,
                VFIO_CHECK_EXTENSION(),
                libc::c_ulong::from(extension),
            )
        })
    }

    /// `VFIO_SET_IOMMU` on a container.
    pub(crate) fn set_iommu(container: &File, iommu_type: u32) -> io::Result<()> {
        // SAFETY: the argument is passed by value; the kernel reads no user memory.
        check(unsafe {
            ioctl_with_val(container, VFIO_SET_IOMMU(), libc::c_ulong::from(iommu_type))
        })
    }

    /// `VFIO_IOMMU_GET_INFO` with a `struct vfio_iommu_type1_info` (and room for its
    /// capability chain) encoded in `arg`; the kernel writes it back.
    pub(crate) fn iommu_get_info(container: &File, arg: &mut [u8]) -> io::Result<()> {
        writable_ioctl(container, VFIO_IOMMU_GET_INFO(), arg, 16)
    }

    /// `VFIO_IOMMU_MAP_DMA` of `[iova, iova + size)` to `vaddr`, read and write.
    ///
    /// # Safety
    ///
    /// The device may access `[vaddr, vaddr + size)` until it is unmapped (see
    /// `dma::Type1::map_dma`); the caller keeps that memory mapped and free of references.
    pub(crate) unsafe fn iommu_map_dma(
        container: &File,
        iova: u64,
        size: u64,
        vaddr: u64,
    ) -> io::Result<()> {
        let map = b::vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<b::vfio_iommu_type1_dma_map>() as u32,
            flags: b::VFIO_DMA_MAP_FLAG_READ | b::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr,
            iova,
            size,
        };
        // SAFETY: the kernel reads `map`, a valid vfio_iommu_type1_dma_map whose argsz is its
        // size; what it then does with `vaddr` the caller has vouched for.
        check(unsafe { ioctl_with_ptr(container, VFIO_IOMMU_MAP_DMA(), &map) })
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of `[iova, iova + size)`: the bytes the kernel unmapped.
    pub(crate) fn iommu_unmap_dma(container: &File, iova: u64, size: u64) -> io::Result<u64> {
        let mut unmap = b::vfio_iommu_type1_dma_unmap {
            argsz: std::mem::size_of::<b::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova,
            size,
            ..Default::default()
        };
        // SAFETY: `unmap` is a valid, writable vfio_iommu_type1_dma_unmap whose argsz is its
        // size (no bitmap follows: flags is 0); the kernel writes back `size`.
        check(unsafe { ioctl_with_mut_ptr(container, VFIO_IOMMU_UNMAP_DMA(), &mut unmap) })?;
        Ok(unmap.size)
    }

    /// `VFIO_IOMMU_DIRTY_PAGES` with one of `FLAG_START` / `FLAG_STOP` (`get` is `None`) or
    /// `FLAG_GET_BITMAP` of `[iova, iova + size)` in `page_size` pages into `bitmap`.
    pub(crate) fn iommu_dirty_pages(
        container: &File,
        flags: u32,
        get: Option<(u64, u64, u64, &mut [u64])>,
    ) -> io::Result<()> {
        // struct vfio_iommu_type1_dirty_bitmap { argsz, flags } then, for GET_BITMAP,
        // struct vfio_iommu_type1_dirty_bitmap_get { iova, size, { pgsize, size, data } }.
        let header = std::mem::size_of::<b::vfio_iommu_type1_dirty_bitmap>();
        let body = std::mem::size_of::<b::vfio_iommu_type1_dirty_bitmap_get>();
        let argsz = if get.is_some() { header + body } else { header };
        let mut arg = Vec::with_capacity(argsz);
        arg.extend_from_slice(&(argsz as u32).to_ne_bytes());
        arg.extend_from_slice(&flags.to_ne_bytes());
        if let Some((iova, size, page_size, bitmap)) = get {
            let bytes = (bitmap.len() * 8) as u64;
            for v in [iova, size, page_size, bytes, bitmap.as_mut_ptr() as u64] {
                arg.extend_from_slice(&v.to_ne_bytes());
            }
        }
        // SAFETY: `arg` holds the header (and, for GET_BITMAP, the range) and argsz is its
        // length; the kernel writes at most `bitmap.size` bytes (the length of `bitmap`, which
        // is borrowed mutably for the call) at `bitmap.data`, and nothing into `arg`.
        check(unsafe { ioctl_with_mut_ptr(container, VFIO_IOMMU_DIRTY_PAGES(), arg.as_mut_ptr()) })
    }

    /// `VFIO_GROUP_GET_STATUS`.
    pub(crate) fn group_status(group: &File) -> io::Result<u32> {
        let mut status = b::vfio_group_status {
            argsz: std::mem::size_of::<b::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: `status` is a valid, writable vfio_group_status whose argsz is its size.
        check(unsafe { ioctl_with_mut_ptr(group, VFIO_GROUP_GET_STATUS(), &mut status) })?;
        Ok(status.flags)
    }

    /// `VFIO_GROUP_SET_CONTAINER`: attach the group to `container`.
    pub(crate) fn group_set_container(group: &File, container: &File) -> io::Result<()> {
        let fd: libc::c_int = container.as_raw_fd();
        // SAFETY: the kernel reads one int from the pointer, which points at `fd`.
        check(unsafe { ioctl_with_ptr(group, VFIO_GROUP_SET_CONTAINER(), &fd) })
    }

    /// `VFIO_GROUP_UNSET_CONTAINER`.
    pub(crate) fn group_unset_container(group: &File) -> io::Result<()> {
        // SAFETY: VFIO_GROUP_UNSET_CONTAINER takes no argument.
        check(unsafe { ioctl(group, VFIO_GROUP_UNSET_CONTAINER()) })
    }

    /// `VFIO_GROUP_GET_DEVICE_FD` for the device named `name` (NUL-terminated).
    pub(crate) fn group_get_device_fd(group: &File, name: &std::ffi::CStr) -> io::Result<File> {
        // SAFETY: the kernel reads a NUL-terminated string from the pointer, which `name`
        // guarantees, and writes nothing.
        let fd = unsafe { ioctl_with_ptr(group, VFIO_GROUP_GET_DEVICE_FD(), name.as_ptr()) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel installed `fd` in this process for us and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// An ioctl whose argument is a variable-size structure starting with `argsz`, which the
    /// kernel may write back; `arg` must be at least `min` bytes.
    fn writable_ioctl(
        file: &File,
        nr: libc::c_ulong,
        arg: &mut [u8],
        min: usize,
    ) -> io::Result<()> {
        if arg.len() < min {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `arg` is writable for `arg.len()` bytes and callers encode argsz no larger
        // than that, so the kernel reads and writes inside the buffer.
        check(unsafe { ioctl_with_mut_ptr(file, nr, arg.as_mut_ptr()) })
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` with a `struct vfio_region_info` (and room for its
    /// capability chain) encoded in `arg`; the kernel writes it back.
    pub(crate) fn get_region_info(device: &File, arg: &mut [u8]) -> io::Result<()> {
        writable_ioctl(
            device,
            VFIO_DEVICE_GET_REGION_INFO(),
            arg,
            std::mem::size_of::<b::vfio_region_info>(),
        )
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` for irq index `index`.
    pub(crate) fn get_irq_info(device: &File, index: u32) -> io::Result<b::vfio_irq_info> {
        let mut info = b::vfio_irq_info {
            argsz: std::mem::size_of::<b::vfio_irq_info>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `info` is a valid, writable vfio_irq_info whose argsz is its size.
        check(unsafe { ioctl_with_mut_ptr(device, VFIO_DEVICE_GET_IRQ_INFO(), &mut info) })?;
        Ok(info)
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

    /// `VFIO_DEVICE_SET_IRQS` with a `struct vfio_irq_set` encoded in `arg`. Returns the
    /// ioctl's non-negative value: 0 is success; vfio-pci returns a positive count when the PCI
    /// core could allocate fewer MSI/MSI-X vectors than asked (and enabled none).
    pub(crate) fn set_irqs(device: &File, arg: &[u8]) -> io::Result<u32> {
        if arg.len() < std::mem::size_of::<b::vfio_irq_set>() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `arg` holds at least a full header; the kernel reads at most `argsz` bytes,
        // which IrqSet::to_bytes sets to `arg.len()`, and does not write to the buffer.
        value(unsafe { ioctl_with_ptr(device, VFIO_DEVICE_SET_IRQS(), arg.as_ptr()) })
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

    /// `VFIO_DEVICE_FEATURE` SET `DMA_LOGGING_START`: log device writes to `ranges` (IOVA,
    /// length) in pages of `page_size` bytes.
    pub(crate) fn dma_logging_start(
        device: &File,
        page_size: u64,
        ranges: &[(u64, u64)],
    ) -> io::Result<()> {
        let mut table: Vec<u64> = Vec::with_capacity(ranges.len() * 2);
        for &(iova, length) in ranges {
            table.extend([iova, length]);
        }
        let num =
            u32::try_from(ranges.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        let flags = b::VFIO_DEVICE_FEATURE_SET | b::VFIO_DEVICE_FEATURE_DMA_LOGGING_START;
        // vfio_device_feature { argsz, flags } + vfio_device_feature_dma_logging_control
        // { page_size, num_ranges, __reserved, ranges }.
        let mut arg = feature_header(flags, 24);
        arg.extend_from_slice(&page_size.to_ne_bytes());
        arg.extend_from_slice(&num.to_ne_bytes());
        arg.extend_from_slice(&0u32.to_ne_bytes());
        arg.extend_from_slice(&(table.as_ptr() as u64).to_ne_bytes());
        // SAFETY: `arg` is the whole argument (argsz is its length); the kernel also reads
        // `num` (iova, length) pairs at `ranges`, which is `table`, alive for the call.
        check(unsafe { ioctl_with_mut_ptr(device, VFIO_DEVICE_FEATURE(), arg.as_mut_ptr()) })
    }

    /// `VFIO_DEVICE_FEATURE` SET `DMA_LOGGING_STOP`.
    pub(crate) fn dma_logging_stop(device: &File) -> io::Result<()> {
        let flags = b::VFIO_DEVICE_FEATURE_SET | b::VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP;
        let mut arg = feature_header(flags, 0);
        device_feature(device, &mut arg)
    }

    /// `VFIO_DEVICE_FEATURE` GET `DMA_LOGGING_REPORT` of `[iova, iova + length)` in pages of
    /// `page_size` bytes into `bitmap` (the device clears what it reports).
    pub(crate) fn dma_logging_report(
        device: &File,
        iova: u64,
        length: u64,
        page_size: u64,
        bitmap: &mut [u64],
    ) -> io::Result<()> {
        let pages = length / page_size.max(1);
        if (bitmap.len() as u64) < pages.div_ceil(64) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let flags = b::VFIO_DEVICE_FEATURE_GET | b::VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT;
        // vfio_device_feature_dma_logging_report { iova, length, page_size, bitmap }.
        let mut arg = feature_header(flags, 32);
        for v in [iova, length, page_size, bitmap.as_mut_ptr() as u64] {
            arg.extend_from_slice(&v.to_ne_bytes());
        }
        // SAFETY: `arg` is the whole argument (argsz is its length); the kernel writes the
        // bitmap of `length / page_size` pages at `bitmap`, which holds at least that many
        // bits (checked above) and is borrowed mutably for the call.
        check(unsafe { ioctl_with_mut_ptr(device, VFIO_DEVICE_FEATURE(), arg.as_mut_ptr()) })
    }

    /// A `struct vfio_device_feature` header for a payload of `payload` bytes.
    fn feature_header(flags: u32, payload: usize) -> Vec<u8> {
        let argsz = (8 + payload) as u32;
        let mut arg = Vec::with_capacity(8 + payload);
        arg.extend_from_slice(&argsz.to_ne_bytes());
        arg.extend_from_slice(&flags.to_ne_bytes());
        arg
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
            // _IO(VFIO_TYPE, VFIO_BASE + 21).
            assert_eq!(super::super::VFIO_MIG_GET_PRECOPY_INFO(), 0x3b79);
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
            // A file that is not a migration data fd does not know the ioctl.
            let err = super::super::mig_get_precopy_info(&f).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ENOTTY));
        }
    }
}
