// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! mtty's serial ports: the 16550-like registers behind its I/O BARs and the bytes a migration
//! stream carries for each port, from Linux v6.12.117 `samples/vfio-mdev/mtty.c`
//! (`struct serial_port`, `handle_bar_write()`, `handle_bar_read()`). Register numbers and bits
//! are those of `include/uapi/linux/serial_reg.h` of the same kernel.

/// `UART_TX`/`UART_RX`.
const UART_TX: u8 = 0;
/// `UART_IER`.
const UART_IER: u8 = 1;
/// `UART_FCR` (write) / `UART_IIR` (read).
const UART_FCR: u8 = 2;
/// `UART_LCR`.
const UART_LCR: u8 = 3;
/// `UART_MCR`.
const UART_MCR: u8 = 4;
/// `UART_LSR`.
const UART_LSR: u8 = 5;
/// `UART_MSR`.
const UART_MSR: u8 = 6;
/// `UART_SCR`.
const UART_SCR: u8 = 7;

const UART_IER_RDI: u8 = 0x01;
const UART_IER_THRI: u8 = 0x02;
const UART_IER_RLSI: u8 = 0x04;
const UART_IER_MSI: u8 = 0x08;
const UART_IIR_NO_INT: u8 = 0x01;
const UART_IIR_THRI: u8 = 0x02;
const UART_IIR_RDI: u8 = 0x04;
const UART_IIR_RLSI: u8 = 0x06;
const UART_IIR_MSI: u8 = 0x00;
const UART_FCR_ENABLE_FIFO: u8 = 0x01;
const UART_FCR_CLEAR_RCVR: u8 = 0x02;
const UART_FCR_CLEAR_XMIT: u8 = 0x04;
const UART_LCR_DLAB: u8 = 0x80;
const UART_MCR_DTR: u8 = 0x01;
const UART_MCR_RTS: u8 = 0x02;
const UART_MCR_OUT2: u8 = 0x08;
const UART_MCR_AFE: u8 = 0x20;
const UART_LSR_DR: u8 = 0x01;
const UART_LSR_OE: u8 = 0x02;
const UART_LSR_THRE: u8 = 0x20;
const UART_LSR_TEMT: u8 = 0x40;
const UART_MSR_DCTS: u8 = 0x01;
const UART_MSR_DDSR: u8 = 0x02;
const UART_MSR_CTS: u8 = 0x10;
const UART_MSR_DSR: u8 = 0x20;
const UART_MSR_DCD: u8 = 0x80;

/// `MAX_FIFO_SIZE`.
pub(crate) const MAX_FIFO_SIZE: u8 = 16;

/// `sizeof(struct serial_port)` on x86_64: 35 bytes of fields, `divisor` 2-aligned, padded
/// to 36.
pub(crate) const PORT_LEN: usize = 36;

/// `struct serial_port`, field for field (`bool`s and the two padding bytes kept as the bytes
/// they are, so a loaded stream saves back unchanged, as mtty's `memcpy()`s do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SerialPort {
    uart_reg: [u8; 8],
    fifo: [u8; MAX_FIFO_SIZE as usize],
    head: u8,
    tail: u8,
    count: u8,
    dlab: u8,
    overrun: u8,
    pad29: u8,
    divisor: u16,
    fcr: u8,
    max_fifo_size: u8,
    intr_trigger_level: u8,
    pad35: u8,
}

/// `CIRCULAR_BUF_INC_IDX()`.
fn inc(idx: u8) -> u8 {
    (idx + 1) & (MAX_FIFO_SIZE - 1)
}

impl SerialPort {
    /// A port as `mtty_init_dev()` leaves it: zeroed, `max_fifo_size` 16.
    pub(crate) fn new() -> Self {
        SerialPort {
            uart_reg: [0; 8],
            fifo: [0; MAX_FIFO_SIZE as usize],
            head: 0,
            tail: 0,
            count: 0,
            dlab: 0,
            overrun: 0,
            pad29: 0,
            divisor: 0,
            fcr: 0,
            max_fifo_size: MAX_FIFO_SIZE,
            intr_trigger_level: 0,
            pad35: 0,
        }
    }

    /// The port's bytes in a migration stream (`memcpy()` of the struct, little-endian).
    pub(crate) fn to_bytes(&self) -> [u8; PORT_LEN] {
        let mut b = [0u8; PORT_LEN];
        b[..8].copy_from_slice(&self.uart_reg);
        b[8..24].copy_from_slice(&self.fifo);
        b[24] = self.head;
        b[25] = self.tail;
        b[26] = self.count;
        b[27] = self.dlab;
        b[28] = self.overrun;
        b[29] = self.pad29;
        b[30..32].copy_from_slice(&self.divisor.to_le_bytes());
        b[32] = self.fcr;
        b[33] = self.max_fifo_size;
        b[34] = self.intr_trigger_level;
        b[35] = self.pad35;
        b
    }

