// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reading and writing the hex dump text of `lspci -x` / `-xxx` / `-xxxx`.
//!
//! The format: a device line (`BB:DD.F description`), then rows `OO: xx xx ... xx` of up to 16
//! bytes, OO being the row's offset in hex (a multiple of 16), and a blank line between
//! devices. `lspci -F FILE` reads the same format back. A dump whose rows stop below 0x100 (for
//! example the 64 bytes of `lspci -x`) gives a 256-byte space with the missing bytes zero; a
//! row at or above 0x100 makes it a 4 KiB space.
//!
//! [`parse_dump`] takes untrusted text: any input gets either entries or a typed
//! [`Error::Dump`] with its line number, never a panic.

use crate::regs::{CONVENTIONAL_SIZE, EXTENDED_SIZE};
use crate::{ConfigSpace, Error, Result};

/// One device of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpEntry {
    /// The device line, as written (e.g. `00:03.0 Ethernet controller: ...`).
    pub header: String,
    /// Its configuration space: the dumped bytes as physical bytes, default masks (see
    /// [`ConfigSpace::from_bytes`]).
    pub space: ConfigSpace,
}

struct Pending {
    header: String,
    header_line: usize,
    bytes: Vec<u8>,
    seen: Vec<bool>,
    end: usize,
}

impl Pending {
    fn finish(self) -> Result<DumpEntry> {
        if self.end == 0 {
            return Err(Error::Dump {
                line: self.header_line,
                reason: "device line without data rows",
            });
        }
        let size = if self.end <= CONVENTIONAL_SIZE {
            CONVENTIONAL_SIZE
        } else {
            EXTENDED_SIZE
        };
        let bytes = self.bytes.get(..size).unwrap_or(&self.bytes);
        Ok(DumpEntry {
            header: self.header,
            space: ConfigSpace::from_bytes(bytes)?,
        })
    }
}

/// If `line` is a data row, its offset and the rest after the colon.
fn split_row(line: &str) -> Option<(&str, &str)> {
    let (off, rest) = line.split_once(':')?;
    let is_hex = !off.is_empty() && off.len() <= 8 && off.chars().all(|c| c.is_ascii_hexdigit());
    (is_hex && (rest.is_empty() || rest.starts_with([' ', '\t']))).then_some((off, rest))
}

fn parse_row(p: &mut Pending, off: &str, rest: &str, line: usize) -> Result<()> {
    let err = |reason| Error::Dump { line, reason };
    let offset = usize::from_str_radix(off, 16).map_err(|_| err("bad row offset"))?;
    if offset % 16 != 0 {
        return Err(err("row offset is not a multiple of 16"));
    }
    if offset >= EXTENDED_SIZE {
        return Err(err("row offset past 4 KiB"));
    }
    let seen = p
        .seen
        .get_mut(offset / 16)
        .ok_or(err("row offset past 4 KiB"))?;
    if *seen {
        return Err(err("row offset repeated"));
    }
    *seen = true;
    let mut count = 0;
    for token in rest.split_whitespace() {
        if token.len() != 2 {
            return Err(err("a byte is two hex digits"));
        }
        let value = u8::from_str_radix(token, 16).map_err(|_| err("a byte is two hex digits"))?;
        if count >= 16 {
            return Err(err("more than 16 bytes in a row"));
        }
        let slot = p
            .bytes
            .get_mut(offset + count)
            .ok_or(err("row runs past 4 KiB"))?;
        *slot = value;
        count += 1;
    }
    if count == 0 {
        return Err(err("empty row"));
    }
    p.end = p.end.max(offset + count);
    Ok(())
}

/// Parses dump text with any number of devices.
pub fn parse_dump(text: &str) -> Result<Vec<DumpEntry>> {
    let mut out = Vec::new();
    let mut pending: Option<Pending> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim_end();
        if trimmed.trim().is_empty() {
            if let Some(p) = pending.take() {
                out.push(p.finish()?);
            }
            continue;
        }
        if let Some((off, rest)) = split_row(trimmed) {
            let p = pending.as_mut().ok_or(Error::Dump {
                line,
                reason: "data row before a device line",
            })?;
            parse_row(p, off, rest, line)?;
            continue;
        }
        if let Some(p) = pending.take() {
            out.push(p.finish()?);
        }
        pending = Some(Pending {
            header: trimmed.to_string(),
            header_line: line,
            bytes: vec![0; EXTENDED_SIZE],
            seen: vec![false; EXTENDED_SIZE / 16],
            end: 0,
        });
    }
    if let Some(p) = pending.take() {
        out.push(p.finish()?);
    }
    Ok(out)
}

/// Writes one device in the dump format: `header`, then the guest view of `space` (256 or
/// 4096 bytes), 16 bytes a row. No trailing blank line.
pub fn write_device(header: &str, space: &ConfigSpace) -> String {
    let view = space.guest_view();
    let mut s = String::with_capacity(header.len() + 1 + view.len() * 3 + view.len() / 4);
    s.push_str(header);
    s.push('\n');
    for (row, chunk) in view.chunks(16).enumerate() {
        s.push_str(&format!("{:02x}:", row * 16));
        for b in chunk {
            s.push_str(&format!(" {b:02x}"));
        }
        s.push('\n');
    }
    s
}

/// Writes several devices separated by blank lines, as `lspci -xxxx` does.
pub fn write_dump<'a>(devices: impl IntoIterator<Item = (&'a str, &'a ConfigSpace)>) -> String {
    let mut s = String::new();
    for (header, space) in devices {
        s.push_str(&write_device(header, space));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_two_devices() {
        let mut a = ConfigSpace::new_conventional();
        a.set_physical(0, &[0x86, 0x80, 0x34, 0x12]).unwrap();
        let mut b = ConfigSpace::new_extended();
        b.set_physical(0xffc, &[1, 2, 3, 4]).unwrap();
        let text = write_dump([("00:01.0 a", &a), ("00:02.0 b", &b)]);
        let parsed = parse_dump(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].header, "00:01.0 a");
        assert_eq!(parsed[0].space.physical(), a.physical());
        assert_eq!(parsed[1].space.size(), 4096);
        assert_eq!(parsed[1].space.physical(), b.physical());
    }

    #[test]
    fn short_dump_pads_to_256() {
        let text = "00:00.0 x\n00: 86 80\n10: 01\n";
        let d = parse_dump(text).unwrap();
        assert_eq!(d[0].space.size(), 256);
        assert_eq!(d[0].space.vendor_id(), 0x8086);
        assert_eq!(d[0].space.read_u8(0x10).unwrap(), 1);
    }

    #[test]
    fn garbage_is_typed_error() {
        let cases = [
            ("00: 00\n", 1),
            ("dev\n05: 00\n", 2),
            ("dev\n00: 0g\n", 2),
            ("dev\n00: 000\n", 2),
            ("dev\n1000: 00\n", 2),
            ("dev\n00: 00\n00: 00\n", 3),
            ("dev\n00:\n", 2),
            (
                "dev\n00: 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00\n",
                2,
            ),
            ("dev\n\nother\n00: 00\n", 1),
        ];
        for (text, line) in cases {
            match parse_dump(text) {
                Err(Error::Dump { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
