// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The mmap itself: a shared mapping of a file descriptor at an offset, unmapped on drop.
//!
//! This is the only module of the crate with `unsafe` code. A VMM maps a VFIO region by
//! mapping the device fd at the region's offset; the same call works on any mappable fd, which
//! is how it is tested here (on a memfd).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use crate::{Error, PageSize, Result};

/// The page size of the running kernel (`sysconf(_SC_PAGESIZE)`).
pub fn host_page_size() -> Result<PageSize> {
    // SAFETY: sysconf takes an integer name and returns a value; it touches no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size <= 0 {
        return Err(Error::HostPageSize(io::Error::last_os_error()));
    }
    PageSize::new(size.unsigned_abs() as u64)
}

/// A shared, read-write mapping of `len` bytes of a file descriptor, unmapped on drop.
///
/// The mapping does not keep the fd open: the kernel holds its own reference to the file for
/// as long as the mapping exists.
#[derive(Debug)]
pub struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; the raw pointer is only an
// address, and all access goes through bounds-checked volatile operations, which are as valid
// from any thread as the memory itself (device memory or a shared file).
unsafe impl Send for Mapping {}
// SAFETY: as for Send; `&Mapping` only permits volatile reads and writes, which do not create
// references to the memory and so cannot alias Rust references.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from file offset `offset`, shared and read-write.
    ///
    /// `offset` must be a multiple of the host page size and `len` non-zero; the kernel rounds
    /// the mapping up to whole pages.
    pub fn map_shared(fd: BorrowedFd<'_>, offset: u64, len: usize) -> Result<Self> {
        let page = host_page_size()?;
        let invalid = Error::InvalidMapping {
            offset,
            len: len as u64,
        };
        if len == 0 || !page.is_aligned(offset) {
            return Err(invalid);
        }
        let Ok(off) = libc::off_t::try_from(offset) else {
            return Err(invalid);
        };
        // SAFETY: a null hint lets the kernel choose a fresh address range, so no existing
        // mapping (and no Rust object) is replaced; the fd is valid for the duration of the
        // call because it is borrowed; the result is checked against MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Mmap(io::Error::last_os_error()));
        }
        let Some(addr) = NonNull::new(ptr.cast::<u8>()) else {
            return Err(Error::Mmap(io::Error::from(io::ErrorKind::InvalidData)));
        };
        Ok(Mapping { addr, len })
    }

    /// The first byte of the mapping, for handing to KVM as a memory slot's userspace address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    /// Length of the mapping in bytes, as requested.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies bytes from the mapping at `offset` into `buf`, one volatile byte access at a time.
    pub fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check(offset, buf.len(), 1)?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `check` proved offset + i lies inside the mapping, which stays mapped
            // while `self` lives.
            *b = unsafe { self.addr.as_ptr().add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// Copies `data` into the mapping at `offset`, one volatile byte access at a time.
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<()> {
        self.check(offset, data.len(), 1)?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: `check` proved offset + i lies inside the read-write mapping, which
            // stays mapped while `self` lives.
            unsafe { self.addr.as_ptr().add(offset + i).write_volatile(*b) };
        }
        Ok(())
    }

    /// One naturally aligned volatile 32-bit read at `offset` (a register read).
    pub fn read_u32(&self, offset: usize) -> Result<u32> {
        self.check(offset, 4, 4)?;
        // SAFETY: `check` proved the 4 bytes lie inside the mapping and that the offset is a
        // multiple of 4; the mapping starts on a page boundary, so the pointer is aligned.
        Ok(unsafe { self.addr.as_ptr().add(offset).cast::<u32>().read_volatile() })
    }

    /// One naturally aligned volatile 32-bit write at `offset` (a register write).
    pub fn write_u32(&self, offset: usize, value: u32) -> Result<()> {
        self.check(offset, 4, 4)?;
        // SAFETY: as in `read_u32`; the mapping is writable.
        unsafe {
            self.addr
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(value)
        };
        Ok(())
    }

    fn check(&self, offset: usize, len: usize, align: usize) -> Result<()> {
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if fits && offset % align == 0 {
            Ok(())
        } else {
            Err(Error::AccessOutOfBounds {
                offset,
                len,
                mapping_len: self.len,
            })
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: addr/len describe exactly the mapping created in `map_shared`, which nothing
        // else unmaps; after this no access through `self` is possible. A failure cannot be
        // reported from drop and would leave the range mapped, which is safe.
        unsafe {
            libc::munmap(self.addr.as_ptr().cast(), self.len);
        }
    }
}

/// KVM's user memory regions as [`MemorySlots`](crate::MemorySlots)
/// (`KVM_SET_USER_MEMORY_REGION`), each holding the [`Mapping`] it makes visible to the guest.
#[cfg(feature = "kvm")]
#[derive(Debug)]
pub struct KvmMemorySlots {
    vm: std::sync::Arc<kvm_ioctls::VmFd>,
    /// What is installed (and owns the mappings).
    installed: crate::RecordedSlots,
}

