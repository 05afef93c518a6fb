// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Which interrupt mechanism the guest has enabled: none, INTx, MSI or MSI-X.
//!
//! The guest selects the mode with three bits spread over config space: COMMAND.Interrupt
//! Disable (INTx), the MSI capability's Enable and the MSI-X capability's Enable. The PCI
//! specification forbids enabling MSI and MSI-X at the same time and leaves the result
//! undefined. Here it is defined:
//!
//! * **the enable that arrives second is refused**: its bit is forced back to zero in the
//!   emulated capability (the guest reads back 0) and the mode does not change;
//! * if both arrive together (only possible through a restored state), MSI-X wins and MSI's
//!   enable is refused;
//! * INTx is the mode when neither MSI nor MSI-X is enabled, the device has an interrupt pin
//!   and COMMAND.Interrupt Disable is clear.

/// The interrupt mechanism in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IrqMode {
    /// No interrupts.
    #[default]
    None,
    /// Legacy pin interrupt.
    Intx,
    /// MSI (the capability at 0x05).
    Msi,
    /// MSI-X (the capability at 0x11).
    Msix,
}

/// The guest's request, as the three control bits currently read in config space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModeBits {
    /// MSI Enable as the guest wrote it.
    pub msi_enable: bool,
    /// MSI-X Enable as the guest wrote it.
    pub msix_enable: bool,
    /// COMMAND bit 10, Interrupt Disable.
    pub intx_disable: bool,
    /// Whether the device has an interrupt pin (Interrupt Pin register non-zero).
    pub has_intx: bool,
}

/// The outcome of [`resolve_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeDecision {
    /// The mode to run in.
    pub mode: IrqMode,
    /// The MSI Enable bit was refused (must read back as 0).
    pub msi_refused: bool,
    /// The MSI-X Enable bit was refused (must read back as 0).
    pub msix_refused: bool,
}

/// Decides the interrupt mode from the current mode and the guest's bits (see the module docs).
pub fn resolve_mode(current: IrqMode, bits: ModeBits) -> ModeDecision {
    let both = bits.msi_enable && bits.msix_enable;
    let (mode, msi_refused, msix_refused) = if both {
        match current {
            IrqMode::Msi => (IrqMode::Msi, false, true),
            _ => (IrqMode::Msix, true, false),
        }
    } else if bits.msix_enable {
        (IrqMode::Msix, false, false)
    } else if bits.msi_enable {
        (IrqMode::Msi, false, false)
    } else if bits.has_intx && !bits.intx_disable {
        (IrqMode::Intx, false, false)
    } else {
        (IrqMode::None, false, false)
    };
    ModeDecision {
        mode,
        msi_refused,
        msix_refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(msi: bool, msix: bool) -> ModeBits {
        ModeBits {
            msi_enable: msi,
            msix_enable: msix,
            intx_disable: false,
            has_intx: true,
        }
    }

    #[test]
    fn single_enables_select_their_mode() {
        assert_eq!(
            resolve_mode(IrqMode::None, bits(true, false)).mode,
            IrqMode::Msi
        );
        assert_eq!(
            resolve_mode(IrqMode::Intx, bits(false, true)).mode,
            IrqMode::Msix
        );
        assert_eq!(
            resolve_mode(IrqMode::Msix, bits(false, false)).mode,
            IrqMode::Intx
        );
    }

    #[test]
    fn second_enable_is_refused() {
        let d = resolve_mode(IrqMode::Msix, bits(true, true));
        assert_eq!(d.mode, IrqMode::Msix);
        assert!(d.msi_refused && !d.msix_refused);
        let d = resolve_mode(IrqMode::Msi, bits(true, true));
        assert_eq!(d.mode, IrqMode::Msi);
        assert!(d.msix_refused && !d.msi_refused);
    }

    #[test]
    fn simultaneous_enable_prefers_msix() {
        let d = resolve_mode(IrqMode::None, bits(true, true));
        assert_eq!(d.mode, IrqMode::Msix);
        assert!(d.msi_refused);
    }

    #[test]
    fn intx_needs_a_pin_and_no_disable() {
        let mut b = bits(false, false);
        b.intx_disable = true;
        assert_eq!(resolve_mode(IrqMode::Intx, b).mode, IrqMode::None);
        b.intx_disable = false;
        b.has_intx = false;
        assert_eq!(resolve_mode(IrqMode::None, b).mode, IrqMode::None);
    }
}
