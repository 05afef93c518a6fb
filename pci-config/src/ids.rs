// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Capability IDs (PCI Local Bus and PCI Express specifications) and their names.

/// Power management.
pub const CAP_PM: u8 = 0x01;
/// AGP.
pub const CAP_AGP: u8 = 0x02;
/// Vital product data.
pub const CAP_VPD: u8 = 0x03;
/// Slot identification.
pub const CAP_SLOT_ID: u8 = 0x04;
/// Message signalled interrupts.
pub const CAP_MSI: u8 = 0x05;
/// CompactPCI hot swap.
pub const CAP_CHSWP: u8 = 0x06;
/// PCI-X.
pub const CAP_PCIX: u8 = 0x07;
/// HyperTransport.
pub const CAP_HT: u8 = 0x08;
/// Vendor specific.
pub const CAP_VENDOR: u8 = 0x09;
/// Debug port.
pub const CAP_DEBUG: u8 = 0x0a;
/// CompactPCI central resource control.
pub const CAP_CCRC: u8 = 0x0b;
/// PCI hot-plug.
pub const CAP_HOTPLUG: u8 = 0x0c;
/// Bridge subsystem vendor ID.
pub const CAP_SSVID: u8 = 0x0d;
/// AGP 8x.
pub const CAP_AGP3: u8 = 0x0e;
/// Secure device.
pub const CAP_SECURE: u8 = 0x0f;
/// PCI Express.
pub const CAP_EXP: u8 = 0x10;
/// MSI-X.
pub const CAP_MSIX: u8 = 0x11;
/// Serial ATA data/index configuration.
pub const CAP_SATA: u8 = 0x12;
/// Advanced features.
pub const CAP_AF: u8 = 0x13;
/// Enhanced allocation.
pub const CAP_EA: u8 = 0x14;
/// Flattening portal bridge.
pub const CAP_FPB: u8 = 0x15;

/// Advanced error reporting.
pub const EXT_AER: u16 = 0x0001;
/// Virtual channel.
pub const EXT_VC: u16 = 0x0002;
/// Device serial number.
pub const EXT_DSN: u16 = 0x0003;
/// Power budgeting.
pub const EXT_PWR: u16 = 0x0004;
/// Vendor-specific extended capability.
pub const EXT_VSEC: u16 = 0x000b;
/// Access control services.
pub const EXT_ACS: u16 = 0x000d;
/// Alternative routing-ID interpretation.
pub const EXT_ARI: u16 = 0x000e;
/// Address translation services.
pub const EXT_ATS: u16 = 0x000f;
/// Single root I/O virtualization.
pub const EXT_SRIOV: u16 = 0x0010;
/// Resizable BAR.
pub const EXT_REBAR: u16 = 0x0015;
/// Latency tolerance reporting.
pub const EXT_LTR: u16 = 0x0018;
/// Secondary PCI Express.
pub const EXT_SECPCI: u16 = 0x0019;
/// Process address space ID.
pub const EXT_PASID: u16 = 0x001b;
/// L1 PM substates.
pub const EXT_L1SS: u16 = 0x001e;

/// Human-readable name of a standard capability ID.
pub fn standard_name(id: u8) -> &'static str {
    match id {
        0x00 => "Null",
        CAP_PM => "Power Management",
        CAP_AGP => "AGP",
        CAP_VPD => "Vital Product Data",
        CAP_SLOT_ID => "Slot ID",
        CAP_MSI => "MSI",
        CAP_CHSWP => "CompactPCI Hot Swap",
        CAP_PCIX => "PCI-X",
        CAP_HT => "HyperTransport",
        CAP_VENDOR => "Vendor Specific",
        CAP_DEBUG => "Debug Port",
        CAP_CCRC => "CompactPCI Central Resource Control",
        CAP_HOTPLUG => "PCI Hot-Plug",
        CAP_SSVID => "Bridge Subsystem Vendor ID",
        CAP_AGP3 => "AGP 8x",
        CAP_SECURE => "Secure Device",
        CAP_EXP => "PCI Express",
        CAP_MSIX => "MSI-X",
        CAP_SATA => "SATA Configuration",
        CAP_AF => "Advanced Features",
        CAP_EA => "Enhanced Allocation",
        CAP_FPB => "Flattening Portal Bridge",
        _ => "Unknown",
    }
}

/// Human-readable name of an extended capability ID.
pub fn extended_name(id: u16) -> &'static str {
    match id {
        0x0000 => "Null",
        EXT_AER => "Advanced Error Reporting",
        EXT_VC => "Virtual Channel",
        EXT_DSN => "Device Serial Number",
        EXT_PWR => "Power Budgeting",
        0x0005 => "Root Complex Link Declaration",
        0x0006 => "Root Complex Internal Link Control",
        0x0007 => "Root Complex Event Collector Endpoint Association",
        0x0008 => "Multi-Function Virtual Channel",
        0x0009 => "Virtual Channel (MFVC)",
        0x000a => "Root Complex Register Block",
        EXT_VSEC => "Vendor Specific Extended",
        0x000c => "Configuration Access Correlation",
        EXT_ACS => "Access Control Services",
        EXT_ARI => "Alternative Routing-ID Interpretation",
        EXT_ATS => "Address Translation Services",
        EXT_SRIOV => "Single Root I/O Virtualization",
        0x0011 => "Multi-Root I/O Virtualization",
        0x0012 => "Multicast",
        0x0013 => "Page Request Interface",
        0x0014 => "AMD Reserved",
        EXT_REBAR => "Resizable BAR",
        0x0016 => "Dynamic Power Allocation",
        0x0017 => "TPH Requester",
        EXT_LTR => "Latency Tolerance Reporting",
        EXT_SECPCI => "Secondary PCI Express",
        0x001a => "Protocol Multiplexing",
        EXT_PASID => "Process Address Space ID",
        0x001c => "LN Requester",
        0x001d => "Downstream Port Containment",
        EXT_L1SS => "L1 PM Substates",
        0x001f => "Precision Time Measurement",
        0x0020 => "PCI Express over M-PHY",
        0x0021 => "FRS Queueing",
        0x0022 => "Readiness Time Reporting",
        0x0023 => "Designated Vendor-Specific",
        0x0024 => "VF Resizable BAR",
        0x0025 => "Data Link Feature",
        0x0026 => "Physical Layer 16.0 GT/s",
        0x0027 => "Lane Margining at the Receiver",
        0x0028 => "Hierarchy ID",
        0x0029 => "Native PCIe Enclosure Management",
        0x002a => "Physical Layer 32.0 GT/s",
        0x002b => "Alternate Protocol",
        0x002c => "System Firmware Intermediary",
        _ => "Unknown",
    }
}
