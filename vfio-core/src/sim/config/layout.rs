// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Which bytes of config space belong to which capability, and what the user may do with each
//! bit: vfio-pci's `pci_config_map` and permission tables, built at open the way
//! `vfio_config_init()`, `vfio_cap_init()` and `vfio_ecap_init()` build them (Linux v6.12.117
//! drivers/vfio/pci/vfio_pci_config.c). Register offsets and bit values are those of Linux
//! v6.12.117 include/uapi/linux/pci_regs.h.

/// Size of the standard header (`PCI_STD_HEADER_SIZEOF`).
pub(crate) const STD_HEADER: usize = 64;
/// Size of conventional config space (`PCI_CFG_SPACE_SIZE`).
pub(crate) const CFG_SPACE: usize = 256;
/// `pci_config_map` value of a byte no capability covers (`PCI_CAP_ID_INVALID`).
pub(crate) const UNASSIGNED: u8 = 0xff;
/// `pci_config_map` value of the standard header (`PCI_CAP_ID_BASIC`).
pub(crate) const BASIC: u8 = 0;

pub(crate) const CAP_PM: u8 = 0x01;
pub(crate) const CAP_VPD: u8 = 0x03;
pub(crate) const CAP_MSI: u8 = 0x05;
pub(crate) const CAP_PCIX: u8 = 0x07;
pub(crate) const CAP_VNDR: u8 = 0x09;
pub(crate) const CAP_EXP: u8 = 0x10;
pub(crate) const CAP_MSIX: u8 = 0x11;
pub(crate) const CAP_AF: u8 = 0x13;
/// `PCI_CAP_ID_MAX` (Enhanced Allocation).
const CAP_ID_MAX: u8 = 0x14;

pub(crate) const ECAP_ERR: u8 = 0x01;
pub(crate) const ECAP_PWR: u8 = 0x04;
pub(crate) const ECAP_VNDR: u8 = 0x0b;
pub(crate) const ECAP_DVSEC: u8 = 0x23;
/// `PCI_EXT_CAP_ID_MAX` (Data Object Exchange).
pub(crate) const ECAP_ID_MAX: u16 = 0x2e;

pub(crate) const COMMAND: usize = 0x04;
pub(crate) const STATUS: usize = 0x06;
pub(crate) const BAR0: usize = 0x10;
pub(crate) const ROM: usize = 0x30;
pub(crate) const CAP_PTR: usize = 0x34;
pub(crate) const INT_LINE: usize = 0x3c;
pub(crate) const INT_PIN: usize = 0x3d;

pub(crate) const COMMAND_IO: u16 = 0x1;
pub(crate) const COMMAND_MEMORY: u16 = 0x2;
pub(crate) const COMMAND_MASTER: u16 = 0x4;
pub(crate) const COMMAND_PARITY: u16 = 0x40;
pub(crate) const COMMAND_SERR: u16 = 0x100;
pub(crate) const COMMAND_INTX_DISABLE: u16 = 0x400;
pub(crate) const STATUS_INTERRUPT: u16 = 0x08;
pub(crate) const STATUS_CAP_LIST: u16 = 0x10;

pub(crate) const PM_PMC: usize = 2;
pub(crate) const PM_CTRL: usize = 4;
pub(crate) const PM_CAP_D1: u16 = 0x0200;
pub(crate) const PM_CAP_D2: u16 = 0x0400;
pub(crate) const PM_CAP_PME_MASK: u16 = 0xf800;
pub(crate) const PM_CTRL_STATE_MASK: u16 = 0x0003;
pub(crate) const PM_CTRL_PME_ENABLE: u16 = 0x0100;
pub(crate) const PM_CTRL_PME_STATUS: u16 = 0x8000;

pub(crate) const MSI_FLAGS: usize = 2;
pub(crate) const MSI_FLAGS_ENABLE: u16 = 0x0001;
pub(crate) const MSI_FLAGS_QMASK: u16 = 0x000e;
pub(crate) const MSI_FLAGS_QSIZE: u16 = 0x0070;
pub(crate) const MSI_FLAGS_64BIT: u16 = 0x0080;
pub(crate) const MSI_FLAGS_MASKBIT: u16 = 0x0100;

pub(crate) const MSIX_FLAGS: usize = 2;
pub(crate) const MSIX_FLAGS_QSIZE: u16 = 0x07ff;
pub(crate) const MSIX_FLAGS_MASKALL: u16 = 0x4000;
pub(crate) const MSIX_FLAGS_ENABLE: u16 = 0x8000;