#[cfg(feature = "kvm")]
impl KvmMemorySlots {
    /// Memory slots of `vm`.
    pub fn new(vm: std::sync::Arc<kvm_ioctls::VmFd>) -> Self {
        KvmMemorySlots {
            vm,
            installed: crate::RecordedSlots::default(),
        }
    }

    fn set(&self, slot: u32, gpa: u64, size: u64, host: u64) -> Result<()> {
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: a non-empty region points at a Mapping this value owns (in `installed`) and
        // keeps until the slot is removed (size 0, which makes KVM forget the host range), so
        // KVM never reaches memory that was unmapped or reused.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|e| Error::MemorySlot {
            slot,
            source: io::Error::from_raw_os_error(e.errno()),
        })
    }
}

#[cfg(feature = "kvm")]
impl crate::MemorySlots for KvmMemorySlots {
    fn install(&mut self, slot: u32, gpa: u64, mapping: Mapping) -> Result<()> {
        if self.installed.gpa(slot).is_some() {
            return Err(Error::SlotBusy(slot));
        }
        self.set(slot, gpa, mapping.len() as u64, mapping.as_ptr() as u64)?;
        self.installed.install(slot, gpa, mapping)
    }

    fn remove(&mut self, slot: u32) -> Result<Mapping> {
        let gpa = self
            .installed
            .gpa(slot)
            .ok_or(Error::SlotNotInstalled(slot))?;
        self.set(slot, gpa, 0, 0)?;
        self.installed.remove(slot)
    }

    fn mapping(&self, slot: u32) -> Option<&Mapping> {
        self.installed.mapping(slot)
    }
}

#[cfg(feature = "kvm")]
impl Drop for KvmMemorySlots {
    fn drop(&mut self) {
        // Remove every slot before its mapping is unmapped.
        for slot in self.installed.slots() {
            let _ = crate::MemorySlots::remove(self, slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::fd::{AsFd, FromRawFd};

    fn memfd(len: u64) -> File {
        // SAFETY: the name is a NUL-terminated string literal; the call only creates a new fd.
        let fd = unsafe { libc::memfd_create(c"bar-mmap-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(len).unwrap();
        file
    }

    /// How many lines of /proc/self/maps start at `addr`.
    fn maps_at(addr: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .filter_map(|l| l.split('-').next())
            .filter(|s| usize::from_str_radix(s, 16).ok() == Some(addr))
            .count()
    }

    #[test]
    fn maps_fd_at_offset_both_ways_and_unmaps_on_drop() {
        let page = host_page_size().unwrap().get();
        let mut file = memfd(3 * page);
        file.seek(SeekFrom::Start(page + 0x10)).unwrap();
        file.write_all(&[0xde, 0xad, 0xbe, 0xef]).unwrap();

        let m = Mapping::map_shared(file.as_fd(), page, 0x100).unwrap();
        assert_eq!(m.len(), 0x100);
        let mut got = [0u8; 4];
        m.read_bytes(0x10, &mut got).unwrap();
        assert_eq!(got, [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(m.read_u32(0x10).unwrap(), u32::from_ne_bytes(got));

        m.write_u32(0x20, 0x1234_5678).unwrap();
        let mut back = [0u8; 4];
        file.seek(SeekFrom::Start(page + 0x20)).unwrap();
        file.read_exact(&mut back).unwrap();
        assert_eq!(u32::from_ne_bytes(back), 0x1234_5678);

        let addr = m.as_ptr() as usize;
        assert_eq!(maps_at(addr), 1);
        drop(m);
        assert_eq!(maps_at(addr), 0);
    }

    #[test]
    fn refuses_bad_requests_and_accesses() {
        let page = host_page_size().unwrap().get();
        let file = memfd(page);
        assert!(matches!(
            Mapping::map_shared(file.as_fd(), 0x10, 0x100),
            Err(Error::InvalidMapping { .. })
        ));
        assert!(matches!(
            Mapping::map_shared(file.as_fd(), 0, 0),
            Err(Error::InvalidMapping { .. })
        ));
        let m = Mapping::map_shared(file.as_fd(), 0, 0x100).unwrap();
        assert!(matches!(
            m.read_u32(0xfe),
            Err(Error::AccessOutOfBounds { .. })
        ));
        assert!(matches!(
            m.read_u32(0x2),
            Err(Error::AccessOutOfBounds { .. })
        ));
        assert!(m.write_bytes(0xff, &[1, 2]).is_err());
        assert!(m.write_bytes(0xfe, &[1, 2]).is_ok());
    }
}
