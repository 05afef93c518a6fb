// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Scenarios on the kernel's mtty sample (Linux v6.12.117 `samples/vfio-mdev/mtty.c`, type
//! `mtty-2`: two serial ports): its regions and interrupts, its UART registers, and migration
//! v2 with PRE_COPY: the data fd in every state, sizes, a save and restore between two
//! devices, failed resumes and stale fds. The device's shape (info, config, UART, interrupts)
//! is in `mtty_device`, the request matrix in `mtty_fsm`.
//!
//! An mdev keeps its state between opens (`mtty_close()` disables the migration files and the
//! interrupts, nothing else), so each scenario starts with `baseline`: a reset (RUNNING) and
//! every UART register a stream carries set to known values, on both ports.

use std::io::{Read, Write};

use super::{expect_errno, Failure, Outcome, Subject};
use crate::device::VfioMigration;
use crate::migration::{DataChunk, MigState, MigrationDataFd, PrecopyInfo};

pub use super::mtty_device::{
    config_writes_follow_mtty, info_regions_and_irqs, set_irqs_follow_mtty,
    uart_registers_read_back,
};
pub use super::mtty_fsm::every_request_walks_as_the_kernel_answers;

/// The ports: port `p` is BAR `p` (region index `p`).
pub(crate) const PORTS: u32 = 2;
/// `offsetof(struct mtty_data, ports)`.
const HEADER: usize = 24;
/// `sizeof(struct serial_port)`.
const PORT: usize = 36;
/// `mtty_data_size()` for two ports.
const STREAM: usize = HEADER + PORTS as usize * PORT;

/// UART registers (`include/uapi/linux/serial_reg.h`).
pub(crate) const TX: u64 = 0;
pub(crate) const IER: u64 = 1;
pub(crate) const FCR: u64 = 2;
pub(crate) const IIR: u64 = 2;
pub(crate) const LCR: u64 = 3;
pub(crate) const MCR: u64 = 4;
pub(crate) const LSR: u64 = 5;
pub(crate) const MSR: u64 = 6;
pub(crate) const SCR: u64 = 7;

/// The header every mtty-2 stream starts with: `MTTY_MAGIC`, version 1.0, 2 ports, flags 0.
const MTTY2_HEADER: [u8; HEADER] = [
    0x4e, 0x2c, 0x3e, 0x8c, 0x89, 0x09, 0x9d, 0x7e, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
];

pub(crate) fn put(d: &dyn VfioMigration, port: u32, reg: u64, value: u8) -> Outcome {
    d.region_write(port, reg, &[value])?;
    Ok(())
}

pub(crate) fn get(d: &dyn VfioMigration, port: u32, reg: u64) -> Result<u8, Failure> {
    let mut b = [0u8; 1];
    d.region_read(port, reg, &mut b)?;
    Ok(b[0])
}

/// Reset (RUNNING, migration files closed) and set every register a stream carries: DLAB off
/// and divisor 0, FIFO enabled, cleared and its 16 bytes zeroed, no interrupt sources, MCR and
/// SCR 0. A port then streams as [`baseline_port`].
pub(crate) fn baseline(d: &dyn VfioMigration) -> Outcome {
    d.reset()?;
    ensure_eq!(d.migration_state()?, MigState::Running, "after reset");
    for p in 0..PORTS {
        put(d, p, LCR, 0x80)?; // DLAB: zeroes the divisor
        put(d, p, LCR, 0x00)?;
        put(d, p, IER, 0x00)?;
        put(d, p, MCR, 0x00)?;
        put(d, p, FCR, 0x07)?; // enable and clear the FIFO: 16 deep, trigger level 1
        for _ in 0..16 {
            put(d, p, TX, 0x00)?; // overwrite the FIFO's bytes, clear overrun
        }
        put(d, p, FCR, 0x07)?;
        put(d, p, SCR, 0x00)?;
    }
    Ok(())
}

/// A port after [`baseline`] with SCR = `scr`, as `struct serial_port`'s bytes.
fn baseline_port(scr: u8) -> [u8; PORT] {
    let mut b = [0u8; PORT];
    b[7] = scr;
    b[32] = 0x07; // fcr
    b[33] = 16; // max_fifo_size
    b[34] = 1; // intr_trigger_level
    b
}