pub(crate) const EXP_FLAGS: usize = 2;
pub(crate) const EXP_DEVCAP: usize = 4;
pub(crate) const EXP_DEVCTL: usize = 8;
pub(crate) const EXP_DEVCTL2: usize = 0x28;
pub(crate) const EXP_DEVCAP_FLR: u32 = 0x1000_0000;
pub(crate) const EXP_DEVCTL_PAYLOAD: u16 = 0x00e0;
pub(crate) const EXP_DEVCTL_PHANTOM: u16 = 0x0200;
pub(crate) const EXP_DEVCTL_READRQ: u16 = 0x7000;
pub(crate) const EXP_DEVCTL_BCR_FLR: u16 = 0x8000;
pub(crate) const EXP_DEVCTL2_ARI: u16 = 0x0020;
const EXP_TYPE_RC_END: u16 = 0x9;

pub(crate) const AF_CAP: usize = 3;
pub(crate) const AF_CTRL: usize = 4;
pub(crate) const AF_CAP_TP: u8 = 0x01;
pub(crate) const AF_CAP_FLR: u8 = 0x02;
pub(crate) const AF_CTRL_FLR: u8 = 0x01;

use super::perms::{put, Perm};

/// A physical config space as the device presents it (what `pci_read_config_*` reads).
pub(crate) type Bytes = [u8];

fn byte(b: &Bytes, at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

pub(crate) fn word(b: &Bytes, at: usize) -> u16 {
    u16::from_le_bytes([byte(b, at), byte(b, at + 1)])
}

pub(crate) fn dword(b: &Bytes, at: usize) -> u32 {
    u32::from_le_bytes([
        byte(b, at),
        byte(b, at + 1),
        byte(b, at + 2),
        byte(b, at + 3),
    ])
}

/// The layout vfio-pci derives from a device's config space at open.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Per byte: the capability ID covering it (`BASIC` for the header, `UNASSIGNED` for none);
    /// bytes at 256 and above hold extended capability IDs.
    pub(crate) map: Vec<u8>,
    /// Per byte: the bits read from and written to the virtual copy (`perm->virt`).
    pub(crate) virt: Vec<u8>,
    /// Per byte: the bits the user may write (`perm->write`).
    pub(crate) write: Vec<u8>,
    /// The virtual config space (`vdev->vconfig`) as `vfio_config_init()` leaves it.
    pub(crate) vconfig: Vec<u8>,
    /// Offsets of the capabilities vfio-pci acts on.
    pub(crate) msi: Option<usize>,
    pub(crate) msix: Option<usize>,
    pub(crate) exp: Option<usize>,
    pub(crate) pm: Option<usize>,
}

/// `pci_cap_length[]`: 0 hides the capability, `None` means "variable, ask `vfio_cap_len()`".
fn cap_length(id: u8) -> Option<usize> {
    match id {
        0x01 => Some(8),                   // PM: PCI_PM_SIZEOF
        0x02 => Some(12),                  // AGP: PCI_AGP_SIZEOF
        0x03 => Some(8),                   // VPD: PCI_CAP_VPD_SIZEOF
        0x05 | 0x07 | 0x08 | 0x09 => None, // MSI, PCI-X, HT, VNDR
        0x10 | 0x12 => None,               // EXP, SATA
        0x11 => Some(12),                  // MSI-X: PCI_CAP_MSIX_SIZEOF
        0x13 => Some(6),                   // AF: PCI_CAP_AF_SIZEOF
        _ => Some(0), // SLOTID, CHSWP, DBG, CCRC, SHPC, SSVID, AGP3, SECDEV, EA, unknown
    }
}

/// `pci_ext_cap_length[]`: 0 hides the capability, `None` means variable.
fn ecap_length(id: u16) -> Option<usize> {
    match id {
        0x01 => Some(0x2c),                       // ERR: PCI_ERR_ROOT_COMMAND
        0x03 => Some(12),                         // DSN: PCI_EXT_CAP_DSN_SIZEOF
        0x04 => Some(0x10),                       // PWR: PCI_EXT_CAP_PWR_SIZEOF
        0x02 | 0x08 | 0x09 => None,               // VC, MFVC, VC9
        0x0b | 0x0d | 0x15 | 0x16 | 0x17 => None, // VNDR, ACS, REBAR, DPA, TPH
        0x23 => None,                             // DVSEC
        0x0e | 0x0f => Some(8),                   // ARI, ATS
        0x10 => Some(0x40),                       // SRIOV: PCI_EXT_CAP_SRIOV_SIZEOF
        0x12 => Some(40),                         // MCAST: PCI_EXT_CAP_MCAST_ENDPOINT_SIZEOF
        0x13 => Some(16),                         // PRI: PCI_EXT_CAP_PRI_SIZEOF
        0x18 => Some(8),                          // LTR: PCI_EXT_CAP_LTR_SIZEOF
        _ => Some(0), // RCLD, RCILC, RCEC, RCRB, CAC, MRIOV, AMD_XXX, SECPCI, PMUX, PASID, ...
    }
}

