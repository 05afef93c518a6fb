// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lab: the config spaces the simulator's lab profiles are built from, printed as `lspci -x`
//! dumps between `@@FIXTURE` markers (the lab keeps them under `target/vfio-lab/fixtures/`):
//! each device's physical config space as sysfs shows it to the host kernel, and the view
//! VFIO's config region gives the user. Run with `--nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pci_config::{lspci, ConfigSpace};
use vfio_core::info::CONFIG_REGION_INDEX;
use vfio_core::lab::{self, LabDevices};
use vfio_core::{Container, DeviceAddress, KernelDevice, Uuid, VfioDevice};

fn print_fixture(name: &str, header: &str, bytes: &[u8]) {
    // mtty's config region is 0xff bytes long: pad it to the 256 a dump holds.
    let mut bytes = bytes.to_vec();
    if bytes.len() < 256 {
        bytes.resize(256, 0);
    }
    let space = ConfigSpace::from_bytes(&bytes).unwrap();
    // libtest has printed "test NAME ... " without a newline.
    println!("\n@@FIXTURE-BEGIN {name}");
    print!("{}", lspci::write_device(header, &space));
    println!("@@FIXTURE-END {name}");
}

fn vfio_view(dev: &KernelDevice) -> Vec<u8> {
    let size = dev.info().region(CONFIG_REGION_INDEX).unwrap().size as usize;
    let mut bytes = vec![0u8; size];
    // Dword by dword, as a guest would read it (a last partial dword byte by byte).
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        dev.region_read(CONFIG_REGION_INDEX, (i * 4) as u64, chunk)
            .unwrap();
    }
    bytes
}

fn sysfs_config(bdf: &str) -> Vec<u8> {
    std::fs::read(format!("/sys/bus/pci/devices/{bdf}/config")).unwrap()
}

fn capture(name: &str, bdf: &str, dev: &KernelDevice) {
    let header = format!("{} {name}", bdf.trim_start_matches("0000:"));
    print_fixture(
        &format!("{name}.sysfs.lspci-x"),
        &header,
        &sysfs_config(bdf),
    );
    print_fixture(&format!("{name}.vfio.lspci-x"), &header, &vfio_view(dev));
}

#[test]
fn capture_config_spaces() {
    let lab = LabDevices::from_env().unwrap();
    let container = Container::new().unwrap();
    let e1000e = container.open_device(&lab.e1000e().unwrap()).unwrap();
    capture("e1000e", &lab.e1000e, &e1000e);
    let pf = container.open_device(&lab.nvme_pf().unwrap()).unwrap();
    capture("nvme-pf", &lab.nvme_pf, &pf);
    let token = Uuid::random().unwrap();
    pf.set_vf_token(token).unwrap();
    lab::set_numvfs(&lab.nvme_pf, 1).unwrap();
    let vf_bdf = lab::vf_address(&lab.nvme_pf, 0, Duration::from_secs(30)).unwrap();
    let vf = container
        .open_device(&DeviceAddress::pci(&vf_bdf).unwrap().with_vf_token(token))
        .unwrap();
    capture("nvme-vf", &vf_bdf, &vf);
    drop(vf);
    lab::set_numvfs(&lab.nvme_pf, 0).unwrap();
    let mtty = container.open_device(&lab.mtty(0).unwrap()).unwrap();
    print_fixture("mtty.vfio.lspci-x", "00:00.0 mtty", &vfio_view(&mtty));
}
