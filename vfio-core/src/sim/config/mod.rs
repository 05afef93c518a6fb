// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The config region of the simulated device: vfio-pci's config-space virtualization (Linux
//! v6.12.117 drivers/vfio/pci/vfio_pci_config.c) over the emulated device's own config
//! registers.
//!
//! Every access is chopped as `vfio_config_do_rw()` chops it (aligned chunks of at most four
//! bytes inside one capability) and each chunk goes through the handler of the capability it
//! falls in: the standard header (`vfio_basic_config_read/write()`: BAR sizing on the virtual
//! BARs, COMMAND's INTx Disable virtualized and acting on INTx, memory/I/O enable recorded),
//! MSI (`vfio_msi_config_read/write()`), PM (a write to PMCSR changes the power state), PCI
//! Express (DEVCTL's FLR resets the function), AF, vendor-specific (raw), bytes no capability
//! covers (raw), every other capability read-only. Writes to bits the user may not write are
//! dropped without error.
//!
//! The physical side ([`PhysConfig`]) is the emulated device: its own write mask and
//! write-1-to-clear mask decide what a write that reaches it keeps (QEMU's `wmask` and
//! `w1cmask`).

mod layout;
mod perms;
mod phys;

pub(crate) use phys::PhysConfig;

use pci_config::BarKind;

pub(crate) use layout::{
    dword, word, Layout, CAP_AF, CAP_EXP, CAP_MSI, CAP_PCIX, CAP_PM, CAP_VNDR, CAP_VPD, CFG_SPACE,
    COMMAND, COMMAND_INTX_DISABLE, COMMAND_IO, COMMAND_MASTER, COMMAND_MEMORY, COMMAND_PARITY,
    COMMAND_SERR, ECAP_DVSEC, ECAP_ERR, ECAP_ID_MAX, ECAP_PWR, ECAP_VNDR, EXP_DEVCAP,
    EXP_DEVCAP_FLR, EXP_DEVCTL, EXP_DEVCTL_BCR_FLR, EXP_DEVCTL_PAYLOAD, EXP_DEVCTL_READRQ, INT_PIN,
    MSIX_FLAGS, MSIX_FLAGS_ENABLE, MSIX_FLAGS_MASKALL, MSIX_FLAGS_QSIZE, MSI_FLAGS,
    MSI_FLAGS_ENABLE, MSI_FLAGS_QMASK, MSI_FLAGS_QSIZE, PM_CAP_D1, PM_CAP_D2, PM_CTRL,
    PM_CTRL_PME_STATUS, PM_CTRL_STATE_MASK, PM_PMC, STATUS, STATUS_INTERRUPT, UNASSIGNED,
};
use layout::{AF_CAP, AF_CAP_FLR, AF_CAP_TP, AF_CTRL, AF_CTRL_FLR, BAR0, BASIC, ROM, STD_HEADER};

/// A BAR as the host sized it (`pci_resource_len()` and flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BarResource {
    pub(crate) kind: BarKind,
    pub(crate) size: u64,
    pub(crate) prefetchable: bool,
}

impl BarResource {
    /// `vfio_generate_bar_flags()`.
    fn flags(&self) -> u32 {
        match self.kind {
            BarKind::Io => 1,
            _ => {
                let mut v = 0;
                if self.prefetchable {
                    v |= 0x8;
                }
                if self.kind == BarKind::Mem64 {
                    v |= 0x4;
                }
                v
            }
        }
    }
}

/// Something a config write asks the rest of the device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// The virtual COMMAND INTx Disable bit now reads this (`vfio_pci_intx_mask()` or
    /// `vfio_pci_intx_unmask()` when it differs from `virq_disabled`).
    IntxDisable(bool),
    /// A function-level reset (`pci_try_reset_function()` from DEVCTL or AF FLR).
    FunctionReset,
}

/// The device's PCI power state (`pdev->current_state`), D0 to D3hot.
pub(crate) type PowerState = u8;
/// D3hot: memory decode is off for the user (`__vfio_pci_memory_enabled()`).
pub(crate) const D3HOT: PowerState = 3;

/// vfio-pci's view of one device's config space.
#[derive(Debug, Clone)]
pub(crate) struct VfioConfig {
    pub(crate) phys: PhysConfig,
    layout: Layout,
    bars: [Option<BarResource>; 6],
    rom: Option<u64>,
    bardirty: bool,
    /// `vdev->msi_qmax`: log2 of the vectors of the last MSI enable (0 until then).
    pub(crate) msi_qmax: u16,
    /// `pdev->no_command_memory` (SR-IOV VFs): the virtual MEM bit never disables the BARs.
    no_command_memory: bool,
    pub(crate) power: PowerState,
}

