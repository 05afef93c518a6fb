// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VFIO migration v2 state machine, a versioned device-state format, and an opt-in
//! guest-cooperative migration notice that never blocks on the guest.

#![forbid(unsafe_code)]
