// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Host provisioning of the lab's NVMe VF through its PF: the PF is the host's, not the
//! guest's, so it is opened raw in a container of its own and driven through its VFIO regions.
//!
//! QEMU 7.2's controller (hw/nvme/ctrl.c) keeps a VF's controller offline (its registers read
//! zero but CSTS, which reads CFS, and enabling it fails) until the PF has assigned it flexible
//! queue and interrupt resources and set it online with Virtualization Management commands
//! (`nvme_virt_mngmt()`). The primary controller starts out holding every flexible resource
//! (`nvme_init_state()`); a function-level reset (QEMU's at boot, VFIO's at open) applies the
//! primary's pending allocation (`nvme_activate_virt_res()`), and the lab's PF reports that
//! the primary then holds none (the test checks it). Assigning resources needs the secondary
//! controller offline, going online needs the VF to exist (`nvme_virt_set_state()`), and any
//! PF reset takes every secondary controller offline again (`nvme_ctrl_reset()`): the PF is
//! opened before the VF is created and set online.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vfio_core::info::{BAR0_REGION_INDEX, CONFIG_REGION_INDEX};
use vfio_core::lab::{self, LabDevices};
use vfio_core::{Container, KernelDevice, Uuid, VfioContainer, VfioDevice};
use vm_memory::GuestRegionMmap;

use super::{
    identify, parse_secondary_list, virt_mgmt, AdminQueue, PrimaryCaps, Registers, Secondary,
    ACT_SECONDARY_ASSIGN, ACT_SECONDARY_ONLINE, CNS_PRIMARY_CAPS, CNS_SECONDARY_LIST, RT_INTERRUPT,
    RT_QUEUE,
};

/// IO address of the PF's provisioning memory, in the PF's own container.
const PF_IOVA: u64 = 0x10_0000;
/// The PF's memory: admin SQ page, admin CQ page, identify data page.
const PF_MEM: u64 = 0x3000;
const PF_DATA: u64 = 0x2000;
/// Entries of the PF's admin queues.
const QUEUE_ENTRIES: u16 = 8;
/// Queue (admin and one I/O) and interrupt resources the PF gives the VF: QEMU 7.2 refuses to
/// set a secondary controller online with fewer than 2 VQ or no VI resources
/// (`nvme_virt_set_state()`).
pub const VF_QUEUES: u16 = 2;
/// See [`VF_QUEUES`].
pub const VF_INTERRUPTS: u16 = 1;
/// Status "Invalid Secondary Controller State" (command specific type 1, code 20h) with Do
/// Not Retry: QEMU 7.2's answer to an online request for a VF that does not exist yet.
const STATUS_INVALID_SEC_STATE_DNR: u16 = 0x4000 | 0x0120;

/// A controller's registers through its raw VFIO BAR 0 region: the PF's here (the lab's
/// migration suite drives a VF so too).
pub struct PfRegs<'a>(pub &'a KernelDevice);

impl Registers for PfRegs<'_> {
    fn read32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.0
            .region_read(BAR0_REGION_INDEX, offset, &mut b)
            .unwrap();
        u32::from_le_bytes(b)
    }
    fn write32(&self, offset: u64, value: u32) {
        self.0
            .region_write(BAR0_REGION_INDEX, offset, &value.to_le_bytes())
            .unwrap();
    }
}

/// Writes `sriov_numvfs=0` when dropped if the PF still has VFs: a test that fails half-way
/// (its VF closed by then) leaves none behind, and removes them before the PF is closed
/// (closing resets the PF, after which QEMU 7.2 drops its VFs under the kernel).
struct RemoveVfs(String);

impl Drop for RemoveVfs {
    fn drop(&mut self) {
        if Path::new("/sys/bus/pci/devices")
            .join(&self.0)
            .join("virtfn0")
            .exists()
        {
            let _ = lab::set_numvfs(&self.0, 0);
        }
    }
}

/// A VF its PF brought online for the guest. Drop it after everything holding the VF.
#[derive(Debug)]
pub struct ProvisionedVf {
    _remove: RemoveVfs,
    _pf: KernelDevice,
    _pf_container: Arc<Container>,
    _pf_mem: GuestRegionMmap,
    /// The PF's VF token: the VF opens only with it.
    pub token: Uuid,
    /// The VF's PCI address.
    pub bdf: String,
    /// The VF's secondary controller ID (the controller ID its Identify reports).
    pub scid: u16,
}

impl std::fmt::Debug for RemoveVfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RemoveVfs").field(&self.0).finish()
    }
}