/// Where a chunk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handler {
    Basic,
    Msi,
    Pm,
    Exp,
    Af,
    /// `vfio_default_config_read/write()` (VPD, PCI-X, AER, power budgeting).
    Default,
    /// `vfio_direct_config_read()`, writes dropped (MSI-X and the rest).
    DirectRo,
    /// `vfio_direct_config_read()` and `vfio_raw_config_write()` (vendor-specific).
    DirectRaw,
    /// `unassigned_perms`: raw access.
    Raw,
}

fn is_bar(offset: usize) -> bool {
    (BAR0..BAR0 + 24).contains(&offset) || (ROM..ROM + 4).contains(&offset)
}

fn mask_of(len: usize) -> u32 {
    if len >= 4 {
        !0
    } else {
        (1u32 << (len * 8)) - 1
    }
}

/// The vfio-pci context a config access depends on.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IrqContext {
    /// MSI is the enabled interrupt type (`vdev->irq_type == VFIO_PCI_MSI_IRQ_INDEX`).
    pub(crate) msi_enabled: bool,
}

impl VfioConfig {
    /// vfio-pci's state right after `vfio_config_init()` for a device whose config registers
    /// are `phys`. `virtfn` gives an SR-IOV VF's IDs (`pdev->vendor`, `pdev->device`), which a
    /// VF's own registers do not hold; a VF's pin reads 0 and its memory enable is virtual.
    pub(crate) fn new(
        phys: PhysConfig,
        bars: [Option<BarResource>; 6],
        virtfn: Option<(u16, u16)>,
    ) -> Self {
        let mut layout = Layout::new(phys.bytes());
        let no_command_memory = virtfn.is_some();
        if let Some((vendor, device)) = virtfn {
            put(&mut layout.vconfig, 0, u32::from(vendor), 2);
            put(&mut layout.vconfig, 2, u32::from(device), 2);
            put(&mut layout.vconfig, INT_PIN, 0, 1);
            let cmd = word(&layout.vconfig, COMMAND) | COMMAND_MEMORY;
            put(&mut layout.vconfig, COMMAND, u32::from(cmd), 2);
        }
        VfioConfig {
            phys,
            layout,
            bars,
            rom: None,
            bardirty: true,
            msi_qmax: 0,
            no_command_memory,
            power: 0,
        }
    }

    /// Size of the config region (`pdev->cfg_size`).
    pub(crate) fn size(&self) -> usize {
        self.phys.bytes().len()
    }

    pub(crate) fn msi_cap(&self) -> Option<usize> {
        self.layout.msi
    }

    pub(crate) fn msix_cap(&self) -> Option<usize> {
        self.layout.msix
    }

    pub(crate) fn exp_cap(&self) -> Option<usize> {
        self.layout.exp
    }

    pub(crate) fn pm_cap(&self) -> Option<usize> {
        self.layout.pm
    }

    /// The interrupt pin the user sees (INTx has a vector only with a pin).
    pub(crate) fn virtual_pin(&self) -> u8 {
        self.layout.vconfig.get(INT_PIN).copied().unwrap_or(0)
    }

    /// The virtual COMMAND register (vconfig), as vfio-pci keeps it.
    pub(crate) fn virtual_command(&self) -> u16 {
        word(&self.layout.vconfig, COMMAND)
    }

    /// The device's physical COMMAND register.
    pub(crate) fn physical_command(&self) -> u16 {
        word(self.phys.bytes(), COMMAND)
    }

    /// `__vfio_pci_memory_enabled()`: not in D3hot, and memory enable set (virtually), or a
    /// VF.
    pub(crate) fn memory_enabled(&self) -> bool {
        self.power < D3HOT
            && (self.no_command_memory || self.virtual_command() & COMMAND_MEMORY != 0)
    }

    /// Read `buf.len()` bytes at `pos`; the caller checked the bounds.
    pub(crate) fn read(&mut self, mut pos: usize, buf: &mut [u8], ctx: IrqContext) {
        let mut done = 0;
        while done < buf.len() {
            let count = self.chunk(pos, buf.len() - done);
            let v = self.read_chunk(pos, count, ctx);
            for (i, b) in v.to_le_bytes().iter().take(count).enumerate() {
                if let Some(slot) = buf.get_mut(done + i) {
                    *slot = *b;
                }
            }
            done += count;
            pos += count;
        }
    }

