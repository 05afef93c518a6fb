// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The versioned binary format of a [`DeviceState`].
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header   magic "VFIODEVS" (8) | version u16 | section count u16 | total length u32 | crc32 u32
//! table    per section: tag u16 | reserved u16 (zero) | body length u32
//! bodies   the section bodies, in table order
//! ```
//!
//! The CRC32 covers the whole stream with the checksum field taken as zero. Each format version
//! defines the set of sections it carries; every one is required, none may repeat, and a tag
//! the stream's version does not define is refused. A reader accepts every version up to its
//! own and refuses newer ones with [`Error::UnsupportedVersion`].
//!
//! | version | sections |
//! |---|---|
//! | 1 | config, BARs, interrupts, device data |
//! | 2 | version 1 + guest notice |
//!
//! Decoding never panics, and never allocates more than the input's length: every length or
//! count field is checked against the bytes that remain before it sizes anything.

use crate::codec::{len_u32, Crc32, Reader, Writer};
use crate::device_state::{
    BarKind, BarState, ConfigState, DeviceState, InterruptMode, MsiState, MsixEntry, MsixState,
    NoticeState, BAR_COUNT, MAX_MSIX_VECTORS,
};
use crate::{Error, Result};

/// The stream's first eight bytes.
pub const MAGIC: [u8; 8] = *b"VFIODEVS";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
const TABLE_ENTRY_LEN: usize = 8;
const CRC_OFFSET: usize = 16;

/// A version of the device-state format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FormatVersion {
    /// Config, BARs, interrupts and device data.
    V1 = 1,
    /// Adds the guest-notice section.
    V2 = 2,
}

impl FormatVersion {
    /// The version this crate writes by default and the newest it reads.
    pub const CURRENT: FormatVersion = FormatVersion::V2;

    /// The number stored in the header.
    pub const fn number(self) -> u16 {
        self as u16
    }