/// `vfio_cap_len()` for the variable-length standard capabilities; `extended` is set when the
/// capability tells vfio-pci to look for extended capabilities (PCIe, PCI-X 2.0).
fn var_cap_len(phys: &Bytes, id: u8, pos: usize, extended: &mut bool) -> usize {
    let probe_ecaps = |extended: &mut bool| {
        if phys.len() > CFG_SPACE {
            *extended = dword(phys, CFG_SPACE) != 0;
        }
    };
    match id {
        CAP_MSI => {
            let flags = word(phys, pos + MSI_FLAGS);
            let mut len = 10;
            if flags & MSI_FLAGS_64BIT != 0 {
                len += 4;
            }
            if flags & MSI_FLAGS_MASKBIT != 0 {
                len += 10;
            }
            len
        }
        CAP_PCIX => {
            // PCI_X_CMD_VERSION(word at PCI_X_CMD): PCI_CAP_PCIX_SIZEOF_V2 or _V0.
            if (word(phys, pos + 2) >> 12) & 3 != 0 {
                probe_ecaps(extended);
                24
            } else {
                8
            }
        }
        CAP_VNDR => usize::from(byte(phys, pos + 2)),
        CAP_EXP => {
            probe_ecaps(extended);
            let flags = word(phys, pos + EXP_FLAGS);
            let rc_end = (flags & 0x00f0) >> 4 == EXP_TYPE_RC_END;
            match (flags & 0x000f == 1, rc_end) {
                (true, true) => 0xc,
                (true, false) => 20, // PCI_CAP_EXP_ENDPOINT_SIZEOF_V1
                (false, true) => 0x2c,
                (false, false) => 0x34, // PCI_CAP_EXP_ENDPOINT_SIZEOF_V2
            }
        }
        // HT: HT_3BIT_CAP_MASK picks HT_CAP_SIZEOF_SHORT or _LONG.
        0x08 => {
            if byte(phys, pos + 3) & 0xe0 != 0 {
                24
            } else {
                28
            }
        }
        // SATA: PCI_SATA_REGS_INLINE picks PCI_SATA_SIZEOF_LONG or _SHORT.
        0x12 => {
            if byte(phys, pos + 4) & 0xf == 0xf {
                16
            } else {
                8
            }
        }
        _ => 0,
    }
}

/// `vfio_vc_cap_len()`.
fn vc_cap_len(phys: &Bytes, pos: usize) -> usize {
    let evcc = (dword(phys, pos + 4) & 0x7) as usize;
    let cap2 = dword(phys, pos + 8);
    let phases = if cap2 & 0x8 != 0 {
        128
    } else if cap2 & 0x4 != 0 {
        64
    } else if cap2 & 0x2 != 0 {
        32
    } else {
        0
    };
    let vc_arb = phases * 4;
    let mut len = 0x10 + (1 + evcc) * 0x0c;
    if vc_arb != 0 {
        len = len.next_multiple_of(16) + vc_arb / 8;
    }
    len
}

/// `vfio_ext_cap_len()`.
fn var_ecap_len(phys: &Bytes, id: u16, pos: usize) -> usize {
    match id {
        0x0b => (dword(phys, pos + 4) >> 20) as usize, // VNDR: PCI_VSEC_HDR length
        0x02 | 0x08 | 0x09 => vc_cap_len(phys, pos),
        0x0d => {
            // ACS: with Egress Control, 8 + the egress vector's bytes.
            if byte(phys, pos + 4) & 0x20 != 0 {
                let n = usize::from(byte(phys, pos + 5));
                let bits = if n != 0 { n.next_multiple_of(32) } else { 256 };
                8 + bits / 8
            } else {
                8
            }
        }
        0x15 => 4 + usize::from((byte(phys, pos + 8) & 0xe0) >> 5) * 8, // REBAR
        0x16 => 16 + usize::from(byte(phys, pos + 4) & 0x1f) + 1,       // DPA
        0x17 => {
            // TPH: the ST table when it lives in the capability.
            let cap = dword(phys, pos + 4);
            if cap & 0x600 == 0x200 {
                0xc + ((cap & 0x07ff_0000) >> 16) as usize * 2 + 2
            } else {
                0xc
            }
        }
        0x23 => ((dword(phys, pos + 4) >> 20) & 0xfff) as usize, // DVSEC header 1 length
        _ => 0,
    }
}