    /// Write `data` at `pos`; the caller checked the bounds. Returns what the rest of the
    /// device must do, in order.
    pub(crate) fn write(&mut self, mut pos: usize, data: &[u8], ctx: IrqContext) -> Vec<Effect> {
        let mut effects = Vec::new();
        let mut done = 0;
        while done < data.len() {
            let count = self.chunk(pos, data.len() - done);
            let mut v = [0u8; 4];
            for (i, slot) in v.iter_mut().take(count).enumerate() {
                *slot = data.get(done + i).copied().unwrap_or(0);
            }
            self.write_chunk(pos, count, u32::from_le_bytes(v), ctx, &mut effects);
            done += count;
            pos += count;
        }
        effects
    }

    /// The length of the chunk starting at `pos` (vfio_config_do_rw()).
    fn chunk(&self, pos: usize, count: usize) -> usize {
        let count = count.min(self.layout.remaining_in_dword(pos));
        if count >= 4 && pos % 4 == 0 {
            4
        } else if count >= 2 && pos % 2 == 0 {
            2
        } else {
            1
        }
    }

    /// The handler and capability start for the byte at `pos`.
    fn handler(&self, pos: usize) -> (Handler, usize) {
        let id = self.layout.map.get(pos).copied().unwrap_or(UNASSIGNED);
        if id == UNASSIGNED {
            return (Handler::Raw, pos);
        }
        let start = self.layout.cap_start(pos);
        if pos >= CFG_SPACE {
            let h = if u16::from(id) > ECAP_ID_MAX {
                Handler::DirectRo
            } else {
                match id {
                    ECAP_ERR | ECAP_PWR => Handler::Default,
                    ECAP_VNDR | ECAP_DVSEC => Handler::DirectRaw,
                    _ => Handler::DirectRo,
                }
            };
            return (h, start);
        }
        let h = match id {
            BASIC if pos < STD_HEADER => Handler::Basic,
            CAP_MSI => Handler::Msi,
            CAP_PM => Handler::Pm,
            CAP_EXP => Handler::Exp,
            CAP_AF => Handler::Af,
            CAP_VPD | CAP_PCIX => Handler::Default,
            CAP_VNDR => Handler::DirectRaw,
            _ => Handler::DirectRo,
        };
        (h, start)
    }

    fn perm(&self, v: &[u8], pos: usize, count: usize) -> u32 {
        let mut b = [0u8; 4];
        for (i, slot) in b.iter_mut().take(count).enumerate() {
            *slot = v.get(pos + i).copied().unwrap_or(0);
        }
        u32::from_le_bytes(b)
    }

    fn vread(&self, pos: usize, count: usize) -> u32 {
        self.perm(&self.layout.vconfig, pos, count)
    }

    fn vwrite(&mut self, pos: usize, count: usize, value: u32) {
        put(&mut self.layout.vconfig, pos, value, count);
    }

    /// vfio_default_config_read().
    fn default_read(&self, pos: usize, count: usize) -> u32 {
        let val = self.vread(pos, count);
        let virt = self.perm(&self.layout.virt, pos, count);
        if virt == mask_of(count) {
            return val;
        }
        (self.phys.read(pos, count) & !virt) | (val & virt)
    }

    /// vfio_default_config_write().
    fn default_write(&mut self, pos: usize, count: usize, val: u32) {
        let write = self.perm(&self.layout.write, pos, count);
        if write == 0 {
            return;
        }
        let virt = self.perm(&self.layout.virt, pos, count);
        if write & virt != 0 {
            let v = (self.vread(pos, count) & !(write & virt)) | (val & write & virt);
            self.vwrite(pos, count, v);
        }
        if write & !virt != 0 {
            let p = (self.phys.read(pos, count) & !(write & !virt)) | (val & write & !virt);
            self.phys.write(pos, count, p);
        }
    }

    /// vfio_direct_config_read(): the device's bytes, with the capability's ID and next
    /// pointer (an extended capability's whole header) from the virtual copy.
    fn direct_read(&self, pos: usize, count: usize, offset: usize) -> u32 {
        let mut val = self.phys.read(pos, count);
        if pos >= CFG_SPACE {
            if offset < 4 {
                val = self.vread(pos, count);
            }
        } else if pos >= STD_HEADER {
            if offset == 0 && count > 1 {
                let n = count.min(2);
                let keep = !mask_of(n);
                val = (val & keep) | (self.vread(pos, n) & mask_of(n));
            } else if offset == 1 {
                val = (val & !0xff) | (self.vread(pos, 1) & 0xff);
            }
        }
        val & mask_of(count)
    }

