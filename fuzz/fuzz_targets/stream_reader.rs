// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `stream_reader`: see `passthrough_fuzz::stream_ops`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| passthrough_fuzz::stream_ops::run(data));
