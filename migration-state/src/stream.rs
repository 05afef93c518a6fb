// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The migration stream a VMM sends from the source host to the destination for its
//! passed-through devices: every device's pre-copy and stop-copy data (the bytes its VFIO
//! migration data fd gave) and its VMM-side state ([`DeviceState`]), framed, versioned and
//! checksummed, over any [`Write`] and [`Read`] (a socket or a pipe).
//!
//! Layout (little endian):
//!
//! ```text
//! header: magic "VFIOMIGS" | version u16 | device count u16 | count x DeviceIdentity (16 B)
//!         | CRC32 of the header so far (u32)
//! frame:  kind u8 | device u16 | length u32 | CRC32 of kind, device, length and payload (u32)
//!         | payload
//! ```
//!
//! Frames of one device come in the order pre-copy data (any number), stop-copy data (any
//! number), device state (once); an `End` frame closes the stream after every device's state.
//! The reader checks everything before it is used: an unknown or newer version, an identity
//! that is not the destination's device, a frame whose checksum fails, a frame out of order, a
//! frame longer than the reader's limit and a stream that ends early are each a typed error,
//! and the reader allocates no more than the bytes it has read.

use std::io::{self, Read, Write};

use crate::codec::Crc32;
use crate::device_state::DeviceState;
use crate::error::{Error, Result};

/// The stream's magic.
pub const STREAM_MAGIC: [u8; 8] = *b"VFIOMIGS";
/// The stream version this crate writes and the newest it reads.
pub const STREAM_VERSION: u16 = 1;
/// The default largest frame payload a reader accepts (device data is sent in chunks).
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// What a stream says a device is; the destination checks it against the device it restores
/// into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    /// The VMM's id of the device.
    pub id: u32,
    /// PCI vendor ID.
    pub vendor: u16,
    /// PCI device ID.
    pub device: u16,
    /// PCI subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// PCI subsystem ID.
    pub subsystem: u16,
    /// The device's migration feature flags (`VFIO_MIGRATION_*`).
    pub migration_flags: u32,
}

impl DeviceIdentity {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        for v in [
            self.vendor,
            self.device,
            self.subsystem_vendor,
            self.subsystem,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.migration_flags.to_le_bytes());
    }

    fn decode(b: &[u8; 16]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        DeviceIdentity {
            id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            vendor: u16_at(4),
            device: u16_at(6),
            subsystem_vendor: u16_at(8),
            subsystem: u16_at(10),
            migration_flags: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
        }
    }
}

/// One frame of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Pre-copy data of device `device` (an index into the header's identities).
    Precopy {
        /// Device index.
        device: u16,
        /// The bytes the device's data fd gave in PRE_COPY.
        data: Vec<u8>,
    },
    /// Stop-copy data of device `device`.
    StopCopy {
        /// Device index.
        device: u16,
        /// The bytes the device's data fd gave in STOP_COPY.
        data: Vec<u8>,
    },
    /// The VMM-side state of device `device` (its last frame).
    State {
        /// Device index.
        device: u16,
        /// The decoded state.
        state: Box<DeviceState>,
    },
    /// Every device's state has been sent.
    End,
}

const KIND_PRECOPY: u8 = 1;
const KIND_STOP_COPY: u8 = 2;
const KIND_STATE: u8 = 3;
const KIND_END: u8 = 4;

/// Where a device is in its frame sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Precopy,
    StopCopy,
    Done,
}

/// Move device `device` to phase `to` (pre-copy, stop-copy, state: never back, state once).
fn advance(phases: &mut [Phase], device: u16, to: Phase) -> Result<()> {
    let phase = phases
        .get_mut(usize::from(device))
        .ok_or(Error::StreamUnknownDevice { device })?;
    if *phase > to || *phase == Phase::Done {
        return Err(Error::StreamOrder { device });
    }
    *phase = to;
    Ok(())
}

