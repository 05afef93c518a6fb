// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vfio-pci's permission tables: for each capability it knows, which bits are virtual and
//! which the user may write, as the `init_pci_cap_*_perm()` and `init_pci_ext_cap_*_perm()`
//! functions of Linux v6.12.117 drivers/vfio/pci/vfio_pci_config.c set them (register
//! offsets and bits from include/uapi/linux/pci_regs.h of the same version).

use super::layout::{
    word, Bytes, AF_CTRL, AF_CTRL_FLR, BAR0, CAP_AF, CAP_EXP, CAP_MSI, CAP_PCIX, CAP_PM, CAP_PTR,
    CAP_VPD, COMMAND, COMMAND_INTX_DISABLE, ECAP_ERR, ECAP_PWR, EXP_DEVCTL, EXP_DEVCTL2,
    EXP_DEVCTL2_ARI, EXP_DEVCTL_BCR_FLR, EXP_DEVCTL_PAYLOAD, EXP_DEVCTL_PHANTOM, EXP_DEVCTL_READRQ,
    INT_LINE, INT_PIN, MSI_FLAGS, MSI_FLAGS_64BIT, MSI_FLAGS_MASKBIT, PM_CAP_PME_MASK, PM_CTRL,
    PM_CTRL_PME_ENABLE, PM_CTRL_PME_STATUS, PM_CTRL_STATE_MASK, PM_PMC, ROM, STATUS,
    STATUS_CAP_LIST, STD_HEADER,
};

/// Write `len` little-endian bytes of `value` into `v` at `at` (ignoring what falls outside).
pub(super) fn put(v: &mut [u8], at: usize, value: u32, len: usize) {
    for (i, b) in value.to_le_bytes().iter().take(len).enumerate() {
        if let Some(slot) = v.get_mut(at + i) {
            *slot = *b;
        }
    }
}

/// One capability's permission bits (`struct perm_bits` virt and write, by offset), as the
/// `init_pci_cap_*_perm()` functions set them.
pub(super) struct Perm {
    pub(super) virt: Vec<u8>,
    pub(super) write: Vec<u8>,
}

impl Perm {
    fn new(len: usize) -> Self {
        // alloc_perm_bits() rounds up to a dword: "All Readable, None Writeable, None
        // Virtualized".
        let len = len.next_multiple_of(4);
        Perm {
            virt: vec![0; len],
            write: vec![0; len],
        }
    }

    fn set(&mut self, off: usize, len: usize, virt: u32, write: u32) {
        put(&mut self.virt, off, virt, len);
        put(&mut self.write, off, write, len);
    }

    /// init_pci_cap_basic_perm().
    pub(super) fn basic() -> Self {
        let mut p = Perm::new(STD_HEADER);
        p.set(0x00, 2, 0xffff, 0); // vendor: virtualized for SR-IOV functions
        p.set(0x02, 2, 0xffff, 0); // device
        p.set(COMMAND, 2, u32::from(COMMAND_INTX_DISABLE), 0xffff);
        p.set(STATUS, 2, u32::from(STATUS_CAP_LIST), 0);
        p.set(0x0c, 1, 0, 0xff); // cache line size
        p.set(0x0d, 1, 0, 0xff); // latency timer
        p.set(0x0f, 1, 0, 0xff); // BIST
        for bar in 0..6 {
            p.set(BAR0 + 4 * bar, 4, !0, !0);
        }
        p.set(ROM, 4, !0, !0);
        p.set(CAP_PTR, 1, 0xff, 0);
        p.set(INT_LINE, 1, 0xff, 0xff);
        p.set(INT_PIN, 1, 0xff, 0);
        p
    }

