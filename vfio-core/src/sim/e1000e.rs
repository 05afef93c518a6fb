// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The interrupt registers of QEMU 7.2's emulated e1000e (an Intel 82574) in BAR 0, so that the
//! same BAR writes raise real device interrupts on the simulator and in the lab (LAB.md).
//!
//! Modelled: ICR (0xC0; a write clears the bits written, a read returns it with bit 31 set
//! while an interrupt is asserted and clears it when one is asserted or nothing is enabled),
//! ICS (0xC8; sets causes), IMS (0xD0; a write enables causes, a read returns the enabled
//! ones), IMC (0xD8; disables causes), IVAR (0xE4; maps the RXQ0, RXQ1, TXQ0, TXQ1 and OTHER
//! causes, ICR bits 20-24, to MSI-X vectors: four bits each, vector in bits 0-2, bit 3
//! valid). How the device signals depends on which interrupt its config space enables:
//! MSI-X sends, for each cause an ICS write raises and IMS enables, the vector IVAR maps it to
//! (other causes go to the OTHER vector); MSI sends its message when an ICS write leaves a
//! cause both set and enabled; with neither, INTx is asserted while ICR & IMS is non-zero.
//!
//! Not modelled: every other register (they read back what was written), interrupt
//! throttling (ITR/EITR; QEMU 7.2 aborts if MSI-X is disabled while its 128 us throttling
//! timer runs, so a scenario waits after the last interrupt, LAB.md), auto-clear and
//! auto-mask (EIAC, IAM), and accesses to these registers that are not one aligned dword.

/// Interrupt Cause Read.
pub const ICR: u64 = 0xc0;
/// Interrupt Cause Set.
pub const ICS: u64 = 0xc8;
/// Interrupt Mask Set/Read.
pub const IMS: u64 = 0xd0;
/// Interrupt Mask Clear.
pub const IMC: u64 = 0xd8;
/// Interrupt Vector Allocation (MSI-X).
pub const IVAR: u64 = 0xe4;

/// ICR bit 31: an interrupt is asserted.
const ICR_ASSERTED: u32 = 1 << 31;
/// The causes IVAR maps: RXQ0, RXQ1, TXQ0, TXQ1, OTHER.
const QUEUE_CAUSES: [u32; 5] = [1 << 20, 1 << 21, 1 << 22, 1 << 23, 1 << 24];
/// The OTHER cause.
const OTHER: u32 = 1 << 24;

/// Which interrupt the device's config space has enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Neither MSI nor MSI-X: INTx.
    Intx,
    /// MSI enabled.
    Msi,
    /// MSI-X enabled.
    Msix,
}

/// What the device does after a register access.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Signals {
    /// The INTx level, in INTx mode.
    pub(crate) intx: Option<bool>,
    /// Send the MSI message.
    pub(crate) msi: bool,
    /// Send these MSI-X vectors.
    pub(crate) msix: Vec<u32>,
}

/// The modelled registers.
#[derive(Debug, Clone, Default)]
pub(crate) struct E1000eRegs {
    icr: u32,
    ims: u32,
    ivar: u32,
}

impl E1000eRegs {
    /// Whether the model owns the dword at `offset` of BAR `bar`.
    pub(crate) fn owns(bar: u8, offset: u64) -> bool {
        bar == 0 && matches!(offset, ICR | ICS | IMS | IMC | IVAR)
    }

    fn level(&self, mode: Mode) -> Option<bool> {
        (mode == Mode::Intx).then_some(self.icr & self.ims != 0)
    }

    /// A dword read at `offset` (one [`E1000eRegs::owns`]).
    pub(crate) fn read(&mut self, offset: u64, mode: Mode) -> (u32, Signals) {
        let value = match offset {
            ICR => {
                let v = self.icr;
                if v & ICR_ASSERTED != 0 || self.ims == 0 {
                    self.icr = 0;
                }
                v
            }
            IMS => self.ims,
            IVAR => self.ivar,
            _ => 0,
        };
        let signals = Signals {
            intx: self.level(mode),
            ..Signals::default()
        };
        (value, signals)
    }

    /// A dword write of `value` at `offset` (one [`E1000eRegs::owns`]).
    pub(crate) fn write(&mut self, offset: u64, value: u32, mode: Mode) -> Signals {
        let mut out = Signals::default();
        match offset {
            ICR => self.icr &= !value,
            IMS => self.ims |= value,
            IMC => self.ims &= !value,
            IVAR => self.ivar = value,
            ICS => {
                self.icr |= value;
                let raised = value & self.ims;
                if raised != 0 {
                    self.icr |= ICR_ASSERTED;
                    match mode {
                        Mode::Msix => out.msix = self.vectors(raised),
                        Mode::Msi => out.msi = true,
                        Mode::Intx => {}
                    }
                }
            }
            _ => {}
        }
        out.intx = self.level(mode);
        out
    }

    /// The MSI-X vectors IVAR maps `causes` to (valid entries only), in cause order.
    fn vectors(&self, causes: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut entry = |i: usize| {
            let field = (self.ivar >> (4 * i)) & 0xf;
            if field & 0x8 != 0 && !out.contains(&(field & 0x7)) {
                out.push(field & 0x7);
            }
        };
        for (i, cause) in QUEUE_CAUSES.iter().enumerate() {
            if causes & cause != 0 {
                entry(i);
            }
        }
        let others = causes & !QUEUE_CAUSES.iter().fold(0, |a, c| a | c) & !ICR_ASSERTED;
        if others != 0 && causes & OTHER == 0 {
            entry(4);
        }
        out
    }

    /// The value the memory behind the register shows after an access (what a mapping of
    /// BAR 0 reads there).
    pub(crate) fn shadow(&self, offset: u64) -> u32 {
        match offset {
            ICR => self.icr,
            IMS => self.ims,
            IVAR => self.ivar,
            _ => 0,
        }
    }

    /// The device's reset values.
    pub(crate) fn reset(&mut self) {
        *self = E1000eRegs::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ivar_maps_queue_causes_to_vectors() {
        let mut r = E1000eRegs::default();
        r.write(IVAR, 0x000c_ba98, Mode::Msix);
        r.write(IMS, 0x01f0_0000, Mode::Msix);
        let s = r.write(ICS, 1 << 22, Mode::Msix);
        assert_eq!(s.msix, vec![2]);
        assert_eq!(s.intx, None);
        // A cause IMS does not enable raises nothing.
        r.write(IMC, 1 << 21, Mode::Msix);
        assert!(r.write(ICS, 1 << 21, Mode::Msix).msix.is_empty());
        assert_eq!(r.write(ICS, 1 << 24 | 1 << 20, Mode::Msix).msix, vec![0, 4]);
    }

    #[test]
    fn intx_is_a_level_while_a_cause_is_set_and_enabled() {
        let mut r = E1000eRegs::default();
        assert_eq!(r.write(IMS, 1, Mode::Intx).intx, Some(false));
        assert_eq!(r.write(ICS, 1, Mode::Intx).intx, Some(true));
        assert_eq!(r.write(ICS, 1, Mode::Intx).intx, Some(true));
        assert_eq!(r.write(IMC, 1, Mode::Intx).intx, Some(false));
        assert_eq!(r.write(IMS, 1, Mode::Intx).intx, Some(true));
        let (icr, s) = r.read(ICR, Mode::Intx);
        assert_eq!(icr, ICR_ASSERTED | 1);
        assert_eq!(s.intx, Some(false), "the read cleared ICR");
        assert_eq!(r.read(ICR, Mode::Intx).0, 0);
    }
}
