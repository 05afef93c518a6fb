// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Counters of what a device did, for tests, benchmarks and logs.

/// What a [`crate::PassthroughDevice`] did since it was built. Guest accesses never fail; the
/// cases they absorb are counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// `VFIO_DEVICE_SET_IRQS` calls this device asked for (a NORESIZE regrow may cost the
    /// device one more).
    pub set_irqs_calls: u64,
    /// Route additions or updates the router refused (route limit, failed commit): those
    /// vectors deliver through userspace.
    pub route_failures: u64,
    /// Config accesses ignored: out of range, or of a size other than 1, 2 or 4 bytes.
    pub ignored_config_accesses: u64,
    /// Enable bits refused because the other MSI mechanism was already enabled.
    pub refused_enables: u64,
    /// MMIO or PIO accesses that hit no BAR of this device, and MSI-X table or PBA accesses the
    /// table model ignored (misaligned, odd-sized, out of range, PBA writes).
    pub ignored_mmio: u64,
    /// Region reads or writes that the VFIO device failed (reads then return zeros).
    pub device_access_errors: u64,
    /// Pending bits set because a masked vector fired.
    pub pending_set: u64,
    /// Interrupts re-delivered on unmask because their pending bit was set.
    pub pending_delivered: u64,
    /// Signals found on the irqfd of a vector whose route fell back to userspace (a refused
    /// commit, a failed irqfd attach) after its trigger had been pointed there: no GSI would
    /// have injected them, so they were delivered through userspace (or set the pending bit).
    pub stranded_signals: u64,
    /// Interrupts dropped because the vector's message has address 0 (the guest never
    /// programmed it): no MSI to inject, on any delivery path.
    pub unprogrammed_dropped: u64,
    /// Resets of the emulated state (`reset`, or a guest function-level reset).
    pub resets: u64,
}
