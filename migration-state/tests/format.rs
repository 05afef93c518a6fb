// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Round trip, corruption and version-skew tests of the device-state format.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use migration_state::format::{reseal, HEADER_LEN, MAGIC};
use migration_state::{
    BarKind, BarState, ConfigState, DeviceState, Error, FormatVersion, InterruptMode, MsiState,
    MsixEntry, MsixState, NoticeState,
};
use proptest::prelude::*;

/// A state that uses every field, with values that differ from their defaults.
///
/// The frozen streams in `fixtures/migration-state` encode this state (version 1 without the
/// notice, version 2 whole) as the format stood when each was frozen: changing this state
/// breaks `frozen_*` and `newer_reader_loads_older_stream`, and so does any change of the
/// format that would stop a released reader's streams from loading.
fn full_state() -> DeviceState {
    let mut config = ConfigState::zeroed();
    for (i, b) in config.bytes.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    config.emulated_mask[0x40..0x60].fill(0xff);
    config.write_mask[0x04] = 0x07;
    config.write1c_mask[0x07] = 0xf9;
    let mut msix = MsixState::with_vectors(70);
    msix.enabled = true;
    msix.function_mask = true;
    for (i, e) in msix.entries.iter_mut().enumerate() {
        *e = MsixEntry {
            address: 0xfee0_0000 + (i as u64) * 0x1000,
            data: 0x4000 + i as u32,
            masked: i % 3 == 0,
        };
    }
    msix.pba = vec![0x8000_0000_0000_0001, 0x21];
    DeviceState {
        config,
        bars: vec![
            BarState {
                index: 0,
                kind: BarKind::Memory64,
                prefetchable: true,
                address: 0x80_0000_0000,
                size: 0x10_0000,
            },
            BarState {
                index: 2,
                kind: BarKind::Memory32,
                prefetchable: false,
                address: 0xc000_0000,
                size: 0x1000,
            },
            BarState {
                index: 5,
                kind: BarKind::Io,
                prefetchable: false,
                address: 0xc040,
                size: 0x40,
            },
        ],
        interrupt_mode: InterruptMode::Msix,
        msi: Some(MsiState {
            enabled: false,
            address_64bit: true,
            per_vector_masking: true,
            multiple_message_capable: 5,
            multiple_message_enable: 3,
            address: 0x1_fee0_1000,
            data: 0x4321,
            mask_bits: 0xa5,
            pending_bits: 0x10,
        }),
        msix: Some(msix),
        device_data: (0..97u8).collect(),
        notice: Some(NoticeState {
            capability_offset: 0xc8,
            guest_enabled: true,
            vector: 17,
            generation: 3,
        }),
    }
}

/// A state another decode cannot produce by accident, to check "untouched".
fn sentinel_state() -> DeviceState {
    DeviceState {
        device_data: b"sentinel".to_vec(),
        interrupt_mode: InterruptMode::Intx,
        ..DeviceState::default()
    }
}

#[test]
fn full_state_round_trips() {
    let s = full_state();
    s.validate().unwrap();
    let bytes = s.encode().unwrap();
    assert_eq!(&bytes[..8], &MAGIC);
    assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 2);
    assert_eq!(DeviceState::decode(&bytes).unwrap(), s);
    // Encoding is deterministic.
    assert_eq!(
        DeviceState::decode(&bytes).unwrap().encode().unwrap(),
        bytes
    );
}

#[test]
fn extended_config_space_round_trips() {
    let mut s = full_state();
    s.config = ConfigState {
        bytes: vec![0x5a; 4096],
        emulated_mask: vec![0xff; 4096],
        write_mask: vec![0; 4096],
        write1c_mask: vec![1; 4096],
    };
    let bytes = s.encode().unwrap();
    assert_eq!(DeviceState::decode(&bytes).unwrap(), s);
}

#[test]
fn every_truncation_is_a_typed_error_and_leaves_target_untouched() {
    let bytes = full_state().encode().unwrap();
    let mut target = sentinel_state();
    let before = target.clone();
    for len in 0..bytes.len() {
        let err = target.load_from(&bytes[..len]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Truncated { .. } | Error::LengthMismatch { .. } | Error::BadMagic
            ),
            "len {len}: {err}"
        );
        assert_eq!(target, before, "target changed at len {len}");
    }
    // Appending a byte is refused too.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        target.load_from(&longer),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(target, before);
}

#[test]
fn every_single_bit_flip_is_a_typed_error_and_leaves_target_untouched() {
    let bytes = full_state().encode().unwrap();
    let mut target = sentinel_state();
    let before = target.clone();
    let mut flips = 0;
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bad = bytes.clone();
            bad[i] ^= 1 << bit;
            let r = target.load_from(&bad);
            assert!(r.is_err(), "flip of byte {i} bit {bit} accepted");
            assert_eq!(target, before, "target changed by flip at {i}.{bit}");
            flips += 1;
        }
    }
    assert_eq!(flips, bytes.len() * 8);
}

#[test]
fn successful_load_replaces_target() {
    let s = full_state();
    let mut target = sentinel_state();
    target.load_from(&s.encode().unwrap()).unwrap();
    assert_eq!(target, s);
}

