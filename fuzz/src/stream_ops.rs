// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `stream_reader`: a live-migration stream from untrusted bytes, read by
//! `migration-state`'s `StreamReader` and by `vmm-glue`'s destination (`Incoming`) into
//! simulated mtty devices.
//!
//! Input: one mode byte, then the stream. Mode bit 0 recomputes the stream's checksums before
//! reading (`stream::reseal`, so mutations reach the frame and state checks behind them);
//! bit 1 gives the destination two devices instead of one.
//!
//! Checks: nothing panics; the reader returns frames in the order the format allows and at
//! most one end frame; a stream it reads to its end, written again frame by frame with
//! `StreamWriter`, reads back to the same frames; the destination either resumes (every
//! device in RUNNING) or fails with `MigrationFailed`, every device back in RUNNING, the
//! rollback naming each device once, and a device it calls untouched never asked for an arc.

use std::path::Path;
use std::sync::Arc;

use bar_mmap::{HostResourceSpace, PageSize};
use irq_routing::{MemoryBackend, Router};
use migration_state::stream::reseal;
use migration_state::{DeviceIdentity, Frame, State, StreamReader, StreamWriter};
use vfio_core::sim::SimDevice;
use vmm_glue::{
    DeviceOptions, Error, Incoming, MigrationOptions, Outgoing, PassthroughDevice, Strategy,
    VmResources,
};

/// The largest frame the reader accepts here (small, so oversized frames are reachable).
const MAX_FRAME: u32 = 4096;

struct Vm {
    res: VmResources,
}

fn vm() -> Option<Vm> {
    let router = Arc::new(Router::new(MemoryBackend::new()).ok()?);
    let host = HostResourceSpace::new(0xe000_0000, 0x1000_0000)
        .ok()?
        .into_shared();
    Some(Vm {
        res: VmResources::new(router, host, PageSize::SIZE_4K),
    })
}

/// `n` simulated two-port mttys with ids 1.., as the destination's devices.
fn mttys(vm: &Vm, n: u32) -> Option<Vec<(Arc<SimDevice>, PassthroughDevice)>> {
    (1..=n)
        .map(|id| {
            let sim = Arc::new(SimDevice::mtty(2).ok()?);
            let opts = DeviceOptions {
                id,
                ..DeviceOptions::default()
            };
            let dev = PassthroughDevice::new_migratable(sim.clone(), &vm.res, opts).ok()?;
            Some((sim, dev))
        })
        .collect()
}

/// Reads every frame; on a clean end, checks the re-written stream reads back the same.
fn check_reader(bytes: &[u8], identities: &[DeviceIdentity]) {
    let Ok(mut reader) = StreamReader::with_max_frame(bytes, identities, MAX_FRAME) else {
        return;
    };
    let mut frames = Vec::new();
    loop {
        match reader.next_frame() {
            Ok(Some(Frame::End)) => break,
            Ok(Some(f)) => frames.push(f),
            Ok(None) => panic!("no end frame before None"),
            Err(_) => return,
        }
    }
    assert_eq!(reader.next_frame().ok(), Some(None), "a second end frame");
    let Ok(mut w) = StreamWriter::new(Vec::new(), identities) else {
        panic!("the identities that were read cannot be written");
    };
    for f in &frames {
        let written = match f {
            Frame::Precopy { device, data } => w.precopy(*device, data),
            Frame::StopCopy { device, data } => w.stop_copy(*device, data),
            Frame::State { device, state } => w.device_state(*device, state),
            Frame::End => unreachable!("the end frame was not kept"),
        };
        assert!(
            written.is_ok(),
            "the writer refuses a frame the reader took: {f:?}"
        );
    }
    let again = w.finish().unwrap_or_else(|e| panic!("finish: {e:?}"));
    let mut r = StreamReader::with_max_frame(&again[..], identities, MAX_FRAME)
        .unwrap_or_else(|e| panic!("re-read header: {e:?}"));
    for f in &frames {
        let back = r.next_frame().unwrap_or_else(|e| panic!("re-read: {e:?}"));
        assert_eq!(back.as_ref(), Some(f), "round trip");
    }
    assert_eq!(r.next_frame().ok(), Some(Some(Frame::End)));
}