fn frame_crc(kind: u8, device: u16, payload: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(&[kind]);
    c.update(&device.to_le_bytes());
    c.update(&(payload.len() as u32).to_le_bytes());
    c.update(payload);
    c.finish()
}

fn io_err(e: io::Error) -> Error {
    Error::StreamIo(e)
}

/// Writes a migration stream.
#[derive(Debug)]
pub struct StreamWriter<W: Write> {
    out: W,
    phases: Vec<Phase>,
    bytes: u64,
}

impl<W: Write> StreamWriter<W> {
    /// Start a stream for `devices` (their order is their index in frames).
    pub fn new(mut out: W, devices: &[DeviceIdentity]) -> Result<Self> {
        let count = u16::try_from(devices.len()).map_err(|_| Error::StreamTooManyDevices)?;
        let mut header = Vec::with_capacity(12 + 16 * devices.len() + 4);
        header.extend_from_slice(&STREAM_MAGIC);
        header.extend_from_slice(&STREAM_VERSION.to_le_bytes());
        header.extend_from_slice(&count.to_le_bytes());
        for d in devices {
            d.encode(&mut header);
        }
        let mut c = Crc32::new();
        c.update(&header);
        header.extend_from_slice(&c.finish().to_le_bytes());
        out.write_all(&header).map_err(io_err)?;
        Ok(StreamWriter {
            out,
            phases: vec![Phase::Precopy; devices.len()],
            bytes: header.len() as u64,
        })
    }

    fn frame(&mut self, kind: u8, device: u16, payload: &[u8]) -> Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| Error::StreamFrameTooLarge {
            length: u64::try_from(payload.len()).unwrap_or(u64::MAX),
            max: u32::MAX,
        })?;
        let mut head = [0u8; 11];
        head[0] = kind;
        head[1..3].copy_from_slice(&device.to_le_bytes());
        head[3..7].copy_from_slice(&len.to_le_bytes());
        head[7..11].copy_from_slice(&frame_crc(kind, device, payload).to_le_bytes());
        self.out.write_all(&head).map_err(io_err)?;
        self.out.write_all(payload).map_err(io_err)?;
        self.bytes += 11 + u64::from(len);
        Ok(())
    }

    fn advance(&mut self, device: u16, to: Phase) -> Result<()> {
        advance(&mut self.phases, device, to)
    }

    /// Pre-copy data of device `device`.
    pub fn precopy(&mut self, device: u16, data: &[u8]) -> Result<()> {
        self.advance(device, Phase::Precopy)?;
        self.frame(KIND_PRECOPY, device, data)
    }

    /// Stop-copy data of device `device` (after its pre-copy data).
    pub fn stop_copy(&mut self, device: u16, data: &[u8]) -> Result<()> {
        self.advance(device, Phase::StopCopy)?;
        self.frame(KIND_STOP_COPY, device, data)
    }

    /// The VMM-side state of device `device`: its last frame.
    pub fn device_state(&mut self, device: u16, state: &DeviceState) -> Result<()> {
        self.advance(device, Phase::Done)?;
        let bytes = state.encode()?;
        self.frame(KIND_STATE, device, &bytes)
    }

    /// Close the stream (every device's state must have been written) and return the writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some(device) = self.phases.iter().position(|p| *p != Phase::Done) {
            return Err(Error::StreamOrder {
                device: u16::try_from(device).unwrap_or(u16::MAX),
            });
        }
        self.frame(KIND_END, 0, &[])?;
        self.out.flush().map_err(io_err)?;
        Ok(self.out)
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }
}

/// Reads a migration stream. See the module docs for what it refuses.
#[derive(Debug)]
pub struct StreamReader<R: Read> {
    input: R,
    devices: Vec<DeviceIdentity>,
    phases: Vec<Phase>,
    max_frame: u32,
    frames: u64,
    ended: bool,
}

/// Read exactly `buf.len()` bytes; an early end is [`Error::StreamTruncated`].
fn read_exact<R: Read>(input: &mut R, buf: &mut [u8], what: &'static str) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match input.read(rest) {
            Ok(0) => return Err(Error::StreamTruncated { what }),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(())
}