/// The STOP_COPY stream of `d` from RUNNING: RUNNING -> STOP -> STOP_COPY, read to the end;
/// `d` is left in STOP.
pub(crate) fn whole_stream(d: &dyn VfioMigration) -> Result<Vec<u8>, Failure> {
    baseline(d)?;
    ensure!(
        d.set_migration_state(MigState::Stop)?.is_none(),
        "STOP hands out no fd"
    );
    let mut fd = enter(d, MigState::StopCopy)?;
    let mut out = Vec::new();
    let (n, end) = fd.read_available(MigState::StopCopy, &mut out)?;
    ensure_eq!((n, end), (STREAM, DataChunk::End));
    d.set_migration_state(MigState::Stop)?;
    Ok(out)
}

/// Move `d` to `state`, which must hand out a data fd.
#[track_caller]
fn enter(d: &dyn VfioMigration, state: MigState) -> Result<MigrationDataFd, Failure> {
    d.set_migration_state(state)?
        .ok_or_else(|| Failure::new(format!("entering {state:?} hands out no data fd")))
}

fn peer(s: &Subject) -> Result<&dyn VfioMigration, Failure> {
    s.peer()
        .ok_or_else(|| Failure::new("this scenario needs a second mtty device"))
}

/// PRE_COPY's data fd: `VFIO_MIG_GET_PRECOPY_INFO` reports the 24-byte header as initial
/// data and never dirty bytes; the header reads, then `read() == 0` (mtty's "nothing more for
/// now", not ENOMSG); STOP_COPY appends the 72 bytes of the ports to the same fd (no new fd),
/// which then ends with 0; PRECOPY_INFO outside PRE_COPY is EINVAL; STOP closes the fd
/// (ENODEV). MIG_DATA_SIZE is 96 throughout.
pub fn pre_copy_data_fd_to_stop_copy(s: &Subject) -> Outcome {
    let d = s.device.as_ref();
    baseline(d)?;
    ensure_eq!(d.migration_data_size()?, STREAM as u64, "in RUNNING");
    let mut f = enter(d, MigState::PreCopy)?;
    let info = |initial_bytes, dirty_bytes| PrecopyInfo {
        initial_bytes,
        dirty_bytes,
    };
    ensure_eq!(f.precopy_info()?, info(HEADER as u64, 0));
    ensure_eq!(d.migration_data_size()?, STREAM as u64, "in PRE_COPY");
    let io = |e: std::io::Error| Failure::new(format!("read: {e}"));
    let mut buf = [0u8; 4096];
    // A short read takes what it asks for; initial_bytes is what is left.
    let first = f.read(&mut buf[..10]).map_err(io)?;
    ensure_eq!(first, 10);
    ensure_eq!(f.precopy_info()?, info(HEADER as u64 - 10, 0));
    let n = f.read(&mut buf[10..]).map_err(io)?;
    ensure_eq!(buf.get(..10 + n), Some(&MTTY2_HEADER[..]));
    ensure_eq!(f.precopy_info()?, info(0, 0));
    ensure_eq!(
        f.read(&mut buf).map_err(|e| Failure::new(e.to_string()))?,
        0
    );
    ensure_eq!(
        f.read_chunk(MigState::PreCopy, &mut buf)?,
        DataChunk::NothingMoreForNow
    );
    // The device changes: mtty reports no dirty bytes (its state is saved at STOP_COPY).
    put(d, 0, SCR, 0x5a)?;
    ensure_eq!(f.precopy_info()?, info(0, 0));
    ensure!(
        d.set_migration_state(MigState::StopCopy)?.is_none(),
        "PRE_COPY -> STOP_COPY continues on the pre-copy fd"
    );
    expect_errno(f.precopy_info(), libc::EINVAL)?;
    ensure_eq!(d.migration_data_size()?, STREAM as u64, "in STOP_COPY");
    let mut rest = Vec::new();
    let (n, end) = f.read_available(MigState::StopCopy, &mut rest)?;
    ensure_eq!((n, end), (STREAM - HEADER, DataChunk::End));
    let mut want = baseline_port(0x5a).to_vec();
    want.extend_from_slice(&baseline_port(0));
    ensure_eq!(
        rest,
        want,
        "the ports, SCR of port 0 written during PRE_COPY"
    );
    ensure_eq!(
        f.read(&mut buf).map_err(|e| Failure::new(e.to_string()))?,
        0
    );
    d.set_migration_state(MigState::Stop)?;
    let err = f
        .read(&mut buf)
        .map(|_| ())
        .map_err(crate::Error::MigrationData);
    expect_errno(err, libc::ENODEV)?;
    baseline(d)
}