/// COMMAND: memory decode and bus master on the PF, so its registers answer and it can DMA.
fn enable_pf(pf: &KernelDevice) {
    let mut cmd = [0u8; 2];
    pf.region_read(CONFIG_REGION_INDEX, 4, &mut cmd).unwrap();
    let cmd = u16::from_le_bytes(cmd) | 0x6;
    pf.region_write(CONFIG_REGION_INDEX, 4, &cmd.to_le_bytes())
        .unwrap();
}

fn admin_queue<'a>(pf: &'a KernelDevice, mem: &'a GuestRegionMmap) -> AdminQueue<'a, PfRegs<'a>> {
    enable_pf(pf);
    AdminQueue::enable(PfRegs(pf), mem, 0, 0x1000, QUEUE_ENTRIES).unwrap()
}

/// Identify `cns` into the PF's data page and return it.
fn pf_identify(aq: &mut AdminQueue<'_, PfRegs<'_>>, cns: u8) -> Vec<u8> {
    aq.run(identify(cns, 0, PF_IOVA + PF_DATA)).unwrap();
    aq.read_page(PF_DATA).unwrap()
}

fn secondary(aq: &mut AdminQueue<'_, PfRegs<'_>>, vfn: u16) -> Secondary {
    let list = parse_secondary_list(&pf_identify(aq, CNS_SECONDARY_LIST));
    list.iter()
        .find(|s| s.vfn == vfn)
        .copied()
        .unwrap_or_else(|| panic!("no secondary controller for VF {vfn}: {list:?}"))
}

/// Open the PF, set a VF token, give VF 1 its resources, create it (`sriov_numvfs=1`) and set
/// it online.
pub fn provision_vf(lab: &LabDevices) -> ProvisionedVf {
    let remove = RemoveVfs(lab.nvme_pf.clone());
    let pf_container = Container::new().unwrap();
    // Opened before the VF exists: opening resets the PF.
    let pf = pf_container.open_device(&lab.nvme_pf().unwrap()).unwrap();
    let token = Uuid::random().unwrap();
    pf.set_vf_token(token).unwrap();
    let mem = vfio_core::memfd_guest_region(PF_IOVA, PF_MEM).unwrap();
    pf_container.map_guest_region(&mem).unwrap();
    let mut aq = admin_queue(&pf, &mem);
    let caps = PrimaryCaps::parse(&pf_identify(&mut aq, CNS_PRIMARY_CAPS));
    // Every flexible resource is free: the primary gave up its initial share at the reset the
    // open did (the allocation pending then is none).
    assert_eq!((caps.vq.primary, caps.vi.primary), (0, 0), "{caps:?}");
    assert!(
        caps.vq.free() >= u32::from(VF_QUEUES) && caps.vi.free() >= u32::from(VF_INTERRUPTS),
        "{caps:?}"
    );
    assert!(
        caps.vq.per_secondary >= VF_QUEUES && caps.vi.per_secondary >= VF_INTERRUPTS,
        "{caps:?}"
    );
    let sec = secondary(&mut aq, 1);
    assert_eq!(sec.pcid, caps.cntlid);
    assert!(!sec.online, "VF 1 starts offline: {sec:?}");
    for (rt, nr) in [(RT_QUEUE, VF_QUEUES), (RT_INTERRUPT, VF_INTERRUPTS)] {
        let c = aq
            .run(virt_mgmt(ACT_SECONDARY_ASSIGN, rt, sec.scid, nr))
            .unwrap();
        assert_eq!(c.result, u32::from(nr), "resources assigned");
    }
    let cid = aq
        .submit(virt_mgmt(ACT_SECONDARY_ONLINE, RT_QUEUE, sec.scid, 0))
        .unwrap();
    let refused = aq.wait_completion().unwrap();
    assert_eq!(
        (refused.cid, refused.status),
        (cid, STATUS_INVALID_SEC_STATE_DNR),
        "online before the VF exists"
    );
    lab::set_numvfs(&lab.nvme_pf, 1).unwrap();
    let bdf = lab::vf_address(&lab.nvme_pf, 0, Duration::from_secs(30)).unwrap();
    aq.run(virt_mgmt(ACT_SECONDARY_ONLINE, RT_QUEUE, sec.scid, 0))
        .unwrap();
    let now = secondary(&mut aq, 1);
    assert_eq!(
        (now.online, now.nvq, now.nvi),
        (true, VF_QUEUES, VF_INTERRUPTS),
        "{now:?}"
    );
    ProvisionedVf {
        _remove: remove,
        _pf: pf,
        _pf_container: pf_container,
        _pf_mem: mem,
        token,
        bdf,
        scid: sec.scid,
    }
}