    fn read_chunk(&mut self, pos: usize, count: usize, _ctx: IrqContext) -> u32 {
        let (h, start) = self.handler(pos);
        let offset = pos - start;
        match h {
            Handler::Basic => {
                if is_bar(offset) {
                    self.bar_fixup();
                }
                let mut v = self.default_read(pos, count);
                if offset == COMMAND && self.no_command_memory {
                    v |= u32::from(self.virtual_command() & COMMAND_MEMORY);
                }
                v
            }
            Handler::Msi => {
                // vfio_msi_config_read(): Multiple Message Capable is what the last MSI
                // enable got.
                if offset <= MSI_FLAGS && offset + count >= MSI_FLAGS {
                    let flags = (word(&self.layout.vconfig, start + MSI_FLAGS) & !MSI_FLAGS_QMASK)
                        | (self.msi_qmax << 1);
                    self.vwrite(start + MSI_FLAGS, 2, u32::from(flags));
                }
                self.default_read(pos, count)
            }
            Handler::Pm | Handler::Exp | Handler::Af | Handler::Default => {
                self.default_read(pos, count)
            }
            Handler::DirectRo | Handler::DirectRaw => self.direct_read(pos, count, offset),
            Handler::Raw => self.phys.read(pos, count),
        }
    }

    fn write_chunk(
        &mut self,
        pos: usize,
        count: usize,
        val: u32,
        ctx: IrqContext,
        effects: &mut Vec<Effect>,
    ) {
        let (h, start) = self.handler(pos);
        let offset = pos - start;
        match h {
            Handler::Basic => self.basic_write(offset, count, val, effects),
            Handler::Msi => self.msi_write(pos, start, offset, count, val, ctx),
            Handler::Pm => {
                self.default_write(pos, count, val);
                if offset == PM_CTRL {
                    self.set_power_state((val as u16 & PM_CTRL_STATE_MASK) as u8);
                }
            }
            Handler::Exp => self.exp_write(pos, start, count, val, effects),
            Handler::Af => {
                self.default_write(pos, count, val);
                let ctrl = start + AF_CTRL;
                let v = self.vread(ctrl, 1) as u8;
                if v & AF_CTRL_FLR != 0 {
                    self.vwrite(ctrl, 1, u32::from(v & !AF_CTRL_FLR));
                    let cap = self.phys.read(start + AF_CAP, 1) as u8;
                    if cap & AF_CAP_FLR != 0 && cap & AF_CAP_TP != 0 {
                        effects.push(Effect::FunctionReset);
                    }
                }
            }
            Handler::Default => self.default_write(pos, count, val),
            Handler::DirectRo => {}
            Handler::DirectRaw | Handler::Raw => self.phys.write(pos, count, val),
        }
    }

    /// vfio_basic_config_write().
    fn basic_write(&mut self, offset: usize, count: usize, val: u32, effects: &mut Vec<Effect>) {
        let new_cmd = val as u16;
        self.default_write(offset, count, val);
        if offset == COMMAND {
            // Memory and I/O enable are recorded in vconfig too.
            let mask = COMMAND_MEMORY | COMMAND_IO;
            let cmd = (self.virtual_command() & !mask) | (new_cmd & mask);
            self.vwrite(COMMAND, 2, u32::from(cmd));
        }
        if (COMMAND..=COMMAND + 1).contains(&offset) {
            let disabled = self.virtual_command() & COMMAND_INTX_DISABLE != 0;
            effects.push(Effect::IntxDisable(disabled));
        }
        if is_bar(offset) {
            self.bardirty = true;
        }
    }

    /// vfio_msi_config_write(): the enable bit only sticks while MSI is enabled through
    /// SET_IRQS, Multiple Message Enable is clamped to what that enable got, and the flags go
    /// to the device too.
    fn msi_write(
        &mut self,
        pos: usize,
        start: usize,
        offset: usize,
        count: usize,
        val: u32,
        ctx: IrqContext,
    ) {
        self.default_write(pos, count, val);
        if offset <= MSI_FLAGS && offset + count >= MSI_FLAGS {
            let at = start + MSI_FLAGS;
            let mut flags = word(&self.layout.vconfig, at);
            if !ctx.msi_enabled {
                flags &= !MSI_FLAGS_ENABLE;
            }
            if (flags & MSI_FLAGS_QSIZE) >> 4 > self.msi_qmax {
                flags = (flags & !MSI_FLAGS_QSIZE) | (self.msi_qmax << 4);
            }
            self.vwrite(at, 2, u32::from(flags));
            self.phys.write(at, 2, u32::from(flags));
        }
    }

