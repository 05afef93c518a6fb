// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The MSI messages the scripted guest programs, shared by the library runs and the raw floor
//! so that both install the same routes.

/// First GSI above the IOAPIC's 24 pins: where the raw floor puts MSI routes.
pub const FIRST_MSI_GSI: u32 = 24;

/// One MSI-X table entry's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// What vmm-glue's scripted guest writes into vector `vector` of VF `vf`.
pub fn guest_message(vf: u32, vector: u32) -> Message {
    let (address, data) = vmm_glue::scripted_guest::message_for(vf as usize, vector as u16);
    Message { address, data }
}

/// The address after the guest retargets a vector to the neighbouring destination APIC
/// (an IRQ balancer's move between precopy and switchover).
pub fn retargeted(address: u64) -> u64 {
    address ^ (1 << 12)
}

/// `guest_message` with the retarget applied.
pub fn retargeted_message(vf: u32, vector: u32) -> Message {
    let m = guest_message(vf, vector);
    Message {
        address: retargeted(m.address),
        data: m.data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retargeting_changes_only_the_destination() {
        for vf in 0..8 {
            for v in 0..65 {
                let m = guest_message(vf, v);
                let r = retargeted_message(vf, v);
                assert_ne!(r.address, m.address);
                assert_eq!(r.address & !0xff000, m.address & !0xff000);
                assert_eq!(r.data, m.data);
            }
        }
    }
}