/// PRE_COPY_P2P (RUNNING -> RUNNING_P2P -> PRE_COPY_P2P) hands out the saving fd; a fresh
/// STOP -> STOP_COPY fd reads the whole 96-byte stream, then 0; the byte counts are
/// MIG_DATA_SIZE's.
pub fn stop_copy_reads_the_whole_stream(s: &Subject) -> Outcome {
    let d = s.device.as_ref();
    baseline(d)?;
    let mut f = enter(d, MigState::PreCopyP2p)?;
    let mut got = Vec::new();
    let (n, end) = f.read_available(MigState::PreCopyP2p, &mut got)?;
    ensure_eq!((n, end), (HEADER, DataChunk::NothingMoreForNow));
    ensure!(
        d.set_migration_state(MigState::StopCopy)?.is_none(),
        "no new fd"
    );
    let (n, end) = f.read_available(MigState::StopCopy, &mut got)?;
    ensure_eq!((n, end), (STREAM - HEADER, DataChunk::End));
    let stream = whole_stream(d)?;
    ensure_eq!(stream.len() as u64, d.migration_data_size()?);
    ensure_eq!(
        stream,
        got,
        "a fresh STOP_COPY reads what PRE_COPY then STOP_COPY read"
    );
    ensure_eq!(stream.get(..HEADER), Some(&MTTY2_HEADER[..]));
    baseline(d)
}

/// Program a port with state that shows in the stream: SCR, the FIFO (two bytes queued), and
/// a divisor latched with DLAB left set (writing LCR with DLAB zeroes the divisor).
fn program(d: &dyn VfioMigration, port: u32, scr: u8, text: &[u8], divisor: u8) -> Outcome {
    put(d, port, SCR, scr)?;
    put(d, port, FCR, 0x07)?;
    for &b in text {
        put(d, port, TX, b)?;
    }
    put(d, port, LCR, 0x83)?;
    put(d, port, TX, divisor)?;
    put(d, port, IER, 0x00)
}

/// What a programmed port reads back: LCR, divisor, SCR, LSR with DLAB set; then, DLAB
/// cleared, the FIFO's bytes and LSR once it is empty.
fn read_back(d: &dyn VfioMigration, port: u32, len: usize) -> Result<Vec<u8>, Failure> {
    let mut out = vec![
        get(d, port, LCR)?,
        get(d, port, TX)?,
        get(d, port, IER)?,
        get(d, port, SCR)?,
        get(d, port, LSR)?,
    ];
    put(d, port, LCR, 0x03)?;
    for _ in 0..len {
        out.push(get(d, port, TX)?);
    }
    out.push(get(d, port, LSR)?);
    Ok(out)
}

