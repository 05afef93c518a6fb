// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! VFIO_DEVICE_SET_IRQS on the e1000e: validation, count-0 rules, ERR and REQ, MSI-X enables,
//! growth and index switching (Linux v6.12.117 drivers/vfio/vfio_main.c,
//! vfio_set_irqs_validate_and_prepare(); drivers/vfio/pci/vfio_pci_intrs.c,
//! vfio_pci_set_irqs_ioctl() and the functions it dispatches to).

use std::os::fd::AsRawFd;

use super::{arm, bus_master, cause_of, quiesce, raise, MSIX_BAR, PBA, VECTORS};
use crate::conformance::{counts, expect_errno, fds, Outcome, Signals, Subject};
use crate::info::{ERR_IRQ_INDEX, INTX_IRQ_INDEX, MSIX_IRQ_INDEX, MSI_IRQ_INDEX, REQ_IRQ_INDEX};
use crate::irq_set::{IrqAction, IrqData, IrqSet};

const NONE: u32 = 1;
const BOOL: u32 = 2;
const MASK: u32 = 8;
const UNMASK: u32 = 16;
const TRIGGER: u32 = 32;

fn with_data(index: u32, start: u32, count: u32, data: IrqData) -> IrqSet {
    IrqSet {
        index,
        action: IrqAction::Trigger,
        start,
        count,
        data,
        raw_flags: None,
    }
}

/// Requests the kernel refuses, each with its errno: bad flags, index, range, data type or
/// payload size are EINVAL before anything is looked at; an action the index does not have
/// (no action, two actions, MASK/UNMASK on MSI, MSI-X, ERR and REQ) is ENOTTY; a count-0
/// TRIGGER on an index that is not enabled is EINVAL. None of them leaves an index enabled.
pub fn set_irqs_validation(s: &Subject) -> Outcome {
    let sig = Signals::many(VECTORS + 1)?;
    let one = vec![Some(sig[0].raw())];
    let rows: Vec<(&str, IrqSet, i32)> = vec![
        ("index 5", IrqSet::disable(5), libc::EINVAL),
        (
            "unknown flag 0x40",
            IrqSet::fire(MSIX_IRQ_INDEX, 0, 1).with_raw_flags(0x40 | NONE | TRIGGER),
            libc::EINVAL,
        ),
        (
            "two data types",
            with_data(MSIX_IRQ_INDEX, 0, 1, IrqData::Bool(vec![true]))
                .with_raw_flags(NONE | BOOL | TRIGGER),
            libc::EINVAL,
        ),
        (
            "start at the vector count",
            IrqSet::eventfds(MSIX_IRQ_INDEX, 5, vec![]),
            libc::EINVAL,
        ),
        (
            "six MSI-X vectors",
            IrqSet::eventfds(MSIX_IRQ_INDEX, 0, fds(&sig)),
            libc::EINVAL,
        ),
        (
            "range past the end",
            IrqSet::eventfds(MSIX_IRQ_INDEX, 4, fds(&sig[..2])),
            libc::EINVAL,
        ),
        (
            "count overflows start",
            IrqSet::fire(MSIX_IRQ_INDEX, 1, u32::MAX),
            libc::EINVAL,
        ),
        (
            "payload shorter than count",
            with_data(MSIX_IRQ_INDEX, 0, 2, IrqData::Eventfds(one.clone())),
            libc::EINVAL,
        ),
        (
            "no action",
            IrqSet::fire(MSIX_IRQ_INDEX, 0, 1).with_raw_flags(NONE),
            libc::ENOTTY,
        ),
        (
            "MASK | TRIGGER",
            IrqSet::fire(INTX_IRQ_INDEX, 0, 1).with_raw_flags(NONE | MASK | TRIGGER),
            libc::ENOTTY,
        ),
        (
            "MSI-X MASK",
            IrqSet::mask(MSIX_IRQ_INDEX, 0, 1, true),
            libc::ENOTTY,
        ),
        (
            "MSI UNMASK",
            IrqSet::mask(MSI_IRQ_INDEX, 0, 1, false),
            libc::ENOTTY,
        ),
        (
            "ERR MASK",
            IrqSet::fire(ERR_IRQ_INDEX, 0, 1).with_raw_flags(NONE | MASK),
            libc::ENOTTY,
        ),
        (
            "REQ UNMASK",
            IrqSet::fire(REQ_IRQ_INDEX, 0, 1).with_raw_flags(NONE | UNMASK),
            libc::ENOTTY,
        ),
        (
            "MSI-X count-0 TRIGGER, not enabled",
            IrqSet::disable(MSIX_IRQ_INDEX),
            libc::EINVAL,
        ),
        (
            "MSI count-0 TRIGGER, not enabled",
            IrqSet::disable(MSI_IRQ_INDEX),
            libc::EINVAL,
        ),
        (
            "INTx count-0 TRIGGER, not enabled",
            IrqSet::disable(INTX_IRQ_INDEX),
            libc::EINVAL,
        ),
        (
            "MSI-X count-0 BOOL, not enabled",
            with_data(MSIX_IRQ_INDEX, 0, 0, IrqData::Bool(vec![])),
            libc::EINVAL,
        ),
    ];
    for (what, set, errno) in rows {
        let r = s.dev().set_irqs(&set);
        if let Err(mut f) = expect_errno(r, errno) {
            f.message.push_str(&format!(" ({what})"));
            return Err(f);
        }
    }
    // Nothing was left enabled: INTx enables (with no eventfd) and disables again.
    s.dev()
        .set_irqs(&IrqSet::eventfds(INTX_IRQ_INDEX, 0, vec![None]))?;
    s.dev().set_irqs(&IrqSet::disable(INTX_IRQ_INDEX))?;
    s.wait_settle();
    ensure_eq!(counts(&sig)?, vec![0; VECTORS + 1], "nothing signalled");
    Ok(())
}