#[test]
fn corrupted_but_resealed_streams_reach_section_checks() {
    let bytes = full_state().encode().unwrap();
    // Section table starts after the header: first entry is the config section.
    let mut bad = bytes.clone();
    bad[HEADER_LEN] = 0x7f; // unknown tag
    reseal(&mut bad);
    assert!(matches!(
        DeviceState::decode(&bad),
        Err(Error::UnknownSection {
            tag: 0x7f,
            version: 2
        })
    ));
    // Same tag twice.
    let mut bad = bytes.clone();
    bad[HEADER_LEN + 8] = bad[HEADER_LEN];
    reseal(&mut bad);
    assert!(matches!(
        DeviceState::decode(&bad),
        Err(Error::DuplicateSection(1))
    ));
    // A section length pointing past the end.
    let mut bad = bytes.clone();
    bad[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut bad);
    assert!(matches!(
        DeviceState::decode(&bad),
        Err(Error::Truncated { .. })
    ));
}

/// A stream written by a version-1 writer, frozen as a file (not produced by today's encoder).
const FROZEN_V1: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/migration-state/device-state-v1.bin"
));

/// A stream written by a version-2 writer, frozen as a file.
const FROZEN_V2: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/migration-state/device-state-v2.bin"
));

#[test]
fn newer_reader_loads_older_stream() {
    let mut s = full_state();
    s.notice = None;
    assert_eq!(&FROZEN_V1[..8], &MAGIC);
    assert_eq!(u16::from_le_bytes([FROZEN_V1[8], FROZEN_V1[9]]), 1);
    // A v1 stream has one section fewer than a v2 stream.
    assert_eq!(u16::from_le_bytes([FROZEN_V1[10], FROZEN_V1[11]]), 4);
    assert_eq!(DeviceState::decode(FROZEN_V1).unwrap(), s);
    assert_eq!(
        DeviceState::decode_up_to(FROZEN_V1, FormatVersion::V1).unwrap(),
        s
    );
    // Writing for a version-1 reader still produces exactly those bytes.
    assert_eq!(s.encode_as(FormatVersion::V1).unwrap(), FROZEN_V1);
}

#[test]
fn frozen_v2_stream_decodes_and_encodes_to_the_same_bytes() {
    assert_eq!(u16::from_le_bytes([FROZEN_V2[8], FROZEN_V2[9]]), 2);
    assert_eq!(u16::from_le_bytes([FROZEN_V2[10], FROZEN_V2[11]]), 5);
    let s = DeviceState::decode(FROZEN_V2).unwrap();
    assert_eq!(s, full_state());
    assert_eq!(s.encode_as(FormatVersion::V2).unwrap(), FROZEN_V2);
    // A version-1 reader refuses it by name, whole.
    assert!(matches!(
        DeviceState::decode_up_to(FROZEN_V2, FormatVersion::V1),
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
}

#[test]
fn frozen_streams_loaded_into_a_state_replace_it_whole() {
    for (frozen, notice) in [(FROZEN_V1, false), (FROZEN_V2, true)] {
        let mut target = sentinel_state();
        target.load_from(frozen).unwrap();
        assert_eq!(target.notice.is_some(), notice);
        assert_eq!(target.msix.as_ref().unwrap().entries.len(), 70);
        assert_eq!(target.device_data, (0..97u8).collect::<Vec<_>>());
    }
}

#[test]
fn older_reader_rejects_newer_stream() {
    let v2 = full_state().encode().unwrap();
    let err = DeviceState::decode_up_to(&v2, FormatVersion::V1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("version 2"));

    // A future version 3 stream (well-formed header, valid checksum) is refused by this reader.
    let mut v3 = v2.clone();
    v3[8..10].copy_from_slice(&3u16.to_le_bytes());
    reseal(&mut v3);
    assert!(matches!(
        DeviceState::decode(&v3),
        Err(Error::UnsupportedVersion {
            found: 3,
            supported: 2
        })
    ));
}

#[test]
fn v1_cannot_carry_a_notice() {
    assert!(matches!(
        full_state().encode_as(FormatVersion::V1),
        Err(Error::NotRepresentable {
            field: "notice",
            version: 1
        })
    ));
}

#[test]
fn v1_stream_with_v2_section_is_refused() {
    // Take a v2 stream, relabel it as v1: the notice section is unknown there.
    let mut bytes = full_state().encode().unwrap();
    bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    reseal(&mut bytes);
    assert!(matches!(
        DeviceState::decode(&bytes),
        Err(Error::UnknownSection { tag: 5, version: 1 })
    ));
}

#[test]
fn invalid_states_are_refused_on_encode() {
    let mut s = full_state();
    s.msix.as_mut().unwrap().pba.push(0);
    assert!(matches!(
        s.encode(),
        Err(Error::InvalidField {
            field: "msix.pba_words",
            ..
        })
    ));
    let mut s = full_state();
    s.bars[1].index = 1; // overlaps the 64-bit BAR 0
    assert!(matches!(
        s.encode(),
        Err(Error::InvalidField {
            field: "bar.index",
            ..
        })
    ));
    let mut s = full_state();
    s.msix = None; // mode is MSI-X
    assert!(matches!(
        s.encode(),
        Err(Error::InvalidField {
            field: "interrupt_mode",
            ..
        })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary edits past the checksum never panic and never yield an invalid state.
    #[test]
    fn resealed_mutations_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = full_state().encode().unwrap();
        for (pos, val) in edits {
            let i = pos % bytes.len();
            bytes[i] = val;
        }
        let keep = bytes.len() - cut % 4;
        bytes.truncate(keep);
        reseal(&mut bytes);
        if let Ok(s) = DeviceState::decode(&bytes) {
            prop_assert!(s.validate().is_ok());
        }
    }

    /// Arbitrary bytes never panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = DeviceState::decode(&bytes);
    }
}
