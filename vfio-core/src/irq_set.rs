// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `VFIO_DEVICE_SET_IRQS` requests: a typed description, the kernel's argument checks, and the
//! `struct vfio_irq_set` byte layout the ioctl takes.

use std::os::unix::io::RawFd;

use vfio_bindings::bindings::vfio as b;

use crate::error::{errno, Error, Result};
use crate::info::DeviceInfo;

/// Size of the fixed `struct vfio_irq_set` header (argsz, flags, index, start, count).
pub const IRQ_SET_HEADER_SIZE: usize = 20;

/// What a `VFIO_DEVICE_SET_IRQS` request does to the vectors it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqAction {
    /// `VFIO_IRQ_SET_ACTION_MASK`.
    Mask,
    /// `VFIO_IRQ_SET_ACTION_UNMASK`.
    Unmask,
    /// `VFIO_IRQ_SET_ACTION_TRIGGER`: bind eventfds, or fire vectors from userspace.
    Trigger,
}

impl IrqAction {
    /// The action's flag bit.
    pub const fn flag(self) -> u32 {
        match self {
            IrqAction::Mask => b::VFIO_IRQ_SET_ACTION_MASK,
            IrqAction::Unmask => b::VFIO_IRQ_SET_ACTION_UNMASK,
            IrqAction::Trigger => b::VFIO_IRQ_SET_ACTION_TRIGGER,
        }
    }
}

/// The payload of a `VFIO_DEVICE_SET_IRQS` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrqData {
    /// `VFIO_IRQ_SET_DATA_NONE`: no payload.
    None,
    /// `VFIO_IRQ_SET_DATA_BOOL`: one byte per vector.
    Bool(Vec<bool>),
    /// `VFIO_IRQ_SET_DATA_EVENTFD`: one fd per vector; `None` is sent as -1 and de-assigns the
    /// vector (or, on first enable, allocates it without a trigger).
    Eventfds(Vec<Option<RawFd>>),
}

impl IrqData {
    /// The data type's flag bit.
    pub const fn flag(&self) -> u32 {
        match self {
            IrqData::None => b::VFIO_IRQ_SET_DATA_NONE,
            IrqData::Bool(_) => b::VFIO_IRQ_SET_DATA_BOOL,
            IrqData::Eventfds(_) => b::VFIO_IRQ_SET_DATA_EVENTFD,
        }
    }

    /// Size of one payload element for the data type in `flags`, as the kernel computes it.
    fn element_size(flags: u32) -> Option<usize> {
        match flags & b::VFIO_IRQ_SET_DATA_TYPE_MASK {
            b::VFIO_IRQ_SET_DATA_NONE => Some(0),
            b::VFIO_IRQ_SET_DATA_BOOL => Some(1),
            b::VFIO_IRQ_SET_DATA_EVENTFD => Some(4),
            _ => None,
        }
    }
}

/// A `VFIO_DEVICE_SET_IRQS` request.
///
/// `count` is sent as given; it is not derived from the payload, so a request can say one thing
/// in `count` and carry another in `data`, as a buggy caller could. `raw_flags` replaces the
/// flags derived from `action` and `data`, to express combinations the typed fields cannot
/// (two data types, no action); the kernel rejects those with EINVAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqSet {
    /// Irq index (`MSIX_IRQ_INDEX`, ...).
    pub index: u32,
    /// The action.
    pub action: IrqAction,
    /// First vector.
    pub start: u32,
    /// Number of vectors.
    pub count: u32,
    /// The payload.
    pub data: IrqData,
    /// Flags to send instead of `action.flag() | data.flag()`.
    pub raw_flags: Option<u32>,
}

impl IrqSet {
    /// Bind `fds` to vectors `start..start + fds.len()` (`None` de-assigns, sent as -1).
    pub fn eventfds(index: u32, start: u32, fds: Vec<Option<RawFd>>) -> Self {
        IrqSet {
            index,
            action: IrqAction::Trigger,
            start,
            count: u32::try_from(fds.len()).unwrap_or(u32::MAX),
            data: IrqData::Eventfds(fds),
            raw_flags: None,
        }
    }