/// Count 0 on every index: MSI and MSI-X enable `start` vectors with none bound when
/// `start > 0`, and ask the PCI core for no vector (ERANGE) when `start == 0`; on an enabled
/// index a count-0 EVENTFD or BOOL request does nothing and count-0 NONE disables it; ERR and
/// REQ refuse count-0 EVENTFD and BOOL always and count-0 NONE while no eventfd is bound.
pub fn count_zero_rules_on_every_index(s: &Subject) -> Outcome {
    let d = s.dev();
    let empty = |index, start| with_data(index, start, 0, IrqData::Eventfds(vec![]));
    d.set_irqs(&empty(MSIX_IRQ_INDEX, 2))?;
    // Enabled (with two vectors, none bound): these change nothing and succeed.
    d.set_irqs(&empty(MSIX_IRQ_INDEX, 0))?;
    d.set_irqs(&with_data(MSIX_IRQ_INDEX, 0, 0, IrqData::Bool(vec![])))?;
    expect_errno(d.set_irqs(&empty(MSI_IRQ_INDEX, 0)), libc::EINVAL)?;
    d.set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    expect_errno(d.set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX)), libc::EINVAL)?;
    // start 0, count 0 asks pci_alloc_irq_vectors() for no vector.
    expect_errno(d.set_irqs(&empty(MSIX_IRQ_INDEX, 0)), libc::ERANGE)?;
    expect_errno(d.set_irqs(&empty(MSI_IRQ_INDEX, 0)), libc::ERANGE)?;
    // MSI has one vector: start 1 is past it.
    expect_errno(d.set_irqs(&empty(MSI_IRQ_INDEX, 1)), libc::EINVAL)?;
    for index in [ERR_IRQ_INDEX, REQ_IRQ_INDEX] {
        expect_errno(d.set_irqs(&IrqSet::disable(index)), libc::EINVAL)?;
        expect_errno(d.set_irqs(&empty(index, 0)), libc::EINVAL)?;
        let bool0 = with_data(index, 0, 0, IrqData::Bool(vec![]));
        expect_errno(d.set_irqs(&bool0), libc::EINVAL)?;
    }
    Ok(())
}

/// ERR and REQ (one vector each, vfio_pci_set_ctx_trigger_single()): loopback needs an
/// eventfd for NONE but not for BOOL; fd -1 releases, any other negative fd is EINVAL;
/// count-0 NONE releases.
pub fn err_and_req_triggers(s: &Subject) -> Outcome {
    let d = s.dev();
    for index in [ERR_IRQ_INDEX, REQ_IRQ_INDEX] {
        let info = d
            .info()
            .irq(index)
            .ok_or_else(|| crate::conformance::Failure::new("no ERR/REQ index"))?;
        ensure_eq!(
            (info.count, info.flags.bits()),
            (1, 0x9),
            "index {index} info"
        );
        let e = Signals::new()?;
        let fire = IrqSet::fire(index, 0, 1);
        let bool1 = |b| with_data(index, 0, 1, IrqData::Bool(vec![b]));
        expect_errno(d.set_irqs(&fire), libc::EINVAL)?;
        d.set_irqs(&bool1(true))?;
        expect_errno(
            d.set_irqs(&IrqSet::eventfds(index, 0, vec![Some(-2)])),
            libc::EINVAL,
        )?;
        d.set_irqs(&IrqSet::eventfds(index, 0, vec![Some(e.raw())]))?;
        d.set_irqs(&fire)?;
        ensure_eq!(e.wait_for(1, s.deadline())?, 1, "index {index} NONE");
        d.set_irqs(&bool1(true))?;
        d.set_irqs(&bool1(false))?;
        ensure_eq!(e.wait_for(2, s.deadline())?, 2, "index {index} BOOL");
        expect_errno(
            d.set_irqs(&IrqSet::eventfds(index, 0, vec![Some(-2)])),
            libc::EINVAL,
        )?;
        // The EINVAL left the eventfd bound.
        d.set_irqs(&fire)?;
        ensure_eq!(e.wait_for(3, s.deadline())?, 3, "index {index} after -2");
        d.set_irqs(&IrqSet::disable(index))?;
        expect_errno(d.set_irqs(&fire), libc::EINVAL)?;
        d.set_irqs(&IrqSet::eventfds(index, 0, vec![Some(e.raw())]))?;
        d.set_irqs(&IrqSet::eventfds(index, 0, vec![None]))?;
        expect_errno(d.set_irqs(&fire), libc::EINVAL)?;
        s.wait_settle();
        ensure_eq!(e.count()?, 3, "index {index}: nothing more");
    }
    Ok(())
}

