// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host side of the lab: Debian packages installed on the host, the guest kernel's
//! packages downloaded and extracted (never installed), and the mtty sample built out of tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{run_output, sh, Lab};

/// Tools the host needs, by the Debian package that provides them.
const HOST_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("busybox-static", "busybox"),
    ("kmod", "depmod"),
    ("cpio", "cpio"),
    ("xz-utils", "xz"),
    ("binutils", "strip"),
    ("make", "make"),
];

/// The guest kernel: Debian bookworm's 6.12 backport, the release `LAB.md` describes.
pub const KERNEL_VERSION: &str = "6.12.117-1~deb12u1";
/// Its module directory name (`uname -r` in the guest).
pub const KERNEL_RELEASE: &str = "6.12.117+deb12-amd64";

/// The packages downloaded for the guest (`apt-get download`, then `dpkg -x`).
fn guest_packages() -> Vec<String> {
    [
        format!("linux-image-{KERNEL_RELEASE}-unsigned"),
        format!("linux-headers-{KERNEL_RELEASE}"),
        "linux-headers-6.12.117+deb12-common".to_owned(),
        "linux-kbuild-6.12.117+deb12".to_owned(),
        "linux-source-6.12".to_owned(),
    ]
    .into_iter()
    .map(|p| format!("{p}={KERNEL_VERSION}"))
    .collect()
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Install the host packages that are missing.
pub fn install_host_packages() -> Result<(), String> {
    let missing: Vec<&str> = HOST_PACKAGES
        .iter()
        .filter(|(package, _)| !is_installed(package))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("lab: installing host packages: {}", missing.join(" "));
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    sh(Command::new("apt-get").args(["update", "-qq"]).envs(env))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .envs(env))?;
    for (package, tool) in HOST_PACKAGES {
        if run_output(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            return Err(format!("{tool} (package {package}) is still missing"));
        }
    }
    Ok(())
}

/// Download the guest kernel's packages into `lab.debs()` (once) and extract all but the
/// source package into `lab.root()`; from the source tarball only the files the lab uses.
pub fn fetch_kernel(lab: &Lab) -> Result<(), String> {
    let stamp = lab.root().join(format!(".extracted-{KERNEL_VERSION}"));
    if stamp.exists() {
        return Ok(());
    }
    fs::create_dir_all(lab.debs()).map_err(|e| format!("{}: {e}", lab.debs().display()))?;
    let have_all = guest_packages().iter().all(|p| deb_file(lab, p).is_some());
    if !have_all {
        eprintln!("lab: downloading the {KERNEL_VERSION} kernel packages");
        let mut download = Command::new("apt-get");
        download
            .arg("download")
            .args(guest_packages())
            .current_dir(lab.debs());
        if sh(&mut download).is_err() {
            // The package lists may predate the release: refresh them once.
            sh(Command::new("apt-get").args(["update", "-qq"]))?;
            sh(&mut download)?;
        }
    }
    let _ = fs::remove_dir_all(lab.root());
    fs::create_dir_all(lab.root()).map_err(|e| e.to_string())?;
    for package in guest_packages() {
        let deb = deb_file(lab, &package).ok_or_else(|| format!("{package}: no .deb"))?;
        sh(Command::new("dpkg").arg("-x").arg(&deb).arg(lab.root()))?;
    }
    eprintln!("lab: extracting mtty.c and the VFIO uAPI header from linux-source-6.12");
    let tarball = lab.root().join("usr/src/linux-source-6.12.tar.xz");
    sh(Command::new("tar")
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(lab.root())
        .args([
            "linux-source-6.12/samples/vfio-mdev/mtty.c",
            "linux-source-6.12/include/uapi/linux/vfio.h",
        ]))?;
    fs::remove_file(&tarball).map_err(|e| e.to_string())?;
    eprintln!("lab: depmod");
    sh(Command::new("depmod")
        .arg("-b")
        .arg(lab.root())
        .arg(KERNEL_RELEASE))?;
    fs::write(&stamp, b"").map_err(|e| e.to_string())
}

fn deb_file(lab: &Lab, package: &str) -> Option<PathBuf> {
    let name = package.split('=').next().unwrap_or(package);
    let prefix = format!("{name}_");
    fs::read_dir(lab.debs())
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// The extracted kernel image.
pub fn vmlinuz(lab: &Lab) -> PathBuf {
    lab.root().join(format!("boot/vmlinuz-{KERNEL_RELEASE}"))
}

/// The extracted module tree.
pub fn modules_dir(lab: &Lab) -> PathBuf {
    lab.root().join(format!("lib/modules/{KERNEL_RELEASE}"))
}

/// Build mtty.ko out of tree against the extracted headers (rebuilt only when missing).
pub fn build_mtty(lab: &Lab) -> Result<PathBuf, String> {
    let dir = lab.cache().join("mtty");
    let ko = dir.join("mtty.ko");
    if ko.exists() {
        return Ok(ko);
    }
    let headers = lab
        .root()
        .join(format!("usr/src/linux-headers-{KERNEL_RELEASE}"));
    let common = lab
        .root()
        .join("usr/src/linux-headers-6.12.117+deb12-common");
    // The headers' Makefile includes the common tree by its absolute install path.
    let makefile = headers.join("Makefile");
    let text = fs::read_to_string(&makefile).map_err(|e| e.to_string())?;
    let patched: String = text
        .lines()
        .map(|l| {
            if l.starts_with("include ") && l.ends_with("-common/Makefile") {
                format!("include {}/Makefile", common.display())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(&makefile, patched + "\n").map_err(|e| e.to_string())?;
    fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    fs::copy(
        lab.root()
            .join("linux-source-6.12/samples/vfio-mdev/mtty.c"),
        dir.join("mtty.c"),
    )
    .map_err(|e| format!("mtty.c: {e}"))?;
    fs::write(dir.join("Kbuild"), "obj-m := mtty.o\n").map_err(|e| e.to_string())?;
    eprintln!("lab: building mtty.ko");
    // pahole is not installed: PAHOLE=true skips the BTF it would generate.
    sh(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&headers)
        .arg(format!("M={}", dir.display()))
        .args(["PAHOLE=true", "modules"]))?;
    if ko.exists() {
        Ok(ko)
    } else {
        Err("make succeeded but left no mtty.ko".into())
    }
}

/// The modules to load in the guest, in `insmod` order, with their parameters, as
/// `modprobe --show-depends` resolves them in the extracted tree.
pub fn module_order(lab: &Lab, wanted: &[&str]) -> Result<Vec<(PathBuf, String)>, String> {
    let mut order: Vec<(PathBuf, String)> = Vec::new();
    for module in wanted {
        let out = run_output(Command::new("modprobe").arg("-d").arg(lab.root()).args([
            "-S",
            KERNEL_RELEASE,
            "--show-depends",
            module,
        ]))?;
        for line in out.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("insmod") {
                continue;
            }
            let Some(path) = words.next() else { continue };
            let path = PathBuf::from(path);
            if !order.iter().any(|(p, _)| *p == path) {
                order.push((path, words.collect::<Vec<_>>().join(" ")));
            }
        }
    }
    Ok(order)
}

/// A module's name as the guest loads it (file name without `.ko` / `.ko.xz`).
pub fn module_name(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.trim_end_matches(".xz")
        .trim_end_matches(".ko")
        .to_owned()
}
