// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Naming a device to open: a PCI function by BDF or sysfs path, or an mdev by UUID, and how
//! the kernel finds its IOMMU group and its name inside the group.

use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// A UUID as the kernel's `uuid_parse` reads it (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex
/// digits of either case): an mdev's name, or the VF token shared by an SR-IOV PF and its VFs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uuid([u8; 16]);

impl Uuid {
    /// The UUID with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Uuid(bytes)
    }

    /// Its bytes, in the order the kernel's `uuid_t` holds them.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// A random (version 4) UUID from the kernel's random source.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 16];
        crate::ioctl::fill_random(&mut bytes).map_err(Error::Random)?;
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Ok(Uuid(bytes))
    }
}

impl FromStr for Uuid {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidAddress(format!("not a UUID: {s:?}"));
        let b = s.as_bytes();
        if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b.get(i) != Some(&b'-')) {
            return Err(bad());
        }
        let digits: Vec<u8> = b.iter().copied().filter(|&c| c != b'-').collect();
        if digits.len() != 32 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// Where a device to open lives: its sysfs directory (which links to its IOMMU group) and the
/// name `VFIO_GROUP_GET_DEVICE_FD` knows it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAddress {
    sysfs_dir: PathBuf,
    name: String,
    vf_token: Option<Uuid>,
}

/// Parse a PCI address `DDDD:BB:DD.F` (or `BB:DD.F`, domain 0) into its canonical form.
fn canonical_bdf(bdf: &str) -> Option<String> {
    let (rest, function) = bdf.rsplit_once('.')?;
    let mut parts: Vec<&str> = rest.split(':').collect();
    if parts.len() == 2 {
        parts.insert(0, "0000");
    }
    let [domain, bus, slot] = parts.as_slice() else {
        return None;
    };
    let hex = |s: &str, width: usize, max: u32| {
        (s.len() <= width && !s.is_empty())
            .then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
            .filter(|v| *v <= max)
    };
    let (domain, bus, slot) = (
        hex(domain, 4, 0xffff)?,
        hex(bus, 2, 0xff)?,
        hex(slot, 2, 0x1f)?,
    );
    let function = hex(function, 1, 7)?;
    Some(format!("{domain:04x}:{bus:02x}:{slot:02x}.{function}"))
}

impl DeviceAddress {
    /// The PCI function at `bdf` (`0000:00:03.0`, or `00:03.0` for domain 0), found under
    /// `/sys/bus/pci/devices`.
    pub fn pci(bdf: &str) -> Result<Self> {
        Self::pci_in(Path::new("/sys"), bdf)
    }

    /// [`DeviceAddress::pci`] under another sysfs mount point (tests build one in a directory).
    pub fn pci_in(sysfs: &Path, bdf: &str) -> Result<Self> {
        let name = canonical_bdf(bdf)
            .ok_or_else(|| Error::InvalidAddress(format!("not a PCI address: {bdf:?}")))?;
        Ok(DeviceAddress {
            sysfs_dir: sysfs.join("bus/pci/devices").join(&name),
            name,
            vf_token: None,
        })
    }

    /// The mediated device `uuid`, found under `/sys/bus/mdev/devices`.
    pub fn mdev(uuid: Uuid) -> Self {
        Self::mdev_in(Path::new("/sys"), uuid)
    }

    /// [`DeviceAddress::mdev`] under another sysfs mount point.
    pub fn mdev_in(sysfs: &Path, uuid: Uuid) -> Self {
        let name = uuid.to_string();
        DeviceAddress {
            sysfs_dir: sysfs.join("bus/mdev/devices").join(&name),
            name,
            vf_token: None,
        }
    }