impl Layout {
    /// Build the map, the permissions and the initial virtual config space from the physical
    /// config space `phys` (256 or 4096 bytes).
    pub(crate) fn new(phys: &Bytes) -> Self {
        let size = phys.len();
        let mut l = Layout {
            map: vec![UNASSIGNED; size],
            virt: vec![0; size],
            write: vec![0; size],
            vconfig: phys.to_vec(),
            msi: None,
            msix: None,
            exp: None,
            pm: None,
        };
        let basic = Perm::basic();
        l.place(0, STD_HEADER, BASIC, Some(&basic));
        let extended = l.cap_init(phys);
        if extended {
            l.ecap_init(phys);
        }
        l
    }

    /// Mark `len` bytes at `pos` as capability `id` with `perm` (or read-only).
    fn place(&mut self, pos: usize, len: usize, id: u8, perm: Option<&Perm>) {
        for i in 0..len {
            if let Some(m) = self.map.get_mut(pos + i) {
                *m = id;
            }
            let (v, w) = perm.map_or((0, 0), |p| {
                (
                    p.virt.get(i).copied().unwrap_or(0),
                    p.write.get(i).copied().unwrap_or(0),
                )
            });
            if let Some(slot) = self.virt.get_mut(pos + i) {
                *slot = v;
            }
            if let Some(slot) = self.write.get_mut(pos + i) {
                *slot = w;
            }
        }
    }

    /// vfio_cap_init(): walk the standard list, hide what has no length, fill the rest.
    /// Returns whether vfio-pci will look for extended capabilities.
    fn cap_init(&mut self, phys: &Bytes) -> bool {
        let mut extended = false;
        if word(phys, STATUS) & STATUS_CAP_LIST == 0 {
            return false;
        }
        let mut pos = usize::from(byte(phys, CAP_PTR));
        let mut prev = CAP_PTR;
        let mut caps = 0;
        let mut loops = (CFG_SPACE - STD_HEADER) / 4;
        while pos != 0 && loops > 0 {
            loops -= 1;
            let id = byte(phys, pos);
            let next = byte(phys, pos + 1);
            let mut len = 0;
            if id != 0 && id <= CAP_ID_MAX {
                len = cap_length(id).unwrap_or_else(|| var_cap_len(phys, id, pos, &mut extended));
            }
            if len == 0 {
                // Hidden: unlinked from the chain the user walks.
                put(&mut self.vconfig, prev, u32::from(next), 1);
                pos = usize::from(next);
                continue;
            }
            let perm = Perm::of_cap(phys, id, pos, len);
            self.place(pos, len, id, perm.as_ref());
            if id == CAP_PM {
                // vfio_update_pm_vconfig_bytes(): no PME for the user.
                let pmc = word(&self.vconfig, pos + PM_PMC) & !PM_CAP_PME_MASK;
                put(&mut self.vconfig, pos + PM_PMC, u32::from(pmc), 2);
                let ctrl =
                    word(&self.vconfig, pos + PM_CTRL) & !(PM_CTRL_PME_ENABLE | PM_CTRL_PME_STATUS);
                put(&mut self.vconfig, pos + PM_CTRL, u32::from(ctrl), 2);
            }
            let slot = match id {
                CAP_MSI => &mut self.msi,
                CAP_MSIX => &mut self.msix,
                CAP_EXP => &mut self.exp,
                CAP_PM => &mut self.pm,
                _ => &mut None,
            };
            slot.get_or_insert(pos);
            prev = pos + 1;
            pos = usize::from(next);
            caps += 1;
        }
        if caps == 0 {
            let status = word(&self.vconfig, STATUS) & !STATUS_CAP_LIST;
            put(&mut self.vconfig, STATUS, u32::from(status), 2);
        }
        extended
    }