    /// A port from its stream bytes (`mtty_load_state()`'s `memcpy()`).
    pub(crate) fn from_bytes(b: &[u8; PORT_LEN]) -> Self {
        let mut uart_reg = [0u8; 8];
        uart_reg.copy_from_slice(&b[..8]);
        let mut fifo = [0u8; MAX_FIFO_SIZE as usize];
        fifo.copy_from_slice(&b[8..24]);
        SerialPort {
            uart_reg,
            fifo,
            head: b[24],
            tail: b[25],
            count: b[26],
            dlab: b[27],
            overrun: b[28],
            pad29: b[29],
            divisor: u16::from_le_bytes([b[30], b[31]]),
            fcr: b[32],
            max_fifo_size: b[33],
            intr_trigger_level: b[34],
            pad35: b[35],
        }
    }

    fn reg(&self, r: u8) -> u8 {
        self.uart_reg.get(usize::from(r)).copied().unwrap_or(0)
    }

    fn set_reg(&mut self, r: u8, v: u8) {
        if let Some(slot) = self.uart_reg.get_mut(usize::from(r)) {
            *slot = v;
        }
    }

    fn fifo_empty(&self) -> bool {
        self.head == self.tail
    }

    /// `handle_bar_write()` of `data` at register `offset`; returns how many times the port
    /// raised an interrupt (`mtty_trigger_interrupt()` calls: an MCR write can make two).
    pub(crate) fn write(&mut self, offset: u8, data: u8) -> usize {
        let ier = self.reg(UART_IER);
        match offset {
            UART_TX => {
                if self.dlab != 0 {
                    self.divisor |= u16::from(data);
                    return 0;
                }
                if self.count < self.max_fifo_size {
                    if let Some(slot) = self.fifo.get_mut(usize::from(self.head)) {
                        *slot = data;
                    }
                    self.count = self.count.wrapping_add(1);
                    self.head = inc(self.head);
                    self.overrun = 0;
                    usize::from(ier & UART_IER_RDI != 0 && self.count == self.intr_trigger_level)
                } else {
                    self.overrun = 1;
                    usize::from(ier & UART_IER_RLSI != 0)
                }
            }
            UART_IER => {
                if self.dlab != 0 {
                    self.divisor |= u16::from(data) << 8;
                    return 0;
                }
                self.set_reg(UART_IER, data);
                usize::from(data & UART_IER_THRI != 0 && self.fifo_empty())
            }
            UART_FCR => {
                self.fcr = data;
                if data & (UART_FCR_CLEAR_RCVR | UART_FCR_CLEAR_XMIT) != 0 {
                    self.count = 0;
                    self.head = 0;
                    self.tail = 0;
                }
                // mtty picks a level from UART_FCR_TRIGGER_MASK, then always sets 1.
                self.intr_trigger_level = 1;
                self.max_fifo_size = if data & UART_FCR_ENABLE_FIFO != 0 {
                    MAX_FIFO_SIZE
                } else {
                    1
                };
                0
            }
            UART_LCR => {
                if data & UART_LCR_DLAB != 0 {
                    self.dlab = 1;
                    self.divisor = 0;
                } else {
                    self.dlab = 0;
                }
                self.set_reg(UART_LCR, data);
                0
            }
            UART_MCR => {
                self.set_reg(UART_MCR, data);
                // Two separate checks in mtty, each raising once.
                let msi = ier & UART_IER_MSI != 0;
                usize::from(msi && data & UART_MCR_OUT2 != 0)
                    + usize::from(msi && data & (UART_MCR_RTS | UART_MCR_DTR) != 0)
            }
            UART_SCR => {
                self.set_reg(UART_SCR, data);
                0
            }
            // UART_LSR, UART_MSR: nothing.
            _ => 0,
        }
    }

