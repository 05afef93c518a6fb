// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `msix_mmio`: see `passthrough_fuzz::msix_ops`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| passthrough_fuzz::msix_ops::run(data));