/// Every MSI-X vector enabled with one SET_IRQS; loopback triggers (DATA_NONE and DATA_BOOL)
/// signal exactly the vectors they name; a vector de-assigned with fd -1 stays silent; the
/// index disables once, and a second disable is EINVAL.
pub fn msix_all_vectors_in_one_call_and_loopback(s: &Subject) -> Outcome {
    let sig = Signals::many(VECTORS)?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, fds(&sig)))?;
    s.wait_settle();
    ensure_eq!(counts(&sig)?, vec![0; VECTORS], "nothing fires at enable");
    s.dev()
        .set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, VECTORS as u32))?;
    for (v, x) in sig.iter().enumerate() {
        ensure_eq!(x.wait_for(1, s.deadline())?, 1, "vector {v}");
    }
    let bools = with_data(
        MSIX_IRQ_INDEX,
        0,
        VECTORS as u32,
        IrqData::Bool(vec![true, false, true, false, true]),
    );
    s.dev().set_irqs(&bools)?;
    for v in [0, 2, 4] {
        ensure_eq!(sig[v].wait_for(2, s.deadline())?, 2, "vector {v}");
    }
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 2, vec![None]))?;
    s.dev()
        .set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, VECTORS as u32))?;
    ensure_eq!(sig[4].wait_for(3, s.deadline())?, 3);
    s.wait_settle();
    ensure_eq!(counts(&sig)?, vec![3, 2, 2, 2, 3]);
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    expect_errno(
        s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX)),
        libc::EINVAL,
    )
}

/// MSI-X enabled with fd -1 on every vector: allocated, nothing bound, so a device interrupt
/// on any vector is latched in the PBA (the host kernel masks vectors it has no handler for)
/// and binding a trigger later delivers it once.
pub fn msix_enable_with_fd_minus_one(s: &Subject) -> Outcome {
    bus_master(s, true)?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![None; VECTORS]))?;
    arm(s, 0x01f0_0000)?;
    raise(s, cause_of(3))?;
    s.wait_settle();
    let pba = s.read32(MSIX_BAR, PBA)?;
    ensure_eq!(pba & 0x1f, 1 << 3, "vector 3 pending");
    let b = Signals::new()?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 3, vec![Some(b.raw())]))?;
    ensure_eq!(b.wait_for(1, s.deadline())?, 1, "the latched interrupt");
    s.wait_settle();
    ensure_eq!(b.count()?, 1, "delivered once");
    ensure_eq!(s.read32(MSIX_BAR, PBA)? & 0x1f, 0, "no longer pending");
    quiesce(s)?;
    s.wait_settle();
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    Ok(())
}