    /// The perms of capability `id` with `len` bytes at `pos`, `None` for the capabilities
    /// that use the shared read-only table (`cap_perms[]` entries with no `virt`/`write`).
    pub(super) fn of_cap(phys: &Bytes, id: u8, pos: usize, len: usize) -> Option<Self> {
        let next = |p: &mut Perm| p.set(1, 1, 0xff, 0);
        match id {
            CAP_PM => {
                let mut p = Perm::new(8);
                next(&mut p);
                p.set(PM_PMC, 2, u32::from(PM_CAP_PME_MASK), 0);
                let pme = u32::from(PM_CTRL_PME_ENABLE | PM_CTRL_PME_STATUS);
                p.set(PM_CTRL, 4, pme, !(pme | u32::from(PM_CTRL_STATE_MASK)));
                Some(p)
            }
            CAP_VPD => {
                let mut p = Perm::new(8);
                next(&mut p);
                p.set(2, 2, 0xffff, 0xffff); // PCI_VPD_ADDR
                p.set(4, 4, !0, !0); // PCI_VPD_DATA
                Some(p)
            }
            CAP_PCIX => {
                let mut p = Perm::new(24);
                next(&mut p);
                p.set(2, 2, 0, 0xffff); // PCI_X_CMD
                p.set(8, 4, 0, !0); // PCI_X_ECC_CSR
                Some(p)
            }
            CAP_EXP => {
                let mut p = Perm::new(0x34);
                next(&mut p);
                let virt = EXP_DEVCTL_BCR_FLR | EXP_DEVCTL_PAYLOAD | EXP_DEVCTL_READRQ;
                p.set(
                    EXP_DEVCTL,
                    2,
                    u32::from(virt),
                    u32::from(!EXP_DEVCTL_PHANTOM),
                );
                p.set(EXP_DEVCTL2, 2, 0, u32::from(!EXP_DEVCTL2_ARI));
                Some(p)
            }
            CAP_AF => {
                let mut p = Perm::new(6);
                next(&mut p);
                p.set(AF_CTRL, 1, u32::from(AF_CTRL_FLR), u32::from(AF_CTRL_FLR));
                Some(p)
            }
            CAP_MSI => {
                // init_pci_cap_msi_perm(), per device from its flags.
                let flags = word(phys, pos + MSI_FLAGS);
                let mut p = Perm::new(len);
                next(&mut p);
                p.set(MSI_FLAGS, 1, 0xff, 0xff);
                p.set(4, 4, !0, !0); // address low
                if flags & MSI_FLAGS_64BIT != 0 {
                    p.set(8, 4, !0, !0); // address high
                    p.set(0x0c, 2, 0xffff, 0xffff); // data
                    if flags & MSI_FLAGS_MASKBIT != 0 {
                        p.set(0x10, 4, 0, !0); // mask
                        p.set(0x14, 4, 0, !0); // pending
                    }
                } else {
                    p.set(8, 2, 0xffff, 0xffff);
                    if flags & MSI_FLAGS_MASKBIT != 0 {
                        p.set(0x0c, 4, 0, !0);
                        p.set(0x10, 4, 0, !0);
                    }
                }
                Some(p)
            }
            _ => None,
        }
    }

    /// The perms of extended capability `id`, `None` for the shared read-only table.
    pub(super) fn of_ecap(id: u8) -> Option<Self> {
        match id {
            ECAP_ERR => {
                let mut p = Perm::new(0x2c);
                p.set(0, 4, !0, 0);
                let unc: u32 = 0x0000_0001 // UND
                    | 0x0000_0010 // DLP
                    | 0x0000_0020 // SURPDN
                    | 0x0000_1000 // POISON_TLP
                    | 0x0000_2000 // FCP
                    | 0x0000_4000 // COMP_TIME
                    | 0x0000_8000 // COMP_ABORT
                    | 0x0001_0000 // UNX_COMP
                    | 0x0002_0000 // RX_OVER
                    | 0x0004_0000 // MALF_TLP
                    | 0x0008_0000 // ECRC
                    | 0x0010_0000 // UNSUP
                    | 0x0020_0000 // ACSV
                    | 0x0040_0000 // INTN
                    | 0x0080_0000 // MCBTLP
                    | 0x0100_0000 // ATOMEG
                    | 0x0200_0000; // TLPPRE
                for reg in [0x04, 0x08, 0x0c] {
                    p.set(reg, 4, 0, unc); // UNCOR_STATUS, UNCOR_MASK, UNCOR_SEVER
                }
                let cor: u32 = 0x0000_0001 // RCVR
                    | 0x0000_0040 // BAD_TLP
                    | 0x0000_0080 // BAD_DLLP
                    | 0x0000_0100 // REP_ROLL
                    | 0x0000_1000 // REP_TIMER
                    | 0x0000_2000 // ADV_NFAT
                    | 0x0000_4000 // INTERNAL
                    | 0x0000_8000; // LOG_OVER
                p.set(0x10, 4, 0, cor); // COR_STATUS
                p.set(0x14, 4, 0, cor); // COR_MASK
                p.set(0x18, 4, 0, 0x0000_0040 | 0x0000_0100); // CAP: ECRC_GENE | ECRC_CHKE
                Some(p)
            }
            ECAP_PWR => {
                let mut p = Perm::new(0x10);
                p.set(0, 4, !0, 0);
                p.set(0x08, 1, 0, 0xff); // PCI_PWR_DATA
                Some(p)
            }
            _ => None,
        }
    }
}
