// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A VM's interrupt routing table and `RouteBatch`, a guard that defers
//! `KVM_SET_GSI_ROUTING` so a batch of route changes costs one commit.
