// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A minimal NVMe host driver for the lab's NVMe test: the controller registers, one admin
//! queue pair in DMA-mapped memory, polled completions, and the admin commands the test issues
//! (Identify, Virtualization Management).
//!
//! Register offsets and field layouts are the NVM Express Base Specification 1.4's: the
//! controller registers, submission and completion queue entries, Identify (CNS 01h
//! controller, 14h Primary Controller Capabilities, 15h Secondary Controller List) and
//! Virtualization Management. The same driver runs the PF (host provisioning, through
//! its raw VFIO regions) and the VF (the guest's driver, through a passed-through BAR): the
//! register path is the [`Registers`] the caller gives it.

pub mod pf;

use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress};

/// Controller Capabilities (64 bits).
pub const REG_CAP: u64 = 0x00;
/// Controller Configuration.
pub const REG_CC: u64 = 0x14;
/// Controller Status.
pub const REG_CSTS: u64 = 0x1c;
/// Admin Queue Attributes.
pub const REG_AQA: u64 = 0x24;
/// Admin Submission Queue Base Address (64 bits).
pub const REG_ASQ: u64 = 0x28;
/// Admin Completion Queue Base Address (64 bits).
pub const REG_ACQ: u64 = 0x30;
/// The first doorbell (SQ 0 tail).
pub const REG_DOORBELLS: u64 = 0x1000;

const CC_EN: u32 = 1;
/// I/O submission queue entries of 2^6 = 64 bytes, completion entries of 2^4 = 16 bytes.
const CC_IOSQES_64: u32 = 6 << 16;
const CC_IOCQES_16: u32 = 4 << 20;
const CSTS_RDY: u32 = 1;
const CSTS_CFS: u32 = 1 << 1;

/// Admin opcode: Identify.
pub const OPC_IDENTIFY: u8 = 0x06;
/// Admin opcode: Virtualization Management.
pub const OPC_VIRT_MGMT: u8 = 0x1c;

/// Identify CNS: the controller data structure.
pub const CNS_CONTROLLER: u8 = 0x01;
/// Identify CNS: Primary Controller Capabilities.
pub const CNS_PRIMARY_CAPS: u8 = 0x14;
/// Identify CNS: Secondary Controller List.
pub const CNS_SECONDARY_LIST: u8 = 0x15;

/// Virtualization Management action (CDW10 bits 3:0): Secondary Controller Assign.
pub const ACT_SECONDARY_ASSIGN: u8 = 0x8;
/// Secondary Controller Online.
pub const ACT_SECONDARY_ONLINE: u8 = 0x9;
/// Resource type (CDW10 bits 10:8): VQ (queue) resources.
pub const RT_QUEUE: u8 = 0;
/// Resource type: VI (interrupt) resources.
pub const RT_INTERRUPT: u8 = 1;

/// Size of a submission queue entry.
const SQE_SIZE: u64 = 64;
/// Size of a completion queue entry.
const CQE_SIZE: u64 = 16;

/// How the driver reaches the controller's registers (BAR 0): 32-bit accesses only, which is
/// what QEMU's controller wants and what a guest driver does.
pub trait Registers {
    /// A 32-bit register read at `offset` of BAR 0.
    fn read32(&self, offset: u64) -> u32;
    /// A 32-bit register write at `offset` of BAR 0.
    fn write32(&self, offset: u64, value: u32);

    /// A 64-bit register as two 32-bit reads (low first).
    fn read64(&self, offset: u64) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }

    /// A 64-bit register as two 32-bit writes (low first).
    fn write64(&self, offset: u64, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// One admin command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Command {
    /// Opcode (CDW0 bits 7:0).
    pub opcode: u8,
    /// Namespace (CDW1).
    pub nsid: u32,
    /// PRP entry 1 (CDW6-7): the data buffer's IO address.
    pub prp1: u64,
    /// Command dword 10.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
}

/// Identify `cns` (controller ID `cntid` for the lists), data to the 4 KiB page at `prp1`.
pub fn identify(cns: u8, cntid: u16, prp1: u64) -> Command {
    Command {
        opcode: OPC_IDENTIFY,
        prp1,
        cdw10: u32::from(cns) | (u32::from(cntid) << 16),
        ..Command::default()
    }
}

/// Virtualization Management: action `act` on resource type `rt` of controller `cntlid`,
/// `nr` resources.
pub fn virt_mgmt(act: u8, rt: u8, cntlid: u16, nr: u16) -> Command {
    Command {
        opcode: OPC_VIRT_MGMT,
        cdw10: u32::from(act & 0xf) | (u32::from(rt & 7) << 8) | (u32::from(cntlid) << 16),
        cdw11: u32::from(nr),
        ..Command::default()
    }
}

/// A completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Command specific result (DW0).
    pub result: u32,
    /// SQ head pointer (DW2 bits 15:0).
    pub sq_head: u16,
    /// SQ identifier (DW2 bits 31:16).
    pub sq_id: u16,
    /// Command identifier (DW3 bits 15:0).
    pub cid: u16,
    /// Phase tag (DW3 bit 16).
    pub phase: bool,
    /// Status field (DW3 bits 31:17): status code type in bits 10:8, status code in 7:0,
    /// More and Do Not Retry above. 0 is success.
    pub status: u16,
}