    fn sections(self) -> &'static [Section] {
        match self {
            FormatVersion::V1 => &[
                Section::Config,
                Section::Bars,
                Section::Interrupts,
                Section::DeviceData,
            ],
            FormatVersion::V2 => &[
                Section::Config,
                Section::Bars,
                Section::Interrupts,
                Section::DeviceData,
                Section::Notice,
            ],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
enum Section {
    Config = 1,
    Bars = 2,
    Interrupts = 3,
    DeviceData = 4,
    Notice = 5,
}

impl Section {
    fn from_tag(tag: u16, version: FormatVersion) -> Result<Self> {
        version
            .sections()
            .iter()
            .copied()
            .find(|s| *s as u16 == tag)
            .ok_or(Error::UnknownSection {
                tag,
                version: version.number(),
            })
    }
}

impl DeviceState {
    /// Serializes in the current format version.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.encode_as(FormatVersion::CURRENT)
    }

    /// Serializes in an older format `version`, for a destination that only reads that
    /// version. Fails with [`Error::NotRepresentable`] if the state uses something the version
    /// cannot carry (a guest notice in version 1).
    pub fn encode_as(&self, version: FormatVersion) -> Result<Vec<u8>> {
        self.validate()?;
        if version < FormatVersion::V2 && self.notice.is_some() {
            return Err(Error::NotRepresentable {
                field: "notice",
                version: version.number(),
            });
        }
        let mut bodies = Vec::new();
        for section in version.sections() {
            let mut w = Writer::new();
            self.encode_section(*section, &mut w)?;
            bodies.push((*section, w.into_inner()));
        }

        let table_len = bodies.len() * TABLE_ENTRY_LEN;
        let total = HEADER_LEN + table_len + bodies.iter().map(|(_, b)| b.len()).sum::<usize>();
        let mut w = Writer::new();
        w.bytes(&MAGIC);
        w.u16(version.number());
        w.u16(bodies.len() as u16);
        w.u32(len_u32("stream", total)?);
        w.u32(0);
        for (section, body) in &bodies {
            w.u16(*section as u16);
            w.u16(0);
            w.u32(len_u32("section", body.len())?);
        }
        for (_, body) in &bodies {
            w.bytes(body);
        }
        let mut out = w.into_inner();
        reseal(&mut out);
        Ok(out)
    }

    fn encode_section(&self, section: Section, w: &mut Writer) -> Result<()> {
        match section {
            Section::Config => {
                let c = &self.config;
                w.u16(c.bytes.len() as u16);
                w.bytes(&c.bytes);
                w.bytes(&c.emulated_mask);
                w.bytes(&c.write_mask);
                w.bytes(&c.write1c_mask);
            }
            Section::Bars => {
                w.u8(self.bars.len() as u8);
                for bar in &self.bars {
                    w.u8(bar.index);
                    w.u8(bar.kind as u8);
                    w.bool(bar.prefetchable);
                    w.u64(bar.address);
                    w.u64(bar.size);
                }
            }
            Section::Interrupts => {
                w.u8(self.interrupt_mode as u8);
                w.bool(self.msi.is_some());
                if let Some(m) = &self.msi {
                    w.bool(m.enabled);
                    w.bool(m.address_64bit);
                    w.bool(m.per_vector_masking);
                    w.u8(m.multiple_message_capable);
                    w.u8(m.multiple_message_enable);
                    w.u64(m.address);
                    w.u16(m.data);
                    w.u32(m.mask_bits);
                    w.u32(m.pending_bits);
                }
                w.bool(self.msix.is_some());
                if let Some(m) = &self.msix {
                    w.bool(m.enabled);
                    w.bool(m.function_mask);
                    w.u16(m.entries.len() as u16);
                    for e in &m.entries {
                        w.u64(e.address);
                        w.u32(e.data);
                        w.bool(e.masked);
                    }
                    for word in &m.pba {
                        w.u64(*word);
                    }
                }
            }
            Section::DeviceData => w.blob("device_data", &self.device_data)?,
            Section::Notice => {
                w.bool(self.notice.is_some());
                if let Some(n) = &self.notice {
                    w.u8(n.capability_offset);
                    w.bool(n.guest_enabled);
                    w.u16(n.vector);
                    w.u32(n.generation);
                }
            }
        }
        Ok(())
    }

    /// Parses a stream of any format version up to [`FormatVersion::CURRENT`].
    ///
    /// Never panics; every malformed input gives a typed error.
    pub fn decode(bytes: &[u8]) -> Result<DeviceState> {
        Self::decode_up_to(bytes, FormatVersion::CURRENT)
    }

    /// Parses a stream as a reader that understands format versions up to `newest` would: a
    /// newer stream is refused with [`Error::UnsupportedVersion`]. Lets a source check that an
    /// older destination will accept what it sends.
    pub fn decode_up_to(bytes: &[u8], newest: FormatVersion) -> Result<DeviceState> {
        let mut r = Reader::new(bytes, 0);
        if r.take("magic", MAGIC.len())? != MAGIC {
            return Err(Error::BadMagic);
        }
        let found = r.u16("version")?;
        let version = match found {
            1 => FormatVersion::V1,
            2 => FormatVersion::V2,
            _ => {
                return Err(Error::UnsupportedVersion {
                    found,
                    supported: newest.number(),
                })
            }
        };
        if version > newest {
            return Err(Error::UnsupportedVersion {
                found,
                supported: newest.number(),
            });
        }
        let count = usize::from(r.u16("section_count")?);
        let total = r.u32("total_length")?;
        if total as usize != bytes.len() {
            return Err(Error::LengthMismatch {
                announced: u64::from(total),
                actual: bytes.len(),
            });
        }
        let expected = r.u32("checksum")?;
        let computed = checksum(bytes);
        if expected != computed {
            return Err(Error::ChecksumMismatch { expected, computed });
        }

        r.check_count("section_table", count, TABLE_ENTRY_LEN)?;
        let mut table = Vec::with_capacity(count);
        for _ in 0..count {
            let tag = r.u16("section_tag")?;
            let reserved = r.u16("section_reserved")?;
            if reserved != 0 {
                return Err(Error::InvalidField {
                    field: "section_reserved",
                    value: u64::from(reserved),
                });
            }
            let len = r.u32("section_length")? as usize;
            let section = Section::from_tag(tag, version)?;
            if table.iter().any(|(s, _)| *s == section) {
                return Err(Error::DuplicateSection(tag));
            }
            table.push((section, len));
        }
        for required in version.sections() {
            if !table.iter().any(|(s, _)| s == required) {
                return Err(Error::MissingSection(*required as u16));
            }
        }

        let mut state = DeviceState::default();
        for (section, len) in table {
            let offset = r.position();
            let body = r.take("section_body", len)?;
            let mut sr = Reader::new(body, offset);
            state.decode_section(section, &mut sr)?;
            if sr.remaining() != 0 {
                return Err(Error::TrailingBytes {
                    tag: section as u16,
                    extra: sr.remaining(),
                });
            }
        }
        if r.remaining() != 0 {
            return Err(Error::LengthMismatch {
                announced: u64::from(total),
                actual: bytes.len() - r.remaining(),
            });
        }
        state.validate()?;
        Ok(state)
    }

    /// Replaces `self` with the state decoded from `bytes`, only if decoding succeeds; on
    /// error `self` is untouched.
    pub fn load_from(&mut self, bytes: &[u8]) -> Result<()> {
        *self = Self::decode(bytes)?;
        Ok(())
    }

    fn decode_section(&mut self, section: Section, r: &mut Reader<'_>) -> Result<()> {
        match section {
            Section::Config => {
                let len = usize::from(r.u16("config.size")?);
                if len != crate::device_state::CONFIG_SPACE_SIZE
                    && len != crate::device_state::EXTENDED_CONFIG_SPACE_SIZE
                {
                    return Err(Error::InvalidField {
                        field: "config.size",
                        value: len as u64,
                    });
                }
                self.config = ConfigState {
                    bytes: r.take("config.bytes", len)?.to_vec(),
                    emulated_mask: r.take("config.emulated_mask", len)?.to_vec(),
                    write_mask: r.take("config.write_mask", len)?.to_vec(),
                    write1c_mask: r.take("config.write1c_mask", len)?.to_vec(),
                };
            }
            Section::Bars => {
                let n = r.u8("bar_count")?;
                if n > BAR_COUNT {
                    return Err(Error::InvalidField {
                        field: "bar_count",
                        value: u64::from(n),
                    });
                }
                for _ in 0..n {
                    self.bars.push(BarState {
                        index: r.u8("bar.index")?,
                        kind: BarKind::from_raw(r.u8("bar.kind")?)?,
                        prefetchable: r.bool("bar.prefetchable")?,
                        address: r.u64("bar.address")?,
                        size: r.u64("bar.size")?,
                    });
                }
            }
            Section::Interrupts => {
                self.interrupt_mode = InterruptMode::from_raw(r.u8("interrupt_mode")?)?;
                if r.bool("msi.present")? {
                    self.msi = Some(MsiState {
                        enabled: r.bool("msi.enabled")?,
                        address_64bit: r.bool("msi.address_64bit")?,
                        per_vector_masking: r.bool("msi.per_vector_masking")?,
                        multiple_message_capable: r.u8("msi.multiple_message_capable")?,
                        multiple_message_enable: r.u8("msi.multiple_message_enable")?,
                        address: r.u64("msi.address")?,
                        data: r.u16("msi.data")?,
                        mask_bits: r.u32("msi.mask_bits")?,
                        pending_bits: r.u32("msi.pending_bits")?,
                    });
                }
                if r.bool("msix.present")? {
                    let enabled = r.bool("msix.enabled")?;
                    let function_mask = r.bool("msix.function_mask")?;
                    let n = usize::from(r.u16("msix.vectors")?);
                    if n == 0 || n > MAX_MSIX_VECTORS {
                        return Err(Error::InvalidField {
                            field: "msix.vectors",
                            value: n as u64,
                        });
                    }
                    r.check_count("msix.entries", n, 13)?;
                    let mut entries = Vec::with_capacity(n);
                    for _ in 0..n {
                        entries.push(MsixEntry {
                            address: r.u64("msix.address")?,
                            data: r.u32("msix.data")?,
                            masked: r.bool("msix.masked")?,
                        });
                    }
                    let words = n.div_ceil(64);
                    r.check_count("msix.pba", words, 8)?;
                    let mut pba = Vec::with_capacity(words);
                    for _ in 0..words {
                        pba.push(r.u64("msix.pba")?);
                    }
                    self.msix = Some(MsixState {
                        enabled,
                        function_mask,
                        entries,
                        pba,
                    });
                }
            }
            Section::DeviceData => self.device_data = r.blob("device_data")?,
            Section::Notice => {
                if r.bool("notice.present")? {
                    self.notice = Some(NoticeState {
                        capability_offset: r.u8("notice.capability_offset")?,
                        guest_enabled: r.bool("notice.guest_enabled")?,
                        vector: r.u16("notice.vector")?,
                        generation: r.u32("notice.generation")?,
                    });
                }
            }
        }
        Ok(())
    }
}

/// CRC32 of a stream with its checksum field read as zero.
fn checksum(bytes: &[u8]) -> u32 {
    let head = bytes.get(..CRC_OFFSET).unwrap_or(bytes);
    let tail = bytes.get(CRC_OFFSET + 4..).unwrap_or(&[]);
    let mut crc = Crc32::new();
    crc.update(head);
    crc.update(&[0; 4]);
    crc.update(tail);
    crc.finish()
}

/// Recomputes the checksum of a (possibly edited) stream in place. For tests and fuzzers that
/// want to reach the section parsers past the checksum.
#[doc(hidden)]
pub fn reseal(bytes: &mut [u8]) {
    let crc = checksum(bytes);
    if let Some(field) = bytes.get_mut(CRC_OFFSET..CRC_OFFSET + 4) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
}