    /// Disable the whole index: `DATA_NONE | ACTION_TRIGGER` with `count == 0`.
    pub fn disable(index: u32) -> Self {
        IrqSet {
            index,
            action: IrqAction::Trigger,
            start: 0,
            count: 0,
            data: IrqData::None,
            raw_flags: None,
        }
    }

    /// Fire vectors `start..start + count` from userspace (`DATA_NONE | ACTION_TRIGGER`).
    pub fn fire(index: u32, start: u32, count: u32) -> Self {
        IrqSet {
            index,
            action: IrqAction::Trigger,
            start,
            count,
            data: IrqData::None,
            raw_flags: None,
        }
    }

    /// `DATA_NONE` mask or unmask of vectors `start..start + count`.
    pub fn mask(index: u32, start: u32, count: u32, masked: bool) -> Self {
        IrqSet {
            index,
            action: if masked {
                IrqAction::Mask
            } else {
                IrqAction::Unmask
            },
            start,
            count,
            data: IrqData::None,
            raw_flags: None,
        }
    }

    /// Replace the flags sent with `flags` (see the type's docs).
    pub fn with_raw_flags(mut self, flags: u32) -> Self {
        self.raw_flags = Some(flags);
        self
    }

    /// The `flags` word that is sent.
    pub fn flags(&self) -> u32 {
        self.raw_flags
            .unwrap_or_else(|| self.action.flag() | self.data.flag())
    }

    /// Whether this request disables the whole index (`DATA_NONE | ACTION_TRIGGER`, count 0).
    pub fn is_disable(&self) -> bool {
        self.count == 0
            && self.flags() == (b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_ACTION_TRIGGER)
    }

    /// The payload bytes: one native-endian `i32` per fd (-1 for `None`), one byte per bool.
    fn payload(&self) -> Vec<u8> {
        match &self.data {
            IrqData::None => Vec::new(),
            IrqData::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
            IrqData::Eventfds(v) => v
                .iter()
                .flat_map(|fd| fd.unwrap_or(-1).to_ne_bytes())
                .collect(),
        }
    }