/// Dynamic MSI-X (no NORESIZE, vfio_msi_alloc_irq()): enable vector 0, then add vector 3
/// while enabled; loopback skips vectors with no trigger; device interrupts arrive on the
/// added vector. A vector never allocated is latched while masked and delivered when it is
/// added. A seventh vector is past the table (EINVAL).
pub fn msix_dynamic_growth(s: &Subject) -> Outcome {
    let msix = s
        .dev()
        .info()
        .irq(MSIX_IRQ_INDEX)
        .ok_or_else(|| crate::conformance::Failure::new("no MSI-X"))?;
    ensure!(!msix.is_noresize(), "the e1000e's MSI-X is dynamic");
    let (a, b, c) = (Signals::new()?, Signals::new()?, Signals::new()?);
    bus_master(s, true)?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![Some(a.raw())]))?;
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 3, vec![Some(b.raw())]))?;
    s.dev()
        .set_irqs(&IrqSet::fire(MSIX_IRQ_INDEX, 0, VECTORS as u32))?;
    ensure_eq!(a.wait_for(1, s.deadline())?, 1);
    ensure_eq!(b.wait_for(1, s.deadline())?, 1);
    arm(s, 0x01f0_0000)?;
    raise(s, cause_of(3))?;
    ensure_eq!(
        b.wait_for(2, s.deadline())?,
        2,
        "device interrupt on vector 3"
    );
    raise(s, cause_of(1))?;
    s.wait_settle();
    ensure_eq!(s.read32(MSIX_BAR, PBA)? & 0x1f, 1 << 1, "vector 1 latched");
    s.dev()
        .set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 1, vec![Some(c.raw())]))?;
    ensure_eq!(
        c.wait_for(1, s.deadline())?,
        1,
        "latched vector 1 delivered"
    );
    s.wait_settle();
    ensure_eq!((a.count()?, b.count()?, c.count()?), (1, 2, 1));
    expect_errno(
        s.dev().set_irqs(&IrqSet::eventfds(
            MSIX_IRQ_INDEX,
            VECTORS as u32,
            vec![Some(c.raw())],
        )),
        libc::EINVAL,
    )?;
    quiesce(s)?;
    s.wait_settle();
    s.dev().set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    Ok(())
}

/// One interrupt type at a time (vfio_pci_set_intx_trigger(), vfio_pci_set_msi_trigger():
/// EINVAL while another type is enabled): with each of INTx, MSI-X and MSI enabled, enabling or
/// disabling another type, or masking INTx, is EINVAL and leaves it enabled.
pub fn index_switching(s: &Subject) -> Outcome {
    let d = s.dev();
    let a = Signals::new()?;
    let types = [INTX_IRQ_INDEX, MSIX_IRQ_INDEX, MSI_IRQ_INDEX];
    for active in types {
        // INTx with no eventfd, the others with one.
        let fd = (active != INTX_IRQ_INDEX).then(|| a.raw());
        d.set_irqs(&IrqSet::eventfds(active, 0, vec![fd]))?;
        for other in types.into_iter().filter(|&t| t != active) {
            let enable = IrqSet::eventfds(other, 0, vec![Some(a.raw())]);
            expect_errno(d.set_irqs(&enable), libc::EINVAL)?;
            expect_errno(d.set_irqs(&IrqSet::disable(other)), libc::EINVAL)?;
        }
        if active != INTX_IRQ_INDEX {
            let mask = IrqSet::mask(INTX_IRQ_INDEX, 0, 1, true);
            expect_errno(d.set_irqs(&mask), libc::EINVAL)?;
            // Still enabled: a loopback reaches its eventfd.
            let before = a.count()?;
            d.set_irqs(&IrqSet::fire(active, 0, 1))?;
            ensure_eq!(
                a.wait_for(before + 1, s.deadline())?,
                before + 1,
                "index {active}"
            );
        }
        d.set_irqs(&IrqSet::disable(active))?;
    }
    Ok(())
}

/// A trigger that is not an eventfd (EINVAL) or not an open fd (EBADF) fails the whole
/// enable: vfio_msi_set_block() undoes the vectors it set and the index is disabled again
/// (a disable is then EINVAL); the vector before the bad one never fires.
pub fn msix_bad_fds_change_nothing(s: &Subject) -> Outcome {
    let d = s.dev();
    let (a, c) = (Signals::new()?, Signals::new()?);
    // An open fd that is not an eventfd.
    let null = std::fs::File::open("/dev/null")
        .map_err(|e| crate::conformance::Failure::new(e.to_string()))?;
    let not_eventfd = null.as_raw_fd();
    let set = IrqSet::eventfds(
        MSIX_IRQ_INDEX,
        0,
        vec![Some(a.raw()), Some(not_eventfd), Some(c.raw())],
    );
    expect_errno(d.set_irqs(&set), libc::EINVAL)?;
    expect_errno(d.set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX)), libc::EINVAL)?;
    // An fd number no process has open (past any RLIMIT_NOFILE).
    let closed = 0x3fff_ffff;
    let set = IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![Some(a.raw()), Some(closed)]);
    expect_errno(d.set_irqs(&set), libc::EBADF)?;
    expect_errno(d.set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX)), libc::EINVAL)?;
    s.wait_settle();
    ensure_eq!((a.count()?, c.count()?), (0, 0));
    // And the index still enables.
    d.set_irqs(&IrqSet::eventfds(MSIX_IRQ_INDEX, 0, vec![Some(a.raw())]))?;
    d.set_irqs(&IrqSet::disable(MSIX_IRQ_INDEX))?;
    Ok(())
}