/// A whole migration between two mtty devices: the source pre-copies then stops, the
/// destination resumes the bytes and runs; UART values written through the source's BARs read
/// back the same through the destination's.
pub fn save_restore_between_two_devices(s: &Subject) -> Outcome {
    let (src, dst) = (s.device.as_ref(), peer(s)?);
    baseline(src)?;
    baseline(dst)?;
    program(src, 0, 0x5a, b"hi", 0x0c)?;
    program(src, 1, 0xa5, b"xyz", 0x30)?;
    let mut f = enter(src, MigState::PreCopy)?;
    let mut stream = Vec::new();
    f.read_available(MigState::PreCopy, &mut stream)?;
    ensure_eq!(f.precopy_info()?.is_empty(), true);
    src.set_migration_state(MigState::StopCopy)?;
    f.read_available(MigState::StopCopy, &mut stream)?;
    ensure_eq!(stream.len(), STREAM);
    ensure_eq!(stream.get(HEADER + 7), Some(&0x5a), "port 0 SCR");
    ensure_eq!(stream.get(HEADER + 27), Some(&1), "port 0 DLAB");
    ensure_eq!(stream.get(HEADER + 30), Some(&0x0c), "port 0 divisor");
    ensure_eq!(stream.get(HEADER + 26), Some(&2), "port 0 FIFO count");
    ensure_eq!(
        stream.get(HEADER + PORT + 26),
        Some(&3),
        "port 1 FIFO count"
    );
    src.set_migration_state(MigState::Stop)?;

    let mut r = enter(dst, MigState::Resuming)?;
    let n = r
        .write(&stream)
        .map_err(|e| Failure::new(format!("write: {e}")))?;
    ensure_eq!(n, STREAM);
    ensure!(
        dst.set_migration_state(MigState::Running)?.is_none(),
        "no fd"
    );
    ensure_eq!(dst.migration_state()?, MigState::Running);
    let want0 = [0x83, 0x0c, 0x00, 0x5a, 0x01, b'h', b'i', 0x60];
    let want1 = [0x83, 0x30, 0x00, 0xa5, 0x01, b'x', b'y', b'z', 0x60];
    ensure_eq!(read_back(dst, 0, 2)?, want0, "destination port 0");
    ensure_eq!(read_back(dst, 1, 3)?, want1, "destination port 1");
    // The source, run again, still holds the same.
    src.set_migration_state(MigState::Running)?;
    ensure_eq!(read_back(src, 0, 2)?, want0, "source port 0");
    ensure_eq!(read_back(src, 1, 3)?, want1, "source port 1");
    baseline(src)?;
    baseline(dst)
}

/// A truncated resume (`mtty_load_state()`): RESUMING -> STOP fails with EINVAL and the
/// device stays in RESUMING with its fd writable; the missing byte completes it. Then,
/// truncated again, a reset returns the device to RUNNING and the old fd is stale.
pub fn truncated_resume_and_recovery(s: &Subject) -> Outcome {
    let (src, dst) = (s.device.as_ref(), peer(s)?);
    let stream = whole_stream(src)?;
    baseline(dst)?;
    let mut r = enter(dst, MigState::Resuming)?;
    let io = |e: std::io::Error| Failure::new(format!("write: {e}"));
    ensure_eq!(r.write(&stream[..STREAM - 1]).map_err(io)?, STREAM - 1);
    expect_errno(dst.set_migration_state(MigState::Stop), libc::EINVAL)?;
    ensure_eq!(dst.migration_state()?, MigState::Resuming);
    expect_errno(dst.set_migration_state(MigState::Running), libc::EINVAL)?;
    expect_errno(dst.set_migration_state(MigState::PreCopy), libc::EINVAL)?;
    ensure_eq!(dst.migration_state()?, MigState::Resuming);
    ensure_eq!(r.write(&stream[STREAM - 1..]).map_err(io)?, 1);
    ensure!(dst.set_migration_state(MigState::Stop)?.is_none(), "no fd");
    ensure_eq!(dst.migration_state()?, MigState::Stop);

    let mut r = enter(dst, MigState::Resuming)?;
    ensure_eq!(r.write(&stream[..HEADER + 1]).map_err(io)?, HEADER + 1);
    expect_errno(dst.set_migration_state(MigState::Running), libc::EINVAL)?;
    dst.reset()?;
    ensure_eq!(dst.migration_state()?, MigState::Running);
    let stale = r
        .write(&stream[..8])
        .map(|_| ())
        .map_err(crate::Error::MigrationData);
    expect_errno(stale, libc::ENODEV)?;
    baseline(src)?;
    baseline(dst)
}