    /// `handle_bar_read()` of register `offset`: the byte, and whether the read raised an
    /// interrupt.
    pub(crate) fn read(&mut self, offset: u8) -> (u8, bool) {
        let ier = self.reg(UART_IER);
        match offset {
            UART_TX => {
                if self.dlab != 0 {
                    return (self.divisor as u8, false);
                }
                let mut value = 0;
                if !self.fifo_empty() {
                    value = self.fifo.get(usize::from(self.tail)).copied().unwrap_or(0);
                    self.count = self.count.wrapping_sub(1);
                    self.tail = inc(self.tail);
                }
                (value, self.fifo_empty() && ier & UART_IER_THRI != 0)
            }
            UART_IER => {
                if self.dlab != 0 {
                    return ((self.divisor >> 8) as u8, false);
                }
                (ier & 0x0f, false)
            }
            UART_FCR => {
                let mut iir = 0;
                if ier & UART_IER_RLSI != 0 && self.overrun != 0 {
                    iir |= UART_IIR_RLSI;
                }
                if ier & UART_IER_RDI != 0 && self.count >= self.intr_trigger_level {
                    iir |= UART_IIR_RDI;
                }
                if ier & UART_IER_THRI != 0 && self.fifo_empty() {
                    iir |= UART_IIR_THRI;
                }
                if ier & UART_IER_MSI != 0
                    && self.reg(UART_MCR) & (UART_MCR_RTS | UART_MCR_DTR) != 0
                {
                    iir |= UART_IIR_MSI;
                }
                if iir == 0 {
                    iir = UART_IIR_NO_INT;
                }
                (iir | 0xc0, false)
            }
            UART_LCR | UART_MCR | UART_SCR => (self.reg(offset), false),
            UART_LSR => {
                let mut lsr = 0;
                if !self.fifo_empty() {
                    lsr |= UART_LSR_DR;
                }
                if self.overrun != 0 {
                    lsr |= UART_LSR_OE;
                }
                if self.fifo_empty() {
                    lsr |= UART_LSR_TEMT | UART_LSR_THRE;
                }
                (lsr, false)
            }
            UART_MSR => {
                let mut msr = UART_MSR_DSR | UART_MSR_DDSR | UART_MSR_DCD;
                if self.reg(UART_MCR) & UART_MCR_AFE == 0 || self.count < self.max_fifo_size {
                    msr |= UART_MSR_CTS | UART_MSR_DCTS;
                }
                (msr, false)
            }
            // Past the eight registers mtty leaves the byte as it was (uninitialised).
            _ => (0, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_layout_is_struct_serial_port() {
        let mut p = SerialPort::new();
        assert_eq!(p.to_bytes()[33], 16, "max_fifo_size at offset 33");
        p.write(UART_SCR, 0x5a);
        p.write(UART_LCR, 0x83);
        p.write(UART_TX, 0x0c);
        let b = p.to_bytes();
        assert_eq!(b[7], 0x5a);
        assert_eq!(b[3], 0x83);
        assert_eq!(b[27], 1, "dlab");
        assert_eq!(u16::from_le_bytes([b[30], b[31]]), 0x0c);
        assert_eq!(SerialPort::from_bytes(&b), p);
    }

    #[test]
    fn the_loopback_fifo_returns_what_was_sent() {
        let mut p = SerialPort::new();
        p.write(UART_FCR, 0x07);
        assert_eq!(p.read(UART_LSR).0, UART_LSR_TEMT | UART_LSR_THRE);
        p.write(UART_TX, b'h');
        p.write(UART_TX, b'i');
        assert_eq!(p.read(UART_LSR).0, UART_LSR_DR);
        assert_eq!(p.read(UART_TX).0, b'h');
        assert_eq!(p.read(UART_TX).0, b'i');
        assert_eq!(p.read(UART_LSR).0, 0x60);
        // FCR without ENABLE_FIFO: a one-byte FIFO, the second byte overruns.
        p.write(UART_FCR, 0x06);
        p.write(UART_TX, 1);
        p.write(UART_TX, 2);
        assert_eq!(p.read(UART_LSR).0, UART_LSR_DR | UART_LSR_OE);
    }

    #[test]
    fn thri_with_an_empty_fifo_raises_at_once() {
        let mut p = SerialPort::new();
        assert_eq!(p.write(UART_IER, UART_IER_THRI), 1);
        assert_eq!(p.read(UART_IER).0, UART_IER_THRI);
        assert_eq!(p.read(UART_FCR).0, 0xc0 | UART_IIR_THRI);
        assert_eq!(p.write(UART_IER, 0xf0), 0, "only the low nibble reads back");
        assert_eq!(p.read(UART_IER).0, 0);
        assert_eq!(p.read(UART_FCR).0, 0xc0 | UART_IIR_NO_INT);
        assert_eq!(p.write(UART_MCR, UART_MCR_OUT2 | UART_MCR_RTS), 0);
        p.write(UART_IER, UART_IER_MSI);
        // OUT2 and RTS/DTR are two checks in mtty: two interrupts.
        assert_eq!(p.write(UART_MCR, UART_MCR_OUT2 | UART_MCR_RTS), 2);
    }
}