/// Runs one input. Panics on a violated property.
pub fn run(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let mut bytes = stream.to_vec();
    if mode & 1 != 0 {
        reseal(&mut bytes);
    }
    let Some(vm) = vm() else {
        return;
    };
    let Some(mut devices) = mttys(&vm, if mode & 2 != 0 { 2 } else { 1 }) else {
        return;
    };
    let identities: Vec<DeviceIdentity> = devices
        .iter()
        .filter_map(|(_, d)| d.migration_identity().ok())
        .collect();
    assert_eq!(identities.len(), devices.len());
    check_reader(&bytes, &identities);

    let opts = MigrationOptions {
        max_frame: MAX_FRAME,
        ..MigrationOptions::default()
    };
    let result = {
        let refs: Vec<&PassthroughDevice> = devices.iter().map(|(_, d)| d).collect();
        Incoming::start(&bytes[..], &refs, opts).and_then(Incoming::receive)
    };
    let result = result.and_then(|received| {
        let mut muts: Vec<&mut PassthroughDevice> = devices.iter_mut().map(|(_, d)| d).collect();
        received.resume(&mut muts, Strategy::VmWide)
    });
    match result {
        Ok(_) => {}
        Err(Error::MigrationFailed { rollback, .. }) => {
            let mut named: Vec<u32> = rollback
                .reset
                .iter()
                .chain(&rollback.untouched)
                .chain(&rollback.resumed)
                .copied()
                .collect();
            named.sort_unstable();
            let ids: Vec<u32> = (1..=devices.len() as u32).collect();
            assert_eq!(named, ids, "every device accounted once: {rollback:?}");
            assert!(rollback.failed.is_empty(), "a simulated reset failed");
            for (sim, d) in &devices {
                if rollback.untouched.contains(&d.id()) {
                    assert!(sim.migration_arcs().is_empty(), "an untouched device moved");
                }
            }
        }
        Err(e) => panic!("not a rolled-back failure: {e:?}"),
    }
    for (_, d) in &devices {
        assert_eq!(
            d.device_migration_state().ok(),
            Some(Some(State::Running)),
            "device {} not running",
            d.id()
        );
    }
}

/// Good streams from a simulated source of `n` mttys, with their UART scratch registers set.
fn source_stream(n: u32) -> Option<Vec<u8>> {
    let vm = vm()?;
    let devices = mttys(&vm, n)?;
    for (i, (sim, _)) in devices.iter().enumerate() {
        vfio_core::VfioDevice::region_write(&**sim, 0, 7, &[0x50 + i as u8]).ok()?;
    }
    let refs: Vec<&PassthroughDevice> = devices.iter().map(|(_, d)| d).collect();
    let mut out = Outgoing::start(Vec::new(), &refs, None, MigrationOptions::default()).ok()?;
    out.precopy_round(&mut []).ok()?;
    Some(out.switchover(&refs, &mut []).ok()?.writer)
}

/// The seed inputs: whole streams for one and two devices, each as-is and resealed, and a
/// few cut short.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (n, mode) in [(1u32, 0u8), (2, 2)] {
        let Some(stream) = source_stream(n) else {
            continue;
        };
        for (name, m) in [("whole", mode), ("whole-resealed", mode | 1)] {
            let mut bytes = vec![m];
            bytes.extend_from_slice(&stream);
            out.push((format!("{n}dev-{name}"), bytes));
        }
        for cut in [20usize, 60, 150] {
            let mut bytes = vec![mode];
            bytes.extend_from_slice(stream.get(..cut).unwrap_or(&stream));
            out.push((format!("{n}dev-cut{cut}"), bytes));
        }
    }
    out
}

/// Writes [`seeds`] into `dir/stream_reader/` as `seed-NAME`; returns how many.
pub fn write_seeds(dir: &Path) -> Result<usize, String> {
    let d = dir.join("stream_reader");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let seeds = seeds();
    for (name, bytes) in &seeds {
        let p = d.join(format!("seed-{name}"));
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(seeds.len())
}