impl Completion {
    fn decode(raw: [u8; 16]) -> Self {
        let dw = |i: usize| {
            u32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]])
        };
        Completion {
            result: dw(0),
            sq_head: dw(2) as u16,
            sq_id: (dw(2) >> 16) as u16,
            cid: dw(3) as u16,
            phase: dw(3) & (1 << 16) != 0,
            status: (dw(3) >> 17) as u16,
        }
    }
}

/// The admin queue pair of one controller, in `mem` (a DMA-mapped region whose IO address is
/// its start address), driven through `regs`.
pub struct AdminQueue<'a, R: Registers> {
    regs: R,
    mem: &'a GuestRegionMmap,
    sq: u64,
    cq: u64,
    entries: u16,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    next_cid: u16,
    doorbell_stride: u64,
    timeout: Duration,
}

impl<R: Registers> std::fmt::Debug for AdminQueue<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminQueue")
            .field("sq", &format_args!("{:#x}", self.sq))
            .field("cq", &format_args!("{:#x}", self.cq))
            .field("sq_tail", &self.sq_tail)
            .field("cq_head", &self.cq_head)
            .finish_non_exhaustive()
    }
}

/// Wait until `done()` or `timeout`.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    loop {
        if done() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl<'a, R: Registers> AdminQueue<'a, R> {
    /// Reset the controller (CC.EN = 0, wait for CSTS.RDY = 0), put an admin queue pair of
    /// `entries` entries at offsets `sq` and `cq` of `mem` (page-aligned), enable it and wait
    /// for CSTS.RDY, within the controller's CAP.TO.
    pub fn enable(
        regs: R,
        mem: &'a GuestRegionMmap,
        sq: u64,
        cq: u64,
        entries: u16,
    ) -> Result<Self, String> {
        let cap = regs.read64(REG_CAP);
        let mqes = (cap & 0xffff) as u16;
        if entries < 2 || entries - 1 > mqes {
            return Err(format!("{entries} entries: CAP.MQES is {mqes}"));
        }
        // CAP.TO: worst-case ready time in 500 ms units; CAP.DSTRD: doorbell stride 2^(2+n).
        let timeout = Duration::from_millis(500 * ((cap >> 24) & 0xff).max(2));
        let doorbell_stride = 4u64 << ((cap >> 32) & 0xf);
        regs.write32(REG_CC, 0);
        if !wait_until(timeout, || regs.read32(REG_CSTS) & CSTS_RDY == 0) {
            return Err(format!(
                "CSTS.RDY stays 1 after CC.EN=0: {:#x}",
                regs.read32(REG_CSTS)
            ));
        }
        let zero = vec![0u8; usize::from(entries) * SQE_SIZE as usize];
        let at = |off: u64| MemoryRegionAddress(off);
        mem.write_slice(&zero, at(sq)).map_err(|e| e.to_string())?;
        mem.write_slice(&zero[..usize::from(entries) * CQE_SIZE as usize], at(cq))
            .map_err(|e| e.to_string())?;
        let base = mem.start_addr().0;
        let n = u32::from(entries - 1);
        regs.write32(REG_AQA, (n << 16) | n);
        regs.write64(REG_ASQ, base + sq);
        regs.write64(REG_ACQ, base + cq);
        regs.write32(REG_CC, CC_EN | CC_IOSQES_64 | CC_IOCQES_16);
        let mut csts = 0;
        let ready = wait_until(timeout, || {
            csts = regs.read32(REG_CSTS);
            csts & (CSTS_RDY | CSTS_CFS) != 0
        });
        if !ready || csts & CSTS_CFS != 0 {
            return Err(format!("controller did not become ready: CSTS {csts:#x}"));
        }
        Ok(AdminQueue {
            regs,
            mem,
            sq,
            cq,
            entries,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            next_cid: 1,
            doorbell_stride,
            timeout,
        })
    }

    /// Write `cmd` at the SQ tail and ring the SQ 0 tail doorbell; returns its command ID.
    pub fn submit(&mut self, cmd: Command) -> Result<u16, String> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        let mut sqe = [0u8; SQE_SIZE as usize];
        let cdw0 = u32::from(cmd.opcode) | (u32::from(cid) << 16);
        sqe[0..4].copy_from_slice(&cdw0.to_le_bytes());
        sqe[4..8].copy_from_slice(&cmd.nsid.to_le_bytes());
        sqe[24..32].copy_from_slice(&cmd.prp1.to_le_bytes());
        sqe[40..44].copy_from_slice(&cmd.cdw10.to_le_bytes());
        sqe[44..48].copy_from_slice(&cmd.cdw11.to_le_bytes());
        let at = self.sq + SQE_SIZE * u64::from(self.sq_tail);
        self.mem
            .write_slice(&sqe, MemoryRegionAddress(at))
            .map_err(|e| e.to_string())?;
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        self.regs.write32(REG_DOORBELLS, u32::from(self.sq_tail));
        Ok(cid)
    }

    /// Wait for the next completion entry (its phase tag flips to the expected one), consume it
    /// and ring the CQ 0 head doorbell.
    pub fn wait_completion(&mut self) -> Result<Completion, String> {
        let at = MemoryRegionAddress(self.cq + CQE_SIZE * u64::from(self.cq_head));
        let mut raw = [0u8; CQE_SIZE as usize];
        let phase = self.phase;
        let mem = self.mem;
        let posted = wait_until(self.timeout, || {
            mem.read_slice(&mut raw, at).is_ok() && Completion::decode(raw).phase == phase
        });
        if !posted {
            return Err(format!("no completion at CQ head {}", self.cq_head));
        }
        self.cq_head = (self.cq_head + 1) % self.entries;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        self.regs.write32(
            REG_DOORBELLS + self.doorbell_stride,
            u32::from(self.cq_head),
        );
        Ok(Completion::decode(raw))
    }

    /// Submit `cmd` and wait for its completion, which must be for it and successful.
    pub fn run(&mut self, cmd: Command) -> Result<Completion, String> {
        let cid = self.submit(cmd)?;
        let c = self.wait_completion()?;
        if c.cid != cid || c.status != 0 {
            return Err(format!("{cmd:?}: completion {c:?} (cid {cid})"));
        }
        Ok(c)
    }

    /// The 4 KiB page at offset `off` of the queue memory (Identify data).
    pub fn read_page(&self, off: u64) -> Result<Vec<u8>, String> {
        let mut page = vec![0u8; 4096];
        self.mem
            .read_slice(&mut page, MemoryRegionAddress(off))
            .map_err(|e| e.to_string())?;
        Ok(page)
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The flexible resources of one type in the Primary Controller Capabilities structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flexible {
    /// Flexible resources in total (VQFRT / VIFRT).
    pub total: u32,
    /// Assigned to secondary controllers (VQRFA / VIRFA).
    pub assigned: u32,
    /// Allocated to the primary controller (VQRFAP / VIRFAP).
    pub primary: u16,
    /// Most that one secondary controller may be assigned (VQFRSM / VIFRSM).
    pub per_secondary: u16,
}

impl Flexible {
    /// Resources neither the primary nor a secondary holds.
    pub fn free(&self) -> u32 {
        self.total
            .saturating_sub(self.assigned)
            .saturating_sub(u32::from(self.primary))
    }
}

/// Identify CNS 14h: the Primary Controller Capabilities structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryCaps {
    /// The primary controller's ID.
    pub cntlid: u16,
    /// VQ (queue) resources.
    pub vq: Flexible,
    /// VI (interrupt) resources.
    pub vi: Flexible,
}

