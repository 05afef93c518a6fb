// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Which BAR pages may be mmapped, on the host and in the guest, sub-page BARs included,
//! with dummy reservations for the rest of a sub-page BAR's page.