    /// vfio_exp_config_write(): FLR resets the function (when the device has FLR) and always
    /// reads back 0; a new Max Read Request Size reaches the device, no lower than its MPS.
    fn exp_write(
        &mut self,
        pos: usize,
        start: usize,
        count: usize,
        val: u32,
        effects: &mut Vec<Effect>,
    ) {
        let ctrl = start + EXP_DEVCTL;
        let readrq = word(&self.layout.vconfig, ctrl) & EXP_DEVCTL_READRQ;
        self.default_write(pos, count, val);
        let v = word(&self.layout.vconfig, ctrl);
        if v & EXP_DEVCTL_BCR_FLR != 0 {
            self.vwrite(ctrl, 2, u32::from(v & !EXP_DEVCTL_BCR_FLR));
            if self.phys.read(start + EXP_DEVCAP, 4) & EXP_DEVCAP_FLR != 0 {
                effects.push(Effect::FunctionReset);
            }
        }
        let v = word(&self.layout.vconfig, ctrl);
        if readrq != v & EXP_DEVCTL_READRQ {
            // pcie_set_readrq(max(128 << field, pcie_get_mps())).
            let phys = self.phys.read(ctrl, 2) as u16;
            let mps = (phys & EXP_DEVCTL_PAYLOAD) >> 5;
            let field = ((v & EXP_DEVCTL_READRQ) >> 12).max(mps);
            let new = (phys & !EXP_DEVCTL_READRQ) | (field << 12);
            self.phys.write(ctrl, 2, u32::from(new));
        }
    }

    /// vfio_pci_set_power_state() through pci_set_power_state(): D1 and D2 only where the
    /// device supports them; the state is what the device's PMCSR then reads.
    pub(crate) fn set_power_state(&mut self, state: PowerState) {
        let Some(pm) = self.layout.pm else { return };
        let pmc = self.phys.read(pm + PM_PMC, 2) as u16;
        if (state == 1 && pmc & PM_CAP_D1 == 0) || (state == 2 && pmc & PM_CAP_D2 == 0) {
            return;
        }
        let ctrl = self.phys.read(pm + PM_CTRL, 2) as u16;
        let new = (ctrl & !(PM_CTRL_STATE_MASK | PM_CTRL_PME_STATUS)) | u16::from(state);
        self.phys.write(pm + PM_CTRL, 2, u32::from(new));
        self.power = (self.phys.read(pm + PM_CTRL, 2) as u16 & PM_CTRL_STATE_MASK) as u8;
    }

    /// vfio_bar_fixup(): the virtual BARs read as the host sized them.
    fn bar_fixup(&mut self) {
        if !self.bardirty {
            return;
        }
        let mut i = 0;
        while i < 6 {
            let at = BAR0 + 4 * i;
            let Some(res) = self.bars.get(i).copied().flatten() else {
                self.vwrite(at, 4, 0);
                i += 1;
                continue;
            };
            let mask = !(res.size.wrapping_sub(1));
            let v = (self.vread(at, 4) & mask as u32) | res.flags();
            self.vwrite(at, 4, v);
            // As the kernel does, bit 2 of the fixed-up value decides whether the next
            // register is this BAR's upper half.
            if v & 0x4 != 0 {
                let hi = self.vread(at + 4, 4) & (mask >> 32) as u32;
                self.vwrite(at + 4, 4, hi);
                i += 1;
            }
            i += 1;
        }
        match self.rom {
            Some(len) => {
                let mask = !(len.wrapping_sub(1)) as u32 | 1;
                let v = self.vread(ROM, 4) & mask;
                self.vwrite(ROM, 4, v);
            }
            None => self.vwrite(ROM, 4, 0),
        }
        self.bardirty = false;
    }
}

fn put(v: &mut [u8], at: usize, value: u32, len: usize) {
    for (i, b) in value.to_le_bytes().iter().take(len).enumerate() {
        if let Some(slot) = v.get_mut(at + i) {
            *slot = *b;
        }
    }
}