impl PrimaryCaps {
    /// Decode the 4 KiB structure.
    pub fn parse(b: &[u8]) -> Self {
        PrimaryCaps {
            cntlid: u16_at(b, 0),
            vq: Flexible {
                total: u32_at(b, 32),
                assigned: u32_at(b, 36),
                primary: u16_at(b, 40),
                per_secondary: u16_at(b, 44),
            },
            vi: Flexible {
                total: u32_at(b, 64),
                assigned: u32_at(b, 68),
                primary: u16_at(b, 72),
                per_secondary: u16_at(b, 76),
            },
        }
    }
}

/// One Secondary Controller Entry of Identify CNS 15h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secondary {
    /// Secondary controller ID.
    pub scid: u16,
    /// Its primary controller's ID.
    pub pcid: u16,
    /// Secondary Controller State bit 0: online.
    pub online: bool,
    /// The VF number (1-based) the controller is.
    pub vfn: u16,
    /// VQ resources assigned.
    pub nvq: u16,
    /// VI resources assigned.
    pub nvi: u16,
}

/// Decode a Secondary Controller List: a count, then 32-byte entries from byte 32.
pub fn parse_secondary_list(b: &[u8]) -> Vec<Secondary> {
    let n = usize::from(b[0]).min(127);
    (0..n)
        .map(|i| {
            let e = &b[32 + 32 * i..64 + 32 * i];
            Secondary {
                scid: u16_at(e, 0),
                pcid: u16_at(e, 2),
                online: e[4] & 1 != 0,
                vfn: u16_at(e, 8),
                nvq: u16_at(e, 10),
                nvi: u16_at(e, 12),
            }
        })
        .collect()
}

/// The Identify Controller fields the test checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerId {
    /// PCI Vendor ID (bytes 1:0).
    pub vid: u16,
    /// Model Number (bytes 63:24), trailing spaces removed.
    pub model: String,
    /// Controller ID (bytes 79:78).
    pub cntlid: u16,
}

impl ControllerId {
    /// Decode the 4 KiB structure.
    pub fn parse(b: &[u8]) -> Self {
        ControllerId {
            vid: u16_at(b, 0),
            model: String::from_utf8_lossy(&b[24..64]).trim_end().to_owned(),
            cntlid: u16_at(b, 78),
        }
    }
}
