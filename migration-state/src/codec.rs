// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Little-endian primitives for the device-state format: a CRC32, a growable writer and a
//! bounds-checked reader that never panics and never allocates more than its input holds.

use crate::{Error, Result};

/// The reflected IEEE 802.3 polynomial (as used by zlib, PNG and Ethernet).
const CRC32_POLY: u32 = 0xEDB8_8320;

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ CRC32_POLY
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32_TABLE: [u32; 256] = crc32_table();

/// An incremental CRC32 (IEEE), which detects every single-bit error and every burst of up to
/// 32 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crc32(u32);

impl Crc32 {
    pub(crate) fn new() -> Self {
        Self(!0)
    }
    pub(crate) fn update(&mut self, data: &[u8]) {
        for &b in data {
            // The index is masked to 0..=255, so `get` always succeeds.
            let idx = ((self.0 ^ u32::from(b)) & 0xff) as usize;
            self.0 = (self.0 >> 8) ^ CRC32_TABLE.get(idx).copied().unwrap_or(0);
        }
    }
    pub(crate) fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC32 (IEEE) of `data`.
#[cfg(test)]
fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

/// Appends little-endian fields to a byte vector.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self::default()
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A u32 length prefix followed by the bytes.
    pub(crate) fn blob(&mut self, field: &'static str, v: &[u8]) -> Result<()> {
        self.u32(len_u32(field, v.len())?);
        self.bytes(v);
        Ok(())
    }
    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

/// `len` as a u32 length field, or [`Error::TooLarge`].
pub(crate) fn len_u32(field: &'static str, len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::TooLarge { field, len })
}

/// Reads little-endian fields from a slice, with every read bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data` in the whole stream, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8], base: usize) -> Self {
        Self { data, pos: 0, base }
    }

    /// Offset of the next byte in the whole stream.
    pub(crate) fn position(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes, borrowed.
    pub(crate) fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.data.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Error::Truncated {
                field,
                offset: self.base.saturating_add(self.pos),
                needed: n,
                available: self.remaining(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(field, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(Error::InvalidField {
                field,
                value: u64::from(v),
            }),
        }
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    /// A u32 length prefix and that many bytes. The length is checked against the input before
    /// anything is allocated.
    pub(crate) fn blob(&mut self, field: &'static str) -> Result<Vec<u8>> {
        let len = self.u32(field)? as usize;
        Ok(self.take(field, len)?.to_vec())
    }
    /// Checks that `count` items of at least `min_item_len` bytes each can still be read, so a
    /// count field can size an allocation.
    pub(crate) fn check_count(
        &self,
        field: &'static str,
        count: usize,
        min_item_len: usize,
    ) -> Result<()> {
        let needed = count.saturating_mul(min_item_len);
        if needed > self.remaining() {
            return Err(Error::Truncated {
                field,
                offset: self.base.saturating_add(self.pos),
                needed,
                available: self.remaining(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let mut split = Crc32::new();
        split.update(b"1234");
        split.update(b"56789");
        assert_eq!(split.finish(), 0xCBF4_3926);
    }

    #[test]
    fn reader_refuses_huge_lengths_without_allocating() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        w.bytes(&[1, 2, 3]);
        let buf = w.into_inner();
        let mut r = Reader::new(&buf, 0);
        match r.blob("blob") {
            Err(Error::Truncated {
                needed, available, ..
            }) => {
                assert_eq!(needed, u32::MAX as usize);
                assert_eq!(available, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn reader_round_trips_fields() {
        let mut w = Writer::new();
        w.u8(7);
        w.bool(true);
        w.u16(0xBEEF);
        w.u32(0xDEAD_BEEF);
        w.u64(0x0123_4567_89AB_CDEF);
        w.blob("b", &[9, 8]).unwrap();
        let buf = w.into_inner();
        assert_eq!(buf.len(), 1 + 1 + 2 + 4 + 8 + 4 + 2);
        let mut r = Reader::new(&buf, 0);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert!(r.bool("a").unwrap());
        assert_eq!(r.u16("a").unwrap(), 0xBEEF);
        assert_eq!(r.u32("a").unwrap(), 0xDEAD_BEEF);
        assert_eq!(r.u64("a").unwrap(), 0x0123_4567_89AB_CDEF);
        assert_eq!(r.blob("a").unwrap(), vec![9, 8]);
        assert_eq!(r.remaining(), 0);
        assert!(r.u8("a").is_err());
    }
}
