// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The MSI messages the scripted guest programs, shared by the library runs and the raw floor
//! so that both install the same routes.

/// First GSI above the IOAPIC's 24 pins: where the raw floor puts MSI routes.
pub const FIRST_MSI_GSI: u32 = 24;

/// One MSI-X table entry's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Message address (x86: 0xfee0_0000 | destination APIC id << 12).
    pub address: u64,
    /// Message data (x86: the vector, fixed delivery, edge).
    pub data: u32,
}

/// What a guest driver writes into vector `vector` of VF `vf`: spread over eight
/// destinations, a distinct IDT vector per entry within a VF.
pub fn guest_message(vf: u32, vector: u32) -> Message {
    let dest = u64::from((vf + vector) % 8);
    Message {
        address: 0xfee0_0000 | (dest << 12),
        data: 0x30 + (vector % 0xc0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_target_the_lapic_window_with_valid_vectors() {
        for vf in 0..8 {
            for v in 0..2048 {
                let m = guest_message(vf, v);
                assert_eq!(m.address & 0xfff0_0000, 0xfee0_0000);
                assert!((0x30..0xf0).contains(&m.data));
            }
        }
    }
}
