// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A pure model of a PCI function's configuration space, as a VMM emulates it for a guest.
//!
//! This crate does no I/O. It will hold the 256-byte and 4 KiB configuration spaces with
//! per-byte write, write-1-to-clear and emulation masks, standard and extended capability
//! chains (parse, validate, hide, insert), typed capability views, BAR emulation with the
//! sizing protocol, and the `lspci -xxxx` dump format.

#![forbid(unsafe_code)]