/// Read `len` bytes, growing the buffer only as bytes arrive.
fn read_payload<R: Read>(input: &mut R, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    while out.len() < len {
        let want = (len - out.len()).min(chunk.len());
        let Some(buf) = chunk.get_mut(..want) else {
            break;
        };
        read_exact(input, buf, "frame payload")?;
        out.extend_from_slice(buf);
    }
    Ok(out)
}

impl<R: Read> StreamReader<R> {
    /// Read the header and check it names exactly `expected` (the destination's devices, in
    /// order).
    pub fn new(input: R, expected: &[DeviceIdentity]) -> Result<Self> {
        Self::with_max_frame(input, expected, DEFAULT_MAX_FRAME)
    }

    /// [`StreamReader::new`] refusing frames longer than `max_frame` bytes.
    pub fn with_max_frame(
        mut input: R,
        expected: &[DeviceIdentity],
        max_frame: u32,
    ) -> Result<Self> {
        let mut fixed = [0u8; 12];
        read_exact(&mut input, &mut fixed, "stream header")?;
        if fixed[..8] != STREAM_MAGIC {
            return Err(Error::StreamMagic);
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version == 0 || version > STREAM_VERSION {
            return Err(Error::StreamVersion {
                found: version,
                supported: STREAM_VERSION,
            });
        }
        let count = u16::from_le_bytes([fixed[10], fixed[11]]);
        if usize::from(count) != expected.len() {
            return Err(Error::StreamDeviceCount {
                found: count,
                expected: u16::try_from(expected.len()).unwrap_or(u16::MAX),
            });
        }
        let mut crc = Crc32::new();
        crc.update(&fixed);
        let mut devices = Vec::with_capacity(expected.len());
        for _ in 0..count {
            let mut raw = [0u8; 16];
            read_exact(&mut input, &mut raw, "device identity")?;
            crc.update(&raw);
            devices.push(DeviceIdentity::decode(&raw));
        }
        let mut stored = [0u8; 4];
        read_exact(&mut input, &mut stored, "header checksum")?;
        if u32::from_le_bytes(stored) != crc.finish() {
            return Err(Error::StreamCorrupt { frame: None });
        }
        for (index, (found, want)) in devices.iter().zip(expected).enumerate() {
            if found != want {
                return Err(Error::StreamWrongDevice {
                    index: u16::try_from(index).unwrap_or(u16::MAX),
                    expected: Box::new(*want),
                    found: Box::new(*found),
                });
            }
        }
        Ok(StreamReader {
            input,
            phases: vec![Phase::Precopy; devices.len()],
            devices,
            max_frame,
            frames: 0,
            ended: false,
        })
    }

    /// The devices the stream carries.
    pub fn devices(&self) -> &[DeviceIdentity] {
        &self.devices
    }

    /// The next frame; [`Frame::End`] once, then `None`.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.ended {
            return Ok(None);
        }
        let index = self.frames;
        let mut head = [0u8; 11];
        read_exact(&mut self.input, &mut head, "frame header")?;
        let kind = head[0];
        let device = u16::from_le_bytes([head[1], head[2]]);
        let len = u32::from_le_bytes([head[3], head[4], head[5], head[6]]);
        let crc = u32::from_le_bytes([head[7], head[8], head[9], head[10]]);
        if len > self.max_frame {
            return Err(Error::StreamFrameTooLarge {
                length: u64::from(len),
                max: self.max_frame,
            });
        }
        let payload = read_payload(&mut self.input, len as usize)?;
        if frame_crc(kind, device, &payload) != crc {
            return Err(Error::StreamCorrupt { frame: Some(index) });
        }
        self.frames += 1;
        let to = match kind {
            KIND_PRECOPY => Phase::Precopy,
            KIND_STOP_COPY => Phase::StopCopy,
            KIND_STATE => Phase::Done,
            KIND_END => {
                if let Some(d) = self.phases.iter().position(|p| *p != Phase::Done) {
                    return Err(Error::StreamOrder {
                        device: u16::try_from(d).unwrap_or(u16::MAX),
                    });
                }
                self.ended = true;
                return Ok(Some(Frame::End));
            }
            other => return Err(Error::StreamFrameKind { kind: other }),
        };
        advance(&mut self.phases, device, to)?;
        Ok(Some(match to {
            Phase::Precopy => Frame::Precopy {
                device,
                data: payload,
            },
            Phase::StopCopy => Frame::StopCopy {
                device,
                data: payload,
            },
            Phase::Done => Frame::State {
                device,
                state: Box::new(DeviceState::decode(&payload)?),
            },
        }))
    }
}

