// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Prints the capabilities of every device in an `lspci -xxxx` dump, one per line, as
//! `[OFF] ID name` (standard chain first, then extended).
//!
//! `cargo run -p pci-config --example lscap -- FILE`
//!
//! Exits non-zero, printing the typed error, when the file cannot be read or parsed or a
//! chain is malformed.

use std::process::ExitCode;

fn run(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let devices = pci_config::parse_dump(&text).map_err(|e| format!("{path}: {e}"))?;
    let many = devices.len() > 1;
    for device in devices {
        if many {
            println!("{}", device.header);
        }
        let caps = device
            .space
            .capabilities()
            .map_err(|e| format!("{}: {e} ({e:?})", device.header))?;
        for cap in caps {
            println!("{cap}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: lscap FILE");
        return ExitCode::from(2);
    };
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