/// `mtty_resume_write()`: a write past the 96-byte stream is ENOMEM and takes nothing; the
/// write that completes the header checks it (magic, version, flags, port count) and answers
/// EFAULT, its bytes counted all the same; a stream for one port (60 bytes) then cannot load.
pub fn resume_writes_are_checked(s: &Subject) -> Outcome {
    let (src, dst) = (s.device.as_ref(), peer(s)?);
    let stream = whole_stream(src)?;
    let write = |fd: &mut crate::MigrationDataFd, data: &[u8]| {
        fd.write(data).map_err(crate::Error::MigrationData)
    };
    baseline(dst)?;
    let mut r = enter(dst, MigState::Resuming)?;
    let mut long = stream.clone();
    long.push(0);
    expect_errno(write(&mut r, &long), libc::ENOMEM)?;
    // Nothing was taken: the header in two writes, the check on the second.
    ensure_eq!(write(&mut r, &stream[..20])?, 20);
    ensure_eq!(write(&mut r, &stream[20..])?, STREAM - 20);
    ensure!(dst.set_migration_state(MigState::Stop)?.is_none(), "no fd");

    // A one-port device's stream: EFAULT on the write crossing byte 24, and too short.
    let mut one = stream.get(..HEADER + PORT).unwrap_or_default().to_vec();
    if let Some(ports) = one.get_mut(16) {
        *ports = 1;
    }
    let mut r = enter(dst, MigState::Resuming)?;
    expect_errno(write(&mut r, &one), libc::EFAULT)?;
    expect_errno(dst.set_migration_state(MigState::Stop), libc::EINVAL)?;
    ensure_eq!(dst.migration_state()?, MigState::Resuming);
    // The bytes counted: 36 more fit, a 37th does not.
    expect_errno(write(&mut r, &[0u8; PORT + 1]), libc::ENOMEM)?;

    // A corrupt magic in a whole stream: EFAULT on the write.
    dst.reset()?;
    let mut r = enter(dst, MigState::Resuming)?;
    let mut bad = stream.clone();
    if let Some(b) = bad.get_mut(0) {
        *b ^= 0xff;
    }
    expect_errno(write(&mut r, &bad), libc::EFAULT)?;
    ensure_eq!(dst.migration_state()?, MigState::Resuming);
    baseline(src)?;
    baseline(dst)
}

/// Stale fds (`mtty_disable_files()`): a reset, PRE_COPY -> RUNNING, STOP_COPY -> STOP and a
/// successful RESUMING -> STOP leave the old fds answering ENODEV; PRECOPY_INFO checks the
/// state first (EINVAL in RUNNING), then staleness (ENODEV once a new PRE_COPY fd exists). A
/// saving fd is read-only and a resuming fd write-only and without ioctls. Reset (without the
/// RESET flag) leaves the UART as it was.
pub fn stale_fds_answer_enodev(s: &Subject) -> Outcome {
    let d = s.device.as_ref();
    baseline(d)?;
    let enodev = |r: std::io::Result<usize>| {
        expect_errno(r.map_err(crate::Error::MigrationData), libc::ENODEV)
    };
    let mut buf = [0u8; 64];
    put(d, 0, SCR, 0x77)?;
    let mut f = enter(d, MigState::PreCopy)?;
    expect_errno(
        f.write(&[0]).map_err(crate::Error::MigrationData),
        libc::EBADF,
    )?;
    d.reset()?;
    ensure_eq!(d.migration_state()?, MigState::Running);
    ensure_eq!(get(d, 0, SCR)?, 0x77, "reset keeps the UART");
    enodev(f.read(&mut buf))?;
    expect_errno(f.precopy_info(), libc::EINVAL)?;
    let mut g = enter(d, MigState::PreCopy)?;
    expect_errno(f.precopy_info(), libc::ENODEV)?;
    ensure_eq!(g.precopy_info()?.initial_bytes, HEADER as u64);
    d.set_migration_state(MigState::Running)?;
    enodev(g.read(&mut buf))?;

    // Closing the pre-copy fd does not end the device's file (it holds its own reference):
    // PRE_COPY -> STOP_COPY still appends to it and hands out nothing.
    let h = d.set_migration_state(MigState::PreCopy)?;
    ensure!(h.is_some(), "no pre-copy fd");
    drop(h);
    ensure!(
        d.set_migration_state(MigState::StopCopy)?.is_none(),
        "no new fd for a closed pre-copy fd"
    );
    d.reset()?;

    d.set_migration_state(MigState::Stop)?;
    let mut c = enter(d, MigState::StopCopy)?;
    d.set_migration_state(MigState::Stop)?;
    enodev(c.read(&mut buf))?;

    let stream = whole_stream(d)?;
    let mut r = enter(d, MigState::Resuming)?;
    expect_errno(
        r.read(&mut buf).map_err(crate::Error::MigrationData),
        libc::EBADF,
    )?;
    expect_errno(r.precopy_info(), libc::ENOTTY)?;
    r.write_all(&stream)?;
    d.set_migration_state(MigState::Stop)?;
    enodev(r.write(&stream[..8]))?;
    baseline(d)
}