    /// The argument of the ioctl: a `struct vfio_irq_set` header followed by the payload,
    /// with `argsz` covering both.
    pub fn to_bytes(&self) -> Vec<u8> {
        let payload = self.payload();
        let argsz = u32::try_from(IRQ_SET_HEADER_SIZE + payload.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(IRQ_SET_HEADER_SIZE + payload.len());
        for word in [argsz, self.flags(), self.index, self.start, self.count] {
            out.extend_from_slice(&word.to_ne_bytes());
        }
        out.extend_from_slice(&payload);
        out
    }

    /// The checks Linux makes before it touches anything (`vfio_set_irqs_validate_and_prepare`):
    /// unknown flag bits, an unknown index, `start` at or past the index's vector count, a range
    /// past it, not exactly one data type, or a payload shorter than `count` elements all give
    /// EINVAL. A request that passes may still fail later: an action the index does not support
    /// (MASK on MSI-X, two action bits) is ENOTTY, as in vfio-pci.
    pub fn validate(&self, info: &DeviceInfo) -> Result<()> {
        let einval = || Error::SetIrqs {
            index: self.index,
            source: errno(libc::EINVAL),
        };
        let flags = self.flags();
        if self.index >= info.num_irqs()
            || self.count >= u32::MAX.saturating_sub(self.start)
            || flags & !(b::VFIO_IRQ_SET_DATA_TYPE_MASK | b::VFIO_IRQ_SET_ACTION_TYPE_MASK) != 0
        {
            return Err(einval());
        }
        let vectors = info.irq(self.index).map_or(0, |i| i.count);
        let end = u64::from(self.start) + u64::from(self.count);
        if self.start >= vectors || end > u64::from(vectors) {
            return Err(einval());
        }
        let size = IrqData::element_size(flags).ok_or_else(einval)?;
        let needed = (self.count as usize).saturating_mul(size);
        if self.payload().len() < needed {
            return Err(einval());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    fn word(bytes: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[test]
    fn header_matches_the_kernel_struct() {
        assert_eq!(size_of::<b::vfio_irq_set>(), IRQ_SET_HEADER_SIZE);
        let set = IrqSet::eventfds(MSIX, 3, vec![Some(7), None, Some(9)]);
        let bytes = set.to_bytes();
        assert_eq!(bytes.len(), 20 + 3 * 4);
        assert_eq!(word(&bytes, offset_of!(b::vfio_irq_set, argsz)), 32);
        assert_eq!(
            word(&bytes, offset_of!(b::vfio_irq_set, flags)),
            b::VFIO_IRQ_SET_DATA_EVENTFD | b::VFIO_IRQ_SET_ACTION_TRIGGER
        );
        assert_eq!(word(&bytes, offset_of!(b::vfio_irq_set, index)), MSIX);
        assert_eq!(word(&bytes, offset_of!(b::vfio_irq_set, start)), 3);
        assert_eq!(word(&bytes, offset_of!(b::vfio_irq_set, count)), 3);
        assert_eq!(offset_of!(b::vfio_irq_set, data), 20);
        // fds as s32, -1 for a de-assigned vector.
        assert_eq!(word(&bytes, 20) as i32, 7);
        assert_eq!(word(&bytes, 24) as i32, -1);
        assert_eq!(word(&bytes, 28) as i32, 9);
    }

    const MSIX: u32 = crate::info::MSIX_IRQ_INDEX;

    /// The flag bits of include/uapi/linux/vfio.h: three DATA types in bits 0..3, three
    /// ACTIONs in bits 3..6.
    #[test]
    fn flag_bits_match_the_uapi() {
        let data = [
            IrqData::None,
            IrqData::Bool(vec![]),
            IrqData::Eventfds(vec![]),
        ];
        assert_eq!(data.map(|d| d.flag()), [1, 2, 4]);
        let actions = [IrqAction::Mask, IrqAction::Unmask, IrqAction::Trigger];
        assert_eq!(actions.map(IrqAction::flag), [8, 16, 32]);
        assert_eq!(b::VFIO_IRQ_SET_DATA_TYPE_MASK, 0x7);
        assert_eq!(b::VFIO_IRQ_SET_ACTION_TYPE_MASK, 0x38);
    }

    #[test]
    fn bool_payload_is_one_byte_per_vector() {
        let set = IrqSet {
            index: 0,
            action: IrqAction::Unmask,
            start: 0,
            count: 3,
            data: IrqData::Bool(vec![true, false, true]),
            raw_flags: None,
        };
        let bytes = set.to_bytes();
        assert_eq!(bytes.len(), 23);
        assert_eq!(word(&bytes, 0), 23);
        assert_eq!(
            word(&bytes, 4),
            b::VFIO_IRQ_SET_DATA_BOOL | b::VFIO_IRQ_SET_ACTION_UNMASK
        );
        assert_eq!(&bytes[20..], &[1, 0, 1]);
    }

    #[test]
    fn disable_is_header_only_with_count_zero() {
        let bytes = IrqSet::disable(MSIX).to_bytes();
        assert_eq!(bytes.len(), 20);
        assert_eq!(word(&bytes, 0), 20);
        assert_eq!(
            word(&bytes, 4),
            b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_ACTION_TRIGGER
        );
        assert_eq!(word(&bytes, 16), 0);
        assert!(IrqSet::disable(MSIX).is_disable());
    }

    #[test]
    fn fd_minus_one_enable_layout() {
        // Dynamic MSI-X enable: vector 0, no trigger.
        let bytes = IrqSet::eventfds(MSIX, 0, vec![None]).to_bytes();
        assert_eq!(word(&bytes, 0), 24);
        assert_eq!(word(&bytes, 12), 0);
        assert_eq!(word(&bytes, 16), 1);
        assert_eq!(&bytes[20..], &(-1i32).to_ne_bytes());
    }

    #[test]
    fn raw_flags_override_the_typed_ones() {
        let set = IrqSet::fire(MSIX, 0, 1)
            .with_raw_flags(b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_DATA_BOOL);
        assert_eq!(
            word(&set.to_bytes(), 4),
            b::VFIO_IRQ_SET_DATA_NONE | b::VFIO_IRQ_SET_DATA_BOOL
        );
    }
}
