// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest mappings installed as memory slots of a real KVM VM: a memfd stands in for a
//! device's BAR (vfio-core's simulated device backs its BARs the same way). KVM is the oracle
//! for whether a slot is live: it refuses a second slot over guest memory a slot already
//! covers (EEXIST) and accepts one once the first is gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd};
use std::os::unix::fs::FileExt;

use bar_mmap::{
    Error, GuestMapping, GuestMappings, KvmMemorySlots, MapChange, Mapping, MemorySlots, RegionId,
};
use irq_routing::testing::kvm_vm_with_irqchip;

const PAGE: u64 = 4096;

fn memfd(len: u64) -> File {
    // SAFETY: the name is a NUL-terminated literal; the call only creates a new fd.
    let fd = unsafe { libc::memfd_create(c"bar".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd was just returned by memfd_create and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).unwrap();
    file
}

fn mapping(gpa: u64, len: u64, region: RegionId) -> GuestMapping {
    GuestMapping { region, gpa, len }
}

#[test]
fn mapped_areas_become_kvm_slots_and_moves_and_teardown_remove_them() {
    let Some((_kvm, vm)) = kvm_vm_with_irqchip() else {
        return;
    };
    // A 3-page "BAR" at offset 0x10000 of its fd; its middle page traps (an MSI-X table).
    let bar = memfd(0x10000 + 3 * PAGE);
    bar.write_at(b"first", 0x10000 + 0x10).unwrap();
    bar.write_at(b"third", 0x10000 + 2 * PAGE + 0x20).unwrap();
    let region = RegionId { device: 7, bar: 0 };
    let mut maps = GuestMappings::new(Box::new(KvmMemorySlots::new(vm.clone())), 10..14);
    maps.register(
        region,
        bar.as_fd(),
        0x10000,
        vec![(0, PAGE), (2 * PAGE, PAGE)],
    )
    .unwrap();
    let at = 0x1_0000_0000;
    maps.apply(&[MapChange::Map(mapping(at, 3 * PAGE, region))])
        .unwrap();
    let installed = maps.installed();
    assert_eq!(installed.len(), 2);
    assert_eq!(maps.free_slots(), 2);
    assert_eq!((installed[0].gpa, installed[1].gpa), (at, at + 2 * PAGE));
    // What the guest reaches there is the device's memory.
    let (m, off) = maps.mapping_at(at + 0x10).unwrap();
    let mut got = [0u8; 5];
    m.read_bytes(off, &mut got).unwrap();
    assert_eq!(&got, b"first");
    let (m, off) = maps.mapping_at(at + 2 * PAGE + 0x20).unwrap();
    m.read_bytes(off, &mut got).unwrap();
    assert_eq!(&got, b"third");
    assert!(
        maps.mapping_at(at + PAGE).is_none(),
        "the trapped page is not mapped"
    );
    // KVM holds the slot: another one over the same guest page is refused.
    let scratch = memfd(PAGE);
    let mut probe = KvmMemorySlots::new(vm.clone());
    let err = probe
        .install(
            20,
            at,
            Mapping::map_shared(scratch.as_fd(), 0, PAGE as usize).unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::MemorySlot { source, .. } if source.raw_os_error() == Some(libc::EEXIST)),
        "{err:?}"
    );
    // The guest moves the BAR: the old slots go, new ones come, from the same pool.
    let moved = 0x2_0000_0000;
    maps.apply(&[
        MapChange::Unmap(mapping(at, 3 * PAGE, region)),
        MapChange::Map(mapping(moved, 3 * PAGE, region)),
    ])
    .unwrap();
    assert_eq!(maps.installed().len(), 2);
    assert_eq!(maps.installed()[0].gpa, moved);
    assert_eq!(maps.stats().installed, 4);
    assert_eq!(maps.stats().removed, 2);
    // The old guest page is free in KVM again.
    probe
        .install(
            20,
            at,
            Mapping::map_shared(scratch.as_fd(), 0, PAGE as usize).unwrap(),
        )
        .unwrap();
    probe.remove(20).unwrap();
    // Writes through the guest mapping reach the device's memory.
    let (m, off) = maps.mapping_at(moved + 0x100).unwrap();
    m.write_bytes(off, b"guest").unwrap();
    let mut back = [0u8; 5];
    bar.read_at(&mut back, 0x10000 + 0x100).unwrap();
    assert_eq!(&back, b"guest");
    // Teardown: every slot removed, the pool whole again, KVM's range free.
    maps.unregister(region).unwrap();
    assert!(maps.installed().is_empty());
    assert_eq!(maps.free_slots(), 4);
    assert_eq!(maps.registered(), 0);
    probe
        .install(
            21,
            moved,
            Mapping::map_shared(scratch.as_fd(), 0, PAGE as usize).unwrap(),
        )
        .unwrap();
}

#[test]
fn an_exhausted_pool_installs_nothing_for_that_region() {
    let Some((_kvm, vm)) = kvm_vm_with_irqchip() else {
        return;
    };
    let bar = memfd(2 * PAGE);
    let region = RegionId { device: 1, bar: 2 };
    let mut maps = GuestMappings::new(Box::new(KvmMemorySlots::new(vm)), 5..6);
    maps.register(region, bar.as_fd(), 0, vec![(0, PAGE), (PAGE, PAGE)])
        .unwrap();
    let err = maps
        .apply(&[MapChange::Map(mapping(0x8000_0000, 2 * PAGE, region))])
        .unwrap_err();
    assert!(matches!(err, Error::NoFreeSlot), "{err:?}");
    assert!(
        maps.installed().is_empty(),
        "the half-mapped region was rolled back"
    );
    assert_eq!(maps.free_slots(), 1);
}