/// Recomputes the header checksum and the checksum of every whole frame of `bytes` in place
/// (a truncated last frame is left as it is). For fuzzing and tests: a mutated stream then
/// reaches the checks behind the checksums (frame order, lengths, the device states'
/// decoding) instead of stopping at the first checksum.
pub fn reseal(bytes: &mut [u8]) {
    let Some(count) = bytes
        .get(10..12)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
    else {
        return;
    };
    let crc_at = 12 + 16 * count;
    let Some(header) = bytes.get(..crc_at) else {
        return;
    };
    let mut c = Crc32::new();
    c.update(header);
    let crc = c.finish().to_le_bytes();
    let Some(slot) = bytes.get_mut(crc_at..crc_at + 4) else {
        return;
    };
    slot.copy_from_slice(&crc);
    let mut at = crc_at + 4;
    while let Some(head) = bytes.get(at..at + 7) {
        let (kind, device) = (head[0], u16::from_le_bytes([head[1], head[2]]));
        let len = u32::from_le_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let start = at + 11;
        let Some(end) = start.checked_add(len) else {
            return;
        };
        let Some(payload) = bytes.get(start..end) else {
            return;
        };
        let crc = frame_crc(kind, device, payload).to_le_bytes();
        if let Some(slot) = bytes.get_mut(at + 7..at + 11) {
            slot.copy_from_slice(&crc);
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(id: u32) -> DeviceIdentity {
        DeviceIdentity {
            id,
            vendor: 0x4348,
            device: 0x3253,
            subsystem_vendor: 0,
            subsystem: 0,
            migration_flags: 7,
        }
    }

    fn stream(devices: &[DeviceIdentity]) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new(), devices).unwrap();
        for (i, _) in devices.iter().enumerate() {
            let i = i as u16;
            w.precopy(i, &[1, 2, 3]).unwrap();
            w.precopy(i, &[4]).unwrap();
            w.stop_copy(i, &[5; 96]).unwrap();
            w.device_state(i, &DeviceState::default()).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn a_stream_round_trips_frame_by_frame() {
        let devices = [ident(1), ident(2)];
        let bytes = stream(&devices);
        let mut r = StreamReader::new(&bytes[..], &devices).unwrap();
        let mut frames = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            frames.push(f);
        }
        assert_eq!(frames.len(), 9);
        assert_eq!(
            frames[0],
            Frame::Precopy {
                device: 0,
                data: vec![1, 2, 3]
            }
        );
        assert_eq!(
            frames[6],
            Frame::StopCopy {
                device: 1,
                data: vec![5; 96]
            }
        );
        assert_eq!(frames[8], Frame::End);
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let devices = [ident(1)];
        let bytes = stream(&devices);
        for cut in 0..bytes.len() {
            let mut r = match StreamReader::new(&bytes[..cut], &devices) {
                Ok(r) => r,
                Err(e) => {
                    assert!(matches!(e, Error::StreamTruncated { .. }), "{cut}: {e:?}");
                    continue;
                }
            };
            let err = loop {
                match r.next_frame() {
                    Ok(Some(Frame::End)) => panic!("{cut}: a cut stream ended"),
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("{cut}"),
                    Err(e) => break e,
                }
            };
            assert!(
                matches!(err, Error::StreamTruncated { .. }),
                "{cut}: {err:?}"
            );
        }
    }

    #[test]
    fn wrong_device_version_skew_and_corruption_are_refused_by_name() {
        let devices = [ident(1)];
        let bytes = stream(&devices);
        let err = StreamReader::new(&bytes[..], &[ident(9)]).unwrap_err();
        assert!(
            matches!(err, Error::StreamWrongDevice { index: 0, .. }),
            "{err:?}"
        );
        let err = StreamReader::new(&bytes[..], &[ident(1), ident(2)]).unwrap_err();
        assert!(matches!(
            err,
            Error::StreamDeviceCount {
                found: 1,
                expected: 2
            }
        ));
        let mut newer = bytes.clone();
        newer[8] = 2;
        let err = StreamReader::new(&newer[..], &devices).unwrap_err();
        assert!(
            matches!(
                err,
                Error::StreamVersion {
                    found: 2,
                    supported: 1
                }
            ),
            "{err:?}"
        );
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            StreamReader::new(&bad[..], &devices),
            Err(Error::StreamMagic)
        ));
        // A flipped byte in the first frame's payload.
        let mut flipped = bytes.clone();
        let first_payload = 12 + 16 + 4 + 11;
        flipped[first_payload] ^= 1;
        let mut r = StreamReader::new(&flipped[..], &devices).unwrap();
        assert!(matches!(
            r.next_frame(),
            Err(Error::StreamCorrupt { frame: Some(0) })
        ));
        // A frame that announces more than the reader allows.
        let mut r = StreamReader::with_max_frame(&bytes[..], &devices, 2).unwrap();
        assert!(matches!(
            r.next_frame(),
            Err(Error::StreamFrameTooLarge { length: 3, max: 2 })
        ));
    }

    #[test]
    fn reseal_makes_a_changed_stream_pass_its_checksums() {
        let devices = [ident(1)];
        let bytes = stream(&devices);
        let mut changed = bytes.clone();
        // A changed byte in the first pre-copy frame's payload.
        changed[12 + 16 + 4 + 11] = 9;
        reseal(&mut changed);
        let mut r = StreamReader::new(&changed[..], &devices).unwrap();
        assert_eq!(
            r.next_frame().unwrap(),
            Some(Frame::Precopy {
                device: 0,
                data: vec![9, 2, 3]
            })
        );
        let mut again = changed.clone();
        reseal(&mut again);
        assert_eq!(again, changed, "resealing a sealed stream changes nothing");
        let mut resealed = bytes.clone();
        reseal(&mut resealed);
        assert_eq!(resealed, bytes);
        // Cut anywhere, it never panics and leaves the partial frame alone.
        for cut in 0..bytes.len() {
            let mut part = bytes[..cut].to_vec();
            reseal(&mut part);
            assert_eq!(part, bytes[..cut]);
        }
    }

    #[test]
    fn frames_out_of_order_are_refused_on_both_ends() {
        let devices = [ident(1)];
        let mut w = StreamWriter::new(Vec::new(), &devices).unwrap();
        w.stop_copy(0, &[1]).unwrap();
        assert!(matches!(
            w.precopy(0, &[1]),
            Err(Error::StreamOrder { device: 0 })
        ));
        assert!(matches!(
            w.precopy(3, &[1]),
            Err(Error::StreamUnknownDevice { device: 3 })
        ));
        let w = StreamWriter::new(Vec::new(), &devices).unwrap();
        assert!(matches!(w.finish(), Err(Error::StreamOrder { device: 0 })));
        // A hand-made stream whose End comes before the state.
        let mut w = StreamWriter::new(Vec::new(), &devices).unwrap();
        w.frame(KIND_END, 0, &[]).unwrap();
        let bytes = w.out;
        let mut r = StreamReader::new(&bytes[..], &devices).unwrap();
        assert!(matches!(
            r.next_frame(),
            Err(Error::StreamOrder { device: 0 })
        ));
    }
}
