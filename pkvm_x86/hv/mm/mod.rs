// SPDX-License-Identifier: GPL-2.0

//! Memory ownership: who may touch which physical page, and the tables
//! that enforce it.
//!
//! * [`addr`]: typed addresses (`Hpa`, `Gpa`, `HypVa`, `Pfn`), so that
//!   address spaces cannot be mixed up.
//! * [`ept`]: the EPT entry format and the page states kept in its ignored
//!   bits (NOPAGE / OWNED / SHARED_OWNED / SHARED_BORROWED, owner ids).
//! * [`pgtable`]: the generic 4-level page-table engine (one walker with
//!   visitors over [`pgtable::MmOps`]) and its entry formats (EPT, x86).
//! * [`mem_protect`]: the page-state transitions between host, hypervisor
//!   and guests, each a check followed by an infallible apply.
//! * [`vm_table`]: the shadow-VM handle table and VM teardown.
//! * [`invariants`]: the ownership invariant checker.
//! * [`host_ept_map`] and [`mtrr`]: the identity host EPT's layout and
//!   memory types.
//! * [`ram`]: the RAM ranges recorded at load; only RAM changes hands.
//! * [`pin_set`]: host frames pinned by nested VMX's live vmcs02s.
//! * [`share_count`]: per host page, how many guest leaves map it (counted
//!   host -> guest shares).
//! * [`reserve`]: pages the host half donates for shadow state (the
//!   vmcs12 cache now, the shadow EPT later).
//! * [`chunk_index`]: which chunk of the (growing) hypervisor pool holds
//!   an address.
//!
//! Future home of the shadow EPT (`mm::shadow_ept`): the per-guest table
//! built from the host KVM's EPT through the transitions of `mem_protect`
//! (see Documentation/architecture.rst).

pub mod addr;
pub mod chunk_index;
pub mod ept;
pub mod host_ept_map;
// Test-only and debug-build-only: the checker behind DEBUG_CHECK_INVARIANTS.
#[cfg(any(test, pkvm_debug))]
pub mod invariants;
pub mod mem_protect;
pub mod mtrr;
pub mod pgtable;
pub mod pin_set;
pub mod ram;
pub mod reserve;
pub mod share_count;
#[cfg(test)]
pub mod sim;
pub mod vm_table;
