// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `passthrough_mmio`: see `passthrough_fuzz::passthrough_ops`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| passthrough_fuzz::passthrough_ops::run(data));