    /// The device whose sysfs directory is `dir` (a PCI function's or an mdev's); its name is
    /// the directory's last component.
    pub fn sysfs(dir: impl Into<PathBuf>) -> Result<Self> {
        let sysfs_dir: PathBuf = dir.into();
        let last = sysfs_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::InvalidAddress(format!("no device name in {sysfs_dir:?}")))?;
        let name = match (canonical_bdf(last), last.parse::<Uuid>()) {
            (Some(bdf), _) => bdf,
            (None, Ok(uuid)) => uuid.to_string(),
            (None, Err(_)) => {
                return Err(Error::InvalidAddress(format!(
                    "{last:?} is neither a PCI address nor a UUID"
                )))
            }
        };
        Ok(DeviceAddress {
            sysfs_dir,
            name,
            vf_token: None,
        })
    }

    /// Present `token` when opening: required for an SR-IOV VF whose PF is bound to vfio-pci,
    /// and for such a PF while its VFs are in use.
    pub fn with_vf_token(mut self, token: Uuid) -> Self {
        self.vf_token = Some(token);
        self
    }

    /// The VF token presented when opening, if any.
    pub fn vf_token(&self) -> Option<Uuid> {
        self.vf_token
    }

    /// The device's sysfs directory.
    pub fn sysfs_dir(&self) -> &Path {
        &self.sysfs_dir
    }

    /// The device's name in its group (`0000:00:03.0`, or the mdev's UUID).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of the device's IOMMU group: the last component of its `iommu_group` link.
    pub fn iommu_group(&self) -> Result<u32> {
        let link = self.sysfs_dir.join("iommu_group");
        let target = std::fs::read_link(&link).map_err(|source| Error::NoIommuGroup {
            device: self.name.clone(),
            source,
        })?;
        target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::NoIommuGroup {
                device: self.name.clone(),
                source: std::io::Error::from_raw_os_error(libc::EINVAL),
            })
    }

    /// The string `VFIO_GROUP_GET_DEVICE_FD` is given: the name, then ` vf_token=UUID` when a
    /// token is presented (vfio-pci's `vfio_pci_core_match` parses it).
    pub(crate) fn device_fd_name(&self) -> Result<CString> {
        let text = match self.vf_token {
            Some(token) => format!("{} vf_token={token}", self.name),
            None => self.name.clone(),
        };
        CString::new(text).map_err(|_| Error::InvalidAddress(format!("{:?}", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_and_bad_ones_are_refused() {
        let text = "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3";
        let uuid: Uuid = text.parse().unwrap();
        assert_eq!(uuid.to_string(), text);
        assert_eq!(uuid.as_bytes()[0], 0xbd);
        assert_eq!(
            "BD8D9D2B-5A5F-4F5A-A211-F591514BA1F3"
                .parse::<Uuid>()
                .unwrap(),
            uuid
        );
        for bad in [
            "",
            "bd8d9d2b5a5f4f5aa211f591514ba1f3",
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1fz",
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f",
            "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f33",
            "bd8d9d2b+5a5f-4f5a-a211-f591514ba1f3",
        ] {
            assert!(matches!(bad.parse::<Uuid>(), Err(Error::InvalidAddress(_))));
        }
        let a = Uuid::random().unwrap();
        let b = Uuid::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[6] >> 4, 4, "version 4");
        assert_eq!(a.as_bytes()[8] >> 6, 2, "RFC 4122 variant");
    }

    #[test]
    fn pci_addresses_are_canonical() {
        let a = DeviceAddress::pci("00:03.0").unwrap();
        assert_eq!(a.name(), "0000:00:03.0");
        assert_eq!(
            a.sysfs_dir(),
            Path::new("/sys/bus/pci/devices/0000:00:03.0")
        );
        assert_eq!(
            DeviceAddress::pci("0000:01:00.7").unwrap().name(),
            "0000:01:00.7"
        );
        assert_eq!(
            DeviceAddress::pci("0001:AB:1F.2").unwrap().name(),
            "0001:ab:1f.2"
        );
        for bad in [
            "",
            "00:03",
            "00:20.0",
            "00:03.8",
            "0:0:0:0.0",
            "xx:03.0",
            "00:03.0 ",
        ] {
            assert!(
                matches!(DeviceAddress::pci(bad), Err(Error::InvalidAddress(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_device_fd_name_carries_the_vf_token() {
        let token: Uuid = "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3".parse().unwrap();
        let a = DeviceAddress::pci("0000:01:00.1")
            .unwrap()
            .with_vf_token(token);
        assert_eq!(
            a.device_fd_name().unwrap().to_str().unwrap(),
            "0000:01:00.1 vf_token=bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3"
        );
        let m = DeviceAddress::mdev(token);
        assert_eq!(
            m.device_fd_name().unwrap().to_str().unwrap(),
            token.to_string()
        );
        assert_eq!(
            m.sysfs_dir(),
            Path::new("/sys/bus/mdev/devices/bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3")
        );
    }

    #[test]
    fn the_group_is_the_last_component_of_the_iommu_group_link() {
        let root = std::env::temp_dir().join(format!("vfio-core-sysfs-{}", std::process::id()));
        let dev = root.join("bus/pci/devices/0000:00:03.0");
        std::fs::create_dir_all(&dev).unwrap();
        let a = DeviceAddress::pci_in(&root, "00:03.0").unwrap();
        // No link: a device without an IOMMU group (no IOMMU, or not behind one).
        let err = a.iommu_group().unwrap_err();
        assert!(matches!(err, Error::NoIommuGroup { .. }), "{err:?}");
        assert_eq!(err.errno(), Some(libc::ENOENT));
        std::os::unix::fs::symlink(
            "../../../../kernel/iommu_groups/12",
            dev.join("iommu_group"),
        )
        .unwrap();
        assert_eq!(a.iommu_group().unwrap(), 12);
        let by_path = DeviceAddress::sysfs(&dev).unwrap();
        assert_eq!(by_path.name(), "0000:00:03.0");
        assert_eq!(by_path.iommu_group().unwrap(), 12);
        std::fs::remove_file(dev.join("iommu_group")).unwrap();
        std::os::unix::fs::symlink("../../kernel/iommu_groups/twelve", dev.join("iommu_group"))
            .unwrap();
        assert!(matches!(a.iommu_group(), Err(Error::NoIommuGroup { .. })));
        assert!(matches!(
            DeviceAddress::sysfs(root.join("bus")),
            Err(Error::InvalidAddress(_))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