    /// vfio_ecap_init(): walk the extended list from 0x100.
    fn ecap_init(&mut self, phys: &Bytes) {
        let size = phys.len();
        let mut epos = CFG_SPACE;
        let mut prev: Option<usize> = None;
        let mut ecaps = 0;
        let mut loops = size.saturating_sub(CFG_SPACE) / 4;
        while loops > 0 && epos >= CFG_SPACE {
            loops -= 1;
            let header = dword(phys, epos);
            let id = (header & 0xffff) as u16;
            let next = ((header >> 20) & 0xffc) as usize;
            let mut len = 0;
            if id <= ECAP_ID_MAX {
                len = ecap_length(id).unwrap_or_else(|| var_ecap_len(phys, id, epos));
            }
            let mut hidden = false;
            if len == 0 {
                if let Some(p) = prev {
                    // Skip it: the previous header points past it.
                    let v = (dword(&self.vconfig, p) & !(0xffc << 20)) | ((next as u32) << 20);
                    put(&mut self.vconfig, p, v, 4);
                    epos = next;
                    continue;
                }
                // The first one anchors the list: a placeholder header.
                len = 4;
                hidden = true;
            }
            // The map holds the low byte of the ID (memset() in the kernel).
            let id8 = (id & 0xff) as u8;
            let perm = if hidden { None } else { Perm::of_ecap(id8) };
            self.place(epos, len, id8, perm.as_ref());
            if hidden {
                let v = dword(&self.vconfig, epos) & (0xffc << 20);
                put(&mut self.vconfig, epos, v, 4);
            } else {
                ecaps += 1;
            }
            prev = Some(epos);
            epos = next;
        }
        if ecaps == 0 {
            put(&mut self.vconfig, CFG_SPACE, 0, 4);
        }
    }

    /// `vfio_find_cap_start()`: the first byte of the capability covering `pos`.
    pub(crate) fn cap_start(&self, pos: usize) -> usize {
        let id = self.map.get(pos).copied().unwrap_or(UNASSIGNED);
        if id == BASIC && pos < STD_HEADER {
            return 0;
        }
        let base = if pos >= CFG_SPACE {
            CFG_SPACE
        } else {
            STD_HEADER
        };
        let mut p = pos;
        while p > base && self.map.get(p - 1) == Some(&id) {
            p -= 1;
        }
        p
    }

    /// `vfio_pci_cap_remaining_dword()`: how many bytes from `pos` to the end of its dword
    /// belong to the same capability.
    pub(crate) fn remaining_in_dword(&self, pos: usize) -> usize {
        let id = self.map.get(pos).copied();
        let mut i = 1;
        while (pos + i) % 4 != 0 && self.map.get(pos + i).copied() == id {
            i += 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab e1000e's physical config space: PM at 0xc8, MSI at 0xd0 (64-bit, no mask),
    /// PCIe v1 (an RC-integrated endpoint) at 0xe0, MSI-X at 0xa0; AER at 0x100, DSN at 0x140.
    fn e1000e() -> Vec<u8> {
        let text = include_str!("../../../../fixtures/lab/e1000e.sysfs.lspci-x");
        let entry = pci_config::parse_dump(text).unwrap().remove(0);
        entry.space.physical().to_vec()
    }

    #[test]
    fn the_e1000e_capabilities_have_the_kernels_lengths() {
        let l = Layout::new(&e1000e());
        let span = |id: u8, from: usize| (from..).take_while(|&p| l.map[p] == id).count();
        assert_eq!(span(CAP_PM, 0xc8), 8);
        assert_eq!(span(CAP_MSI, 0xd0), 14);
        assert_eq!(l.map[0xde], UNASSIGNED);
        assert_eq!(span(CAP_EXP, 0xe0), 0xc, "v1 RC-integrated endpoint");
        assert_eq!(span(CAP_MSIX, 0xa0), 12);
        assert_eq!(span(ECAP_ERR, 0x100), 0x2c);
        assert_eq!(span(0x03, 0x140), 12);
        assert_eq!(
            (l.msi, l.msix, l.exp, l.pm),
            (Some(0xd0), Some(0xa0), Some(0xe0), Some(0xc8))
        );
        // The chunking helpers: MSI ends at 0xde inside its last dword.
        assert_eq!(l.remaining_in_dword(0xdc), 2);
        assert_eq!(l.cap_start(0xdd), 0xd0);
        assert_eq!(l.cap_start(0x3c), 0);
        assert_eq!(l.cap_start(0x14a), 0x140);
    }

    #[test]
    fn a_capability_without_a_length_is_unlinked() {
        let mut phys = vec![0u8; 256];
        phys[STATUS] = STATUS_CAP_LIST as u8;
        phys[CAP_PTR] = 0x40;
        // Slot ID (0x04, hidden), then MSI-X.
        phys[0x40] = 0x04;
        phys[0x41] = 0x50;
        phys[0x50] = CAP_MSIX;
        let l = Layout::new(&phys);
        assert_eq!(l.vconfig[CAP_PTR], 0x50);
        assert_eq!(l.map[0x40], UNASSIGNED);
        assert_eq!(l.map[0x50], CAP_MSIX);
    }
}
