// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `migration_stream`: loading a device-state stream from untrusted bytes.
//!
//! Input: one mode byte, then the stream. Mode bit 0 recomputes the stream's CRC before
//! decoding (so mutations reach the section parsers instead of stopping at the checksum);
//! bit 1 decodes as a version-1 reader would.
//!
//! Checks: decoding never panics; a decoded state validates, re-encodes, and decodes back to
//! itself; its encoding is a fixed point; a failed `load_from` leaves the target untouched;
//! a version-1 reader accepts only version-1 streams.

use migration_state::format::reseal;
use migration_state::{DeviceState, FormatVersion};

/// An input's stream (resealed when mode bit 0 asks) and the newest version its reader takes
/// (version 1 when mode bit 1 asks); `None` for an empty input.
pub fn stream_and_reader(data: &[u8]) -> Option<(Vec<u8>, FormatVersion)> {
    let (&mode, stream) = data.split_first()?;
    let mut bytes = stream.to_vec();
    if mode & 1 != 0 {
        reseal(&mut bytes);
    }
    let newest = if mode & 2 != 0 {
        FormatVersion::V1
    } else {
        FormatVersion::CURRENT
    };
    Some((bytes, newest))
}

/// Runs one input. Panics on a violated property.
pub fn run(data: &[u8]) {
    let Some((bytes, newest)) = stream_and_reader(data) else {
        return;
    };
    let decoded = DeviceState::decode_up_to(&bytes, newest);

    // load_from is all-or-nothing.
    let mut target = DeviceState {
        device_data: vec![0x5a; 3],
        ..DeviceState::default()
    };
    let before = target.clone();
    match target.load_from(&bytes) {
        Ok(()) => assert!(
            newest != FormatVersion::CURRENT || decoded.as_ref().ok() == Some(&target),
            "load_from and decode disagree"
        ),
        Err(_) => assert_eq!(target, before, "failed load_from changed the state"),
    }

    let Ok(state) = decoded else {
        return;
    };
    let version = bytes.get(8).copied().unwrap_or(0);
    if newest == FormatVersion::V1 {
        assert_eq!(version, 1, "a version-1 reader accepted version {version}");
    }
    assert!(state.validate().is_ok(), "decoded state does not validate");
    let encoded = match state.encode() {
        Ok(e) => e,
        Err(e) => panic!("decoded state does not encode: {e:?}"),
    };
    let again = DeviceState::decode(&encoded);
    assert_eq!(
        again.as_ref().ok(),
        Some(&state),
        "decode(encode(state)) != state: {again:?}"
    );
    if let Ok(again) = again {
        assert_eq!(
            again.encode().ok(),
            Some(encoded),
            "encoding is not a fixed point"
        );
    }
    if state.notice.is_none() {
        let v1 = state.encode_as(FormatVersion::V1);
        let back = v1
            .as_ref()
            .ok()
            .and_then(|b| DeviceState::decode_up_to(b, FormatVersion::V1).ok());
        assert_eq!(back, Some(state), "version-1 round trip: {v1:?}");
    }
}
