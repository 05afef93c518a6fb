// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest's initramfs: busybox, the VFIO modules and mtty.ko, the lab test binaries with the
//! shared libraries they link, and an `/init` that binds the devices, runs the suites and
//! reports on the second serial port.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::host::{module_name, module_order, modules_dir};
use super::{run_output, sh, Lab, Suite};

/// The modules the guest loads (their dependencies come along).
const MODULES: &[&str] = &["vfio-pci", "vfio_iommu_type1", "mdev"];

/// mdev instances created in the guest (sources and destinations of migrations).
pub const MDEVS: &[&str] = &[
    "5b2c5a2e-6c33-4d6e-9a1f-000000000001",
    "5b2c5a2e-6c33-4d6e-9a1f-000000000002",
    "5b2c5a2e-6c33-4d6e-9a1f-000000000003",
    "5b2c5a2e-6c33-4d6e-9a1f-000000000004",
];

/// The guest's `/init`. `@@` lines on the second serial port are for the host; everything a
/// suite prints goes there too, between its BEGIN and END lines.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
R=/dev/ttyS1
say() { echo "$@" > $R; }
say "@@LAB-BOOT uptime=$(cut -d' ' -f1 /proc/uptime)"
say "@@KERNEL $(uname -r) $(uname -v)"
while read -r m args; do
    insmod "/lib/modules/$m.ko" $args || say "@@ERROR insmod $m"
done < /lab/modules
bind() {
    echo vfio-pci > "/sys/bus/pci/devices/$1/driver_override"
    echo "$1" > /sys/bus/pci/drivers_probe || say "@@ERROR bind $1"
}
E1000E= NVME_PF= UNVIABLE= SHARED=
for d in /sys/bus/pci/devices/*; do
    b=${d##*/}
    case "$(cat $d/vendor):$(cat $d/device):$b" in
        0x8086:0x10d3:*) E1000E=$b; bind $b ;;
        0x1b36:0x0010:*) NVME_PF=$b; bind $b ;;
        0x1b36:0x0005:*:04.0) UNVIABLE=$b; bind $b ;;
        0x1b36:0x0005:*:05.?) SHARED="$SHARED${SHARED:+,}$b"; bind $b ;;
    esac
done
MTTY=
for u in $(cat /lab/mdevs); do
    if echo "$u" > /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create; then
        MTTY="$MTTY${MTTY:+,}$u"
    else
        say "@@ERROR mdev $u"
    fi
done
for d in /sys/bus/pci/devices/* /sys/bus/mdev/devices/*; do
    [ -e "$d" ] || continue
    drv=none; [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
    grp=none; [ -e "$d/iommu_group" ] && grp=$(basename "$(readlink "$d/iommu_group")")
    if [ -e "$d/mdev_type" ]; then id="mdev:$(basename "$(readlink "$d/mdev_type")")"
    else id="$(cat $d/vendor):$(cat $d/device)"; fi
    say "@@DEVICE ${d##*/} $id driver=$drv group=$grp"
done
ls /dev/vfio > /tmp/vfio 2>&1; say "@@VFIO-NODES $(tr '\n' ' ' < /tmp/vfio)"
export LAB=1 LAB_E1000E=$E1000E LAB_NVME_PF=$NVME_PF LAB_MTTY=$MTTY
export LAB_UNVIABLE=$UNVIABLE LAB_SHARED_GROUP=$SHARED
while read -r name bin timeout args; do
    say "@@SUITE-BEGIN $name"
    timeout "$timeout" "/lab/bin/$bin" --test-threads=1 --color never $args > $R 2>&1
    say "@@SUITE-END $name rc=$?"
done < /lab/suites
say "@@LAB-END uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"#;

/// Build the initramfs for `suites` (binaries already built) with `mtty` and return its path.
pub fn build(lab: &Lab, mtty: &Path, suites: &[Suite]) -> Result<PathBuf, String> {
    let tree = lab.cache().join("initramfs");
    let _ = fs::remove_dir_all(&tree);
    for dir in ["bin", "proc", "sys", "dev", "tmp", "lib/modules", "lab/bin"] {
        mkdir(&tree.join(dir))?;
    }
    let busybox = run_output(Command::new("sh").args(["-c", "command -v busybox"]))?;
    copy(Path::new(busybox.trim()), &tree.join("bin/busybox"))?;
    let mut modules = String::new();
    for (path, args) in module_order(lab, MODULES)? {
        let name = module_name(&path);
        unpack_module(&path, &tree.join(format!("lib/modules/{name}.ko")))?;
        let args = if name == "vfio-pci" {
            // SR-IOV on a PF bound to vfio-pci is opt-in (vfio_pci.c, enable_sriov).
            format!("{args} enable_sriov=1")
        } else {
            args
        };
        modules.push_str(format!("{name} {args}").trim_end());
        modules.push('\n');
    }
    copy(mtty, &tree.join("lib/modules/mtty.ko"))?;
    modules.push_str("mtty\n");
    if !modules_dir(lab).exists() {
        return Err("the extracted kernel has no module tree".into());
    }
    write(&tree.join("lab/modules"), &modules)?;
    write(&tree.join("lab/mdevs"), &(MDEVS.join("\n") + "\n"))?;
    let mut list = String::new();
    for suite in suites {
        let bin = suite.file_name();
        copy(&suite.binary, &tree.join("lab/bin").join(&bin))?;
        for lib in shared_libraries(&suite.binary)? {
            let rel = lib.strip_prefix("/").unwrap_or(&lib);
            let dest = tree.join(rel);
            if !dest.exists() {
                copy(&lib, &dest)?;
            }
        }
        list.push_str(&format!(
            "{} {bin} {} {}\n",
            suite.name, suite.timeout_s, suite.args
        ));
    }
    write(&tree.join("lab/suites"), &list)?;
    write(&tree.join("init"), INIT)?;
    sh(Command::new("chmod").arg("755").arg(tree.join("init")))?;
    let cpio = lab.cache().join("initramfs.cpio");
    let out = fs::File::create(&cpio).map_err(|e| format!("{}: {e}", cpio.display()))?;
    let status = Command::new("sh")
        .args(["-c", "find . | LC_ALL=C sort | cpio -o -H newc --quiet"])
        .current_dir(&tree)
        .stdout(Stdio::from(out))
        .status()
        .map_err(|e| format!("cpio: {e}"))?;
    if !status.success() {
        return Err(format!("cpio failed: {status}"));
    }
    Ok(cpio)
}

/// The shared libraries `binary` loads, the dynamic loader among them, as `ldd` resolves them.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let out = run_output(Command::new("ldd").arg(binary))?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => l.split_whitespace().next(),
            }?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn unpack_module(from: &Path, to: &Path) -> Result<(), String> {
    if from.extension().is_some_and(|e| e == "xz") {
        let out = fs::File::create(to).map_err(|e| e.to_string())?;
        let status = Command::new("xz")
            .arg("-dc")
            .arg(from)
            .stdout(Stdio::from(out))
            .status()
            .map_err(|e| format!("xz: {e}"))?;
        if !status.success() {
            return Err(format!("xz -d {} failed", from.display()));
        }
        Ok(())
    } else {
        copy(from, to)
    }
}

fn mkdir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(parent) = to.parent() {
        mkdir(parent)?;
    }
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}
